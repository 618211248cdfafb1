"""SmokeFlow pipeline: loading (VQVAE-only folders, damaged checkpoints), encode/decode/reconstruct shapes."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from smokeflow import SmokeFlow
from smokeflow.errors import CheckpointError, SmokeflowError
from vqvae_helpers import tiny_checkpoint, tiny_dataset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    base = str(tmp_path_factory.getbasetemp())
    return tiny_checkpoint(base, tiny_dataset(base))


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return SmokeFlow.from_pretrained(checkpoint, device="cpu")


@pytest.mark.parametrize("shape", [(1, 64, 64, 3), (5, 64, 64, 3), (3, 90, 120, 3), (48, 40, 3)])
def test_encode_and_reconstruct_any_length_and_size(pipe, shape):
    frames = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    z = pipe.encode(frames)
    length = shape[0] if len(shape) == 4 else 1
    assert z.shape == (length, 16, 8, 8) and z.dtype == torch.float32
    recon = pipe.reconstruct(frames)
    assert recon.shape == (length, 64, 64, 3) and recon.dtype == np.uint8
    assert np.array_equal(pipe.decode(z), recon)


def test_decode_keeps_leading_dims_and_quantize_switch(pipe):
    z = torch.randn(2, 3, 16, 8, 8)
    assert pipe.decode(z).shape == (2, 3, 64, 64, 3)
    snapped = pipe.decode(z, quantize=True)
    raw = pipe.decode(z, quantize=False)
    assert snapped.shape == raw.shape
    with pytest.raises(ValueError):
        pipe.encode(np.zeros((2, 64, 64, 3), np.float32))


def test_black_frame_latent_is_stable(pipe):
    black = np.zeros((2, 64, 64, 3), np.uint8)
    z = pipe.encode(black)
    assert torch.allclose(z[0], z[1])


def test_predict_without_flow_weights_is_a_clear_error(pipe):
    assert not pipe.has_flow
    with pytest.raises(SmokeflowError, match="flow.safetensors"):
        pipe.predict(np.zeros((1, 64, 64, 3), np.uint8), num_frames=2)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "missing_stats", "missing_folder"])
def test_damaged_checkpoints_are_rejected_with_the_file_named(checkpoint, tmp_path, damage):
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    weights = folder / "vqvae.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
        culprit = weights
    elif damage == "corrupt":
        data = bytearray(weights.read_bytes())
        data[:8] = b"\xff" * 8  # header length nonsense
        weights.write_bytes(bytes(data))
        culprit = weights
    elif damage == "missing_stats":
        os.remove(folder / "latent_stats.safetensors")
        culprit = folder / "latent_stats.safetensors"
    else:
        folder = tmp_path / "nowhere"
        culprit = folder
    with pytest.raises(CheckpointError) as info:
        SmokeFlow.from_pretrained(folder)
    assert str(culprit) in str(info.value)


def test_predict_delegates_to_the_flow_predictor(checkpoint, tmp_path):
    """A folder with (untrained) flow weights: predict returns frames [K,F,64,64,3] and the NFE."""
    from smokeflow.config import load_config
    from smokeflow.flow.predictor import FlowConfig, FlowPredictor
    from smokeflow.training.checkpoint_io import save_weights

    folder = tmp_path / "with_flow"
    shutil.copytree(checkpoint, folder)
    config = FlowConfig.from_section(load_config(folder / "config.yaml").get("flow"))
    torch.manual_seed(0)
    save_weights(FlowPredictor.from_config(config).model.state_dict(), folder / "flow.safetensors")
    pipe = SmokeFlow.from_pretrained(folder)
    assert pipe.has_flow
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 80, 80, 3), dtype=np.uint8)
    out = pipe.predict(frames, num_frames=3, steps=2, solver="euler", num_samples=2, seed=0)
    assert out.frames.shape == (2, 3, 64, 64, 3) and out.frames.dtype == np.uint8
    assert out.nfe == 3 * 2 and out.seconds > 0
    again = pipe.predict(frames, num_frames=3, steps=2, solver="euler", num_samples=2, seed=0)
    assert np.array_equal(out.frames, again.frames)  # deterministic for a seed
    # reencode: each predicted frame goes back through the autoencoder before it conditions the next one.
    reencoded = pipe.predict(frames, num_frames=3, steps=2, solver="euler", num_samples=2, seed=0, reencode=True)
    assert reencoded.frames.shape == out.frames.shape and not np.array_equal(reencoded.frames, out.frames)
    again = pipe.predict(frames, num_frames=3, steps=2, solver="euler", num_samples=2, seed=0, reencode=True)
    assert np.array_equal(reencoded.frames, again.frames)
    # The round trip is the encoder's latents of the decoded frames (here without their rounding to 8 bits).
    z = out.latents[:, 0]
    decoded = torch.as_tensor(pipe.encode(pipe.decode(z)))
    torch.testing.assert_close(pipe.reencode_latents(z), decoded, atol=0.05, rtol=0)


def test_predict_advects_the_warm_start_by_the_observed_velocity_or_the_prior(checkpoint, tmp_path):
    """warm_start_motion: 'auto' measures the observed frames, else uses the checkpoint's prior, else RIVER's warm
    start; 'off' is RIVER's; (drift, rise) is given. A fresh network is the zero field, so each frame is its
    warm start and the advection shows in the frames."""
    from smokeflow.config import load_config
    from smokeflow.data.smoke_velocity import write_motion_prior
    from smokeflow.flow.predictor import FlowConfig, FlowPredictor
    from smokeflow.training.checkpoint_io import save_weights

    folder = tmp_path / "with_flow"
    shutil.copytree(checkpoint, folder)
    config = FlowConfig.from_section(load_config(folder / "config.yaml").get("flow"))
    save_weights(FlowPredictor.from_config(config).model.state_dict(), folder / "flow.safetensors")
    pipe = SmokeFlow.from_pretrained(folder)
    yy, xx = np.mgrid[0:64, 0:64]
    frames = np.stack([np.repeat((200 * np.exp(-((yy - 40 + 2 * t) ** 2 + (xx - 32) ** 2) / 60.0))[..., None], 3, -1)
                       for t in range(3)]).astype(np.uint8)  # a blob rising 2 px per frame
    kwargs = dict(num_frames=2, steps=2, warm_start=0.5, seed=0)

    off = pipe.predict(frames[:1], warm_start_motion="off", **kwargs)
    auto = pipe.predict(frames[:1], **kwargs)  # one frame, no prior in the folder: RIVER's warm start
    assert off.warm_start_motion is None and auto.warm_start_motion is None
    assert np.array_equal(off.frames, auto.frames)

    observed = pipe.predict(frames, **kwargs)
    assert observed.warm_start_motion.source == "observed"
    assert observed.warm_start_motion.rise == pytest.approx(2.0, abs=0.2)  # measured on the frames themselves
    assert not np.array_equal(observed.frames, pipe.predict(frames, warm_start_motion="off", **kwargs).frames)

    given = pipe.predict(frames[:1], warm_start_motion=(0.0, 3.0), **kwargs)
    velocity = given.warm_start_motion
    assert (velocity.drift, velocity.rise, velocity.source) == (0, 3, "given")
    assert not np.array_equal(given.frames, off.frames)
    assert pipe.predict(frames[:1], warm_start_motion=(0.0, 0.0), **kwargs).frames.tolist() == off.frames.tolist()
    assert pipe.predict(frames, **{**kwargs, "warm_start": 0.0}).warm_start_motion is None  # nothing to advect

    write_motion_prior(folder, {"drift": 0.0, "rise": 3.0, "pairs": 10, "videos": 2, "split": "train"})
    with_prior = SmokeFlow.from_pretrained(folder).predict(frames[:1], **kwargs)
    assert with_prior.warm_start_motion.source == "prior" and with_prior.warm_start_motion.rise == 3.0
    assert np.array_equal(with_prior.frames, given.frames)  # the same velocity, the same frames
    for bad in ("fast", (1.0,), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match="warm_start_motion"):
            pipe.predict(frames, warm_start_motion=bad, **kwargs)
    with pytest.raises(ValueError, match="warm_start_motion"):  # refused even where it would not be used
        pipe.predict(frames, warm_start_motion="fast", **{**kwargs, "warm_start": 0.0})
