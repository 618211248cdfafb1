"""``smokeflow evaluate``: roll out every video of a split with the model and the baselines, and score them.

Examples::

    smokeflow evaluate --checkpoint checkpoints/default --data final_dataset --split test \\
        --steps 10 --solver euler --warm-start 0.1 --num-samples 8 --json out.json --html out.html
    smokeflow evaluate --checkpoint checkpoints/default --data final_dataset --num-videos 50 \\
        --sweep steps=5,10,25 solver=euler,heun warm_start=0,0.1 --csv sweep.csv --html sweep.html
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from smokeflow.commands import (add_detail_argument, add_detail_guidance_argument, add_network_speed_arguments,
                                add_warm_start_motion_argument, check_network_speed_arguments)
from smokeflow.errors import CheckpointError, ConfigError
from smokeflow.flow.defaults import DEFAULT_WARM_START

HELP = "Evaluate rollouts (PSNR, SSIM, smoke PSNR, LPIPS, FVD, smoke statistics) against baselines; sweeps."

# Spelled out (not imported from smokeflow.flow) so that `smokeflow --help` does not import torch;
# tests/test_evaluate.py checks they equal the flow module's lists.
SOLVERS = ("euler", "midpoint", "heun", "rk4", "dopri5")
CONTEXT_POLICIES = ("per_call", "per_frame")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="checkpoints/default", help="checkpoint folder (default: %(default)s)")
    parser.add_argument("--data", required=True, help="dataset root (ROOT/<split>/... in any accepted layout)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    parser.add_argument("--num-videos", type=int, default=None, help="evaluate the first N videos (default: all)")
    parser.add_argument("--num-observed", type=int, default=1, help="observed frames per video (default: %(default)s)")
    parser.add_argument("--num-frames", type=int, default=9, help="frames to predict (default: %(default)s)")
    parser.add_argument("--start-frame", type=int, default=0, help="first frame used of each video (default: 0)")
    parser.add_argument("--window-stride", type=int, default=None, metavar="S",
                        help="score every window of num-observed + num-frames frames of each video, one every S "
                             "frames from --start-frame, each as a video of its own (named VIDEO@FIRST_FRAME): "
                             "for long clips such as your own footage (default: the first window only)")
    parser.add_argument("--steps", type=int, default=10, help="ODE steps N per frame (default: %(default)s)")
    parser.add_argument("--solver", default="euler", choices=SOLVERS, help="ODE solver (default: %(default)s)")
    parser.add_argument("--warm-start", type=float, default=DEFAULT_WARM_START,
                        help="warm start s in [0, 1): 0 is pure noise (blurred); the default is the measured best "
                             "look (default: %(default)s)")
    parser.add_argument("--context-policy", default="per_call", choices=CONTEXT_POLICIES,
                        help="re-draw the context frame at every network call (RIVER) or once per frame")
    add_warm_start_motion_argument(parser)
    add_detail_argument(parser)
    add_detail_guidance_argument(parser)
    parser.add_argument("--reencode", action=argparse.BooleanOptionalAction, default=False,
                        help="feed each predicted frame back through the autoencoder (decode, encode) before it "
                             "conditions the next one (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=1, help="samples K per video for best-of-K / mean-over-K")
    parser.add_argument("--seed", type=int, default=0, help="video i is rolled out with seed + i (default: 0)")
    parser.add_argument("--json", default=None, help="write the full results (protocol, settings, curves) as JSON")
    parser.add_argument("--html", default=None, help="write an HTML report with plotly charts")
    parser.add_argument("--sweep", nargs="+", default=None, metavar="NAME=V1,V2",
                        help="evaluate every combination, e.g. steps=5,10 solver=euler,heun warm_start=0,0.1 "
                             "warm_start_motion=auto,prior,off")
    parser.add_argument("--csv", default=None, help="sweep results, one row per setting (needed with --sweep)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the baselines (copy-last, linear, advected last frame)")
    parser.add_argument("--lpips-weights", default=None,
                        help="torchvision AlexNet weights alexnet-owt-7be5be79.pth (default: the torch hub cache)")
    parser.add_argument("--fvd-weights", default=None,
                        help="Kinetics-400 I3D weights i3d_pretrained_400.pt (default: the torch hub cache)")
    parser.add_argument("--no-fvd-download", action="store_true", help="do not try to download the I3D weights")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    add_network_speed_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check_arguments(args) -> None:
    if args.num_observed < 1 or args.num_frames < 1:
        raise ConfigError("--num-observed and --num-frames must be >= 1")
    if args.num_samples < 1:
        raise ConfigError("--num-samples must be >= 1")
    if args.num_videos is not None and args.num_videos < 1:
        raise ConfigError("--num-videos must be >= 1")
    if args.start_frame < 0:
        raise ConfigError(f"--start-frame must be >= 0, got {args.start_frame}")
    if args.window_stride is not None and args.window_stride < 1:
        raise ConfigError(f"--window-stride must be >= 1, got {args.window_stride}")
    if not 0.0 <= args.warm_start < 1.0:
        raise ConfigError(f"--warm-start must be in [0, 1), got {args.warm_start}")
    if args.sweep and not args.csv:
        raise ConfigError("--sweep needs --csv PATH for its results (rows are appended as they finish)")
    if not os.path.isdir(args.checkpoint):  # checked before the (slower) data reading
        raise CheckpointError(args.checkpoint, "checkpoint folder not found")


def _check_sweep_values(grid: dict) -> None:
    """Reject bad sweep values before the sweep starts, not in the middle of it."""
    bad_solvers = [v for v in grid.get("solver", []) if v not in SOLVERS]
    if bad_solvers:
        raise ConfigError(f"--sweep: unknown solver(s) {bad_solvers}; choose from {', '.join(SOLVERS)}")
    if any(v < 1 for v in grid.get("steps", [])):
        raise ConfigError("--sweep: steps must be >= 1")
    if any(not 0.0 <= v < 1.0 for v in grid.get("warm_start", [])):
        raise ConfigError("--sweep: warm_start values must be in [0, 1)")
    if any(v is not None and not 0.0 <= v <= 1.0 for v in grid.get("detail", [])):
        raise ConfigError("--sweep: detail values must be in [0, 1]")


def load_pipeline(checkpoint: str, device: str, compile: bool = False, int8: bool = False):
    """SmokeFlow from a checkpoint folder; a clear error when the folder or the pipeline is missing."""
    if not os.path.isdir(checkpoint):
        raise CheckpointError(checkpoint, "checkpoint folder not found")
    try:
        from smokeflow.pipeline import SmokeFlow
    except ImportError as err:
        raise CheckpointError(checkpoint, f"cannot load models: smokeflow.pipeline is unavailable ({err})") from None
    return SmokeFlow.from_pretrained(checkpoint, device=device, compile=compile, int8=int8)


def run(args) -> int:
    from smokeflow.metrics import evaluation, report
    from smokeflow.metrics.baselines import FlowModelPredictor
    from smokeflow.metrics.fvd import load_i3d
    from smokeflow.metrics.lpips_metric import load_lpips

    _check_arguments(args)
    check_network_speed_arguments(args)
    started = time.perf_counter()
    progress = not args.no_progress
    videos = evaluation.load_evaluation_videos(args.data, args.split, args.num_observed, args.num_frames,
                                               args.num_videos, args.start_frame, args.window_stride)
    windows = f" (windows of {len({n.rsplit('@', 1)[0] for n in videos.names})} videos, one every " \
        f"{args.window_stride} frames)" if args.window_stride else ""
    print(f"evaluate: {len(videos.names)} videos{windows} of {args.data}/{args.split}"
          + (f" ({len(videos.skipped)} too short, skipped)" if videos.skipped else ""), file=sys.stderr)
    pipe = load_pipeline(args.checkpoint, args.device, compile=args.compile, int8=args.int8)
    lpips_availability = load_lpips(args.lpips_weights, args.device)
    if not lpips_availability.available:
        print(lpips_availability.reason, file=sys.stderr)
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    baselines = [] if args.no_baselines else evaluation.default_baselines(pipe)

    def model_predictor(combo: dict) -> FlowModelPredictor:
        return FlowModelPredictor(pipe, steps=combo["steps"], solver=combo["solver"], warm_start=combo["warm_start"],
                                  context_policy=args.context_policy, reencode=args.reencode,
                                  warm_start_motion=combo.get("warm_start_motion", args.warm_start_motion),
                                  detail_guidance=args.detail_guidance, detail=combo.get("detail", args.detail))

    if args.sweep:
        try:
            grid = evaluation.parse_sweep(args.sweep)
        except ValueError as err:
            raise ConfigError(f"--sweep: {err}") from None
        _check_sweep_values(grid)
        defaults = {"steps": args.steps, "solver": args.solver, "warm_start": args.warm_start,
                    "warm_start_motion": args.warm_start_motion, "detail": args.detail}
        combos = evaluation.sweep_combinations(grid, defaults)
        for combo in combos:  # "auto" recorded as the amount it stands for at that warm start
            combo["detail"] = pipe.resolve_detail(combo.get("detail"), combo["warm_start"])
        combos = [c for i, c in enumerate(combos) if c not in combos[:i]]  # auto may equal a listed amount
        protocol = {"checkpoint": os.path.abspath(args.checkpoint), "split": args.split,
                    "num_videos": len(videos.names), "num_observed": args.num_observed,
                    "num_frames": args.num_frames, "num_samples": args.num_samples, "seed": args.seed}
        result = evaluation.run_sweep(pipe, model_predictor, combos, videos, args.csv, protocol, args.num_samples,
                                      args.seed, lpips_availability, baselines, progress)
        print(format_sweep_table(result["rows"]))
        if result["skipped"]:
            print(f"{result['skipped']} settings were already in {args.csv} and were not rerun", file=sys.stderr)
        if args.html:
            report.write_sweep_html(result["rows"], args.html)
            print(f"wrote {args.html}", file=sys.stderr)
        print(f"wrote {args.csv}", file=sys.stderr)
    else:
        i3d_availability = load_i3d(args.fvd_weights, args.device, download=not args.no_fvd_download)
        combo = {"steps": args.steps, "solver": args.solver, "warm_start": args.warm_start,
                 "warm_start_motion": args.warm_start_motion}
        results = evaluation.evaluate(pipe, [model_predictor(combo), *baselines], videos, settings,
                                      args.num_samples, args.seed, lpips_availability, i3d_availability,
                                      progress=progress)
        print(report.format_table(results))
        if args.json:
            report.write_json_report(results, args.json)
            print(f"wrote {args.json}", file=sys.stderr)
        if args.html:
            report.write_html_report(results, args.html)
            print(f"wrote {args.html}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(f"evaluate: finished in {elapsed:.1f} s ({len(videos.names)} videos x {args.num_frames} frames, "
          f"K={args.num_samples})")
    return 0


def format_sweep_table(rows: list[dict]) -> str:
    """Sweep rows (as written to the CSV) as a plain-text table."""
    columns = [("predictor", "predictor"), ("steps", "N"), ("solver", "solver"), ("warm_start", "s"),
               ("warm_start_motion", "motion"), ("detail", "detail"),
               ("nfe_per_frame", "NFE/frame"), ("seconds_per_frame", "s/frame"), ("psnr", "PSNR"),
               ("psnr_best_of_k", "PSNR bestK"), ("ssim", "SSIM"), ("psnr_smoke", "smokePSNR"),
               ("lpips", "LPIPS"), ("change_ratio", "change ratio"), ("rise_ratio", "rise ratio"),
               ("fd_vqvae_features", "FD-VQVAE")]
    columns = [(k, h) for k, h in columns if any(str(r.get(k, "")) not in ("", "None") for r in rows)]

    def cell(key, value):
        if value in (None, "", "None"):
            return "-"
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        if key in ("steps",):
            return str(int(number))
        four_digits = ("ssim", "lpips", "seconds_per_frame", "change_ratio", "rise_ratio")
        return f"{number:.4f}" if key in four_digits else f"{number:.2f}"

    table = [[h for _, h in columns]] + [[cell(k, r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in table)
