"""Per-frame image metrics of predicted frames against ground truth: MSE, PSNR, smoke-only PSNR, SSIM.

Conventions (the same as OpenSTL and scikit-image; each is checked in ``tests/test_frame_metrics.py``):

- Inputs are uint8 numpy arrays ``[..., H, W, 3]`` on the 0-255 scale (``pred`` and ``target`` broadcast
  against each other, so ``pred [K, F, H, W, 3]`` against ``target [F, H, W, 3]`` scores K samples).
- Every metric returns one float64 value per frame, shape ``[...]`` (the broadcast leading dims).
- MSE is the mean over all pixels *and* the 3 colour channels of ``(pred - target)**2`` on the 0-255 scale.
- PSNR = ``10 * log10(255**2 / MSE)`` in dB (data range 255). Identical frames would give +inf, which makes
  every average meaningless, so PSNR is capped at :data:`PSNR_MAX_DB` (documented, never silent).
- Smoke PSNR is the PSNR over *smoke pixels only*: the pixels that are smoke (``smokeflow.data.smoke_mask``)
  in the target **or** in the prediction, all 3 channels of each. Using the union means a prediction is
  penalised both for missing smoke and for inventing smoke on black background. A frame pair with no smoke
  pixel in either frame has no smoke PSNR: NaN (averages use ``nanmean`` and report how many were defined).
- SSIM is torchmetrics' ``structural_similarity_index_measure`` with a Gaussian window 11x11, sigma 1.5,
  K1=0.01, K2=0.03, data range 255, computed per colour channel and averaged over channels (the SSIM map
  averaged over channels and pixels, which is the mean of per-channel SSIMs). The 5-pixel border where the
  window leaves the frame is cropped before averaging (torchmetrics itself would average over
  reflect-padded borders), exactly as scikit-image's ``structural_similarity(..., channel_axis=-1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)`` does; the two agree to
  ~1e-6.
"""

from __future__ import annotations

import numpy as np
import torch

from smokeflow.data.smoke_mask import smoke_mask

DATA_RANGE = 255.0
# 100 dB is MSE 6.5e-6 on the 0-255 scale: far below one quantisation step, i.e. "identical".
PSNR_MAX_DB = 100.0
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
# Frames per torchmetrics call: bounds memory (SSIM maps) for thousands of frames.
_SSIM_CHUNK = 256


def _check_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    """Validate uint8 [..., H, W, 3] inputs and broadcast them to one shape."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    for name, arr in (("pred", pred), ("target", target)):
        if arr.dtype != np.uint8:
            raise TypeError(f"{name} must be uint8 [..., H, W, 3] on the 0-255 scale, got dtype {arr.dtype}")
        if arr.ndim < 3 or arr.shape[-1] != 3:
            raise ValueError(f"{name} must have shape [..., H, W, 3], got {arr.shape}")
    try:
        pred, target = np.broadcast_arrays(pred, target)
    except ValueError:
        raise ValueError(f"pred {pred.shape} and target {target.shape} do not broadcast") from None
    return pred, target


def _psnr_from_mse(mse: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(DATA_RANGE**2 / mse)
    # NaN (undefined MSE) stays NaN; only +inf (identical frames) is capped.
    return np.where(np.isnan(psnr), np.nan, np.minimum(psnr, PSNR_MAX_DB))


def mse(pred, target) -> np.ndarray:
    """Mean squared error per frame on the 0-255 scale. pred/target uint8 [..., H, W, 3] -> float64 [...]."""
    pred, target = _check_pair(pred, target)
    diff = pred.astype(np.float64) - target.astype(np.float64)
    return np.mean(diff * diff, axis=(-3, -2, -1))


def psnr(pred, target) -> np.ndarray:
    """PSNR in dB per frame (data range 255, capped at ``PSNR_MAX_DB``). uint8 [..., H, W, 3] -> float64 [...]."""
    return _psnr_from_mse(mse(pred, target))


def psnr_smoke(pred, target) -> np.ndarray:
    """PSNR in dB over smoke pixels only (smoke in target OR prediction), NaN for frames with none.

    uint8 [..., H, W, 3] -> float64 [...].
    """
    pred, target = _check_pair(pred, target)
    region = smoke_mask(pred) | smoke_mask(target)  # [..., H, W]
    diff = pred.astype(np.float64) - target.astype(np.float64)
    squared_error = np.sum(diff * diff, axis=-1)  # summed over channels: [..., H, W]
    pixel_count = region.sum(axis=(-2, -1)) * 3.0
    with np.errstate(invalid="ignore", divide="ignore"):
        smoke_mse = np.sum(squared_error * region, axis=(-2, -1)) / pixel_count
    return _psnr_from_mse(np.where(pixel_count > 0, smoke_mse, np.nan))


def ssim(pred, target) -> np.ndarray:
    """SSIM per frame (Gaussian 11x11, sigma 1.5, data range 255, mean over RGB channels).

    uint8 [..., H, W, 3] -> float64 [...] in [-1, 1].
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    pred, target = _check_pair(pred, target)
    leading = pred.shape[:-3]
    height, width = pred.shape[-3:-1]
    if min(height, width) < SSIM_KERNEL_SIZE:
        raise ValueError(f"SSIM needs frames of at least {SSIM_KERNEL_SIZE}x{SSIM_KERNEL_SIZE}, got {height}x{width}")
    flat_pred = pred.reshape(-1, height, width, 3)
    flat_target = target.reshape(-1, height, width, 3)
    scores = np.empty(flat_pred.shape[0], dtype=np.float64)
    for start in range(0, flat_pred.shape[0], _SSIM_CHUNK):
        stop = start + _SSIM_CHUNK
        # float32: torch's float64 grouped conv is ~40x slower on CPU, and float32 still agrees with
        # scikit-image's float64 to ~1e-6 (tested). [N, H, W, 3] -> [N, 3, H, W].
        p = torch.from_numpy(flat_pred[start:stop]).permute(0, 3, 1, 2).to(torch.float32)
        t = torch.from_numpy(flat_target[start:stop]).permute(0, 3, 1, 2).to(torch.float32)
        _, ssim_map = structural_similarity_index_measure(
            p,
            t,
            gaussian_kernel=True,
            sigma=SSIM_SIGMA,
            kernel_size=SSIM_KERNEL_SIZE,
            data_range=DATA_RANGE,
            k1=0.01,
            k2=0.03,
            reduction="none",
            return_full_image=True,
        )
        # torchmetrics averages the map over reflect-padded borders; crop them (as scikit-image and
        # Wang et al.'s reference code do) so the score only uses windows that lie inside the frame.
        border = (SSIM_KERNEL_SIZE - 1) // 2
        interior = ssim_map[..., border:-border, border:-border]  # [N, 3, H-10, W-10]
        scores[start:stop] = interior.double().mean(dim=(1, 2, 3)).numpy()
    return scores.reshape(leading)


FRAME_METRICS = {"mse": mse, "psnr": psnr, "psnr_smoke": psnr_smoke, "ssim": ssim}
"""Name -> function of every per-frame metric here (all share the signature ``f(pred, target)``)."""
