"""Train on the model's own predictions as reference frames, against the drift of long rollouts.

Why: in a rollout every frame after the first is predicted from a *predicted* reference frame, while RIVER
trains only on true reference frames (exposure bias). Measured on the shipped model: the first predicted
frame is as sharp as the VQVAE allows (sharpness 23.0 vs 23.3 for reconstructions), but each later frame is a
little smoother and fainter than the one it came from, and it compounds (sharpness 14, smoke mass -18 % by
frame 9); more ODE steps do not change it, so it is the network's reaction to its own inputs, not the solver.

What: for a share ``prob`` of the clips of a batch, the reference frame z^{tau-1} is replaced by the model's
own prediction of it, made exactly as the sampler makes it (warm start ``warm_start`` from z^{tau-2}, Euler
with ``steps`` steps, context drawn from the frames before z^{tau-2}, or z^{tau-2} itself when there is
none), without gradients. The target stays the true z^tau, so the network learns to bring a drifted
reference back to the data (sharp, full mass) instead of carrying the drift on. Noise on the conditioning
(``condition_noise``) is the cheap stand-in for this; this is the real input distribution, at the cost of
``steps`` extra forward passes for the chosen clips.

Chains (``chain`` > 1): from frame 3 on, a rollout's reference was itself predicted from a predicted frame,
and the drift compounds (blur and fade grow frame by frame). With ``chain`` = L each chosen clip draws a
chain length l uniformly from 1..min(L, tau-1) and predicts the l frames before the target one after the
other, each from the previous *prediction* (the first from the true frame before the chain); contexts that
fall inside the chain are predictions too, as in a rollout. Costs l * ``steps`` forward passes per clip.
"""

from __future__ import annotations

import torch

from smokeflow.flow.path import FlowPath
from smokeflow.flow.solvers import integrate
from smokeflow.training.precision import training_autocast
from smokeflow.training.step_noise import normal_on


@torch.no_grad()
def predicted_references(model, path: FlowPath, clips: torch.Tensor, ref_idx: torch.Tensor, steps: int,
                         warm_start: float, generator: torch.Generator,
                         noise_generator: torch.Generator | None = None, precision: str = "auto") -> torch.Tensor:
    """The model's predictions of frames ``ref_idx`` (0-based, each >= 1) of ``clips`` [B, T, C, h, w].

    Each is predicted from the frame before it, with a context frame drawn uniformly from the frames before
    that (distance >= 2), or that frame itself at distance 1 when it is the clip's first frame.
    Returns float [B, C, h, w] (normalised latents, like the clips). All draws come from ``generator``, except
    the Gaussian noise when ``noise_generator`` (a generator on the clips' device) is given. ``precision``: the
    arithmetic, as ``flow_training.precision`` (:mod:`smokeflow.training.precision`).
    """
    if (ref_idx < 1).any():
        raise ValueError("a predicted reference needs a frame before it (ref_idx >= 1)")
    network = getattr(model, "module", model)  # unwrap DistributedDataParallel: no gradients flow here
    b = clips.shape[0]
    device = clips.device
    rows = torch.arange(b, device=device)
    prev_idx = ref_idx - 1
    # Noise first, drawn like the sampler draws it, so both make the same frame from the same generator state.
    eps = normal_on((b, *clips.shape[2:]), noise_generator or generator, device).to(clips.dtype)
    # Context among frames 0..prev_idx-1 (distance >= 2), or the previous frame itself when prev_idx == 0.
    ctx_idx = (torch.rand(b, generator=generator) * prev_idx.float()).long().clamp(max=(prev_idx - 1).clamp(min=0))
    ctx_idx = torch.where(prev_idx == 0, prev_idx, ctx_idx)
    previous = clips[rows, prev_idx.to(device)]
    context = clips[rows, ctx_idx.to(device)]
    distance = (ref_idx - ctx_idx).to(device)
    autocast = training_autocast(device, precision)
    with autocast:
        condition = network.condition(previous, context, distance, warm_start)

    def velocity(t, y):
        with autocast:
            return network.velocity(y, t.expand(b), condition, anchor=previous).to(y.dtype)

    y0 = path.warm_start(previous, eps, warm_start)
    predicted, _ = integrate(velocity, y0, warm_start, 1.0, steps, "euler")
    return predicted


@torch.no_grad()
def chained_predicted_clips(model, path: FlowPath, clips: torch.Tensor, ref_idx: torch.Tensor, chain: int,
                            steps: int, warm_start: float, generator: torch.Generator,
                            noise_generator: torch.Generator | None = None, precision: str = "auto") -> torch.Tensor:
    """``clips`` [B, T, C, h, w] with frames ``ref_idx - l + 1 .. ref_idx`` replaced by chained predictions.

    l is drawn per clip uniformly from 1..min(chain, ref_idx) (always 1 for ``chain`` = 1, which draws
    nothing extra); frame ``ref_idx - l`` and those before it stay true. Each predicted frame is made by
    :func:`predicted_references` from the clip as replaced so far, so its reference and any context inside
    the chain are earlier predictions. Returns a new tensor; ``clips`` is not changed. ``noise_generator``: as
    in :func:`predicted_references`, as is ``precision``.
    """
    if chain < 1:
        raise ValueError(f"chain must be >= 1, got {chain}")
    b = clips.shape[0]
    ref_idx = ref_idx.long()
    if chain == 1:
        length = torch.ones(b, dtype=torch.long)
    else:
        longest = ref_idx.clamp(max=chain)
        length = 1 + (torch.rand(b, generator=generator) * longest.float()).long().clamp(max=longest - 1)
    out = clips.clone()
    device = clips.device
    for back in range(int(length.max()) - 1, -1, -1):  # the frame `back` before ref_idx, earliest first
        sel = length > back
        rows = sel.nonzero().squeeze(1).to(device)
        frame = ref_idx[sel] - back
        out[rows, frame.to(device)] = predicted_references(model, path, out[rows], frame, steps, warm_start,
                                                           generator, noise_generator, precision)
    return out
