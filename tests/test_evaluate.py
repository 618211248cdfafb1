"""End-to-end evaluation and sweeps on a small real dataset folder, with a lossless codec.

The codec here is an exact pixel <-> latent rearrangement (pixel-unshuffle of 64x64x3 into 192x8x8), so
decoded predictions are known exactly and the evaluation's numbers can be recomputed independently: the
copy-last-frame baseline must score exactly ``psnr(last observed frame, each target frame)``.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from smokeflow.data.naming import write_video_pngs
from smokeflow.metrics.baselines import LatentRollout
from smokeflow.metrics.evaluation import (
    SWEEP_COLUMNS,
    evaluate,
    load_evaluation_videos,
    parse_sweep,
    run_sweep,
    sweep_combinations,
)
from smokeflow.metrics.frame_metrics import psnr, ssim
from smokeflow.metrics.fvd import PROXY_NAME, load_i3d
from smokeflow.metrics.lpips_metric import load_lpips
from smokeflow.metrics.report import format_table, validate_report, write_html_report, write_json_report

NUM_VIDEOS, NUM_FRAMES_STORED = 4, 8


class PixelShuffleCodec:
    """Lossless: uint8 [T, 64, 64, 3] <-> float [T, 192, 8, 8] in [-1, 1] (exact up to uint8 rounding)."""

    def encode(self, frames):
        x = torch.from_numpy(np.asarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return torch.nn.functional.pixel_unshuffle(x, 8)

    def decode(self, z):
        lead = z.shape[:-3]
        x = torch.nn.functional.pixel_shuffle(z.reshape(-1, *z.shape[-3:]), 8)
        x = ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        return x.reshape(*lead, 64, 64, 3).numpy()


class NoisyCopyPredictor:
    """A stochastic test predictor: copy-last plus seeded Gaussian noise of std ``noise`` (latent units)."""

    deterministic = False

    def __init__(self, noise=0.05, steps=1, solver="euler", warm_start=0.0):
        self.noise, self.steps, self.solver, self.warm_start = noise, steps, solver, warm_start
        self.name = "model"

    def settings(self):
        return {"predictor": self.name, "steps": self.steps, "solver": self.solver, "warm_start": self.warm_start}

    def predict_latents(self, z_obs, num_frames, num_samples=1, seed=0):
        generator = torch.Generator().manual_seed(seed)
        base = z_obs[-1].expand(num_samples, num_frames, *z_obs.shape[1:])
        noise = torch.randn(base.shape, generator=generator) * self.noise
        return LatentRollout(base + noise, nfe=self.steps * num_frames)


def _moving_blob_video(rng, num_frames):
    frames = np.zeros((num_frames, 64, 64, 3), dtype=np.uint8)
    x, y = rng.uniform(15, 45, size=2)
    vx, vy = rng.uniform(-2, 2), rng.uniform(-3, -1)
    yy, xx = np.mgrid[0:64, 0:64]
    for t in range(num_frames):
        blob = np.exp(-((xx - x - vx * t) ** 2 + (yy - y - vy * t) ** 2) / 60.0)
        frames[t] = (blob[..., None] * np.array([70, 95, 130])).astype(np.uint8)
    return frames


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke_data")
    rng = np.random.default_rng(0)
    for i in range(NUM_VIDEOS):
        write_video_pngs(root / "test", f"video{i}", _moving_blob_video(rng, NUM_FRAMES_STORED))
    write_video_pngs(root / "test", "zshort", _moving_blob_video(rng, 3))  # too short: must be skipped
    return root


@pytest.fixture(scope="module", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        tmp = tmp_path_factory.mktemp("caches")
        patch.setenv("SMOKEFLOW_CACHE_DIR", str(tmp / "cache"))
        patch.setattr(torch.hub, "get_dir", lambda: str(tmp / "hub"))  # no LPIPS / I3D weights there
        yield


@pytest.fixture(scope="module")
def evaluated(dataset):
    """(videos, report) of the noisy test predictor (K=3) and both baselines, evaluated once."""
    videos = load_evaluation_videos(dataset, "test", num_observed=1, num_frames=5)
    from smokeflow.metrics.evaluation import default_baselines

    predictors = [NoisyCopyPredictor(), *default_baselines()]
    report = evaluate(PixelShuffleCodec(), predictors, videos, settings={"split": "test"}, num_samples=3,
                      seed=0, lpips_availability=load_lpips(), i3d_availability=load_i3d(download=False), progress=False)
    return videos, report


def test_load_evaluation_videos_skips_short_videos(dataset):
    videos = load_evaluation_videos(dataset, "test", num_observed=2, num_frames=5, num_videos=3)
    assert videos.names == ["video0", "video1", "video2"]
    assert videos.observed.shape == (3, 2, 64, 64, 3) and videos.targets.shape == (3, 5, 64, 64, 3)
    everything = load_evaluation_videos(dataset, "test", num_observed=1, num_frames=5)
    assert [s["name"] for s in everything.skipped] == ["zshort"]


def test_load_evaluation_videos_windows_of_long_videos(dataset):
    # 8 stored frames, windows of 1 + 2 = 3 from frame 1, one every 2 frames: starts 1, 3, 5.
    videos = load_evaluation_videos(dataset, "test", num_observed=1, num_frames=2, num_videos=2, start_frame=1,
                                    window_stride=2)
    assert videos.names == [f"video{v}@{s}" for v in (0, 1) for s in (1, 3, 5)]
    assert videos.observed.shape == (6, 1, 64, 64, 3) and videos.targets.shape == (6, 2, 64, 64, 3)
    first = load_evaluation_videos(dataset, "test", num_observed=1, num_frames=2, num_videos=2)
    for i, name in enumerate(videos.names):
        video, start = name.split("@")
        frames = load_evaluation_videos(dataset, "test", num_observed=1, num_frames=2, start_frame=int(start),
                                        num_videos=int(video[-1]) + 1)
        np.testing.assert_array_equal(videos.observed[i], frames.observed[-1])
        np.testing.assert_array_equal(videos.targets[i], frames.targets[-1])
    np.testing.assert_array_equal(first.observed[0], load_evaluation_videos(
        dataset, "test", num_observed=1, num_frames=2, window_stride=3).observed[0])
    # The too-short video is still listed as skipped; a bad stride is refused.
    assert [s["name"] for s in load_evaluation_videos(dataset, "test", 1, 3, window_stride=1).skipped] == ["zshort"]
    with pytest.raises(ValueError, match="window_stride"):
        load_evaluation_videos(dataset, "test", 1, 2, window_stride=0)


def test_evaluation_numbers_match_an_independent_computation(evaluated):
    videos, report = evaluated
    validate_report(report)
    copy = report["predictors"]["copy_last_frame"]["metrics"]
    last = videos.observed[:, -1:]  # [N, 1, H, W, 3]
    expected_curve = psnr(np.broadcast_to(last, videos.targets.shape), videos.targets).mean(axis=0)
    np.testing.assert_allclose(copy["psnr"]["single"]["per_frame"], expected_curve, rtol=1e-12)
    # A deterministic predictor: best-of-K and mean-over-K are the same single rollout.
    assert copy["psnr"]["best_of_k"]["mean"] == copy["psnr"]["mean_over_k"]["mean"] == pytest.approx(expected_curve.mean())
    expected_ssim = ssim(np.broadcast_to(last, videos.targets.shape), videos.targets).mean()
    assert copy["ssim"]["single"]["mean"] == pytest.approx(expected_ssim, rel=1e-6)
    # With one observation, linear extrapolation is copy-last.
    linear = report["predictors"]["linear_latent_extrapolation"]["metrics"]
    assert linear["psnr"]["single"]["per_frame"] == copy["psnr"]["single"]["per_frame"]

    model = report["predictors"]["model"]
    for metric, better in (("psnr", np.greater_equal), ("ssim", np.greater_equal), ("mse", np.less_equal)):
        views = model["metrics"][metric]
        assert better(views["best_of_k"]["mean"], views["mean_over_k"]["mean"])
    assert model["metrics"]["psnr"]["samples_scored"] == 3
    assert model["nfe_per_frame"] == 1.0
    # The ground truth moves; copy-last does not.
    stats = report["predictors"]["copy_last_frame"]["smoke_statistics"]
    assert stats["change"]["prediction"] == [0.0] * 5 and min(stats["change"]["ground_truth"]) > 0
    assert stats["change_ratio"] == 0.0  # copy-last never moves, not even away from the observed frame
    # The codec here is lossless, so the reconstruction ceiling is "identical" (the PSNR cap).
    assert report["reconstruction"]["metrics"]["psnr"]["mean"] == 100.0
    # ... and its smoke statistics are the ground truth's: all the motion and sharpness survive it.
    ceiling = report["reconstruction"]["smoke_statistics"]
    assert ceiling["change_ratio"] == pytest.approx(1.0)
    for stat in ("sharpness", "change", "mass"):
        np.testing.assert_allclose(ceiling[stat]["prediction"], ceiling[stat]["ground_truth"], rtol=1e-12)


def test_unavailable_metrics_are_reported_not_faked(evaluated):
    _, report = evaluated
    available = report["metrics_available"]
    assert available["lpips"]["available"] is False and "alexnet-owt-7be5be79.pth" in available["lpips"]["reason"]
    assert available["fvd"]["available"] is False and available["fvd"]["reason"].startswith("FVD unavailable")
    for section in report["predictors"].values():
        assert "lpips" not in section["metrics"]
        assert section["fvd"]["value"] is None and section["fvd"]["protocol"]["includes_conditioning_frames"]
        proxy = section["fd_vqvae_features"]
        assert proxy["name"] == PROXY_NAME and "not comparable" in proxy["note"] and proxy["value"] >= 0


def test_reports_are_written_and_read_back(evaluated, tmp_path):
    _, report = evaluated
    json_path = write_json_report(report, tmp_path / "out.json")
    loaded = json.loads(open(json_path).read())
    validate_report(loaded)
    assert loaded["protocol"]["num_videos"] == NUM_VIDEOS and loaded["protocol"]["num_frames"] == 5
    # psnr_smoke is NaN-aware; every value is JSON (no NaN tokens).
    json.loads(open(json_path).read(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    write_json_report(report, json_path)  # replacing our own report is fine
    html_path = write_html_report(report, tmp_path / "out.html")
    text = open(html_path).read()
    assert "plotly" in text.lower() and "copy_last_frame" in text
    assert text.count("<img src='data:image/png;base64,") == 4 * 4  # 4 videos x (truth + 3 predictors)
    table = format_table(report)
    assert "model" in table and "FVD unavailable" in table and PROXY_NAME in table
    assert "change ratio 1.000, sharpness" in table  # the ceiling's motion and sharpness (lossless codec here)
    # Never overwrite a file that is not ours.
    foreign = tmp_path / "notes.json"
    foreign.write_text("my notes")
    from smokeflow.errors import DataError

    with pytest.raises(DataError):
        write_json_report(report, foreign)
    assert foreign.read_text() == "my notes"


def test_validate_report_rejects_a_broken_report(evaluated):
    _, report = evaluated
    from smokeflow.metrics.report import to_json_safe

    broken = to_json_safe(report)  # a deep copy without the in-memory example frames
    broken["predictors"]["model"]["metrics"]["psnr"]["single"]["per_frame"].pop()
    with pytest.raises(ValueError, match="per_frame"):
        validate_report(broken)


def test_parse_sweep_and_combinations():
    grid = parse_sweep(["steps=5,10", "solver=euler,heun", "warm-start=0,0.1"])
    assert grid == {"steps": [5, 10], "solver": ["euler", "heun"], "warm_start": [0.0, 0.1]}
    combos = sweep_combinations({"steps": [5, 10]}, {"steps": 10, "solver": "euler", "warm_start": 0.1})
    assert combos == [{"steps": 5, "solver": "euler", "warm_start": 0.1}, {"steps": 10, "solver": "euler", "warm_start": 0.1}]
    with pytest.raises(ValueError):
        parse_sweep(["speed=1"])
    with pytest.raises(ValueError):
        parse_sweep(["steps=five"])
    # The advected warm start sweeps as auto / prior / off; settings given in neither grid nor defaults are left out.
    assert parse_sweep(["warm_start_motion=auto,prior,off"]) == {"warm_start_motion": ["auto", "prior", "off"]}
    grid = parse_sweep(["warm-start-motion=AUTO,off", "warm_start=0.1"])
    assert grid == {"warm_start_motion": ["auto", "off"], "warm_start": [0.1]}
    assert sweep_combinations(grid, {"steps": 10, "solver": "euler"}) == [
        {"steps": 10, "solver": "euler", "warm_start": 0.1, "warm_start_motion": "auto"},
        {"steps": 10, "solver": "euler", "warm_start": 0.1, "warm_start_motion": "off"}]
    with pytest.raises(ValueError, match="auto, prior or off"):
        parse_sweep(["warm_start_motion=0,1"])


def test_sweep_appends_rows_survives_interruption_and_resumes(dataset, tmp_path):
    videos = load_evaluation_videos(dataset, "test", num_observed=1, num_frames=3, num_videos=3)
    combos = sweep_combinations(parse_sweep(["steps=1,2", "warm_start=0,0.5"]), {"steps": 1, "solver": "euler", "warm_start": 0.0})
    protocol = {"checkpoint": "test", "split": "test", "num_videos": 3, "num_observed": 1, "num_frames": 3, "num_samples": 2, "seed": 0}
    csv_path = tmp_path / "sweep.csv"
    made = []

    def make(combo, fail_at=None):
        made.append(combo)
        if fail_at is not None and len(made) == fail_at:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the third setting
        return NoisyCopyPredictor(noise=0.02 * combo["steps"], **combo)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(PixelShuffleCodec(), lambda c: make(c, fail_at=3), combos, videos, csv_path, protocol,
                  num_samples=2, progress=False)
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == SWEEP_COLUMNS
    assert [r["predictor"] for r in rows] == ["copy_last_frame", "linear_latent_extrapolation", "model", "model"]

    made.clear()
    result = run_sweep(PixelShuffleCodec(), make, combos, videos, csv_path, protocol, num_samples=2, progress=False)
    assert result["skipped"] == 4 and result["new_rows"] == 2 and len(made) == 2  # only the missing settings ran
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and len(result["rows"]) == 6
    model_rows = [r for r in rows if r["predictor"] == "model"]
    assert {(r["steps"], r["warm_start"]) for r in model_rows} == {("1", "0.0"), ("1", "0.5"), ("2", "0.0"), ("2", "0.5")}
    # More noise (steps=2 here) scores lower PSNR: the rows carry real, distinct numbers.
    psnr_by_steps = {r["steps"]: float(r["psnr"]) for r in model_rows}
    assert psnr_by_steps["1"] > psnr_by_steps["2"]
    assert all(float(r["nfe_per_frame"]) == float(r["steps"]) for r in model_rows)
    from smokeflow.metrics.report import write_sweep_html

    html_text = open(write_sweep_html(result["rows"], tmp_path / "sweep.html")).read()
    assert "vs network evaluations per frame" in html_text and "vs seconds per frame" in html_text


def test_cli_reports_bad_arguments_and_missing_checkpoint(dataset, tmp_path, capsys):
    from smokeflow.cli import main

    missing = tmp_path / "no_such_checkpoint"
    assert main(["evaluate", "--checkpoint", str(missing), "--data", str(dataset), "--no-progress"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--data", str(dataset)]) == 2  # 9 frames: too long
    assert "no video has the 10 frames needed" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(dataset), "--sweep", "steps=5,10"]) == 2
    assert "--csv" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(dataset), "--warm-start", "1.0"]) == 2
    assert main(["evaluate", "--data", str(tmp_path / "nowhere"), "--checkpoint", str(tmp_path)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_cli_choices_match_the_flow_module():
    from smokeflow.commands import evaluate as command
    from smokeflow.flow.sampler import CONTEXT_POLICIES
    from smokeflow.flow.solvers import SOLVERS

    assert tuple(command.SOLVERS) == tuple(SOLVERS) and tuple(command.CONTEXT_POLICIES) == tuple(CONTEXT_POLICIES)
    from smokeflow.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown solver"):
        command._check_sweep_values({"solver": ["euler", "rk5"]})
    with pytest.raises(ConfigError, match="warm_start"):
        command._check_sweep_values({"warm_start": [0.0, 1.0]})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny trained checkpoint (VQVAE + 2 flow steps), made with the real trainers on simulated data."""
    from vqvae_helpers import TINY_CONFIG, tiny_checkpoint, tiny_dataset

    from smokeflow.config import load_config
    from smokeflow.data.latent_cache import build_latent_cache
    from smokeflow.training.flow_trainer import train_flow

    base = str(tmp_path_factory.getbasetemp())
    root = tiny_dataset(base)
    vqvae = tiny_checkpoint(base, root)
    run_dir = os.path.join(base, "evaluate_run")
    if not os.path.isfile(os.path.join(run_dir, "flow.safetensors")):
        for split in ("train", "val"):
            build_latent_cache(vqvae, root, split, progress=False)
        config = load_config(TINY_CONFIG)
        config["flow_training"]["sample_every"] = 1000
        train_flow(run_dir, config, root, seed=0, vqvae_checkpoint=vqvae, max_steps=2, show_progress=False)
    return run_dir, root


