"""Evaluate rollouts of latent predictors (the model and the baselines) over a dataset split.

One code path for every predictor (:mod:`smokeflow.metrics.baselines`):

1. :func:`load_evaluation_videos` reads, for every video of the split, ``num_observed`` observed frames and
   the ``num_frames`` frames that follow (the ground truth), as uint8 [N, T, 64, 64, 3].
2. :func:`encode_observations` encodes the observed frames once (a sweep reuses them for every setting).
3. :func:`rollout_predictor` rolls each video out with K samples (video i uses seed ``seed + i``, so runs are
   reproducible and videos get different noise) and decodes the latents to frames [N, K, F, 64, 64, 3].
4. :func:`score_rollouts` computes per-frame metrics [N, K, F]; :func:`summarise_metric` reduces them to
   three views, each as a mean and a per-frame curve over the F predicted frames:
   - ``single``: sample 0 only (what one call of ``predict`` gives);
   - ``mean_over_k``: the metric averaged over the K samples (not the metric of the averaged frames);
   - ``best_of_k``: per video, the sample whose frame-averaged metric is best (highest PSNR / SSIM,
     lowest MSE / LPIPS), chosen separately for each metric; its curve is that sample's.
   Deterministic predictors (baselines) are rolled out once and the one sample stands for all K.
5. Smoke statistics per frame for predictions (over all samples) beside the ground truth; FVD when the I3D
   weights are present, otherwise its reason; and the proxy "FD on VQVAE features" under its own name.

:func:`evaluate` returns a JSON-ready dict (the schema is in :data:`REPORT_SCHEMA_VERSION` and documented in
``smokeflow/metrics/report.py``); :func:`run_sweep` evaluates every combination of sampling settings into a
CSV, appending row by row so an interrupted sweep keeps its finished rows and resumes where it stopped.

The codec is anything with ``encode(frames uint8 [T, H, W, 3]) -> float tensor [T, C, h, w]`` and
``decode(z [..., C, h, w]) -> uint8 [..., 64, 64, 3]`` (``SmokeFlow`` provides both).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import itertools
import math
import os
import time
import warnings
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from smokeflow.errors import DataError
from smokeflow.flow.defaults import is_auto_detail
from smokeflow.metrics import frame_metrics
from smokeflow.metrics.baselines import AdvectedLastFrame, CopyLastFrame, LatentPredictor, LinearLatentExtrapolation
from smokeflow.metrics.fvd import (
    PROXY_NAME,
    PROXY_NOTE,
    fd_on_vqvae_features,
    fvd_from_features,
    fvd_protocol,
    i3d_features,
)
from smokeflow.metrics.i3d import MIN_FRAMES
from smokeflow.metrics.lpips_metric import lpips_distance
from smokeflow.metrics.smoke_stats import DESCRIPTIONS as SMOKE_STAT_DESCRIPTIONS
from smokeflow.metrics.smoke_stats import STATISTICS as SMOKE_STATISTICS
from smokeflow.metrics.smoke_stats import smoke_statistics

REPORT_SCHEMA_VERSION = 1
FRAME_SIZE = 64

METRIC_DEFINITIONS = {
    "psnr": "PSNR in dB over the whole frame, data range 255, capped at 100 dB for identical frames",
    "psnr_smoke": "PSNR in dB over pixels that are smoke in the target OR the prediction (NaN frames without any are skipped)",
    "ssim": "SSIM, Gaussian 11x11 sigma 1.5, data range 255, mean of per-channel RGB SSIM, border cropped (= scikit-image)",
    "mse": "mean squared error on the 0-255 scale over pixels and channels",
    "lpips": "LPIPS v0.1 with torchvision's AlexNet (alexnet-owt-7be5be79.pth), inputs in [-1, 1]",
}
HIGHER_IS_BETTER = {"psnr": True, "psnr_smoke": True, "ssim": True, "mse": False, "lpips": False}


# ----------------------------------------------------------------------------------------------- data
@dataclasses.dataclass
class EvaluationVideos:
    """names [N]; observed uint8 [N, T_obs, 64, 64, 3]; targets uint8 [N, F, 64, 64, 3]; skipped: videos
    too short for T_obs + F frames, as {"name", "reason"}. With ``window_stride``, each of the N entries is one
    window of a video, named ``<video>@<first frame>``."""

    names: list[str]
    observed: np.ndarray
    targets: np.ndarray
    skipped: list[dict]
    start_frame: int = 0
    window_stride: int | None = None


def load_evaluation_videos(
    data_root: str | os.PathLike,
    split: str,
    num_observed: int = 1,
    num_frames: int = 9,
    num_videos: int | None = None,
    start_frame: int = 0,
    window_stride: int | None = None,
) -> EvaluationVideos:
    """Read the first ``num_videos`` videos of a split (all when None), frames [start, start + T_obs + F).

    window_stride: also every later window of T_obs + F frames that starts ``window_stride`` frames after the
    one before (start, start + stride, ... while the window fits), each scored as a video of its own. Why: a
    user's own footage is often one long clip, and the first window alone is a sample of one; overlapping
    windows are not independent, so treat their spread with care. ``num_videos`` still counts videos.
    Videos shorter than one window are skipped and listed (never silently dropped); none left -> DataError.
    """
    from smokeflow.data.layouts import list_videos, read_video_entry

    if num_observed < 1 or num_frames < 1:
        raise ValueError(f"need num_observed >= 1 and num_frames >= 1, got {num_observed}, {num_frames}")
    if start_frame < 0:
        raise ValueError(f"start_frame must be >= 0, got {start_frame}")
    if window_stride is not None and window_stride < 1:
        raise ValueError(f"window_stride must be >= 1, got {window_stride}")
    entries = list_videos(data_root, split)
    window = num_observed + num_frames
    needed = start_frame + window
    names, observed, targets, skipped = [], [], [], []
    videos_read = 0
    for entry in entries:
        if num_videos is not None and videos_read >= num_videos:
            break
        if entry.num_frames < needed:
            skipped.append({"name": entry.name, "reason": f"{entry.num_frames} frames < {needed} needed"})
            continue
        videos_read += 1
        last = entry.num_frames if window_stride is not None else needed
        frames = read_video_entry(entry, size=FRAME_SIZE, frame_indices=range(start_frame, last))
        starts = [0] if window_stride is None else range(0, last - start_frame - window + 1, window_stride)
        for offset in starts:
            start = start_frame + offset
            clip = frames[offset:offset + window]
            names.append(entry.name if window_stride is None else f"{entry.name}@{start}")
            observed.append(clip[:num_observed])
            targets.append(clip[num_observed:])
    if not names:
        raise DataError(
            os.path.join(os.fspath(data_root), split),
            f"no video has the {needed} frames needed ({num_observed} observed + {num_frames} predicted"
            f"{f' from frame {start_frame}' if start_frame else ''}); {len(skipped)} too short",
        )
    return EvaluationVideos(names, np.stack(observed), np.stack(targets), skipped, start_frame, window_stride)


@torch.no_grad()
def encode_frames(codec, frames: np.ndarray, chunk: int = 256) -> torch.Tensor:
    """Encode uint8 [N, T, H, W, 3] in batches of about ``chunk`` frames -> float [N, T, C, h, w] (CPU)."""
    n, t = frames.shape[:2]
    flat = frames.reshape(n * t, *frames.shape[2:])
    latents = torch.cat([torch.as_tensor(codec.encode(flat[i : i + chunk])).float().cpu()
                         for i in range(0, flat.shape[0], chunk)])
    return latents.reshape(n, t, *latents.shape[1:])


@torch.no_grad()
def encode_observations(codec, videos: EvaluationVideos) -> list[torch.Tensor]:
    """Encode each video's observed frames once: list of N float tensors [T_obs, C, h, w]."""
    return list(encode_frames(codec, videos.observed).unbind(0))


