"""Inception-v1 I3D (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?") for FVD features.

Written here so that its parameter names match the state dict ``i3d_pretrained_400.pt`` that the common
PyTorch FVD code loads (the piergiaj/pytorch-i3d layout with 400 Kinetics classes): top-level modules
``Conv3d_1a_7x7`` ... ``Mixed_5c`` and ``logits``; each conv unit holds ``conv3d`` (+ ``bn``); each inception
block holds branches ``b0, b1a, b1b, b2a, b2b, b3b`` (``b3a`` is a parameter-free max pool).

Padding follows TensorFlow's "SAME" rule, computed from the input size at run time, because the weights were
converted from the TensorFlow model and the features depend on it.

Input: float [B, 3, T, 224, 224] in [-1, 1] with T >= 9 (the network downsamples time by 8 and then
averages over windows of 2). Output of :meth:`InceptionI3d.forward`: the 400 Kinetics logits averaged over
the remaining time steps, [B, 400] - the features FVD uses (as in the TF-GAN / VideoGPT FVD code).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_FRAMES = 9


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (front, back) along one axis of length ``size``."""
    out_size = math.ceil(size / stride)
    total = max((out_size - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    t_pad = _same_padding(x.shape[2], kernel[0], stride[0])
    h_pad = _same_padding(x.shape[3], kernel[1], stride[1])
    w_pad = _same_padding(x.shape[4], kernel[2], stride[2])
    padding = (*w_pad, *h_pad, *t_pad)  # F.pad takes the last axis first
    if not any(padding):  # 1x1x1 convolutions: F.pad would still copy the whole tensor
        return x
    # Zero padding (also before max pooling, as the converted model does).
    return F.pad(x, padding)


class MaxPool3dSame(nn.Module):
    """3-D max pooling with TF 'SAME' zero padding. No parameters."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d with 'SAME' padding, then BatchNorm (eps 1e-3, as in TF) and ReLU, each optional."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        relu: bool = True,
        bias: bool = False,
    ):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.relu else x

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """Fold the (eval-mode) BatchNorm into the convolution: same outputs, one pass less.
        For inference only; the folded module no longer has ``bn`` parameters to load or train."""
        if self.bn is None:
            return
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)  # [C_out]
        conv = self.conv3d
        folded = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding=0, bias=True)
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        folded.bias.copy_(self.bn.bias + (bias - self.bn.running_mean) * scale)
        self.conv3d, self.bn = folded.to(conv.weight.device), None


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; maxpool->1x1) concatenated along channels.

    widths = (b0, b1a, b1b, b2a, b2b, b3b) output channels.
    """

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a = Unit3D(in_channels, w1a)
        self.b1b = Unit3D(w1a, w1b, kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, w2a)
        self.b2b = Unit3D(w2a, w2b, kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3b)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, kind, arguments) in forward order; names are the state-dict prefixes of i3d_pretrained_400.pt.
_LAYOUT = (
    ("Conv3d_1a_7x7", "conv", dict(in_channels=3, out_channels=64, kernel=(7, 7, 7), stride=(2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", dict(kernel=(1, 3, 3), stride=(1, 2, 2))),
    ("Conv3d_2b_1x1", "conv", dict(in_channels=64, out_channels=64)),
    ("Conv3d_2c_3x3", "conv", dict(in_channels=64, out_channels=192, kernel=(3, 3, 3))),
    ("MaxPool3d_3a_3x3", "pool", dict(kernel=(1, 3, 3), stride=(1, 2, 2))),
    ("Mixed_3b", "block", (192, (64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", "block", (256, (128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", "pool", dict(kernel=(3, 3, 3), stride=(2, 2, 2))),
    ("Mixed_4b", "block", (480, (192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", "block", (512, (160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", "block", (512, (128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", "block", (512, (112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", "block", (528, (256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", "pool", dict(kernel=(2, 2, 2), stride=(2, 2, 2))),
    ("Mixed_5b", "block", (832, (256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", "block", (832, (384, 192, 384, 48, 128, 128))),
)


class InceptionI3d(nn.Module):
    """I3D with a 400-way Kinetics classifier. forward: [B, 3, T>=9, 224, 224] in [-1, 1] -> logits [B, 400]."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.stages = []
        for name, kind, args in _LAYOUT:
            if kind == "conv":
                module = Unit3D(**args)
            elif kind == "pool":
                module = MaxPool3dSame(**args)
            else:
                module = InceptionBlock(*args)
            self.add_module(name, module)
            self.stages.append(name)
        # Average over 2 time steps x the 7x7 map left from a 224x224 input, then a 1x1x1 conv classifier.
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.logits = Unit3D(384 + 384 + 128 + 128, num_classes, batch_norm=False, relu=False, bias=True)

    def fold_batch_norm(self) -> "InceptionI3d":
        """Fold every BatchNorm into its convolution (inference only; call after loading weights)."""
        for module in self.modules():
            if isinstance(module, Unit3D):
                module.fold_batch_norm()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3 or x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D expects [B, 3, T>={MIN_FRAMES}, H, W], got {tuple(x.shape)}")
        for name in self.stages:
            x = getattr(self, name)(x)
        x = self.logits(self.avg_pool(x))  # [B, 400, T', 1, 1]
        return x.flatten(start_dim=2).mean(dim=2)  # average over remaining time (and the 1x1 space)