def test_cli_end_to_end_with_a_tiny_trained_checkpoint(tiny_run, tmp_path, capsys):
    from smokeflow.cli import main

    run_dir, root = tiny_run
    common = ["evaluate", "--checkpoint", run_dir, "--data", root, "--split", "test", "--num-frames", "3",
              "--no-fvd-download", "--no-progress", "--seed", "3"]
    json_path, html_path = tmp_path / "eval.json", tmp_path / "eval.html"
    assert main([*common, "--steps", "2", "--solver", "heun", "--warm-start", "0.1", "--num-samples", "2",
                 "--json", str(json_path), "--html", str(html_path)]) == 0
    printed = capsys.readouterr().out
    assert "model (heun N=2 s=0.1, advected auto)" in printed
    assert "copy_last_frame" in printed and "finished in" in printed
    report = json.loads(json_path.read_text())
    validate_report(report)
    model = report["predictors"]["model"]
    assert model["nfe_per_frame"] == 4  # heun: 2 evaluations per step
    assert model["settings"] == {"predictor": "model", "steps": 2, "solver": "heun", "warm_start": 0.1,
                                 "context_policy": "per_call", "reencode": False, "warm_start_motion": "auto",
                                 "detail_guidance": 0.0, "detail": 0.0}
    assert report["settings"]["seed"] == 3 and report["protocol"]["num_samples"] == 2
    assert "advected_last_frame" in report["predictors"]  # the run folder has a motion prior
    assert html_path.read_text().count("plotly") > 0

    csv_path = tmp_path / "sweep.csv"
    assert main([*common, "--sweep", "steps=1,2", "solver=euler", "--csv", str(csv_path)]) == 0
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["predictor"], r["steps"]) for r in rows] == [
        ("copy_last_frame", ""), ("linear_latent_extrapolation", ""), ("advected_last_frame", ""), ("model", "1"),
        ("model", "2")]
    assert [float(r["nfe_per_frame"]) for r in rows[3:]] == [1.0, 2.0]

    # The advected warm start against RIVER's in one sweep: "off" must reach the pipeline (whose default is auto).
    motion_csv = tmp_path / "motion.csv"
    assert main([*common, "--warm-start", "0.5", "--no-baselines", "--sweep", "warm_start_motion=auto,off",
                 "--csv", str(motion_csv)]) == 0
    with open(motion_csv) as fh:
        auto, off = list(csv.DictReader(fh))
    assert (auto["warm_start_motion"], off["warm_start_motion"]) == ("auto", "off")
    assert auto["psnr"] != off["psnr"] and auto["rise_ratio"] != off["rise_ratio"]


def test_cli_evaluates_the_int8_network_and_labels_it(tiny_run, tmp_path, capsys):
    from smokeflow.cli import main
    from smokeflow.flow.int8_velocity import int8_available

    if not int8_available():
        pytest.skip("this PyTorch has no quantised CPU engine")
    run_dir, root = tiny_run
    json_path = tmp_path / "int8.json"
    assert main(["evaluate", "--checkpoint", run_dir, "--data", root, "--split", "test", "--num-frames", "2",
                 "--steps", "2", "--no-baselines", "--no-fvd-download", "--no-progress", "--int8",
                 "--json", str(json_path)]) == 0
    assert "advected auto, int8)" in capsys.readouterr().out
    report = json.loads(json_path.read_text())
    validate_report(report)
    assert report["predictors"]["model"]["settings"]["int8"] is True and report["settings"]["int8"] is True
    assert main(["evaluate", "--checkpoint", run_dir, "--data", root, "--split", "test", "--int8", "--device",
                 "cuda", "--no-progress"]) == 2
    assert "--int8 runs the network on the CPU only" in capsys.readouterr().err
