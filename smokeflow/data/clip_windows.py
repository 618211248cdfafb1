"""Which frames make up clip ``index``: the window planning shared by the frame dataset
(:class:`~smokeflow.data.clip_dataset.ClipDataset`) and the latent dataset
(:class:`~smokeflow.data.latent_cache.LatentClipDataset`), so both sample clips identically.
"""

from __future__ import annotations

import numpy as np

WINDOW_MODES = ("random", "all", "first")


def clip_span(frames_per_sample: int, skip_frames: int) -> int:
    """Video frames one clip covers: (T-1)*(skip+1)+1."""
    return (frames_per_sample - 1) * (skip_frames + 1) + 1


class ClipWindows:
    """Plans clips over videos of ``num_frames`` frames each (every video must hold at least one clip).

    windows: "random" = one item per video, random start; "all" = one item per possible window;
    "first" = the window at the start of each video. With ``seed`` set, the start and the flip of item i
    depend only on (seed, epoch, i) — what makes resumed training and DDP ranks reproducible.
    """

    def __init__(self, num_frames: list[int], frames_per_sample: int, skip_frames: int, windows: str,
                 random_horizontal_flip: bool, seed: int | None):
        if windows not in WINDOW_MODES:
            raise ValueError(f"windows must be one of {WINDOW_MODES}, got {windows!r}")
        self.frames_per_sample = frames_per_sample
        self.skip_frames = skip_frames
        self.windows = windows
        self.random_horizontal_flip = random_horizontal_flip
        self.seed = seed
        self.epoch = 0
        self.span = clip_span(frames_per_sample, skip_frames)
        self.counts = np.array([n - self.span + 1 for n in num_frames], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])

    def __len__(self) -> int:
        return int(self.offsets[-1]) if self.windows == "all" else len(self.counts)

    def plan(self, index: int) -> tuple[int, list[int], bool]:
        """(video index, frame indices within that video, flip) of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        rng = np.random.default_rng() if self.seed is None else np.random.default_rng([self.seed, self.epoch, index])
        if self.windows == "random":
            video, start = index, int(rng.integers(0, self.counts[index]))
        elif self.windows == "first":
            video, start = index, 0
        else:
            video = int(np.searchsorted(self.offsets, index, side="right") - 1)
            start = int(index - self.offsets[video])
        flip = bool(self.random_horizontal_flip and rng.random() < 0.5)
        step = self.skip_frames + 1
        return video, [start + k * step for k in range(self.frames_per_sample)], flip
