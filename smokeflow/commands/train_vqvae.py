"""``smokeflow train-vqvae``: train (or resume) the VQVAE; progress bar, metrics.jsonl, atomic checkpoints."""

from __future__ import annotations

import sys

from smokeflow.training.precision import PRECISIONS

HELP = "train the VQVAE on a dataset's training split (resumable; multi-process via torchrun with --num-gpus)"


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="YAML config with data / vqvae / vqvae_training sections")
    parser.add_argument("--run-name", required=True, help="run folder name under --runs-dir")
    parser.add_argument("--runs-dir", default="runs", help="where run folders live (default: runs)")
    parser.add_argument("--data", default=None, help="dataset root (default: the config's data.data_path)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"],
                        help="training device (default: cuda when available, else cpu)")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes to train with (DDP through torchrun; on CPU the gloo backend)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--max-steps", type=int, default=None, help="override vqvae_training.max_steps")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="override vqvae_training.max_minutes (stop and anneal by wall time)")
    parser.add_argument("--lpips-weights", default=None,
                        help="AlexNet weights for the LPIPS loss term (default: the torch hub cache)")
    parser.add_argument("--init-from", default=None,
                        help="checkpoint folder (vqvae.safetensors) whose weights start the run")
    parser.add_argument("--finetune-decoder", action="store_true",
                        help="with --init-from: train only the decoder; encoder, codebook and latent statistics "
                             "stay bit-identical, so existing latents (caches, flow models) remain valid")
    parser.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (if installed)")
    parser.add_argument("--precision", default=None, choices=PRECISIONS, help="training arithmetic: auto (bf16 autocast on CUDA and on CPUs with native bf16, else float32), fp32 or bf16 (default: the config's, auto)")


def run(args) -> int:
    from smokeflow.training.distributed import needs_relaunch, relaunch_with_torchrun

    if needs_relaunch(args.num_gpus):
        argv = sys.argv[1:]
        if not argv or argv[0] != "train-vqvae":  # called as a function, not from the command line
            argv = _command_line(args)
        return relaunch_with_torchrun(args.num_gpus, argv)

    from smokeflow.training.vqvae_trainer import train_vqvae

    result = train_vqvae(args.config, args.run_name, runs_dir=args.runs_dir, device=args.device,
                         resume=args.resume, max_steps=args.max_steps, data_path=args.data,
                         max_minutes=args.max_minutes, use_wandb=args.wandb, lpips_weights=args.lpips_weights,
                         init_from=args.init_from, finetune_decoder=args.finetune_decoder,
                         precision=args.precision)
    if result.final_metrics:
        m = result.final_metrics
        print(f"step {result.step}: val PSNR {m['psnr']:.2f} dB, smoke PSNR {m['psnr_smoke']:.2f} dB, "
              f"SSIM {m['ssim']:.4f}, codes used {m['codes_used']}")
    print(f"run folder: {result.run_dir}")
    return 0


def _command_line(args) -> list[str]:
    argv = ["train-vqvae", "--config", args.config, "--run-name", args.run_name, "--runs-dir", args.runs_dir]
    for flag, value in (("--data", args.data), ("--device", args.device), ("--max-steps", args.max_steps),
                        ("--max-minutes", args.max_minutes), ("--lpips-weights", args.lpips_weights), ("--init-from", args.init_from),
                        ("--precision", args.precision)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--resume"] * bool(args.resume) + ["--wandb"] * bool(args.wandb)
    argv += ["--finetune-decoder"] * bool(args.finetune_decoder)
    return argv
