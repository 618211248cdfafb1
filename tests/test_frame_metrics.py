"""Per-frame metrics against closed forms and against scikit-image (an independent implementation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from smokeflow.data.smoke_mask import SMOKE_THRESHOLD_U8
from smokeflow.metrics.frame_metrics import PSNR_MAX_DB, mse, psnr, psnr_smoke, ssim


def _random_frames(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_mse_and_psnr_closed_form_constant_offset():
    target = np.full((2, 16, 16, 3), 100, dtype=np.uint8)
    pred = target.copy()
    pred[0] += 10  # every value off by 10 -> MSE 100
    pred[1, :, :8] += 20  # half the pixels off by 20 -> MSE 200
    np.testing.assert_allclose(mse(pred, target), [100.0, 200.0])
    np.testing.assert_allclose(psnr(pred, target), [10 * math.log10(255**2 / 100), 10 * math.log10(255**2 / 200)])


def test_psnr_identical_frames_is_capped_and_shapes_broadcast():
    target = _random_frames((3, 8, 8, 3), 0)
    assert np.all(psnr(target, target) == PSNR_MAX_DB)
    samples = np.stack([target, 255 - target])  # [K=2, F=3, H, W, 3] against [F, H, W, 3]
    out = psnr(samples, target)
    assert out.shape == (2, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out[1], psnr(255 - target, target))


def test_psnr_smoke_uses_union_of_smoke_masks():
    target = np.zeros((1, 10, 10, 3), dtype=np.uint8)
    pred = np.zeros_like(target)
    target[0, 0, :4] = 200  # 4 smoke pixels in the target only
    pred[0, 1, :2] = 50  # 2 smoke pixels in the prediction only
    pred[0, 0, 0] = 190  # one target smoke pixel predicted as 190 (error 10 per channel)
    # Union region: 4 + 2 = 6 pixels x 3 channels. Errors: 10 (1 px), 200 (3 px), 50 (2 px), per channel.
    expected_mse = (10**2 + 3 * 200**2 + 2 * 50**2) * 3 / (6 * 3)
    np.testing.assert_allclose(psnr_smoke(pred, target), [10 * math.log10(255**2 / expected_mse)])
    # Whole-frame PSNR averages the same error over all 100 pixels instead.
    np.testing.assert_allclose(mse(pred, target), [expected_mse * 6 / 100])


def test_psnr_smoke_is_nan_without_smoke():
    dark = np.full((2, 8, 8, 3), SMOKE_THRESHOLD_U8, dtype=np.uint8)  # at the threshold: not smoke
    out = psnr_smoke(dark, np.zeros_like(dark))
    assert np.all(np.isnan(out))


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_scikit_image(seed):
    target = _random_frames((3, 32, 32, 3), seed)
    noise = np.random.default_rng(seed + 10).integers(-40, 41, size=target.shape)
    pred = np.clip(target.astype(int) + noise, 0, 255).astype(np.uint8)
    pred[1] = target[1]  # an identical pair: SSIM exactly 1
    ours = ssim(pred, target)
    reference = [
        structural_similarity(
            p, t, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        for p, t in zip(pred, target)
    ]
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    assert ours[1] == pytest.approx(1.0)


def test_ssim_of_smooth_smoke_like_frames_matches_scikit_image():
    yy, xx = np.mgrid[0:64, 0:64]
    blob = np.exp(-((xx - 30) ** 2 + (yy - 40) ** 2) / 80.0)
    target = (np.stack([blob * 60, blob * 80, blob * 120], -1)).astype(np.uint8)
    pred = np.roll(target, 3, axis=1)
    reference = structural_similarity(
        pred, target, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(pred, target) == pytest.approx(reference, abs=1e-6)


def test_bad_inputs_are_rejected():
    frames = _random_frames((2, 8, 8, 3), 0)
    with pytest.raises(TypeError):
        mse(frames.astype(np.float32), frames)
    with pytest.raises(ValueError):
        psnr(frames[..., :2], frames[..., :2])
    with pytest.raises(ValueError):
        mse(frames, _random_frames((3, 8, 8, 3), 1))
