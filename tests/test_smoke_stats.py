"""Smoke statistics on frames whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from smokeflow.metrics.smoke_stats import (
    STATISTICS,
    frame_change,
    smoke_area,
    smoke_centroid,
    smoke_mass,
    smoke_sharpness,
    smoke_statistics,
)


def _frame_with_pixels(pixels, size=8):
    """A black frame with given ((y, x), (r, g, b)) pixels."""
    frame = np.zeros((size, size, 3), dtype=np.uint8)
    for (y, x), rgb in pixels:
        frame[y, x] = rgb
    return frame


def test_mass_area_and_centroid_by_hand():
    frame = _frame_with_pixels([((1, 2), (255, 255, 255)), ((5, 6), (51, 102, 153))])
    # intensities: 1.0 and (51+102+153)/3/255 = 0.4
    assert smoke_mass(frame) == pytest.approx(1.4)
    assert smoke_area(frame) == pytest.approx(2 / 64)
    x, y = smoke_centroid(frame)
    assert x == pytest.approx((2 * 1.0 + 6 * 0.4) / 1.4)
    assert y == pytest.approx((1 * 1.0 + 5 * 0.4) / 1.4)


def test_pixels_below_the_smoke_threshold_do_not_count():
    frame = _frame_with_pixels([((0, 0), (10, 10, 10))])  # below the shared threshold (12): noise on black
    assert smoke_mass(frame) == 0.0 and smoke_area(frame) == 0.0
    x, y = smoke_centroid(frame)
    assert np.isnan(x) and np.isnan(y) and np.isnan(smoke_sharpness(frame))


def test_sharpness_of_a_ramp_is_its_slope_and_blur_lowers_it():
    ramp = np.tile((20 + 3 * np.arange(16)).astype(np.uint8)[None, :, None], (16, 1, 3))  # +3 per pixel in x
    assert smoke_sharpness(ramp) == pytest.approx(3.0)
    edge = np.zeros((16, 16, 3), dtype=np.uint8)
    edge[:, 8:] = 200
    soft = edge.copy()
    soft[:, 7], soft[:, 8], soft[:, 9] = 50, 100, 150
    # Hard edge: smoke columns 8..15, gradient 100 on column 8 only -> sqrt(100**2 / 8).
    assert smoke_sharpness(edge) == pytest.approx(np.sqrt(100**2 / 8))
    assert smoke_sharpness(soft) < smoke_sharpness(edge)


def test_frame_change_with_and_without_previous_frame():
    frames = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    frames[1] = 6
    frames[2] = 6
    frames[2, 0, 0] = 54  # one of 16 pixels changes by 48 in every channel -> mean 3
    np.testing.assert_allclose(frame_change(frames)[1:], [6.0, 3.0])
    assert np.isnan(frame_change(frames)[0])
    previous = np.full((4, 4, 3), 2, dtype=np.uint8)
    np.testing.assert_allclose(frame_change(frames, previous), [2.0, 6.0, 3.0])
    # Leading sample dims are kept: [K, T, H, W, 3] with one previous frame for all samples.
    stacked = np.stack([frames, frames])
    assert frame_change(stacked, previous).shape == (2, 3)


def test_smoke_statistics_shapes_and_a_rising_blob():
    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    for t in range(4):
        frames[t, 20 - 4 * t : 24 - 4 * t, 10:14] = 120  # a 4x4 blob moving up 4 px per frame
    stats = smoke_statistics(frames)
    assert set(stats) == set(STATISTICS)
    assert all(v.shape == (4,) for v in stats.values())
    np.testing.assert_allclose(np.diff(stats["centroid_y"]), -4.0)
    np.testing.assert_allclose(stats["centroid_x"], 11.5)
    np.testing.assert_allclose(stats["mass"], 16 * 120 / 255)


def _blob(cy, cx, size=64):
    """A smooth two-lobed smoke blob centred near (cy, cx) (floats allowed), uint8 [size, size, 3]."""
    yy, xx = np.mgrid[0:size, 0:size]
    body = np.exp(-((yy - cy) ** 2 / (2 * 6**2) + (xx - cx) ** 2 / (2 * 4**2)))
    lobe = 0.3 * np.exp(-((yy - cy - 5) ** 2 + (xx - cx + 4) ** 2) / (2 * 2.5**2))
    return np.repeat((np.clip(body + lobe, 0, 1) * 220)[..., None], 3, axis=-1).astype(np.uint8)


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0, 2.0])
def test_rise_and_drift_read_a_known_displacement(shift):
    """Optical flow of a blob moved up by `shift` and right by shift / 2 pixels reads them within 4 %."""
    from smokeflow.metrics.smoke_motion import smoke_motion

    frames = np.stack([_blob(36, 30), _blob(36 - shift, 30 + shift / 2)])
    drift, rise = smoke_motion(frames)
    assert np.isnan(rise[0]) and np.isnan(drift[0])  # nothing before the first frame
    assert rise[1] == pytest.approx(shift, abs=0.04 * shift + 1e-6)
    assert drift[1] == pytest.approx(shift / 2, abs=0.04 * shift / 2 + 1e-6)


def test_motion_uses_the_previous_frame_batches_and_is_nan_without_smoke():
    from smokeflow.metrics.smoke_motion import smoke_motion

    video = np.stack([_blob(40 - k, 30) for k in range(4)])  # rises 1 px per frame
    batch = np.stack([video, video[:, :, ::-1]])  # and its mirror image: the same rise, opposite drift
    drift, rise = smoke_motion(batch[:, 1:], previous=batch[:, 0])
    assert rise.shape == drift.shape == (2, 3)
    np.testing.assert_allclose(rise, 1.0, atol=0.03)
    np.testing.assert_allclose(drift[0], -drift[1], atol=1e-9)  # mirror symmetry
    black = np.zeros((2, 16, 16, 3), np.uint8)
    assert np.isnan(smoke_motion(black)[1][1])
    stats = smoke_statistics(video[1:], previous=video[0])
    np.testing.assert_allclose(stats["rise"], 1.0, atol=0.03)
    with pytest.raises(ValueError, match="uint8"):
        smoke_motion(video[0])
