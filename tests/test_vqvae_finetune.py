"""train-vqvae --init-from --finetune-decoder on the tiny config: only the decoder moves, resume keeps it so."""

from __future__ import annotations

import filecmp
import os

import pytest
import torch

from smokeflow.cli import main
from smokeflow.errors import SmokeflowError
from smokeflow.training.checkpoint_io import load_train_state, load_weights
from smokeflow.training.run_logger import read_metrics
from vqvae_helpers import TINY_CONFIG, tiny_checkpoint, tiny_dataset


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    base = str(tmp_path_factory.getbasetemp())
    data_root = tiny_dataset(base)
    return tiny_checkpoint(base, data_root), data_root


def _assert_only_decoder_changed(run_dir: str, source_dir: str) -> None:
    before = load_weights(os.path.join(source_dir, "vqvae.safetensors"))
    after = load_weights(os.path.join(run_dir, "vqvae.safetensors"))
    assert before.keys() == after.keys()
    frozen = [k for k in before if k.startswith(("encoder.", "quantizer."))]
    assert "quantizer.codebook" in frozen and "quantizer.ema_cluster_size" in frozen
    for key in frozen:  # bit-identical: no gradient step, no EMA update, no dead-code restart
        assert torch.equal(before[key], after[key]), key
    decoder = [k for k in before if k.startswith("decoder.")]
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    # The latent statistics are the source's file, byte for byte (never re-measured).
    assert filecmp.cmp(os.path.join(source_dir, "latent_stats.safetensors"),
                       os.path.join(run_dir, "latent_stats.safetensors"), shallow=False)


def test_decoder_finetune_freezes_encoder_codebook_and_stats_and_resumes(tmp_path, source):
    from smokeflow.data.latent_cache import checkpoint_hash

    source_dir, data_root = source
    runs = str(tmp_path / "runs")
    run_dir = os.path.join(runs, "ft")
    args = ["train-vqvae", "--config", TINY_CONFIG, "--run-name", "ft", "--runs-dir", runs, "--data", data_root,
            "--device", "cpu"]
    assert main(args + ["--init-from", source_dir, "--finetune-decoder", "--max-steps", "3"]) == 0
    _assert_only_decoder_changed(run_dir, source_dir)
    first = load_weights(os.path.join(run_dir, "vqvae.safetensors"))
    assert any("decoder fine-tune" in n["message"] for n in read_metrics(run_dir, "note"))
    assert checkpoint_hash(run_dir) == checkpoint_hash(source_dir)  # latent caches of the source stay valid

    # Resume without repeating the flags: the mode comes from the run's config.yaml.
    assert main(args + ["--max-steps", "5", "--resume"]) == 0
    assert load_train_state(os.path.join(run_dir, "train_state.pt"))["step"] == 5
    assert [r["step"] for r in read_metrics(run_dir, "train")] == [2, 3, 4, 5]  # 3: end of the first part
    _assert_only_decoder_changed(run_dir, source_dir)
    resumed = load_weights(os.path.join(run_dir, "vqvae.safetensors"))
    assert any(not torch.equal(first[k], resumed[k]) for k in first if k.startswith("decoder."))


def test_finetune_needs_a_source_checkpoint(tmp_path, source):
    from smokeflow.training.vqvae_trainer import train_vqvae

    _, data_root = source
    with pytest.raises(SmokeflowError, match="--init-from"):
        train_vqvae(TINY_CONFIG, "x", runs_dir=str(tmp_path), device="cpu", data_path=data_root,
                    finetune_decoder=True, progress=False)
    with pytest.raises(SmokeflowError, match="not found"):
        train_vqvae(TINY_CONFIG, "x", runs_dir=str(tmp_path), device="cpu", data_path=data_root,
                    init_from=str(tmp_path / "absent"), finetune_decoder=True, progress=False)
