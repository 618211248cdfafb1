"""A split's cached latents held in (GPU or CPU) memory, training batches gathered there by index.

Why: :class:`~smokeflow.data.latent_cache.LatentClipDataset` reads every clip from the memory-mapped cache in
a Python loop and the batch is then copied to the device. A batch of 256 clips of 10 frames is 84 MB of float16
read clip by clip (0.11-0.2 s on the 2-core CPU); a lent H200 trained the default network at batch 256 at only
5-6 steps/s with those reads in every step. The cache of the default simulated training split is 2 x 1.3 GB of
float16 (plain and flipped), which a GPU holds easily, and gathering a batch there is one indexing operation.
On a CPU it gains nothing measurable (the gather is as memory-bound as the reads), so "auto" preloads on CUDA
only.

The clips are exactly the dataset's: the same plan (video, frames, flip) per item from
:meth:`LatentClipDataset.clip_rows`, the same float16 values converted to float32, so a run gives the same
batches with or without preloading (exact resume is unaffected).
"""

from __future__ import annotations

import numpy as np
import torch

from smokeflow.data.latent_cache import LatentClipDataset


class PreloadedLatentClips:
    """The latents of ``dataset`` (and its flipped latents when it flips) as float16 tensors on ``device``."""

    def __init__(self, dataset: LatentClipDataset, device: str | torch.device):
        self.dataset = dataset
        self.device = torch.device(device)
        self.plain = self._load(flipped=False)
        self.flipped = self._load(flipped=True) if dataset.random_horizontal_flip else None

    def _load(self, flipped: bool) -> torch.Tensor:
        # np.array reads the memory-mapped file once; float16 as stored (half the bytes of float32).
        return torch.from_numpy(np.array(self.dataset.stored_array(flipped))).to(self.device)

    @property
    def nbytes(self) -> int:
        """Bytes held on the device."""
        return sum(t.numel() * t.element_size() for t in (self.plain, self.flipped) if t is not None)

    def batch(self, indices: list[int]) -> torch.Tensor:
        """Items ``indices`` of the dataset (at its current epoch) -> float32 [B, T, C, h, w] on the device."""
        plans = [self.dataset.clip_rows(i) for i in indices]
        rows = torch.tensor([rows for rows, _ in plans], dtype=torch.long, device=self.device)  # [B, T]
        out = self.plain[rows]
        flips = [b for b, (_, flip) in enumerate(plans) if flip]
        if flips:
            chosen = torch.tensor(flips, dtype=torch.long, device=self.device)
            out[chosen] = self.flipped[rows[chosen]]
        return out.float()
