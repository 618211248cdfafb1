"""Where does a flow model lose the smoke's motion? Rise (px per frame) at each stage from truth to rollout.

    .venv/bin/python benchmarks/motion_probe.py [--checkpoint checkpoints/default] [--data final_dataset]
        [--split val] [--num-videos 20] [--steps 10] [--warm-start 0.1] [--mean-draws 8]
        [--warm-start-motion auto|prior|off|DRIFT,RISE]

For the first ``--num-videos`` videos of a split (10 frames each), the rise of the smoke
(:mod:`smokeflow.metrics.smoke_motion`, optical flow on decoded frames) is printed for:

  truth             the real frames;
  reconstruction    their VQVAE round trip (what the flow model is trained to reproduce);
  clean estimate    teacher-forced: for each frame n = 2..9, the network's estimate of the clean latent at t = 0
                    from the TRUE frames n-1 (reference) and n-2 (context, distance 2), averaged over
                    ``--mean-draws`` noise draws - the model's conditional mean of the next frame;
  one frame, s=0    teacher-forced: frame n sampled by the real sampler from the true frames 0..n-1, pure noise;
  one frame, s      the same from warm start s (advected by ``--warm-start-motion``: with ``auto``, the velocity
                    measured on the true past frames);
  rollout, s        the protocol of the issue: 1 observed frame, 9 frames predicted from predictions (with
                    ``auto``, advected by the checkpoint's motion prior).

Each line's motion is measured from the frame before it as the model had it (the true frame, or the rollout's
previous frame), so a line that copies its reference reads 0. The ratio columns divide by the truth's rise (as
the evaluation report's rise ratio does) and by the reconstruction's (the most the flow model can learn).
A diagnostic, not a test: it prints numbers for the model card and for choosing what to train next.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smokeflow import SmokeFlow  # noqa: E402
from smokeflow.commands import warm_start_motion_argument  # noqa: E402
from smokeflow.metrics.evaluation import load_evaluation_videos  # noqa: E402
from smokeflow.metrics.smoke_motion import smoke_motion  # noqa: E402

NUM_FRAMES = 10


def pair_rise(before: np.ndarray, after: np.ndarray) -> float:
    """Mean rise (px/frame) over frame pairs: uint8 [P, H, W, 3] each -> float (NaN pairs skipped)."""
    _, rise = smoke_motion(after[:, None], previous=before)  # each pair as a 1-frame clip after its frame
    return float(np.nanmean(rise))


@torch.inference_mode()
def clean_estimate(model, z_ref, z_ctx, distance, draws: int, generator: torch.Generator) -> torch.Tensor:
    """Mean over ``draws`` noises of the network's clean-latent estimate x + (1 - t) v at t = 0: [B, C, h, w].

    x + (1 - t) u = z + sigma * eps on the path, so this reads the data estimate of any prediction type."""
    condition = model.condition(z_ref, z_ctx, distance)
    t = torch.zeros(z_ref.shape[0])
    total = torch.zeros_like(z_ref)
    for _ in range(draws):
        x = torch.randn(z_ref.shape, generator=generator)
        total += x + model.velocity(x, t, condition, anchor=z_ref)
    return total / draws


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/default")
    parser.add_argument("--data", default="final_dataset")
    parser.add_argument("--split", default="val")
    parser.add_argument("--num-videos", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warm-start", type=float, default=0.1)
    parser.add_argument("--mean-draws", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-start-motion", type=warm_start_motion_argument, default="auto",
                        help="advect the warm start: auto, prior, off, or DRIFT,RISE px per frame (default: auto)")
    args = parser.parse_args(argv)

    pipe = SmokeFlow.from_pretrained(args.checkpoint, device="cpu")
    model = pipe.flow.model
    videos = load_evaluation_videos(args.data, args.split, 1, NUM_FRAMES - 1, args.num_videos)
    generator = torch.Generator().manual_seed(args.seed)
    rises: dict[str, list[float]] = {}

    def add(name: str, value: float):
        rises.setdefault(name, []).append(value)

    for i in range(len(videos.names)):
        frames = np.concatenate([videos.observed[i], videos.targets[i]])  # [10, 64, 64, 3]
        z = pipe.encode(frames)
        reconstruction = pipe.decode(z)
        add("truth", pair_rise(frames[:-1], frames[1:]))
        add("reconstruction", pair_rise(reconstruction[:-1], reconstruction[1:]))
        targets = torch.arange(2, NUM_FRAMES)
        mean = clean_estimate(model, z[targets - 1], z[targets - 2], torch.full((len(targets),), 2),
                              args.mean_draws, generator)
        add("clean estimate (t=0 mean)", pair_rise(reconstruction[1:-1], pipe.decode(mean)))
        for s in (0.0, args.warm_start):
            one = torch.cat([pipe.predict_latents(z[:n], 1, steps=args.steps, warm_start=s,
                                                  seed=args.seed * 1000 + i * NUM_FRAMES + n,
                                                  warm_start_motion=args.warm_start_motion).latents[0]
                             for n in targets.tolist()])
            add(f"one frame, s={s:g}", pair_rise(reconstruction[1:-1], pipe.decode(one)))
        rolled = pipe.predict_latents(z[:1], NUM_FRAMES - 1, steps=args.steps, warm_start=args.warm_start,
                                      seed=args.seed * 1000 + i, warm_start_motion=args.warm_start_motion).latents[0]
        rolled_frames = pipe.decode(torch.cat([z[:1], rolled]))
        add(f"rollout, s={args.warm_start:g}", pair_rise(rolled_frames[:-1], rolled_frames[1:]))

    truth, codec = float(np.mean(rises["truth"])), float(np.mean(rises["reconstruction"]))
    print(f"{args.checkpoint}: {len(videos.names)} {args.split} videos, Euler N={args.steps}, warm-start motion "
          f"{args.warm_start_motion} (prior: {pipe.motion_prior})")
    print(f"{'stage':32s} {'rise px/frame':>14s} {'/ truth':>8s} {'/ recon':>8s}")
    for name, values in rises.items():
        value = float(np.mean(values))
        print(f"{name:32s} {value:14.3f} {value / truth:8.3f} {value / codec:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
