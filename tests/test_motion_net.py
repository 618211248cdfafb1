"""The one-frame motion network: batched flow targets, the network, real training steps on blobs that rise,
exact resume after a kill, checkpoint reading, and its use by the pipeline's advected warm start."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from smokeflow.data.smoke_velocity import SmokeVelocity, describe_warm_start_motion, estimate_velocity
from smokeflow.errors import CheckpointError, SmokeflowError
from smokeflow.metrics.smoke_motion import motion_field, motion_fields
from smokeflow.models.motion_net import (
    MOTION_NET_CONFIG_FILE,
    MOTION_NET_FILE,
    MotionFieldNet,
    frames_to_input,
    load_motion_net,
    predict_motion_fields,
    save_motion_net,
)
from smokeflow.training.motion_trainer import MotionTrainingConfig, train_motion_net


def _blob(cy, cx, size=64):
    yy, xx = np.mgrid[0:size, 0:size]
    body = np.exp(-((yy - cy) ** 2 / (2 * 6**2) + (xx - cx) ** 2 / (2 * 4**2)))
    return np.repeat((body * 200)[..., None], 3, axis=-1).astype(np.uint8)


def _rising_dataset(root, videos=4, frames=5):
    """Blobs that rise 2 px per frame wherever they are: train and val splits of PNG videos."""
    from smokeflow.data.naming import write_video_pngs

    for split, count in (("train", videos), ("val", 2)):
        for v in range(count):
            cx = 14 + 9 * v + (3 if split == "val" else 0)
            write_video_pngs(root / split, f"vid{v}", np.stack([_blob(46 - 2 * t, cx) for t in range(frames)]))
    return root


def test_batched_motion_fields_match_one_pair_at_a_time():
    before = np.stack([_blob(44, 20), _blob(40, 40), np.zeros((64, 64, 3), np.uint8)])
    after = np.stack([_blob(42, 20), _blob(40, 41), np.zeros((64, 64, 3), np.uint8)])
    drift, rise, measured = motion_fields(before, after)
    assert drift.shape == rise.shape == (3, 64, 64) and measured.tolist() == [True, True, False]
    for i in range(2):
        one = motion_field(before[i], after[i])
        np.testing.assert_allclose(drift[i], one[0]) and np.testing.assert_allclose(rise[i], one[1])
    assert rise[0, 44, 20] == pytest.approx(2.0, abs=0.3) and drift[1, 40, 40] == pytest.approx(1.0, abs=0.2)
    assert not drift[2].any() and not rise[2].any()


def test_network_maps_frames_to_a_two_channel_field_of_their_size():
    model = MotionFieldNet(width=8)
    x = frames_to_input(np.full((2, 64, 64, 3), 255, np.uint8))
    assert x.shape == (2, 3, 64, 64) and float(x.max()) == 1.0
    assert model(x).shape == (2, 2, 64, 64)
    drift, rise = predict_motion_fields(model, np.zeros((3, 64, 64, 3), np.uint8))
    assert drift.shape == rise.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="uint8"):
        frames_to_input(np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        model(torch.zeros(1, 1, 64, 64))


def test_training_learns_the_rise_and_resumes_exactly_after_a_kill(tmp_path):
    data = _rising_dataset(tmp_path / "data")
    config = MotionTrainingConfig(steps=60, batch_size=8, learning_rate=3e-3, width=8, checkpoint_every=20)
    info = train_motion_net(str(data), str(tmp_path / "full"), config, progress=lambda msg: None)
    assert info["pairs"] == 2 * 4 and info["train_pairs"] == 4 * 4 and info["split_scored"] == "val"
    assert info["rise_true"] == pytest.approx(2.0, abs=0.3)
    # Real training steps: the network's field is far closer to the truth than no motion.
    assert info["rmse_net"] < 0.5 * info["rmse_zero"]
    assert info["rise_pred"] == pytest.approx(info["rise_true"], abs=0.5)
    model = load_motion_net(tmp_path / "full")
    assert isinstance(model, MotionFieldNet) and model.width == 8

    class Killed(Exception):
        pass

    def kill_at_40(msg):
        if msg.startswith("step 40/"):
            raise Killed

    with pytest.raises(Killed):
        train_motion_net(str(data), str(tmp_path / "killed"), config, progress=kill_at_40)
    assert not (tmp_path / "killed" / MOTION_NET_FILE).exists()  # nothing half-written
    assert (tmp_path / "killed" / "motion_net_state.pt").exists()
    messages = []
    resumed = train_motion_net(str(data), str(tmp_path / "killed"), config, resume=True, progress=messages.append)
    assert "resumed at step 40" in messages
    assert resumed["rmse_net"] == pytest.approx(info["rmse_net"], rel=1e-5)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "motion_net_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="motion_net_state.pt"):
        train_motion_net(str(data), str(tmp_path / "broken"), config, resume=True, progress=lambda msg: None)
    for name, value in load_motion_net(tmp_path / "killed").state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[name])


def test_reading_a_broken_motion_network_names_the_file(tmp_path):
    assert load_motion_net(tmp_path) is None and load_motion_net(None) is None
    save_motion_net(tmp_path, MotionFieldNet(width=8), {"note": "test"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [MOTION_NET_CONFIG_FILE, MOTION_NET_FILE]
    (tmp_path / MOTION_NET_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=MOTION_NET_FILE):
        load_motion_net(tmp_path)
    (tmp_path / MOTION_NET_CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=MOTION_NET_CONFIG_FILE):
        load_motion_net(tmp_path)


def test_one_frame_velocity_comes_from_the_network_before_the_prior():
    model = MotionFieldNet(width=8)
    frames = np.stack([_blob(40 - t, 30) for t in range(3)])
    prior = SmokeVelocity(0.0, 0.9, "prior")
    predicted = estimate_velocity(frames[:1], prior, model)
    assert predicted.source == "predicted" and predicted.has_field
    assert predicted.rise_field.shape == (64, 64)
    expected = predict_motion_fields(model, frames[:1])[1][0]
    np.testing.assert_allclose(predicted.rise_field, expected)
    assert estimate_velocity(frames, prior, model).source == "observed"  # two frames: measured, not guessed
    assert estimate_velocity(frames[:1], prior, None) is prior


def test_the_pipeline_uses_the_checkpoints_motion_network_and_the_cli_trains_one(tmp_path):
    from smokeflow import SmokeFlow
    from smokeflow.cli import main
    from smokeflow.config import load_config
    from smokeflow.data.smoke_velocity import write_motion_prior
    from smokeflow.flow.predictor import FlowConfig, FlowPredictor
    from smokeflow.training.checkpoint_io import save_weights
    from vqvae_helpers import tiny_checkpoint, tiny_dataset

    base = str(tmp_path)
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint(base, tiny_dataset(base)), folder)
    config = FlowConfig.from_section(load_config(folder / "config.yaml").get("flow"))
    save_weights(FlowPredictor.from_config(config).model.state_dict(), folder / "flow.safetensors")
    write_motion_prior(folder, {"drift": 0.0, "rise": 3.0, "pairs": 10, "videos": 2, "split": "train"})
    data = _rising_dataset(tmp_path / "data")
    assert main(["train-motion", "--data", str(data), "--out", str(folder), "--steps", "4", "--batch-size", "4",
                 "--width", "8"]) == 0
    assert not (folder / "motion_net_state.pt").exists()  # a finished run leaves no resume state behind
    from smokeflow.commands import train_motion

    for resume in (False, True):  # never replaced by accident, not even by resuming a finished run
        with pytest.raises(SmokeflowError, match="--overwrite"):
            train_motion.run(type("Args", (), {"out": str(folder), "overwrite": False, "resume": resume})())
    pipe = SmokeFlow.from_pretrained(folder)
    frame = _blob(40, 30)[None]
    kwargs = dict(num_frames=3, steps=2, warm_start=0.5, seed=0)
    calls = []
    guess = pipe.motion_net.fields
    pipe.motion_net.fields = lambda images: calls.append(images.shape) or guess(images)
    auto = pipe.predict(frame, num_samples=2, **kwargs)
    assert auto.warm_start_motion.source == "predicted" and auto.warm_start_motion.has_field
    assert calls == [(2, 3, 64, 64)] * 3  # guessed again from every frame, for every sample
    assert "guess from each frame" in describe_warm_start_motion(auto.warm_start_motion)
    prior = pipe.predict(frame, warm_start_motion="prior", **kwargs)
    assert prior.warm_start_motion.source == "prior" and prior.warm_start_motion.rise == 3.0
    assert not np.array_equal(auto.frames, prior.frames)
    assert pipe.predict(frame, warm_start_motion="off", **kwargs).warm_start_motion is None


def test_the_warm_start_moves_each_frame_by_the_field_guessed_from_that_frame():
    from smokeflow.flow.advected_warm_start import AdvectedWarmStart, shift_images

    seen = []

    def field_of(images):  # image 0 rises 1 px, image 1 rises 2 px, wherever they are
        seen.append(images.clone())
        rise = torch.stack([torch.full(images.shape[-2:], 1.0), torch.full(images.shape[-2:], 2.0)])
        return torch.zeros_like(rise), rise

    source = AdvectedWarmStart(lambda z: z * 2.0, lambda x: x / 2.0, 0.0, 0.0, field_of=field_of)
    assert source.moves  # a guessed field moves even where the given velocity is zero
    latents = torch.rand(2, 3, 8, 8)
    out = source(latents)
    torch.testing.assert_close(seen[0], latents * 2.0)  # guessed on the decoded frames
    torch.testing.assert_close(out[0], shift_images(latents[:1], 0.0, 1.0)[0])
    torch.testing.assert_close(out[1], shift_images(latents[1:], 0.0, 2.0)[0])
    fields = MotionFieldNet(width=8).fields(torch.zeros(3, 3, 64, 64))
    assert fields[0].shape == fields[1].shape == (3, 64, 64)


def test_bad_datasets_get_a_clear_message_and_a_missing_val_split_is_held_out(tmp_path):
    from smokeflow.data.naming import write_video_pngs
    from smokeflow.errors import DataError

    black = tmp_path / "black"
    write_video_pngs(black / "train", "vid0", np.zeros((4, 64, 64, 3), np.uint8))
    with pytest.raises(DataError, match="no consecutive frames with smoke"):
        train_motion_net(str(black), str(tmp_path / "out"), MotionTrainingConfig(steps=2, width=8))
    with pytest.raises(DataError, match="no_such"):
        train_motion_net(str(tmp_path / "no_such"), str(tmp_path / "out"), MotionTrainingConfig(steps=2, width=8))
    only_train = tmp_path / "only_train"
    for v in range(3):
        write_video_pngs(only_train / "train", f"vid{v}", np.stack([_blob(46 - 2 * t, 20 + 12 * v) for t in range(6)]))
    config = MotionTrainingConfig(steps=2, batch_size=4, width=8, frames_per_video=4)
    info = train_motion_net(str(only_train), str(tmp_path / "held"), config, progress=lambda msg: None)
    # 3 videos x 3 pairs (only the first 4 frames read): 1 held out to score, 8 to train on.
    assert info["split_scored"] == "held-out train" and info["pairs"] == 1 and info["train_pairs"] == 8
