"""Bad input -> DataError naming the file and the problem; the user's files are never modified."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from smokeflow.data.clip_dataset import ClipDataset
from smokeflow.data.layouts import list_videos, read_video_entry
from smokeflow.data.naming import write_split_list, write_video_pngs
from smokeflow.data.sources import load_frames
from smokeflow.data.video_io import read_video, write_video
from smokeflow.errors import DataError


@pytest.fixture(autouse=True)
def private_index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKEFLOW_CACHE_DIR", os.fspath(tmp_path / "cache"))


def tree_digest(root):
    """Hash of every name, symlink target and file content under ``root``."""
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            if os.path.islink(path):
                digest.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, "rb") as fh:
                    digest.update(fh.read())
    return digest.hexdigest()


def frames(num_frames=6, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)


@pytest.fixture
def root(tmp_path):
    """A valid dataset that each test breaks in one way (``expect_unchanged`` checks the tree)."""
    data = tmp_path / "data"
    write_video_pngs(data / "train", "good", frames())
    return data


def expect_unchanged(data, action):
    """Run ``action`` (which must raise DataError) and check that the dataset tree is unchanged."""
    before = tree_digest(data)
    with pytest.raises(DataError) as err:
        action()
    assert tree_digest(data) == before
    return str(err.value)


def test_unreadable_image(root):
    path = root / "train" / "good_frame_0002.png"
    path.write_bytes(b"not a png at all")
    (video,) = list_videos(root, "train")  # listing reads names only
    message = expect_unchanged(root, lambda: read_video_entry(video))
    assert os.fspath(path) in message and "unreadable" in message


def test_truncated_image(root):
    path = root / "train" / "good_frame_0004.png"
    path.write_bytes(path.read_bytes()[:300])
    (video,) = list_videos(root, "train")
    message = expect_unchanged(root, lambda: read_video_entry(video))
    assert os.fspath(path) in message and "truncated" in message


def test_truncated_and_unreadable_video(root, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", frames(24, seed=1))
    cut = root / "train" / "cut.mp4"
    cut.write_bytes(open(clip, "rb").read()[:2000])
    message = expect_unchanged(root, lambda: list_videos(root, "train"))
    assert os.fspath(cut) in message
    cut.write_bytes(b"\x00" * 100)
    assert os.fspath(cut) in expect_unchanged(root, lambda: load_frames(cut))
    gif = write_video(tmp_path / "clip.gif", frames(4, seed=2))
    bad_gif = root / "bad.gif"
    bad_gif.write_bytes(open(gif, "rb").read()[:-200])
    assert os.fspath(bad_gif) in expect_unchanged(root, lambda: read_video(bad_gif))


def test_mixed_frame_sizes_within_a_video(root):
    path = root / "train" / "good_frame_0003.png"
    Image.fromarray(frames(1, size=48)[0]).save(path)
    (video,) = list_videos(root, "train")
    message = expect_unchanged(root, lambda: read_video_entry(video))
    assert os.fspath(path) in message and "48x48" in message and "64x64" in message


def test_gap_in_frame_numbering(root):
    os.remove(root / "train" / "good_frame_0003.png")
    message = expect_unchanged(root, lambda: list_videos(root, "train"))
    assert "good_frame_0002.png" in message and "gap" in message and "3" in message


def test_gap_in_a_frame_folder(root):
    folder = root / "train" / "cam"
    folder.mkdir()
    for t in (1, 2, 4):
        Image.fromarray(frames(1)[0]).save(folder / f"{t:03d}.png")
    message = expect_unchanged(root, lambda: list_videos(root, "train"))
    assert os.fspath(folder / "002.png") in message and "gap" in message


def test_duplicate_frame_numbers(root):
    Image.fromarray(frames(1)[0]).save(root / "train" / "good_frame_00001.png")
    message = expect_unchanged(root, lambda: list_videos(root, "train"))
    assert "good_frame_00001.png" in message and "twice" in message


def test_video_shorter_than_the_clip(root):
    write_video_pngs(root / "train", "short", frames(3))
    message = expect_unchanged(root, lambda: ClipDataset(root, "train", frames_per_sample=4))
    assert "short_frame_0000.png" in message and "3 frames" in message
    message = expect_unchanged(root, lambda: ClipDataset(root, "train", frames_per_sample=3, skip_frames=2))
    assert "'good'" in message or "'short'" in message


def test_empty_and_missing_split(root):
    (root / "val").mkdir()
    (root / "val" / "notes.txt").write_text("nothing here")
    message = expect_unchanged(root, lambda: list_videos(root, "val"))
    assert os.fspath(root / "val") in message and "empty" in message
    message = expect_unchanged(root, lambda: list_videos(root, "test"))
    assert os.fspath(root / "test") in message and "not found" in message
    missing_root = root / "nowhere"
    assert "not found" in expect_unchanged(root, lambda: list_videos(missing_root, "train"))


def test_files_txt_entry_outside_the_root(root):
    write_split_list(root, "train", ["good", "../../etc/passwd"])
    message = expect_unchanged(root, lambda: list_videos(root, "train"))
    assert os.fspath(root / "train_files.txt") in message and "outside" in message and "line 2" in message
    write_split_list(root, "train", ["good", "missing_video"])
    message = expect_unchanged(root, lambda: list_videos(root, "train"))
    assert "missing_video" in message and "not found" in message


def test_symlink_escaping_the_root(root, tmp_path):
    outside = tmp_path / "outside"
    write_video_pngs(outside, "secret", frames(6))
    os.symlink(outside / "secret_frame_0000.png", root / "train" / "leak_frame_0000.png")
    message = expect_unchanged(root, lambda: list_videos(root, "train"))
    assert "leak_frame_0000.png" in message and "outside the dataset root" in message
    os.remove(root / "train" / "leak_frame_0000.png")
    os.symlink(outside, root / "train" / "leak_folder")
    message = expect_unchanged(root, lambda: list_videos(root, "train"))
    assert "leak_folder" in message and "outside the dataset root" in message


def test_symlink_inside_the_root_is_fine(root):
    os.symlink(root / "train" / "good_frame_0000.png", root / "train" / "alias_frame_0000.png")
    assert [v.name for v in list_videos(root, "train")] == ["alias", "good"]


def test_bad_npz(root, tmp_path):
    np.savez(root / "test.npz", frames=np.zeros((2, 4, 8, 8, 3), np.float64))
    assert "uint8" in expect_unchanged(root, lambda: list_videos(root, "test"))
    np.savez(root / "test.npz", images=np.zeros((2, 4, 8, 8, 3), np.uint8))
    assert "no 'frames'" in expect_unchanged(root, lambda: list_videos(root, "test"))
    np.savez(root / "test.npz", frames=np.zeros((2, 4, 8, 8, 3), np.uint8))
    data = (root / "test.npz").read_bytes()
    (root / "test.npz").write_bytes(data[: len(data) // 2])
    message = expect_unchanged(root, lambda: list_videos(root, "test"))
    assert os.fspath(root / "test.npz") in message
    np.savez(tmp_path / "many.npz", frames=np.zeros((3, 4, 8, 8, 3), np.uint8))
    assert "sequence" in expect_unchanged(root, lambda: load_frames(tmp_path / "many.npz"))


def test_unsupported_and_missing_single_inputs(root, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "unsupported" in expect_unchanged(root, lambda: load_frames(tmp_path / "notes.txt"))
    assert "not found" in expect_unchanged(root, lambda: load_frames(tmp_path / "nope.mp4"))


def test_reading_a_valid_dataset_changes_nothing(root):
    np.savez(root / "test.npz", frames=np.stack([frames(5, seed=3), frames(5, seed=4)]))
    write_video(root / "train" / "cam.gif", frames(6, seed=5))
    before = tree_digest(root)
    stamps = {p: os.stat(p).st_mtime_ns for p in (root, root / "train", root / "test.npz")}
    for split in ("train", "test"):
        for video in list_videos(root, split):
            read_video_entry(video)
        ClipDataset(root, split, frames_per_sample=3, random_horizontal_flip=True)[0]
    load_frames(root / "train" / "cam.gif")
    assert tree_digest(root) == before
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}
