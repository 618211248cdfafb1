"""Simulator speed: sequences per second and the projected time for 1,000 sequences of 20 frames.

    python benchmarks/bench_simulate.py [--sequences 128] [--frames 20] [--workers 1 2]

Runs ``write_simulated_dataset`` (simulation + PNG writing, the real command's path) into a temporary
folder for each worker count. The target from issue 2: 1,000 sequences of 20 frames in under 5 minutes
on the 2-core CPU machine. Other processes on the machine slow it down; say so when you quote numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smokeflow.data.simulate import write_simulated_dataset  # noqa: E402


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=128)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as folder:
            cpu_start = _cpu_seconds()
            start = time.perf_counter()
            write_simulated_dataset(os.path.join(folder, "data"), train=args.sequences, val=0, test=0,
                                    frames=args.frames, seed=0, workers=workers, progress=False)
            seconds = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu_start
        rate = args.sequences / seconds
        per_thousand = 1000 / rate
        print(f"workers={workers}: {args.sequences} sequences x {args.frames} frames in {seconds:.1f} s = "
              f"{rate:.2f} sequences/s -> 1,000 sequences of {args.frames} frames in {per_thousand:.0f} s "
              f"({per_thousand / 60:.1f} min; target < 5 min)")
        # CPU time is what the work costs when it has the cores to itself; wall time above also
        # counts waiting for cores that other processes hold.
        per_thousand_cpu = cpu / args.sequences * 1000
        print(f"           CPU time {cpu:.1f} s = {per_thousand_cpu:.0f} CPU-s per 1,000 sequences "
              f"(= {per_thousand_cpu / min(workers, os.cpu_count() or 1) / 60:.1f} min on "
              f"{min(workers, os.cpu_count() or 1)} idle core(s))")


if __name__ == "__main__":
    main()
