"""The users' frame naming: ``ROOT/<split>/<video>_frame_<NNNN>.png`` and ``ROOT/<split>_files.txt``.

One place for the pattern so that writers (the simulator, extraction) and readers agree exactly.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")

# <video>_frame_<NNNN>.<ext>; the video name may itself contain underscores. Numbers have >= 4 digits.
FRAME_NAME_RE = re.compile(r"^(?P<video>.+)_frame_(?P<index>\d{4,})\.(?P<ext>png|jpg|jpeg)$", re.IGNORECASE)


def frame_filename(video: str, index: int, ext: str = "png") -> str:
    """File name of frame ``index`` (0-based) of ``video``: ``<video>_frame_<NNNN>.png``."""
    return f"{video}_frame_{index:04d}.{ext}"


def split_list_path(root: str | os.PathLike, split: str) -> str:
    """Path of the optional list of video names of a split: ``ROOT/<split>_files.txt``."""
    return os.path.join(os.fspath(root), f"{split}_files.txt")


def write_video_pngs(split_dir: str | os.PathLike, video: str, frames: np.ndarray) -> list[str]:
    """Write ``frames`` (uint8 [T,H,W,3]) as lossless PNGs ``<video>_frame_<NNNN>.png`` into ``split_dir``.

    Returns the written paths. Each file is written to a temporary name first and renamed, so an
    interrupted write never leaves a truncated PNG under a real frame name.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T,H,W,3] frames, got {frames.dtype} {frames.shape}")
    os.makedirs(split_dir, exist_ok=True)
    paths = []
    for index, frame in enumerate(frames):
        path = os.path.join(os.fspath(split_dir), frame_filename(video, index))
        tmp = path + ".tmp"
        Image.fromarray(frame).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def write_split_list(root: str | os.PathLike, split: str, videos: list[str]) -> str:
    """Write ``ROOT/<split>_files.txt`` with one video name per line; returns its path."""
    path = split_list_path(root, split)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{v}\n" for v in videos))
    os.replace(tmp, path)
    return path
