"""Statistics of a smoke dataset, to compare it with the users' real frames (DESIGN.md gives their ranges:
smoke covers 1-25 % of pixels, mean RGB of smoke pixels from about (25,40,75) to (105,130,155), mean
absolute frame-to-frame change 0.5-15 on 0-255, smoke often entering from an edge of the crop).

Statistics are computed per sequence first (:func:`per_sequence_statistics`), so that batches computed
apart (e.g. in worker processes) can be merged, then summarised as percentiles over sequences.
"""

from __future__ import annotations

import warnings

import numpy as np

from smokeflow.data.smoke_mask import smoke_mask

PERCENTILES = (5, 25, 50, 75, 95)
# Smoke "touches an edge" when at least this many border pixels are smoke in some frame, so a lone
# speck of noise on the border does not count.
EDGE_TOUCH_MIN_PIXELS = 3


def per_sequence_statistics(frames: np.ndarray, motion: bool = False) -> dict:
    """Per-sequence statistics of uint8 frames [N,T,H,W,3].

    Returns a dict of numpy arrays over the N sequences:
    ``smoke_fraction`` [N] (mean over frames of the fraction of smoke pixels, 0..1),
    ``smoke_rgb`` [N,3] (mean RGB 0..255 of all smoke pixels of the sequence; NaN if it has none),
    ``frame_change`` [N] (mean absolute difference of consecutive frames over all pixels and channels,
    0..255; NaN for single-frame sequences), ``touches_edge`` [N] bool; with ``motion`` also ``rise`` and
    ``drift`` [N] (mean over frame pairs of :func:`smokeflow.metrics.smoke_motion.smoke_motion`, pixels per
    frame up / right; NaN without a frame pair with smoke). Motion is optional because it is the slow part
    (about 1 ms per frame pair): ``simulate`` leaves it out, ``data-stats`` puts it in.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [N,T,H,W,3], got {frames.dtype} {frames.shape}")
    n = frames.shape[0]
    mask = smoke_mask(frames)  # [N,T,H,W]
    smoke_fraction = mask.mean(axis=(1, 2, 3)) if n else np.zeros(0)
    counts = mask.sum(axis=(1, 2, 3))
    sums = (frames.astype(np.float64) * mask[..., None]).sum(axis=(1, 2, 3))  # [N,3]
    with np.errstate(invalid="ignore", divide="ignore"):
        smoke_rgb = np.where(counts[:, None] > 0, sums / counts[:, None], np.nan)
    if frames.shape[1] > 1:
        diffs = np.abs(np.diff(frames.astype(np.int16), axis=1))
        frame_change = diffs.mean(axis=(1, 2, 3, 4))
    else:
        frame_change = np.full(n, np.nan)
    border = np.zeros(mask.shape[-2:], dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    border_pixels = (mask & border).sum(axis=(2, 3))  # [N,T]
    touches_edge = (border_pixels >= EDGE_TOUCH_MIN_PIXELS).any(axis=1) if n else np.zeros(0, bool)
    out = {"smoke_fraction": smoke_fraction, "smoke_rgb": smoke_rgb, "frame_change": frame_change,
           "touches_edge": touches_edge}
    if motion:
        from smokeflow.metrics.smoke_motion import smoke_motion

        drift, rise = smoke_motion(frames)  # [N, T], NaN where there is nothing to measure
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN sequences: NaN, as documented
            out["rise"], out["drift"] = np.nanmean(rise, axis=1), np.nanmean(drift, axis=1)
    return out


def _percentiles(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {f"p{p}": float("nan") for p in PERCENTILES} | {"mean": float("nan")}
    out = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
    out["mean"] = float(values.mean())
    return out


def summarize_sequence_statistics(per_sequence: dict) -> dict:
    """Summarise :func:`per_sequence_statistics` output (possibly concatenated from several batches).

    Returns ``{"num_sequences", "smoke_fraction": {p5..p95, mean}, "smoke_rgb": {"r"|"g"|"b": {...}},
    "frame_change": {...}, "touches_edge_fraction", "sequences_without_smoke"}``, plus ``"rise"`` and
    ``"drift"`` ({...}, pixels per frame) when the per-sequence statistics have them.
    """
    rgb = np.asarray(per_sequence["smoke_rgb"], dtype=np.float64).reshape(-1, 3)
    motion = {name: _percentiles(np.asarray(per_sequence[name], dtype=np.float64))
              for name in ("rise", "drift") if name in per_sequence}
    return {
        "num_sequences": int(len(per_sequence["smoke_fraction"])),
        "smoke_fraction": _percentiles(np.asarray(per_sequence["smoke_fraction"], dtype=np.float64)),
        "smoke_rgb": {name: _percentiles(rgb[:, c]) for c, name in enumerate("rgb")},
        "frame_change": _percentiles(np.asarray(per_sequence["frame_change"], dtype=np.float64)),
        "touches_edge_fraction": float(np.mean(per_sequence["touches_edge"])) if len(rgb) else float("nan"),
        "sequences_without_smoke": int(np.isnan(rgb[:, 0]).sum()),
        **motion,
    }


def smoke_dataset_statistics(frames: np.ndarray, motion: bool = True) -> dict:
    """Distributions over sequences of uint8 frames [N,T,H,W,3]: smoke fraction of pixels, mean RGB of
    smoke pixels, mean absolute frame-to-frame change, fraction of sequences whose smoke touches an
    edge of the crop, and (``motion``) how fast the smoke rises and drifts. See
    :func:`summarize_sequence_statistics` for the keys."""
    return summarize_sequence_statistics(per_sequence_statistics(frames, motion=motion))


def format_statistics(stats: dict) -> str:
    """A readable table of :func:`smoke_dataset_statistics` output, with the users' real ranges."""
    columns = [f"p{p}" for p in PERCENTILES] + ["mean"]
    header = f"{'statistic (over sequences)':34s}" + "".join(f"{c:>8s}" for c in columns)
    lines = [f"smoke dataset statistics ({stats['num_sequences']} sequences)", header, "-" * len(header)]

    def row(label: str, values: dict, scale: float = 1.0, fmt: str = "{:8.1f}") -> None:
        lines.append(f"{label:34s}" + "".join(fmt.format(values[c] * scale) for c in columns))

    row("smoke pixels, % of frame", stats["smoke_fraction"], 100.0, "{:8.2f}")
    for channel in "rgb":
        row(f"mean {channel.upper()} of smoke pixels (0-255)", stats["smoke_rgb"][channel])
    row("mean |frame change| (0-255)", stats["frame_change"], 1.0, "{:8.2f}")
    if "rise" in stats:
        row("smoke rise, px/frame (up +)", stats["rise"], 1.0, "{:8.2f}")
        row("smoke drift, px/frame (right +)", stats["drift"], 1.0, "{:8.2f}")
    lines.append("-" * len(header))
    lines.append(f"sequences whose smoke touches an edge: {100 * stats['touches_edge_fraction']:.0f} %")
    lines.append(f"sequences without any smoke pixel:     {stats['sequences_without_smoke']}")
    lines.append("users' real frames: smoke 1-25 % of pixels, smoke RGB ~(25,40,75)..(105,130,155), "
                 "frame change 0.5-15")
    return "\n".join(lines)
