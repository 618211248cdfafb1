"""VQVAE speed: encoding frames/s, and reading 10-frame latent clips from the cache vs PNGs + encoding.

    python benchmarks/bench_vqvae.py [--checkpoint checkpoints/default] [--data final_dataset] [--split test]

Targets (issue 3): encoding >= 90 frames/s on this 2-core CPU (the users' 160k frames cached in < 30 min);
a batch of 10-frame latent clips read from the cache >= 10x faster than loading the PNGs and encoding them.
Without --data a small simulated dataset is written to a temporary folder. Timings on a shared machine are
noisy: the best of --repeats runs is reported.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smokeflow.data.clip_dataset import ClipDataset  # noqa: E402
from smokeflow.data.latent_cache import LatentClipDataset, build_latent_cache  # noqa: E402
from smokeflow.pipeline import SmokeFlow  # noqa: E402


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/default")
    parser.add_argument("--data", default=None, help="dataset root (default: simulate a small one)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--frames", type=int, default=1024, help="frames to encode for the encoding rate")
    parser.add_argument("--batch", type=int, default=32, help="clips per batch for the cache comparison")
    parser.add_argument("--clip-length", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
          "(other jobs on this machine slow every number down)")
    pipe = SmokeFlow.from_pretrained(args.checkpoint)
    data = args.data
    tmp = None
    if data is None:
        from smokeflow.data.simulate import write_simulated_dataset

        tmp = tempfile.TemporaryDirectory()
        data = os.path.join(tmp.name, "data")
        write_simulated_dataset(data, train=0, val=0, test=args.batch, frames=max(20, args.clip_length), seed=0,
                                progress=False)
    clips = ClipDataset(data, args.split, frames_per_sample=args.clip_length, size=pipe.input_size, seed=0)

    # 1. Encoding rate on real frames of the split (repeated to --frames).
    frames = np.concatenate([clips.clip_uint8(i % len(clips)) for i in range(-(-args.frames // args.clip_length))])
    frames = frames[:args.frames]
    pipe.encode(frames[:64])  # warm-up (oneDNN kernel selection)
    seconds = best_time(lambda: pipe.encode(frames), args.repeats)
    rate = len(frames) / seconds
    print(f"encoding: {rate:.0f} frames/s ({len(frames)} frames in {seconds:.2f} s; target >= 90; "
          f"160k frames would take {160_000 / rate / 60:.1f} min)")

    # 2. A batch of clips: PNGs + encoding vs the latent cache.
    build_latent_cache(args.checkpoint, data, args.split, pipe=pipe, progress=False)
    latents = LatentClipDataset(data, args.split, frames_per_sample=args.clip_length, seed=0)
    indices = [i % len(clips) for i in range(args.batch)]

    def from_pngs():
        batch = np.stack([clips.clip_uint8(i) for i in indices])  # [B,T,64,64,3]
        return pipe.encode(batch.reshape(-1, *batch.shape[2:]))

    def from_cache():
        return torch.stack([latents[i] for i in indices])

    from_pngs(), from_cache()
    png_seconds = best_time(from_pngs, args.repeats)
    cache_seconds = best_time(from_cache, args.repeats)
    print(f"batch of {args.batch} x {args.clip_length}-frame clips: PNGs + encoding {1000 * png_seconds:.1f} ms, "
          f"latent cache {1000 * cache_seconds:.2f} ms -> {png_seconds / cache_seconds:.0f}x faster (target >= 10x)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
