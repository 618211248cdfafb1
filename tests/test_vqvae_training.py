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
    assert perfect["sharpness"] == perfect["sharpness_original"] > 0
    padded = np.pad(original.astype(float), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    soft = np.mean([padded[:, dy:dy + 64, dx:dx + 64] for dy in range(5) for dx in range(5)], axis=0)
    soft = soft.round().astype(np.uint8)  # a 5x5 box blur: the square's edges spread over 5 px
    assert reconstruction_metrics(original, soft)["sharpness"] < perfect["sharpness"]
    assert reconstruction_metrics(original * 0, original * 0)["sharpness"] is None  # no smoke, no sharpness


def test_two_process_ddp_run_on_cpu(tmp_path, data_root):
    """--num-gpus 2 re-launches through torchrun; on CPU the two ranks train with gloo."""
    runs = str(tmp_path / "runs")
    code = main(["train-vqvae", "--config", TINY_CONFIG, "--run-name", "ddp", "--runs-dir", runs, "--data", data_root,
                 "--device", "cpu", "--num-gpus", "2", "--max-steps", "2"])
    assert code == 0
    run_dir = os.path.join(runs, "ddp")
    assert [r["step"] for r in read_metrics(run_dir, "train")] == [2]
    assert os.path.isfile(os.path.join(run_dir, "latent_stats.safetensors"))


def test_gradient_loss_pays_for_blurred_edges_not_for_shifted_brightness():
    import torch
    import torch.nn.functional as F

    from smokeflow.training.vqvae_trainer import gradient_loss, reconstruction_weights

    x = -torch.ones(2, 3, 16, 16)
    x[:, :, 4:12, 4:12] = 0.6  # a square of smoke with hard edges
    weights = reconstruction_weights(x, smoke_weight=4.0, dilation=1)
    assert gradient_loss(x, x, weights).item() == 0.0
    # A uniform offset inside the smoke keeps every edge inside it: only the rim's step changes.
    brighter = x.clone()
    brighter[:, :, 4:12, 4:12] += 0.1
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    # The blur spreads each step over 3 pixels; the L1 of the differences counts that error twice per edge.
    assert gradient_loss(blurred, x, weights) > 2 * gradient_loss(brighter, x, weights) > 0
    # By hand, a 1x2 image x = [0, 1] against recon [0, 0], weights 1: one horizontal pair per channel, each off
    # by 1, no vertical pairs -> 3 / (1 pair x 3 channels) = 1.
    a = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).repeat(1, 3, 1, 1)
    b = torch.zeros_like(a)
    ones = torch.ones(1, 1, 1, 2)
    assert gradient_loss(b, a, ones).item() == pytest.approx(1.0)


def test_a_decoder_fine_tune_with_the_gradient_term_logs_it_and_sharpness(tmp_path, data_root):
    import yaml

    checkpoint = tiny_checkpoint(str(tmp_path / "source"), data_root)
    config = yaml.safe_load(open(TINY_CONFIG))
    config["vqvae_training"]["gradient_weight"] = 1.0
    config_path = tmp_path / "grad.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["train-vqvae", "--config", str(config_path), "--run-name", "grad", "--runs-dir", str(tmp_path),
                 "--data", data_root, "--init-from", checkpoint, "--finetune-decoder", "--max-steps", "3"]) == 0
    rows = read_metrics(str(tmp_path / "grad"))
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    assert train and all(r["gradient"] > 0 for r in train)
    assert val and 0 < val[-1]["sharpness"] and 0 < val[-1]["sharpness_original"]


def test_patch_discriminator_scores_8x8_patches_and_its_hinge_losses():
    import torch

    from smokeflow.models.patch_discriminator import (PatchDiscriminator, discriminator_hinge_loss,
                                                      generator_adversarial_loss)

    logits = PatchDiscriminator(width=8)(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, 1, 8, 8)
    zeros = torch.zeros(2, 1, 8, 8)
    assert discriminator_hinge_loss(zeros, zeros).item() == 2.0  # cannot tell real from decoded
    assert discriminator_hinge_loss(zeros + 1, zeros - 1).item() == 0.0  # sure of every patch: no loss
    assert discriminator_hinge_loss(zeros + 3, zeros - 5).item() == 0.0  # the hinge does not reward more
    assert generator_adversarial_loss(zeros + 0.5).item() == -0.5


