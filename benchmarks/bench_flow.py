"""Speed of the flow model on this machine: one rollout end to end, and the network's GFLOP/s beside a plain
fp32 matmul's GFLOP/s measured in the same run.

    .venv/bin/python benchmarks/bench_flow.py [--checkpoint checkpoints/default] [--config configs/x.yaml]

Targets (issue 4), on the 2-core CPU: 9 frames at N = 10 Euler for one sample in <= 1.0 s including
decoding; the network at >= 70 % of the matmul figure at batch 8 and >= 50 % at batch 1. fp32 on CPU
(bf16 is about 2x slower there), bf16 autocast on CUDA. Other jobs on the machine make numbers noisy:
each figure is the best of several repeats.

Every figure is printed twice: eager (the default) and with ``torch.compile`` of the per-step call
(``SmokeFlow.from_pretrained(..., compile=True)`` / ``--compile``), with the one-off compile time;
``--no-compile`` skips the second set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smokeflow.config import load_config  # noqa: E402
from smokeflow.flow.predictor import FlowConfig, FlowPredictor  # noqa: E402


def best_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / best_time(lambda: a @ b, repeats) / 1e9


def network_gflops(predictor: FlowPredictor, batch: int, repeats: int) -> float:
    """GFLOP/s of the per-step call the predictor's rollouts use (eager or compiled)."""
    model = predictor.model
    velocity = predictor.velocity_fn or model.velocity
    c, (h, w) = model.config.state_size, model.config.state_res
    z = torch.randn(batch, c, h, w)
    t = torch.full((batch,), 0.5)
    with torch.inference_mode():
        cond = model.condition(z, z, torch.full((batch,), 2))
        seconds = best_time(lambda: velocity(z, t, cond), repeats)
    return model.flops_per_call(batch) / seconds / 1e9


def linear_layers_gflops(predictor: FlowPredictor, batch: int, repeats: int) -> float:
    """GFLOP/s of the transformer blocks' linear layers alone, back to back at their real shapes (B x 65 tokens).

    Nothing else (norms, attention, activations, copies) runs, so this is the ceiling the whole network can
    reach on this machine at this batch size: small matmuls do not reach the 1024^3 figure.
    """
    model = predictor.model
    n = model.num_positions + 1
    blocks = [*model.in_blocks, *model.mid_blocks, *model.out_blocks]
    layers = [m for block in blocks for m in block.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(batch, n, layer.in_features) for layer in layers]
    flops = sum(2 * batch * n * layer.in_features * layer.out_features for layer in layers)

    def run():
        for layer, x in zip(layers, inputs):
            layer(x)

    with torch.inference_mode():
        seconds = best_time(run, repeats)
    return flops / seconds / 1e9


def load(args):
    """(predictor, decode function or None, description)."""
    if args.checkpoint and os.path.isfile(os.path.join(args.checkpoint, "flow.safetensors")):
        from smokeflow.pipeline import SmokeFlow

        pipe = SmokeFlow.from_pretrained(args.checkpoint, device="cpu")
        return FlowPredictor.from_folder(args.checkpoint), pipe.decode, f"trained weights from {args.checkpoint}"
    config = load_config(args.config)
    predictor = FlowPredictor.from_config(FlowConfig.from_section(config["flow"]))
    decode = None
    if "vqvae" in config:
        from smokeflow.models.vqvae import VQVAE, VQVAEConfig

        vqvae = VQVAE(VQVAEConfig(**config["vqvae"])).eval()

        def decode(z):
            with torch.inference_mode():
                x = vqvae.decode(z.reshape(-1, *z.shape[-3:]))
            return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return predictor, decode, f"random weights of {args.config}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/default")
    parser.add_argument("--config", default="configs/smoke_dataset.yaml",
                        help="used (random weights) when --checkpoint has no flow weights")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile figures")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor, decode, what = load(args)
    model = predictor.model
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"flow model: {what}; {params:.1f}M parameters, width {model.config.inner_dim}, "
          f"{len(model.in_blocks) + len(model.mid_blocks) + len(model.out_blocks)} blocks; "
          f"torch threads {torch.get_num_threads()}; fp32")

    c, (h, w) = model.config.state_size, model.config.state_res
    z_obs = torch.randn(1, c, h, w)
    variants = [("eager", predictor)]
    if not args.no_compile:
        variants.append(("compiled", FlowPredictor(model, predictor.path, compile=True)))
    for name, variant in variants:
        def rollout_and_decode():
            out = variant.predict_latents(z_obs, 9, steps=10, solver="euler", warm_start=0.1, num_samples=1)
            if decode is not None:
                decode(out.latents[0])
            return out

        start = time.perf_counter()
        nfe = rollout_and_decode().nfe  # for the compiled variant: compiles for batch 1
        first = time.perf_counter() - start
        seconds = best_time(rollout_and_decode, args.repeats, warmup=1)
        decoded = "including decoding" if decode is not None else "WITHOUT decoding (no VQVAE)"
        print(f"[{name}] rollout 9 frames, N=10 euler, 1 sample, {decoded}: {seconds:.3f} s  ({nfe} network "
              f"calls; first call {first:.1f} s; target <= 1.0 s: {'OK' if seconds <= 1.0 else 'MISSED'})")
        if getattr(variant.velocity_fn, "failure", None):
            print(f"[{name}] compilation failed, figures are eager: {variant.velocity_fn.failure}")
        for batch, target in ((1, 0.5), (8, 0.7)):
            g = network_gflops(variant, batch, repeats=max(10, 4 * args.repeats))
            mm = matmul_gflops()  # right beside the network figure: this machine's speed drifts
            print(f"[{name}] network batch {batch}: {g:6.1f} GFLOP/s = {100 * g / mm:5.1f} % of fp32 matmul "
                  f"({mm:.1f} GFLOP/s, 1024^3); target >= {int(target * 100)} %: "
                  f"{'OK' if g >= target * mm else 'MISSED'}")
    for batch in (1, 8):
        g = linear_layers_gflops(predictor, batch, repeats=max(10, 4 * args.repeats))
        mm = matmul_gflops()
        print(f"ceiling: the blocks' linear layers alone at batch {batch} ({model.num_positions + 1} tokens "
              f"each): {g:6.1f} GFLOP/s = {100 * g / mm:5.1f} % of fp32 matmul ({mm:.1f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    np.random.seed(0)
    raise SystemExit(main())
