"""``smokeflow train-motion``: train the network that guesses the smoke's velocity field from one frame."""

from __future__ import annotations

HELP = ("train the one-frame motion network (frame -> per-pixel drift and rise) that the advected warm start "
        "uses when only one frame is observed; writes motion_net.* into --out (usually a checkpoint folder)")


def add_arguments(parser) -> None:
    from smokeflow.training.motion_trainer import MotionTrainingConfig

    defaults = MotionTrainingConfig()
    parser.add_argument("--data", required=True, help="dataset root with a train split (and a val split to score)")
    parser.add_argument("--out", required=True, help="folder to write motion_net.safetensors / motion_net.json "
                        "into, e.g. a checkpoint folder")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--width", type=int, default=defaults.width, help="channels of the first level")
    parser.add_argument("--max-videos", type=int, default=defaults.max_videos, help="train videos read")
    parser.add_argument("--val-videos", type=int, default=defaults.val_videos, help="val videos scored")
    parser.add_argument("--frames-per-video", type=int, default=defaults.frames_per_video,
                        help="first frames read of each video (default: %(default)s)")
    parser.add_argument("--random-seed", type=int, default=defaults.seed)
    parser.add_argument("--resume", action="store_true", help="continue from --out's motion_net_state.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a motion network already in --out (refused without it)")


def run(args) -> int:
    import os

    from smokeflow.errors import DataError
    from smokeflow.models.motion_net import MOTION_NET_FILE
    from smokeflow.training.motion_trainer import STATE_FILE, MotionTrainingConfig, describe_scores, train_motion_net

    existing = os.path.join(args.out, MOTION_NET_FILE)
    resumable = os.path.isfile(os.path.join(args.out, STATE_FILE))
    if os.path.isfile(existing) and not args.overwrite and not (args.resume and resumable):
        raise DataError(existing, "a motion network is already there (a finished run: nothing to resume); "
                        "pass --overwrite to train a new one in its place")
    if args.steps < 1 or args.batch_size < 1 or args.width < 8 or args.width % 8 or args.frames_per_video < 2:
        raise DataError(args.out, "--steps and --batch-size must be >= 1, --width a multiple of 8, "
                                  "--frames-per-video >= 2")
    config = MotionTrainingConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                  width=args.width, max_videos=args.max_videos, val_videos=args.val_videos,
                                  frames_per_video=args.frames_per_video, seed=args.random_seed)
    info = train_motion_net(args.data, args.out, config, resume=args.resume)
    print(f"motion network -> {existing}")
    print(describe_scores(info))
    return 0
