"""Checkpoint files: atomic safetensors round trips, resumable state with RNG, clear errors for bad files."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from smokeflow.errors import CheckpointError
from smokeflow.models.vqvae import VQVAE, VQVAEConfig
from smokeflow.training import checkpoint_io as ckio

SMALL = dict(channels=[8, 16, 16, 32], res_blocks=[0, 0, 1, 1], latent_channels=16, codebook_size=32)


def test_weights_round_trip_fp32_and_fp16(tmp_path):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**SMALL))
    path = tmp_path / "vqvae.safetensors"
    ckio.save_weights(model.state_dict(), path, metadata={"step": "3"})
    assert sorted(os.listdir(tmp_path)) == ["vqvae.safetensors"]  # no temporary file left behind
    other = VQVAE(VQVAEConfig(**SMALL))
    ckio.load_state_into(other, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key
    ckio.save_weights(model.state_dict(), tmp_path / "half.safetensors", dtype=torch.float16)
    ckio.load_state_into(other, tmp_path / "half.safetensors")
    weight = model.encoder.net[0].weight
    assert torch.allclose(other.encoder.net[0].weight, weight, atol=1e-3)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_weights_raise_checkpoint_error_naming_the_file(tmp_path, damage):
    model = VQVAE(VQVAEConfig(**SMALL))
    path = tmp_path / "vqvae.safetensors"
    ckio.save_weights(model.state_dict(), path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x13" * 64 + data[64:])
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        ckio.load_state_into(model, path)
    assert str(path) in str(info.value)
    assert "truncated" in str(info.value) or "corrupt" in str(info.value)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "vqvae.safetensors"
    ckio.save_weights(VQVAE(VQVAEConfig(**SMALL)).state_dict(), path)
    bigger = VQVAE(VQVAEConfig(**{**SMALL, "latent_channels": 24}))
    with pytest.raises(CheckpointError, match="do not fit the model"):
        ckio.load_state_into(bigger, path)
    with pytest.raises(CheckpointError, match="not found"):
        ckio.load_weights(tmp_path / "missing.safetensors")


def test_train_state_round_trip_restores_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    path = tmp_path / "train_state.pt"
    ckio.save_train_state(path, {"step": 7, "optimizer": optimizer.state_dict(), "rng": ckio.rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    state = ckio.load_train_state(path)
    ckio.set_rng_state(state["rng"])
    assert state["step"] == 7
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(state["optimizer"])
    assert fresh.state_dict()["state"][0]["step"] == 1


def test_truncated_train_state_raises(tmp_path):
    path = tmp_path / "train_state.pt"
    ckio.save_train_state(path, {"step": 1, "x": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ckio.load_train_state(path)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        ckio.load_train_state(tmp_path / "absent.pt")
