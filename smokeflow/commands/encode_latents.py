"""``smokeflow encode-latents``: encode dataset splits once into memory-mapped latent caches."""

from __future__ import annotations

HELP = "encode a dataset's frames with a VQVAE checkpoint into a memory-mapped latent cache (DATA/.latents/)"


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (vqvae.safetensors, "
                        "latent_stats.safetensors, config.yaml)")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--split", default="all", help="train, val, test or all (default: every split present)")
    parser.add_argument("--cache-dir", default=None, help="folder for the split caches (default DATA/.latents)")
    flips = parser.add_mutually_exclusive_group()
    flips.add_argument("--flips", dest="flips", action="store_true", default=None,
                       help="also cache latents of left-right flipped frames (default: train split only)")
    flips.add_argument("--no-flips", dest="flips", action="store_false")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache is up to date")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=256, help="frames per encoder call (default 256)")


def run(args) -> int:
    import os

    from smokeflow.data.latent_cache import build_latent_cache
    from smokeflow.data.naming import SPLITS
    from smokeflow.errors import DataError
    from smokeflow.pipeline import SmokeFlow

    if args.split == "all":
        splits = [s for s in SPLITS if os.path.isdir(os.path.join(args.data, s))
                  or os.path.isfile(os.path.join(args.data, f"{s}.npz"))]
        if not splits:
            raise DataError(args.data, f"no split folder ({', '.join(SPLITS)}) found")
    else:
        splits = [args.split]
    pipe = SmokeFlow.from_pretrained(args.checkpoint, device=args.device)
    for split in splits:
        info = build_latent_cache(args.checkpoint, args.data, split, flips=args.flips, cache_root=args.cache_dir,
                                  device=args.device, batch_size=args.batch_size, force=args.force, pipe=pipe)
        if info.rebuilt:
            print(f"{split}: encoded {info.num_frames} frames in {info.seconds:.1f} s "
                  f"({info.frames_per_second:.0f} frames/s; {info.reason}) -> {info.folder}")
        else:
            print(f"{split}: cache up to date ({info.num_frames} frames) -> {info.folder}")
    return 0
