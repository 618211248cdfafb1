"""Speed of the flow model on this machine: one rollout end to end, and the network's GFLOP/s beside a plain
fp32 matmul's GFLOP/s measured in the same run.

    .venv/bin/python benchmarks/bench_flow.py [--checkpoint checkpoints/default] [--config configs/x.yaml]

Targets (issue 4), on the 2-core CPU: 9 frames at N = 10 Euler for one sample in <= 1.0 s including
decoding; the network at >= 70 % of the matmul figure at batch 8 and >= 50 % at batch 1. fp32 on CPU
(bf16 is about 2x slower there), bf16 autocast on CUDA. The first line names the machine: the project's
2-core machines come in two kinds, and the target was set on the slower, AVX2-only one. Other jobs on the
machine make numbers noisy: see below.

Every figure is printed for four forms of the per-step call: plain eager PyTorch, eager with the linear
weights pre-packed for oneDNN and GELU fused (the default on CPU, ``smokeflow/flow/packed_velocity.py``), the
int8 network (``smokeflow/flow/int8_velocity.py``, ``--int8``; where this PyTorch has a quantised CPU engine;
its GFLOP/s count int8 multiply-adds as FLOPs) and ``torch.compile`` of the packed one
(``SmokeFlow.from_pretrained(..., compile=True)`` / ``--compile``), with the one-off compile time;
``--no-compile`` skips the last. The machine's speed drifts by tens of percent within
minutes, so each network figure is timed right beside the matmul, round after round, and reported as the
median ratio with its range; rollout times are given as best and median.
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
from smokeflow.flow.int8_velocity import int8_available  # noqa: E402
from smokeflow.flow.packed_velocity import PackedLinear, packing_available  # noqa: E402
from smokeflow.flow.predictor import FlowConfig, FlowPredictor  # noqa: E402

from machine import machine_line  # noqa: E402 (benchmarks/machine.py)


def best_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


_A, _B = torch.randn(1024, 1024), torch.randn(1024, 1024)


def matmul_gflops(repeats: int = 5) -> float:
    """A plain fp32 1024^3 matmul's GFLOP/s (best of ``repeats``)."""
    return 2 * 1024 ** 3 / best_time(lambda: _A @ _B, repeats) / 1e9


def beside_matmul(fn, flops: int, rounds: int = 7, repeats: int = 10) -> dict:
    """GFLOP/s of ``fn`` as a share of the matmul figure, robust to this machine's drift.

    Each round times ``fn`` (best of ``repeats``) right after the matmul (best of 5), so both see the same
    machine state; the ratio is taken per round. Returns the medians over rounds and the ratio's range.
    """
    gflops, ratios, matmuls = [], [], []
    for _ in range(rounds):
        mm = matmul_gflops()
        g = flops / best_time(fn, repeats) / 1e9
        gflops.append(g)
        matmuls.append(mm)
        ratios.append(g / mm)
    return {"gflops": float(np.median(gflops)), "matmul": float(np.median(matmuls)),
            "ratio": float(np.median(ratios)), "low": min(ratios), "high": max(ratios)}


def network_figures(predictor: FlowPredictor, batch: int) -> dict:
    """:func:`beside_matmul` of the per-step call the predictor's rollouts use (plain, packed or compiled)."""
    model = predictor.model
    velocity = predictor.velocity_fn or model.velocity
    c, (h, w) = model.config.state_size, model.config.state_res
    z = torch.randn(batch, c, h, w)
    t = torch.full((batch,), 0.5)
    with torch.inference_mode():
        cond = model.condition(z, z, torch.full((batch,), 2))
        return beside_matmul(lambda: velocity(z, t, cond), model.flops_per_call(batch))


def linear_layers_figures(model, batch: int, packed: bool) -> dict:
    """:func:`beside_matmul` of the transformer blocks' linear layers alone, back to back at their real shapes
    (B x 65 tokens), plain or oneDNN-packed.

    Nothing else (norms, attention, activations, copies) runs, so this is the ceiling the whole network can
    reach on this machine at this batch size: small matmuls do not reach the 1024^3 figure.
    """
    n = model.num_positions + 1
    blocks = [*model.in_blocks, *model.mid_blocks, *model.out_blocks]
    layers = [m for block in blocks for m in block.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(batch, n, layer.in_features) for layer in layers]
    flops = sum(2 * batch * n * layer.in_features * layer.out_features for layer in layers)
    if packed:
        layers = [PackedLinear(layer, n) for layer in layers]

    def run():
        for layer, x in zip(layers, inputs):
            layer(x)

    with torch.inference_mode():
        return beside_matmul(run, flops)


