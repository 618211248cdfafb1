"""ClipDataset: windows, skips, flips, value range, determinism, DataLoader workers."""

import os

import numpy as np
import pytest
import torch

from smokeflow.data.clip_dataset import ClipDataset
from smokeflow.data.naming import write_video_pngs


@pytest.fixture(autouse=True)
def private_index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKEFLOW_CACHE_DIR", os.fspath(tmp_path / "cache"))


def numbered_frames(video, num_frames, size=64):
    """Frame t of video v: red channel = 10*t + v (identifies the frame), green = a left->right ramp
    (shows flips), blue = 0."""
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = 10 * t + video
        frames[t, ..., 1] = np.linspace(0, 255, size).astype(np.uint8)[None, :]
    return frames


@pytest.fixture
def dataset_root(tmp_path):
    root = tmp_path / "data"
    for v, length in enumerate([12, 20, 9]):
        write_video_pngs(root / "train", f"video{v}", numbered_frames(v, length))
    return root


def frame_ids(clip):
    """clip float [T,3,H,W] in [-1,1] -> the red-channel frame ids [T]."""
    red = torch.round((clip[:, 0, 0, 0] + 1) * 127.5).long()
    return red.tolist()


def test_items_are_float_clips_in_range(dataset_root):
    ds = ClipDataset(dataset_root, "train", frames_per_sample=4, seed=0)
    assert len(ds) == 3 and [v.name for v in ds.videos] == ["video0", "video1", "video2"]
    clip = ds[1]
    assert clip.shape == (4, 3, 64, 64) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1
    assert clip[0, 1, 0, 0] == -1 and clip[0, 1, 0, -1] == 1  # the ramp spans the full range


def test_windows_respect_skip_frames(dataset_root):
    ds = ClipDataset(dataset_root, "train", frames_per_sample=3, skip_frames=3, seed=0)
    assert ds.span == 9
    for epoch in range(5):
        ds.set_epoch(epoch)
        for video in range(3):
            ids = frame_ids(ds[video])
            frames = [(i - video) // 10 for i in ids]
            assert [i % 10 for i in ids] == [video] * 3  # all from the item's own video
            assert frames[1] - frames[0] == 4 and frames[2] - frames[1] == 4
            assert 0 <= frames[0] and frames[-1] < ds.videos[video].num_frames


def test_seeded_windows_are_deterministic_and_change_with_epoch(dataset_root):
    a = ClipDataset(dataset_root, "train", 2, random_horizontal_flip=True, seed=7)
    b = ClipDataset(dataset_root, "train", 2, random_horizontal_flip=True, seed=7)
    assert torch.equal(a[1], b[1])
    starts = set()
    for epoch in range(10):
        a.set_epoch(epoch)
        starts.add(a.clip_plan(1)[1][0])
    assert len(starts) > 3  # new windows each epoch


def test_horizontal_flip_flips_the_whole_clip(dataset_root):
    ds = ClipDataset(dataset_root, "train", 4, random_horizontal_flip=True, seed=3)
    flips = []
    for epoch in range(20):
        ds.set_epoch(epoch)
        video, _, flip = ds.clip_plan(1)
        clip = ds[1]
        ramp_left = clip[:, 1, 0, 0]
        assert torch.all(ramp_left == (1.0 if flip else -1.0))  # every frame flipped the same way
        flips.append(flip)
    assert 0 < sum(flips) < 20
    no_flip = ClipDataset(dataset_root, "train", 4, random_horizontal_flip=False, seed=3)
    assert not any(no_flip.clip_plan(i)[2] for i in range(3))


def test_all_windows_mode_enumerates_every_window(dataset_root):
    ds = ClipDataset(dataset_root, "train", 5, skip_frames=1, windows="all")
    # span 9: windows per video = length - 8
    assert len(ds) == (12 - 8) + (20 - 8) + (9 - 8)
    plans = [ds.clip_plan(i) for i in range(len(ds))]
    assert plans[0] == (0, [0, 2, 4, 6, 8], False)
    assert plans[-1] == (2, [0, 2, 4, 6, 8], False)
    assert frame_ids(ds[4]) == [1, 21, 41, 61, 81]  # video 1, start 0
    first = ClipDataset(dataset_root, "train", 3, windows="first")
    assert len(first) == 3 and [frame_ids(first[v]) for v in range(3)] == [[0, 10, 20], [1, 11, 21], [2, 12, 22]]


def test_works_with_dataloader_workers(dataset_root):
    ds = ClipDataset(dataset_root, "train", 4, skip_frames=1, random_horizontal_flip=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=True)
    batches = list(loader)
    assert len(batches) == 1 and batches[0].shape == (3, 4, 3, 64, 64)
