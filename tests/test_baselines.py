"""Baselines against hand-computed rollouts; the model adapter passes its settings through."""

from __future__ import annotations

import types

import pytest
import torch

from smokeflow.metrics.baselines import CopyLastFrame, FlowModelPredictor, LinearLatentExtrapolation


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
