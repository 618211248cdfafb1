"""Baselines against hand-computed rollouts; the model adapter passes its settings through."""

from __future__ import annotations

import types

import pytest
import torch

from smokeflow.data.smoke_velocity import SmokeVelocity
from smokeflow.metrics.baselines import AdvectedLastFrame, CopyLastFrame, FlowModelPredictor, LinearLatentExtrapolation


def test_copy_last_frame_repeats_the_last_observation():
    z_obs = torch.randn(3, 4, 2, 2)
    out = CopyLastFrame().predict_latents(z_obs, num_frames=5, num_samples=2)
    assert out.latents.shape == (2, 5, 4, 2, 2) and out.nfe == 0
    assert torch.equal(out.latents, z_obs[-1].expand(2, 5, 4, 2, 2))


def test_linear_extrapolation_continues_a_constant_velocity():
    z0, velocity = torch.randn(4, 2, 2), torch.randn(4, 2, 2)
    z_obs = torch.stack([z0, z0 + velocity])
    out = LinearLatentExtrapolation().predict_latents(z_obs, num_frames=3, num_samples=1)
    expected = torch.stack([z0 + k * velocity for k in (2, 3, 4)]).unsqueeze(0)
    torch.testing.assert_close(out.latents, expected)


def test_linear_extrapolation_from_one_observation_is_copy_last():
    z_obs = torch.randn(1, 4, 2, 2)
    linear = LinearLatentExtrapolation().predict_latents(z_obs, num_frames=4)
    copy = CopyLastFrame().predict_latents(z_obs, num_frames=4)
    assert torch.equal(linear.latents, copy.latents)


def test_bad_observations_are_rejected():
    with pytest.raises(ValueError):
        CopyLastFrame().predict_latents(torch.zeros(4, 2, 2), num_frames=2)
    with pytest.raises(ValueError):
        LinearLatentExtrapolation().predict_latents(torch.zeros(1, 4, 2, 2), num_frames=0)


def test_flow_model_predictor_passes_its_settings():
    calls = []

    def predict_latents(z_obs, num_frames, **kwargs):
        calls.append(kwargs)
        k = kwargs["num_samples"]
        return types.SimpleNamespace(latents=torch.zeros(k, num_frames, *z_obs.shape[1:]), nfe=num_frames * kwargs["steps"])

    source = types.SimpleNamespace(predict_latents=predict_latents)
    predictor = FlowModelPredictor(source, steps=7, solver="heun", warm_start=0.2)
    out = predictor.predict_latents(torch.zeros(1, 4, 2, 2), num_frames=3, num_samples=2, seed=5)
    assert out.latents.shape == (2, 3, 4, 2, 2) and out.nfe == 21
    assert calls == [dict(steps=7, solver="heun", warm_start=0.2, num_samples=2, seed=5, context_policy="per_call")]
    assert predictor.settings()["solver"] == "heun" and not predictor.deterministic


def test_advected_last_frame_moves_the_last_observation_on_at_the_velocity():
    """Frame f is the last observed frame shifted f x (drift, rise) px; no velocity: copy-last."""
    velocity = {"value": SmokeVelocity(0.0, 1.0, "prior")}
    pipe = types.SimpleNamespace(warm_start_velocity=lambda z_obs, mode: velocity["value"],
                                 decode_images=lambda z: z * 2.0, encode_images=lambda images: images / 2.0)
    z_obs = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    baseline = AdvectedLastFrame(pipe)
    out = baseline.predict_latents(z_obs, num_frames=3, num_samples=2)
    assert out.latents.shape == (2, 3, 3, 8, 8) and out.nfe == 0 and baseline.deterministic
    for f in range(3):  # row y of frame f shows row y + f + 1 of the last observation; the bottom edge repeats
        torch.testing.assert_close(out.latents[0, f, :, : 7 - f], z_obs[-1, :, f + 1:])
        torch.testing.assert_close(out.latents[1, f, :, -1], z_obs[-1, :, -1])
    velocity["value"] = None
    still = baseline.predict_latents(z_obs, num_frames=2)
    assert torch.equal(still.latents, CopyLastFrame().predict_latents(z_obs, num_frames=2).latents)


def test_flow_model_predictor_passes_the_warm_start_motion_unless_none():
    calls = []

    def predict_latents(z_obs, num_frames, **kwargs):
        calls.append(kwargs)
        return types.SimpleNamespace(latents=torch.zeros(1, num_frames, *z_obs.shape[1:]), nfe=1)

    source = types.SimpleNamespace(predict_latents=predict_latents)
    FlowModelPredictor(source, warm_start=0.1, warm_start_motion="auto").predict_latents(torch.zeros(1, 4, 2, 2), 1)
    given = FlowModelPredictor(source, warm_start=0.1, warm_start_motion=(0.0, 1.0))
    given.predict_latents(torch.zeros(1, 4, 2, 2), 1)
    # "off" must be passed too: SmokeFlow's own default is "auto". Only None leaves the argument out.
    FlowModelPredictor(source, warm_start=0.1, warm_start_motion="off").predict_latents(torch.zeros(1, 4, 2, 2), 1)
    FlowModelPredictor(source, warm_start=0.1).predict_latents(torch.zeros(1, 4, 2, 2), 1)
    assert [c.get("warm_start_motion", "absent") for c in calls] == ["auto", (0.0, 1.0), "off", "absent"]
    assert given.settings()["warm_start_motion"] == [0.0, 1.0]  # JSON-friendly in reports
