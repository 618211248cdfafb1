"""One predictor interface for the model and the baselines, so evaluation has a single code path.

A *latent predictor* maps observed latents to future latents::

    predictor.predict_latents(z_obs [T_obs, C, h, w], num_frames, num_samples=1, seed=0)
        -> LatentRollout(latents [K, F, C, h, w], nfe)

``name`` identifies it in reports, ``settings()`` gives what produced its numbers, and ``deterministic``
says whether its K samples are all equal (then evaluation rolls out one and reuses it for every K).

- :class:`CopyLastFrame`: every future frame is the last observed frame.
- :class:`LinearLatentExtrapolation`: z_{t+1} = 2 z_t - z_{t-1} in latent space, from the last two observed
  or generated frames. With a single observation the first step has no velocity, so it starts as
  copy-last - and then, since the last two frames are equal, stays copy-last: it only differs from
  :class:`CopyLastFrame` when at least 2 frames are observed.
- :class:`AdvectedLastFrame`: the last observed frame moved on at the smoke's velocity (the velocity the
  advected warm start uses), re-encoded: what the motion alone explains, without the flow model.
- :class:`FlowModelPredictor`: the trained flow model (``SmokeFlow`` or ``FlowPredictor``, whose
  ``predict_latents`` takes steps / solver / warm start) with its sampling settings fixed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

import torch


@dataclasses.dataclass
class LatentRollout:
    """latents: float [K, F, C, h, w] (normalised latents); nfe: network evaluations per sample for the
    whole rollout (0 for baselines); seconds: wall time of the call."""

    latents: torch.Tensor
    nfe: int
    seconds: float = 0.0


class LatentPredictor(Protocol):
    name: str
    deterministic: bool

    def settings(self) -> dict: ...

    def predict_latents(self, z_obs: torch.Tensor, num_frames: int, num_samples: int = 1, seed: int = 0) -> LatentRollout: ...


def _check_observations(z_obs: torch.Tensor, num_frames: int) -> None:
    if z_obs.ndim != 4 or z_obs.shape[0] < 1:
        raise ValueError(f"z_obs must be [T_obs >= 1, C, h, w], got {tuple(z_obs.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


class CopyLastFrame:
    """Predicts that nothing moves: every future latent equals the last observed one."""

    name = "copy_last_frame"
    deterministic = True

    def settings(self) -> dict:
        return {"predictor": self.name}

    def predict_latents(self, z_obs, num_frames, num_samples=1, seed=0) -> LatentRollout:
        start = time.perf_counter()
        _check_observations(z_obs, num_frames)
        latents = z_obs[-1].expand(num_samples, num_frames, *z_obs.shape[1:]).clone()
        return LatentRollout(latents, nfe=0, seconds=time.perf_counter() - start)


class LinearLatentExtrapolation:
    """Constant latent velocity: z_{t+1} = z_t + (z_t - z_{t-1}), rolled out autoregressively."""

    name = "linear_latent_extrapolation"
    deterministic = True

    def settings(self) -> dict:
        return {"predictor": self.name}

    def predict_latents(self, z_obs, num_frames, num_samples=1, seed=0) -> LatentRollout:
        start = time.perf_counter()
        _check_observations(z_obs, num_frames)
        previous = z_obs[-2] if z_obs.shape[0] >= 2 else z_obs[-1]  # one observation: zero velocity
        current = z_obs[-1]
        frames = []
        for _ in range(num_frames):
            previous, current = current, 2.0 * current - previous
            frames.append(current)
        latents = torch.stack(frames).unsqueeze(0).expand(num_samples, -1, -1, -1, -1).clone()
        return LatentRollout(latents, nfe=0, seconds=time.perf_counter() - start)


class AdvectedLastFrame:
    """Constant smoke velocity in pixel space: future frame f (1-based) is the last observed frame decoded, moved
    f x (drift, rise) pixels (:func:`~smokeflow.flow.advected_warm_start.shift_images`) and encoded again.

    pipe: a ``SmokeFlow``; the velocity is the one its advected warm start uses
    (:meth:`~smokeflow.pipeline.SmokeFlow.warm_start_velocity`: the observed frames, else the checkpoint's
    motion network, else its motion prior). Without one it is copy-last. The baseline that says what the flow
    model adds to the shift.
    """

    name = "advected_last_frame"
    deterministic = True

    def __init__(self, pipe):
        self.pipe = pipe

    def settings(self) -> dict:
        return {"predictor": self.name,
                "velocity": "measured on the observed frames, else the motion network, else the motion prior"}

    def predict_latents(self, z_obs, num_frames, num_samples=1, seed=0) -> LatentRollout:
        from smokeflow.flow.advected_warm_start import shift_images

        start = time.perf_counter()
        _check_observations(z_obs, num_frames)
        velocity = self.pipe.warm_start_velocity(z_obs, "auto")
        if velocity is None:
            latents = z_obs[-1:].expand(num_frames, *z_obs.shape[1:])
        else:
            last = self.pipe.decode_images(z_obs[-1:])  # [1, 3, S, S]
            drift, rise = (torch.as_tensor(d, dtype=torch.float32) for d in velocity.displacement())
            # Each frame moved from the observed one (not from the previous frame): one interpolation each.
            moved = torch.cat([shift_images(last, f * drift, f * rise) for f in range(1, num_frames + 1)])
            latents = self.pipe.encode_images(moved).to(z_obs.device, z_obs.dtype)
        latents = latents.unsqueeze(0).expand(num_samples, -1, -1, -1, -1).clone()
        return LatentRollout(latents, nfe=0, seconds=time.perf_counter() - start)


class FlowModelPredictor:
    """The flow model with fixed sampling settings, behind the common interface.

    source: anything with ``predict_latents(z_obs, num_frames, steps=, solver=, warm_start=, num_samples=,
    seed=, context_policy=)`` returning an object with ``.latents`` [K, F, C, h, w] and ``.nfe`` (the
    contract of ``SmokeFlow`` and ``FlowPredictor``). ``warm_start_motion`` ("auto", "off" or (drift, rise);
    ``SmokeFlow`` only, see :meth:`smokeflow.pipeline.SmokeFlow.predict_latents`) is passed on unless None;
    ``detail_guidance`` (the weight w) when > 0, ``SmokeFlow`` only. ``detail`` (the blend amount a): None is the
    source's "auto" (``SmokeFlow.resolve_detail``, resolved here so the settings record the amount used; none for
    a source without it); an amount is passed on when > 0, or to a source that resolves amounts itself.
    """

    deterministic = False

    def __init__(self, source, steps: int = 10, solver: str = "euler", warm_start: float = 0.0,
                 context_policy: str = "per_call", name: str = "model", reencode: bool = False,
                 warm_start_motion=None, detail_guidance: float = 0.0, detail: float | None = 0.0):
        self.source = source
        self.steps, self.solver, self.warm_start, self.context_policy = steps, solver, warm_start, context_policy
        self.reencode = reencode  # needs a source with the autoencoder (SmokeFlow)
        # None: not passed on (the source's own default; a FlowPredictor has no such argument). Any value,
        # "off" included, is passed: SmokeFlow's default is "auto", so "off" must be said.
        self.warm_start_motion = warm_start_motion
        self.detail_guidance = float(detail_guidance)  # SmokeFlow only; passed on when > 0
        resolve = getattr(source, "resolve_detail", None)
        self.detail_auto = detail is None
        self.detail = float(resolve(detail, warm_start) if resolve else (detail or 0.0))
        self._pass_detail = resolve is not None or self.detail > 0  # SmokeFlow's own default is "auto"
        self.name = name

    def settings(self) -> dict:
        return {
            "predictor": self.name,
            "steps": self.steps,
            "solver": self.solver,
            "warm_start": self.warm_start,
            "context_policy": self.context_policy,
            "reencode": self.reencode,
            "warm_start_motion": list(self.warm_start_motion) if isinstance(self.warm_start_motion, tuple)
            else self.warm_start_motion,
            "detail_guidance": self.detail_guidance,
            "detail": self.detail,
            **({"detail_auto": True} if self.detail_auto and self.detail > 0 else {}),
            # Only when on, so reports of the float32 network read as before.
            **({"int8": True} if getattr(self.source, "int8", False) else {}),
        }

    def predict_latents(self, z_obs, num_frames, num_samples=1, seed=0) -> LatentRollout:
        start = time.perf_counter()
        _check_observations(z_obs, num_frames)
        result = self.source.predict_latents(
            z_obs,
            num_frames,
            steps=self.steps,
            solver=self.solver,
            warm_start=self.warm_start,
            num_samples=num_samples,
            seed=seed,
            context_policy=self.context_policy,
            **({"reencode": True} if self.reencode else {}),
            **({"warm_start_motion": self.warm_start_motion} if self.warm_start_motion is not None else {}),
            **({"detail_guidance": self.detail_guidance} if self.detail_guidance > 0 else {}),
            **({"detail": self.detail} if self._pass_detail else {}),
        )
        return LatentRollout(result.latents, nfe=int(result.nfe), seconds=time.perf_counter() - start)
