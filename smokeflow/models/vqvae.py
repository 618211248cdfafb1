"""The VQVAE: a convolutional encoder/decoder with residual blocks around an EMA vector quantiser.

64x64 RGB frames in [-1, 1] -> continuous latents z [B,C,8,8] (C = 256 by default) -> nearest codes -> frames.
The flow model works on the *continuous* pre-quantisation latents (as RIVER does); :meth:`VQVAE.decode`
re-quantises them by default (``quantize=True``), which snaps slightly-off predicted latents back onto the
codebook the decoder was trained on.

Black background must decode to exact black: the decoder output goes through :func:`clamp_straight_through`,
a clamp to [-1, 1] whose gradient passes straight through. Any raw value <= -1 is exact black, so the
decoder can put the whole background into that half-line instead of balancing a sigmoid/tanh around a
value it can only reach asymptotically (faint noise on black ruins SSIM and the look).

:class:`LatentNormalizer` holds the per-channel mean/std measured on the training set
(``latent_stats.safetensors``) that map z to ~N(0, 1) for the flow model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from smokeflow.models.vector_quantizer import QuantizerOutput, VectorQuantizer


@dataclass
class VQVAEConfig:
    """Architecture of the VQVAE (config section ``vqvae``).

    channels[i] is the width at resolution level i (level 0 = input_size, each later level halves the
    resolution), so len(channels) - 1 downsamplings: 4 entries = x8 (64 -> 8, or 128 -> 16).
    res_blocks[i] residual blocks at level i (encoder and decoder alike; the decoder adds
    ``extra_decoder_blocks`` at every level because decoding carries most of the quality).
    """

    input_size: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    res_blocks: list[int] = field(default_factory=lambda: [0, 0, 1, 3])
    extra_decoder_blocks: int = 0
    latent_channels: int = 256
    codebook_size: int = 1024
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.03
    restart_every: int = 5
    quantize_on_decode: bool = True
    # Decoded pixels whose brightest channel is below this (0-255 scale) become exact black: a dead zone
    # that removes faint decoder noise on the background (it costs SSIM and shows on dark screens). 0 = off.
    # Far below the smoke threshold (smokeflow.data.smoke_mask), so no smoke pixel is touched.
    black_floor: float = 0.0

    def __post_init__(self):
        self.channels = list(self.channels)
        self.res_blocks = list(self.res_blocks)
        if len(self.channels) < 2 or len(self.channels) != len(self.res_blocks):
            raise ValueError(f"channels {self.channels} and res_blocks {self.res_blocks} must have the same "
                             "length >= 2 (one entry per resolution level)")
        if self.input_size % self.downsample_factor:
            raise ValueError(f"input_size {self.input_size} is not divisible by {self.downsample_factor}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.input_size // self.downsample_factor

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice plus a skip (1x1 conv when the width changes). [B,Cin,H,W]->[B,Cout,H,W]."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            _norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1),
            _norm(out_channels), nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block(x)


class Encoder(nn.Module):
    """[B,3,S,S] in [-1,1] -> [B,latent_channels,S/f,S/f] continuous latents."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        ch = config.channels
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        width = ch[0]
        for level, (level_width, blocks) in enumerate(zip(ch, config.res_blocks)):
            for _ in range(blocks):
                layers.append(ResidualBlock(width, level_width))
                width = level_width
            if level < len(ch) - 1:
                # Strided conv halves the resolution and moves to the next level's width.
                layers.append(nn.Conv2d(width, ch[level + 1], 4, stride=2, padding=1))
                width = ch[level + 1]
        layers += [_norm(width), nn.SiLU(), nn.Conv2d(width, config.latent_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """[B,latent_channels,s,s] -> [B,3,s*f,s*f] raw output (clamped by the caller)."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        ch = config.channels
        width = ch[-1]
        layers: list[nn.Module] = [nn.Conv2d(config.latent_channels, width, 3, padding=1)]
        for level in range(len(ch) - 1, -1, -1):
            for _ in range(config.res_blocks[level] + config.extra_decoder_blocks):
                layers.append(ResidualBlock(width, ch[level]))
                width = ch[level]
            if level > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                           nn.Conv2d(width, ch[level - 1], 3, padding=1)]
                width = ch[level - 1]
        layers += [_norm(width), nn.SiLU(), nn.Conv2d(width, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class _ClampStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(-1.0, 1.0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def clamp_straight_through(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] in the forward pass, identity gradient in the backward pass.

    The loss is computed on the clamped output: a background pixel whose raw value is anywhere <= -1 is
    exact black and gets zero gradient from an L1/L2 term, so the decoder is free to push black far below
    -1, while a too-dark smoke pixel still receives a gradient even when its raw value is clamped.
    """
    return _ClampStraightThrough.apply(x)


def apply_black_floor(x: torch.Tensor, black_floor: float) -> torch.Tensor:
    """Frames [B,3,H,W] in [-1,1]: pixels whose brightest channel is below ``black_floor`` (0-255 scale)
    are set to exact black (-1)."""
    if black_floor <= 0:
        return x
    threshold = black_floor / 255.0 * 2.0 - 1.0
    dark = x.amax(dim=1, keepdim=True) < threshold
    return x.masked_fill(dark, -1.0)


@dataclass
class VQVAEOutput:
    """Result of :meth:`VQVAE.forward`: reconstruction [B,3,H,W] in [-1,1], latents z [B,C,h,w], quantiser info."""

    reconstruction: torch.Tensor
    latents: torch.Tensor
    quantizer: QuantizerOutput


class VQVAE(nn.Module):
    """Encoder + EMA vector quantiser + decoder. See the module docstring."""

    def __init__(self, config: VQVAEConfig | None = None):
        super().__init__()
        self.config = config or VQVAEConfig()
        self.encoder = Encoder(self.config)
        self.quantizer = VectorQuantizer(self.config.codebook_size, self.config.latent_channels,
                                         decay=self.config.ema_decay,
                                         dead_code_threshold=self.config.dead_code_threshold,
                                         restart_every=self.config.restart_every)
        self.decoder = Decoder(self.config)
        self.to(memory_format=torch.channels_last)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frames x [B,3,H,W] float in [-1,1] -> continuous pre-quantisation latents z [B,C,h,w]."""
        # channels_last makes oneDNN convolutions several times faster on CPU (measured 0.2 -> 1 step/s).
        return self.encoder(x.contiguous(memory_format=torch.channels_last)).contiguous()

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Snap z [B,C,h,w] to its nearest codes (no codebook update): (codes [B,C,h,w], indices [B,h,w])."""
        batch, channels, height, width = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, channels)
        indices, _ = self.quantizer.nearest(flat)
        indices = indices.view(batch, height, width)
        return self.quantizer.lookup(indices).to(z.dtype), indices

    def decode(self, z: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        """Latents z [B,C,h,w] -> frames [B,3,H,W] in [-1,1]; re-quantises z first unless quantize=False.

        quantize=None uses ``config.quantize_on_decode``.
        """
        if quantize is None:
            quantize = self.config.quantize_on_decode
        if quantize:
            z, _ = self.quantize(z)
        out = clamp_straight_through(self.decoder(z.contiguous(memory_format=torch.channels_last))).contiguous()
        return apply_black_floor(out, self.config.black_floor)

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        """Training/inspection pass: encode, quantise (EMA update in training mode), decode."""
        z = self.encode(x)
        q = self.quantizer(z)
        out = self.decoder(q.quantized.contiguous(memory_format=torch.channels_last))
        reconstruction = clamp_straight_through(out).contiguous()
        return VQVAEOutput(reconstruction, z, q)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class LatentNormalizer(nn.Module):
    """Per-channel affine map between raw latents z and normalised latents (z - mean) / std ~ N(0, 1).

    mean, std: float32 [C], measured over the training split (``latent_stats.safetensors``).
    Works on tensors whose channel axis is -3 ([..., C, h, w]).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clone().clamp_min(1e-6))

    def _shape(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.to(t.device)[:, None, None], self.std.to(t.device)[:, None, None]

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._shape(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._shape(z)
        return z * std + mean

    @classmethod
    def identity(cls, channels: int) -> "LatentNormalizer":
        return cls(torch.zeros(channels), torch.ones(channels))


class RunningChannelStats:
    """Accumulates per-channel mean and std of latents [B,C,h,w] over many batches (float64, exact)."""

    def __init__(self, channels: int):
        self.count = 0
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sum_sq = torch.zeros(channels, dtype=torch.float64)

    def update(self, z: torch.Tensor) -> None:
        z = z.detach().double().cpu()
        self.count += z.shape[0] * z.shape[2] * z.shape[3]
        self.sum += z.sum(dim=(0, 2, 3))
        self.sum_sq += (z * z).sum(dim=(0, 2, 3))

    def merge_(self, other_count: int, other_sum: torch.Tensor, other_sum_sq: torch.Tensor) -> None:
        self.count += other_count
        self.sum += other_sum
        self.sum_sq += other_sum_sq

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [C] float32, std [C] float32)."""
        if self.count == 0:
            raise ValueError("no latents accumulated")
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean * mean).clamp_min(0)
        return mean.float(), var.sqrt().float()
