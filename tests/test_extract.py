"""Raw video -> smoke on black, on a synthetic scene with known answer and on the real sample clip."""

import hashlib
import os

import numpy as np
import pytest

from smokeflow.cli import main as cli_main
from smokeflow.data.extract import extract_smoke, extract_smoke_details
from smokeflow.data.layouts import list_videos, read_video_entry
from smokeflow.data.smoke_mask import smoke_mask
from smokeflow.data.video_io import read_video


@pytest.fixture(autouse=True)
def private_index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKEFLOW_CACHE_DIR", os.fspath(tmp_path / "cache"))


def synthetic_scene(num_frames=24, size=96, seed=0):
    """Textured static background (a blue-green scene), a grey puff drifting right, sensor noise and a
    camera gain that changes by 8 %. Returns (raw uint8 [T,H,W,3], true smoke alpha float [T,H,W])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = np.stack([40 + 20 * np.sin(xx / 7), 80 + 30 * np.cos(yy / 9), 140 + 15 * np.sin((xx + yy) / 11)], -1)
    raw, alphas = [], []
    for t in range(num_frames):
        cx, cy = 15 + 3 * t, 50 - 0.5 * t
        alpha = 0.9 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 8.0 ** 2))
        smoke = np.array([200, 205, 210], np.float32)
        frame = background * (1 - alpha[..., None]) + smoke * alpha[..., None]
        gain = 1.0 + 0.08 * (t >= num_frames // 2)
        frame = frame * gain + rng.normal(0, 2.0, frame.shape)
        raw.append(np.clip(frame, 0, 255).astype(np.uint8))
        alphas.append(alpha)
    return np.stack(raw), np.stack(alphas)


def test_synthetic_puff_is_cut_out_on_black():
    raw, alpha = synthetic_scene()
    result = extract_smoke_details(raw, size=64)
    assert result.frames.shape == (24, 64, 64, 3) and result.frames.dtype == np.uint8
    opacity = result.opacity  # working resolution = input (96 <= work size)
    assert opacity.shape == alpha.shape
    inside, outside = alpha > 0.6, alpha < 0.01
    assert opacity[inside].mean() > 0.8
    assert opacity[outside].mean() < 0.02  # texture, noise and the gain step are not smoke
    # The gain step is found (second half ~8 % brighter) and the background is the clean scene.
    assert np.allclose(result.gains[-1] / result.gains[0], 1.08, atol=0.02)
    mask = smoke_mask(result.frames)
    assert 0.02 < mask.mean() < 0.3


def test_crop_selects_a_region_first():
    raw, _ = synthetic_scene()
    left = extract_smoke(raw, crop=(0, 20, 48, 60), size=32)
    assert left.shape == (24, 32, 32, 3)
    # The puff starts at the left and leaves the left region later on.
    assert smoke_mask(left[0]).mean() > smoke_mask(left[-1]).mean()
    with pytest.raises(ValueError, match="does not fit"):
        extract_smoke(raw, crop=(50, 0, 60, 60))


def test_real_clip_gives_smoke_on_black(raw_clip_path):
    raw = read_video(raw_clip_path)
    assert raw.shape == (36, 180, 180, 3)
    out = extract_smoke(raw)
    assert out.shape == (36, 64, 64, 3) and out.dtype == np.uint8
    mask = smoke_mask(out)
    per_frame = mask.mean(axis=(1, 2))
    # Measured with the default settings: 11.5 % smoke pixels on average, 1.8-31 % per frame.
    assert 0.03 < per_frame.mean() < 0.25
    assert per_frame.min() > 0.002 and per_frame.max() < 0.5
    # Background mostly black: pixels that are smoke in fewer than 10 % of frames stay near black.
    static = mask.mean(axis=0) < 0.1
    assert static.mean() > 0.5 and np.median(out[:, static].max(axis=-1)) <= 2
    # The smoke moves: mean frame-to-frame change in the users' range (0.5-15 on 0-255).
    change = np.abs(np.diff(out.astype(np.float32), axis=0)).mean()
    assert 0.5 < change < 15
    # Smoke pixels are dim bluish grey like the users' frames, not the raw scene's brightness.
    mean_rgb = out[mask].mean(axis=0)
    assert mean_rgb[2] >= mean_rgb[0] and 20 < mean_rgb.mean() < 160


def test_extract_command_writes_the_users_layout(raw_clip_path, tmp_path):
    digest = hashlib.sha256(open(raw_clip_path, "rb").read()).hexdigest()
    out = tmp_path / "data" / "train"
    argv = ["extract", "--input", raw_clip_path, "--out", os.fspath(out), "--video-name", "site_a"]
    assert cli_main(argv) == 0
    names = sorted(os.listdir(out))
    assert names[0] == "site_a_frame_0000.png" and "site_a_frame_0035.png" in names
    assert "site_a_preview.png" in names
    (video,) = list_videos(tmp_path / "data", "train")
    frames = read_video_entry(video)
    np.testing.assert_array_equal(frames, extract_smoke(read_video(raw_clip_path)))
    # A second run refuses to overwrite; --force replaces (here with a shorter, cropped clip).
    before = {n: open(out / n, "rb").read() for n in names}
    assert cli_main(argv) == 2
    assert {n: open(out / n, "rb").read() for n in sorted(os.listdir(out))} == before
    assert cli_main(argv + ["--force", "--crop", "0,0,120,120", "--max-frames", "12"]) == 0
    (video,) = list_videos(tmp_path / "data", "train")
    assert video.num_frames == 12
    assert hashlib.sha256(open(raw_clip_path, "rb").read()).hexdigest() == digest  # input untouched
    assert cli_main(argv + ["--force", "--crop", "1,2,3"]) == 2


def test_raw_frames_are_told_from_smoke_on_black():
    from smokeflow.data.smoke_mask import smoke_on_black_problem

    raw, _ = synthetic_scene()
    problem = smoke_on_black_problem(raw)
    assert problem is not None and "0% of the pixels are black" in problem and "raw video" in problem
    assert smoke_on_black_problem(extract_smoke(raw, size=64)) is None
    plume = np.zeros((2, 64, 64, 3), np.uint8)
    plume[:, 10:50, 20:50] = 120  # smoke over 29 % of the frame
    assert smoke_on_black_problem(plume) is None
    plume[:, 5:60, 4:60] = 120  # 75 %: more smoke than black
    assert smoke_on_black_problem(plume) is not None


def test_a_users_extracted_clip_is_scored_window_by_window(raw_clip_path, repo_root, tmp_path):
    """The user's path for their own footage: `extract` the raw clip, then `evaluate --window-stride` scores the
    shipped model on several windows of the one long clip against the frames that really followed."""
    import json

    data = tmp_path / "mine"
    assert cli_main(["extract", "--input", raw_clip_path, "--out", os.fspath(data / "test"),
                     "--video-name", "site_a"]) == 0
    report_path = tmp_path / "report.json"
    argv = ["evaluate", "--checkpoint", os.path.join(repo_root, "checkpoints", "default"), "--data", os.fspath(data),
            "--split", "test", "--num-observed", "2", "--num-frames", "2", "--window-stride", "10", "--steps", "2",
            "--num-samples", "1", "--no-fvd-download", "--no-progress", "--json", os.fspath(report_path)]
    assert cli_main(argv) == 0
    report = json.load(open(report_path))
    # 36 frames, windows of 2 + 2 from frames 0, 10, 20, 30.
    assert report["protocol"]["videos"] == ["site_a@0", "site_a@10", "site_a@20", "site_a@30"]
    assert report["protocol"]["window_stride"] == 10
    # Copy-last's curve, recomputed from the extracted frames: each window's last observed frame through the codec,
    # scored against the two frames that followed it, averaged over the four windows.
    from smokeflow.metrics.frame_metrics import psnr
    from smokeflow.pipeline import SmokeFlow

    frames = read_video_entry(list_videos(data, "test")[0])
    pipe = SmokeFlow.from_pretrained(os.path.join(repo_root, "checkpoints", "default"))
    expected = np.mean([[psnr(pipe.reconstruct(frames[s + 1:s + 2])[0], frames[s + 2 + i]) for i in range(2)]
                        for s in (0, 10, 20, 30)], axis=0)
    copy_last = report["predictors"]["copy_last_frame"]["metrics"]["psnr"]["single"]["per_frame"]
    np.testing.assert_allclose(copy_last, expected, atol=0.02)
    assert report["predictors"]["model"]["nfe_per_frame"] == 2
    assert cli_main(argv[:-2] + ["--window-stride", "0"]) == 2
