"""The detail blend (smokeflow.flow.detail_blend) on a tiny real flow run: the end points are the two networks
exactly, the middle is their average, packed sampling follows every change, bad input gets clear errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from smokeflow.cli import main as cli_main
from smokeflow.errors import CheckpointError
from smokeflow.pipeline import SmokeFlow
from smokeflow.training.checkpoint_io import save_weights

from vqvae_helpers import tiny_flow_run


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(run folder with a made-up flow_detail.safetensors, a copy whose own flow network is those weights,
    a copy without detail weights)."""
    base = str(tmp_path_factory.getbasetemp())
    _, run = tiny_flow_run(base, "blend_run", seed=5, max_steps=4)
    own = load_file(os.path.join(run, "flow.safetensors"))
    generator = torch.Generator().manual_seed(0)
    detail = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
              for k, v in own.items()}
    with_detail = os.path.join(base, "blend_with_detail")
    shutil.copytree(run, with_detail)
    save_weights(detail, os.path.join(with_detail, "flow_detail.safetensors"))
    detail_as_own = os.path.join(base, "blend_detail_as_own")
    shutil.copytree(run, detail_as_own)
    save_weights(detail, os.path.join(detail_as_own, "flow.safetensors"))
    return with_detail, detail_as_own, run


def _frames(pipe):
    frame = pipe.decode(torch.zeros(1, 16, 8, 8))[0]
    frame[20:44, 24:40] = 180
    return frame[None]


def _predict(pipe, frames, **kwargs):
    return pipe.predict(frames, num_frames=3, steps=3, num_samples=2, seed=4, **kwargs).frames


def test_end_points_are_the_two_networks_and_the_middle_their_average(folders):
    with_detail, _, _ = folders
    pipe = SmokeFlow.from_pretrained(with_detail)
    model = pipe.flow.model
    own = {k: v.clone() for k, v in model.state_dict().items()}
    detail = load_file(os.path.join(with_detail, "flow_detail.safetensors"))
    pipe.flow.set_detail(1.0)
    assert all(torch.equal(model.state_dict()[k], detail[k].float()) for k in detail)
    pipe.flow.set_detail(0.5)
    for k in detail:
        torch.testing.assert_close(model.state_dict()[k], (own[k] + detail[k].float()) / 2, rtol=0, atol=1e-6)
    pipe.flow.set_detail(0.0)
    assert all(torch.equal(model.state_dict()[k], own[k]) for k in own)


def test_sampling_follows_the_blend_back_and_forth(folders):
    """Detail 1 samples exactly as a folder whose own network is the detail weights; back at 0, exactly as before
    (the packed copy of the network is rebuilt after each change)."""
    with_detail, detail_as_own, run = folders
    pipe = SmokeFlow.from_pretrained(with_detail)
    frames = _frames(pipe)
    plain = _predict(pipe, frames)
    assert np.array_equal(plain, _predict(SmokeFlow.from_pretrained(run), frames))
    sharp = _predict(pipe, frames, detail=1.0)
    assert np.array_equal(sharp, _predict(SmokeFlow.from_pretrained(detail_as_own), frames))
    assert not np.array_equal(sharp, plain)
    middle = _predict(pipe, frames, detail=0.5)
    assert not np.array_equal(middle, plain) and not np.array_equal(middle, sharp)
    assert np.array_equal(_predict(pipe, frames), plain)


def test_bad_amounts_and_missing_or_unfit_detail_weights_get_clear_errors(folders, tmp_path):
    with_detail, _, run = folders
    pipe = SmokeFlow.from_pretrained(with_detail)
    with pytest.raises(ValueError, match=r"detail must be in \[0, 1\]"):
        pipe.predict(_frames(pipe), num_frames=1, steps=1, detail=1.5)
    without = SmokeFlow.from_pretrained(run)
    assert _predict(without, _frames(without), detail=0.0).shape == (2, 3, 64, 64, 3)  # 0 needs no file
    with pytest.raises(CheckpointError, match="flow_detail.safetensors: no detail weights here"):
        without.predict(_frames(without), num_frames=1, steps=1, detail=0.5)
    unfit = str(tmp_path / "unfit")
    shutil.copytree(run, unfit)
    save_weights({"something.else": torch.zeros(3)}, os.path.join(unfit, "flow_detail.safetensors"))
    with pytest.raises(CheckpointError, match="flow_detail.safetensors.*do not fit"):
        SmokeFlow.from_pretrained(unfit).predict(_frames(without), num_frames=1, steps=1, detail=1.0)


def test_cli_detail_option(folders, tmp_path, capsys):
    with_detail, _, run = folders
    clip = str(tmp_path / "clip.gif")
    pipe = SmokeFlow.from_pretrained(run)
    from smokeflow.data.video_io import write_video

    write_video(clip, _frames(pipe).repeat(2, axis=0), fps=4)
    base = ["predict", "--input", clip, "--num-frames", "2", "--steps", "2"]
    assert cli_main(base + ["--checkpoint", with_detail, "--detail", "1", "--out", str(tmp_path / "a.gif")]) == 0
    assert os.path.isfile(tmp_path / "a.gif") and "warm start 0.2, detail 1.0:" in capsys.readouterr().out
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli_main(base + ["--checkpoint", with_detail, "--detail", "2", "--out", str(tmp_path / "b.gif")])
    assert "must be in [0, 1]" in capsys.readouterr().err
    assert cli_main(base + ["--checkpoint", run, "--detail", "0.5", "--out", str(tmp_path / "c.gif")]) == 2
    assert "no detail weights here" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "c.gif")


