"""LPIPS loading: the unavailable paths, and the loading mechanics with a weights file made here.

The weights file made here is a randomly initialised torchvision AlexNet, so these tests check *mechanics*
(every tensor lands in the right place, the distance equals an independent re-computation); the result is
never reported as LPIPS: ``metric_name`` says so, because the file is not torchvision's published one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from smokeflow.metrics.lpips_metric import ALEXNET_FILENAME, load_lpips, lpips_distance


@pytest.fixture(scope="module")
def random_alexnet_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def test_missing_weights_report_unavailable_with_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    result = load_lpips()  # default: the (empty) hub cache
    assert result.model is None and not result.available
    assert ALEXNET_FILENAME in result.reason and "--lpips-weights" in result.reason
    assert str(tmp_path / "hub" / "checkpoints") in result.reason
    assert "unavailable" in result.metric_name


def test_unreadable_and_wrong_files_report_unavailable(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    assert load_lpips(garbage).model is None
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    result = load_lpips(wrong)
    assert result.model is None and "features.0.weight" in result.reason


def _independent_lpips(alexnet_state, pred, target):
    """LPIPS recomputed from its definition with torchvision's AlexNet (not the lpips package's forward)."""
    import lpips as lpips_package
    import os

    net = torchvision.models.alexnet()
    net.load_state_dict(alexnet_state)
    features = net.features.eval()
    lin = torch.load(
        os.path.join(os.path.dirname(lpips_package.__file__), "weights", "v0.1", "alex.pth"),
        map_location="cpu",
        weights_only=True,
    )
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(x):
        x = (x - shift) / scale
        outs = []
        for index, layer in enumerate(features):
            x = layer(x)
            if index in (1, 4, 7, 9, 11):  # the ReLU after each conv
                outs.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return outs

    total = 0.0
    for level, (a, b) in enumerate(zip(taps(pred), taps(target))):
        weight = lin[f"lin{level}.model.1.weight"]  # [1, C, 1, 1]
        total = total + ((a - b) ** 2 * weight).sum(1).mean((1, 2))
    return total


def test_loading_mechanics_with_a_weights_file_made_here(random_alexnet_file):
    result = load_lpips(random_alexnet_file)
    assert result.available and result.reason == ""
    # A randomly initialised AlexNet is not torchvision's published file: never called LPIPS.
    assert not result.reference_weights
    assert "not LPIPS" in result.metric_name

    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    pred = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    ours = lpips_distance(result.model, pred, target)
    assert ours.shape == (3,) and ours.dtype == np.float64
    np.testing.assert_allclose(lpips_distance(result.model, target, target), 0.0, atol=1e-7)

    state = torch.load(random_alexnet_file, map_location="cpu", weights_only=True)
    to_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # noqa: E731
    with torch.no_grad():
        reference = _independent_lpips(state, to_tensor(pred), to_tensor(target)).numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-4)


def test_model_is_frozen_but_differentiable_as_a_loss(random_alexnet_file):
    model = load_lpips(random_alexnet_file).model
    assert all(not p.requires_grad for p in model.parameters())
    x = torch.rand(2, 3, 64, 64, requires_grad=True) * 2 - 1
    x.retain_grad()
    loss = model(x, torch.zeros(2, 3, 64, 64)).mean()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
