"""The probability path, frame sampling and loss against their closed forms."""

import pytest
import torch

from smokeflow.flow.path import (FlowPath, change_token_weights, flow_matching_loss, sample_frame_indices,
                                 smoke_token_weights)


def test_path_endpoints_and_velocity_match_closed_form():
    path = FlowPath(sigma=1e-3)
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(4, 5, 3, 3, generator=g), torch.randn(4, 5, 3, 3, generator=g)
    assert torch.allclose(path.sample_xt(z, eps, 0.0), eps)
    assert torch.allclose(path.sample_xt(z, eps, 1.0), z + 1e-3 * eps, atol=1e-6)
    # x_t is linear in t, so a finite difference is exact up to rounding: it must equal u at every t.
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    h = 1e-2
    fd = (path.sample_xt(z, eps, t + h) - path.sample_xt(z, eps, t - h)) / (2 * h)
    assert torch.allclose(fd, path.target_velocity(z, eps), atol=1e-4)
    # Per-sample times broadcast per sample.
    xt = path.sample_xt(z, eps, t)
    for i in range(4):
        assert torch.allclose(xt[i], (1 - (1 - 1e-3) * t[i]) * eps[i] + t[i] * z[i])


def test_warm_start_is_the_path_point_of_the_previous_frame():
    path = FlowPath()
    z_prev, eps = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    assert torch.allclose(path.warm_start(z_prev, eps, 0.0), eps)
    s = 0.3
    assert torch.allclose(path.warm_start(z_prev, eps, s), (1 - (1 - 1e-7) * s) * eps + s * z_prev)


def test_warm_start_path_runs_from_the_warm_start_to_the_data_and_reduces_to_river_at_s_zero():
    path = FlowPath(sigma=1e-3)
    g = torch.Generator().manual_seed(2)
    z, z_prev, eps = (torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    s = torch.tensor([0.0, 0.1, 0.3, 0.5], dtype=torch.float64)
    start = path.sample_xt(z, eps, s, z_prev, s)
    for i in range(4):
        assert torch.allclose(start[i], path.warm_start(z_prev[i], eps[i], float(s[i])))
    assert torch.allclose(path.sample_xt(z, eps, 1.0, z_prev, s), z + 1e-3 * eps)
    # Linear in t: a central difference equals the target velocity at every t in [s, 1].
    t = torch.tensor([0.2, 0.4, 0.6, 0.9], dtype=torch.float64)
    h = 1e-3
    fd = (path.sample_xt(z, eps, t + h, z_prev, s) - path.sample_xt(z, eps, t - h, z_prev, s)) / (2 * h)
    target = path.target_velocity(z, eps, z_prev, s)
    assert torch.allclose(fd, target, atol=1e-9)
    for i in range(4):
        assert torch.allclose(target[i], (z[i] - s[i] * z_prev[i]) / (1 - s[i]) - (1 - 1e-3) * eps[i])
    # s = 0 is RIVER's path exactly.
    assert torch.equal(path.sample_xt(z, eps, t, z_prev, 0.0), path.sample_xt(z, eps, t))
    assert torch.equal(path.target_velocity(z, eps, z_prev, 0.0), path.target_velocity(z, eps))
    # Integrated from the warm start, the warm-start path's velocity lands on z + sigma eps; RIVER's velocity
    # lands s (z_prev - z) off it: the previous frame's share of the start is never removed (less motion).
    steps = 1 - s.reshape(-1, 1, 1, 1)
    assert torch.allclose(start + steps * target, z + 1e-3 * eps)
    river_end = start + steps * path.target_velocity(z, eps)
    assert torch.allclose(river_end - (z + 1e-3 * eps), s.reshape(-1, 1, 1, 1) * (z_prev - z))


def test_frame_indices_follow_river_ranges_and_cover_them():
    g = torch.Generator().manual_seed(1)
    T = 7
    target, reference, context = sample_frame_indices(20000, T, generator=g)
    # 1-based tau in {3..T}  ->  0-based target in {2..T-1}; reference tau-1; c in {1..tau-2}.
    assert set(target.tolist()) == set(range(2, T))
    assert torch.equal(reference, target - 1)
    assert bool((context >= 0).all()) and bool((context <= target - 2).all())
    assert set(context.tolist()) == set(range(0, T - 2))
    # Uniform c given tau: for tau = T (target T-1), each c in 0..T-3 about equally often.
    counts = torch.bincount(context[target == T - 1], minlength=T - 2).float()
    assert counts.min() / counts.max() > 0.8
    _, _, ctx_ref = sample_frame_indices(4000, T, generator=g, reference_as_context_prob=1.0)
    target2, ref2, ctx2 = sample_frame_indices(4000, T, generator=torch.Generator().manual_seed(2),
                                               reference_as_context_prob=0.5)
    share = (ctx2 == ref2).float().mean()
    assert 0.4 < share < 0.6


def test_loss_plain_and_weighted():
    pred, target = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    plain = flow_matching_loss(pred, target)
    assert torch.allclose(plain, ((pred - target) ** 2).mean())
    # Uniform weights give back the plain MSE (weighted mean keeps the scale).
    assert torch.allclose(flow_matching_loss(pred, target, torch.full((3, 1, 2, 2), 5.0)), plain)
    # Weight only one position: the loss is the MSE over that position's channels.
    w = torch.zeros(3, 1, 2, 2)
    w[:, :, 0, 1] = 1.0
    assert torch.allclose(flow_matching_loss(pred, target, w), ((pred - target)[:, :, 0, 1] ** 2).mean())


def test_smoke_token_weights_mark_positions_that_differ_from_background():
    background = torch.full((4, 1, 1), 0.5)
    z = background.expand(2, 4, 3, 3).clone()
    z[0, :, 1, 2] += 2.0  # one smoke position
    w = smoke_token_weights(z, background, smoke_weight=4.0, threshold=0.5)
    assert w.shape == (2, 1, 3, 3)
    assert w[0, 0, 1, 2] == 4.0
    assert w.sum() == 4.0 + 17 * 1.0


def test_change_token_weights_grow_with_the_change_from_the_previous_frame():
    previous = torch.randn(2, 4, 3, 3)
    target = previous.clone()
    target[0, :, 1, 2] += 1.0  # RMS change 1 at one position
    target[1, :, 0, 0] += 3.0  # RMS change 3 at another
    w = change_token_weights(target, previous, change_weight=4.0)
    assert w.shape == (2, 1, 3, 3)
    mean_change = 4.0 / 18  # the batch's mean RMS change over its 18 positions
    assert w[0, 0, 1, 2] == pytest.approx(1 + 3 * 1.0 / mean_change)
    assert w[1, 0, 0, 0] == pytest.approx(1 + 3 * 3.0 / mean_change)
    assert (w == 1.0).sum() == 16  # static positions keep weight 1
    assert torch.equal(change_token_weights(previous, previous, 4.0), torch.ones(2, 1, 3, 3))
