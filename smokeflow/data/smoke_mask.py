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


# Smoke on black leaves most of a frame black: at least 56 % of the pixels in each of 572 frames of the simulated
# test split (every 7th), 69 % in each frame of the real sample clip after `smokeflow extract` (smoke covers 1-25 %
# of real extracted frames). A raw webcam frame has almost none (0 % in the real sample clip).
MIN_BLACK_FRACTION = 0.3


def smoke_on_black_problem(frames, min_black: float = MIN_BLACK_FRACTION) -> str | None:
    """Why uint8 frames [..., H, W, 3] do not look like smoke on black, or None when they do.

    The models are trained on smoke cut out onto a black background (``smokeflow extract``); a raw video frame
    (sky, buildings) rolled forward gives meaningless predictions. The test: the share of pixels that are not
    smoke by :func:`smoke_mask` (averaged over the frames) is at least ``min_black``.
    """
    black = 1.0 - float(np.mean(smoke_mask(frames)))
    if black >= min_black:
        return None
    return (f"only {black:.0%} of the pixels are black, where frames of smoke on black have most of theirs black: "
            "these look like raw video frames, and the model was trained on smoke cut out onto black")
