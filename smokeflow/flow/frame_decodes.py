"""Decode each frame of a rollout once: the per-frame helpers of the sampler and the rollout's output share it.

Before every predicted frame, the advected warm start (:mod:`smokeflow.flow.advected_warm_start`) and detail
guidance (:mod:`smokeflow.flow.detail_guidance`) decode the reference, which is the frame predicted just
before. So a rollout of F frames has already decoded frames 1..F-1 by the time it ends, and decoding them
again for the output would repeat that work (measured on the 2-core CPU for one sample of 9 frames: output
decoding 40 ms, 12 ms with the reuse; about 1.5 % of the rollout). :class:`FrameDecodes` wraps the decoder,
remembers what it decoded, and hands the images back.
"""

from __future__ import annotations

from typing import Callable

import torch


class FrameDecodes:
    """``decode`` (latents [K, C, h, w] -> images [K, 3, H, W] in [-1, 1]) that decodes the same tensor object
    only once in a row, and, with ``keep_all``, keeps every decode for :meth:`images_of`.

    keep_all=False keeps only the last decode (for loops that run long, e.g. training draws); True keeps
    each one (K x 3 x H x W floats per frame: 0.4 MB for K = 8 at 64 x 64) for the length of one rollout.
    """

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], keep_all: bool = False):
        self.decode, self.keep_all = decode, keep_all
        self._inputs: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        if self._inputs and self._inputs[-1] is latents:
            return self._outputs[-1]
        images = self.decode(latents)
        if not self.keep_all:
            self._inputs.clear()
            self._outputs.clear()
        self._inputs.append(latents)
        self._outputs.append(images)
        return images

    def images_of(self, latents: torch.Tensor) -> torch.Tensor | None:
        """The images decoded from latents equal to ``latents`` [K, C, h, w] (bit for bit), or None when
        no such latents were decoded."""
        for seen, images in zip(reversed(self._inputs), reversed(self._outputs)):
            if seen.shape == latents.shape and torch.equal(seen, latents.to(seen.device, seen.dtype)):
                return images
        return None


def decode_once_per_frame(decode: Callable[[torch.Tensor], torch.Tensor]) -> FrameDecodes:
    """``decode`` that returns its last result again when called with the same tensor object, so
    :func:`~smokeflow.flow.detail_guidance.blurred_reference` and
    :func:`~smokeflow.flow.detail_guidance.smoke_tokens` share one decode of each reference."""
    return FrameDecodes(decode, keep_all=False)
