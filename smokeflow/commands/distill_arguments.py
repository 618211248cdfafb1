"""The options ``distill-guidance`` and ``distill-student`` share: the student's training run (steps, batch,
learning rate, EMA, clips, checkpoints, time limit, device, arithmetic, seed, resume / overwrite). Not a command
itself (``smokeflow.cli.COMMANDS`` does not list it)."""

from __future__ import annotations


def add_student_training_arguments(parser, defaults) -> None:
    """Add the shared options to ``parser``; ``defaults``: the distiller's config dataclass instance."""
    from smokeflow.training.precision import PRECISIONS

    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--ema-decay", type=float, default=defaults.ema_decay,
                        help="decay of the student's weight average, the weights saved (default: %(default)s)")
    parser.add_argument("--frames-per-clip", type=int, default=defaults.frames_per_clip,
                        help="frames of each training clip: videos need at least this many (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after a checkpoint once this much time has passed (continue with --resume)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--precision", default=defaults.precision, choices=PRECISIONS,
                        help="the student's arithmetic: auto (bf16 autocast on CUDA and on CPUs with native bf16, "
                             "else float32), fp32 or bf16 (default: %(default)s)")
    parser.add_argument("--random-seed", type=int, default=defaults.seed)
    parser.add_argument("--resume", action="store_true", help="continue from --out's train_state.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace a student already in --out")
