"""Dataset layouts: list the videos of a split and read their frames, whatever form they are stored in.

``list_videos(root, split)`` -> [VideoEntry] (see :mod:`smokeflow.data.dataset_index` for the accepted
forms and the cached index); ``read_video_entry(entry, size=64)`` -> uint8 [T,size,size,3].
Reading never writes anything; every problem raises :class:`~smokeflow.errors.DataError` naming the file.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from smokeflow.data.dataset_index import (KIND_FRAMES, KIND_NPZ, KIND_VIDEO, VideoEntry, list_split,
                                          npz_frames_shape)
from smokeflow.data.image_io import read_image, resize_center_crop
from smokeflow.data.video_io import read_video
from smokeflow.errors import DataError

__all__ = ["VideoEntry", "list_videos", "read_video_entry", "read_split_frames"]


def list_videos(root: str | os.PathLike, split: str, use_cache: bool = True) -> list[VideoEntry]:
    """Videos of ``ROOT/<split>`` in any accepted layout (with ``_files.txt`` selection when present).

    Indexes from file names only and caches the index outside the dataset, so a 160k-frame split lists
    in about a second cold and faster warm. Raises DataError for a missing/empty split and bad layouts.
    """
    return list_split(root, split, use_cache=use_cache)


@functools.lru_cache(maxsize=2)
def _load_npz_frames(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """The whole ``frames`` array of an npz (kept for the next call: a dataset reads many sequences of
    one file; the stat key in the arguments drops the copy when the file changes)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["frames"]
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise DataError(path, f"unreadable or truncated npz ({err})") from None


def _npz_sequence(entry: VideoEntry) -> np.ndarray:
    try:
        st = os.stat(entry.source)
    except FileNotFoundError:
        raise DataError(entry.source, "npz file not found") from None
    npz_frames_shape(entry.source)  # validates dtype/shape from the header with a clear message
    frames = _load_npz_frames(entry.source, st.st_mtime_ns, st.st_size)
    return frames if entry.sequence_index < 0 else frames[entry.sequence_index]


def _check_length(entry: VideoEntry, frames: np.ndarray, path: str) -> None:
    if frames.shape[0] != entry.num_frames:
        raise DataError(path, f"video '{entry.name}' has {frames.shape[0]} frames but was indexed with "
                              f"{entry.num_frames}; the file changed while in use")


def _read_frame_files(entry: VideoEntry, indices: list[int]) -> np.ndarray:
    frames = []
    first_shape, first_path = None, None
    for i in indices:
        path = os.path.join(entry.source, entry.frame_files[i])
        frame = read_image(path)
        if first_shape is None:
            first_shape, first_path = frame.shape, path
        elif frame.shape != first_shape:
            raise DataError(path, f"frame size {frame.shape[1]}x{frame.shape[0]} differs from "
                                  f"{first_shape[1]}x{first_shape[0]} of {first_path} (frames of one "
                                  f"video must share one size)")
        frames.append(frame)
    return np.stack(frames)


def read_video_entry(entry: VideoEntry, size: int = 64, frame_indices=None) -> np.ndarray:
    """Frames of one video as uint8 [T,size,size,3] (area resize of the shorter side + centre crop).

    frame_indices: optional list of frame numbers (0-based, in the video) to read only those — for
    PNG layouts only those files are decoded. Raises DataError naming the file for unreadable,
    truncated or mixed-size frames.
    """
    indices = list(range(entry.num_frames)) if frame_indices is None else [int(i) for i in frame_indices]
    if any(i < 0 or i >= entry.num_frames for i in indices):
        raise DataError(entry.source, f"frame index out of range for video '{entry.name}' "
                                      f"({entry.num_frames} frames): {indices}")
    if entry.kind == KIND_FRAMES:
        frames = _read_frame_files(entry, indices)
    elif entry.kind == KIND_VIDEO:
        frames = read_video(entry.source)
        _check_length(entry, frames, entry.source)
        frames = frames[indices]
    elif entry.kind == KIND_NPZ:
        frames = _npz_sequence(entry)
        _check_length(entry, frames, entry.source)
        frames = frames[indices]
    else:
        raise ValueError(f"unknown video kind {entry.kind!r}")
    return resize_center_crop(np.ascontiguousarray(frames), size)


def read_split_frames(root: str | os.PathLike, split: str, size: int = 64, max_videos: int | None = None,
                      progress: bool = False) -> tuple[np.ndarray, list[VideoEntry]]:
    """All videos of a split stacked as uint8 [N,T,size,size,3], with their entries.

    Videos of different lengths are cut to the shortest length (T = min num_frames).
    """
    entries = list_videos(root, split)
    if max_videos is not None:
        entries = entries[:max_videos]
    length = min(e.num_frames for e in entries)
    iterator = entries
    if progress:
        from tqdm import tqdm
        iterator = tqdm(entries, desc=f"reading {split}", unit="video")
    frames = np.stack([read_video_entry(e, size, range(length)) for e in iterator])
    return frames, entries
