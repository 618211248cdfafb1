"""train-vqvae on the tiny config: a few steps, resume, run-folder contents, inspection (CLI and functions)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from smokeflow.cli import main
from smokeflow.errors import SmokeflowError
from smokeflow.training.run_logger import read_metrics
from vqvae_helpers import TINY_CONFIG, tiny_checkpoint, tiny_dataset


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_dataset(str(tmp_path_factory.getbasetemp()))


def test_train_then_resume_continues_from_the_checkpoint(tmp_path, data_root, capsys):
    runs = str(tmp_path / "runs")
    args = ["train-vqvae", "--config", TINY_CONFIG, "--run-name", "r", "--runs-dir", runs, "--data", data_root,
            "--device", "cpu"]
    assert main(args + ["--max-steps", "4"]) == 0
    run_dir = os.path.join(runs, "r")
    for name in ("config.yaml", "vqvae.safetensors", "latent_stats.safetensors", "train_state.pt", "metrics.jsonl"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    train = read_metrics(run_dir, "train")
    assert [r["step"] for r in train] == [2, 4]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    notes = read_metrics(run_dir, "note")
    assert any("LPIPS" in n["message"] for n in notes)  # used or skipped with its reason: never silent

    # The same run name without --resume would overwrite it: refused.
    assert main(args + ["--max-steps", "4"]) == 2
    assert "--resume" in capsys.readouterr().err

    from smokeflow.training.checkpoint_io import load_train_state

    assert load_train_state(os.path.join(run_dir, "train_state.pt"))["step"] == 4
    assert main(args + ["--max-steps", "6", "--resume"]) == 0
    assert load_train_state(os.path.join(run_dir, "train_state.pt"))["step"] == 6
    steps = [r["step"] for r in read_metrics(run_dir, "train")]
    assert steps == [2, 4, 6]  # resumed at 4, not restarted from 0
    assert "run folder" in capsys.readouterr().out


def test_resume_after_a_kill_loses_at_most_the_last_interval(tmp_path, data_root):
    """SIGKILL a training process mid-run; --resume continues from its last atomic checkpoint."""
    import signal
    import subprocess
    import sys
    import time

    from smokeflow.training.checkpoint_io import load_train_state

    runs = str(tmp_path / "runs")
    run_dir = os.path.join(runs, "killed")
    state_path = os.path.join(run_dir, "train_state.pt")
    # The tiny config checkpoints after every step; 1000 steps would take minutes, so it is killed mid-run.
    proc = subprocess.Popen([sys.executable, "-m", "smokeflow", "train-vqvae", "--config", TINY_CONFIG,
                             "--run-name", "killed", "--runs-dir", runs, "--data", data_root, "--device", "cpu",
                             "--max-steps", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        saved = 0
        while saved < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if os.path.exists(state_path):
                saved = load_train_state(state_path)["step"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = load_train_state(state_path)["step"]  # the file is whole: written atomically
    assert 3 <= saved < 1000
    assert main(["train-vqvae", "--config", TINY_CONFIG, "--run-name", "killed", "--runs-dir", runs, "--data",
                 data_root, "--device", "cpu", "--resume", "--max-steps", str(saved + 2)]) == 0
    assert load_train_state(state_path)["step"] == saved + 2
    steps = [r["step"] for r in read_metrics(run_dir, "train")]
    assert steps == sorted(set(steps)) and steps[-1] == saved + 2  # no step logged twice after the resume


def test_resume_without_a_run_is_a_clear_error(tmp_path, data_root):
    from smokeflow.training.vqvae_trainer import train_vqvae

    with pytest.raises(SmokeflowError, match="nothing to resume"):
        train_vqvae(TINY_CONFIG, "absent", runs_dir=str(tmp_path), device="cpu", resume=True, data_path=data_root,
                    progress=False)


def test_inspect_command_writes_grid_and_report(tmp_path_factory, data_root, capsys):
    checkpoint = tiny_checkpoint(str(tmp_path_factory.getbasetemp()), data_root)
    out = tmp_path_factory.mktemp("inspect")
    assert main(["inspect-vqvae", "--checkpoint", checkpoint, "--data", data_root, "--split", "test",
                 "--num-videos", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "codebook" in printed
    report = json.loads((out / "vqvae_inspection.json").read_text())
    assert report["num_videos"] == 2 and report["frames_per_video"] == 6
    quantized = report["quantized"]
    assert 0 < quantized["psnr"] <= 100 and -1 <= quantized["ssim"] <= 1
    latents = report["latents"]
    assert latents["shape"] == [16, 8, 8] and len(latents["per_channel_std"]) == 16
    assert abs(sum(latents["histogram"]["normal_fraction"]) - 1) < 1e-3
    codebook = report["codebook"]
    assert 1 <= codebook["codes_used"] <= 64 and codebook["dead_codes"] == 64 - codebook["codes_used"]
    assert 1 <= codebook["perplexity"] <= codebook["codes_used"] + 1e-6
    assert 0 < codebook["smoke_token_fraction"] <= 1
    grid = np.asarray(Image.open(out / "reconstructions.png"))
    assert grid.shape[0] == 2 * 3 * (64 * 2 + 2)  # two videos x (original, reconstruction, error) rows


def test_reconstruction_metrics_see_background_noise():
    from smokeflow.training.vqvae_inspect import error_map, reconstruction_metrics

    original = np.zeros((2, 64, 64, 3), np.uint8)
    original[:, 20:40, 20:40] = 120
    perfect = reconstruction_metrics(original, original.copy())
    assert perfect["psnr"] == 100.0 and perfect["background_nonzero_fraction"] == 0
    noisy = original.copy()
    noisy[:, :10, :10] = 3  # faint decoder noise on black, below the smoke threshold
    metrics = reconstruction_metrics(original, noisy)
    assert metrics["background_max"] == 3
    assert metrics["background_nonzero_fraction"] == pytest.approx(100 / (64 * 64 - 400))
    assert metrics["psnr_smoke"] == 100.0  # the smoke itself is exact
    assert error_map(original, noisy)[0, 0, 0].max() > 0 and error_map(original, noisy)[0, 30, 30].max() == 0


def test_two_process_ddp_run_on_cpu(tmp_path, data_root):
    """--num-gpus 2 re-launches through torchrun; on CPU the two ranks train with gloo."""
    runs = str(tmp_path / "runs")
    code = main(["train-vqvae", "--config", TINY_CONFIG, "--run-name", "ddp", "--runs-dir", runs, "--data", data_root,
                 "--device", "cpu", "--num-gpus", "2", "--max-steps", "2"])
    assert code == 0
    run_dir = os.path.join(runs, "ddp")
    assert [r["step"] for r in read_metrics(run_dir, "train")] == [2]
    assert os.path.isfile(os.path.join(run_dir, "latent_stats.safetensors"))
