"""Shared by the VQVAE tests: one tiny simulated dataset and one tiny trained VQVAE per test session.

Both are made with the real code (simulator, trainer) and cached under pytest's session base temp folder,
so every VQVAE test module reuses them instead of paying for them again.
"""

from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO_ROOT, "configs", "tiny.yaml")


def tiny_dataset(base: str) -> str:
    """``base/vq_data``: 3 train, 2 val, 2 test simulated videos of 6 frames (users' PNG layout)."""
    from smokeflow.data.simulate import write_simulated_dataset

    root = os.path.join(base, "vq_data")
    done = os.path.join(base, "vq_data.done")
    if not os.path.exists(done):
        write_simulated_dataset(root, train=3, val=2, test=2, frames=6, seed=0, force=True, progress=False)
        open(done, "w").close()
    return root


def tiny_checkpoint(base: str, data_root: str) -> str:
    """``base/vq_runs/tiny``: the tiny config trained for its 6 steps on :func:`tiny_dataset`."""
    from smokeflow.training.vqvae_trainer import train_vqvae

    runs = os.path.join(base, "vq_runs")
    run_dir = os.path.join(runs, "tiny")
    if not os.path.isfile(os.path.join(run_dir, "latent_stats.safetensors")):
        train_vqvae(TINY_CONFIG, "tiny", runs_dir=runs, device="cpu", data_path=data_root, progress=False)
    return run_dir


def tiny_latent_data(base: str) -> tuple[str, str]:
    """(:func:`tiny_dataset`, :func:`tiny_checkpoint`) with the train and val latent caches built."""
    from smokeflow.data.latent_cache import build_latent_cache

    root = tiny_dataset(base)
    vqvae = tiny_checkpoint(base, root)
    for split in ("train", "val"):
        build_latent_cache(vqvae, root, split, progress=False)
    return root, vqvae


def tiny_flow_run(base: str, name: str, seed: int = 0, max_steps: int | None = None) -> tuple[str, str]:
    """(data root, ``base/<name>``): a tiny flow run trained on :func:`tiny_latent_data` (no sample GIFs)."""
    from smokeflow.config import load_config
    from smokeflow.training.flow_trainer import train_flow

    root, vqvae = tiny_latent_data(base)
    run_dir = os.path.join(base, name)
    config = load_config(TINY_CONFIG)
    config["flow_training"]["sample_every"] = 1000
    train_flow(run_dir, config, root, seed=seed, vqvae_checkpoint=vqvae, max_steps=max_steps, show_progress=False)
    return root, run_dir
