"""Per-frame smoke statistics of frames: do rollouts move, fade, spread or blur where PSNR cannot tell?

All take uint8 frames ``[..., H, W, 3]`` (0-255, smoke on black) and return float64 ``[...]`` (one value per
frame). Smoke pixels are those of :func:`smokeflow.data.smoke_mask.smoke_mask` (one shared definition).
The *intensity* of a pixel is the mean of its R, G, B values divided by 255 (0 = black, 1 = white).

- ``mass``: sum of intensity over smoke pixels (in "white pixel" units: 10 fully white pixels = 10.0).
  Falls when a rollout fades to black, grows when it blows up.
- ``area``: fraction of the frame's pixels that are smoke (0-1). Tells spreading from shrinking.
- ``centroid_x`` / ``centroid_y``: intensity-weighted mean position of smoke pixels, in pixels from the
  left / top edge (pixel centres at 0..W-1, 0..H-1; y grows downwards, so rising smoke has falling y).
  NaN for a frame without smoke.
- ``sharpness``: root-mean-square gradient magnitude of the intensity over smoke pixels, in 0-255 units
  per pixel (central differences, one-sided at the border, as ``numpy.gradient``). RMS rather than the
  plain mean because blurring a monotone edge keeps the *sum* of |gradient| (the total rise) unchanged and
  only spreads it; the sum of squares drops, so blur lowers this. NaN without smoke.
- ``change`` (:func:`frame_change`): mean absolute difference to the previous frame over all pixels and
  channels on the 0-255 scale (the same measure DESIGN.md quotes for real data: 0.5-15). A rollout that
  freezes has change near 0.
- ``rise`` / ``drift`` (:func:`smokeflow.metrics.smoke_motion.smoke_motion`): how far the smoke moved from the
  previous frame, upwards / rightwards, in pixels per frame (optical flow). Change counts churn in place as
  motion; these only count displacement.
"""

from __future__ import annotations

import numpy as np

from smokeflow.data.smoke_mask import smoke_mask
from smokeflow.metrics.smoke_motion import smoke_motion

STATISTICS = ("mass", "area", "centroid_x", "centroid_y", "sharpness", "change", "rise", "drift")
"""Every statistic :func:`smoke_statistics` returns, in display order."""

DESCRIPTIONS = {
    "mass": "total smoke intensity (sum over smoke pixels of mean RGB / 255)",
    "area": "fraction of pixels that are smoke",
    "centroid_x": "intensity-weighted smoke centroid, pixels from the left edge",
    "centroid_y": "intensity-weighted smoke centroid, pixels from the top edge",
    "sharpness": "RMS intensity gradient magnitude over smoke pixels (0-255 units per pixel)",
    "change": "mean |frame - previous frame| on the 0-255 scale",
    "rise": "upward motion of the smoke since the previous frame, pixels per frame (optical flow)",
    "drift": "rightward motion of the smoke since the previous frame, pixels per frame (optical flow)",
}


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [..., H, W, 3], got {frames.dtype} {frames.shape}")
    return frames


def intensity(frames) -> np.ndarray:
    """Mean of R, G, B divided by 255: uint8 [..., H, W, 3] -> float64 [..., H, W] in [0, 1]."""
    return _check_frames(frames).astype(np.float64).mean(axis=-1) / 255.0


def _spatial_statistics(frames: np.ndarray) -> dict[str, np.ndarray]:
    """mass, area, centroid_x, centroid_y, sharpness of uint8 [M, H, W, 3] (intensity and mask computed
    once for all five)."""
    values = frames.astype(np.float64).mean(axis=-1) / 255.0  # intensity [M, H, W]
    mask = smoke_mask(frames)
    height, width = values.shape[-2:]
    weight = values * mask
    total = weight.sum(axis=(-2, -1))
    count = mask.sum(axis=(-2, -1))
    grad_y, grad_x = np.gradient(values * 255.0, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (weight.sum(axis=-2) @ np.arange(width)) / total
        y = (weight.sum(axis=-1) @ np.arange(height)) / total
        mean_square = np.sum((grad_x**2 + grad_y**2) * mask, axis=(-2, -1)) / count
    return {
        "mass": total,
        "area": count / (height * width),
        "centroid_x": np.where(total > 0, x, np.nan),
        "centroid_y": np.where(total > 0, y, np.nan),
        "sharpness": np.where(count > 0, np.sqrt(mean_square), np.nan),
    }


# Frames per chunk: bounds the float64 temporaries (~10 per frame) for thousands of frames.
_CHUNK = 512


def _spatial(frames) -> dict[str, np.ndarray]:
    """:func:`_spatial_statistics` for any leading dims [..., H, W, 3] -> {name: [...]}, chunked."""
    frames = _check_frames(frames)
    leading = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])
    parts = [_spatial_statistics(flat[i : i + _CHUNK]) for i in range(0, max(flat.shape[0], 1), _CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]).reshape(leading) for k in parts[0]}


def smoke_mass(frames) -> np.ndarray:
    return _spatial(frames)["mass"]


def smoke_area(frames) -> np.ndarray:
    return _spatial(frames)["area"]


def smoke_centroid(frames) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) intensity-weighted centroid of smoke pixels, each float64 [...]; NaN without smoke."""
    stats = _spatial(frames)
    return stats["centroid_x"], stats["centroid_y"]


def smoke_sharpness(frames) -> np.ndarray:
    """RMS |grad intensity| (0-255 units per pixel) over smoke pixels; NaN without smoke."""
    return _spatial(frames)["sharpness"]


def frame_change(frames, previous=None) -> np.ndarray:
    """Mean |frame_t - frame_{t-1}| (0-255) along the time axis -4 of uint8 [..., T, H, W, 3] -> [..., T].

    ``previous`` (uint8 [..., H, W, 3], e.g. the last observed frame) is the frame before frames[..., 0, :];
    without it the first value is NaN.
    """
    frames = _check_frames(frames).astype(np.float64)
    if frames.ndim < 4:
        raise ValueError(f"frame_change needs a time axis: [..., T, H, W, 3], got {frames.shape}")
    if previous is None:
        first = np.full(frames.shape[:-4] + (1,), np.nan)
    else:
        previous = _check_frames(previous).astype(np.float64)
        first = np.abs(frames[..., :1, :, :, :] - previous[..., None, :, :, :]).mean(axis=(-3, -2, -1))
        first = np.broadcast_to(first, frames.shape[:-4] + (1,))
    rest = np.abs(np.diff(frames, axis=-4)).mean(axis=(-3, -2, -1))
    return np.concatenate([first, rest], axis=-1)


def smoke_statistics(frames, previous=None) -> dict[str, np.ndarray]:
    """All of :data:`STATISTICS` for uint8 frames [..., T, H, W, 3] -> {name: float64 [..., T]}.

    ``previous`` is the frame before the first one (for ``change``, ``rise``, ``drift``), e.g. the last observed
    frame.
    """
    stats = _spatial(frames)
    stats["change"] = frame_change(frames, previous)
    stats["drift"], stats["rise"] = smoke_motion(frames, previous)
    return {name: stats[name] for name in STATISTICS}
