"""One input the user gives (an upload, a ``--input`` path) -> frames uint8 [T,size,size,3].

Accepted: a video file (.mp4 .gif .webm .avi .mov .mkv), a folder of PNG/JPEG frames of one video,
a single PNG/JPEG image (T=1), an .npz with ``frames`` [T,H,W,3] or [N,T,H,W,3] (pick a sequence with
``sequence``), or an .npy array of the same shapes.
"""

from __future__ import annotations

import os

import numpy as np

from smokeflow.data.dataset_index import scan_frame_folder
from smokeflow.data.image_io import IMAGE_EXTENSIONS, read_image, resize_center_crop, to_rgb_uint8
from smokeflow.data.layouts import read_video_entry
from smokeflow.data.video_io import VIDEO_EXTENSIONS, is_video_file, read_video
from smokeflow.errors import DataError


def _array_frames(path: str, array: np.ndarray, sequence: int | None) -> np.ndarray:
    """Validate a [T,H,W,C] / [N,T,H,W,C] array from an npz/npy and return uint8 [T,H,W,3]."""
    if array.ndim == 5:
        if sequence is None:
            if array.shape[0] != 1:
                raise DataError(path, f"'frames' holds {array.shape[0]} sequences [N,T,H,W,3]; choose one "
                                      f"(sequence=0..{array.shape[0] - 1})")
            sequence = 0
        if not 0 <= sequence < array.shape[0]:
            raise DataError(path, f"sequence {sequence} out of range (0..{array.shape[0] - 1})")
        array = array[sequence]
    elif array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4):
        array = array[..., None]  # [T,H,W] grayscale
    if array.ndim != 4 or array.shape[-1] not in (1, 2, 3, 4):
        raise DataError(path, f"'frames' must be [T,H,W,3] or [N,T,H,W,3], got shape {list(array.shape)}")
    if array.shape[0] == 0:
        raise DataError(path, "'frames' holds no frames")
    if not (array.dtype == np.uint8 or array.dtype == np.uint16 or np.issubdtype(array.dtype, np.floating)):
        raise DataError(path, f"'frames' must be uint8 (0-255), got {array.dtype}")
    if array.dtype == np.uint8 and array.shape[-1] == 3:
        return np.ascontiguousarray(array)
    return np.stack([to_rgb_uint8(f) for f in array])


def _read_array_file(path: str, sequence: int | None) -> np.ndarray:
    try:
        if path.lower().endswith(".npy"):
            array = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as data:
                if "frames" not in data.files:
                    raise DataError(path, f"npz has no 'frames' array (arrays: {', '.join(data.files) or 'none'})")
                array = data["frames"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError) as err:
        raise DataError(path, f"unreadable or truncated array file ({err})") from None
    return _array_frames(path, array, sequence)


def load_frames(path: str | os.PathLike, size: int = 64, sequence: int | None = None) -> np.ndarray:
    """Read any single input and return uint8 [T,size,size,3] (area resize + centre crop).

    path: a video file, a folder of frames of one video, one image, an .npz/.npy. ``sequence`` picks
    one sequence of an [N,T,H,W,3] array. Raises DataError naming the file and the problem.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(path, "input not found")
    if os.path.isdir(path):
        frames = read_video_entry(scan_frame_folder(path), size=size)
        return frames
    lower = path.lower()
    if is_video_file(path):
        frames = read_video(path)
    elif lower.endswith(IMAGE_EXTENSIONS):
        frames = read_image(path)[None]
    elif lower.endswith((".npz", ".npy")):
        frames = _read_array_file(path, sequence)
    else:
        raise DataError(path, f"unsupported input type (expected a video {'/'.join(VIDEO_EXTENSIONS)}, "
                              f"an image {'/'.join(IMAGE_EXTENSIONS)}, a folder of frames, or .npz/.npy)")
    return resize_center_crop(frames, size)
