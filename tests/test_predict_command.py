"""`smokeflow predict` end to end on a tiny trained run folder: input clip -> prediction video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smokeflow.cli import main as cli_main

from vqvae_helpers import tiny_flow_run


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return tiny_flow_run(str(tmp_path_factory.getbasetemp()), "predict_run", seed=0, max_steps=2)[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from smokeflow.data.video_io import write_video

    rng = np.random.default_rng(0)
    frames = np.zeros((3, 80, 100, 3), np.uint8)
    for t in range(3):
        frames[t, 30 - 5 * t:50 - 5 * t, 40:60] = rng.integers(60, 140, size=(20, 20, 3))
    path = str(tmp_path_factory.mktemp("clip") / "clip.gif")
    write_video(path, frames)
    return path


def test_predict_writes_observed_plus_predicted_frames_side_by_side(run_folder, clip, tmp_path, capsys):
    from smokeflow.data.video_io import read_video

    out = tmp_path / "pred.gif"
    code = cli_main(["predict", "--checkpoint", run_folder, "--input", clip, "--num-frames", "3", "--out",
                     str(out), "--steps", "2", "--solver", "heun", "--warm-start", "0.1", "--num-samples", "2",
                     "--seed", "1"])
    assert code == 0
    video = read_video(str(out))
    assert video.shape == (4, 64, 2 * 64 + 2, 3)  # last observed + 3 predicted; 2 samples with a gap
    printed = capsys.readouterr().out
    assert "4 network evaluations per sample" not in printed and "12 network evaluations per sample" in printed
    # Same seed, same video; the input file is untouched and an existing output is not overwritten.
    out2 = tmp_path / "pred2.gif"
    cli_main(["predict", "--checkpoint", run_folder, "--input", clip, "--num-frames", "3", "--out", str(out2),
              "--steps", "2", "--solver", "heun", "--warm-start", "0.1", "--num-samples", "2", "--seed", "1"])
    assert np.array_equal(read_video(str(out2)), video)
    before = out.read_bytes()
    assert cli_main(["predict", "--checkpoint", run_folder, "--input", clip, "--out", str(out)]) == 2
    assert out.read_bytes() == before
    assert "overwrite" in capsys.readouterr().err


def test_predict_reports_bad_checkpoint_and_input(run_folder, clip, tmp_path, capsys):
    assert cli_main(["predict", "--checkpoint", str(tmp_path / "nope"), "--input", clip, "--out",
                     str(tmp_path / "a.gif")]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli_main(["predict", "--checkpoint", run_folder, "--input", str(tmp_path / "missing.mp4"), "--out",
                     str(tmp_path / "b.gif")]) == 2
    assert "missing.mp4" in capsys.readouterr().err


def test_training_records_the_motion_prior_and_predict_reports_the_velocity_it_used(run_folder, clip, tmp_path,
                                                                                     capsys):
    """The run folder holds the training split's mean motion; predict says how it moved the warm start, and
    takes a given velocity or none."""
    from smokeflow.data.smoke_velocity import read_motion_prior

    prior = read_motion_prior(run_folder)
    assert prior is not None and prior.source == "prior" and abs(prior.rise) < 10
    base = ["predict", "--checkpoint", run_folder, "--input", clip, "--num-frames", "2", "--steps", "1",
            "--warm-start", "0.2"]
    assert cli_main(base + ["--out", str(tmp_path / "a.gif")]) == 0
    printed = capsys.readouterr().out
    assert "warm start moved by" in printed and ("(observed)" in printed or "(prior)" in printed)
    assert cli_main(base + ["--observed", "1", "--out", str(tmp_path / "b.gif")]) == 0
    assert "(prior)" in capsys.readouterr().out
    assert cli_main(base + ["--warm-start-motion", "0,2", "--out", str(tmp_path / "c.gif")]) == 0
    assert "rise 2.00 / drift 0.00 px per frame (given)" in capsys.readouterr().out
    assert cli_main(base + ["--warm-start-motion", "off", "--out", str(tmp_path / "d.gif")]) == 0
    assert "warm start moved" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(base + ["--warm-start-motion", "fast", "--out", str(tmp_path / "e.gif")])
    assert "DRIFT,RISE" in capsys.readouterr().err


def test_without_a_warm_start_predict_uses_the_default_advected_warm_start(run_folder, clip, tmp_path, capsys):
    """s = 0 blurs, so the command and the API warm-start at DEFAULT_WARM_START (> 0), which advects."""
    import inspect

    from smokeflow.flow.defaults import DEFAULT_WARM_START
    from smokeflow.pipeline import SmokeFlow

    assert 0 < DEFAULT_WARM_START < 1
    for method in (SmokeFlow.predict, SmokeFlow.predict_latents):
        assert inspect.signature(method).parameters["warm_start"].default == DEFAULT_WARM_START
    assert cli_main(["predict", "--checkpoint", run_folder, "--input", clip, "--num-frames", "2", "--steps", "1",
                     "--out", str(tmp_path / "a.gif")]) == 0
    printed = capsys.readouterr().out
    assert f"warm start {DEFAULT_WARM_START}" in printed and "warm start moved by" in printed


def test_detail_guidance_doubles_the_evaluations_and_changes_the_prediction(run_folder, clip, tmp_path, capsys):
    """`--detail-guidance W` reaches the sampler through SmokeFlow.predict (blurred reference, two branches)."""
    from smokeflow.data.video_io import read_video

    args = ["predict", "--checkpoint", run_folder, "--input", clip, "--num-frames", "2", "--steps", "3",
            "--warm-start", "0.2", "--seed", "2"]
    assert cli_main([*args, "--out", str(tmp_path / "plain.gif")]) == 0
    assert "6 network evaluations per sample" in capsys.readouterr().out
    assert cli_main([*args, "--detail-guidance", "0.5", "--out", str(tmp_path / "guided.gif")]) == 0
    assert "12 network evaluations per sample" in capsys.readouterr().out
    assert read_video(str(tmp_path / "plain.gif")).shape == read_video(str(tmp_path / "guided.gif")).shape
    # Through the API: the guided latents differ from the plain ones (the GIFs of this 2-step model may not).
    from smokeflow.pipeline import SmokeFlow

    pipe, frames = SmokeFlow.from_pretrained(run_folder), read_video(clip)
    plain = pipe.predict(frames, num_frames=2, steps=3, warm_start=0.2, seed=2)
    guided = pipe.predict(frames, num_frames=2, steps=3, warm_start=0.2, seed=2, detail_guidance=0.5)
    assert guided.nfe == 2 * plain.nfe and not torch.allclose(guided.latents, plain.latents)
    with pytest.raises(SystemExit):
        cli_main([*args, "--detail-guidance", "-1", "--out", str(tmp_path / "bad.gif")])
    assert "--detail-guidance" in capsys.readouterr().err and not (tmp_path / "bad.gif").exists()


def test_int8_predicts_the_same_video_shape_and_says_so(run_folder, clip, tmp_path, capsys):
    """`--int8` reaches FlowPredictor through SmokeFlow (int8 transformer blocks on the CPU)."""
    from smokeflow.data.video_io import read_video
    from smokeflow.flow.int8_velocity import int8_available

    if not int8_available():
        pytest.skip("this PyTorch has no quantised CPU engine")
    args = ["predict", "--checkpoint", run_folder, "--input", clip, "--num-frames", "2", "--steps", "2", "--seed", "2"]
    assert cli_main([*args, "--int8", "--out", str(tmp_path / "int8.gif")]) == 0
    assert "int8 network: 4 network evaluations per sample" in capsys.readouterr().out
    assert read_video(str(tmp_path / "int8.gif")).shape == (3, 64, 64, 3)
    with pytest.raises(SystemExit):
        cli_main([*args, "--int8", "--compile", "--out", str(tmp_path / "both.gif")])
    assert "not allowed with argument" in capsys.readouterr().err
    assert cli_main([*args, "--int8", "--device", "cuda", "--out", str(tmp_path / "cuda.gif")]) == 2
    assert "--int8 runs the network on the CPU only" in capsys.readouterr().err
    assert not (tmp_path / "both.gif").exists() and not (tmp_path / "cuda.gif").exists()


def test_a_raw_video_gets_a_warning_or_is_cut_out_with_extract(run_folder, tmp_path, capsys):
    from smokeflow.data.video_io import read_video, write_video
    from test_extract import synthetic_scene

    raw_path = str(tmp_path / "raw.gif")
    write_video(raw_path, synthetic_scene(num_frames=8)[0])
    args = ["predict", "--checkpoint", run_folder, "--input", raw_path, "--num-frames", "2", "--steps", "1"]
    assert cli_main([*args, "--out", str(tmp_path / "as_is.gif")]) == 0
    captured = capsys.readouterr()
    assert f"warning: {raw_path}: only 0% of the pixels are black" in captured.err
    assert "pass --extract" in captured.err
    assert cli_main([*args, "--extract", "--crop", "0,0,96,96", "--out", str(tmp_path / "cut.gif")]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "(smoke extracted from the raw video)" in captured.out
    cut = read_video(str(tmp_path / "cut.gif"))
    assert cut.shape == (3, 64, 64, 3)
    assert (cut[0].max(axis=-1) <= 12).mean() > 0.5  # the observed frame shown is the cut-out smoke
    # --extract needs a video; --crop needs --extract. Neither writes an output.
    frame = tmp_path / "frame.png"
    from PIL import Image

    Image.fromarray(cut[0]).save(frame)
    assert cli_main(["predict", "--checkpoint", run_folder, "--input", str(frame), "--extract", "--out",
                     str(tmp_path / "a.gif")]) == 2
    assert "--extract needs a raw video file" in capsys.readouterr().err
    assert cli_main([*args, "--crop", "0,0,10,10", "--out", str(tmp_path / "b.gif")]) == 2
    assert "--crop is for --extract" in capsys.readouterr().err
    assert cli_main([*args, "--extract", "--crop", "0,0,500,10", "--out", str(tmp_path / "c.gif")]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("a.gif", "b.gif", "c.gif"))
