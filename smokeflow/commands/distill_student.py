"""``smokeflow distill-student``: train a compact copy of a checkpoint's flow network (fewer blocks, a narrower
MLP) that samples as the checkpoint does, for CPUs where the full network is too slow
(:mod:`smokeflow.training.student_distiller`)."""

from __future__ import annotations

HELP = ("distil a checkpoint's flow network into a compact student (fewer blocks, narrower MLP: about a third "
        "of the work per step); writes a new checkpoint folder --out with the student as its flow network")


def add_arguments(parser) -> None:
    from smokeflow.commands.distill_arguments import add_student_training_arguments
    from smokeflow.training.student_distiller import StudentDistillConfig

    defaults = StudentDistillConfig()
    parser.add_argument("--checkpoint", required=True, help="the teacher: a checkpoint folder with flow weights")
    parser.add_argument("--data", required=True, help="dataset root with the teacher's latent cache "
                        "(smokeflow encode-latents --checkpoint TEACHER --data DATA)")
    parser.add_argument("--out", required=True, help="new checkpoint folder: the teacher's files with the student "
                        "as flow.safetensors")
    parser.add_argument("--depth", type=int, default=defaults.depth,
                        help="the student's blocks in each half of the U, cut from the teacher's outermost ones "
                             "(default: %(default)s)")
    parser.add_argument("--mlp-ratio", type=float, default=defaults.mlp_ratio,
                        help="the student's MLP hidden width over the token width; its units are the teacher's "
                             "strongest (default: %(default)s)")
    parser.add_argument("--detail-of", default=None, metavar="COMPACT",
                        help="make a detail copy for compact checkpoint COMPACT (a student of --checkpoint): distil "
                             "--checkpoint's detail weights into a copy of COMPACT's network; --out gets COMPACT's "
                             "files with it as flow_detail.safetensors (predict/evaluate --detail)")
    parser.add_argument("--init", default=None, metavar="COMPACT",
                        help="start the student from compact checkpoint COMPACT's network (a student of --checkpoint "
                             "of this --depth and --mlp-ratio) instead of a fresh cut: go on distilling it with a new "
                             "schedule or other data (--resume continues an unfinished run instead)")
    add_student_training_arguments(parser, defaults)


def run(args) -> int:
    import os

    from smokeflow.errors import DataError
    from smokeflow.training.checkpoint_io import FLOW_WEIGHTS, TRAIN_STATE
    from smokeflow.training.student_distiller import STUDENT_INFO, StudentDistillConfig, distill_student

    # Any checkpoint's files in --out (a student's, a training run's, a shipped folder's) stay unless asked.
    done = [os.path.join(args.out, name) for name in (STUDENT_INFO, TRAIN_STATE, FLOW_WEIGHTS, "config.yaml")]
    existing = next((p for p in done if os.path.isfile(p)), None)
    if existing and not args.overwrite and not args.resume:
        raise DataError(existing, "a checkpoint is already there; pass --resume to continue a distillation in it "
                                  "or --overwrite to start a new one in its place")
    try:
        config = StudentDistillConfig(depth=args.depth, mlp_ratio=args.mlp_ratio, steps=args.steps,
                                      batch_size=args.batch_size, learning_rate=args.learning_rate,
                                      ema_decay=args.ema_decay, frames_per_clip=args.frames_per_clip,
                                      checkpoint_every=args.checkpoint_every, seed=args.random_seed,
                                      precision=args.precision)
    except ValueError as err:
        raise DataError(args.out, str(err)) from None
    last = distill_student(args.checkpoint, args.data, args.out, config, resume=args.resume,
                           max_minutes=args.max_minutes, device=args.device, detail_of=args.detail_of,
                           init_from=args.init)
    print(f"student -> {args.out} (a checkpoint folder: predict/evaluate --checkpoint {args.out})")
    if args.detail_of:
        print("the student is the folder's detail copy: sample with --detail A (auto by default)")
    print(f"student's squared error to the teacher's clean-latent estimate: {last.get('val_gap', float('nan')):.5f} "
          "on val draws (smoke tokens weighted)")
    return 0
