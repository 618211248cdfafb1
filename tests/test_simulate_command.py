"""`smokeflow simulate` writes the users' layout, a contact sheet and statistics, and never overwrites."""

import os

import numpy as np
import pytest
from PIL import Image

from smokeflow.cli import main
from smokeflow.data.naming import frame_filename
from smokeflow.data.simulate import simulate_sequences, write_simulated_dataset
from smokeflow.errors import DataError


def _read_video(split_dir, video, num_frames):
    return np.stack([np.asarray(Image.open(os.path.join(split_dir, frame_filename(video, i))))
                     for i in range(num_frames)])


def test_command_writes_layout_statistics_and_contact_sheet(tmp_path, capsys):
    out = tmp_path / "dataset"
    rc = main(["simulate", "--out", str(out), "--train", "3", "--val", "1", "--test", "2", "--frames", "4",
               "--seed", "11", "--workers", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "smoke pixels, % of frame" in printed and "mean |frame change|" in printed
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        videos = (out / f"{split}_files.txt").read_text().split()
        assert videos == [f"sim_{split}_{i:05d}" for i in range(count)]
        assert len(os.listdir(out / split)) == 4 * count
        # The written PNGs are the simulator's frames, bit for bit.
        expected = simulate_sequences(count, 4, seed=11, split=split)
        for i, video in enumerate(videos):
            np.testing.assert_array_equal(_read_video(out / split, video, 4), expected[i])
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.ndim == 3 and sheet.shape[0] >= 3 * 64 and sheet.shape[1] >= 4 * 64


def test_command_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "dataset"
    out.mkdir()
    keep = out / "notes.txt"
    keep.write_text("the user's file")
    args = ["simulate", "--out", str(out), "--train", "1", "--val", "0", "--test", "0", "--frames", "3",
            "--workers", "2"]  # one batch: runs in this process whatever --workers says
    assert main(args) == 2
    assert str(out) in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["notes.txt"]
    # A stale frame of an earlier, longer dataset is replaced; unrelated files stay.
    (out / "train").mkdir()
    (out / "train" / frame_filename("sim_train_00000", 7)).write_bytes(b"old")
    assert main(args + ["--force"]) == 0
    assert sorted(os.listdir(out / "train")) == [frame_filename("sim_train_00000", i) for i in range(3)]
    assert keep.read_text() == "the user's file"


def test_refuses_a_file_as_output(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(DataError, match="file.txt"):
        write_simulated_dataset(target, 1, 0, 0, frames=2, seed=0, progress=False)


def test_two_workers_give_the_same_dataset(tmp_path):
    stats = []
    for workers in (1, 2):
        stats.append(write_simulated_dataset(tmp_path / f"w{workers}", train=17, val=1, test=0, frames=2,
                                             seed=4, workers=workers, progress=False))
    for split in ("train", "val"):
        names = sorted(os.listdir(tmp_path / "w1" / split))
        assert names == sorted(os.listdir(tmp_path / "w2" / split)) and names
        for name in names:
            a = (tmp_path / "w1" / split / name).read_bytes()
            b = (tmp_path / "w2" / split / name).read_bytes()
            assert a == b, name
    assert stats[0]["smoke_fraction"] == stats[1]["smoke_fraction"]


def test_fading_share_is_checked(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--out", str(tmp_path / "d"), "--train", "1", "--fading", "1.5"])
    assert exit_info.value.code == 2 and "must be a share in [0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
