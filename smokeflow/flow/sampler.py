"""Autoregressive rollout: predict F next latent frames for K samples at once, one frame at a time.

For each new frame n (0-based index in the sequence of observed + generated frames):
  * reference = frame n-1; the context frame c is drawn uniformly from the frames 0..n-2, either again at
    every network call (``context_policy="per_call"``, RIVER) or once per frame (``"per_frame"``).
    With a single observed frame there is no earlier frame for the first prediction: the context is then the
    reference frame itself, at distance 1 (the trainer can train that case, see ``reference_as_context_prob``).
  * the ODE dy/dt = v(y, t | ref, ctx, n - c) is integrated from t = s to 1 starting at the warm start
    y_s = (1 - (1 - sigma) s) eps + s z_{n-1} (s = 0: pure noise), or, with ``warm_start_source``, from the
    previous frame moved by the smoke's motion (:mod:`smokeflow.flow.advected_warm_start`).
Conditioning that does not change during the N steps of one frame is computed once: the reference tokens
once per frame, the context tokens once per frame of the sequence (so re-drawing the context per call only
indexes a cache).

Deterministic for a seed: noise and context draws come from one CPU ``torch.Generator`` seeded with ``seed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from smokeflow.flow.detail_guidance import DetailGuidance
from smokeflow.flow.path import FlowPath
from smokeflow.flow.solvers import SOLVERS, integrate
from smokeflow.models.vector_field import VectorField

CONTEXT_POLICIES = ("per_call", "per_frame")


@dataclass
class RolloutProgress:
    """What a progress callback receives after every solver step.

    frame: 0-based index of the frame being generated (among ``num_frames``); step: 1-based step (for
    dopri5: the network evaluation count so far); num_steps: steps per frame (0 for adaptive dopri5);
    frame_done: True on the last report of a frame.
    """

    frame: int
    num_frames: int
    step: int
    num_steps: int
    frame_done: bool


@dataclass
class RolloutResult:
    """latents: float [K, F, C, h, w] generated latents (normalised); nfe: network evaluations per sample
    (all K samples share each batched call); seconds: wall time of the rollout; warm_start_motion: set by
    callers that advect the warm start (``SmokeFlow.predict_latents``) to the velocity they used;
    decoded_images: set by ``SmokeFlow.predict_latents`` to one entry per predicted frame, the float images
    [K, 3, H, W] in [-1, 1] the rollout already decoded of that frame, or None (see
    :mod:`smokeflow.flow.frame_decodes`); None when nothing was decoded."""

    latents: torch.Tensor
    nfe: int
    seconds: float = 0.0
    warm_start_motion: object = None
    decoded_images: list | None = None


def _check_arguments(z_obs, num_frames, steps, solver, warm_start, num_samples, context_policy):
    if z_obs.ndim != 4 or z_obs.shape[0] < 1:
        raise ValueError(f"z_obs must be [T_obs >= 1, C, h, w], got {tuple(z_obs.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {list(SOLVERS)}")
    if solver != "dopri5" and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 <= warm_start < 1.0:
        raise ValueError(f"warm_start must be in [0, 1), got {warm_start}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if context_policy not in CONTEXT_POLICIES:
        raise ValueError(f"unknown context_policy {context_policy!r}; choose one of {list(CONTEXT_POLICIES)}")


@torch.inference_mode()
def rollout(model: VectorField, path: FlowPath, z_obs: torch.Tensor, num_frames: int, steps: int = 10,
            solver: str = "euler", warm_start: float = 0.0, num_samples: int = 1, seed: int = 0,
            context_policy: str = "per_call",
            callback: Callable[[RolloutProgress], None] | None = None,
            rtol: float = 1e-3, atol: float = 1e-3,
            velocity_fn: Callable[..., torch.Tensor] | None = None,
            project_frame: Callable[[torch.Tensor], torch.Tensor] | None = None,
            warm_start_source: Callable[[torch.Tensor], torch.Tensor] | None = None,
            detail_guidance: DetailGuidance | None = None,
            ) -> RolloutResult:
    """Generate ``num_frames`` latent frames after the observed ones, for ``num_samples`` samples in a batch.

    z_obs: float [T_obs, C, h, w] normalised observed latents (T_obs >= 1). Returns a :class:`RolloutResult`
    with latents [num_samples, num_frames, C, h, w] on z_obs's device. rtol/atol are dopri5's tolerances
    (1e-3 is far below what a decoded 8-bit frame can show). velocity_fn: the per-step network call with
    ``model.velocity``'s signature, called as ``velocity_fn(x_t, t, condition, anchor=reference)`` (default:
    ``model.velocity``; e.g. a :class:`~smokeflow.flow.compiled_velocity.CompiledVelocity`). project_frame:
    applied to each generated frame [K, C, h, w] before it becomes the next reference and a context candidate,
    and what is returned; e.g. the autoencoder's decode-encode round trip (``SmokeFlow.predict(...,
    reencode=True)``), which puts the prediction back among latents the encoder makes, against the drift of
    feeding raw predictions back. warm_start_source: maps the reference [K, C, h, w] to the latents the warm
    start mixes with the noise (default: the reference itself, RIVER's warm start); e.g. an
    :class:`~smokeflow.flow.advected_warm_start.AdvectedWarmStart`. Called once per frame, only when s > 0.
    detail_guidance: a :class:`~smokeflow.flow.detail_guidance.DetailGuidance` with weight w > 0 makes every
    step v + w m (v - v_soft), v_soft conditioned on the softened reference and m its token weights (both
    branches in one batch of 2K; the NFE counts both); None or w = 0 is plain sampling.
    """
    _check_arguments(z_obs, num_frames, steps, solver, warm_start, num_samples, context_policy)
    start = time.perf_counter()
    model.eval()
    velocity_fn = velocity_fn or model.velocity
    device = z_obs.device
    param = next(model.parameters())
    z_obs = z_obs.to(device=param.device, dtype=param.dtype)
    generator = torch.Generator().manual_seed(int(seed))
    k, t_obs = num_samples, z_obs.shape[0]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if param.device.type == "cuda" else _NoAutocast()

    frames = list(z_obs.unsqueeze(0).expand(k, -1, -1, -1, -1).unbind(1))  # list of [K, C, h, w]
    with autocast:
        # Context tokens of every frame of the sequence, computed once per frame: [K, L, h*w, D].
        context_cache = [model.context_tokens(f) for f in frames]
        warm_tokens = model.warm_start_tokens(warm_start, k)  # [K, 1, D], or 0.0 for a RIVER network
    batch_index = torch.arange(k, device=param.device)
    guided = detail_guidance is not None and detail_guidance.active
    total_nfe = 0
    for f in range(num_frames):
        n = t_obs + f  # index of the frame being generated
        reference = frames[n - 1]
        num_candidates = max(n - 1, 1)  # frames 0..n-2, or the reference itself when n == 1
        with autocast:
            # The warm-start part is the same for every frame; adding it here keeps it out of the step loop.
            reference_tokens = model.reference_tokens(reference) + warm_tokens
        contexts = torch.stack(context_cache[:num_candidates], dim=1)

        def draw_condition():
            if n == 1:
                index = torch.zeros(k, dtype=torch.long)
            else:
                index = torch.randint(0, n - 1, (k,), generator=generator)
            index = index.to(param.device)
            distance = n - index
            with autocast:
                return reference_tokens + contexts[batch_index, index] + model.distance_tokens(distance)

        frame_condition = draw_condition() if context_policy == "per_frame" else None
        soft_delta = None
        if guided:
            # The two branches' conditioning differs only in the reference tokens: one difference per frame.
            with autocast:
                soft_delta = model.reference_tokens(detail_guidance.soften(reference)) \
                    - model.reference_tokens(reference)
            token_weights = detail_guidance.token_weights(reference)  # where the detail is added, or None
            both_references = torch.cat([reference, reference])  # the anchor of both branches, made once

        def velocity(t, y):
            condition = frame_condition if frame_condition is not None else draw_condition()
            with autocast:
                if soft_delta is None:
                    v = velocity_fn(y, t.expand(y.shape[0]), condition, anchor=reference)
                else:
                    both = velocity_fn(torch.cat([y, y]), t.expand(2 * y.shape[0]),
                                       torch.cat([condition, condition + soft_delta]),
                                       anchor=both_references)
                    v = detail_guidance.combine(*both.chunk(2), token_weights)
            return v.to(y.dtype)

        def on_step(step, num_steps):
            if callback is not None:
                callback(RolloutProgress(f, num_frames, step, num_steps, frame_done=False))

        eps = torch.randn(reference.shape, generator=generator).to(param.device, param.dtype)
        start_from = reference if warm_start_source is None or warm_start == 0 else warm_start_source(reference)
        y0 = path.warm_start(start_from, eps, warm_start)
        y1, nfe = integrate(velocity, y0, warm_start, 1.0, steps, solver, on_step=on_step, rtol=rtol, atol=atol)
        total_nfe += nfe * (2 if guided else 1)
        if project_frame is not None:
            y1 = project_frame(y1).to(y1.dtype)
        frames.append(y1)
        with autocast:
            context_cache.append(model.context_tokens(y1))
        if callback is not None:
            callback(RolloutProgress(f, num_frames, steps if solver != "dopri5" else nfe,
                                     steps if solver != "dopri5" else 0, frame_done=True))
    latents = torch.stack(frames[t_obs:], dim=1).float().to(device)
    return RolloutResult(latents=latents, nfe=total_nfe, seconds=time.perf_counter() - start)


class _NoAutocast:
    """Stand-in for autocast on CPU: fp32 is about 2x faster than bf16 on these CPUs (no AMX)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
