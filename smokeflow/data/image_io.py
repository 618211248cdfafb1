"""Single images: decode any PNG/JPEG the users have into RGB uint8, and bring frames to the model's size.

Every frame that enters smokeflow goes through :func:`to_rgb_uint8` (colour conversion) and
:func:`resize_center_crop` (geometry), so all input forms (PNG layouts, videos, npz, uploads) agree.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageFile

from smokeflow.errors import DataError

# A truncated PNG/JPEG must be reported, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _composite_on_black(rgb: np.ndarray, alpha: np.ndarray, alpha_max: float) -> np.ndarray:
    """Premultiply ``rgb`` (float [H,W,3]) by ``alpha`` (float [H,W], 0..alpha_max): smoke on black."""
    return rgb * (alpha[..., None] / alpha_max)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _array_to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """numpy image -> uint8 [H,W,3]. Accepts [H,W], [H,W,1], [H,W,2] (gray+alpha), [H,W,3], [H,W,4].

    Value scale from the dtype: uint8 0-255, uint16 0-65535 (scaled by 255/65535), bool 0/1,
    float in [0, 1]. Alpha composites on black.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image [H,W], [H,W,1..4], got shape {array.shape}")
    if array.dtype == np.uint8:
        scale = 1.0
    elif array.dtype == np.uint16:
        scale = 255.0 / 65535.0
    elif array.dtype == np.bool_:
        scale = 255.0
    elif np.issubdtype(array.dtype, np.floating):
        scale = 255.0
    elif np.issubdtype(array.dtype, np.integer):
        # 32-bit integer images (PIL mode "I") carry 16-bit data in practice.
        scale = 255.0 / 65535.0 if array.max(initial=0) > 255 else 1.0
    else:
        raise ValueError(f"unsupported image dtype {array.dtype}")
    channels = array.shape[-1]
    if channels == 3 and array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    values = array.astype(np.float32) * scale
    if channels in (1, 2):
        rgb = np.repeat(values[..., :1], 3, axis=-1)
    else:
        rgb = values[..., :3]
    if channels in (2, 4):
        rgb = _composite_on_black(rgb, values[..., -1], 255.0)
    return _float_to_uint8(rgb)


def to_rgb_uint8(image) -> np.ndarray:
    """Convert a PIL image or a numpy array to RGB uint8 [H,W,3] (0-255).

    - grayscale (L, 1, I;16, I, F) -> replicated to 3 channels; 16-bit scaled to 8 bits (x 255/65535);
    - palette (P, PA) -> expanded through its palette (transparency honoured);
    - RGBA / LA -> composited on black (smoke on black: colour x alpha), not on white;
    - CMYK / YCbCr / HSV / LAB -> converted by PIL.
    """
    if isinstance(image, np.ndarray):
        return _array_to_rgb_uint8(image)
    if not isinstance(image, Image.Image):
        return _array_to_rgb_uint8(np.asarray(image))
    mode = image.mode
    if mode == "P" or mode == "PA":
        # Palette images may carry transparency in the palette: expand to RGBA to keep it.
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in ("RGB", "RGBA", "L", "LA"):
        return _array_to_rgb_uint8(np.asarray(image))
    if mode == "1":
        return _array_to_rgb_uint8(np.asarray(image, dtype=np.bool_))
    if mode.startswith("I;16"):
        return _array_to_rgb_uint8(np.asarray(image).astype(np.uint16))
    if mode == "I":
        return _array_to_rgb_uint8(np.asarray(image, dtype=np.int64))
    if mode == "F":
        data = np.asarray(image, dtype=np.float32)
        # Float images have no fixed scale: treat <= 1 as [0, 1], else as 0-255.
        return _array_to_rgb_uint8(data if data.max(initial=0) <= 1.0 else data / 255.0)
    if mode == "RGBa":  # premultiplied alpha: already "on black"
        return np.asarray(image.convert("RGBA"))[..., :3].copy()
    return np.asarray(image.convert("RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode one PNG/JPEG file to RGB uint8 [H,W,3].

    Raises :class:`DataError` naming the file when it is missing, not an image, or truncated.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_uint8(image)
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(path, f"unreadable or truncated image ({err})") from None


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image from its header only (no pixel decoding)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(path, f"unreadable image header ({err})") from None
    return height, width


def _resize_crop_one(frame: np.ndarray, size: int) -> np.ndarray:
    height, width = frame.shape[:2]
    if height == size and width == size:
        return frame
    scale = size / min(height, width)
    new_w = max(size, round(width * scale))
    new_h = max(size, round(height * scale))
    if (new_h, new_w) != (height, width):
        # BOX = area averaging when shrinking (no aliasing of thin smoke filaments); when enlarging
        # a smaller-than-64 frame, bilinear avoids blocky steps.
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        frame = np.asarray(Image.fromarray(frame).resize((new_w, new_h), resample=resample))
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return frame[top:top + size, left:left + size]


def resize_center_crop(frames: np.ndarray, size: int = 64) -> np.ndarray:
    """Area-resize the shorter side to ``size``, then centre-crop to ``size`` x ``size``.

    frames: uint8 [T,H,W,3] or [H,W,3]. Returns uint8 [T,size,size,3] (a single frame gets T=1).
    Frames already ``size`` x ``size`` pass through unchanged (bit for bit).
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 [T,H,W,3] or [H,W,3], got {frames.dtype} {frames.shape}")
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        out[t] = _resize_crop_one(frame, size)
    return out
