"""RIVER flow matching: probability path and loss, ODE solvers, sampler (warm start, rollout)."""