def reference_encoder_figures(width: int, batch: int, tokens: int = 65, depth: int = 4) -> dict:
    """:func:`beside_matmul` of a plain ``nn.TransformerEncoder`` (PyTorch's fused inference path) of this
    width and depth over ``tokens`` tokens: what PyTorch itself reaches at these shapes on this machine."""
    layer = torch.nn.TransformerEncoderLayer(width, 8, 4 * width, dropout=0.0, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, depth, enable_nested_tensor=False).eval()
    x = torch.randn(batch, tokens, width)
    flops = 2 * batch * depth * (tokens * (4 * width * width + 2 * width * 4 * width) + 2 * tokens * tokens * width)
    with torch.inference_mode():
        return beside_matmul(lambda: encoder(x), flops)


def load(args):
    """(predictor, decode function or None, description, SmokeFlow pipeline or None)."""
    if args.checkpoint and os.path.isfile(os.path.join(args.checkpoint, "flow.safetensors")):
        from smokeflow.pipeline import SmokeFlow

        pipe = SmokeFlow.from_pretrained(args.checkpoint, device="cpu")
        return (FlowPredictor.from_folder(args.checkpoint), pipe.decode, f"trained weights from {args.checkpoint}",
                pipe)
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
    return predictor, decode, f"random weights of {args.config}", None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/default")
    parser.add_argument("--config", default="configs/smoke_dataset.yaml",
                        help="used (random weights) when --checkpoint has no flow weights")
    parser.add_argument("--repeats", type=int, default=7, help="rollout rounds (each times every variant)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile figures")
    parser.add_argument("--detail-guidance", type=float, default=0.25,
                        help="weight of the detail-guided rollout timed beside the others (default: %(default)s)")
    parser.add_argument("--detail", type=float, default=0.5,
                        help="detail blend of the rollout timed beside the others, when the checkpoint has detail "
                             "weights (default: %(default)s)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    predictor, decode, what, pipe = load(args)
    model = predictor.model
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"flow model: {what}; {params:.1f}M parameters, width {model.config.inner_dim}, "
          f"{len(model.in_blocks) + len(model.mid_blocks) + len(model.out_blocks)} blocks; "
          f"torch threads {torch.get_num_threads()}; fp32")

    c, (h, w) = model.config.state_size, model.config.state_res
    z_obs = torch.randn(1, c, h, w)
    variants = [("plain", FlowPredictor(model, predictor.path, pack=False))]
    if packing_available():
        variants.append(("packed", FlowPredictor(model, predictor.path, pack=True)))
    if int8_available():
        variants.append(("int8", FlowPredictor(model, predictor.path, int8=True)))
    if not args.no_compile:
        variants.append(("compiled", FlowPredictor(model, predictor.path, compile=True)))
    print("plain: eager PyTorch; packed: eager with oneDNN pre-packed weights and fused GELU (the default on "
          "CPU); int8: the blocks' linear layers in int8 (--int8; its GFLOP/s count int8 multiply-adds as FLOPs); "
          "compiled: torch.compile of the packed network (--compile)")
    print(f"each ratio: median over 7 rounds of (network, then a {1024}^3 fp32 matmul right beside it), "
          "with the range over rounds")

    def rollout_and_decode(variant):
        out = variant.predict_latents(z_obs, 9, steps=10, solver="euler", warm_start=0.1, num_samples=1)
        if decode is not None:
            decode(out.latents[0])
        return out

    first, nfe = {}, 0
    for name, variant in variants:
        start = time.perf_counter()
        nfe = rollout_and_decode(variant).nfe  # for the compiled variant: compiles for batch 1
        first[name] = time.perf_counter() - start
    if pipe is not None and pipe.motion_prior is not None:
        # The advected warm start (the default of SmokeFlow.predict from one frame): the pipeline's own packed
        # predictor, plus a decode-shift-encode of the previous frame before each frame (whose decodes the output
        # reuses).
        def advected_rollout():
            out = pipe.predict_latents(z_obs, 9, steps=10, solver="euler", warm_start=0.1, num_samples=1)
            pipe.decode_rollout(out)  # as SmokeFlow.predict: frames 1-8 were decoded in the loop
            return out

        # Detail guidance (--detail-guidance): a blur of the previous frame (decode, blur, encode) per frame and
        # both branches of every step in one batch of 2.
        def guided_rollout():
            out = pipe.predict_latents(z_obs, 9, steps=10, solver="euler", warm_start=0.1, num_samples=1,
                                       detail_guidance=args.detail_guidance)
            pipe.decode_rollout(out)
            return out

        guided_name = f"packed, advected warm start, detail guidance {args.detail_guidance}"
        added = [("packed, advected warm start", advected_rollout), (guided_name, guided_rollout)]
        if int8_available():
            from smokeflow.pipeline import SmokeFlow

            int8_pipe = SmokeFlow.from_pretrained(args.checkpoint, device="cpu", int8=True)

            def int8_advected_rollout():
                out = int8_pipe.predict_latents(z_obs, 9, steps=10, solver="euler", warm_start=0.1, num_samples=1)
                int8_pipe.decode_rollout(out)
                return out

            added.append(("int8, advected warm start", int8_advected_rollout))
        if pipe.flow.has_detail:
            # The detail blend (--detail): a second pipeline set once to the blend; the same work per step as
            # the plain network. Setting it is a one-time cost (blend, then the re-pack at the first rollout).
            from smokeflow.pipeline import SmokeFlow

            blended = SmokeFlow.from_pretrained(args.checkpoint, device="cpu")
            start = time.perf_counter()
            blended.flow.set_detail(args.detail)
            print(f"detail blend {args.detail}: weights blended in {1000 * (time.perf_counter() - start):.0f} ms "
                  "(once; the packed network is rebuilt at the next rollout, inside its 'first call')")

            def blended_rollout():
                out = blended.predict_latents(z_obs, 9, steps=10, solver="euler", warm_start=0.1, num_samples=1,
                                              detail=args.detail)
                blended.decode_rollout(out)
                return out

            added.append((f"packed, advected warm start, detail blend {args.detail}", blended_rollout))
        variants += added
        for name, rollout_fn in added:
            start = time.perf_counter()
            rollout_fn()
            first[name] = time.perf_counter() - start
    # Rollouts of all variants in turn, round after round, so that the machine's drift hits them alike.
    times = {name: [] for name, _ in variants}
    for _ in range(args.repeats):
        for name, variant in variants:
            begin = time.perf_counter()
            variant() if not isinstance(variant, FlowPredictor) else rollout_and_decode(variant)
            times[name].append(time.perf_counter() - begin)
    timed_variants = list(variants)
    variants = [(name, v) for name, v in variants if isinstance(v, FlowPredictor)]
    decoded = "including decoding" if decode is not None else "WITHOUT decoding (no VQVAE)"
    for name, _ in timed_variants:
        best, median = min(times[name]), float(np.median(times[name]))
        speedup = float(np.median(np.array(times["plain"]) / np.array(times[name])))
        batch_note = " of batch 2: both branches" if "detail guidance" in name else ""
        print(f"[{name}] rollout 9 frames, N=10 euler, 1 sample, {decoded}: best {best:.3f} s, median "
              f"{median:.3f} s of {args.repeats} ({nfe} network calls{batch_note}; first call {first[name]:.1f} s; "
              f"{speedup:.2f}x plain, median over rounds); target <= 1.0 s: {'OK' if median <= 1.0 else 'MISSED'}")
    # What the machine allows at best: the rollout's network work at the plain fp32 matmul's rate (a dense
    # 1024^3 product, which the 65-token layers cannot beat), before attention, norms, the warm start and decoding.
    rollout_gflop = nfe * model.flops_per_call(1) / 1e9
    matmul = float(np.median([matmul_gflops() for _ in range(5)]))
    floor = rollout_gflop / matmul
    print(f"floor: the {nfe} network calls of a one-sample rollout are {rollout_gflop:.1f} GFLOP; at this machine's "
          f"fp32 matmul rate ({matmul:.1f} GFLOP/s) they alone take {floor:.2f} s, leaving {1.0 - floor:.2f} s of the "
          f"1.0 s target for everything else (fp32; int8 and a narrower network lower the work)")
    for name, variant in variants:
        if getattr(variant.velocity_fn, "failure", None):
            print(f"[{name}] compilation failed, figures are eager: {variant.velocity_fn.failure}")
        for batch, target in ((1, 0.5), (8, 0.7)):
            f = network_figures(variant, batch)
            print(f"[{name}] network batch {batch}: {f['gflops']:6.1f} GFLOP/s = {100 * f['ratio']:5.1f} % of fp32 "
                  f"matmul ({f['matmul']:.1f} GFLOP/s; rounds {100 * f['low']:.1f}-{100 * f['high']:.1f} %); "
                  f"target >= {int(target * 100)} %: {'OK' if f['ratio'] >= target else 'MISSED'}")
    for packed in (False, True) if packing_available() else (False,):
        for batch in (1, 8):
            f = linear_layers_figures(model, batch, packed)
            print(f"ceiling: the blocks' linear layers alone ({'packed' if packed else 'plain'}) at batch {batch} "
                  f"({model.num_positions + 1} tokens each): {f['gflops']:6.1f} GFLOP/s = {100 * f['ratio']:5.1f} % "
                  f"of fp32 matmul ({f['matmul']:.1f} GFLOP/s; rounds {100 * f['low']:.1f}-{100 * f['high']:.1f} %)")
    for width in (512, model.config.inner_dim):
        f = reference_encoder_figures(width, 1)
        print(f"reference: plain nn.TransformerEncoder, width {width}, depth 4, batch 1 (65 tokens): "
              f"{f['gflops']:6.1f} GFLOP/s = {100 * f['ratio']:5.1f} % of fp32 matmul ({f['matmul']:.1f} GFLOP/s; "
              f"rounds {100 * f['low']:.1f}-{100 * f['high']:.1f} %)")
    return 0


if __name__ == "__main__":
    np.random.seed(0)
    raise SystemExit(main())
