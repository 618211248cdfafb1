"""Compact-student distillation (smokeflow.training.student_distiller) on a tiny real teacher: the cut-down
initialisation keeps what it can exactly, the draws lie where the sampler goes, training closes the gap to the
teacher, the student folder samples, resume is exact, the CLI protects existing folders."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from smokeflow.cli import main as cli_main
from smokeflow.flow.path import FlowPath
from smokeflow.models.vector_field import VectorField, VectorFieldConfig
from smokeflow.training.run_logger import read_metrics
from smokeflow.training.student_distiller import (StudentDistillConfig, clean_estimate, compact_student,
                                                  distill_student, student_draws)

from vqvae_helpers import tiny_flow_run


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """(data root with a train+val latent cache, a tiny trained flow checkpoint folder), made by the real code."""
    return tiny_flow_run(str(tmp_path_factory.getbasetemp()), "student_teacher", seed=5)


def _config(**kwargs):
    settings = dict(depth=1, mlp_ratio=1.0, steps=4, batch_size=4, learning_rate=1e-3, warmup_steps=2,
                    frames_per_clip=6, checkpoint_every=2, log_every=2, val_batches=1)
    settings.update(kwargs)
    return StudentDistillConfig(**settings)


def _random_network(**kwargs) -> VectorField:
    settings = dict(state_size=8, state_res=[4, 4], inner_dim=16, depth=2, mid_depth=0, num_heads=2,
                    mlp_ratio=4.0, max_distance=8, activation="gelu", prediction="data")
    settings.update(kwargs)
    torch.manual_seed(0)
    net = VectorField(VectorFieldConfig(**settings))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)  # the zero-initialised head would hide every difference
    return net.eval()


def _inputs(net: VectorField, batch: int = 3):
    g = torch.Generator().manual_seed(1)
    shape = (batch, net.config.state_size, *net.config.state_res)
    return (torch.randn(shape, generator=g), torch.rand(batch, generator=g), torch.randn(shape, generator=g),
            torch.randn(shape, generator=g), torch.tensor([1, 3, 5][:batch]))


def test_a_student_of_the_teachers_shape_is_the_teacher():
    net = _random_network()
    student = compact_student(net, depth=2, mlp_ratio=4.0)
    x = _inputs(net)
    torch.testing.assert_close(student(*x), net(*x), rtol=0, atol=0)


def test_pruning_keeps_the_mlp_units_that_carry_the_output():
    """With half of every MLP's hidden units switched off in the teacher, the half-width student is the teacher
    exactly: the pruning keeps the live units."""
    net = _random_network()
    with torch.no_grad():
        for block in [*net.in_blocks, *net.out_blocks]:
            dead = torch.randperm(block.mlp[0].out_features, generator=torch.Generator().manual_seed(2))[:32]
            block.mlp[0].weight[dead] = 0
            block.mlp[0].bias[dead] = 0
            block.mlp[2].weight[:, dead] = 0
    student = compact_student(net, depth=2, mlp_ratio=2.0)
    assert student.in_blocks[0].mlp[0].out_features == 32
    x = _inputs(net)
    torch.testing.assert_close(student(*x), net(*x), rtol=1e-5, atol=1e-5)
    assert student.flops_per_call(1) < net.flops_per_call(1)


def test_a_shallower_student_keeps_the_outer_pair_of_blocks_and_drops_the_middle():
    net = _random_network(mid_depth=1)
    student = compact_student(net, depth=1, mlp_ratio=4.0)
    assert (len(student.in_blocks), len(student.mid_blocks), len(student.out_blocks)) == (1, 0, 1)
    mine, theirs = student.state_dict(), net.state_dict()
    for key, value in mine.items():
        source = key.replace("out_blocks.0.", "out_blocks.1.")  # the output block paired with input block 0
        torch.testing.assert_close(value, theirs[source], rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="cannot be deeper or wider"):
        compact_student(net, depth=3, mlp_ratio=4.0)
    with pytest.raises(ValueError, match="cannot be deeper or wider"):
        compact_student(net, depth=1, mlp_ratio=8.0)


def test_draws_lie_on_the_paths_the_sampler_visits():
    """Times stay at or above the warm start; about the configured share of draws is on a warm-start path; the
    states are the path's points for the drawn frames; the conditions carry at most the configured noise."""
    path = FlowPath(1e-7)
    clips = torch.randn(400, 6, 4, 2, 2)
    config = StudentDistillConfig(warm_start_prob=0.5, warm_start_max=0.3, condition_noise=0.0, min_time=0.1)
    x_t, t, z_ref, z_ctx, distance, z = student_draws(clips, path, config, torch.Generator().manual_seed(0))
    assert x_t.shape == z.shape == (400, 4, 2, 2) and t.min() >= 0.1 and t.max() <= 1
    assert float(t.max()) > 0.9 and float(t.min()) < 0.2
    assert bool((distance >= 1).all())
    # Without condition noise, z_ref is the clip's frame before the target; x_t - t z has the noise part and the
    # warm start's share of z_ref: rows off the warm path have no z_ref component at all.
    rows = torch.arange(400)
    ref_is_previous = [bool((clips[i] == z_ref[i]).all(dim=(1, 2, 3)).any()) for i in rows]
    assert all(ref_is_previous)
    # The same stream with no warm-start draws: rows off the warm path are the same draws, the others are not.
    cold = StudentDistillConfig(warm_start_prob=0.0, warm_start_max=0.3, condition_noise=0.0, min_time=0.1)
    x_cold, t_cold, *_ = student_draws(clips, path, cold, torch.Generator().manual_seed(0))
    same = (x_cold == x_t).flatten(1).all(dim=1)
    assert 0.4 < float(same.float().mean()) < 0.6
    assert torch.equal(t_cold[same], t[same]) and bool((t_cold[~same] <= t[~same]).all())  # t ~ U[s, 1]
    noisy = StudentDistillConfig(condition_noise=0.2)
    _, _, ref2, _, _, _ = student_draws(clips, path, noisy, torch.Generator().manual_seed(0))
    assert 0 < float((ref2 - z_ref).std()) < 0.2


