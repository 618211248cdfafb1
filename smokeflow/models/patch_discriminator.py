"""Patch discriminator for the decoder's adversarial loss (``vqvae_training.adversarial_weight``).

Why: an L1/L2 reconstruction loss is minimised by the average of every plume a code could stand for, which is a
blurred plume; with 1,024 codes per 8x8-pixel token the decoder cannot know where each filament was, so it
draws none. A discriminator that judges small patches as real or decoded pays the decoder for drawing
plausible edges and filaments instead (as VQGAN's does), while the reconstruction loss keeps them where the
frame had smoke. Only the decoder is trained against it (``--finetune-decoder``), so the latents, and the flow
model trained on them, do not change.

Shape: frames [B, 3, H, W] in [-1, 1] -> logits [B, 1, H/8, W/8]: one real-or-decoded score per 8x8 patch
(each with a receptive field of 38 px). Spectral normalisation on every convolution keeps the discriminator
Lipschitz, which is what lets a hinge loss train stably with a single discriminator step per decoder step.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Three stride-2 4x4 convolutions (width, 2 x width, 4 x width channels, LeakyReLU 0.2) and a 3x3 one to
    one logit per patch. width 32: 0.17 M parameters."""

    def __init__(self, width: int = 32, in_channels: int = 3):
        super().__init__()
        channels = [in_channels, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        layers.append(spectral_norm(nn.Conv2d(channels[-1], 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


def discriminator_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator, mean over patches: relu(1 - real) + relu(1 + fake). 2 when it cannot
    tell the two apart (all logits 0), 0 when every real patch scores >= 1 and every decoded one <= -1."""
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The decoder's side of the hinge game: -mean(logits of its decoded patches) (lower when they look real)."""
    return -fake_logits.float().mean()
