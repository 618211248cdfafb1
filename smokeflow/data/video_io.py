"""Video files (.mp4 .webm .avi .mov .mkv via imageio's ffmpeg plugin, .gif via imageio's pillow plugin).

``read_video`` -> uint8 [T,H,W,3]; ``write_video`` writes .gif or .mp4 (and other ffmpeg containers).
GIF is palette based (<= 256 colours per frame) and H.264 is lossy, so neither round trip is bit exact:
datasets meant to be read back exactly are stored as PNG frames or npz.
"""

from __future__ import annotations

import math
import os
import warnings

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageSequence

from smokeflow.data.image_io import to_rgb_uint8
from smokeflow.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".gif", ".webm", ".avi", ".mov", ".mkv")


def is_video_file(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(VIDEO_EXTENSIONS)


def _read_gif(path: str) -> np.ndarray:
    """GIF frames as uint8 [T,H,W,3], one per display interval.

    GIF writers (Pillow included) merge identical consecutive frames into one frame shown longer; to
    give back a constant frame rate, a frame shown k times the shortest duration is repeated k times
    (unless that would more than quadruple the clip, e.g. a long pause on a title frame).
    """
    frames, durations = [], []
    with Image.open(path) as gif:
        for frame in ImageSequence.Iterator(gif):
            durations.append(frame.info.get("duration") or 0)
            # RGBA so that transparent pixels composite on black instead of showing the palette colour.
            frames.append(to_rgb_uint8(frame.convert("RGBA")))
    repeats = [1] * len(frames)
    if all(d > 0 for d in durations):
        base = min(durations)
        candidate = [max(1, round(d / base)) for d in durations]
        if sum(candidate) <= 4 * len(frames):
            repeats = candidate
    return np.stack([f for f, k in zip(frames, repeats) for _ in range(k)])


def _iter_ffmpeg(path: str):
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # imageio warns about unknown frame counts; we check below
        for frame in iio.imiter(path, plugin="FFMPEG"):
            count += 1
            yield to_rgb_uint8(frame)
        meta = iio.immeta(path, plugin="FFMPEG")
    if count == 0:
        raise DataError(path, "video contains no frames")
    # The container header states the duration; a file cut short decodes to fewer frames than that.
    duration, fps = meta.get("duration"), meta.get("fps")
    if duration and fps and math.isfinite(duration) and math.isfinite(fps):
        expected = duration * fps
        if count < expected - max(2.0, 0.05 * expected):
            raise DataError(path, f"truncated video: decoded {count} frames but the header "
                                  f"promises about {expected:.0f}")


def _check_video_path(path: str) -> None:
    if not os.path.isfile(path):
        raise DataError(path, "video file not found")
    if not is_video_file(path):
        raise DataError(path, f"not a supported video file (expected one of {', '.join(VIDEO_EXTENSIONS)})")


def _as_data_error(path: str, err: Exception) -> DataError:
    message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return DataError(path, f"unreadable or truncated video ({message})")


def iter_video(path: str | os.PathLike):
    """Yield the frames of a video one by one as uint8 [H,W,3] (long videos without holding them all).

    GIFs are decoded whole first (their frame timing needs every frame). Errors as :func:`read_video`.
    """
    path = os.fspath(path)
    _check_video_path(path)
    if path.lower().endswith(".gif"):
        yield from read_video(path)
        return
    try:
        yield from _iter_ffmpeg(path)
    except DataError:
        raise
    except Exception as err:  # imageio/ffmpeg raise a zoo of types (OSError, RuntimeError, IndexError...)
        raise _as_data_error(path, err) from None


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video file to uint8 [T,H,W,3] (0-255, RGB).

    Raises :class:`DataError` naming the file when it is missing, unreadable, empty or truncated.
    """
    path = os.fspath(path)
    _check_video_path(path)
    try:
        if path.lower().endswith(".gif"):
            frames = _read_gif(path)
        else:
            frames = np.stack(list(_iter_ffmpeg(path)))
    except DataError:
        raise
    except Exception as err:  # imageio/ffmpeg raise a zoo of types (OSError, RuntimeError, IndexError...)
        raise _as_data_error(path, err) from None
    if frames.shape[0] == 0:
        raise DataError(path, "video contains no frames")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8) -> str:
    """Write uint8 [T,H,W,3] frames as a .gif (looping) or an ffmpeg video (.mp4 = H.264, high quality).

    Odd sizes are padded with black by one pixel for H.264 (it needs even dimensions). The file is
    written under a temporary name and renamed, so an interrupted write leaves no half file.
    Returns the path.
    """
    path = os.fspath(path)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T,H,W,3] frames, got {frames.dtype} {frames.shape}")
    ext = os.path.splitext(path)[1].lower()
    tmp = f"{path}.tmp{ext}"
    if ext == ".gif":
        # Pillow merges identical consecutive frames into one longer frame; _read_gif undoes that.
        iio.imwrite(tmp, frames, plugin="pillow", duration=1000.0 / fps, loop=0, optimize=False,
                    disposal=1)
    elif ext in VIDEO_EXTENSIONS:
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        codec = {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(ext, "libx264")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            iio.imwrite(tmp, frames, plugin="FFMPEG", fps=fps, codec=codec, quality=9,
                        macro_block_size=1, pixelformat="yuv420p", output_params=["-loglevel", "error"])
    else:
        raise ValueError(f"{path}: unsupported video extension {ext!r} (use .gif or .mp4)")
    os.replace(tmp, path)
    return path
