"""Each solver on velocity fields with known solutions: accuracy order, exact NFE, warm start."""

import math

import pytest
import torch

from smokeflow.flow.path import FlowPath
from smokeflow.flow.solvers import EVALS_PER_STEP, integrate


def growth(t, y):
    """dy/dt = y cos(t): y(t) = y0 exp(sin t)."""
    return y * torch.cos(t)


def exact_growth(y0, t0, t1):
    return y0 * math.exp(math.sin(t1) - math.sin(t0))


@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_fixed_step_order_of_accuracy_and_nfe(solver, order):
    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    exact = exact_growth(y0, 0.0, 2.0)
    errors = []
    for n in (8, 16, 32):
        y1, nfe = integrate(growth, y0, 0.0, 2.0, n, solver)
        assert nfe == n * EVALS_PER_STEP[solver]
        errors.append((y1 - exact).abs().max().item())
    # Halving the step divides the error by about 2^order.
    for coarse, fine in zip(errors, errors[1:]):
        ratio = coarse / fine
        assert 2 ** order * 0.7 < ratio < 2 ** order * 1.4, (solver, errors)


def test_dopri5_is_accurate_and_counts_every_evaluation():
    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    calls = []

    def counted(t, y):
        calls.append(float(t))
        return growth(t, y)

    reports = []
    y1, nfe = integrate(counted, y0, 0.0, 2.0, solver="dopri5", rtol=1e-8, atol=1e-8,
                        on_step=lambda step, total: reports.append(step))
    assert torch.allclose(y1, exact_growth(y0, 0.0, 2.0), atol=1e-6)
    assert nfe == len(calls) == len(reports) and nfe > 6
    assert reports == list(range(1, nfe + 1))


@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun", "rk4", "dopri5"])
def test_exact_flow_field_reaches_the_data_point_from_a_warm_start(solver):
    """With one data point z, the marginal field of the path is known: u(x, t) = z - (1-s)(x - t z)/(1-(1-s)t).
    Its trajectories are straight, so every solver lands on z + sigma*eps, from noise or from a warm start."""
    path = FlowPath(sigma=1e-4)
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)

    def field(t, x):
        return z - (1 - path.sigma) * (x - t * z) / (1 - (1 - path.sigma) * t)

    for s in (0.0, 0.5):
        y0 = path.warm_start(z, eps, s)  # warm start from the data itself: still on the same straight line
        y1, _ = integrate(field, y0, s, 1.0, 3, solver)
        assert torch.allclose(y1, z + path.sigma * eps, atol=1e-6)


def test_fixed_step_progress_is_reported_every_step_and_bad_names_rejected():
    steps = []
    integrate(growth, torch.ones(2), 0.0, 1.0, 5, "heun", on_step=lambda s, n: steps.append((s, n)))
    assert steps == [(i, 5) for i in range(1, 6)]
    with pytest.raises(ValueError, match="unknown solver"):
        integrate(growth, torch.ones(2), solver="rk45")