def test_an_adversarial_decoder_fine_tune_trains_both_players_and_resumes_the_game(tmp_path, data_root):
    import torch
    import yaml

    from smokeflow.training.checkpoint_io import load_train_state

    checkpoint = tiny_checkpoint(str(tmp_path / "source"), data_root)
    config = yaml.safe_load(open(TINY_CONFIG))
    config["vqvae_training"].update(adversarial_weight=0.1, discriminator_width=8, log_every=1)
    config_path = tmp_path / "adv.yaml"
    config_path.write_text(yaml.safe_dump(config))
    common = ["train-vqvae", "--config", str(config_path), "--run-name", "adv", "--runs-dir", str(tmp_path),
              "--data", data_root]
    assert main(common + ["--init-from", checkpoint, "--finetune-decoder", "--max-steps", "2"]) == 0
    run_dir = tmp_path / "adv"
    state = load_train_state(run_dir / "train_state.pt")
    saved_judge = {k: v.clone() for k, v in state["discriminator"].items()}
    assert state["discriminator_optimizer"]["state"]  # it took steps
    train = [r for r in read_metrics(str(run_dir)) if r.get("kind") == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(np.isfinite(r["adversarial"]) and 0 <= r["discriminator"] <= 4 for r in train)
    # Resumed, the game goes on against the saved discriminator: its weights move on from the saved ones.
    assert main(common + ["--resume", "--max-steps", "4"]) == 0
    resumed = load_train_state(run_dir / "train_state.pt")
    assert resumed["step"] == 4
    moved = [k for k in saved_judge if not torch.equal(saved_judge[k], resumed["discriminator"][k])]
    assert moved and set(resumed["discriminator"]) == set(saved_judge)
    # Adam's step count went on from the saved optimiser (a fresh discriminator would be at 2).
    assert {float(s["step"]) for s in resumed["discriminator_optimizer"]["state"].values()} == {4.0}
    assert [r["step"] for r in read_metrics(str(run_dir)) if r.get("kind") == "train"] == [1, 2, 3, 4]


def _adversarial_config(tmp_path, weight: float) -> str:
    import yaml

    config = yaml.safe_load(open(TINY_CONFIG))
    config["vqvae_training"].update(adversarial_weight=weight, discriminator_width=8, log_every=1)
    path = tmp_path / f"adv_{weight}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_resuming_with_a_discriminator_the_run_never_had_says_so(tmp_path, data_root, capsys):
    from smokeflow.training.checkpoint_io import load_train_state

    checkpoint = tiny_checkpoint(str(tmp_path / "source"), data_root)
    common = ["train-vqvae", "--run-name", "plain", "--runs-dir", str(tmp_path), "--data", data_root]
    assert main(common + ["--config", _adversarial_config(tmp_path, 0.0), "--init-from", checkpoint,
                          "--finetune-decoder", "--max-steps", "2"]) == 0
    assert "discriminator" not in load_train_state(tmp_path / "plain" / "train_state.pt")
    capsys.readouterr()
    assert main(common + ["--config", _adversarial_config(tmp_path, 0.1), "--resume", "--max-steps", "3"]) == 0
    assert "a fresh one starts now" in capsys.readouterr().out
    notes = [r["message"] for r in read_metrics(str(tmp_path / "plain"), "note")]
    assert any("had no discriminator" in n for n in notes)
    assert "discriminator" in load_train_state(tmp_path / "plain" / "train_state.pt")  # kept from now on
    # And back: switching it off again is said too (the next checkpoint drops it).
    assert main(common + ["--config", _adversarial_config(tmp_path, 0.0), "--resume", "--max-steps", "4"]) == 0
    assert "will not keep it" in capsys.readouterr().out


def test_two_process_ddp_adversarial_fine_tune_on_cpu(tmp_path, data_root):
    """The discriminator is DDP-wrapped too: a 2-rank gloo run trains both players and saves the game."""
    from smokeflow.training.checkpoint_io import load_train_state

    checkpoint = tiny_checkpoint(str(tmp_path / "source"), data_root)
    runs = str(tmp_path / "runs")
    code = main(["train-vqvae", "--config", _adversarial_config(tmp_path, 0.1), "--run-name", "ddp_adv",
                 "--runs-dir", runs, "--data", data_root, "--device", "cpu", "--num-gpus", "2", "--max-steps", "2",
                 "--init-from", checkpoint, "--finetune-decoder"])
    assert code == 0
    run_dir = os.path.join(runs, "ddp_adv")
    train = read_metrics(run_dir, "train")
    assert [r["step"] for r in train] == [1, 2]
    assert all(np.isfinite(r["adversarial"]) and 0 <= r["discriminator"] <= 4 for r in train)
    state = load_train_state(os.path.join(run_dir, "train_state.pt"))
    assert {float(s["step"]) for s in state["discriminator_optimizer"]["state"].values()} == {2.0}


def test_the_discriminator_never_pushes_pixels_the_decoder_draws_exactly_black():
    """Through the decoder's straight-through clamp, the adversarial gradient would reach the raw values below
    the black background and lift them into a grey haze; adversarial_step must give those pixels none."""
    import torch

    from smokeflow.models.patch_discriminator import PatchDiscriminator
    from smokeflow.models.vqvae import clamp_straight_through
    from smokeflow.training.vqvae_trainer import VQVAETrainingConfig, adversarial_step

    torch.manual_seed(0)
    raw = torch.full((2, 3, 64, 64), -4.0)  # the decoder's black background, far below -1
    raw[:, :, 16:48, 16:48] = 0.3 * torch.rand(2, 3, 32, 32)  # a plume
    raw.requires_grad_(True)
    reconstruction = clamp_straight_through(raw)
    discriminator = PatchDiscriminator(width=8)
    optimizer = torch.optim.AdamW(discriminator.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in discriminator.state_dict().items()}
    terms = adversarial_step(reconstruction, torch.zeros(2, 3, 64, 64) - 1, VQVAETrainingConfig(adversarial_weight=0.1),
                             discriminator, discriminator, optimizer, use_autocast=False)
    assert 0 <= terms["discriminator"].item() and not terms["discriminator"].requires_grad
    assert any(not torch.equal(before[k], v) for k, v in discriminator.state_dict().items())  # it took a step
    terms["adversarial"].backward()
    background = raw.grad[:, :, :16, :]
    plume = raw.grad[:, :, 16:48, 16:48]
    assert background.abs().max().item() == 0.0 and plume.abs().max().item() > 0


def test_the_shipped_decoder_fine_tune_config_fits_the_shipped_autoencoder():
    from smokeflow.config import load_config
    from smokeflow.training.vqvae_trainer import load_training_config

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _, model_cfg, train_cfg = load_training_config(os.path.join(repo, "configs", "decoder_adversarial.yaml"))
    assert train_cfg.adversarial_weight > 0 and train_cfg.gradient_weight > 0 and train_cfg.max_steps == 1000
    shipped = load_config(os.path.join(repo, "checkpoints", "default", "config.yaml"))["vqvae"]
    assert load_config(os.path.join(repo, "configs", "decoder_adversarial.yaml"))["vqvae"] == shipped


def test_a_torchrun_process_exits_with_its_code_and_flushed_output_without_interpreter_shutdown(tmp_path):
    """exit_torchrun_process: nothing outside torchrun; inside, the exit code and what was printed survive, and
    atexit handlers (the interpreter's shutdown, where gloo sometimes aborted finished runs) do not run."""
    import subprocess
    import sys

    from smokeflow.training.distributed import exit_torchrun_process

    exit_torchrun_process(0)  # not under torchrun here: returns
    script = ("import atexit, sys; from smokeflow.training.distributed import exit_torchrun_process; "
              "atexit.register(lambda: print('shutdown ran')); print('written', end=''); "
              "sys.stderr.write('said'); exit_torchrun_process(3)")
    env = dict(os.environ, RANK="1", WORLD_SIZE="2")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (3, "written", "said")
    alone = subprocess.run([sys.executable, "-c", script], env=dict(env, WORLD_SIZE="1"), capture_output=True,
                           text=True, timeout=120)
    assert alone.returncode == 0 and "shutdown ran" in alone.stdout  # a one-process job ends normally
