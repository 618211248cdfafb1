"""Inspect a trained VQVAE: reconstructions, their quality, the latent distribution and the codebook.

Functions the app and ``smokeflow inspect-vqvae`` call:

- :func:`reconstruction_grid` -> uint8 image: rows of originals, reconstructions and error maps.
- :func:`reconstruction_metrics` -> PSNR / SSIM over whole frames, PSNR over smoke pixels only (the black
  background is most of a frame and flatters whole-frame PSNR), background noise level.
- :func:`latent_statistics` -> overall and per-channel mean/std of the normalised latents, a histogram
  against N(0, 1).
- :func:`codebook_statistics` -> codes used, perplexity, dead codes, fraction of smoke tokens.
- :func:`inspect_vqvae` runs all of them on a dataset split and returns one JSON-able dict.

All per-frame numbers come from :mod:`smokeflow.metrics.frame_metrics` (torchmetrics SSIM), so inspection,
evaluation and training validation agree.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from smokeflow.data.smoke_mask import smoke_mask
from smokeflow.metrics.frame_metrics import psnr, psnr_smoke, ssim
from smokeflow.metrics.smoke_stats import smoke_sharpness

# Error maps: |error| of the brightest channel, scaled so that this error (0-255 scale) is full white.
ERROR_MAP_FULL_SCALE = 64.0


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def error_map(original: np.ndarray, reconstruction: np.ndarray, full_scale: float = ERROR_MAP_FULL_SCALE) -> np.ndarray:
    """Per-pixel max-channel absolute error as a heat image: uint8 [...,H,W,3] (black = exact, red..yellow
    ..white = growing error, white = ``full_scale`` or more on the 0-255 scale)."""
    err = np.abs(original.astype(np.int16) - reconstruction.astype(np.int16)).max(axis=-1) / full_scale
    err = np.clip(err, 0.0, 1.0)
    heat = np.stack([np.clip(err * 3, 0, 1), np.clip(err * 3 - 1, 0, 1), np.clip(err * 3 - 2, 0, 1)], axis=-1)
    return _u8(heat * 255)


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, scale: int = 2, gap: int = 2) -> np.ndarray:
    """A picture of originals (row 1), reconstructions (row 2) and error maps (row 3) per video.

    originals, reconstructions: uint8 [V,T,H,W,3] (V videos of T frames). Returns uint8
    [V*3*(H*scale+gap), T*(W*scale+gap), 3] with grey gaps between tiles and blocks of videos.
    """
    originals = np.asarray(originals)
    reconstructions = np.asarray(reconstructions)
    if originals.ndim == 4:
        originals, reconstructions = originals[None], reconstructions[None]
    videos, frames, height, width, _ = originals.shape
    tile_h, tile_w = height * scale + gap, width * scale + gap
    grid = np.full((videos * 3 * tile_h, frames * tile_w, 3), 40, dtype=np.uint8)
    errors = error_map(originals, reconstructions)
    for v in range(videos):
        for row, images in enumerate((originals[v], reconstructions[v], errors[v])):
            for t in range(frames):
                tile = images[t].repeat(scale, axis=0).repeat(scale, axis=1)
                top = (v * 3 + row) * tile_h
                grid[top:top + height * scale, t * tile_w:t * tile_w + width * scale] = tile
    return grid


def reconstruction_metrics(originals: np.ndarray, reconstructions: np.ndarray) -> dict[str, Any]:
    """Quality of reconstructions (uint8 [...,H,W,3] each), averaged over frames.

    psnr / ssim: whole frames; psnr_smoke: over smoke pixels (target or reconstruction) only, NaN-free mean
    over frames that have smoke; background_*: the reconstruction on pixels that are black-background in
    the original (0-255 scale) — the decoder noise a viewer sees on black; background_nonzero_fraction:
    share of those pixels that are not exactly 0; sharpness / sharpness_original: RMS intensity gradient over
    smoke pixels (0-255 per px, :func:`~smokeflow.metrics.smoke_stats.smoke_sharpness`), mean over frames
    with smoke: how much of the originals' edges the decoder draws.
    """
    p = psnr(reconstructions, originals).ravel()
    s = ssim(reconstructions, originals).ravel()
    ps = psnr_smoke(reconstructions, originals).ravel()
    background = ~smoke_mask(originals)
    values = reconstructions[background] if background.any() else np.zeros((0, 3), np.uint8)
    defined = ~np.isnan(ps)
    sharpness, sharpness_original = smoke_sharpness(reconstructions), smoke_sharpness(originals)
    return {
        "num_frames": int(p.size),
        "psnr": float(p.mean()), "psnr_std": float(p.std()),
        "ssim": float(s.mean()), "ssim_std": float(s.std()),
        "psnr_smoke": float(ps[defined].mean()) if defined.any() else None,
        "psnr_smoke_frames": int(defined.sum()),
        "background_mean": float(values.mean()) if values.size else 0.0,
        "background_max": int(values.max()) if values.size else 0,
        "background_nonzero_fraction": float((values.max(axis=-1) > 0).mean()) if values.size else 0.0,
        "background_above_threshold_fraction": float(smoke_mask(reconstructions)[background].mean())
        if background.any() else 0.0,
        "sharpness": _nan_mean(sharpness), "sharpness_original": _nan_mean(sharpness_original),
    }


def _nan_mean(values: np.ndarray) -> float | None:
    """Mean over the finite values (frames with smoke), None when there are none."""
    values = np.asarray(values, dtype=float).ravel()
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def latent_statistics(latents: torch.Tensor, bins: int = 61, value_range: float = 6.0) -> dict[str, Any]:
    """Statistics of normalised latents [N,C,h,w]: overall and per-channel mean/std, and a histogram of all
    values on [-value_range, value_range] next to the N(0,1) density integrated over the same bins."""
    z = latents.detach().float().cpu()
    channels = z.shape[1]
    per_channel = z.transpose(0, 1).reshape(channels, -1)
    edges = np.linspace(-value_range, value_range, bins + 1)
    counts, _ = np.histogram(z.numpy().ravel(), bins=edges)
    total = z.numel()
    cdf = np.array([0.5 * (1 + math.erf(e / math.sqrt(2))) for e in edges])
    channel_std = per_channel.std(dim=1)
    return {
        "num_latents": int(z.shape[0]),
        "shape": list(z.shape[1:]),
        "mean": float(z.mean()), "std": float(z.std()),
        "min": float(z.min()), "max": float(z.max()),
        "outside_range_fraction": float(((z < -value_range) | (z > value_range)).float().mean()),
        "per_channel_mean": per_channel.mean(dim=1).tolist(),
        "per_channel_std": channel_std.tolist(),
        "per_channel_std_min": float(channel_std.min()), "per_channel_std_max": float(channel_std.max()),
        "histogram": {"edges": edges.tolist(), "fraction": (counts / max(total, 1)).tolist(),
                      "normal_fraction": np.diff(cdf).tolist()},
    }


def codebook_statistics(indices: torch.Tensor, codebook_size: int, originals: np.ndarray | None = None,
                        downsample: int = 8) -> dict[str, Any]:
    """Codebook use of code indices [N,h,w] (int): codes used, perplexity, dead codes, and with
    ``originals`` (uint8 [N,H,W,3]) the fraction of tokens whose HxW/h*w patch contains smoke."""
    flat = indices.reshape(-1).cpu()
    counts = torch.bincount(flat, minlength=codebook_size).double()
    probs = counts / counts.sum().clamp_min(1)
    perplexity = float(torch.exp(-(probs[probs > 0] * probs[probs > 0].log()).sum()))
    used = int((counts > 0).sum())
    top = torch.topk(counts, k=min(5, codebook_size))
    out = {"codebook_size": codebook_size, "codes_used": used, "usage_fraction": used / codebook_size,
           "dead_codes": codebook_size - used, "perplexity": perplexity, "num_tokens": int(flat.numel()),
           "most_used_codes": top.indices.tolist(), "most_used_fraction": (top.values / counts.sum()).tolist()}
    if originals is not None:
        mask = torch.from_numpy(smoke_mask(originals)).float()[:, None]
        patch = torch.nn.functional.max_pool2d(mask, downsample)  # [N,1,h,w]: any smoke pixel in the patch
        out["smoke_token_fraction"] = float(patch.mean())
    return out


@torch.no_grad()
def encode_decode(pipe, frames: np.ndarray, batch_size: int = 256, progress: bool = False) -> dict[str, Any]:
    """Run frames uint8 [N,H,W,3] through a SmokeFlow's VQVAE. Returns normalised latents [N,C,h,w],
    code indices [N,h,w], reconstructions (quantised path, uint8) and continuous-path reconstructions."""
    from tqdm import tqdm

    latents, indices, recon, recon_continuous = [], [], [], []
    starts = range(0, frames.shape[0], batch_size)
    for start in tqdm(starts, desc="encode/decode", unit="batch", disable=not progress):
        chunk = frames[start:start + batch_size]
        raw = pipe.encode_raw(chunk)
        _, idx = pipe.vqvae.quantize(raw.to(pipe.device))
        z = pipe.normalizer.normalize(raw)
        latents.append(z)
        indices.append(idx.cpu())
        recon.append(pipe.decode(z, quantize=True))
        recon_continuous.append(pipe.decode(z, quantize=False))
    return {"latents": torch.cat(latents), "indices": torch.cat(indices), "reconstructions": np.concatenate(recon),
            "reconstructions_continuous": np.concatenate(recon_continuous)}


def inspect_frames(pipe, videos: np.ndarray, names: list[str] | None = None, grid_videos: int = 4,
                   grid_frames: int = 8, progress: bool = False) -> tuple[dict[str, Any], np.ndarray]:
    """Inspect uint8 videos [V,T,H,W,3] (already at the model size). Returns (report dict, grid image)."""
    v, t = videos.shape[:2]
    flat = videos.reshape(v * t, *videos.shape[2:])
    result = encode_decode(pipe, flat, progress=progress)
    recon = result["reconstructions"]
    report = {
        "num_videos": int(v), "frames_per_video": int(t),
        "quantized": reconstruction_metrics(flat, recon),
        "continuous": reconstruction_metrics(flat, result["reconstructions_continuous"]),
        "latents": latent_statistics(result["latents"]),
        "codebook": codebook_statistics(result["indices"], pipe.vqvae.config.codebook_size, flat,
                                        pipe.vqvae.config.downsample_factor),
    }
    if names is not None:
        report["videos"] = list(names)
    shown = min(grid_videos, v)
    frame_ids = np.linspace(0, t - 1, num=min(grid_frames, t)).round().astype(int)
    grid = reconstruction_grid(videos[:shown][:, frame_ids], recon.reshape(videos.shape)[:shown][:, frame_ids])
    return report, grid


def inspect_vqvae(checkpoint: str | os.PathLike, data_root: str | os.PathLike, split: str = "test",
                  num_videos: int | None = None, out_dir: str | os.PathLike | None = None,
                  device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Inspect a checkpoint on (up to ``num_videos`` videos of) a dataset split; with ``out_dir`` writes
    ``vqvae_inspection.json`` and ``reconstructions.png`` there. Returns the report."""
    from tqdm import tqdm

    from smokeflow.data.layouts import list_videos, read_video_entry
    from smokeflow.pipeline import SmokeFlow

    pipe = SmokeFlow.from_pretrained(checkpoint, device=device)
    entries = list_videos(data_root, split)
    if num_videos is not None:
        entries = entries[:num_videos]
    length = min(e.num_frames for e in entries)
    videos = np.stack([read_video_entry(e, pipe.input_size, range(length))
                       for e in tqdm(entries, desc=f"reading {split}", unit="video", disable=not progress)])
    report, grid = inspect_frames(pipe, videos, [e.name for e in entries], progress=progress)
    report.update({"checkpoint": os.fspath(checkpoint), "data": os.fspath(data_root), "split": split})
    if out_dir is not None:
        write_report(report, grid, out_dir)
    return report


