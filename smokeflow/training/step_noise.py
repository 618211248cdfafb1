"""Where a training step draws its latent-sized Gaussian noise: on the device it trains on, from the step's
generator (see :func:`smokeflow.training.flow_trainer.step_generator`, the key to exact resume)."""

from __future__ import annotations

import torch


def device_noise_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """The generator that draws a step's latent-sized Gaussian noise (eps, conditioning noise), on ``device``.

    On CPU it is ``generator`` itself, so CPU runs draw exactly what they always drew. On an accelerator it is a
    generator there, seeded by one draw from ``generator``: still a function of (seed, step, rank) alone, so
    resume stays exact. Why: drawn on the host, the noise of one batch-256 step ([256, 256, 8, 8] three or four
    times) took ~35 ms per tensor on this CPU before its copy to the GPU; the lent H200 trained the 8M-parameter
    network at only 6-10 steps/s with its compute nearly idle, and bigger batches would have been host-bound.
    """
    if device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def normal_on(shape, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal float32 ``shape`` drawn where ``generator`` lives, returned on ``device``."""
    return torch.randn(shape, generator=generator, device=generator.device).to(device)
