"""How long `smokeflow evaluate` takes: 200 videos x 9 predicted frames at N = 10 Euler (issue 5: minutes).

    .venv/bin/python benchmarks/bench_evaluate.py [--checkpoint checkpoints/default] [--data final_dataset]
        [--num-videos 200] [--num-samples 1] [--steps 10]

With a checkpoint folder that ``SmokeFlow.from_pretrained`` loads, the real models are timed (and their
numbers printed). Without one, a stand-in with the default config's architecture and RANDOM weights is
timed - it costs the same per call, but its metric values mean nothing and are not printed.
Without ``--data``, a few simulated sequences are generated and repeated to ``--num-videos`` videos (the
cost of evaluation depends on the counts, not on the content). The machine is shared: other jobs make the
numbers noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smokeflow.metrics import evaluation  # noqa: E402
from smokeflow.metrics.baselines import FlowModelPredictor  # noqa: E402
from smokeflow.metrics.lpips_metric import load_lpips  # noqa: E402
from smokeflow.metrics.report import format_table  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RandomWeightsStandIn:
    """encode / decode / predict_latents with the default config's networks at random init (timing only)."""

    def __init__(self, config_path: str):
        from smokeflow.config import load_config, section_to_dataclass
        from smokeflow.flow.predictor import FlowConfig, FlowPredictor
        from smokeflow.models.vqvae import VQVAE, VQVAEConfig

        config = load_config(config_path)
        self.vqvae = VQVAE(section_to_dataclass(VQVAEConfig, config.get("vqvae"), "vqvae")).eval()
        self.flow = FlowPredictor.from_config(FlowConfig.from_section(config.get("flow")))

    @torch.no_grad()
    def encode(self, frames):
        x = torch.from_numpy(np.asarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return self.vqvae.encode(x)

    @torch.no_grad()
    def decode(self, z):
        lead = z.shape[:-3]
        x = self.vqvae.decode(z.reshape(-1, *z.shape[-3:]))
        x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return x.reshape(*lead, *x.shape[1:]).numpy()

    def predict_latents(self, z_obs, num_frames, **kwargs):
        return self.flow.predict_latents(z_obs, num_frames, **kwargs)


def make_dataset(root: str, num_videos: int, num_frames: int, distinct: int = 6) -> None:
    from smokeflow.data.simulate import simulate_sequences

    start = time.perf_counter()
    sequences = simulate_sequences(distinct, num_frames, seed=0)
    frames = np.stack([sequences[i % distinct] for i in range(num_videos)])
    np.savez(os.path.join(root, "test.npz"), frames=frames)
    print(f"simulated {distinct} sequences in {time.perf_counter() - start:.1f} s, repeated to {num_videos} videos")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=os.path.join(REPO, "checkpoints", "default"))
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "smoke_dataset.yaml"))
    parser.add_argument("--data", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--num-videos", type=int, default=200)
    parser.add_argument("--num-frames", type=int, default=9)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--solver", default="euler")
    parser.add_argument("--warm-start", type=float, default=0.1)
    parser.add_argument("--baselines-only", action="store_true",
                        help="time everything but the model's rollouts (reading, encoding, decoding, scoring)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    real_models = False
    try:
        from smokeflow.commands.evaluate import load_pipeline

        pipe = load_pipeline(args.checkpoint, "cpu")
        real_models = True
        print(f"models: {args.checkpoint}")
    except Exception as err:  # no checkpoint / no pipeline yet: time the architecture with random weights
        print(f"models: RANDOM-weight stand-in of {args.config} ({type(err).__name__}: {err}); timings only")
        pipe = RandomWeightsStandIn(args.config)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = tmp
            make_dataset(tmp, args.num_videos, 1 + args.num_frames)
        start = time.perf_counter()
        videos = evaluation.load_evaluation_videos(data, args.split, 1, args.num_frames, args.num_videos)
        load_seconds = time.perf_counter() - start
        predictors = [] if args.baselines_only else [
            FlowModelPredictor(pipe, steps=args.steps, solver=args.solver, warm_start=args.warm_start)]
        start = time.perf_counter()
        report = evaluation.evaluate(pipe, [*predictors, *evaluation.default_baselines()], videos,
                                     settings=vars(args), num_samples=args.num_samples, seed=0,
                                     lpips_availability=load_lpips(), i3d_availability=None)
        total = time.perf_counter() - start

    print(f"\n{len(videos.names)} videos x {args.num_frames} frames, K={args.num_samples}, N={args.steps} {args.solver}")
    print(f"  reading videos        {load_seconds:7.1f} s")
    print(f"  encoding observations {report['timing']['encode_seconds']:7.1f} s")
    for name, section in report["predictors"].items():
        print(f"  {name}: rollouts {section['rollout_seconds']:.1f} s ({section['seconds_per_frame'] * 1000:.1f} ms "
              f"per frame, NFE/frame {section['nfe_per_frame']:.0f}), decoding {section['decode_seconds']:.1f} s, "
              f"scoring {section['scoring_seconds']:.1f} s (frame metrics, smoke statistics, FD proxy)")
    for name, seconds in report["timing"]["per_predictor_seconds"].items():
        print(f"  {name:<22}{seconds:7.1f} s in all")
    print(f"  TOTAL evaluation      {total:7.1f} s  ({total / 60:.1f} min)")
    if real_models:
        print()
        print(format_table(report))


if __name__ == "__main__":
    main()
