"""Training step times in float32 and under bf16 autocast on this machine, and what ``precision: auto`` picks.

    python benchmarks/bench_training.py [--checkpoint checkpoints/default] [--threads 2] [--flow-batch 256]

Times one optimiser step (forward, backward, AdamW) of the checkpoint's flow network and of its VQVAE, each on
random inputs of the trained shapes, in both arithmetics (medians of ``--repeats`` steps after one warm-up), beside
a 1024^3 matmul in float32 and in bf16. On CPUs without native bf16 (no AVX512-BF16, no AMX) bf16 is emulated and
slower; "auto" then trains in float32 (:mod:`smokeflow.training.precision`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smokeflow.config import load_config  # noqa: E402
from smokeflow.flow.predictor import FlowConfig, build_vector_field  # noqa: E402
from smokeflow.models.vqvae import VQVAE, VQVAEConfig  # noqa: E402
from smokeflow.training.precision import describe_precision  # noqa: E402

from machine import machine_line  # noqa: E402 (benchmarks/machine.py)


def median_step_seconds(step, repeats: int) -> float:
    step()  # warm-up: oneDNN picks its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    seconds = median_step_seconds(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def training_step(model, inputs, loss_of, bf16: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(*inputs)
        loss = loss_of(out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/default", help="folder with config.yaml")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--flow-batch", type=int, default=256)
    parser.add_argument("--vqvae-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(os.path.join(args.checkpoint, "config.yaml"))
    print(machine_line())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"precision auto on this CPU: {describe_precision('cpu')}")
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"1024^3 matmul: float32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s ({bf16 / fp32:.2f}x)")

    flow = build_vector_field(FlowConfig.from_section(config["flow"])).train()
    c, (h, w) = flow.config.state_size, flow.config.state_res
    n = args.flow_batch
    flow_inputs = (torch.randn(n, c, h, w), torch.rand(n), torch.randn(n, c, h, w), torch.randn(n, c, h, w),
                   torch.randint(1, 4, (n,)))
    target = torch.randn(n, c, h, w)
    vqvae_config = VQVAEConfig(**config["vqvae"])
    vqvae = VQVAE(vqvae_config).train()
    frames = torch.rand(args.vqvae_batch, 3, vqvae_config.input_size, vqvae_config.input_size) * 2 - 1
    cases = [
        (f"flow network (width {flow.config.inner_dim}), batch {n}", flow, flow_inputs,
         lambda out: (out.float() - target).pow(2).mean()),
        (f"VQVAE, batch {args.vqvae_batch} frames", vqvae, (frames,),
         lambda out: (out.reconstruction.float() - frames).pow(2).mean()),
    ]
    for name, model, inputs, loss_of in cases:
        seconds = {mode: median_step_seconds(training_step(model, inputs, loss_of, mode == "bf16"), args.repeats)
                   for mode in ("fp32", "bf16")}
        print(f"{name}: one training step float32 {seconds['fp32']:.3f} s, bf16 autocast {seconds['bf16']:.3f} s "
              f"({seconds['fp32'] / seconds['bf16']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
