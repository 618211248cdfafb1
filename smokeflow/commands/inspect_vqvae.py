"""``smokeflow inspect-vqvae``: reconstruction quality, latent statistics and codebook use on a split."""

from __future__ import annotations

HELP = ("inspect a VQVAE checkpoint on a dataset split: reconstruction grid PNG, PSNR/SSIM (whole frame and "
        "smoke pixels), latent statistics, codebook usage; prints a summary and writes JSON")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. checkpoints/default)")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--split", default="test", help="split to inspect (default: test)")
    parser.add_argument("--num-videos", type=int, default=None, help="only the first N videos (default: all)")
    parser.add_argument("--out", default=None,
                        help="folder for vqvae_inspection.json and reconstructions.png (default: <checkpoint>/inspection)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def run(args) -> int:
    import os

    from smokeflow.training.vqvae_inspect import format_report, inspect_vqvae

    out = args.out or os.path.join(args.checkpoint, "inspection")
    report = inspect_vqvae(args.checkpoint, args.data, split=args.split, num_videos=args.num_videos, out_dir=out,
                           device=args.device)
    print(format_report(report))
    print(f"wrote {report['files']['json']} and {report['files']['grid']}")
    return 0
