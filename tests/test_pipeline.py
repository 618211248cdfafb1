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
