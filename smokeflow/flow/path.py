"""RIVER's probability path, frame sampling and flow-matching loss.

Path (optimal-transport conditional path with a small sigma):
    x_t = (1 - (1 - sigma) t) * eps + t * z,       t in [0, 1], eps ~ N(0, I)
    u   = d x_t / d t = z - (1 - sigma) * eps      (the target velocity, in its numerically stable form)
At t = 0 the sample is pure noise, at t = 1 it is z plus sigma-sized noise.

Frames of a training clip of T frames (1-based, as our users write it): target tau ~ U{3..T}, reference
tau - 1, context c ~ U{1..tau-2}; the network also sees the index distance tau - c (>= 2).

Warm start (sampling): start at t = s from the path point whose "data" is the previous frame,
    y_s = (1 - (1 - sigma) s) * eps + s * z_prev,
and integrate from s to 1; s = 0 is pure noise.

Warm-start path (training option, ``warm_start_path_prob``; not in RIVER). RIVER trains only the path above, whose
state at t = s holds s * z (the *target* frame), but its sampler starts from s * z_prev: the network reads that
share of the previous frame as evidence of the target and so under-predicts motion (measured: change ratio 0.76
from pure noise, 0.56 from s = 0.1, 0.23 from s = 0.5). The warm-start path is the straight line the sampler
actually follows, from the warm-start point to the data:
    x_t = (1 - (1 - sigma) t) eps + s (1 - t) / (1 - s) * z_prev + (t - s) / (1 - s) * z,   t in [s, 1]
    u   = z / (1 - s) - s / (1 - s) * z_prev - (1 - sigma) eps
i.e. RIVER's path with part of the signal taken from the previous frame, fading to none at t = 1. At t = s it is
the warm start, at t = 1 the same sigma-sized neighbourhood of z; with s = 0 it is exactly RIVER's path, and
its target adds s / (1 - s) * (z - z_prev), the motion the plain path never asks for.

Loss: mean squared error between predicted and target velocity, optionally weighted per latent position
so that smoke positions count more than the black background (see :func:`smoke_token_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_SIGMA = 1e-7


@dataclass
class FlowPath:
    """The conditional probability path of RIVER; ``sigma`` is sigma_min (>= 0, < 1)."""

    sigma: float = DEFAULT_SIGMA

    def __post_init__(self):
        if not 0.0 <= float(self.sigma) < 1.0:
            raise ValueError(f"sigma must be in [0, 1), got {self.sigma}")
        self.sigma = float(self.sigma)

    @staticmethod
    def _expand(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
        """Flow times (float, [] or [B]) -> broadcastable to ``like`` [B, ...]."""
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        return t.reshape(-1, *([1] * (like.ndim - 1))) if t.ndim else t

    def sample_xt(self, z: torch.Tensor, eps: torch.Tensor, t, z_prev: torch.Tensor | None = None,
                  s=0.0) -> torch.Tensor:
        """Point of the path at flow time t for data z and noise eps [B, ...]; t float [B] or scalar.

        Without ``z_prev`` (or with s = 0): RIVER's x_t = (1 - (1 - sigma) t) eps + t z. With ``z_prev`` [B, ...]
        and warm start s (float [B] or scalar, in [0, 1), t >= s): the warm-start path of the module doc.
        """
        t = self._expand(t, z)
        noise = (1.0 - (1.0 - self.sigma) * t) * eps
        if z_prev is None:
            return noise + t * z
        s = self._expand(s, z)
        return noise + (s * (1.0 - t) * z_prev + (t - s) * z) / (1.0 - s)

    def target_velocity(self, z: torch.Tensor, eps: torch.Tensor, z_prev: torch.Tensor | None = None,
                        s=0.0) -> torch.Tensor:
        """d x_t / d t: u = z - (1 - sigma) eps; with ``z_prev`` and s, (z - s z_prev) / (1 - s) - (1 - sigma) eps.

        Independent of t on both paths. With s = 0 both forms are the same tensor up to rounding.
        """
        if z_prev is None:
            return z - (1.0 - self.sigma) * eps
        s = self._expand(s, z)
        return (z - s * z_prev) / (1.0 - s) - (1.0 - self.sigma) * eps

    def warm_start(self, z_prev: torch.Tensor, eps: torch.Tensor, s: float) -> torch.Tensor:
        """Initial state at t = s: (1 - (1 - sigma) s) eps + s z_prev; s in [0, 1)."""
        if not 0.0 <= s < 1.0:
            raise ValueError(f"warm start s must be in [0, 1), got {s}")
        return self.sample_xt(z_prev, eps, s)


def sample_frame_indices(batch_size: int, num_frames: int, generator: torch.Generator | None = None,
                         reference_as_context_prob: float = 0.0):
    """Draw RIVER's training frames for ``batch_size`` clips of ``num_frames`` frames.

    Returns (target, reference, context), each long [B], 0-BASED indices into the clip: in 1-based terms
    tau ~ U{3..T}, reference tau-1, c ~ U{1..tau-2}. With probability ``reference_as_context_prob`` the context
    is the reference itself (distance 1): that is what the sampler does when only one frame is observed, so
    the distance-1 embedding gets trained too (RIVER never trains it; 0 reproduces RIVER exactly).
    """
    if num_frames < 3:
        raise ValueError(f"RIVER needs clips of at least 3 frames, got {num_frames}")
    # 1-based tau in {3..T}
    tau = torch.randint(3, num_frames + 1, (batch_size,), generator=generator)
    # c in {1..tau-2}: floor(U[0,1) * (tau-2)) + 1
    c = (torch.rand(batch_size, generator=generator) * (tau - 2).float()).long() + 1
    c = torch.minimum(c, tau - 2)
    if reference_as_context_prob > 0:
        use_ref = torch.rand(batch_size, generator=generator) < reference_as_context_prob
        c = torch.where(use_ref, tau - 1, c)
    return tau - 1, tau - 2, c - 1


def smoke_token_weights(z_target: torch.Tensor, background: torch.Tensor, smoke_weight: float,
                        threshold: float) -> torch.Tensor:
    """Per-position loss weights that favour smoke over black background.

    z_target: float [B, C, h, w] normalised latents of the target frames; background: float [C, h, w] or
    [C, 1, 1], the latent of an all-black frame. A position counts as smoke when the root-mean-square over
    channels of (z_target - background) exceeds ``threshold`` (in normalised latent units); smoke positions
    get weight ``smoke_weight``, background 1. Returns float [B, 1, h, w].
    """
    deviation = (z_target - background).pow(2).mean(dim=1, keepdim=True).sqrt()
    is_smoke = (deviation > threshold).to(z_target.dtype)
    return 1.0 + (smoke_weight - 1.0) * is_smoke


def change_token_weights(z_target: torch.Tensor, z_previous: torch.Tensor, change_weight: float) -> torch.Tensor:
    """Per-position loss weights that favour the positions where the frame changes.

    z_target, z_previous: float [B, C, h, w] normalised latents of the target frames and of the true frames
    before them. d = root-mean-square over channels of (z_target - z_previous), one value per position; the
    weight is 1 + (change_weight - 1) * d / mean(d) over the batch, so a position that changes as much as the
    batch's average gets ``change_weight`` and a static one 1. Returns float [B, 1, h, w].

    Why: between consecutive frames most positions hardly change, and a pure upward shift of the previous frame
    explains only ~10 % of the latent error of copying it (session 12, 40 val videos: 0.250 -> 0.224), so the
    rising plume's edge is a small part of an unweighted loss. The weight depends on the target, so it also
    moves the loss's minimiser towards the larger changes among the possible next frames.
    """
    change = (z_target - z_previous).pow(2).mean(dim=1, keepdim=True).sqrt()
    return 1.0 + (change_weight - 1.0) * change / change.mean().clamp(min=1e-6)


def flow_matching_loss(predicted: torch.Tensor, target: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) mean squared error of velocities [B, C, h, w]; weights [B, 1, h, w] or None.

    With weights, the loss is sum(w * err^2) / (sum(w) * C): a weighted mean, so its scale matches the plain
    MSE and stays comparable whether the weighting is on or off.
    """
    err = (predicted.float() - target.float()).pow(2)
    if weights is None:
        return err.mean()
    weights = weights.float()
    return (weights * err).sum() / (weights.expand_as(err).sum())
