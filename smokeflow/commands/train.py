"""``smokeflow train``: train the RIVER flow model on the latent cache of a dataset."""

from __future__ import annotations

import os

from smokeflow.errors import ConfigError
from smokeflow.training.precision import PRECISIONS

HELP = "Train the flow (vector field) model on cached VQVAE latents; --num-gpus N runs N DDP processes."


def add_arguments(parser) -> None:
    parser.add_argument("--run-name", required=True, help="run folder name under --runs-dir")
    parser.add_argument("--config", required=True, help="YAML config (sections data, flow, flow_training)")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes (one per GPU; on CPU N gloo processes) launched through torchrun")
    parser.add_argument("--random-seed", type=int, default=0)
    parser.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (offline mode)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--max-steps", type=int, default=None, help="override flow_training.max_steps")
    parser.add_argument("--data", default=None, help="dataset root holding the latent cache "
                        "(default: data.data_path of the config)")
    parser.add_argument("--vqvae-checkpoint", default=None,
                        help="VQVAE folder whose files are copied into the run (default: <data>/VQVAE_READY)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop (after a checkpoint) after this many minutes; continue later with --resume")
    parser.add_argument("--stop-after-step", type=int, default=None,
                        help="stop after this step (and its checkpoint, if due) with the schedule of max_steps, "
                             "as if killed there; for short comparison runs; continue later with --resume")
    parser.add_argument("--init-from", default=None,
                        help="folder whose flow.safetensors initialises the network (fine-tuning)")
    parser.add_argument("--set", nargs="+", default=None, metavar="SECTION.KEY=VALUE",
                        help="change config values for this run, e.g. flow_training.learning_rate=2e-4 "
                             "(recorded in the run's config.yaml; not with --resume)")
    parser.add_argument("--runs-dir", default="runs", help="folder that holds run folders")
    parser.add_argument("--precision", default=None, choices=PRECISIONS, help="training arithmetic: auto (bf16 autocast on CUDA and on CPUs with native bf16, else float32), fp32 or bf16 (default: flow_training.precision, auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _command_line(args) -> list[str]:
    """This command's arguments (after ``smokeflow``), rebuilt from ``args`` for the torchrun children."""
    argv = ["train", "--run-name", args.run_name, "--config", args.config, "--random-seed", str(args.random_seed),
            "--runs-dir", args.runs_dir]
    for flag, value in (("--device", args.device), ("--max-steps", args.max_steps), ("--data", args.data),
                        ("--vqvae-checkpoint", args.vqvae_checkpoint),
                        ("--max-minutes", args.max_minutes), ("--init-from", args.init_from),
                        ("--stop-after-step", args.stop_after_step), ("--precision", args.precision)):
        if value is not None:
            argv += [flag, str(value)]
    if args.set:
        argv += ["--set", *args.set]
    for flag, on in (("--wandb", args.wandb), ("--resume", args.resume), ("--no-progress", args.no_progress)):
        if on:
            argv.append(flag)
    return argv


def run(args) -> int:
    from smokeflow.config import apply_overrides, load_config
    from smokeflow.training.distributed import needs_relaunch, relaunch_with_torchrun
    from smokeflow.training.flow_trainer import train_flow

    if args.num_gpus < 1:
        raise ConfigError(f"--num-gpus must be >= 1, got {args.num_gpus}")
    if needs_relaunch(args.num_gpus):
        return relaunch_with_torchrun(args.num_gpus, _command_line(args))
    device = args.device
    run_dir = os.path.join(args.runs_dir, args.run_name)
    if args.resume:
        if args.set:
            raise ConfigError("--set cannot be combined with --resume: a resumed run keeps its config.yaml")
        config = load_config(os.path.join(run_dir, "config.yaml"))
    else:
        config = apply_overrides(load_config(args.config), args.set)
    if args.precision is not None:  # arithmetic only: also allowed when resuming
        config.setdefault("flow_training", {})["precision"] = args.precision
    data_root = args.data or config.get("data", {}).get("data_path", "final_dataset")
    metrics = train_flow(run_dir, config, data_root, seed=args.random_seed, device=device,
                         max_steps=args.max_steps, resume=args.resume, vqvae_checkpoint=args.vqvae_checkpoint,
                         use_wandb=args.wandb, show_progress=not args.no_progress,
                         max_minutes=args.max_minutes, init_from=args.init_from,
                         stop_after_step=args.stop_after_step)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"smokeflow train: run folder {run_dir}; last metrics {metrics}")
    return 0
