"""Raw webcam video -> smoke on black, the form of the users' training frames.

Steps (all per video, nothing learned):

1. optional crop to a region (x, y, w, h in raw pixels), then an area downscale to a working size
   (shorter side ``work_size``) so that HD video costs the same as a small clip and sensor noise averages out;
2. static background: per-pixel temporal median; then a second pass takes the median only over the frames
   where the first pass saw no smoke, so a plume that covers a pixel for up to ~80 % of the clip does
   not leak into the background (a plain median breaks at 50 %);
3. exposure: webcams re-adjust gain; each frame's per-channel gain against the background is the median
   ratio over its background pixels, and the frame is divided by it before differencing;
4. opacity: the per-pixel colour distance to the background (Euclidean RGB), mapped through a smoothstep
   from a noise floor to a saturation level, both measured on this video's distance distribution
   (floor = median + k x robust sigma, i.e. above what background pixels show; saturation = a high
   percentile of the distances above the floor);
5. cleanup: a 3x3 spatial median of the opacity removes isolated specks without eroding plume edges, and
   a small temporal median (3 frames) removes single-frame flicker (compression noise);
6. output: the original (exposure-corrected) pixel x opacity, on black, area-resized + centre-cropped to
   ``size``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from smokeflow.data.image_io import resize_center_crop


@dataclasses.dataclass
class ExtractionSettings:
    """Knobs of :func:`extract_smoke` (defaults tuned on ``rise_raw_clip.mp4``; see the module doc)."""

    work_size: int = 128                # shorter side of the working resolution (pixels)
    background_percentile: float = 50.0  # 50 = temporal median; lower for smoke brighter than the scene
    refine_background: bool = True      # second background pass over smoke-free frames only
    compensate_exposure: bool = True    # divide out per-frame, per-channel camera gain changes
    noise_floor_sigmas: float = 3.0     # floor = median(distance) + this x robust sigma
    saturation_percentile: float = 90.0  # of the distances above the floor: full opacity from here on
    min_contrast: float = 12.0          # saturation - floor is at least this (0-255 units)
    spatial_median: int = 3             # opacity median filter size (pixels, working resolution); 1 = off
    temporal_median: int = 3            # opacity median over frames; 1 = off


@dataclasses.dataclass
class ExtractionResult:
    """frames: uint8 [T,size,size,3] smoke on black; raw: uint8 [T,size,size,3] the (cropped) input with
    the same geometry, for side-by-side views; opacity: float32 [T,h,w] in [0,1] at the working
    resolution; background: float32 [h,w,3] (0-255); noise_floor, saturation: the smoothstep edges
    (colour distance, 0-255 units); gains: float32 [T,3] exposure gains."""

    frames: np.ndarray
    raw: np.ndarray
    opacity: np.ndarray
    background: np.ndarray
    noise_floor: float
    saturation: float
    gains: np.ndarray


def _to_work_size(frames: np.ndarray, work_size: int) -> np.ndarray:
    """Area-downscale (never enlarge) so the shorter side is at most ``work_size``; keeps aspect."""
    from PIL import Image

    height, width = frames.shape[1:3]
    scale = work_size / min(height, width)
    if scale >= 1:
        return frames
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BOX)) for f in frames])


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _distance(frames: np.ndarray, background: np.ndarray) -> np.ndarray:
    return np.sqrt(((frames - background[None]) ** 2).sum(axis=-1))


def _thresholds(distance: np.ndarray, settings: ExtractionSettings) -> tuple[float, float]:
    """Noise floor and saturation of the smoothstep from this video's distance distribution."""
    median = float(np.median(distance))
    sigma = 1.4826 * float(np.median(np.abs(distance - median)))  # robust std of the background part
    floor = median + settings.noise_floor_sigmas * max(sigma, 1.0)
    above = distance[distance > floor]
    high = float(np.percentile(above, settings.saturation_percentile)) if above.size else floor
    return floor, max(high, floor + settings.min_contrast)


def _masked_percentile(frames: np.ndarray, keep: np.ndarray, percentile: float):
    """Per-pixel percentile over time of ``frames`` [T,h,w,3] using only frames where ``keep`` [T,h,w].

    Returns (values float32 [h,w,3], counts int [h,w]). Sorting with the dropped samples pushed to +inf
    is ~20x faster than np.nanpercentile (nearest-rank percentile, enough for a background).
    """
    values = np.where(keep[..., None], frames, np.inf)
    values.sort(axis=0)
    counts = keep.sum(axis=0)
    rank = np.clip(np.rint((counts - 1) * percentile / 100.0), 0, None).astype(np.int64)
    picked = np.take_along_axis(values, rank[None, ..., None].repeat(3, axis=-1), axis=0)[0]
    return picked.astype(np.float32), counts


def _exposure_gains(frames: np.ndarray, background: np.ndarray, still: np.ndarray) -> np.ndarray:
    """Per-frame, per-channel gain frame/background, the median over pixels marked ``still``."""
    gains = np.ones((frames.shape[0], 3), np.float32)
    ratio = frames / np.maximum(background[None], 1.0)
    for t in range(frames.shape[0]):
        mask = still[t] & (background.max(-1) > 8)  # near-black pixels give meaningless ratios
        if mask.sum() > 0.05 * mask.size:
            gains[t] = np.median(ratio[t][mask], axis=0)
    return gains


