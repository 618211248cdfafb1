"""The advected (motion-compensated) warm start: image shift, the sampler hook, the smoke's velocity and the
checkpoint's motion prior, with answers known by construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from smokeflow.data.smoke_velocity import (
    MOTION_PRIOR_FILE,
    SmokeVelocity,
    describe_warm_start_motion,
    estimate_velocity,
    measure_motion_prior,
    parse_warm_start_motion,
    read_motion_prior,
    write_motion_prior,
)
from smokeflow.errors import CheckpointError
from smokeflow.flow.advected_warm_start import AdvectedWarmStart, shift_images


def test_whole_pixel_shifts_move_rows_and_columns_exactly_and_repeat_the_edge():
    image = torch.arange(5 * 6, dtype=torch.float32).reshape(1, 1, 5, 6)
    up = shift_images(image, drift=0.0, rise=1.0)
    torch.testing.assert_close(up[0, 0, :4], image[0, 0, 1:])  # row y shows what was at y + 1
    torch.testing.assert_close(up[0, 0, 4], image[0, 0, 4])  # the bottom row enters from the edge
    right = shift_images(image, drift=2.0, rise=0.0)
    torch.testing.assert_close(right[0, 0, :, 2:], image[0, 0, :, :4])
    torch.testing.assert_close(right[0, 0, :, 0], image[0, 0, :, 0])
    assert shift_images(image, 0.0, 0.0) is image


def test_sub_pixel_shift_of_a_ramp_is_linear_and_channels_and_batch_are_kept():
    ramp = torch.arange(8, dtype=torch.float32).reshape(1, 1, 8, 1).expand(2, 3, 8, 4).contiguous()
    moved = shift_images(ramp, drift=0.0, rise=0.25)
    assert moved.shape == ramp.shape
    # PyTorch's bicubic kernel (a = -0.75) is sharp but not exact on a ramp: inside the image (all four taps in,
    # rows 1-5) a quarter-pixel shift reads 0.297; a half-pixel shift is exact by symmetry.
    torch.testing.assert_close(moved[..., 1:6, :], ramp[..., 1:6, :] + 0.25, atol=0.05, rtol=0)
    half = shift_images(ramp, drift=0.0, rise=0.5)
    torch.testing.assert_close(half[..., 1:6, :], ramp[..., 1:6, :] + 0.5)
    assert float(moved.min()) >= 0.0 and float(moved.max()) <= 7.0  # never beyond the images' own range
    spike = torch.zeros(1, 1, 8, 8)
    spike[..., 4, 4] = 1.0
    assert float(shift_images(spike, 0.5, 0.5).min()) >= 0.0  # the cubic's negative lobes are clamped
    with pytest.raises(ValueError, match="B, C, H, W"):
        shift_images(ramp[0], 0.0, 1.0)


def test_advected_warm_start_decodes_shifts_and_encodes():
    decoded, encoded = [], []

    def decode(z):
        decoded.append(z)
        return z * 2.0

    def encode(images):
        encoded.append(images)
        return images / 2.0

    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = AdvectedWarmStart(decode, encode, drift=0.0, rise=1.0)(z)
    torch.testing.assert_close(out[:, :, :7], z[:, :, 1:])
    assert len(decoded) == len(encoded) == 1
    still = AdvectedWarmStart(decode, encode, drift=0.0, rise=0.0)
    assert not still.moves and still(z) is z and len(decoded) == 1  # no shift: RIVER's warm start, no codec


def _blob(cy, cx, size=64):
    """A smooth smoke blob centred at (cy, cx) (floats allowed): uint8 [size, size, 3]."""
    yy, xx = np.mgrid[0:size, 0:size]
    body = np.exp(-((yy - cy) ** 2 / (2 * 6**2) + (xx - cx) ** 2 / (2 * 4**2)))
    return np.repeat((body * 200)[..., None], 3, axis=-1).astype(np.uint8)


def test_velocity_is_measured_on_the_observed_frames_else_the_prior():
    frames = np.stack([_blob(40 - t, 30 + 0.5 * t) for t in range(4)])  # up 1 px, right 0.5 px per frame
    prior = SmokeVelocity(0.0, 0.9, "prior")
    velocity = estimate_velocity(frames, prior)
    assert velocity.source == "observed"
    assert velocity.rise == pytest.approx(1.0, abs=0.05) and velocity.drift == pytest.approx(0.5, abs=0.05)
    assert estimate_velocity(frames[:1], prior) is prior  # one frame says nothing about motion
    assert estimate_velocity(np.zeros((3, 64, 64, 3), np.uint8), prior) is prior  # no smoke to measure
    assert estimate_velocity(frames[:1], None) is None
    with pytest.raises(ValueError, match="finite"):
        SmokeVelocity(math.nan, 1.0, "given")


def test_motion_prior_is_measured_on_a_split_written_atomically_and_read_back(tmp_path):
    from smokeflow.data.naming import write_video_pngs

    for v in range(3):
        write_video_pngs(tmp_path / "train", f"vid{v}", np.stack([_blob(44 - 2 * t, 20 + 10 * v) for t in range(5)]))
    prior = measure_motion_prior(tmp_path, "train")
    assert prior["videos"] == 3 and prior["pairs"] == 3 * 4
    assert prior["rise"] == pytest.approx(2.0, abs=0.1) and prior["drift"] == pytest.approx(0.0, abs=0.05)
    write_motion_prior(tmp_path, prior)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MOTION_PRIOR_FILE, "train"]  # no temporary left
    velocity = read_motion_prior(tmp_path)
    assert velocity == SmokeVelocity(prior["drift"], prior["rise"], "prior")
    assert "rise 2.0" in describe_warm_start_motion(velocity) and describe_warm_start_motion(None) == ""
    assert read_motion_prior(tmp_path / "elsewhere") is None and read_motion_prior(None) is None
    (tmp_path / MOTION_PRIOR_FILE).write_text(json.dumps({"drift": float("nan"), "rise": float("nan")}))
    assert read_motion_prior(tmp_path) is None  # a split without measurable smoke: no prior
    (tmp_path / MOTION_PRIOR_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=MOTION_PRIOR_FILE):
        read_motion_prior(tmp_path)


@pytest.mark.parametrize("text,expected", [("auto", "auto"), ("OFF", "off"), ("Prior", "prior"), ("0,1", (0.0, 1.0)),
                                           (" -0.5, 2 ", (-0.5, 2.0))])
def test_warm_start_motion_values_parse(text, expected):
    assert parse_warm_start_motion(text) == expected


@pytest.mark.parametrize("text", ["fast", "1", "1,2,3", "nan,1", "a,b"])
def test_bad_warm_start_motion_values_are_refused(text):
    with pytest.raises(ValueError, match="DRIFT,RISE"):
        parse_warm_start_motion(text)


def test_a_dataset_without_readable_frames_gives_a_warning_and_no_prior(tmp_path):
    from smokeflow.data.smoke_velocity import record_motion_prior

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.warns(UserWarning, match="RIVER's warm start"):
        assert record_motion_prior(str(run_dir), str(tmp_path / "no_such_dataset")) is None
    assert not (run_dir / MOTION_PRIOR_FILE).exists()


def test_shift_by_a_field_moves_each_pixel_by_its_own_displacement():
    image = torch.arange(6 * 8, dtype=torch.float32).reshape(1, 1, 6, 8)
    constant = torch.full((6, 8), 1.0)
    torch.testing.assert_close(shift_images(image, torch.zeros(6, 8), constant), shift_images(image, 0.0, 1.0))
    rise = torch.zeros(6, 8)
    rise[:, 4:] = 1.0  # only the right half rises
    moved = shift_images(image, np.zeros((6, 8)), rise)
    torch.testing.assert_close(moved[..., :4], image[..., :4])
    torch.testing.assert_close(moved[0, 0, :5, 4:], image[0, 0, 1:, 4:])
    with pytest.raises(ValueError, match="field"):
        shift_images(image, torch.zeros(3, 3), 0.0)


def test_the_motion_field_keeps_a_still_source_still_and_moves_the_rising_smoke():
    from smokeflow.metrics.smoke_motion import motion_field

    still_and_rising = [np.maximum(_blob(44, 14), _blob(44 - 2 * t, 48)) for t in range(2)]  # left holds, right rises 2
    drift, rise = motion_field(*still_and_rising)
    assert drift.shape == rise.shape == (64, 64)
    assert abs(rise[44, 14]) < 0.2 and rise[43, 48] == pytest.approx(2.0, abs=0.3)
    assert abs(drift[43, 48]) < 0.2
    assert motion_field(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)) is None
    velocity = estimate_velocity(np.stack(still_and_rising), None)
    assert velocity.has_field and velocity.rise == pytest.approx(1.0, abs=0.3)  # the mean of both blobs
    field_drift, field_rise = velocity.displacement()
    assert np.array_equal(field_rise, rise) and np.array_equal(field_drift, drift)
    assert SmokeVelocity(0.0, 1.0, "given").displacement() == (0.0, 1.0)
