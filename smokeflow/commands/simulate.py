"""``smokeflow simulate``: write a simulated smoke dataset in the users' layout, print its statistics."""

from __future__ import annotations

import argparse
import os
import time

from smokeflow.commands import number_in_unit_interval

HELP = "simulate smoke sequences into <split>/<video>_frame_<NNNN>.png, with statistics and a contact sheet"


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="dataset folder to create (must be empty or absent)")
    count = _int_at_least(0)
    parser.add_argument("--train", type=count, default=2000, help="training sequences (default 2000)")
    parser.add_argument("--val", type=count, default=200, help="validation sequences (default 200)")
    parser.add_argument("--test", type=count, default=200, help="test sequences (default 200)")
    parser.add_argument("--frames", type=_int_at_least(2), default=20,
                        help="frames per sequence (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; same seed, same data (default 0)")
    parser.add_argument("--workers", type=_int_at_least(1), default=os.cpu_count() or 1,
                        help="worker processes; results are identical for any number "
                             "(default: one per CPU core, here %(default)s)")
    parser.add_argument("--fading", type=number_in_unit_interval("a share "), default=0.0,
                        help="share of sequences whose smoke fades: the stacks stop emitting and the smoke thins "
                             "out fast, as detached puffs in real footage do (default 0; the other sequences are "
                             "exactly those --fading 0 writes)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty --out, replacing earlier simulated frames there")


def run(args) -> int:
    from smokeflow.data.dataset_stats import format_statistics
    from smokeflow.data.simulate import write_simulated_dataset
    from smokeflow.errors import DataError

    if args.train + args.val + args.test == 0:
        raise DataError(args.out, "nothing to simulate: --train, --val and --test are all 0")
    start = time.perf_counter()
    stats = write_simulated_dataset(args.out, train=args.train, val=args.val, test=args.test,
                                    frames=args.frames, seed=args.seed, workers=args.workers,
                                    force=args.force, fading=args.fading)
    seconds = time.perf_counter() - start
    total = args.train + args.val + args.test
    print(f"wrote {total} sequences of {args.frames} frames to {args.out} in {seconds:.1f} s "
          f"({total / seconds:.2f} sequences/s)")
    print(format_statistics(stats))
    print(f"contact sheet: {stats['contact_sheet']}")
    return 0
