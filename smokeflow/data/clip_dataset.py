"""Training clips: windows of ``frames_per_sample`` frames taken every ``skip_frames + 1`` frames.

How items map to videos (``windows``):

- ``"random"`` (default, for training): ONE item per video per epoch; item ``i`` is a window of video
  ``i`` starting at a random frame, flipped horizontally with probability 1/2 when
  ``random_horizontal_flip``. With ``seed=None`` every access draws fresh randomness (safe with
  DataLoader workers: each draws from OS entropy); with an integer ``seed`` the window and flip are a
  pure function of (seed, epoch, index) — call :meth:`set_epoch` each epoch to get new windows.
  Short and long videos are thus seen equally often, like RIVER's per-video sampling.
- ``"all"`` (for evaluation, or every frame with ``frames_per_sample=1``): one item per possible window
  of every video, in video then start order; flips (if enabled) still follow (seed, epoch, index).
- ``"first"`` (for evaluation): one item per video, the window starting at its first frame.

Items are float32 tensors [T,3,size,size] in [-1,1] (T = frames_per_sample). Frames are read lazily per
item (only the T files of a PNG window are decoded), so the dataset is cheap to pickle into workers.
"""

from __future__ import annotations

import collections
import os

import numpy as np
import torch

from smokeflow.data.clip_windows import WINDOW_MODES, ClipWindows, clip_span
from smokeflow.data.dataset_index import KIND_FRAMES, VideoEntry
from smokeflow.data.layouts import list_videos, read_video_entry
from smokeflow.errors import DataError



def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T,H,W,3] (0-255) -> float32 [T,3,H,W] in [-1,1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return tensor.div_(127.5).sub_(1.0)


class ClipDataset(torch.utils.data.Dataset):
    """Clips of one split of a dataset in any layout (see :mod:`smokeflow.data.dataset_index`).

    root, split: the dataset root and split name. frames_per_sample: T, frames per clip.
    skip_frames: frames skipped between two clip frames (a clip spans (T-1)*(skip+1)+1 video frames).
    random_horizontal_flip: flip the whole clip left-right with probability 1/2.
    size: output height = width. windows: "random" | "all" | "first" (see module doc). seed: None or int.
    max_videos: use only the first N videos (quick experiments).

    Raises DataError naming the video when one is shorter than a clip.
    """

    def __init__(self, root: str | os.PathLike, split: str, frames_per_sample: int, skip_frames: int = 0,
                 random_horizontal_flip: bool = False, size: int = 64, windows: str = "random",
                 seed: int | None = None, max_videos: int | None = None):
        if frames_per_sample < 1:
            raise ValueError(f"frames_per_sample must be >= 1, got {frames_per_sample}")
        if skip_frames < 0:
            raise ValueError(f"skip_frames must be >= 0, got {skip_frames}")
        if windows not in WINDOW_MODES:
            raise ValueError(f"windows must be one of {WINDOW_MODES}, got {windows!r}")
        self.root = os.fspath(root)
        self.split = split
        self.frames_per_sample = frames_per_sample
        self.skip_frames = skip_frames
        self.random_horizontal_flip = random_horizontal_flip
        self.size = size
        self.windows = windows
        self.seed = seed
        self.epoch = 0
        videos = list_videos(self.root, split)
        if max_videos is not None:
            videos = videos[:max_videos]
        self.videos: list[VideoEntry] = videos
        self.span = clip_span(frames_per_sample, skip_frames)
        short = [v for v in videos if v.num_frames < self.span]
        if short:
            v = short[0]
            where = v.frame_paths[0] if v.kind == KIND_FRAMES else v.source
            raise DataError(where, f"video '{v.name}' has {v.num_frames} frames, shorter than one clip of "
                                   f"{self.span} frames (frames_per_sample={frames_per_sample}, "
                                   f"skip_frames={skip_frames}); {len(short)} of {len(videos)} videos of "
                                   f"split '{split}' are too short")
        self._planner = ClipWindows([v.num_frames for v in videos], frames_per_sample, skip_frames, windows,
                                    random_horizontal_flip, seed)
        # Decoded video files (not PNG layouts), most recently used last: a video file must be decoded
        # whole, so keep a few around for the next windows of the same video.
        self._decoded: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._planner)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch for seeded windows/flips (like DistributedSampler.set_epoch)."""
        self.epoch = self._planner.epoch = int(epoch)

    def clip_plan(self, index: int) -> tuple[int, list[int], bool]:
        """(video index, frame indices in that video, flip) of item ``index``."""
        return self._planner.plan(index)

    def _read(self, video: int, frame_indices: list[int]) -> np.ndarray:
        entry = self.videos[video]
        if entry.kind == KIND_FRAMES:
            return read_video_entry(entry, self.size, frame_indices)
        if video not in self._decoded:
            self._decoded[video] = read_video_entry(entry, self.size)
            while len(self._decoded) > 8:
                self._decoded.popitem(last=False)
        self._decoded.move_to_end(video)
        return self._decoded[video][frame_indices]

    def clip_uint8(self, index: int) -> np.ndarray:
        """Item ``index`` as uint8 [T,size,size,3] (0-255), flip applied."""
        video, frame_indices, flip = self.clip_plan(index)
        frames = self._read(video, frame_indices)
        return np.ascontiguousarray(frames[:, :, ::-1]) if flip else frames

    def __getitem__(self, index: int) -> torch.Tensor:
        """float32 [T,3,size,size] in [-1,1]."""
        return frames_to_tensor(self.clip_uint8(index))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_decoded"] = collections.OrderedDict()  # don't ship decoded videos to workers
        return state