def write_report(report: dict[str, Any], grid: np.ndarray, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write ``vqvae_inspection.json`` and ``reconstructions.png`` into ``out_dir``; returns their paths."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "vqvae_inspection.json")
    png_path = os.path.join(out_dir, "reconstructions.png")
    with open(json_path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1, allow_nan=False, default=_json_default)
    os.replace(json_path + ".tmp", json_path)
    Image.fromarray(grid).save(png_path)
    report["files"] = {"json": json_path, "grid": png_path}
    return report["files"]


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`inspect_vqvae`'s report."""
    q, c, lat, cb = report["quantized"], report["continuous"], report["latents"], report["codebook"]
    smoke = "n/a" if q["psnr_smoke"] is None else f"{q['psnr_smoke']:.2f} dB"
    smoke_c = "n/a" if c["psnr_smoke"] is None else f"{c['psnr_smoke']:.2f} dB"
    lines = [
        f"{report.get('split', '?')} split: {report['num_videos']} videos x {report['frames_per_video']} frames",
        f"quantised path : PSNR {q['psnr']:.2f} dB  SSIM {q['ssim']:.4f}  smoke PSNR {smoke}",
        f"continuous path: PSNR {c['psnr']:.2f} dB  SSIM {c['ssim']:.4f}  smoke PSNR {smoke_c}",
        f"background     : mean {q['background_mean']:.3f}, max {q['background_max']}, "
        f"non-zero {100 * q['background_nonzero_fraction']:.2f} % of background pixels",
        f"sharpness      : {_fmt(q.get('sharpness'))} (originals {_fmt(q.get('sharpness_original'))}; RMS intensity "
        "gradient over smoke pixels, 0-255 per px)",
        f"latents        : mean {lat['mean']:+.3f} std {lat['std']:.3f} (per-channel std "
        f"{lat['per_channel_std_min']:.2f}..{lat['per_channel_std_max']:.2f}), range {lat['min']:.1f}..{lat['max']:.1f}",
        f"codebook       : {cb['codes_used']}/{cb['codebook_size']} codes used "
        f"({100 * cb['usage_fraction']:.1f} %), perplexity {cb['perplexity']:.1f}, dead {cb['dead_codes']}, "
        f"smoke tokens {100 * cb.get('smoke_token_fraction', float('nan')):.1f} %",
    ]
    return "\n".join(lines)
