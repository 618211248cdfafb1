"""ODE solvers that integrate a velocity function dy/dt = v(t, y) from t0 to t1.

Fixed-step solvers (euler, midpoint, heun, rk4) each have a small self-contained ``step()``, so a caller can
drive the loop itself and report every step (the UI does). ``dopri5`` is adaptive and runs through
torchdiffeq. Every solver counts network evaluations (NFE) exactly, through :class:`CountingVelocity`.

Velocity functions take (t: float tensor [], y: [B, ...]) and return a tensor shaped like y.
"""

from __future__ import annotations

from typing import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CountingVelocity:
    """Wraps a velocity function and counts its calls (the NFE); optional ``on_call(nfe, t)`` hook."""

    def __init__(self, velocity: Velocity, on_call: Callable[[int, float], None] | None = None):
        self.velocity = velocity
        self.nfe = 0
        self.on_call = on_call

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.velocity(t, y)
        if self.on_call is not None:
            self.on_call(self.nfe, float(t))
        return out


def euler_step(v: Velocity, t: torch.Tensor, dt: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """First order: y + dt v(t, y). 1 evaluation."""
    return y + dt * v(t, y)


def midpoint_step(v: Velocity, t, dt, y):
    """Second order (explicit midpoint). 2 evaluations."""
    k1 = v(t, y)
    return y + dt * v(t + dt / 2, y + dt / 2 * k1)


def heun_step(v: Velocity, t, dt, y):
    """Second order (Heun / explicit trapezoid). 2 evaluations."""
    k1 = v(t, y)
    k2 = v(t + dt, y + dt * k1)
    return y + dt / 2 * (k1 + k2)


def rk4_step(v: Velocity, t, dt, y):
    """Fourth order classic Runge-Kutta. 4 evaluations."""
    k1 = v(t, y)
    k2 = v(t + dt / 2, y + dt / 2 * k1)
    k3 = v(t + dt / 2, y + dt / 2 * k2)
    k4 = v(t + dt, y + dt * k3)
    return y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


FIXED_STEP_SOLVERS = {"euler": euler_step, "midpoint": midpoint_step, "heun": heun_step, "rk4": rk4_step}
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
SOLVERS = (*FIXED_STEP_SOLVERS, "dopri5")


def time_grid(t0: float, t1: float, num_steps: int, device=None) -> torch.Tensor:
    """Uniform grid of ``num_steps + 1`` times from t0 to t1 (float32 [num_steps + 1])."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return torch.linspace(float(t0), float(t1), num_steps + 1, device=device)


def integrate(velocity: Velocity, y0: torch.Tensor, t0: float = 0.0, t1: float = 1.0, num_steps: int = 10,
              solver: str = "euler", on_step: Callable[[int, int], None] | None = None,
              rtol: float = 1e-5, atol: float = 1e-5) -> tuple[torch.Tensor, int]:
    """Integrate dy/dt = velocity(t, y) from t0 to t1 starting at y0.

    Fixed-step solvers take ``num_steps`` uniform steps and call ``on_step(step, num_steps)`` after each
    (step is 1-based). dopri5 ignores ``num_steps`` (adaptive, tolerances rtol/atol) and calls
    ``on_step(nfe, 0)`` after each evaluation since its number of steps is not known in advance.
    Returns (y1, nfe): the state at t1 and the exact number of velocity evaluations.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {list(SOLVERS)}")
    if solver == "dopri5":
        from torchdiffeq import odeint

        counter = CountingVelocity(velocity, on_call=(lambda n, t: on_step(n, 0)) if on_step else None)
        times = torch.tensor([float(t0), float(t1)], dtype=y0.dtype, device=y0.device)
        y1 = odeint(counter, y0, times, method="dopri5", rtol=rtol, atol=atol)[-1]
        return y1, counter.nfe
    counter = CountingVelocity(velocity)
    step = FIXED_STEP_SOLVERS[solver]
    grid = time_grid(t0, t1, num_steps, device=y0.device).to(y0.dtype)
    y = y0
    for i in range(num_steps):
        y = step(counter, grid[i], grid[i + 1] - grid[i], y)
        if on_step is not None:
            on_step(i + 1, num_steps)
    return y, counter.nfe
