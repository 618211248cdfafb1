"""Fréchet distance against closed forms; I3D loading mechanics and the unavailable paths; the proxy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from smokeflow.metrics.frechet import frechet_distance, frechet_distance_of_features, gaussian_statistics
from smokeflow.metrics.fvd import (
    I3D_FILENAME,
    PROXY_NAME,
    fd_on_vqvae_features,
    fvd_protocol,
    i3d_features,
    load_i3d,
    preprocess_clips,
    vqvae_clip_features,
)
from smokeflow.metrics.i3d import InceptionI3d


def _diagonal_closed_form(mu_a, var_a, mu_b, var_b):
    # For diagonal covariances (S_a S_b)^{1/2} = diag(sqrt(a_i b_i)), so FD = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    return np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    var_a[0] = var_b[1] = 0.0  # singular covariances are allowed
    got = frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(_diagonal_closed_form(mu_a, var_a, mu_b, var_b), rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    sigma_a, sigma_b = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu_a, mu_b = rng.normal(size=8), rng.normal(size=8)
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
    reference = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * covmean)
    assert frechet_distance(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(reference, rel=1e-8)
    # Symmetric in its arguments, zero for identical Gaussians.
    assert frechet_distance(mu_b, sigma_b, mu_a, sigma_a) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(mu_a, sigma_a, mu_a, sigma_a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_is_stable_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(2)
    dim, n = 400, 16  # N << D: both covariances have rank 15
    x = rng.normal(size=(n, dim))
    y = rng.normal(loc=0.5, size=(n, dim))
    distance = frechet_distance_of_features(x, y)
    assert np.isfinite(distance) and distance > 0
    assert frechet_distance_of_features(x, x) == pytest.approx(0.0, abs=1e-6 * distance)
    assert frechet_distance_of_features(y, x) == pytest.approx(distance, rel=1e-6)
    # A pure shift of the same samples changes only the mean term: FD = |shift|^2 exactly.
    shift = np.full(dim, 0.25)
    assert frechet_distance_of_features(x, x + shift) == pytest.approx(np.sum(shift**2), rel=1e-6)


def test_sample_space_form_equals_the_covariance_form():
    # N < D takes the sample-space SVD path; it must agree with the D x D eigen path on the same data.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 30)) @ rng.normal(size=(30, 30))
    y = rng.normal(loc=0.3, size=(15, 30)) @ rng.normal(size=(30, 30))
    via_covariances = frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y))
    assert frechet_distance_of_features(x, y) == pytest.approx(via_covariances, rel=1e-9)


def test_gaussian_statistics_rejects_too_few_samples():
    with pytest.raises(ValueError):
        gaussian_statistics(np.zeros((1, 3)))
    mu, sigma = gaussian_statistics(np.array([[0.0, 1.0], [2.0, 3.0]]))
    np.testing.assert_allclose(mu, [1.0, 2.0])
    np.testing.assert_allclose(sigma, [[2.0, 2.0], [2.0, 2.0]])  # unbiased (N-1)


def test_missing_i3d_weights_report_unavailable_with_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    result = load_i3d(download=False)
    assert result.model is None and result.reason.startswith("FVD unavailable")
    assert I3D_FILENAME in result.reason and "--fvd-weights" in result.reason
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 10)
    assert "cannot read" in load_i3d(garbage).reason
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(2)}, wrong)
    assert "not the 400-class InceptionI3d" in load_i3d(wrong).reason


def test_i3d_loading_mechanics_and_features(tmp_path):
    # A randomly initialised network saved here: checks that every tensor loads (old saves without
    # BatchNorm step counters too) and the feature shapes; no number from it is called FVD.
    torch.manual_seed(0)
    source = InceptionI3d()
    path = tmp_path / I3D_FILENAME
    assert sum(p.numel() for p in source.parameters()) == 12_697_264  # Inception-v1 I3D, 400 classes
    # Give BatchNorm non-trivial statistics, so that loading and folding them is really tested.
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    result = load_i3d(path)
    assert result.available and result.reason == ""

    clips = np.random.default_rng(0).integers(0, 256, size=(1, 9, 64, 64, 3), dtype=np.uint8)
    features = i3d_features(result.model, clips)
    assert features.shape == (1, 400) and features.dtype == np.float64 and np.isfinite(features).all()
    # The loaded (BatchNorm-folded) network computes what the saved network computes.
    expected = i3d_features(source.eval(), clips)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    with pytest.raises(ValueError):
        i3d_features(result.model, clips[:, :8])  # I3D needs >= 9 frames


def test_preprocess_clips_resizes_to_224_in_minus_one_one():
    clips = np.zeros((2, 3, 64, 96, 3), dtype=np.uint8)
    clips[..., 0] = 255
    x = preprocess_clips(clips)
    assert x.shape == (2, 3, 3, 224, 224)
    assert torch.allclose(x[:, 0], torch.ones(())) and torch.allclose(x[:, 1:], -torch.ones(()))


def test_proxy_features_and_name():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(10, 4, 6, 2, 2))
    features = vqvae_clip_features(real)
    assert features.shape == (10, 24)
    np.testing.assert_allclose(features[0, :6], real[0, 0].mean(axis=(-2, -1)))
    assert fd_on_vqvae_features(real, real) == pytest.approx(0.0, abs=1e-9)
    assert fd_on_vqvae_features(real, real + 1.0) == pytest.approx(24.0, rel=1e-6)  # pure shift: |1|^2 * 24
    assert "VQVAE" in PROXY_NAME and "FVD" not in PROXY_NAME


def test_fvd_protocol_records_the_settings():
    protocol = fvd_protocol(200, 10, 64, includes_conditioning=True, num_observed=1)
    assert protocol["num_videos"] == 200 and protocol["frames_per_clip"] == 10
    assert protocol["includes_conditioning_frames"] is True and protocol["i3d_input_resolution"] == 224


def test_a_download_that_is_not_the_weights_never_lands_in_the_cache(tmp_path, monkeypatch):
    import io
    import urllib.request

    from smokeflow.metrics import fvd

    # A sign-in page instead of the file (what share links often return to scripts).
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>sign in</html>"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    result = load_i3d(download=True, timeout_s=1.0)
    assert result.model is None and "download failed" in result.reason
    assert not (tmp_path / "hub" / "checkpoints" / I3D_FILENAME).exists()
    assert not list((tmp_path / "hub" / "checkpoints").glob("*.partial"))
    assert fvd.I3D_URL.startswith("https://")
