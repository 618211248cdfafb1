"""Image decoding and geometry: every colour mode the users may have becomes the right RGB uint8."""

import os

import numpy as np
import pytest
from PIL import Image

from smokeflow.data.image_io import read_image, read_image_size, resize_center_crop, to_rgb_uint8
from smokeflow.errors import DataError


def test_grayscale_png_is_replicated_to_rgb(tmp_path):
    gray = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 256
    path = tmp_path / "gray.png"
    Image.fromarray(gray.astype(np.uint8), mode="L").save(path)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[...] = (200, 100, 50, 128)
    rgba[0, 0] = (255, 255, 255, 0)      # fully transparent white -> black, not white
    rgba[1, 1] = (10, 20, 30, 255)       # opaque -> unchanged
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    rgb = read_image(path)
    np.testing.assert_array_equal(rgb[0, 0], (0, 0, 0))
    np.testing.assert_array_equal(rgb[1, 1], (10, 20, 30))
    expected = np.rint(np.array([200, 100, 50]) * 128 / 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb[2, 2], expected)


def test_gray_alpha_is_composited_on_black():
    la = Image.fromarray(np.dstack([np.full((4, 4), 200, np.uint8), np.full((4, 4), 51, np.uint8)]), mode="LA")
    np.testing.assert_array_equal(to_rgb_uint8(la)[0, 0], (40, 40, 40))


def test_palette_png_expands_colours_and_transparency(tmp_path):
    index = np.zeros((6, 6), np.uint8)
    index[:, 3:] = 1
    index[0, 0] = 2
    image = Image.fromarray(index, mode="P")
    image.putpalette([30, 60, 90, 120, 130, 140, 255, 255, 255] + [0] * (256 * 3 - 9))
    image.info["transparency"] = 2
    path = tmp_path / "palette.png"
    image.save(path, transparency=2)
    rgb = read_image(path)
    np.testing.assert_array_equal(rgb[1, 0], (30, 60, 90))
    np.testing.assert_array_equal(rgb[1, 4], (120, 130, 140))
    np.testing.assert_array_equal(rgb[0, 0], (0, 0, 0))  # transparent palette entry -> black


def test_16bit_grayscale_png_is_scaled_to_8bit(tmp_path):
    values = (np.arange(16, dtype=np.uint16) * 257 * 17).reshape(4, 4)  # 0, 17*257, ..., 255*257
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really stored as 16 bits
    rgb = read_image(path)
    np.testing.assert_array_equal(rgb[..., 0], (np.arange(16) * 17).reshape(4, 4))
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_16bit_and_float_arrays():
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[0, 0] = (65535, 257 * 100, 0)
    np.testing.assert_array_equal(to_rgb_uint8(rgb16)[0, 0], (255, 100, 0))
    floats = np.full((2, 2, 3), 0.5, np.float32)
    np.testing.assert_array_equal(to_rgb_uint8(floats)[0, 0], (128, 128, 128))


def test_jpeg_reads_as_rgb(tmp_path):
    path = tmp_path / "frame.jpg"
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(path, quality=95)
    rgb = read_image(path)
    assert rgb.shape == (20, 30, 3) and abs(int(rgb.mean()) - 120) <= 2
    assert read_image_size(path) == (20, 30)


def test_resize_is_area_average_then_centre_crop():
    # 128 x 256 made of constant 2x2 blocks: an area resize to 64 x 128 gives exactly the blocks.
    blocks = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    big = blocks.repeat(2, axis=0).repeat(2, axis=1)
    out = resize_center_crop(big, 64)
    assert out.shape == (1, 64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], blocks[:, 32:96])


def test_resize_keeps_64_frames_bit_exact_and_enlarges_small_ones():
    frames = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_center_crop(frames, 64), frames)
    small = np.random.default_rng(2).integers(0, 256, (2, 30, 50, 3), dtype=np.uint8)
    assert resize_center_crop(small, 64).shape == (2, 64, 64, 3)


def test_truncated_png_names_the_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        read_image(path)
    assert os.fspath(path) in str(err.value) and "truncated" in str(err.value)