def test_auto_detail_grows_as_the_warm_start_falls_below_the_default():
    from smokeflow.flow.defaults import AUTO_DETAIL_MAX, DEFAULT_WARM_START, auto_detail

    assert auto_detail(DEFAULT_WARM_START) == auto_detail(0.5) == 0.0  # the default samples as trained
    assert auto_detail(0.1) == 0.25 and auto_detail(0.15) == 0.125
    assert auto_detail(0.0) == AUTO_DETAIL_MAX <= 1.0


def test_detail_left_to_the_pipeline_is_the_auto_amount_for_the_warm_start(folders, tmp_path, capsys):
    with_detail, _, run = folders
    pipe = SmokeFlow.from_pretrained(with_detail)
    frames = _frames(pipe)
    kwargs = dict(num_frames=3, steps=3, num_samples=2, seed=4, warm_start=0.1)
    auto = pipe.predict(frames, **kwargs)
    assert auto.detail == 0.25 == pipe.resolve_detail(None, 0.1)
    assert np.array_equal(auto.frames, pipe.predict(frames, detail=0.25, **kwargs).frames)
    plain = pipe.predict(frames, detail=0.0, **kwargs)
    assert plain.detail == 0.0 and not np.array_equal(auto.frames, plain.frames)  # an explicit 0 is kept
    # At the default warm start auto means none; a folder without detail weights gets none, without an error.
    assert pipe.predict(frames, num_frames=1, steps=1).detail == 0.0
    without = SmokeFlow.from_pretrained(run)
    assert without.predict(frames, **kwargs).detail == 0.0
    # The CLI: auto is the default and can be said; the amount used is printed.
    clip = str(tmp_path / "clip.gif")
    from smokeflow.data.video_io import write_video

    write_video(clip, frames.repeat(2, axis=0), fps=4)
    base = ["predict", "--input", clip, "--num-frames", "2", "--steps", "2", "--checkpoint", with_detail,
            "--warm-start", "0.1"]
    capsys.readouterr()
    assert cli_main(base + ["--out", str(tmp_path / "a.gif")]) == 0
    assert "warm start 0.1, detail 0.25 (auto):" in capsys.readouterr().out
    assert cli_main(base + ["--detail", "AUTO", "--out", str(tmp_path / "b.gif")]) == 0
    assert "detail 0.25 (auto)" in capsys.readouterr().out
    assert cli_main(base + ["--detail", "0", "--out", str(tmp_path / "c.gif")]) == 0
    assert "detail" not in capsys.readouterr().out.split("->")[0]


def test_evaluate_records_the_auto_detail_amount(folders, tmp_path):
    import csv
    import json

    from vqvae_helpers import tiny_dataset

    with_detail, _, _ = folders
    root = tiny_dataset(str(tmp_path.parent))
    common = ["evaluate", "--checkpoint", with_detail, "--data", root, "--split", "val", "--num-frames", "2",
              "--steps", "2", "--no-fvd-download", "--no-progress", "--no-baselines"]
    report = tmp_path / "auto.json"
    assert cli_main([*common, "--warm-start", "0.1", "--json", str(report)]) == 0
    settings = json.load(open(report))["predictors"]["model"]["settings"]
    assert settings["detail"] == 0.25 and settings["detail_auto"] is True
    csv_path = tmp_path / "auto.csv"
    assert cli_main([*common, "--sweep", "detail=auto,0", "warm_start=0.1,0.2", "--csv", str(csv_path)]) == 0
    with open(csv_path) as fh:
        amounts = sorted((float(r["warm_start"]), float(r["detail"])) for r in csv.DictReader(fh))
    assert amounts == [(0.1, 0.0), (0.1, 0.25), (0.2, 0.0)]  # auto at 0.2 is 0: run once


def test_evaluate_sweeps_the_detail_amount(folders, tmp_path):
    """`evaluate --sweep detail=0,1` on the tiny run: one CSV row per amount, and the amount reaches sampling."""
    import csv

    from vqvae_helpers import tiny_dataset

    with_detail, _, _ = folders
    root = tiny_dataset(str(tmp_path.parent))
    csv_path = tmp_path / "detail.csv"
    common = ["evaluate", "--checkpoint", with_detail, "--data", root, "--split", "val", "--num-frames", "2",
              "--steps", "2", "--no-fvd-download", "--no-progress", "--no-baselines"]
    assert cli_main([*common, "--sweep", "detail=0,1", "--csv", str(csv_path)]) == 0
    with open(csv_path) as fh:
        plain, sharp = list(csv.DictReader(fh))
    assert (float(plain["detail"]), float(sharp["detail"])) == (0.0, 1.0) and plain["psnr"] != sharp["psnr"]
    assert cli_main([*common, "--sweep", "detail=0,2", "--csv", str(tmp_path / "bad.csv")]) == 2


def test_the_shipped_detail_weights_fit_and_sharpen(repo_root):
    """checkpoints/default's flow_detail.safetensors loads into its network; a = 0.5 changes the rollout, not its
    cost, and a sharper rollout has larger frame gradients on the smoke (the property it was distilled for)."""
    pipe = SmokeFlow.from_pretrained(os.path.join(repo_root, "checkpoints", "default"))
    assert pipe.flow.has_detail
    frame = np.zeros((1, 64, 64, 3), np.uint8)
    frame[0, 24:60, 26:38] = (90, 110, 140)  # a bluish-grey column of smoke, as the users' frames have
    frame[0, 30:40, 30:34] = (140, 160, 190)
    plain = pipe.predict(frame, num_frames=3, seed=0)
    sharp = pipe.predict(frame, num_frames=3, seed=0, detail=0.5)
    assert sharp.nfe == plain.nfe == 30 and not np.array_equal(sharp.frames, plain.frames)

    def gradient(frames):
        gray = frames[0, -1].astype(np.float64).mean(axis=-1)
        return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())

    assert gradient(sharp.frames) > gradient(plain.frames)
