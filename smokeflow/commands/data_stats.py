"""``smokeflow data-stats``: smoke statistics of a dataset split in any layout, next to the users' ranges."""

from __future__ import annotations

HELP = "Print smoke statistics (coverage, colour, change, rise and drift) of a dataset split in any supported layout."


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="dataset root (ROOT/<split>/... or ROOT/<split>.npz)")
    parser.add_argument("--split", default="test", help="split to read (default: test)")
    parser.add_argument("--max-videos", type=int, default=None, help="only the first N videos of the split")
    parser.add_argument("--size", type=int, default=64, help="frames are resized/cropped to this (default 64)")
    parser.add_argument("--json", default=None, help="also write the statistics as JSON to this file")


def split_statistics(root, split: str, size: int = 64, max_videos: int | None = None,
                     progress: bool = False) -> dict:
    """Statistics of :func:`smokeflow.data.dataset_stats.smoke_dataset_statistics` for a whole split,
    computed one video at a time (videos may differ in length; memory stays one video)."""
    import numpy as np
    from tqdm import tqdm

    from smokeflow.data.dataset_stats import per_sequence_statistics, summarize_sequence_statistics
    from smokeflow.data.layouts import list_videos, read_video_entry
    from smokeflow.errors import DataError

    if max_videos is not None and max_videos < 1:
        raise DataError(None, f"--max-videos must be at least 1, got {max_videos}")
    videos = list_videos(root, split)[:max_videos]
    parts = [per_sequence_statistics(read_video_entry(v, size)[None], motion=True)
             for v in tqdm(videos, desc=f"reading {split}", unit="video", disable=not progress)]
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return summarize_sequence_statistics(merged)


def run(args) -> int:
    import json

    from smokeflow.data.dataset_stats import format_statistics

    stats = split_statistics(args.data, args.split, args.size, args.max_videos, progress=True)
    print(f"{args.data} split '{args.split}'")
    print(format_statistics(stats))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(stats, fh, indent=2)
    return 0