def test_the_clean_estimate_of_a_data_network_is_its_head_output():
    net = _random_network()
    x = _inputs(net)
    estimate = clean_estimate(net, *x)
    t = x[1].view(-1, 1, 1, 1)
    torch.testing.assert_close(estimate, x[0] + (1 - t) * net(*x), rtol=1e-6, atol=1e-6)


def test_distillation_closes_the_gap_and_writes_a_checkpoint_that_samples(teacher, tmp_path):
    from smokeflow.pipeline import SmokeFlow

    root, folder = teacher
    out = str(tmp_path / "student")
    last = distill_student(folder, root, out, _config(steps=30, checkpoint_every=10, log_every=5),
                           progress=lambda message: None)
    val = [r["val_gap"] for r in read_metrics(out, "val")]
    assert [r["step"] for r in read_metrics(out, "val")] == [0, 10, 20, 30]  # step 0: the cut-down teacher
    assert val[-1] < 0.5 * val[0] and last["val_gap"] == val[-1]
    for name in ("vqvae.safetensors", "latent_stats.safetensors", "config.yaml", "flow.safetensors", "student.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "flow_detail.safetensors"))
    network = yaml.safe_load(open(os.path.join(out, "config.yaml")))["flow"]["vector_field_regressor"]
    assert (network["depth"], network["mid_depth"], network["mlp_ratio"]) == (1, 0, 1.0)
    info = json.load(open(os.path.join(out, "student.json")))
    assert info["student_gflop_per_call"] < 0.5 * info["teacher_gflop_per_call"] and info["steps_done"] == 30
    weights = load_file(os.path.join(out, "flow.safetensors"))
    assert all(t.dtype == torch.float16 for t in weights.values() if t.is_floating_point())
    student = SmokeFlow.from_pretrained(out)
    assert len(student.flow.model.in_blocks) == 1
    frame = student.decode(torch.zeros(1, 16, 8, 8))
    result = student.predict(frame, num_frames=2, steps=2, num_samples=2)
    assert result.frames.shape == (2, 2, 64, 64, 3) and result.nfe == 4


def test_resume_after_a_stop_repeats_the_uninterrupted_run_exactly(teacher, tmp_path):
    root, folder = teacher
    quiet = lambda message: None  # noqa: E731
    full = str(tmp_path / "full")
    distill_student(folder, root, full, _config(steps=4), progress=quiet)
    stopped = str(tmp_path / "stopped")
    distill_student(folder, root, stopped, _config(steps=2), progress=quiet)  # "killed" after step 2
    distill_student(folder, root, stopped, _config(steps=4), resume=True, progress=quiet)
    a = load_file(os.path.join(full, "flow.safetensors"))
    b = load_file(os.path.join(stopped, "flow.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(stopped, "train")] == [2, 4]


def test_cli_protects_existing_folders_and_reports_bad_settings(teacher, tmp_path, capsys):
    root, folder = teacher
    base = ["distill-student", "--checkpoint", folder, "--data", root, "--steps", "1", "--batch-size", "2",
            "--frames-per-clip", "6", "--mlp-ratio", "1"]
    assert cli_main(base + ["--out", str(tmp_path / "new_folder_of_teacher"), "--depth", "5"]) == 2
    assert "cannot be deeper" in capsys.readouterr().err
    before = load_file(os.path.join(folder, "flow.safetensors"))
    assert cli_main(base + ["--out", folder]) == 2  # the teacher's folder holds a checkpoint: refused
    assert "already there" in capsys.readouterr().err
    assert all(torch.equal(before[k], v) for k, v in load_file(os.path.join(folder, "flow.safetensors")).items())
    assert cli_main(base + ["--out", folder, "--overwrite"]) == 2
    assert "not over its teacher" in capsys.readouterr().err
    done = str(tmp_path / "done")
    assert cli_main(base + ["--out", done]) == 0
    assert "student ->" in capsys.readouterr().out
    assert cli_main(base + ["--out", done]) == 2
    assert "already there" in capsys.readouterr().err
    assert cli_main(base + ["--out", str(tmp_path / "s"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert cli_main(base + ["--out", done, "--resume", "--depth", "2"]) == 2  # another shape than the saved one
    assert "not the state of a student of this shape" in capsys.readouterr().err


def test_a_detail_copy_for_a_compact_checkpoint_blends_with_it(teacher, tmp_path):
    """--detail-of: the teacher's detail copy distilled into a copy of the compact network; the new folder is the
    compact checkpoint plus that copy, and detail=a samples between the two."""
    import shutil

    from safetensors.torch import save_file

    from smokeflow.errors import CheckpointError, DataError
    from smokeflow.pipeline import SmokeFlow

    root, folder = teacher
    quiet = lambda message: None  # noqa: E731
    with_detail = str(tmp_path / "teacher_with_detail")
    shutil.copytree(folder, with_detail)
    detail = {k: v.float() * (1.5 if k.startswith("head.") else 1.0)  # a detail network unlike the teacher
              for k, v in load_file(os.path.join(folder, "flow.safetensors")).items()}
    save_file(detail, os.path.join(with_detail, "flow_detail.safetensors"))
    compact = str(tmp_path / "compact")
    distill_student(with_detail, root, compact, _config(steps=4), progress=quiet)
    with pytest.raises(CheckpointError, match="flow_detail"):  # a teacher without a detail copy
        distill_student(folder, root, str(tmp_path / "x"), _config(), progress=quiet, detail_of=compact)
    with pytest.raises(DataError, match="MLP ratio"):  # the student's shape must be the compact network's
        distill_student(with_detail, root, str(tmp_path / "y"), _config(mlp_ratio=2.0), progress=quiet,
                        detail_of=compact)
    out = str(tmp_path / "compact_detail")
    distill_student(with_detail, root, out, _config(steps=20, checkpoint_every=10), progress=quiet,
                    detail_of=compact)
    val = [r["val_gap"] for r in read_metrics(out, "val")]
    assert val[-1] < val[0]  # nearer the detail teacher than the compact network it started as
    own, base = load_file(os.path.join(out, "flow.safetensors")), load_file(os.path.join(compact, "flow.safetensors"))
    assert all(torch.equal(own[k], base[k]) for k in base)  # the compact network itself is unchanged
    copy = load_file(os.path.join(out, "flow_detail.safetensors"))
    assert {k: v.shape for k, v in copy.items()} == {k: v.shape for k, v in base.items()}
    assert os.path.isfile(os.path.join(out, "student_detail.json"))
    pipe = SmokeFlow.from_pretrained(out)
    frame = pipe.decode(torch.zeros(1, 16, 8, 8))
    plain = pipe.predict(frame, num_frames=2, steps=2, detail=0).frames
    blended = pipe.predict(frame, num_frames=2, steps=2, detail=0.5)
    assert blended.detail == 0.5 and blended.frames.shape == plain.shape
    assert np.array_equal(SmokeFlow.from_pretrained(compact).predict(frame, num_frames=2, steps=2).frames, plain)


def test_init_goes_on_distilling_a_compact_checkpoint(teacher, tmp_path, capsys):
    """--init: the student starts as the given compact network (its first val gap is that network's last, far
    below a fresh cut's), trains on, and the folder it writes samples; --init with --detail-of is refused."""
    from smokeflow.errors import DataError
    from smokeflow.pipeline import SmokeFlow

    root, folder = teacher
    quiet = lambda message: None  # noqa: E731
    compact = str(tmp_path / "compact")
    distill_student(folder, root, compact, _config(steps=20, checkpoint_every=10), progress=quiet)
    again = str(tmp_path / "again")
    distill_student(folder, root, again, _config(steps=10, checkpoint_every=5, learning_rate=3e-4), progress=quiet,
                    init_from=compact)
    first, cut = read_metrics(again, "val")[0], read_metrics(compact, "val")[0]
    assert first["step"] == 0 and first["val_gap"] < 0.5 * cut["val_gap"]
    assert first["val_gap"] == pytest.approx(read_metrics(compact, "val")[-1]["val_gap"], rel=0.05)  # fp16 weights
    with open(os.path.join(again, "student.json")) as fh:
        assert json.load(fh)["started_from"] == os.path.abspath(compact)
    with pytest.raises(DataError, match="not over the compact checkpoint it starts from"):
        distill_student(folder, root, compact, _config(), progress=quiet, init_from=compact)
    with pytest.raises(DataError, match="do not give a start"):
        distill_student(folder, root, str(tmp_path / "x"), _config(), progress=quiet, init_from=compact,
                        detail_of=compact)
    out = str(tmp_path / "cli")
    assert cli_main(["distill-student", "--checkpoint", folder, "--data", root, "--out", out, "--init", compact,
                     "--depth", "1", "--mlp-ratio", "1", "--steps", "2", "--batch-size", "2",
                     "--frames-per-clip", "6"]) == 0
    assert "student ->" in capsys.readouterr().out
    pipe = SmokeFlow.from_pretrained(out)
    assert pipe.predict(pipe.decode(torch.zeros(1, 16, 8, 8)), num_frames=2, steps=2).frames.shape == (1, 2, 64, 64, 3)
