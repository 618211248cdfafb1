"""Index speed on a users'-size layout: 8,000 videos x 20 frames = 160,000 frame files.

    .venv/bin/python benchmarks/bench_index.py [--videos 8000] [--frames 20] [--dir /tmp/...]
        [--layout flat|folders]

The frames are EMPTY files: the index must work from names alone (an image decode would fail). Prints
the time to create the layout, the cold scan (no cache), the first cached call (scan + writing the
cache), the warm cached call, and a call after one video was added (cache invalidated).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from smokeflow.data.dataset_index import index_cache_path, scan_split
from smokeflow.data.layouts import list_videos
from smokeflow.data.naming import frame_filename, write_split_list


def make_layout(root: str, videos: int, frames: int, layout: str) -> None:
    split = os.path.join(root, "train")
    os.makedirs(split)
    names = [f"site{v % 37:02d}_clip{v:05d}" for v in range(videos)]
    for name in names:
        folder = os.path.join(split, name) if layout == "folders" else split
        os.makedirs(folder, exist_ok=True)
        for t in range(frames):
            open(os.path.join(folder, frame_filename(name, t)), "wb").close()
    write_split_list(root, "train", names)


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    print(f"{label:44s} {seconds:8.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8000)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--layout", choices=("flat", "folders"), default="flat")
    parser.add_argument("--dir", default=None, help="where to build the layout (default: a temp folder)")
    args = parser.parse_args()

    base = args.dir or tempfile.mkdtemp(prefix="smokeflow_bench_index_")
    root = os.path.join(base, "data")
    cache = os.path.join(base, "cache")
    os.environ["SMOKEFLOW_CACHE_DIR"] = cache  # keep the benchmark's cache out of ~/.cache
    try:
        total = args.videos * args.frames
        print(f"{args.videos} videos x {args.frames} frames = {total} empty frame files, layout '{args.layout}'")
        timed("create layout (not part of the index)", lambda: make_layout(root, args.videos, args.frames,
                                                                          args.layout))
        # The index does not trust a cache written within 2 s of the folder's last change (coarse
        # file-system timestamps), so let the just-built layout settle as real datasets have.
        time.sleep(2.1)
        entries, _ = timed("cold scan (scandir + regex, no cache)", lambda: scan_split(root, "train"))
        assert sum(e.num_frames for e in entries) == total
        timed("list_videos, first call (scan + write cache)", lambda: list_videos(root, "train"))
        print(f"{'  cache file size':44s} {os.path.getsize(index_cache_path(root, 'train')) / 1e6:8.2f} MB")
        videos = timed("list_videos, cached", lambda: list_videos(root, "train"))
        assert len(videos) == args.videos
        timed("list_videos, cached again", lambda: list_videos(root, "train"))
        extra = os.path.join(root, "train", "extra") if args.layout == "folders" else os.path.join(root, "train")
        os.makedirs(extra, exist_ok=True)
        for t in range(args.frames):
            open(os.path.join(extra, frame_filename("extra", t)), "wb").close()
        os.remove(os.path.join(root, "train_files.txt"))  # list all videos, including the new one
        time.sleep(2.1)
        videos = timed("list_videos after adding a video (rescan)", lambda: list_videos(root, "train"))
        assert len(videos) == args.videos + 1
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
