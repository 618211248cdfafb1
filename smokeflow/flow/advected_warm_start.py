"""Motion-compensated warm start (our addition to RIVER): warm-start from the previous frame *moved on*.

RIVER's warm start y_s = (1 - (1 - sigma) s) eps + s z_prev tells the network, at t = s, that the next frame
looks like the previous one where it is. A RIVER-path network reads that share as evidence of the frame it is
to make, so the warm start pulls the smoke back to where it was: measured on 40 val videos (stage 7, Euler
N = 10), one frame sampled from the true past rises 0.32 px per frame from pure noise but 0.16 from s = 0.1,
and a 9-frame rollout 0.06-0.10 against the truth's 0.84.

Smoke has a velocity, and the previous frame advected by it is a better guess of the next frame than the
previous frame itself. So the warm start here mixes the noise with the *advected* previous frame:

    y_s = (1 - (1 - sigma) s) eps + s E(shift(D(z_prev), drift, rise))

where D / E are the frozen autoencoder's decoder / encoder and ``shift`` moves the decoded image ``rise``
pixels up and ``drift`` pixels right (bicubic; rows and columns entering at the edges repeat the edge, so a
plume fed from the bottom edge keeps its inflow). With (drift, rise) = (0, 0) it is exactly RIVER's warm start.
The network still makes the frame - its texture, spread and fading - from t = s on; the shift only changes
where the warm start says the smoke is. The velocity (see :mod:`smokeflow.data.smoke_velocity`): with two or
more observed frames a per-pixel field measured on them and kept for the whole rollout (a source that holds
still stays put while the smoke above it rises); from one frame, a per-pixel field guessed by the
checkpoint's motion network from each frame as it is moved (:mod:`smokeflow.models.motion_net`); without
one, the training data's mean motion, the checkpoint's motion prior.

Only the sampler's start changes; the network, its training and the path are RIVER's.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def shift_images(images: torch.Tensor, drift, rise) -> torch.Tensor:
    """Move images [B, C, H, W] (float) ``rise`` pixels up and ``drift`` pixels right -> [B, C, H, W].

    drift / rise: floats (the whole image moves), per-pixel fields [H, W] (tensor or array; each output
    pixel takes its own displacement, a backward warp: output (y, x) = input at (y + rise, x - drift)), or one
    field per image [B, H, W].
    Bicubic (PyTorch's kernel, a = -0.75), so sub-pixel shifts work: a whole or half pixel is exact, a quarter
    pixel moves a linear ramp by 0.30 instead of 0.25. Clamped to the images' own range (the cubic overshoots at
    edges); pixels that come from outside take the value of the nearest edge pixel.
    Why bicubic: the warm start moves every frame of a rollout again, and each bilinear move of a fractional
    pixel is a small blur that compounds; on 40 val videos bicubic kept the rollouts sharper at frame 9 (17.8
    against 16.3 RMS gradient, truth 30) with a lower feature distance (3.27 against 3.64).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got {tuple(images.shape)}")
    b, _, h, w = images.shape
    fields = [torch.as_tensor(d, dtype=images.dtype, device=images.device) for d in (drift, rise)]
    for name, d in zip(("drift", "rise"), fields):
        if d.ndim not in (0, 2, 3) or (d.ndim >= 2 and tuple(d.shape[-2:]) != (h, w)) or \
                (d.ndim == 3 and d.shape[0] != b):
            raise ValueError(f"{name} must be a number, a field [{h}, {w}] or fields [{b}, {h}, {w}], "
                             f"got shape {tuple(d.shape)}")
    if not any(bool(d.ne(0).any()) for d in fields):
        return images
    ys = torch.arange(h, device=images.device, dtype=images.dtype)[:, None] + fields[1]
    xs = torch.arange(w, device=images.device, dtype=images.dtype)[None, :] - fields[0]
    ys, xs = torch.broadcast_tensors(ys, xs)
    # grid_sample's normalised coordinates with align_corners=True: -1 and 1 are the outer pixel centres.
    grid = torch.stack([xs * 2 / max(w - 1, 1) - 1, ys * 2 / max(h - 1, 1) - 1], dim=-1).expand(b, h, w, 2)
    moved = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=True)
    return moved.clamp(images.min(), images.max())


class AdvectedWarmStart:
    """The warm-start source for :func:`smokeflow.flow.sampler.rollout`: latents [K, C, h, w] -> latents of the
    same frames decoded, moved by (drift, rise) pixels per frame, and encoded again.

    decode: latents [K, C, h, w] -> images [K, 3, H, W] (float, any range the encoder takes back);
    encode: images -> latents [K, C, h, w]. drift: px per frame rightwards; rise: px per frame upwards; each a
    float or a per-pixel field [H, W] (see :func:`shift_images`). field_of: optional images [K, 3, H, W] ->
    (drift, rise) fields [K, H, W]; when given, every frame is moved by the field guessed from that frame
    itself (the one-frame motion network, :mod:`smokeflow.models.motion_net`), so the velocity follows the
    smoke as it moves instead of staying where the observed frame had it; drift / rise are then unused.
    """

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], encode: Callable[[torch.Tensor], torch.Tensor],
                 drift, rise, field_of: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.decode, self.encode, self.field_of = decode, encode, field_of
        self.drift = drift if isinstance(drift, (int, float)) else torch.as_tensor(drift, dtype=torch.float32)
        self.rise = rise if isinstance(rise, (int, float)) else torch.as_tensor(rise, dtype=torch.float32)
        # Decided once, not at every frame: without motion the codec round trip is skipped.
        self.moves = field_of is not None or any(bool(torch.as_tensor(d).ne(0).any()) for d in (self.drift, self.rise))

    def __call__(self, reference: torch.Tensor) -> torch.Tensor:
        if not self.moves:
            return reference
        images = self.decode(reference)
        drift, rise = self.field_of(images) if self.field_of is not None else (self.drift, self.rise)
        return self.encode(shift_images(images, drift, rise)).to(reference.dtype)
