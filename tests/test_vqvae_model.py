"""VQVAE model: shapes, quantiser codebook updates and restarts, exact black output, latent normalisation."""

from __future__ import annotations

import pytest
import torch

from smokeflow.models.vector_quantizer import VectorQuantizer
from smokeflow.models.vqvae import (VQVAE, LatentNormalizer, RunningChannelStats, VQVAEConfig,
                                    clamp_straight_through)

SMALL = dict(channels=[8, 16, 16, 32], res_blocks=[0, 0, 1, 1], latent_channels=16, codebook_size=32)


@pytest.mark.parametrize("size, latent", [(64, 8), (128, 16)])
def test_shapes_and_value_range(size, latent):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(input_size=size, **SMALL)).eval()
    x = torch.rand(2, 3, size, size) * 2 - 1
    z = model.encode(x)
    assert z.shape == (2, 16, latent, latent) and z.dtype == torch.float32
    for quantize in (True, False):
        out = model.decode(z, quantize=quantize)
        assert out.shape == x.shape
        assert out.min() >= -1 and out.max() <= 1
    out = model(x)
    assert out.quantizer.indices.shape == (2, latent, latent)
    assert out.reconstruction.shape == x.shape


def test_default_config_is_the_designed_one():
    config = VQVAEConfig()
    assert (config.latent_channels, config.codebook_size, config.latent_size) == (256, 1024, 8)
    with pytest.raises(ValueError):
        VQVAEConfig(channels=[8, 16], res_blocks=[0])


def test_decode_quantize_snaps_to_codebook():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**SMALL)).eval()
    z = model.encode(torch.rand(1, 3, 64, 64) * 2 - 1)
    codes, indices = model.quantize(z)
    # Decoding z with re-quantisation equals decoding its codes without.
    assert torch.allclose(model.decode(z, quantize=True), model.decode(codes, quantize=False), atol=1e-6)
    assert torch.equal(codes[0, :, 0, 0], model.quantizer.codebook[indices[0, 0, 0]])


def test_clamp_straight_through_gives_exact_black_and_passes_gradients():
    raw = torch.tensor([-3.0, -1.0, 0.2, 2.0], requires_grad=True)
    out = clamp_straight_through(raw)
    assert out.tolist() == [-1.0, -1.0, pytest.approx(0.2), 1.0]
    out.sum().backward()
    assert raw.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_ema_quantizer_learns_clusters_and_restarts_dead_codes():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(codebook_size=8, dim=2, decay=0.8, dead_code_threshold=0.5, restart_every=1)
    quantizer.train()
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    for _ in range(60):
        # Exact repeats (like black background tokens): one code wins each point, duplicates die and are
        # restarted where the coding error is large, until every cluster has its own code.
        points = centres[torch.randint(0, 4, (256,))]
        out = quantizer(points.view(16, 16, 2).permute(2, 0, 1)[None])  # [1, 2, 16, 16]
    distances = torch.cdist(centres, quantizer.codebook).min(dim=1).values
    assert distances.max() < 0.2
    assert out.perplexity > 3.0
    assert out.commitment_loss < 0.05
    # A code moved far away is dead; restarts put it back on the data.
    quantizer.codebook[0] = torch.tensor([100.0, 100.0])
    quantizer.ema_cluster_size[0] = 0.0
    quantizer(torch.randn(1, 2, 4, 4))
    assert quantizer.codebook[0].abs().max() < 50


def test_straight_through_gradient_reaches_encoder():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(**SMALL)).train()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = model(x)
    ((out.reconstruction - x).abs().mean() + out.quantizer.commitment_loss).backward()
    first_conv = model.encoder.net[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_latent_normalizer_and_running_stats():
    torch.manual_seed(0)
    z = torch.randn(50, 4, 3, 3) * torch.tensor([1.0, 2.0, 3.0, 0.5])[:, None, None] + 7
    stats = RunningChannelStats(4)
    for chunk in z.split(7):
        stats.update(chunk)
    mean, std = stats.result()
    per_channel = z.transpose(0, 1).reshape(4, -1)
    assert torch.allclose(mean, per_channel.mean(1), atol=1e-4)
    assert torch.allclose(std, per_channel.std(1, unbiased=False), atol=1e-4)
    normalizer = LatentNormalizer(mean, std)
    n = normalizer.normalize(z)
    assert torch.allclose(n.transpose(0, 1).reshape(4, -1).std(1, unbiased=False), torch.ones(4), atol=1e-4)
    assert torch.allclose(normalizer.denormalize(n), z, atol=1e-4)


def test_black_floor_zeroes_faint_background_only():
    from smokeflow.models.vqvae import apply_black_floor

    x = torch.full((1, 3, 2, 2), -1.0)
    x[0, :, 0, 0] = 2 / 255 * 2 - 1   # faint noise (2 on 0-255)
    x[0, 2, 1, 1] = 40 / 255 * 2 - 1  # dim bluish smoke
    out = apply_black_floor(x, black_floor=4)
    assert out[0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0]
    assert torch.equal(out[0, :, 1, 1], x[0, :, 1, 1])
    assert torch.equal(apply_black_floor(x, 0), x)
