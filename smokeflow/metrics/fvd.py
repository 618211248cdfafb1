"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D, and an honest proxy.

Protocol (the one of the common PyTorch FVD code, e.g. VideoGPT / StyleGAN-V's "videogpt" mode):
- each clip uint8 [T, H, W, 3] is resized (bilinear, shorter side to 224, then centre crop) to 224x224,
  scaled to [-1, 1], and fed as [3, T, 224, 224] to I3D with the ``i3d_pretrained_400.pt`` weights;
- the features are the 400 Kinetics logits averaged over time (:class:`smokeflow.metrics.i3d.InceptionI3d`);
- FVD is the Fréchet distance between Gaussians fitted to the features of the real and generated clips
  (:mod:`smokeflow.metrics.frechet`). Clips need at least 9 frames (I3D's temporal downsampling).
FVD depends on the number of videos, their length and resolution and on whether the conditioning frames are
part of the clips; :func:`fvd_protocol` records all of them next to every number.

The weights cannot be downloaded on machines without internet. :func:`load_i3d` looks in this order: a path
the user gives, ``torch.hub.get_dir()/checkpoints/i3d_pretrained_400.pt``, ``~/.cache/videogpt/`` (where
VideoGPT's downloader puts it); then, if allowed, tries one download with a short timeout. Without weights FVD
is "unavailable" with the fix; random weights never produce a number called FVD.

The proxy :func:`fd_on_vqvae_features` is the Fréchet distance of our own VQVAE's latents of the clips. It
is shown only under its own name (:data:`PROXY_NAME`) with :data:`PROXY_NOTE`: it is not FVD and not
comparable to published FVD numbers.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from smokeflow.metrics.frechet import frechet_distance_of_features
from smokeflow.metrics.i3d import MIN_FRAMES, InceptionI3d

I3D_FILENAME = "i3d_pretrained_400.pt"
# The link the common PyTorch FVD code (VideoGPT-derived) downloads from.
I3D_URL = (
    "https://onedrive.live.com/download?cid=78EEF3EB6AE7DBCB&resid=78EEF3EB6AE7DBCB%21199"
    "&authkey=AApKdFHPXzWLNyI"
)
I3D_RESOLUTION = 224
FEATURES_DESCRIPTION = "I3D (Kinetics-400) 400-d logits averaged over time"
PROXY_NAME = "FD on VQVAE features"
PROXY_NOTE = (
    "Fréchet distance of this project's VQVAE latents (spatially averaged per frame, concatenated over "
    "frames); NOT FVD and not comparable to published FVD numbers - only to other runs of this proxy with "
    "the same VQVAE."
)


@dataclasses.dataclass
class I3DAvailability:
    """Outcome of :func:`load_i3d`: ``model`` (eval mode) or None, and ``reason`` (why not + the fix)."""

    model: InceptionI3d | None
    reason: str
    weights_path: str | None = None

    @property
    def available(self) -> bool:
        return self.model is not None


def default_i3d_paths() -> list[str]:
    """Where :func:`load_i3d` looks when no path is given, in order."""
    return [
        os.path.join(torch.hub.get_dir(), "checkpoints", I3D_FILENAME),
        os.path.join(os.path.expanduser("~"), ".cache", "videogpt", I3D_FILENAME),
    ]


def unavailable_fix() -> str:
    return (
        f"fix: download {I3D_FILENAME} (the Kinetics-400 I3D of the common PyTorch FVD code, {I3D_URL}) and "
        f"copy it to {default_i3d_paths()[0]} (or pass --fvd-weights PATH)"
    )


def _try_download(destination: str, timeout_s: float) -> str | None:
    """One download attempt; returns an error text on failure. The file is checked (a torch state dict
    with I3D's classifier) before it is moved into place, so a failed or HTML "download" never lands in
    the cache."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    partial = destination + ".partial"
    try:
        with urllib.request.urlopen(I3D_URL, timeout=timeout_s) as response, open(partial, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
        state = torch.load(partial, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "logits.conv3d.weight" not in state:
            raise ValueError("the downloaded file is not the I3D state dict (the link may need a browser)")
        os.replace(partial, destination)
        return None
    except Exception as err:  # no network, DNS failure, timeout, HTTP error, wrong file: all "not available"
        if os.path.exists(partial):
            os.remove(partial)
        return f"{type(err).__name__}: {err}"


def load_i3d(
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
    timeout_s: float = 5.0,
) -> I3DAvailability:
    """Load the Kinetics-400 I3D from a local file (or one short download attempt); never raises for a
    missing, unreadable or mismatching file - the problem is in ``.reason``."""
    if weights_path is not None:
        candidates = [os.fspath(weights_path)]
    else:
        candidates = default_i3d_paths()
    path = next((p for p in candidates if os.path.isfile(p)), None)
    download_error = None
    if path is None and download and weights_path is None:
        download_error = _try_download(candidates[0], timeout_s)
        if download_error is None:
            path = candidates[0]
    if path is None:
        tried = ", ".join(candidates)
        extra = f"; download failed ({download_error})" if download_error else ""
        return I3DAvailability(None, f"FVD unavailable: I3D weights not found at {tried}{extra}; {unavailable_fix()}")

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        return I3DAvailability(None, f"FVD unavailable: cannot read {path} ({type(err).__name__}: {err}); {unavailable_fix()}", path)
    if not isinstance(state, dict):
        return I3DAvailability(None, f"FVD unavailable: {path} is not a state dict; {unavailable_fix()}", path)
    model = InceptionI3d(num_classes=400)
    expected = model.state_dict()
    # Older saves lack BatchNorm's step counter, which does not affect inference.
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        return I3DAvailability(
            None,
            f"FVD unavailable: {path} is not the 400-class InceptionI3d state dict "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}); {unavailable_fix()}",
            path,
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        return I3DAvailability(None, f"FVD unavailable: {path} does not fit I3D ({err}); {unavailable_fix()}", path)
    # Inference only: folding BatchNorm into the convolutions gives the same features, faster.
    model.eval().fold_batch_norm().to(device)
    for param in model.parameters():
        param.requires_grad_(False)
    return I3DAvailability(model, "", path)


def preprocess_clips(clips: np.ndarray, resolution: int = I3D_RESOLUTION) -> torch.Tensor:
    """uint8 [N, T, H, W, 3] -> float32 [N, 3, T, res, res] in [-1, 1] (bilinear resize of the shorter side
    to ``res``, then centre crop)."""
    clips = np.asarray(clips)
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be uint8 [N, T, H, W, 3], got {clips.dtype} {clips.shape}")
    n, t, h, w, _ = clips.shape
    x = torch.from_numpy(clips).reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float() / 255.0
    scale = resolution / min(h, w)
    size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    x = x[:, :, top : top + resolution, left : left + resolution]
    x = x * 2.0 - 1.0
    return x.reshape(n, t, 3, resolution, resolution).permute(0, 2, 1, 3, 4).contiguous()


@torch.no_grad()
def i3d_features(model: InceptionI3d, clips: np.ndarray, batch_size: int = 4, progress: Callable | None = None) -> np.ndarray:
    """I3D features of clips uint8 [N, T>=9, H, W, 3] -> float64 [N, 400]. Preprocessed batch by batch
    (a 224x224 clip is large)."""
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[1] < MIN_FRAMES:
        raise ValueError(f"FVD needs clips [N, T>={MIN_FRAMES}, H, W, 3], got {clips.shape}")
    device = next(model.parameters()).device
    out = []
    for start in range(0, clips.shape[0], batch_size):
        batch = preprocess_clips(clips[start : start + batch_size]).to(device)
        out.append(model(batch).double().cpu().numpy())
        if progress is not None:
            progress(min(start + batch_size, clips.shape[0]))
    return np.concatenate(out, axis=0)


def fvd_protocol(num_videos: int, num_frames: int, source_resolution: int, includes_conditioning: bool, num_observed: int) -> dict:
    """Everything that changes an FVD number, stored beside it."""
    return {
        "num_videos": int(num_videos),
        "frames_per_clip": int(num_frames),
        "source_resolution": int(source_resolution),
        "i3d_input_resolution": I3D_RESOLUTION,
        "includes_conditioning_frames": bool(includes_conditioning),
        "num_conditioning_frames": int(num_observed),
        "features": FEATURES_DESCRIPTION,
        "weights": I3D_FILENAME,
        "resize": "bilinear, shorter side to 224 then centre crop; values scaled to [-1, 1]",
    }


def fvd_from_features(real_features: np.ndarray, generated_features: np.ndarray) -> float:
    """FVD from I3D features [N, 400] of real and generated clips."""
    return frechet_distance_of_features(real_features, generated_features)


def vqvae_clip_features(latents: np.ndarray | torch.Tensor) -> np.ndarray:
    """Clip features for the proxy: latents [N, T, C, h, w] -> float64 [N, T*C] (spatial mean per frame,
    concatenated over frames, so the features keep the temporal order)."""
    latents = torch.as_tensor(latents, dtype=torch.float64)
    if latents.ndim != 5:
        raise ValueError(f"latents must be [N, T, C, h, w], got {tuple(latents.shape)}")
    return latents.mean(dim=(-2, -1)).flatten(start_dim=1).numpy()


def fd_on_vqvae_features(real_latents, generated_latents) -> float:
    """:data:`PROXY_NAME`: Fréchet distance of :func:`vqvae_clip_features` of real vs generated clips."""
    return frechet_distance_of_features(vqvae_clip_features(real_latents), vqvae_clip_features(generated_latents))
