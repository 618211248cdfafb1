"""How smoke moves between consecutive frames: rise (upwards) and drift (rightwards), in pixels per frame.

Why: the frame-to-frame ``change`` says *how much* a rollout changes, not *whether it moves like smoke*. A
rollout that churns its texture in place changes as much as one whose plume rises, and the issue asks for
smoke that rises, drifts and spreads. Measured on the simulated val split, the truth rises 0.86 px per frame;
a model can match its change ratio while its smoke hardly rises (session 11: change ratio 1.01, rise 0.17).

Method: dense Lucas-Kanade optical flow (Lucas & Kanade 1981), the textbook least-squares form of brightness
constancy. On the intensity (mean RGB / 255) of both frames, pre-smoothed with a Gaussian of
``PRESMOOTH_SIGMA`` pixels, each pixel's displacement (u, v) solves

    [Sxx Sxy] [u]     [Sxt]
    [Sxy Syy] [v] = - [Syt]

where S are Gaussian-weighted (``WINDOW_SIGMA``) sums of products of the spatial gradients Ix, Iy of the
two frames' mean and the temporal difference It. Pixels count where either frame has smoke
(:func:`smokeflow.data.smoke_mask.smoke_mask`) and the 2x2 system is well conditioned (its determinant above
``CONDITION`` x trace^2: no aperture problem); each pixel's vector is weighted by the two frames' summed
intensity, so faint edges count less than the plume's body. The frame's value is that weighted mean:
``drift`` = mean u (positive = rightwards), ``rise`` = -mean v (positive = upwards; image y grows downwards).

Accuracy, on a smooth two-lobed blob moved by a known amount (tests/test_smoke_stats.py): shifts of 0.5, 1 and
2 pixels read within 4 %, 3 pixels 6 % high (one linearisation, no pyramid). Smoke moves 0.5-3 px per frame
here, and predictions are compared with the ground truth under the same measure. NaN when neither frame has
smoke, or no pixel qualifies.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from smokeflow.data.smoke_mask import smoke_mask

PRESMOOTH_SIGMA = 1.0
WINDOW_SIGMA = 3.0
CONDITION = 1e-3
SPREAD_SIGMA = 6.0  # px: how far motion_field carries a measured velocity into the pixels around it
SPREAD_FLOOR = 1e-3  # of the largest spread weight: below it a pixel takes the mean velocity


def _smooth(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian over the last two axes of float [M, H, W] (none over M); edges reflected."""
    return ndimage.gaussian_filter(images, sigma=(0, sigma, sigma), mode="reflect")


