"""The smoke's velocity field guessed from one frame: a small CNN, frame [3, 64, 64] -> (drift, rise) [2, 64, 64].

Why: the advected warm start (:mod:`smokeflow.flow.advected_warm_start`) moves each frame on by the smoke's
velocity. With two observed frames the velocity is measured per pixel by optical flow, and a source that holds
still stays put while the smoke above it rises. From one frame - the issue's protocol, and a user with one
photo - there was only the training data's mean velocity, which moves the whole plume, source included. Yet
one frame says a lot about how its smoke moves: where the source is (bright, narrow, at the bottom), which way
the plume leans, where the smoke is thin and fast. So this network learns, on the training split, the
per-pixel velocity (:func:`smokeflow.metrics.smoke_motion.motion_fields` of each consecutive pair) from the
first frame of the pair alone: the conditional mean velocity given the frame.

Architecture: four stride-2 convolutions (64 -> 4 px) for a receptive field over the whole frame, then
upsampling with skips back to 16 x 16, a 2-channel head, and bilinear upsampling to 64 x 64: the targets are
smooth (spread by a Gaussian of 6 px), so a 16 x 16 output loses nothing and costs a sixteenth. About 0.3 M
parameters, a few milliseconds per frame on this CPU.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from smokeflow.errors import CheckpointError

MOTION_NET_FILE = "motion_net.safetensors"
MOTION_NET_CONFIG_FILE = "motion_net.json"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class MotionFieldNet(nn.Module):
    """images float [B, 3, 64, 64] in [-1, 1] -> velocity float [B, 2, 64, 64]: channel 0 drift (px per frame,
    rightwards), channel 1 rise (px per frame, upwards). ``width``: channels of the first level (x1, x2, x4, x4
    at 32, 16, 8, 4 px)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        c1, c2, c3 = width, 2 * width, 4 * width
        self.down1 = _block(3, c1, 2)    # 32 px
        self.down2 = _block(c1, c2, 2)   # 16 px
        self.down3 = _block(c2, c3, 2)   # 8 px
        self.down4 = _block(c3, c3, 2)   # 4 px
        self.up3 = _block(2 * c3, c3, 1)  # 8 px, with down3's skip
        self.up2 = _block(c3 + c2, c2, 1)  # 16 px, with down2's skip
        self.head = nn.Conv2d(c2, 2, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"MotionFieldNet needs images [B, 3, H, W], got {tuple(images.shape)}")
        size = images.shape[-2:]
        d1 = self.down1(images)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        d4 = self.down4(d3)
        u3 = self.up3(torch.cat([F.interpolate(d4, size=d3.shape[-2:], mode="nearest"), d3], dim=1))
        u2 = self.up2(torch.cat([F.interpolate(u3, size=d2.shape[-2:], mode="bilinear", align_corners=False), d2],
                                dim=1))
        return F.interpolate(self.head(u2), size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def fields(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images float [B, 3, H, W] in [-1, 1] (any device) -> (drift, rise) float [B, H, W] on the images'
        device: the form :class:`~smokeflow.flow.advected_warm_start.AdvectedWarmStart`'s ``field_of`` takes."""
        was_training = self.training
        self.eval()
        param = next(self.parameters())
        out = self(images.to(param.device, param.dtype)).to(images.device, images.dtype)
        self.train(was_training)
        return out[:, 0], out[:, 1]


def frames_to_input(frames) -> torch.Tensor:
    """uint8 frames [B, H, W, 3] (or one [H, W, 3]) -> float [B, 3, H, W] in [-1, 1]."""
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.shape[-1] != 3 or array.ndim not in (3, 4):
        raise ValueError(f"frames must be uint8 [B, H, W, 3] or [H, W, 3], got {array.dtype} {array.shape}")
    if array.ndim == 3:
        array = array[None]
    # A copy: frames read from a file can be a read-only array, which torch.from_numpy warns about.
    return torch.from_numpy(np.array(array, copy=True)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def predict_motion_fields(model: MotionFieldNet, frames) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [B, H, W, 3] -> (drift, rise) float64 [B, H, W], px per frame (:meth:`MotionFieldNet.fields`)."""
    drift, rise = MotionFieldNet.fields(model, frames_to_input(frames))
    return drift.double().numpy(), rise.double().numpy()


def save_motion_net(folder: str | os.PathLike, model: MotionFieldNet, info: dict) -> str:
    """Write the weights (safetensors) and ``info`` plus the width (JSON) into ``folder``, each atomically."""
    from safetensors.torch import save_file

    from smokeflow.training.checkpoint_io import atomic_write

    os.makedirs(folder, exist_ok=True)
    weights = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    path = atomic_write(os.path.join(folder, MOTION_NET_FILE), lambda tmp: save_file(weights, tmp))

    def write_info(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({**info, "width": model.width}, fh, indent=1)

    atomic_write(os.path.join(folder, MOTION_NET_CONFIG_FILE), write_info)
    return path


def load_motion_net(folder: str | os.PathLike | None) -> MotionFieldNet | None:
    """The motion network of a checkpoint folder; None when it has none.

    Raises CheckpointError naming the file when it exists but cannot be read as this network."""
    if folder is None:
        return None
    path = os.path.join(folder, MOTION_NET_FILE)
    if not os.path.isfile(path):
        return None
    from safetensors.torch import load_file

    config_path = os.path.join(folder, MOTION_NET_CONFIG_FILE)
    try:
        with open(config_path, encoding="utf-8") as fh:
            width = int(json.load(fh)["width"])
        model = MotionFieldNet(width)
        model.load_state_dict(load_file(path))
    except FileNotFoundError:
        raise CheckpointError(config_path, f"missing; {path} cannot be read without it") from None
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for a broken header
        raise CheckpointError(path, f"not a readable motion network ({type(err).__name__}: {err})") from None
    return model.eval()
