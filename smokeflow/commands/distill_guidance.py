"""``smokeflow distill-guidance``: train a flow network that samples as its teacher does with detail guidance,
at one network evaluation per step (:mod:`smokeflow.training.guidance_distiller`)."""

from __future__ import annotations

HELP = ("distil detail guidance into a copy of a checkpoint's flow network (one network call per step instead "
        "of two); writes a new checkpoint folder --out: the checkpoint with the copy as its detail weights "
        "(predict/evaluate --detail)")


def add_arguments(parser) -> None:
    from smokeflow.commands.distill_arguments import add_student_training_arguments
    from smokeflow.training.guidance_distiller import GuidanceDistillConfig

    defaults = GuidanceDistillConfig()
    parser.add_argument("--checkpoint", required=True, help="the teacher: a checkpoint folder with flow weights")
    parser.add_argument("--data", required=True, help="dataset root with the teacher's latent cache "
                        "(smokeflow encode-latents --checkpoint TEACHER --data DATA)")
    parser.add_argument("--out", required=True, help="new checkpoint folder: the teacher's files and the student "
                        "as flow_detail.safetensors")
    parser.add_argument("--weight", type=float, default=defaults.weight,
                        help="the detail-guidance weight to distil (default: %(default)s)")
    parser.add_argument("--min-time", type=float, default=defaults.min_time,
                        help="smallest flow time trained (default: %(default)s)")
    add_student_training_arguments(parser, defaults)


def run(args) -> int:
    import os

    from smokeflow.errors import DataError
    from smokeflow.training.checkpoint_io import DETAIL_FLOW_WEIGHTS
    from smokeflow.training.guidance_distiller import GuidanceDistillConfig, describe, distill_detail_guidance

    existing = os.path.join(args.out, DETAIL_FLOW_WEIGHTS)
    if os.path.isfile(existing) and not args.overwrite and not args.resume:
        raise DataError(existing, "detail weights are already there; pass --resume to continue that distillation "
                                  "or --overwrite to start a new one in its place")
    try:
        config = GuidanceDistillConfig(weight=args.weight, steps=args.steps, batch_size=args.batch_size,
                                       learning_rate=args.learning_rate, min_time=args.min_time,
                                       ema_decay=args.ema_decay, frames_per_clip=args.frames_per_clip,
                                       checkpoint_every=args.checkpoint_every, seed=args.random_seed,
                                       precision=args.precision)
    except ValueError as err:
        raise DataError(args.out, str(err)) from None
    last = distill_detail_guidance(args.checkpoint, args.data, args.out, config, resume=args.resume,
                                   max_minutes=args.max_minutes, device=args.device)
    print(f"student -> {existing} (sample it with --detail 1, or blend it in with --detail between 0 and 1)")
    print(describe(last))
    return 0
