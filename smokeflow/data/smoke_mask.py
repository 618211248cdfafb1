"""Which pixels are smoke. Frames are smoke on black, so a pixel is smoke when its brightest channel
exceeds a small threshold. One definition shared by data statistics, the VQVAE loss weighting,
smoke-only PSNR and the smoke statistics of rollouts.
"""

from __future__ import annotations

import numpy as np
import torch

# On the 0-255 scale. The users' smoke is dim (mean RGB of smoke pixels from about (25,40,75)), so the
# threshold must be low; 12 sits above JPEG/extraction noise on black and below faint plume edges.
SMOKE_THRESHOLD_U8 = 12


def smoke_mask(frames, threshold_u8: float = SMOKE_THRESHOLD_U8):
    """Boolean smoke mask of frames.

    frames: uint8 numpy [..., H, W, 3] (0-255), or a float torch tensor [..., 3, H, W] in [-1, 1].
    Returns a bool array [..., H, W] of the same library (numpy or torch).
    """
    if isinstance(frames, torch.Tensor):
        if frames.dtype == torch.uint8:
            raise TypeError("torch frames must be float in [-1, 1] with channels first")
        brightest = frames.amax(dim=-3)  # [..., H, W] in [-1, 1]
        return brightest > (threshold_u8 / 255.0) * 2.0 - 1.0
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"numpy frames must be uint8 [..., H, W, 3], got {frames.dtype}")
    return frames.max(axis=-1) > threshold_u8
