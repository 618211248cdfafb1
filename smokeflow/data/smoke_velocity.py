"""The smoke's velocity (drift, rise) in pixels per frame, for the advected warm start.

:class:`~smokeflow.flow.advected_warm_start.AdvectedWarmStart` needs one velocity per rollout. It comes from:

1. the observed frames, when there are two or more with measurable smoke: the mean over consecutive pairs of
   :func:`smokeflow.metrics.smoke_motion.smoke_motion` (optical flow), and the per-pixel field of the last
   such pair (:func:`smokeflow.metrics.smoke_motion.motion_field`), which the warm start uses: a plume's
   source that holds still stays where it is while the smoke above it rises;
2. otherwise (one frame) the checkpoint's *motion network* when it has one
   (:mod:`smokeflow.models.motion_net`, ``motion_net.safetensors``): a per-pixel field guessed from the last
   observed frame by a small CNN trained on the training split's measured fields (``smokeflow train-motion``),
   and guessed again from every frame the warm start moves (the velocity follows the smoke);
3. otherwise the checkpoint's *motion prior*: the mean velocity of the training split, measured when the flow
   model's training starts and stored as ``motion_prior.json`` in the run folder: one velocity for the whole
   frame (simulated train split: rise 0.94, drift 0.13 px per frame), which moves a plume's source too;
4. none of these (a single frame and a checkpoint without either): no velocity, and the warm start is RIVER's.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from smokeflow.errors import CheckpointError

MOTION_PRIOR_FILE = "motion_prior.json"
VELOCITY_SOURCES = ("observed", "predicted", "prior", "given")


@dataclass(frozen=True)
class SmokeVelocity:
    """drift: px per frame rightwards; rise: px per frame upwards (means); source: one of VELOCITY_SOURCES;
    drift_field / rise_field: float64 [H, W] per-pixel velocity of the observed frames, or None (one velocity
    for the whole frame)."""

    drift: float
    rise: float
    source: str
    drift_field: np.ndarray | None = field(default=None, compare=False, repr=False)
    rise_field: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def has_field(self) -> bool:
        return self.drift_field is not None and self.rise_field is not None

    def displacement(self):
        """(drift, rise) as the warm start moves by them: the per-pixel fields when there are, else the means."""
        return (self.drift_field, self.rise_field) if self.has_field else (self.drift, self.rise)

    def __post_init__(self):
        if not (math.isfinite(self.drift) and math.isfinite(self.rise)):
            raise ValueError(f"velocity must be finite, got drift {self.drift}, rise {self.rise}")
        if self.source not in VELOCITY_SOURCES:
            raise ValueError(f"unknown velocity source {self.source!r}; one of {VELOCITY_SOURCES}")


def measured_velocity(frames) -> tuple[float, float, int]:
    """uint8 frames [N, T, H, W, 3] (or [T, H, W, 3]) -> (mean drift, mean rise, number of measured pairs).

    NaN means when no consecutive pair has measurable smoke."""
    from smokeflow.metrics.smoke_motion import smoke_motion

    frames = np.asarray(frames)
    if frames.shape[-4] < 2:
        return math.nan, math.nan, 0
    drift, rise = smoke_motion(frames)  # [..., T], the first value NaN (no frame before it)
    good = np.isfinite(drift) & np.isfinite(rise)
    if not good.any():
        return math.nan, math.nan, 0
    return float(drift[good].mean()), float(rise[good].mean()), int(good.sum())


def estimate_velocity(frames, prior: SmokeVelocity | None, motion_net=None) -> SmokeVelocity | None:
    """Observed uint8 frames [T >= 1, H, W, 3] -> their velocity (mean over pairs, with the field of the last
    pair that has smoke); else, with ``motion_net`` (a :class:`~smokeflow.models.motion_net.MotionFieldNet`),
    the field it predicts from the last frame; else ``prior`` (may be None)."""
    from smokeflow.metrics.smoke_motion import motion_field

    frames = np.asarray(frames)
    drift, rise, pairs = measured_velocity(frames)
    if not pairs:
        return predicted_velocity(motion_net, frames[-1]) if motion_net is not None else prior
    for t in range(len(frames) - 1, 0, -1):
        fields = motion_field(frames[t - 1], frames[t])
        if fields is not None:
            return SmokeVelocity(drift, rise, "observed", drift_field=fields[0], rise_field=fields[1])
    return SmokeVelocity(drift, rise, "observed")


def predicted_velocity(motion_net, frame) -> SmokeVelocity:
    """The motion network's field for one uint8 frame [H, W, 3]; its means are taken over the frame's smoke
    (over the whole frame when it has none)."""
    from smokeflow.data.smoke_mask import smoke_mask
    from smokeflow.models.motion_net import predict_motion_fields

    frame = np.asarray(frame)
    drift_field, rise_field = (f[0] for f in predict_motion_fields(motion_net, frame[None]))
    smoke = smoke_mask(frame[None])[0]
    where = smoke if smoke.any() else np.ones_like(smoke)
    return SmokeVelocity(float(drift_field[where].mean()), float(rise_field[where].mean()), "predicted",
                         drift_field=drift_field, rise_field=rise_field)


def measure_motion_prior(data_root: str | os.PathLike, split: str = "train", max_videos: int = 200,
                         num_frames: int = 10, size: int = 64) -> dict:
    """Mean velocity of the first ``max_videos`` videos (their first ``num_frames`` frames) of a split.

    Returns {"drift", "rise", "pairs", "videos", "split"}; drift / rise NaN when nothing could be measured.
    """
    from smokeflow.data.layouts import list_videos, read_video_entry

    entries = list_videos(data_root, split)[:max_videos]
    # Only the frames used are read: the users' videos can be thousands of frames long.
    clips = [read_video_entry(e, size=size, frame_indices=list(range(min(num_frames, e.num_frames))))
             for e in entries if e.num_frames >= 2]
    total_pairs, drift_sum, rise_sum = 0, 0.0, 0.0
    for clip in clips:  # videos may differ in length: measure each on its own
        drift, rise, pairs = measured_velocity(clip)
        if pairs:
            total_pairs += pairs
            drift_sum += drift * pairs
            rise_sum += rise * pairs
    mean = (lambda s: s / total_pairs) if total_pairs else (lambda s: math.nan)
    return {"drift": mean(drift_sum), "rise": mean(rise_sum), "pairs": total_pairs, "videos": len(clips),
            "split": split}


def write_motion_prior(folder: str | os.PathLike, prior: dict) -> str:
    """Write ``prior`` (from :func:`measure_motion_prior`) atomically as ``folder/motion_prior.json``."""
    from smokeflow.training.checkpoint_io import atomic_write

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(prior, fh, indent=1)

    return atomic_write(os.path.join(folder, MOTION_PRIOR_FILE), write)


def read_motion_prior(folder: str | os.PathLike | None) -> SmokeVelocity | None:
    """The motion prior of a checkpoint folder; None when it has none or it holds no finite velocity.

    Raises CheckpointError naming the file when it exists but is not a readable prior."""
    if folder is None:
        return None
    path = os.path.join(folder, MOTION_PRIOR_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        drift, rise = float(data["drift"]), float(data["rise"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(path, f"not a readable motion prior ({err})") from None
    if not (math.isfinite(drift) and math.isfinite(rise)):
        return None
    return SmokeVelocity(drift, rise, "prior")


def record_motion_prior(run_dir: str, data_root: str) -> dict | None:
    """Measure the training split's motion and store it in ``run_dir``; a dataset without readable frames
    (e.g. only a latent cache) gets a warning and no prior, never a failed training."""
    try:
        prior = measure_motion_prior(data_root)
    except Exception as err:  # noqa: BLE001 - any unreadable dataset: train on, without a prior
        warnings.warn(f"{data_root}: could not measure the smoke's motion for the warm-start prior ({err}); "
                      "rollouts from a single frame will use RIVER's warm start", stacklevel=2)
        return None
    write_motion_prior(run_dir, prior)
    return prior



def parse_warm_start_motion(text: str):
    """The CLI's ``--warm-start-motion`` value: ``auto``, ``prior``, ``off`` or ``DRIFT,RISE`` (px per frame) ->
    ``"auto"``, ``"prior"``, ``"off"`` or (drift, rise), as ``SmokeFlow.predict`` takes it. Raises ValueError
    for anything else."""
    text = str(text).strip().lower()
    if text in ("auto", "prior", "off"):
        return text
    parts = text.split(",")
    try:
        drift, rise = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected auto, prior, off or DRIFT,RISE in px per frame (e.g. 0,1), got {text!r}") from None
    if not (math.isfinite(drift) and math.isfinite(rise)):
        raise ValueError(f"DRIFT,RISE must be finite numbers, got {text!r}")
    return drift, rise


def describe_warm_start_motion(velocity: SmokeVelocity | None) -> str:
    """A phrase for logs and the UI: ', warm start moved by rise 0.94 / drift 0.12 px per frame (prior)'."""
    if velocity is None:
        return ""
    per_pixel = "the smoke's motion per pixel, mean " if velocity.has_field else ""
    if velocity.source == "predicted":
        per_pixel = "the motion network's per-pixel guess from each frame, at the first a mean "
    return (f", warm start moved by {per_pixel}rise {velocity.rise:.2f} / drift {velocity.drift:.2f} px per frame "
            f"({velocity.source})")
