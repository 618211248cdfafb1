"""Check the CUDA path end to end on a machine with a GPU, and time it. Prints numbers; asserts nothing.

    python benchmarks/check_cuda.py [--work /tmp/smokeflow_cuda] [--train-steps 300]

What it runs, each step reported with its exit status or its numbers:
1. The shipped default model on CPU (fp32) and on CUDA (bf16 autocast) from the same seed: the sampler draws
   its noise and context indices from a CPU generator, so both roll out from the same draws and the frames
   must agree closely (PSNR between the two rollouts, per frame; bf16 rounding makes them drift apart slowly).
2. The same loss batch in fp32 and under bf16 autocast on CUDA: relative difference of the two losses.
3. Rollout time on CUDA, 9 frames at N = 10 Euler including decoding, batch 1 and 8 (median of 10).
4. The CLI on CUDA on a small simulated dataset: train-vqvae (tiny config), encode-latents, train (tiny),
   train --resume, evaluate, predict; then the default config's flow training for ``--train-steps`` steps
   to measure steps/s with bf16 autocast.
Everything writes under ``--work``; nothing in the repository changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from smokeflow.config import load_config  # noqa: E402
from smokeflow.data.layouts import list_videos, read_video_entry  # noqa: E402
from smokeflow.flow.path import FlowPath  # noqa: E402
from smokeflow.flow.predictor import FlowPredictor  # noqa: E402
from smokeflow.pipeline import SmokeFlow  # noqa: E402
from smokeflow.training.flow_trainer import FlowTrainingConfig, training_loss  # noqa: E402


DEVICE = "cuda"


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def cli(*args: str, log: str) -> float:
    """Run ``smokeflow <args>`` and print its status and time; the output goes to ``log``."""
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.call([sys.executable, "-m", "smokeflow", *args], stdout=out, stderr=subprocess.STDOUT,
                             cwd=ROOT)
    seconds = time.perf_counter() - start
    print(f"  smokeflow {' '.join(args[:1])}: rc {rc}, {seconds:.1f} s  ({log})", flush=True)
    if rc != 0:
        with open(log) as f:
            print("    " + "    ".join(f.readlines()[-15:]))
    return seconds


def compare_devices(video: np.ndarray, samples: int) -> None:
    print("1. default model, CPU fp32 vs CUDA bf16 autocast, same seed "
          f"({samples} samples, 9 frames, N=10 Euler, s=0.1):", flush=True)
    outs = {}
    for device in ("cpu", DEVICE):
        pipe = SmokeFlow.from_pretrained(os.path.join(ROOT, "checkpoints/default"), device=device)
        outs[device] = pipe.predict(video[:1], num_frames=9, steps=10, solver="euler", warm_start=0.1,
                                    num_samples=samples, seed=0).frames
    per_frame = [psnr(outs["cpu"][:, f], outs[DEVICE][:, f]) for f in range(9)]
    print("  PSNR(cpu, cuda) per frame: " + " ".join(f"{p:.1f}" for p in per_frame))
    print(f"  mean pixel cpu {outs['cpu'].mean():.2f}  cuda {outs[DEVICE].mean():.2f}  truth frames 1-9 "
          f"{video[1:10].mean():.2f}")


def compare_loss_precision() -> None:
    print("2. one training batch (default config, predicted references included): CPU fp32 vs CUDA bf16 "
          "autocast loss, same draws:", flush=True)
    config = load_config(os.path.join(ROOT, "checkpoints/default/config.yaml"))
    train_config = FlowTrainingConfig.from_section(config.get("flow_training"))
    path = FlowPath(float(config["flow"]["sigma"]))
    clips = torch.randn(32, 10, 256, 8, 8, generator=torch.Generator().manual_seed(1))
    losses = {}
    for device in ("cpu", DEVICE):
        model = FlowPredictor.from_folder(os.path.join(ROOT, "checkpoints/default"), device, pack=False).model
        with torch.no_grad():  # training_loss itself autocasts to bf16 on CUDA
            # noise_on_device=False: both draw their noise on the host from the same generator.
            losses[device] = float(training_loss(model, path, clips.to(device), train_config,
                                                 torch.Generator().manual_seed(0), None, noise_on_device=False))
    print(f"  loss cpu fp32 {losses['cpu']:.5f}  {DEVICE} {losses[DEVICE]:.5f}  relative difference "
          f"{abs(losses[DEVICE] - losses['cpu']) / losses['cpu']:.2e}")


def time_rollouts(video: np.ndarray, compile: bool) -> None:
    print(f"3. rollout time on CUDA{' (torch.compile)' if compile else ''}, 9 frames, N=10 Euler, including "
          "decoding (median of 10):", flush=True)
    pipe = SmokeFlow.from_pretrained(os.path.join(ROOT, "checkpoints/default"), device=DEVICE, compile=compile)
    start = time.perf_counter()
    pipe.predict(video[:1], num_frames=1, steps=1)
    print(f"  first call {time.perf_counter() - start:.1f} s")
    for batch in (1, 8):
        times = []
        for i in range(12):
            synchronize()
            start = time.perf_counter()
            pipe.predict(video[:1], num_frames=9, steps=10, solver="euler", warm_start=0.1, num_samples=batch,
                         seed=i)
            synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
        print(f"  batch {batch}: median {statistics.median(times) * 1000:.0f} ms, best {min(times) * 1000:.0f} ms")


def train_speed(metrics_path: str) -> None:
    rates = []
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            if "steps_per_s" in row:
                rates.append(row["steps_per_s"])
    if rates:
        print(f"  steps/s over the run's log lines: median {statistics.median(rates):.1f}, "
              f"last {rates[-1]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/smokeflow_cuda")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--device", default="cuda", help="cpu only to try this script out without a GPU")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this script checks the CUDA path")
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {name}, python {sys.version.split()[0]}")
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    data, runs = os.path.join(work, "data"), os.path.join(work, "runs")
    cli("simulate", "--out", data, "--train", "32", "--val", "4", "--test", "4", "--frames", "10", "--seed", "5",
        log=os.path.join(work, "simulate.log"))
    video = read_video_entry(list_videos(data, "test")[0])

    compare_devices(video, samples=4)
    compare_loss_precision()
    time_rollouts(video, compile=False)
    time_rollouts(video, compile=True)

    print("4. the CLI on CUDA:", flush=True)
    tiny = os.path.join(ROOT, "configs/tiny.yaml")
    log = lambda name: os.path.join(work, f"{name}.log")  # noqa: E731
    cli("train-vqvae", "--config", tiny, "--run-name", "vq", "--runs-dir", runs, "--data", data, "--device",
        DEVICE, log=log("train_vqvae"))
    cli("train-vqvae", "--config", tiny, "--run-name", "vq", "--runs-dir", runs, "--data", data, "--device",
        DEVICE, "--resume", "--max-steps", "8", log=log("train_vqvae_resume"))
    cli("encode-latents", "--checkpoint", os.path.join(runs, "vq"), "--data", data, "--device", DEVICE,
        log=log("encode_tiny"))
    common = ["--config", tiny, "--runs-dir", runs, "--data", data, "--device", DEVICE, "--no-progress",
              "--vqvae-checkpoint", os.path.join(runs, "vq")]
    cli("train", "--run-name", "flow_tiny", *common, "--stop-after-step", "3", log=log("train_tiny"))
    cli("train", "--run-name", "flow_tiny", "--config", tiny, "--runs-dir", runs, "--data", data, "--device",
        DEVICE, "--no-progress", "--resume", log=log("train_tiny_resume"))
    with open(os.path.join(runs, "flow_tiny", "metrics.jsonl")) as f:
        steps = [json.loads(line).get("step") for line in f]
    print(f"  tiny run logged steps {sorted({s for s in steps if s is not None})}")
    cli("train", "--run-name", "flow_tiny_straight", *common, log=log("train_tiny_straight"))
    resumed, straight = (load_file(os.path.join(runs, name, "flow.safetensors"))
                         for name in ("flow_tiny", "flow_tiny_straight"))
    diff = max(float((resumed[k].float() - straight[k].float()).abs().max()) for k in straight)
    print(f"  stopped at step 3 + resumed vs uninterrupted run: largest weight difference {diff:.2e}")
    cli("evaluate", "--checkpoint", os.path.join(runs, "flow_tiny"), "--data", data, "--split", "test",
        "--num-videos", "2", "--num-frames", "3", "--steps", "2", "--device", DEVICE, "--no-fvd-download",
        "--no-progress", "--json", os.path.join(work, "eval_tiny.json"), log=log("evaluate_tiny"))
    cli("predict", "--checkpoint", "checkpoints/default", "--input", os.path.join(list_videos(data, "test")[1].source, list_videos(data, "test")[1].frame_files[0]),
        "--out", os.path.join(work, "pred.gif"), "--device", DEVICE, "--num-samples", "2",
        log=log("predict"))
    cli("predict", "--checkpoint", "checkpoints/default", "--input", os.path.join(list_videos(data, "test")[1].source, list_videos(data, "test")[1].frame_files[0]),
        "--out", os.path.join(work, "pred_compiled.gif"), "--device", DEVICE, "--compile",
        log=log("predict_compile"))

    print(f"5. default config flow training on CUDA, {args.train_steps} steps (bf16 autocast, batch 32):",
          flush=True)
    # Replaces the tiny VQVAE's cache of the same dataset (the cache follows the checkpoint).
    cli("encode-latents", "--checkpoint", "checkpoints/default", "--data", data, "--device", DEVICE,
        log=log("encode_default"))
    seconds = cli("train", "--run-name", "flow_default", "--config", "configs/smoke_dataset.yaml", "--runs-dir",
                  runs, "--data", data, "--device", DEVICE, "--no-progress", "--vqvae-checkpoint",
                  "checkpoints/default", "--max-steps", str(args.train_steps),
                  log=log("train_default"))
    metrics = os.path.join(runs, "flow_default", "metrics.jsonl")
    if os.path.isfile(metrics):
        train_speed(metrics)
    print(f"  whole command {seconds:.1f} s")


if __name__ == "__main__":
    main()
