"""Each frame of a rollout is decoded once (smokeflow.flow.frame_decodes, SmokeFlow.decode_rollout)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from smokeflow import SmokeFlow
from smokeflow.flow.frame_decodes import FrameDecodes, decode_once_per_frame
from vqvae_helpers import tiny_checkpoint, tiny_dataset


def _counting(calls):
    def decode(z):
        calls.append(z)
        return z * 2

    return decode


def test_decode_once_per_frame_decodes_each_reference_once():
    calls = []
    decode_last = decode_once_per_frame(_counting(calls))
    a, b = torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    assert torch.equal(decode_last(a), a * 2) and decode_last(a) is decode_last(a)
    decode_last(b)  # equal values, another tensor: decoded again
    assert len(calls) == 2
    assert decode_last.images_of(a) is decode_last(b)  # only the last decode is kept
    decode_last(torch.zeros(1, 2, 2, 2))
    assert decode_last.images_of(a) is None


def test_kept_decodes_are_found_by_value():
    calls = []
    decodes = FrameDecodes(_counting(calls), keep_all=True)
    first, second = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    out_first, out_second = decodes(first), decodes(second)
    assert decodes.images_of(first.clone()) is out_first and decodes.images_of(second.clone()) is out_second
    assert decodes.images_of(first[:1]) is None  # another shape
    assert decodes.images_of(first + 1e-6) is None  # bit for bit, not close
    assert len(calls) == 2


@pytest.fixture(scope="module")
def pipe_with_flow(tmp_path_factory):
    """A tiny checkpoint with untrained flow weights and a motion prior, so warm starts advect."""
    from smokeflow.config import load_config
    from smokeflow.data.smoke_velocity import write_motion_prior
    from smokeflow.flow.predictor import FlowConfig, FlowPredictor
    from smokeflow.training.checkpoint_io import save_weights

    base = tmp_path_factory.getbasetemp()
    folder = base / "decode_once"
    shutil.copytree(tiny_checkpoint(str(base), tiny_dataset(str(base))), folder)
    config = FlowConfig.from_section(load_config(folder / "config.yaml").get("flow"))
    torch.manual_seed(0)
    model = FlowPredictor.from_config(config).model
    torch.nn.init.normal_(model.head.weight, std=0.1)  # frames that differ from the warm start
    save_weights(model.state_dict(), folder / "flow.safetensors")
    write_motion_prior(folder, {"drift": 0.5, "rise": 1.0, "pairs": 10, "videos": 2, "split": "train"})
    return SmokeFlow.from_pretrained(folder)


@pytest.mark.parametrize("warm_start,guidance", [(0.3, 0.0), (0.0, 0.5), (0.3, 0.5)])
def test_predict_decodes_each_frame_once_and_shows_what_decode_shows(pipe_with_flow, warm_start, guidance):
    pipe = pipe_with_flow
    frames = np.random.default_rng(2).integers(0, 256, size=(1, 64, 64, 3), dtype=np.uint8)
    decoded = []
    original = pipe.vqvae.decode

    def counting_decode(z, *args, **kwargs):
        decoded.append(z.shape[0])
        return original(z, *args, **kwargs)

    pipe.vqvae.decode = counting_decode
    try:
        out = pipe.predict(frames, num_frames=4, steps=2, warm_start=warm_start, num_samples=3, seed=1,
                           detail_guidance=guidance)
    finally:
        pipe.vqvae.decode = original
    # The observed frame and frames 1..3 as references (for each of the 3 samples), then only frame 4:
    # 15 frames, where decoding the output afresh would make it 12 + 12.
    assert sum(decoded) == 4 * 3 + 3
    again = pipe.decode(out.latents)  # all frames decoded afresh, in one batch
    # The same frames; the decoder's float sums depend on the batch size, so a value may round 1 apart.
    assert np.abs(out.frames.astype(int) - again.astype(int)).max() <= 1
    assert (out.frames != again).mean() < 1e-3


def test_without_warm_start_or_guidance_nothing_is_kept(pipe_with_flow):
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    result = pipe_with_flow.predict_latents(pipe_with_flow.encode(frames), 2, steps=1, warm_start=0.0)
    assert result.decoded_images is None
    assert pipe_with_flow.decode_rollout(result).tolist() == pipe_with_flow.decode(result.latents).tolist()
