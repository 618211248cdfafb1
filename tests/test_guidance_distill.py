"""Detail-guidance distillation (smokeflow.training.guidance_distiller) on a tiny real teacher: the target is the
guided sampler's velocity, training closes the gap to it, the student folder samples, resume is exact."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from smokeflow.cli import main as cli_main
from smokeflow.training.guidance_distiller import GuidanceDistillConfig, GuidedTarget, distill_detail_guidance
from smokeflow.training.run_logger import read_metrics

from vqvae_helpers import tiny_flow_run


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """(data root with a train+val latent cache, a tiny trained flow checkpoint folder), made by the real code."""
    return tiny_flow_run(str(tmp_path_factory.getbasetemp()), "distill_teacher", seed=3)


def _config(**kwargs):
    settings = dict(weight=0.5, steps=4, batch_size=4, learning_rate=1e-3, warmup_steps=2, frames_per_clip=6,
                    checkpoint_every=2, log_every=2, val_batches=1)
    settings.update(kwargs)
    return GuidanceDistillConfig(**settings)


def test_the_target_is_the_guided_samplers_velocity(teacher):
    """One Euler step from pure noise (s = 0) of SmokeFlow's guided rollout moves the noise by the target."""
    from smokeflow.pipeline import SmokeFlow

    root, folder = teacher
    pipe = SmokeFlow.from_pretrained(folder)
    frame = pipe.decode(torch.zeros(1, 16, 8, 8))[0]
    frame[20:44, 24:40] = 200  # a block of smoke, so the smoke tokens are not empty
    z_obs = pipe.encode(frame[None])
    out = pipe.predict_latents(z_obs, 1, steps=1, warm_start=0.0, seed=9, detail_guidance=0.7)
    eps = torch.randn(z_obs.shape, generator=torch.Generator().manual_seed(9))
    target, own = GuidedTarget(pipe, 0.7)(eps, torch.zeros(1), z_obs, z_obs, torch.tensor([1]))
    torch.testing.assert_close(out.latents[:, 0], eps + target, atol=1e-4, rtol=0)
    assert not torch.allclose(target, own, atol=1e-4)  # the guidance changes the velocity on the smoke


def test_distillation_closes_the_gap_and_writes_a_checkpoint_that_samples(teacher, tmp_path):
    from smokeflow.pipeline import SmokeFlow

    root, folder = teacher
    out = str(tmp_path / "student")
    last = distill_detail_guidance(folder, root, out, _config(steps=30, checkpoint_every=10, log_every=5),
                                   progress=lambda message: None)
    val = [r["val_gap_ratio"] for r in read_metrics(out, "val")]
    assert len(val) == 3 and val[-1] < 0.8 * val[0] and val[0] < 1.0  # closer to the guided velocity than the teacher
    assert last["val_gap_ratio"] == val[-1]
    train = read_metrics(out, "train")
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30] and all(r["steps_per_s"] > 0 for r in train)
    for name in ("vqvae.safetensors", "latent_stats.safetensors", "config.yaml", "flow.safetensors",
                 "flow_detail.safetensors", "distill.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    weights = load_file(os.path.join(out, "flow_detail.safetensors"))
    assert all(t.dtype == torch.float16 for t in weights.values() if t.is_floating_point())
    assert json.load(open(os.path.join(out, "distill.json")))["config"]["weight"] == 0.5
    student = SmokeFlow.from_pretrained(out)
    frame = student.decode(torch.zeros(1, 16, 8, 8))
    result = student.predict(frame, num_frames=2, steps=2, num_samples=2, detail=1.0)
    assert result.frames.shape == (2, 2, 64, 64, 3) and result.nfe == 4  # one network call per step
    teacher_weights = load_file(os.path.join(folder, "flow.safetensors"))
    assert any(not torch.equal(weights[k].float(), teacher_weights[k].float()) for k in weights)
    # The folder's own flow network is the teacher's: at detail 0 it samples as the teacher does.
    own = load_file(os.path.join(out, "flow.safetensors"))
    assert all(torch.equal(own[k], teacher_weights[k]) for k in own)
    teacher = SmokeFlow.from_pretrained(folder).predict(frame, num_frames=2, steps=2, num_samples=2)
    assert np.array_equal(student.predict(frame, num_frames=2, steps=2, num_samples=2).frames, teacher.frames)


def test_resume_after_a_stop_repeats_the_uninterrupted_run_exactly(teacher, tmp_path):
    root, folder = teacher
    quiet = lambda message: None  # noqa: E731
    full = str(tmp_path / "full")
    distill_detail_guidance(folder, root, full, _config(steps=4), progress=quiet)
    stopped = str(tmp_path / "stopped")
    distill_detail_guidance(folder, root, stopped, _config(steps=2), progress=quiet)  # "killed" after step 2
    distill_detail_guidance(folder, root, stopped, _config(steps=4), resume=True, progress=quiet)
    a = load_file(os.path.join(full, "flow_detail.safetensors"))
    b = load_file(os.path.join(stopped, "flow_detail.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(stopped, "train")] == [2, 4]


def test_cli_refuses_to_overwrite_or_to_write_over_the_teacher(teacher, tmp_path, capsys):
    root, folder = teacher
    base = ["distill-guidance", "--checkpoint", folder, "--data", root, "--steps", "1", "--batch-size", "2"]
    assert cli_main(base + ["--out", folder]) == 2
    assert "not over its teacher" in capsys.readouterr().err
    done = str(tmp_path / "done")
    assert cli_main(base + ["--out", done, "--frames-per-clip", "6"]) == 0
    before = load_file(os.path.join(done, "flow_detail.safetensors"))
    assert cli_main(base + ["--out", done, "--frames-per-clip", "6"]) == 2
    assert "detail weights are already there" in capsys.readouterr().err
    after = load_file(os.path.join(done, "flow_detail.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # the refusal left the student as it was
    assert cli_main(base + ["--out", str(tmp_path / "s"), "--weight", "0"]) == 2
    assert "weight" in capsys.readouterr().err
    assert cli_main(base + ["--out", str(tmp_path / "s"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_cli_time_limit_stops_after_a_checkpoint_with_its_val_figure(teacher, tmp_path, capsys):
    """--max-minutes 0 stops after the first step: saved, scored on val, reported; --ema-decay reaches the run."""
    root, folder = teacher
    out = str(tmp_path / "s")
    assert cli_main(["distill-guidance", "--checkpoint", folder, "--data", root, "--out", out, "--steps", "50",
                     "--batch-size", "2", "--checkpoint-every", "10", "--ema-decay", "0.5", "--max-minutes", "0",
                     "--frames-per-clip", "6", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "stopped after 0.0 minutes at step 1" in printed and "nan" not in printed
    info = json.load(open(os.path.join(out, "distill.json")))
    assert info["steps_done"] == 1 and info["config"]["ema_decay"] == 0.5
    assert [r["step"] for r in read_metrics(out, "val")] == [1]
