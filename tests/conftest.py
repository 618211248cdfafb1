"""Shared pytest fixtures. Tests use small real data made by the real simulator."""

from __future__ import annotations

import os

# Two cores: keep torch from oversubscribing when tests run beside other work.
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "samples")
RAW_CLIP = os.path.join(SAMPLES_DIR, "rise_raw_clip.mp4")


@pytest.fixture(scope="session")
def repo_root() -> str:
    return REPO_ROOT


@pytest.fixture(scope="session")
def raw_clip_path() -> str:
    if not os.path.isfile(RAW_CLIP):
        pytest.skip(f"real sample clip not found at {RAW_CLIP}")
    return RAW_CLIP


@pytest.fixture(scope="module")
def predictor(repo_root):
    """A FlowPredictor of configs/tiny.yaml with random weights (a non-zero head, so velocities are not all 0);
    one per test module, which may change its weights in place and put them back."""
    import torch

    from smokeflow.config import load_config
    from smokeflow.flow.predictor import FlowConfig, FlowPredictor

    torch.manual_seed(0)
    config = FlowConfig.from_section(load_config(f"{repo_root}/configs/tiny.yaml")["flow"])
    pred = FlowPredictor.from_config(config)
    torch.nn.init.normal_(pred.model.head.weight, std=0.1)
    return pred
