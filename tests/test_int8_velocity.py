"""The int8 CPU path (smokeflow.flow.int8_velocity): int8 layers stay close to float32, rollouts are deterministic
and follow weight changes, the shipped network stays close to its float32 self, and the CLI and pipeline take it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from smokeflow.flow.int8_velocity import Int8Linear, Int8Velocity, int8_available, quantize_weight_per_channel
from smokeflow.flow.predictor import FlowPredictor

pytestmark = pytest.mark.skipif(not int8_available(), reason="this PyTorch has no quantised CPU engine")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_per_channel_weights_keep_each_rows_largest_value_exactly():
    weight = torch.tensor([[0.5, -1.0, 0.25], [0.002, 0.001, -0.004]])
    q = quantize_weight_per_channel(weight)
    assert q.dtype == torch.qint8
    torch.testing.assert_close(q.q_per_channel_scales().float(), torch.tensor([1.0, 0.004]) / 127)
    # Each row is within half its own step, so the tiny second row is not rounded to zero.
    half_step = torch.tensor([[1.0], [0.004]]) / 254
    assert ((q.dequantize() - weight).abs() <= half_step + 1e-9).all()
    assert (q.dequantize()[1] != 0).all()
    assert q.int_repr()[0, 1] == -127 and q.int_repr()[1, 2] == -127


def test_int8_linear_is_float_linear_up_to_quantisation_and_keeps_shapes():
    torch.manual_seed(1)
    linear = nn.Linear(64, 96)
    x = torch.randn(2, 17, 64)
    with torch.inference_mode():
        exact = linear(x)
        approx = Int8Linear(linear)(x)
        assert approx.shape == (2, 17, 96) and approx.dtype == torch.float32
        # 7-bit activations and 8-bit weights: a few percent, not more.
        assert 1e-4 < relative_error(approx, exact) < 0.05
        gelu = Int8Linear(linear, nn.GELU())(x)
        assert relative_error(gelu, torch.nn.functional.gelu(exact)) < 0.05


def test_int8_velocity_is_close_to_float32_and_leaves_the_model_alone(predictor):
    model = predictor.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = Int8Velocity(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert isinstance(fast.network.in_blocks[0].mlp[0], Int8Linear)
    assert not isinstance(fast.network.out_blocks[-1].mlp[0], Int8Linear)  # the last feed-forward stays float32
    c, (h, w) = model.config.state_size, model.config.state_res
    for batch in (1, 3):
        z = torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(batch))
        t = torch.rand(batch, generator=torch.Generator().manual_seed(10 + batch))
        with torch.inference_mode():
            condition = model.condition(z, torch.randn_like(z), torch.full((batch,), 2))
            assert relative_error(fast(z, t, condition), model.velocity(z, t, condition)) < 0.05


def test_int8_rollouts_are_deterministic_close_and_follow_weight_changes(predictor):
    model, path = predictor.model, predictor.path
    fast = FlowPredictor(model, path, int8=True)
    plain = FlowPredictor(model, path, pack=False)
    z = torch.randn(2, model.config.state_size, *model.config.state_res, generator=torch.Generator().manual_seed(3))
    a = fast.predict_latents(z, 3, steps=3, num_samples=2, seed=4).latents
    torch.testing.assert_close(a, fast.predict_latents(z, 3, steps=3, num_samples=2, seed=4).latents, rtol=0, atol=0)
    assert relative_error(a, plain.predict_latents(z, 3, steps=3, num_samples=2, seed=4).latents) < 0.05
    # Weights changed in place (an optimiser step, a detail blend) are re-quantised before the next rollout.
    before = fast.predict_latents(z[:1], 1, steps=1, seed=3).latents
    with torch.no_grad():
        model.head.bias.add_(1.0)
    after = fast.predict_latents(z[:1], 1, steps=1, seed=3).latents
    with torch.no_grad():
        model.head.bias.sub_(1.0)
    torch.testing.assert_close(after - before, torch.full_like(before, 1.0), rtol=1e-4, atol=1e-4)


def test_int8_refuses_what_it_cannot_do(predictor):
    with pytest.raises(ValueError, match="int8 and compile cannot be combined"):
        FlowPredictor(predictor.model, predictor.path, int8=True, compile=True)
    with pytest.raises(ValueError, match="needs float32 weights on the CPU"):
        FlowPredictor(predictor.model.to(torch.float64), predictor.path, int8=True)
    predictor.model.float()


def test_the_shipped_network_in_int8_stays_close_to_float32(repo_root):
    """checkpoints/default: a 9-frame rollout's decoded frames in int8 against float32 (same noise)."""
    from smokeflow.pipeline import SmokeFlow

    fp32 = SmokeFlow.from_pretrained(f"{repo_root}/checkpoints/default")
    int8 = SmokeFlow.from_pretrained(f"{repo_root}/checkpoints/default", int8=True)
    generator = np.random.default_rng(0)
    observed = (generator.random((1, 64, 64, 3)) * 40).astype(np.uint8)
    observed[:, 20:50, 20:40] = 120  # a block of "smoke" to move
    a = fp32.predict(observed, num_frames=9, seed=0).frames.astype(float)
    b = int8.predict(observed, num_frames=9, seed=0).frames.astype(float)
    assert int8.flow.int8 and not fp32.flow.int8
    mse = ((a - b) ** 2).mean()
    assert 0 < mse and 10 * np.log10(255 ** 2 / mse) > 30  # different numbers, same rollout to the eye
