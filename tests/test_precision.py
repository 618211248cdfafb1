"""Training arithmetic: "auto" picks bf16 autocast on CUDA and on CPUs with native bf16, float32 elsewhere; the
choice reaches the flow loss, the predicted references and the run log."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from smokeflow.config import load_config
from smokeflow.flow.path import FlowPath
from smokeflow.flow.predictor import FlowConfig, build_vector_field
from smokeflow.training import precision as precision_module
from smokeflow.training.flow_trainer import FlowTrainingConfig, train_flow, training_loss
from smokeflow.training.guidance_distiller import GuidanceDistillConfig
from smokeflow.training.precision import check_precision, describe_precision, training_autocast, uses_bf16
from smokeflow.training.run_logger import read_metrics
from smokeflow.training.vqvae_trainer import VQVAETrainingConfig

from vqvae_helpers import TINY_CONFIG, tiny_latent_data


@pytest.fixture(scope="module")
def latent_data(tmp_path_factory):
    return tiny_latent_data(str(tmp_path_factory.getbasetemp()))


def _native(monkeypatch, avx512_bf16: bool, amx: bool = False):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


def test_auto_follows_the_device_and_the_cpu(monkeypatch):
    _native(monkeypatch, avx512_bf16=False)
    assert not precision_module.cpu_has_native_bf16()
    assert not uses_bf16("cpu") and not training_autocast("cpu")._enabled
    assert "no native bf16" in describe_precision("cpu")
    _native(monkeypatch, avx512_bf16=True)
    assert uses_bf16("cpu") and training_autocast("cpu")._enabled
    assert "native bf16" in describe_precision("cpu")
    _native(monkeypatch, avx512_bf16=False, amx=True)
    assert uses_bf16("cpu")
    # Explicit choices win over the chip; CUDA is always bf16 under auto.
    assert uses_bf16("cuda") and uses_bf16(torch.device("cuda", 0))
    assert not uses_bf16("cpu", "fp32") and not uses_bf16("cuda", "FP32")
    _native(monkeypatch, avx512_bf16=False)
    assert uses_bf16("cpu", "bf16") and describe_precision("cpu", "bf16") == "bf16 autocast (precision bf16)"


def test_bad_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'half'"):
        check_precision("half")
    for make in (lambda: FlowTrainingConfig(precision="fp16"), lambda: VQVAETrainingConfig(precision="fp16"),
                 lambda: GuidanceDistillConfig(precision="fp16")):
        with pytest.raises(ValueError, match="precision must be one of"):
            make()
    assert FlowTrainingConfig(precision="BF16").precision == "bf16"


def test_the_flow_loss_runs_in_the_chosen_arithmetic(latent_data):
    """Same draws: bf16 autocast gives a loss within bf16's rounding of the float32 one, and not the same number
    (so autocast really ran), also on the predicted-reference path."""
    from smokeflow.data.latent_cache import LatentClipDataset

    root, _ = latent_data
    config = load_config(TINY_CONFIG)
    model = build_vector_field(FlowConfig.from_section(config["flow"]))
    torch.nn.init.normal_(model.head.weight, std=0.1)
    clips = torch.stack([LatentClipDataset(root, "train", 6, windows="all", seed=0)[i] for i in range(3)])
    base = FlowTrainingConfig.from_section(config["flow_training"])
    for options in ({}, {"rollout_reference_prob": 1.0, "rollout_reference_steps": 2}):
        losses = {p: training_loss(model, FlowPath(), clips, dataclasses.replace(base, precision=p, **options),
                                   torch.Generator().manual_seed(0), None).item() for p in ("fp32", "bf16")}
        assert losses["fp32"] != losses["bf16"]
        assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.03)


def test_a_bf16_run_on_the_cpu_trains_resumes_exactly_and_logs_its_arithmetic(latent_data, tmp_path):
    root, vqvae = latent_data
    config = load_config(TINY_CONFIG)
    config["flow_training"]["precision"] = "bf16"

    def run(name, **kwargs):
        run_dir = os.path.join(tmp_path, name)
        metrics = train_flow(run_dir, config, root, seed=3, vqvae_checkpoint=vqvae, show_progress=False,
                             max_steps=6, **kwargs)
        return run_dir, metrics

    whole, _ = run("whole")
    notes = [r["message"] for r in read_metrics(whole, kind="note")]
    assert "bf16 autocast (precision bf16)" in " ".join(notes)
    losses = [r["train_loss"] for r in read_metrics(whole, kind="train") if "train_loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    parted, _ = run("parted", stop_after_step=3)
    run("parted", resume=True)
    from safetensors.torch import load_file

    a, b = (load_file(os.path.join(d, "flow.safetensors")) for d in (whole, parted))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_cli_flag_sets_the_runs_arithmetic_and_may_change_on_resume(latent_data, tmp_path):
    from smokeflow.cli import main as cli_main

    root, vqvae = latent_data
    common = ["train", "--run-name", "cli", "--config", TINY_CONFIG, "--device", "cpu", "--data", root,
              "--vqvae-checkpoint", vqvae, "--runs-dir", str(tmp_path), "--no-progress"]
    assert cli_main(common + ["--precision", "fp32", "--stop-after-step", "3"]) == 0
    run_dir = os.path.join(tmp_path, "cli")
    assert load_config(os.path.join(run_dir, "config.yaml"))["flow_training"]["precision"] == "fp32"
    assert cli_main(common + ["--resume", "--precision", "bf16"]) == 0
    notes = [r["message"] for r in read_metrics(run_dir, kind="note") if r["message"].startswith("arithmetic")]
    assert notes == ["arithmetic: float32 (precision fp32)", "arithmetic: bf16 autocast (precision bf16)"]