def _check_crop(crop, height: int, width: int):
    if crop is None:
        return None
    x, y, w, h = (int(v) for v in crop)
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"crop x={x},y={y},w={w},h={h} does not fit in the {width}x{height} frames")
    return x, y, w, h


def _prepare_frame(frame: np.ndarray, crop, work_size: int) -> np.ndarray:
    """One raw frame uint8 [H,W,3] -> cropped and area-downscaled to the working size."""
    if crop is not None:
        x, y, w, h = crop
        frame = frame[y:y + h, x:x + w]
    return _to_work_size(frame[None], work_size)[0]


def extract_from_working_frames(work: np.ndarray, size: int = 64,
                                settings: ExtractionSettings | None = None) -> ExtractionResult:
    """Steps 2-6 of the module doc on frames already cropped and at the working size, uint8 [T,h,w,3]."""
    settings = settings or ExtractionSettings()
    if work.shape[0] < 3:
        raise ValueError(f"need at least 3 frames to estimate a static background, got {work.shape[0]}")
    frames = work.astype(np.float32)
    background = np.percentile(frames, settings.background_percentile, axis=0).astype(np.float32)
    gains = np.ones((frames.shape[0], 3), np.float32)
    distance = _distance(frames, background)
    floor, _ = _thresholds(distance, settings)
    still = distance <= floor
    if settings.compensate_exposure:
        gains = _exposure_gains(frames, background, still)
        frames = frames / gains[:, None, None, :]
        distance = _distance(frames, background)
        floor, _ = _thresholds(distance, settings)
        still = distance <= floor
    if settings.refine_background:
        # Median over the smoke-free frames of each pixel; pixels smoky in > 80 % of frames keep pass 1.
        refined, counts = _masked_percentile(frames, still, settings.background_percentile)
        enough = counts >= max(2, int(0.2 * frames.shape[0]))
        background = np.where(enough[..., None], refined, background).astype(np.float32)
        distance = _distance(frames, background)

    floor, saturation = _thresholds(distance, settings)
    opacity = _smoothstep(distance, floor, saturation).astype(np.float32)
    if settings.spatial_median > 1:
        opacity = ndimage.median_filter(opacity, size=(1, settings.spatial_median, settings.spatial_median))
    if settings.temporal_median > 1 and opacity.shape[0] >= settings.temporal_median:
        opacity = ndimage.median_filter(opacity, size=(settings.temporal_median, 1, 1), mode="nearest")

    smoke = np.clip(frames * opacity[..., None], 0, 255)
    out = resize_center_crop(np.rint(smoke).astype(np.uint8), size)
    raw = resize_center_crop(np.ascontiguousarray(work), size)
    return ExtractionResult(out, raw, opacity, background, floor, saturation, gains)


def extract_smoke_details(raw: np.ndarray, crop=None, size: int = 64,
                          settings: ExtractionSettings | None = None) -> ExtractionResult:
    """:func:`extract_smoke` returning the intermediate estimates too (for previews and tuning)."""
    settings = settings or ExtractionSettings()
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim != 4 or raw.shape[-1] != 3:
        raise ValueError(f"expected raw uint8 [T,H,W,3], got {raw.dtype} {raw.shape}")
    crop = _check_crop(crop, raw.shape[1], raw.shape[2])
    work = np.stack([_prepare_frame(f, crop, settings.work_size) for f in raw])
    return extract_from_working_frames(work, size, settings)


def extract_smoke_from_video(path, crop=None, size: int = 64, settings: ExtractionSettings | None = None,
                             max_frames: int | None = None, progress: bool = False) -> ExtractionResult:
    """Stream a raw video file (any length/resolution: frames are cropped and downscaled as they are
    decoded) and extract its smoke. Raises DataError for unreadable videos, ValueError for a bad crop."""
    from tqdm import tqdm

    from smokeflow.data.video_io import iter_video

    settings = settings or ExtractionSettings()
    work, checked = [], None
    frames = iter_video(path)
    for frame in tqdm(frames, desc="reading video", unit="frame", disable=not progress):
        if checked is None:
            checked = (_check_crop(crop, frame.shape[0], frame.shape[1]),)
        work.append(_prepare_frame(frame, checked[0], settings.work_size))
        if max_frames is not None and len(work) >= max_frames:
            frames.close()
            break
    return extract_from_working_frames(np.stack(work), size, settings)


def preview_sheet(result: ExtractionResult, max_columns: int = 12, scale: int = 2) -> np.ndarray:
    """Contact sheet uint8 [rows*size*scale, cols*size*scale, 3]: raw (top) over smoke on black (bottom)
    for up to ``max_columns`` evenly spaced frames."""
    count = result.frames.shape[0]
    picks = np.unique(np.linspace(0, count - 1, min(count, max_columns)).round().astype(int))
    rows = [np.concatenate(list(x[picks]), axis=1) for x in (result.raw, result.frames)]
    sheet = np.concatenate(rows, axis=0)
    return sheet.repeat(scale, axis=0).repeat(scale, axis=1)


def extract_smoke(raw: np.ndarray, crop=None, size: int = 64,
                  settings: ExtractionSettings | None = None) -> np.ndarray:
    """Raw video frames uint8 [T,H,W,3] -> smoke on black uint8 [T,size,size,3].

    crop: optional (x, y, w, h) region of the raw frames (pixels) to keep before anything else.
    Needs T >= 3 (the background is estimated from the clip itself); more frames give a cleaner
    background. Raises ValueError for a crop outside the frames.
    """
    return extract_smoke_details(raw, crop=crop, size=size, settings=settings).frames
