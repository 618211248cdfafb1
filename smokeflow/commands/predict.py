"""``smokeflow predict``: roll a clip forward with a trained checkpoint and write the prediction as a video."""

from __future__ import annotations

import argparse
import os

from smokeflow.commands import (add_detail_argument, add_detail_guidance_argument, add_network_speed_arguments,
                                add_warm_start_motion_argument, check_network_speed_arguments)
from smokeflow.flow.defaults import DEFAULT_WARM_START

HELP = "Predict the next frames of a clip (video, frame folder, image or .npz) and write them as .gif/.mp4."


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="checkpoints/default", help="checkpoint or run folder")
    parser.add_argument("--input", required=True, help="observed frames: video, folder of frames, image, .npz")
    parser.add_argument("--extract", action="store_true",
                        help="the input is a raw video: cut the smoke out onto black first, as `smokeflow extract` "
                             "does (the models are trained on such frames)")
    parser.add_argument("--crop", default=None, metavar="X,Y,W,H",
                        help="with --extract: region of the raw frames to keep first, in pixels (default: whole "
                             "frame)")
    parser.add_argument("--num-frames", type=int, default=9, help="frames to predict")
    parser.add_argument("--out", required=True, help="output video (.gif or .mp4); an existing file is kept "
                        "unless --overwrite")
    parser.add_argument("--steps", type=int, default=10, help="ODE steps per frame (N)")
    parser.add_argument("--solver", default="euler", choices=["euler", "midpoint", "heun", "rk4", "dopri5"])
    parser.add_argument("--warm-start", type=float, default=DEFAULT_WARM_START,
                        help="warm start s in [0, 1): 0 is pure noise (blurred); the default is the measured best "
                             "look (default: %(default)s)")
    add_warm_start_motion_argument(parser)
    add_detail_argument(parser)
    add_detail_guidance_argument(parser)
    parser.add_argument("--reencode", action=argparse.BooleanOptionalAction, default=False,
                        help="feed each predicted frame back through the autoencoder (decode, encode) before it "
                             "conditions the next one (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=1, help="samples, shown side by side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--observed", type=int, default=None,
                        help="use only the last this-many frames of the input as observations (default: all)")
    parser.add_argument("--device", default="cpu")
    add_network_speed_arguments(parser)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def prediction_video(observed, predicted):
    """Frames to show: the last observed frame then the predictions, samples side by side.

    observed uint8 [T_obs, H, W, 3], predicted uint8 [K, F, H, W, 3] -> uint8 [1 + F, H, K*W + 2*(K-1), 3].
    """
    import numpy as np

    k = predicted.shape[0]
    seqs = [np.concatenate([observed[-1:], predicted[i]]) for i in range(k)]
    gap = np.zeros((seqs[0].shape[0], seqs[0].shape[1], 2, 3), np.uint8)
    parts = []
    for i, seq in enumerate(seqs):
        parts += [gap, seq] if i else [seq]
    return np.concatenate(parts, axis=2)


def observed_frames(args):
    """The input's frames, uint8 [T, 64, 64, 3]: with --extract, the smoke cut out of the raw video; without
    it, the frames as they are, with a warning on stderr when they do not look like smoke on black."""
    import sys

    from smokeflow.commands.extract import extract_video, parse_crop
    from smokeflow.data.smoke_mask import smoke_on_black_problem
    from smokeflow.data.sources import load_frames
    from smokeflow.data.video_io import is_video_file
    from smokeflow.errors import DataError

    crop = parse_crop(args.crop)
    if not args.extract:
        if crop is not None:
            raise DataError(None, "--crop is for --extract (the region of the raw video to cut the smoke from)")
        frames = load_frames(args.input)
        problem = smoke_on_black_problem(frames)
        if problem:
            fix = ("pass --extract to cut the smoke out first" if is_video_file(args.input)
                   else "cut the smoke out of the raw video with `smokeflow extract` first")
            print(f"smokeflow predict: warning: {args.input}: {problem}; {fix}", file=sys.stderr)
        return frames
    if not os.path.exists(args.input):
        raise DataError(args.input, "input not found")
    if not is_video_file(args.input):
        raise DataError(args.input, "--extract needs a raw video file (the background is estimated over the "
                                    "whole clip); for frames already cut out onto black, leave --extract off")
    return extract_video(args.input, crop=crop).frames


def run(args) -> int:
    from smokeflow.data.smoke_velocity import describe_warm_start_motion
    from smokeflow.data.video_io import write_video
    from smokeflow.errors import DataError
    from smokeflow.pipeline import SmokeFlow

    check_network_speed_arguments(args)
    if os.path.exists(args.out) and not args.overwrite:
        raise DataError(args.out, "output exists; pass --overwrite to replace it")
    if not args.out.lower().endswith((".gif", ".mp4")):
        raise DataError(args.out, "output must end in .gif or .mp4")
    frames = observed_frames(args)
    if args.observed is not None:
        if args.observed < 1:
            raise DataError(args.input, f"--observed must be >= 1, got {args.observed}")
        frames = frames[-args.observed:]
    pipe = SmokeFlow.from_pretrained(args.checkpoint, device=args.device, compile=args.compile, int8=args.int8)
    out = pipe.predict(frames, num_frames=args.num_frames, steps=args.steps, solver=args.solver,
                       warm_start=args.warm_start, num_samples=args.num_samples, seed=args.seed,
                       reencode=args.reencode, warm_start_motion=args.warm_start_motion,
                       detail_guidance=args.detail_guidance, detail=args.detail)
    write_video(args.out, prediction_video(frames, out.frames), fps=args.fps)
    extracted = " (smoke extracted from the raw video)" if args.extract else ""
    auto = " (auto)" if args.detail is None else ""
    options = f"{f', detail {out.detail}{auto}' if out.detail else ''}{', int8 network' if args.int8 else ''}"
    print(f"smokeflow predict: {args.num_samples} sample(s) x {args.num_frames} frames from {len(frames)} "
          f"observed frame(s){extracted}, {args.solver} N={args.steps} warm start {args.warm_start}{options}: "
          f"{out.nfe} network evaluations per sample, {out.seconds:.2f} s"
          f"{describe_warm_start_motion(out.warm_start_motion)} -> {args.out}")
    return 0
