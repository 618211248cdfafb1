"""Detail guidance: steer each frame away from what a blurred reference frame would make of it.

Why: a rollout softens frame by frame. The network conditions on the frame before (the reference) and mostly
keeps its texture, so a slightly soft prediction makes the next one as soft, plus a little more (sharpness
23.6 -> 21.5 -> 20.2 at frames 1 / 5 / 9 on the val split, truth ~30). Guidance in the manner of classifier-free
guidance, with the "unconditional" branch replaced by the same network conditioned on a *blurred* reference:

    v = v(x_t, t | z_ref) + w * (v(x_t, t | z_ref) - v(x_t, t | soften(z_ref)))

The difference of the two velocities is what the reference's fine detail adds to the prediction; w > 0 adds
more of it. ``soften`` maps the reference latents to those of the decoded reference blurred by a Gaussian and
encoded again (:func:`blurred_reference`); it runs once per frame, and the conditioning tokens of the two
branches differ only by the reference tokens, so the sampler adds that difference to each call's
conditioning (context and distance drawn as usual). Both branches run as one batch of 2K at every step, so
every step costs two network evaluations (the NFE counts both).

Where: ``where`` limits the added difference to some tokens, v + w * m * (v - v_soft) with m [K, 1, h, w] in
[0, 1]. :func:`smoke_tokens` gives the tokens whose 8x8 pixel patch (or a neighbour's) holds smoke in the
reference: guided everywhere, the black background picks up a faint speckle, the main cost in feature
distance. Measured on the val split, smoke tokens only: w = 0.25 keeps PSNR (25.25 against 25.26 unguided,
25.13 guided everywhere) for sharpness 22.8 at frame 9 (20.2 unguided) and FD 3.65 (3.02 unguided, 4.80
everywhere); w = 0.5 reaches 25.1 at frame 9 with FD 4.62 (9.0 everywhere). ``SmokeFlow.predict`` guides the
smoke tokens only.

Measured everywhere (val split, model card "Detail guidance"): w = 0.25 holds sharpness near frame 1's over 9
frames (24.1 / 23.7 / 24.1) at -0.13 dB PSNR and a worse feature distance (4.8 against 3.0); w = 0.5
over-sharpens (26.5 at frame 9, faint speckle on the background) and w = 1 blows up. Off (w = 0) by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

DEFAULT_BLUR_SIGMA = 1.0  # px on the 64x64 frame: about the softening of one rollout frame


@dataclass
class DetailGuidance:
    """weight: w >= 0 in v + w m (v - v_soft) (0: plain sampling); soften: reference latents [K, C, h, w] ->
    the latents of a softened reference, same shape (e.g. :func:`blurred_reference`); where: reference latents
    -> token weights m [K, 1, h, w] in [0, 1] (e.g. :func:`smoke_tokens`), or None for m = 1 everywhere."""

    weight: float
    soften: Callable[[torch.Tensor], torch.Tensor]
    where: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self):
        if not self.weight >= 0:  # also rejects NaN
            raise ValueError(f"detail guidance weight must be >= 0, got {self.weight}")

    @property
    def active(self) -> bool:
        return self.weight > 0

    def token_weights(self, reference: torch.Tensor) -> torch.Tensor | None:
        """m for the reference latents [K, C, h, w]: [K, 1, h, w] in the reference's dtype, or None (everywhere)."""
        if self.where is None:
            return None
        return self.where(reference).to(reference.device, reference.dtype)

    def combine(self, velocity: torch.Tensor, soft_velocity: torch.Tensor,
                token_weights: torch.Tensor | None = None) -> torch.Tensor:
        """v + w m (v - v_soft), velocities [K, C, h, w], m = token_weights [K, 1, h, w] (None: 1)."""
        detail = velocity - soft_velocity
        if token_weights is not None:
            detail = detail * token_weights
        return velocity + self.weight * detail


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images [B, 3, H, W] (edges replicated; radius 3 sigma) -> same shape."""
    if sigma <= 0:
        return images
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    cols = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    images = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"), rows, groups=channels)
    return F.conv2d(F.pad(images, (0, 0, radius, radius), mode="replicate"), cols, groups=channels)


def blurred_reference(decode: Callable[[torch.Tensor], torch.Tensor], encode: Callable[[torch.Tensor], torch.Tensor],
                      sigma: float = DEFAULT_BLUR_SIGMA) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``soften`` of :class:`DetailGuidance`: latents [K, C, h, w] -> encode(blur(decode(latents))).

    decode: latents -> images [K, 3, H, W] in [-1, 1]; encode: images -> latents (the frozen autoencoder's,
    e.g. ``SmokeFlow.decode_images`` / ``encode_images``)."""

    @torch.inference_mode()
    def soften(latents: torch.Tensor) -> torch.Tensor:
        return encode(gaussian_blur(decode(latents).float(), sigma)).to(latents.device, latents.dtype)

    return soften


def smoke_tokens(decode: Callable[[torch.Tensor], torch.Tensor],
                 dilation: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``where`` of :class:`DetailGuidance`: latents [K, C, h, w] -> float [K, 1, h, w], 1 at the tokens
    whose pixel patch holds smoke (:func:`~smokeflow.data.smoke_mask.smoke_mask` of the decoded frame), grown
    by ``dilation`` tokens (smoke moves into the neighbouring patches within a frame), else 0.

    decode: latents -> images [K, 3, H, W] in [-1, 1], H and W multiples of h and w."""
    from smokeflow.data.smoke_mask import smoke_mask

    @torch.inference_mode()
    def where(latents: torch.Tensor) -> torch.Tensor:
        smoke = smoke_mask(decode(latents).float()).float().unsqueeze(1)  # [K, 1, H, W]
        tokens = F.adaptive_max_pool2d(smoke, latents.shape[-2:])  # any smoke pixel in the patch
        if dilation > 0:
            tokens = F.max_pool2d(tokens, 2 * dilation + 1, stride=1, padding=dilation)
        return tokens.to(latents.device)

    return where