# -------------------------------------------------------------------------------------------- rollouts
@dataclasses.dataclass
class PredictorRollouts:
    """frames uint8 [N, K, F, 64, 64, 3] (K = 1 for deterministic predictors); first_sample_latents float
    [N, F, C, h, w] (sample 0, CPU); nfe per sample for the whole rollout; rollout_seconds: total wall time
    of predict_latents; decode_seconds: of decoding."""

    frames: np.ndarray
    first_sample_latents: torch.Tensor
    nfe: int
    rollout_seconds: float
    decode_seconds: float


@torch.no_grad()
def rollout_predictor(
    predictor: LatentPredictor,
    observed_latents: list[torch.Tensor],
    codec,
    num_frames: int,
    num_samples: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> PredictorRollouts:
    """Roll every video out with ``predictor``, then decode. Video i uses seed ``seed + i``.

    Latents of several videos are decoded together (about ``_DECODE_FRAMES`` frames per call): the
    decoder runs much faster on big batches than on one video's K x F frames at a time.
    """
    samples = 1 if predictor.deterministic else num_samples
    all_latents, nfe = [], 0
    rollout_seconds = decode_seconds = 0.0
    for index, z_obs in enumerate(tqdm(observed_latents, desc=predictor.name, unit="video", disable=not progress, leave=False)):
        start = time.perf_counter()
        result = predictor.predict_latents(z_obs, num_frames, num_samples=samples, seed=seed + index)
        rollout_seconds += time.perf_counter() - start
        nfe = int(result.nfe)
        latents = result.latents.detach().float().cpu()
        if tuple(latents.shape[:2]) != (samples, num_frames):
            raise ValueError(f"{predictor.name}: latents have shape {tuple(latents.shape)}, expected [{samples}, {num_frames}, ...]")
        all_latents.append(latents)
    latents = torch.stack(all_latents)  # [N, K, F, C, h, w]
    start = time.perf_counter()
    videos_per_call = max(1, _DECODE_FRAMES // (samples * num_frames))
    frames = np.concatenate([np.asarray(codec.decode(latents[i : i + videos_per_call]))
                             for i in range(0, latents.shape[0], videos_per_call)])
    decode_seconds = time.perf_counter() - start
    return PredictorRollouts(frames, latents[:, 0].clone(), nfe, rollout_seconds, decode_seconds)


_DECODE_FRAMES = 256


# ----------------------------------------------------------------------------------------------- scores
def score_rollouts(frames: np.ndarray, targets: np.ndarray, lpips_model=None) -> dict[str, np.ndarray]:
    """Per-frame metrics of frames uint8 [N, K, F, H, W, 3] against targets [N, F, H, W, 3].

    Returns {metric: float64 [N, K, F]}; ``lpips`` only when a model is given.
    """
    targets = targets[:, None]  # broadcast over K
    scores = {name: fn(frames, targets) for name, fn in frame_metrics.FRAME_METRICS.items()}
    if lpips_model is not None:
        scores["lpips"] = lpips_distance(lpips_model, frames, targets)
    return scores


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _curve(values: np.ndarray) -> list:
    """[N, F] -> per-frame mean over videos (NaN-aware) as a JSON list (None where undefined)."""
    with _quiet_nan_warnings():
        return [_finite_or_none(v) for v in np.nanmean(values, axis=0)]


@contextlib.contextmanager
def _quiet_nan_warnings():
    """nanmean of an all-NaN slice warns; such a slice is reported as None, which says it already."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def summarise_metric(values: np.ndarray, higher_is_better: bool, num_samples: int) -> dict:
    """values float64 [N, K, F] -> {"single", "mean_over_k", "best_of_k"} each {"mean", "per_frame"}.

    With K = 1 stored samples (a deterministic predictor) all three views are the same rollout.
    """
    with _quiet_nan_warnings():
        single = values[:, 0]  # [N, F]
        mean_over_k = np.nanmean(values, axis=1)
        per_sample_score = np.nanmean(values, axis=2)  # [N, K]
        filled = np.where(np.isnan(per_sample_score), -np.inf if higher_is_better else np.inf, per_sample_score)
        best_index = np.argmax(filled, axis=1) if higher_is_better else np.argmin(filled, axis=1)
        best = values[np.arange(values.shape[0]), best_index]  # [N, F]

        def view(v):
            return {"mean": _finite_or_none(np.nanmean(v)), "per_frame": _curve(v)}

        return {
            "single": view(single),
            "mean_over_k": view(mean_over_k),
            "best_of_k": view(best),
            "samples_scored": int(values.shape[1]),
            "samples_requested": int(num_samples),
            "defined_frames": int(np.sum(~np.isnan(values))),
            "total_frames": int(values.size),
        }


def summarise_smoke_statistics(frames: np.ndarray, videos: EvaluationVideos,
                               last_observed_decoded: np.ndarray | None = None) -> dict:
    """Per-frame smoke statistics of predictions (mean over videos and samples) and of ground truth.

    The change of the first predicted frame is measured against ``last_observed_decoded`` (the codec's
    reconstruction of the last observed frame, uint8 [N, H, W, 3]) when given, so that reconstruction error
    is not counted as motion (copy-last then has change 0); the ground truth's against the real frame.
    """
    last_observed = videos.observed[:, -1]  # [N, H, W, 3]
    previous = last_observed if last_observed_decoded is None else last_observed_decoded
    predicted = smoke_statistics(frames, previous=previous[:, None])  # each [N, K, F]
    truth = smoke_statistics(videos.targets, previous=last_observed)  # each [N, F]
    out = {}
    with _quiet_nan_warnings():
        for name in SMOKE_STATISTICS:
            out[name] = {
                "description": SMOKE_STAT_DESCRIPTIONS[name],
                "prediction": _curve(np.nanmean(predicted[name], axis=1)),
                "ground_truth": _curve(truth[name]),
            }
        pred_change = float(np.nanmean(predicted["change"]))
        true_change = float(np.nanmean(truth["change"]))
        pred_rise = float(np.nanmean(predicted["rise"]))
        true_rise = float(np.nanmean(truth["rise"]))
    out["change_ratio"] = _finite_or_none(pred_change / true_change) if true_change > 0 else None
    # Only where the truth clearly rises (0.05 px per frame): a ratio of two near-zero rises means nothing.
    out["rise_ratio"] = _finite_or_none(pred_rise / true_rise) if true_rise > 0.05 else None
    return out


# ---------------------------------------------------------------------------------------- video metrics
def _clips(observed: np.ndarray, future: np.ndarray) -> np.ndarray:
    """Conditioning frames + future frames: [N, T_obs, ...] + [N, F, ...] -> [N, T_obs + F, ...]."""
    return np.concatenate([observed, future], axis=1)


class VideoMetricContext:
    """What FVD, the proxy and the reconstruction ceiling share over one evaluation: the observed latents
    (already encoded) and the true future frames' latents and I3D features, each computed once."""

    def __init__(self, videos: EvaluationVideos, codec, observed_latents: list[torch.Tensor], i3d=None):
        self.videos, self.codec, self.i3d = videos, codec, i3d
        self.observed_latents = torch.stack([torch.as_tensor(z).float().cpu() for z in observed_latents])
        self._true_future_latents = None
        self._real_i3d = None

    @property
    def true_future_latents(self) -> torch.Tensor:
        """Latents of the true future frames [N, F, C, h, w] (CPU float32), encoded on first use."""
        if self._true_future_latents is None:
            self._true_future_latents = encode_frames(self.codec, self.videos.targets)
        return self._true_future_latents

    def fvd(self, generated_future: np.ndarray) -> dict:
        videos = self.videos
        num_clip_frames = videos.observed.shape[1] + videos.targets.shape[1]
        protocol = fvd_protocol(len(videos.names), num_clip_frames, FRAME_SIZE, True, videos.observed.shape[1])
        if self.i3d is None or not self.i3d.available:
            reason = self.i3d.reason if self.i3d is not None else "FVD unavailable: not requested"
            return {"value": None, "reason": reason, "protocol": protocol}
        if num_clip_frames < MIN_FRAMES:
            return {"value": None, "reason": f"FVD unavailable: clips of {num_clip_frames} frames, I3D needs >= {MIN_FRAMES}", "protocol": protocol}
        if len(videos.names) < 2:
            return {"value": None, "reason": "FVD unavailable: needs at least 2 videos", "protocol": protocol}
        if self._real_i3d is None:
            self._real_i3d = i3d_features(self.i3d.model, _clips(videos.observed, videos.targets))
        fake = i3d_features(self.i3d.model, _clips(videos.observed, generated_future))
        return {"value": fvd_from_features(self._real_i3d, fake), "reason": "", "protocol": protocol}

    def proxy(self, generated_future_latents: torch.Tensor) -> dict:
        """:data:`PROXY_NAME` of clips = observed latents + ``generated_future_latents`` [N, F, C, h, w]
        (the predicted latents themselves) against observed + encoded true future frames."""
        out = {"name": PROXY_NAME, "note": PROXY_NOTE, "value": None,
               "clips": "latents of the conditioning frames + predicted latents (sample 0), against the "
                        "conditioning + encoded true future frames"}
        if len(self.videos.names) < 2:
            out["reason"] = "needs at least 2 videos"
            return out
        real = torch.cat([self.observed_latents, self.true_future_latents], dim=1)
        fake = torch.cat([self.observed_latents, torch.as_tensor(generated_future_latents).float().cpu()], dim=1)
        out["value"] = fd_on_vqvae_features(real, fake)
        return out


# ------------------------------------------------------------------------------------------ evaluation
def evaluate_predictor(
    predictor: LatentPredictor,
    observed_latents: list[torch.Tensor],
    videos: EvaluationVideos,
    codec,
    num_samples: int = 1,
    seed: int = 0,
    lpips_model=None,
    video_metrics: VideoMetricContext | None = None,
    progress: bool = True,
    last_observed_decoded: np.ndarray | None = None,
    num_examples: int = 4,
) -> dict:
    """Roll out, decode and score one predictor over all videos; returns its JSON-ready section.

    ``_example_frames`` (sample 0 of the first ``num_examples`` videos, uint8 [n, F, H, W, 3]) is kept for
    the HTML report; keys starting with "_" are not written to JSON.
    """
    num_frames = videos.targets.shape[1]
    rollouts = rollout_predictor(predictor, observed_latents, codec, num_frames, num_samples, seed, progress)
    start = time.perf_counter()
    scores = score_rollouts(rollouts.frames, videos.targets, lpips_model)
    metrics = {
        name: {"higher_is_better": HIGHER_IS_BETTER[name], **summarise_metric(values, HIGHER_IS_BETTER[name], num_samples)}
        for name, values in scores.items()
    }
    section = {
        "settings": predictor.settings(),
        "deterministic": bool(predictor.deterministic),
        "nfe_per_sample": rollouts.nfe,
        "nfe_per_frame": rollouts.nfe / num_frames,
        # Wall time of predict_latents per predicted frame, all K samples of a video rolled out at once.
        "seconds_per_frame": rollouts.rollout_seconds / (len(videos.names) * num_frames),
        "rollout_seconds": rollouts.rollout_seconds,
        "decode_seconds": rollouts.decode_seconds,
        "metrics": metrics,
        "smoke_statistics": summarise_smoke_statistics(rollouts.frames, videos, last_observed_decoded),
        "_example_frames": rollouts.frames[:num_examples, 0],
    }
    if video_metrics is not None:
        sample0 = rollouts.frames[:, 0]
        section["fvd"] = video_metrics.fvd(sample0)
        section["fd_vqvae_features"] = video_metrics.proxy(rollouts.first_sample_latents)
    section["scoring_seconds"] = time.perf_counter() - start
    return section


@torch.no_grad()
def decode_last_observed(codec, observed_latents: list[torch.Tensor]) -> np.ndarray:
    """The codec's reconstruction of each video's last observed frame: uint8 [N, H, W, 3]."""
    last = torch.stack([torch.as_tensor(z[-1]).float().cpu() for z in observed_latents])  # [N, C, h, w]
    return np.concatenate([np.asarray(codec.decode(last[i : i + _DECODE_FRAMES]))
                           for i in range(0, last.shape[0], _DECODE_FRAMES)])


@torch.no_grad()
def reconstruction_reference(context: VideoMetricContext, lpips_model=None,
                             last_observed_decoded: np.ndarray | None = None) -> dict:
    """Metrics of decode(encode(true future frames)) against the true frames: what a perfect latent
    prediction would score through this VQVAE (a ceiling for the model's single-sample numbers).

    Also its smoke statistics, measured exactly as a predictor's (change of the first frame against
    ``last_observed_decoded``): the sharpness and frame-to-frame change that survive the codec, so a
    report can tell the autoencoder's share of a rollout's blur and missing motion from the flow model's.
    """
    videos, codec = context.videos, context.codec
    latents = context.true_future_latents
    videos_per_call = max(1, _DECODE_FRAMES // latents.shape[1])
    reconstructed = np.concatenate([np.asarray(codec.decode(latents[i : i + videos_per_call]))
                                    for i in range(0, latents.shape[0], videos_per_call)])
    scores = score_rollouts(reconstructed[:, None], videos.targets, lpips_model)
    with _quiet_nan_warnings():
        metrics = {name: {"mean": _finite_or_none(np.nanmean(v)), "per_frame": _curve(v[:, 0])} for name, v in scores.items()}
    return {"description": "VQVAE reconstruction of the true future frames (encode then decode): a ceiling, "
                           "not a predictor", "metrics": metrics,
            "smoke_statistics": summarise_smoke_statistics(reconstructed[:, None], videos, last_observed_decoded)}


def default_baselines(pipe=None) -> list[LatentPredictor]:
    """Copy-last and linear extrapolation; with a ``SmokeFlow`` pipeline also the advected last frame."""
    baselines = [CopyLastFrame(), LinearLatentExtrapolation()]
    return baselines + [AdvectedLastFrame(pipe)] if pipe is not None else baselines


def _availability(lpips_availability, i3d_availability) -> dict:
    lpips_info = {"available": False, "reason": "LPIPS unavailable: not requested"}
    if lpips_availability is not None:
        if lpips_availability.available and lpips_availability.reference_weights:
            lpips_info = {"available": True, "reason": "", "weights": lpips_availability.backbone_path}
        elif lpips_availability.available:
            lpips_info = {"available": False, "reason": (
                f"LPIPS not reported: {lpips_availability.backbone_path} is not torchvision's published "
                "alexnet-owt-7be5be79.pth (SHA-256 mismatch), so the number would not be LPIPS")}
        else:
            lpips_info = {"available": False, "reason": lpips_availability.reason}
    fvd_info = {"available": False, "reason": "FVD unavailable: not requested"}
    if i3d_availability is not None:
        fvd_info = {"available": i3d_availability.available, "reason": i3d_availability.reason,
                    "weights": i3d_availability.weights_path}
    return {"lpips": lpips_info, "fvd": fvd_info}


def evaluate(
    codec,
    predictors: list[LatentPredictor],
    videos: EvaluationVideos,
    settings: dict,
    num_samples: int = 1,
    seed: int = 0,
    lpips_availability=None,
    i3d_availability=None,
    observed_latents: list[torch.Tensor] | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate every predictor on the same videos; returns the JSON-ready report (see report.py).

    ``settings`` (the exact command-line settings) is stored as given. LPIPS is scored only with the
    reference AlexNet weights; FVD only with the I3D weights; otherwise each says why not.
    """
    start = time.perf_counter()
    if observed_latents is None:
        t0 = time.perf_counter()
        observed_latents = encode_observations(codec, videos)
        encode_seconds = time.perf_counter() - t0
    else:
        encode_seconds = 0.0
    available = _availability(lpips_availability, i3d_availability)
    lpips_model = lpips_availability.model if available["lpips"]["available"] else None
    context = VideoMetricContext(videos, codec, observed_latents, i3d_availability)
    last_observed_decoded = decode_last_observed(codec, observed_latents)
    sections = {}
    for predictor in predictors:
        sections[predictor.name] = evaluate_predictor(
            predictor, observed_latents, videos, codec, num_samples, seed, lpips_model, context, progress,
            last_observed_decoded,
        )
    reconstruction = reconstruction_reference(context, lpips_model, last_observed_decoded)
    total_seconds = time.perf_counter() - start
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "smokeflow-evaluation",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "protocol": protocol_section(videos, num_samples, seed),
        "metrics_available": available,
        "predictors": sections,
        "reconstruction": reconstruction,
        "_examples": {"names": videos.names[:4], "observed": videos.observed[:4, -1], "ground_truth": videos.targets[:4]},
        "timing": {
            "total_seconds": total_seconds,
            "encode_seconds": encode_seconds,
            "per_predictor_seconds": {
                name: s["rollout_seconds"] + s["decode_seconds"] + s["scoring_seconds"] for name, s in sections.items()
            },
        },
    }


def protocol_section(videos: EvaluationVideos, num_samples: int, seed: int) -> dict:
    return {
        "num_videos": len(videos.names),
        "videos": list(videos.names),
        "skipped_videos": videos.skipped,
        "num_observed": int(videos.observed.shape[1]),
        "num_frames": int(videos.targets.shape[1]),
        "start_frame": int(videos.start_frame),
        "window_stride": videos.window_stride,
        "resolution": FRAME_SIZE,
        "num_samples": int(num_samples),
        "seed": int(seed),
        "seed_rule": "video i (0-based, in listing order) is rolled out with seed + i",
        "metric_definitions": METRIC_DEFINITIONS,
        "views": {
            "single": "sample 0 of every video",
            "mean_over_k": "metric averaged over the K samples",
            "best_of_k": "per video, the sample with the best frame-averaged value of that metric",
        },
        "scored_frames": "only the predicted frames (the observed frames are not scored)",
        "averaging": "means are over videos and predicted frames of per-frame values (PSNR averaged in dB, "
                     "as OpenSTL does); per_frame curves average over videos",
    }


# ---------------------------------------------------------------------------------------------- sweeps
SWEEP_KEYS = ("steps", "solver", "warm_start", "warm_start_motion", "detail")
SWEEP_PROTOCOL_COLUMNS = ("checkpoint", "split", "num_videos", "num_observed", "num_frames", "num_samples", "seed")
SWEEP_RESULT_COLUMNS = (
    "nfe_per_sample", "nfe_per_frame", "seconds_per_frame",
    "psnr", "psnr_mean_over_k", "psnr_best_of_k",
    "ssim", "ssim_mean_over_k", "ssim_best_of_k",
    "psnr_smoke", "psnr_smoke_best_of_k",
    "lpips", "lpips_best_of_k",
    "change_ratio", "rise_ratio", "fd_vqvae_features",
)
SWEEP_COLUMNS = ("predictor", *SWEEP_KEYS, *SWEEP_PROTOCOL_COLUMNS, *SWEEP_RESULT_COLUMNS)


def parse_sweep(items: Iterable[str]) -> dict[str, list]:
    """``["steps=5,10", "solver=euler,heun", "warm_start=0,0.1", "warm_start_motion=auto,off", "detail=0,0.5"]``
    -> {"steps": [5, 10], ...}. (A given DRIFT,RISE velocity cannot be swept: its comma separates values.)"""
    converters = {"steps": int, "solver": str, "warm_start": float, "warm_start_motion": _motion_mode,
                  "detail": _detail_amount}
    aliases = {"warm-start": "warm_start", "warm-start-motion": "warm_start_motion"}
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"sweep item {item!r} must look like name=v1,v2 (names: {', '.join(converters)})")
        name, values = item.split("=", 1)
        name = aliases.get(name.strip(), name.strip())
        if name not in converters:
            raise ValueError(f"unknown sweep parameter {name!r}; choose from {', '.join(converters)}")
        try:
            grid[name] = [converters[name](v.strip()) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"sweep values of {name!r} must be {converters[name].__name__}: {values!r}") from None
        if not grid[name]:
            raise ValueError(f"sweep parameter {name!r} has no values")
    return grid


def _motion_mode(text: str) -> str:
    """A swept ``warm_start_motion``: auto, prior or off."""
    mode = text.strip().lower()
    if mode not in ("auto", "prior", "off"):
        raise ValueError(f"warm_start_motion values must be auto, prior or off, got {text!r}")
    return mode


_motion_mode.__name__ = "auto, prior or off"  # read in parse_sweep's error message


def _detail_amount(text: str) -> float | None:
    """A swept ``detail``: a number, or auto (None: the predictor's automatic amount)."""
    return None if is_auto_detail(text) else float(text)


_detail_amount.__name__ = "a number or auto"  # read in parse_sweep's error message


def sweep_combinations(grid: dict[str, list], defaults: dict) -> list[dict]:
    """Every combination of the grid (parameters not in the grid take their default value; parameters in
    neither are left out)."""
    keys = [key for key in SWEEP_KEYS if key in grid or key in defaults]
    values = [grid.get(key, [defaults.get(key)]) for key in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def sweep_row(predictor_name: str, combo: dict, protocol: dict, section: dict) -> dict:
    """Flatten one predictor's evaluation section into a CSV row."""
    metrics = section["metrics"]

    def metric(name, view="single"):
        return metrics[name][view]["mean"] if name in metrics else None

    row = {"predictor": predictor_name, **{k: _csv_value(combo.get(k, "")) for k in SWEEP_KEYS}, **protocol}
    row.update(
        nfe_per_sample=section["nfe_per_sample"],
        nfe_per_frame=section["nfe_per_frame"],
        seconds_per_frame=section["seconds_per_frame"],
        psnr=metric("psnr"), psnr_mean_over_k=metric("psnr", "mean_over_k"), psnr_best_of_k=metric("psnr", "best_of_k"),
        ssim=metric("ssim"), ssim_mean_over_k=metric("ssim", "mean_over_k"), ssim_best_of_k=metric("ssim", "best_of_k"),
        psnr_smoke=metric("psnr_smoke"), psnr_smoke_best_of_k=metric("psnr_smoke", "best_of_k"),
        lpips=metric("lpips"), lpips_best_of_k=metric("lpips", "best_of_k"),
        change_ratio=section["smoke_statistics"]["change_ratio"],
        rise_ratio=section["smoke_statistics"].get("rise_ratio"),
        fd_vqvae_features=(section.get("fd_vqvae_features") or {}).get("value"),
    )
    return row


def _csv_value(value):
    """A setting as one CSV cell: a (drift, rise) pair as "drift,rise"."""
    return ",".join(str(float(v)) for v in value) if isinstance(value, (tuple, list)) else value


def _row_key(row: dict) -> tuple:
    """Identity of a sweep row: predictor, settings and protocol, compared as text (as read from CSV)."""
    def norm(v):
        if v is None or v == "":
            return ""
        try:
            return repr(float(v))
        except (TypeError, ValueError):
            return str(v)

    return tuple(norm(row.get(k)) for k in ("predictor", *SWEEP_KEYS, *SWEEP_PROTOCOL_COLUMNS))


def read_sweep_csv(path: str) -> list[dict]:
    """Rows of an existing sweep CSV; DataError if its header is not a smokeflow sweep header."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != SWEEP_COLUMNS:
            raise DataError(path, "exists but is not a smokeflow sweep CSV with the current columns; "
                                  "choose another --csv path (existing files are never overwritten)")
        return list(reader)


def _append_row(path: str, row: dict) -> None:
    new_file = not os.path.exists(path)
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SWEEP_COLUMNS)
        if new_file:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in SWEEP_COLUMNS})
        fh.flush()
        os.fsync(fh.fileno())


def run_sweep(
    codec,
    make_model_predictor: Callable[[dict], LatentPredictor],
    combinations: list[dict],
    videos: EvaluationVideos,
    csv_path: str,
    protocol: dict,
    num_samples: int = 1,
    seed: int = 0,
    lpips_availability=None,
    baselines: list[LatentPredictor] | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate the model for every combination (and each baseline once) into ``csv_path``.

    The observations are encoded once. Each finished row is appended and flushed at once, so an
    interrupted sweep keeps its rows; rerunning the same command skips rows already in the CSV (same
    predictor, settings and protocol columns). ``protocol`` fills :data:`SWEEP_PROTOCOL_COLUMNS`.
    FVD is not computed in sweeps (one I3D pass per row would dominate the time); the proxy is.
    Returns {"rows": all rows for this protocol (old and new), "skipped": count, "seconds": wall time}.
    """
    start = time.perf_counter()
    csv_path = os.fspath(csv_path)
    existing = read_sweep_csv(csv_path) if os.path.exists(csv_path) else []
    done = {_row_key(r) for r in existing}
    lpips_model = None
    if lpips_availability is not None and lpips_availability.available and lpips_availability.reference_weights:
        lpips_model = lpips_availability.model
    observed_latents = encode_observations(codec, videos)
    last_observed_decoded = decode_last_observed(codec, observed_latents)
    context = VideoMetricContext(videos, codec, observed_latents, None)
    protocol = {k: protocol.get(k, "") for k in SWEEP_PROTOCOL_COLUMNS}
    jobs = [(b.name, {}, lambda b=b: b) for b in (default_baselines() if baselines is None else baselines)]
    jobs += [("model", combo, lambda combo=combo: make_model_predictor(combo)) for combo in combinations]
    rows, skipped = [], 0
    bar = tqdm(jobs, desc="sweep", unit="setting", disable=not progress)
    for name, combo, make in bar:
        probe = {"predictor": name, **{k: combo.get(k, "") for k in SWEEP_KEYS}, **protocol}
        if _row_key(probe) in done:
            skipped += 1
            continue
        bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in combo.items()) or name)
        predictor = make()
        section = evaluate_predictor(predictor, observed_latents, videos, codec, num_samples, seed,
                                     lpips_model, context, progress=False, last_observed_decoded=last_observed_decoded)
        row = sweep_row(name, combo, protocol, section)
        _append_row(csv_path, row)
        rows.append(row)
    wanted = {_row_key({**r}) for r in rows}
    old = [r for r in existing if _row_key(r) not in wanted and all(str(r.get(k, "")) == str(protocol[k]) for k in SWEEP_PROTOCOL_COLUMNS)]
    return {"rows": old + rows, "new_rows": len(rows), "skipped": skipped, "seconds": time.perf_counter() - start}