def _lucas_kanade(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel flow of uint8 frame pairs [M, H, W, 3] -> (u, v, weight), float64 [M, H, W] each.

    u: px rightwards, v: px downwards; weight: the two frames' summed intensity where the pixel qualifies
    (smoke, well-conditioned), else 0 (u and v are 0 there)."""
    first = before.astype(np.float64).mean(axis=-1) / 255.0
    second = after.astype(np.float64).mean(axis=-1) / 255.0
    mask = smoke_mask(before) | smoke_mask(after)
    a, b = _smooth(first, PRESMOOTH_SIGMA), _smooth(second, PRESMOOTH_SIGMA)
    grad_y, grad_x = np.gradient(0.5 * (a + b), axis=(-2, -1))
    grad_t = b - a
    sxx, syy, sxy = (_smooth(p, WINDOW_SIGMA) for p in (grad_x * grad_x, grad_y * grad_y, grad_x * grad_y))
    sxt, syt = _smooth(grad_x * grad_t, WINDOW_SIGMA), _smooth(grad_y * grad_t, WINDOW_SIGMA)
    det = sxx * syy - sxy**2
    trace = sxx + syy
    good = mask & (trace > 1e-8) & (det > CONDITION * trace**2)
    safe_det = np.where(good, det, 1.0)
    u = np.where(good, (-syy * sxt + sxy * syt) / safe_det, 0.0)
    v = np.where(good, (sxy * sxt - sxx * syt) / safe_det, 0.0)
    return u, v, np.where(good, first + second, 0.0)


def _pair_motion(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(drift, rise) of uint8 frame pairs [M, H, W, 3] -> float64 [M] each (px per frame)."""
    u, v, weight = _lucas_kanade(before, after)
    total = weight.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        drift = np.where(total > 0, (u * weight).sum(axis=(-2, -1)) / total, np.nan)
        rise = np.where(total > 0, -(v * weight).sum(axis=(-2, -1)) / total, np.nan)
    return drift, rise


def motion_fields(before, after, spread_sigma: float = SPREAD_SIGMA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense (drift, rise) of uint8 frame pairs [M, H, W, 3] each -> (drift, rise) float64 [M, H, W], px per
    frame, and ``measured`` bool [M] (False where no pixel of the pair qualifies; its fields are 0 there).

    The flow is only measured on the smoke; elsewhere it is spread from the smoke around it by normalised
    convolution (a Gaussian of ``spread_sigma`` px over the weighted flow, divided by the same Gaussian over
    the weights), and far from any smoke it is the weighted mean. So smoke that holds still - a plume's
    source - keeps a near-zero velocity, and the black just above a rising plume gets the plume's velocity.
    """
    u, v, weight = _lucas_kanade(np.asarray(before), np.asarray(after))
    total = weight.sum(axis=(-2, -1))
    measured = total > 0
    spread = _smooth(weight, spread_sigma)
    reach = spread > SPREAD_FLOOR * spread.max(axis=(-2, -1), keepdims=True)
    reach &= measured[:, None, None]
    safe = np.where(reach, spread, 1.0)
    fields = []
    for component in (u, -v):  # drift rightwards, rise upwards
        mean = (component * weight).sum(axis=(-2, -1)) / np.where(measured, total, 1.0)
        fields.append(np.where(reach, _smooth(component * weight, spread_sigma) / safe, mean[:, None, None]))
    return fields[0], fields[1], measured


def motion_field(before, after, spread_sigma: float = SPREAD_SIGMA) -> tuple[np.ndarray, np.ndarray] | None:
    """Dense (drift, rise) of one uint8 frame pair [H, W, 3] each -> float64 [H, W] each, px per frame; None
    when no pixel qualifies. See :func:`motion_fields`."""
    drift, rise, measured = motion_fields(np.asarray(before)[None], np.asarray(after)[None], spread_sigma)
    return (drift[0], rise[0]) if measured[0] else None


# Frame pairs per chunk: bounds the float64 temporaries (~20 images per pair).
_CHUNK = 256


def smoke_motion(frames, previous=None) -> tuple[np.ndarray, np.ndarray]:
    """(drift, rise) of uint8 frames [..., T, H, W, 3] -> float64 [..., T] each, pixels per frame.

    Value t is the motion from frame t-1 to frame t; ``previous`` (uint8 [..., H, W, 3], e.g. the last
    observed frame) is the frame before frames[..., 0, :]; without it the first value is NaN.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim < 4 or frames.shape[-1] != 3:
        raise ValueError(f"smoke_motion needs uint8 [..., T, H, W, 3], got {frames.dtype} {frames.shape}")
    leading, num_frames, image = frames.shape[:-4], frames.shape[-4], frames.shape[-3:]
    if previous is None:
        before = frames[..., :-1, :, :, :]
    else:
        previous = np.broadcast_to(np.asarray(previous, dtype=np.uint8), (*leading, *image))
        before = np.concatenate([previous[..., None, :, :, :], frames[..., :-1, :, :, :]], axis=-4)
    after = frames[..., num_frames - before.shape[-4]:, :, :, :]
    flat_before, flat_after = before.reshape(-1, *image), after.reshape(-1, *image)
    parts = [_pair_motion(flat_before[i:i + _CHUNK], flat_after[i:i + _CHUNK])
             for i in range(0, flat_before.shape[0], _CHUNK)]
    drift = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    rise = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    pad = num_frames - before.shape[-4]  # 1 without ``previous``, else 0
    shape = (*leading, before.shape[-4])
    drift, rise = drift.reshape(shape), rise.reshape(shape)
    if pad:
        first = np.full((*leading, 1), np.nan)
        drift, rise = np.concatenate([first, drift], axis=-1), np.concatenate([first, rise], axis=-1)
    return drift, rise
