"""Every dataset layout and input form reads back the frames that were written."""

import os
import time

import numpy as np
import pytest
from PIL import Image

from smokeflow.data.dataset_index import index_cache_path, scan_split
from smokeflow.data.layouts import list_videos, read_split_frames, read_video_entry
from smokeflow.data.naming import write_split_list, write_video_pngs
from smokeflow.data.sources import load_frames
from smokeflow.data.video_io import read_video, write_video


@pytest.fixture(autouse=True)
def private_index_cache(tmp_path, monkeypatch):
    """Keep cached indexes of test datasets out of the user's ~/.cache."""
    monkeypatch.setenv("SMOKEFLOW_CACHE_DIR", os.fspath(tmp_path / "cache"))


def smoke_frames(num_videos, num_frames, size=64, seed=0):
    """Smooth moving blobs on black, uint8 [N,T,size,size,3] (compress well in videos)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.zeros((num_videos, num_frames, size, size, 3), np.uint8)
    for n in range(num_videos):
        colour = rng.uniform(80, 200, 3)
        x0, y0 = rng.uniform(0.3, 0.7, 2) * size
        for t in range(num_frames):
            blob = np.exp(-((xx - x0 - 1.5 * t) ** 2 + (yy - y0 + 2 * t) ** 2) / (2 * (size / 8) ** 2))
            out[n, t] = np.clip(blob[..., None] * colour, 0, 255).astype(np.uint8)
    return out


def test_users_layout_reads_back_bit_for_bit(tmp_path):
    frames = smoke_frames(3, 5)
    root = tmp_path / "data"
    for i in range(3):
        write_video_pngs(root / "train", f"plume_{i}_cam", frames[i])
    videos = list_videos(root, "train")
    assert [v.name for v in videos] == ["plume_0_cam", "plume_1_cam", "plume_2_cam"]
    assert all(v.num_frames == 5 for v in videos)
    for i, v in enumerate(videos):
        np.testing.assert_array_equal(read_video_entry(v), frames[i])
    stacked, _ = read_split_frames(root, "train")
    np.testing.assert_array_equal(stacked, frames)


def test_files_txt_selects_and_orders_videos(tmp_path):
    frames = smoke_frames(3, 4)
    root = tmp_path / "data"
    for i in range(3):
        write_video_pngs(root / "val", f"v{i}", frames[i])
    write_split_list(root, "val", ["v2", "v0"])
    assert [v.name for v in list_videos(root, "val")] == ["v2", "v0"]
    np.testing.assert_array_equal(read_video_entry(list_videos(root, "val")[0]), frames[2])


def test_numbering_from_one_and_long_numbers(tmp_path):
    split = tmp_path / "data" / "test"
    split.mkdir(parents=True)
    frames = smoke_frames(1, 12)[0]
    for t in range(12):  # 1-based, and numbers past 9999 use more digits
        Image.fromarray(frames[t]).save(split / f"cam_frame_{9995 + t:04d}.png")
    (video,) = list_videos(tmp_path / "data", "test")
    assert video.num_frames == 12
    np.testing.assert_array_equal(read_video_entry(video), frames)


def test_one_folder_per_video_sorts_numerically(tmp_path):
    frames = smoke_frames(2, 11, size=32)
    root = tmp_path / "data"
    for n, name in enumerate(["alpha", "beta"]):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for t in range(11):  # 1.png ... 11.png: a text sort would put 10 and 11 before 2
            Image.fromarray(frames[n, t]).save(folder / f"{t + 1}.png")
    videos = list_videos(root, "train")
    assert [(v.name, v.num_frames) for v in videos] == [("alpha", 11), ("beta", 11)]
    read = read_video_entry(videos[1], size=32)
    np.testing.assert_array_equal(read, frames[1])
    assert read_video_entry(videos[1]).shape == (11, 64, 64, 3)  # 32 -> 64 enlarged


@pytest.mark.parametrize("ext", ["gif", "mp4", "webm", "avi"])
def test_video_file_round_trip(tmp_path, ext):
    frames = smoke_frames(1, 8)[0]
    path = write_video(tmp_path / f"clip.{ext}", frames, fps=8)
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    error = np.abs(back.astype(int) - frames).mean()
    assert error < 3.0, error  # gif: palette quantisation; mp4/webm/avi: lossy codecs at high quality


def test_gif_keeps_repeated_frames(tmp_path):
    frames = smoke_frames(1, 6)[0]
    frames[3] = frames[2]  # GIF writers merge identical frames into one longer frame
    back = read_video(write_video(tmp_path / "rep.gif", frames))
    assert back.shape[0] == 6
    np.testing.assert_array_equal(back[2], back[3])


def test_video_files_and_npz_in_a_split(tmp_path):
    frames = smoke_frames(4, 6, size=96)
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    write_video(root / "train" / "cam_a.mp4", frames[0])
    write_video(root / "train" / "cam_b.gif", frames[1])
    np.savez(root / "train" / "batch.npz", frames=frames[2:])
    videos = list_videos(root, "train")
    assert [(v.name, v.kind, v.num_frames) for v in videos] == [
        ("batch_00000", "npz", 6), ("batch_00001", "npz", 6), ("cam_a", "video", 6), ("cam_b", "video", 6)]
    expected = {v.name: load for v, load in zip(videos, [frames[2], frames[3], frames[0], frames[1]])}
    for v in videos:
        out = read_video_entry(v)
        assert out.shape == (6, 64, 64, 3)
        reference = load_frames_reference(expected[v.name])
        tolerance = 0 if v.kind == "npz" else 4.0
        assert np.abs(out.astype(int) - reference).mean() <= tolerance


def load_frames_reference(frames):
    from smokeflow.data.image_io import resize_center_crop
    return resize_center_crop(frames, 64).astype(int)


def test_split_npz_file_reads_back_bit_for_bit(tmp_path):
    frames = smoke_frames(3, 5)
    root = tmp_path / "data"
    root.mkdir()
    np.savez_compressed(root / "test.npz", frames=frames, names=np.array(["x", "y", "z"]))
    videos = list_videos(root, "test")
    assert [v.name for v in videos] == ["x", "y", "z"]
    for i, v in enumerate(videos):
        np.testing.assert_array_equal(read_video_entry(v), frames[i])


def test_load_frames_accepts_every_single_input(tmp_path):
    frames = smoke_frames(2, 5, size=80)
    folder = tmp_path / "frames"
    write_video_pngs(folder, "one", frames[0])
    np.savez(tmp_path / "seqs.npz", frames=frames)
    np.savez(tmp_path / "one.npz", frames=frames[0])
    Image.fromarray(frames[0, 0]).save(tmp_path / "still.png")
    write_video(tmp_path / "clip.gif", frames[0])
    expected = load_frames_reference(frames[0])
    np.testing.assert_array_equal(load_frames(folder), expected)
    np.testing.assert_array_equal(load_frames(tmp_path / "one.npz"), expected)
    np.testing.assert_array_equal(load_frames(tmp_path / "seqs.npz", sequence=1), load_frames_reference(frames[1]))
    np.testing.assert_array_equal(load_frames(tmp_path / "still.png"), expected[:1])
    assert np.abs(load_frames(tmp_path / "clip.gif").astype(int) - expected).mean() < 3
    assert load_frames(tmp_path / "still.png", size=32).shape == (1, 32, 32, 3)


def test_index_is_cached_outside_the_dataset_and_invalidated_by_changes(tmp_path, monkeypatch):
    from smokeflow.data import dataset_index

    frames = smoke_frames(2, 4)
    root = tmp_path / "data"
    write_video_pngs(root / "train", "a", frames[0])
    past = time.time() - 60  # a settled folder (an index of a folder changed < 2 s ago is not trusted)
    os.utime(root / "train", (past, past))
    first = list_videos(root, "train")
    cache = index_cache_path(root, "train")
    assert os.path.isfile(cache) and not cache.startswith(os.fspath(root))
    assert sorted(os.listdir(root)) == ["train"]  # nothing written into the dataset
    real_scan = dataset_index.scan_split

    def no_scan(*args):
        raise AssertionError("the split was scanned although the cached index is valid")

    monkeypatch.setattr(dataset_index, "scan_split", no_scan)
    assert list_videos(root, "train") == first  # served from the cache
    monkeypatch.setattr(dataset_index, "scan_split", real_scan)
    write_video_pngs(root / "train", "b", frames[1])  # a new video changes the folder listing
    assert [v.name for v in list_videos(root, "train")] == ["a", "b"]
    os.remove(root / "train" / "b_frame_0003.png")
    assert [v.num_frames for v in list_videos(root, "train")] == [4, 3]


def test_index_scan_does_not_open_images(tmp_path):
    split = tmp_path / "data" / "train"
    split.mkdir(parents=True)
    for v in range(20):
        for t in range(10):
            (split / f"cam{v}_frame_{t:04d}.png").touch()  # empty files: any decoding would fail
    entries, _ = scan_split(tmp_path / "data", "train")
    assert len(entries) == 20 and all(e.num_frames == 10 for e in entries)


def test_simulated_dataset_reads_back_bit_for_bit(tmp_path, capsys):
    from smokeflow.cli import main as cli_main
    from smokeflow.commands.data_stats import split_statistics
    from smokeflow.data.dataset_stats import smoke_dataset_statistics
    from smokeflow.data.simulate import simulate_sequences, write_simulated_dataset

    root = tmp_path / "sim"
    write_simulated_dataset(root, train=2, val=0, test=1, frames=4, seed=3, progress=False)
    for split, count in (("train", 2), ("test", 1)):
        expected = simulate_sequences(count, 4, seed=3, split=split)
        videos = list_videos(root, split)
        assert len(videos) == count
        stacked, _ = read_split_frames(root, split)
        np.testing.assert_array_equal(stacked, expected)
    # data-stats reads the layout one video at a time and agrees with the statistics of the array.
    train_frames, _ = read_split_frames(root, "train")
    assert split_statistics(root, "train") == smoke_dataset_statistics(train_frames)
    assert cli_main(["data-stats", "--data", str(root), "--split", "test"]) == 0
    assert "smoke pixels, % of frame" in capsys.readouterr().out
