"""Write evaluation results: JSON (the schema below), an HTML report with plotly charts, a printed table,
and the charts of a sweep (quality against NFE and against seconds per frame).

JSON schema (``schema_version`` 1; every float that is NaN/inf is written as null)::

    {
      "schema_version": 1, "kind": "smokeflow-evaluation", "created": ISO-8601 time,
      "settings": {... the exact command-line settings ...},
      "protocol": {"num_videos", "videos": [names], "skipped_videos": [{"name", "reason"}],
                   "num_observed", "num_frames", "start_frame", "window_stride",
                   "resolution", "num_samples", "seed",
                   "seed_rule", "metric_definitions": {metric: text}, "views": {view: text}, "scored_frames"},
      "metrics_available": {"lpips": {"available", "reason"}, "fvd": {"available", "reason"}},
      "predictors": {
        name: {"settings": {...}, "deterministic", "nfe_per_sample", "nfe_per_frame", "seconds_per_frame",
               "rollout_seconds", "decode_seconds", "scoring_seconds",
               "metrics": {metric: {"higher_is_better",
                                    "single" | "mean_over_k" | "best_of_k": {"mean", "per_frame": [F]},
                                    "samples_scored", "samples_requested", "defined_frames", "total_frames"}},
               "smoke_statistics": {stat: {"description", "prediction": [F], "ground_truth": [F]},
                                    "change_ratio": float, "rise_ratio": float | null}
                                   (rise, drift and rise_ratio are absent in reports made before they existed),
               "fvd": {"value" | null, "reason", "protocol": {...}},
               "fd_vqvae_features": {"name", "note", "value", "clips"}}},
      "reconstruction": {"description", "metrics": {metric: {"mean", "per_frame": [F]}},
                         "smoke_statistics": {stat: {...}, "change_ratio"}  (as a predictor's; absent in
                                                                            reports made before it existed)},
      "timing": {"total_seconds", "encode_seconds", "per_predictor_seconds": {name: s}}
    }

``reconstruction`` scores decode(encode(true future frames)): what a perfect latent prediction would get
through this VQVAE - a ceiling for context, not a predictor. Its smoke statistics say how much sharpness and
frame-to-frame change survive the codec at all.

Metric keys are ``psnr, psnr_smoke, ssim, mse`` and ``lpips`` (only when the reference AlexNet weights are
present). :func:`validate_report` checks this structure (used by the tests and before writing).
"""

from __future__ import annotations

import html
import json
import math
import os

import numpy as np

from smokeflow.errors import DataError

REPORT_KIND = "smokeflow-evaluation"
HTML_MARKER = "<!-- smokeflow-report -->"
VIEWS = ("single", "mean_over_k", "best_of_k")
METRIC_LABELS = {"psnr": "PSNR (dB)", "psnr_smoke": "smoke PSNR (dB)", "ssim": "SSIM", "mse": "MSE", "lpips": "LPIPS"}


# ------------------------------------------------------------------------------------------------ JSON
def to_json_safe(value):
    """Numpy scalars/arrays -> Python; NaN and inf -> None (JSON has neither). Keys starting with "_"
    (in-memory extras such as example frames for the HTML report) are dropped."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def validate_report(report: dict) -> None:
    """Raise ValueError naming the first missing or mistyped part of an evaluation report."""

    def need(obj, key, kind, where):
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"report: missing '{where}{key}'")
        if kind is not None and obj[key] is not None and not isinstance(obj[key], kind):
            raise ValueError(f"report: '{where}{key}' should be {kind}, got {type(obj[key]).__name__}")
        return obj[key]

    if need(report, "kind", str, "") != REPORT_KIND:
        raise ValueError(f"report: kind is not {REPORT_KIND!r}")
    need(report, "schema_version", int, "")
    need(report, "settings", dict, "")
    protocol = need(report, "protocol", dict, "")
    for key in ("num_videos", "num_observed", "num_frames", "num_samples", "seed", "resolution"):
        need(protocol, key, int, "protocol.")
    need(protocol, "videos", list, "protocol.")
    available = need(report, "metrics_available", dict, "")
    for name in ("lpips", "fvd"):
        need(need(available, name, dict, "metrics_available."), "available", bool, f"metrics_available.{name}.")
    num_frames = protocol["num_frames"]
    predictors = need(report, "predictors", dict, "")
    if not predictors:
        raise ValueError("report: no predictors")
    for name, section in predictors.items():
        where = f"predictors.{name}."
        for key in ("nfe_per_sample", "nfe_per_frame", "seconds_per_frame"):
            need(section, key, (int, float), where)
        metrics = need(section, "metrics", dict, where)
        for metric in ("psnr", "psnr_smoke", "ssim", "mse"):
            entry = need(metrics, metric, dict, f"{where}metrics.")
            for view in VIEWS:
                block = need(entry, view, dict, f"{where}metrics.{metric}.")
                curve = need(block, "per_frame", list, f"{where}metrics.{metric}.{view}.")
                if len(curve) != num_frames:
                    raise ValueError(f"report: {where}metrics.{metric}.{view}.per_frame has {len(curve)} values, expected {num_frames}")
        if "lpips" in metrics and not available["lpips"]["available"]:
            raise ValueError(f"report: {where}metrics.lpips present although LPIPS is unavailable")
        stats = need(section, "smoke_statistics", dict, where)
        for stat in ("mass", "area", "centroid_x", "centroid_y", "sharpness", "change"):
            entry = need(stats, stat, dict, f"{where}smoke_statistics.")
            need(entry, "prediction", list, f"{where}smoke_statistics.{stat}.")
            need(entry, "ground_truth", list, f"{where}smoke_statistics.{stat}.")
        if "fvd" in section and section["fvd"].get("value") is not None and not available["fvd"]["available"]:
            raise ValueError(f"report: {where}fvd has a value although FVD is unavailable")
    need(report, "timing", dict, "")


def _check_overwritable(path: str, kind: str) -> None:
    """Outputs may replace an earlier smokeflow report, never some other file the user has there."""
    if not os.path.exists(path):
        return
    if os.path.isdir(path):
        raise DataError(path, "is a folder; give a file path for the report")
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096) if kind == "html" else fh.read()
    except (OSError, UnicodeDecodeError):
        head = ""
    ours = HTML_MARKER in head if kind == "html" else f'"kind": "{REPORT_KIND}"' in head
    if not ours:
        raise DataError(path, "exists and is not a smokeflow report; refusing to overwrite it (choose another path)")


def _atomic_write(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_json_report(report: dict, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    safe = to_json_safe(report)
    validate_report(safe)
    _check_overwritable(path, "json")
    _atomic_write(path, json.dumps(safe, indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- table
def _fmt(value, digits=2):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def predictor_label(name: str, section: dict) -> str:
    settings = section.get("settings", {})
    if "steps" in settings:
        reencode = ", re-encoded" if settings.get("reencode") else ""
        motion = settings.get("warm_start_motion")
        advected = f", advected {motion}" if settings["warm_start"] and motion not in (None, "off") else ""
        guided = f", detail guidance {settings['detail_guidance']}" if settings.get("detail_guidance") else ""
        auto = " auto" if settings.get("detail_auto") else ""
        detail = f", detail {settings['detail']}{auto}" if settings.get("detail") else ""
        int8 = ", int8" if settings.get("int8") else ""
        return (f"{name} ({settings['solver']} N={settings['steps']} s={settings['warm_start']}{advected}{reencode}"
                f"{guided}{detail}{int8})")
    return name


def format_table(report: dict) -> str:
    """A plain-text table of the main numbers (means over videos and predicted frames)."""
    protocol = report["protocol"]
    available = report["metrics_available"]
    lines = [
        f"Evaluation on {protocol['num_videos']} videos ({report['settings'].get('split', '?')} split): "
        f"{protocol['num_observed']} observed -> {protocol['num_frames']} predicted frames, "
        f"K={protocol['num_samples']} samples, seed {protocol['seed']}"
        + (f"; windows one every {protocol['window_stride']} frames" if protocol.get("window_stride") else "")
        + (f"; {len(protocol['skipped_videos'])} videos skipped (too short)" if protocol.get("skipped_videos") else "")
    ]
    has_lpips = available["lpips"]["available"]
    header = ["predictor", "PSNR", "PSNR meanK", "PSNR bestK", "SSIM", "SSIM meanK", "SSIM bestK", "smokePSNR"]
    header += ["LPIPS", "LPIPS bestK"] if has_lpips else []
    header += ["change ratio", "rise ratio", "NFE/frame", "s/frame"]
    rows = []
    for name, section in report["predictors"].items():
        m = section["metrics"]
        row = [predictor_label(name, section), _fmt(m["psnr"]["single"]["mean"]), _fmt(m["psnr"]["mean_over_k"]["mean"]),
               _fmt(m["psnr"]["best_of_k"]["mean"]), _fmt(m["ssim"]["single"]["mean"], 4),
               _fmt(m["ssim"]["mean_over_k"]["mean"], 4), _fmt(m["ssim"]["best_of_k"]["mean"], 4),
               _fmt(m["psnr_smoke"]["single"]["mean"])]
        if has_lpips:
            row += [_fmt(m["lpips"]["single"]["mean"], 4), _fmt(m["lpips"]["best_of_k"]["mean"], 4)]
        row += [_fmt(section["smoke_statistics"]["change_ratio"], 3),
                _fmt(section["smoke_statistics"].get("rise_ratio"), 3), _fmt(section["nfe_per_frame"], 1),
                _fmt(section["seconds_per_frame"], 4)]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    lines.append("change ratio = mean frame-to-frame change of predictions / of ground truth (1 = moves as much); "
                 "rise ratio = mean upward motion of the smoke (optical flow) / the ground truth's (1 = rises as fast).")
    if not has_lpips:
        lines.append(available["lpips"]["reason"])
    fvd_values = {n: s.get("fvd", {}).get("value") for n, s in report["predictors"].items()}
    if available["fvd"]["available"] and any(v is not None for v in fvd_values.values()):
        first = next(iter(report["predictors"].values()))["fvd"]["protocol"]
        lines.append(
            "FVD (" + f"{first['num_videos']} videos x {first['frames_per_clip']} frames incl. "
            f"{first['num_conditioning_frames']} conditioning, {first['source_resolution']}px -> 224): "
            + ", ".join(f"{n} {_fmt(v, 1)}" for n, v in fvd_values.items())
        )
    else:
        lines.append(available["fvd"]["reason"] or "FVD unavailable")
    proxies = {n: s.get("fd_vqvae_features", {}).get("value") for n, s in report["predictors"].items()}
    if any(v is not None for v in proxies.values()):
        note = next(iter(report["predictors"].values()))["fd_vqvae_features"]
        lines.append(f"{note['name']} (NOT FVD, not comparable to published FVD): "
                     + ", ".join(f"{n} {_fmt(v, 2)}" for n, v in proxies.items()))
    reconstruction = report.get("reconstruction")
    if reconstruction:
        m = reconstruction["metrics"]
        lines.append(f"ceiling - VQVAE reconstruction of the true future frames: PSNR {_fmt(m['psnr']['mean'])}, "
                     f"SSIM {_fmt(m['ssim']['mean'], 4)}, smoke PSNR {_fmt(m['psnr_smoke']['mean'])}"
                     + (f", LPIPS {_fmt(m['lpips']['mean'], 4)}" if "lpips" in m else "")
                     + _reconstruction_smoke_summary(reconstruction))
    timing = report["timing"]
    lines.append(f"evaluation time: {timing['total_seconds']:.1f} s")
    return "\n".join(lines)


def _reconstruction_smoke_summary(reconstruction: dict) -> str:
    """", change ratio 0.81, sharpness 22.3 (truth 25.9)" for the ceiling line; "" for older reports."""
    stats = reconstruction.get("smoke_statistics")
    if not stats:
        return ""
    def mean(curve):  # JSON curves hold None where a frame had no smoke
        values = [v for v in curve if v is not None and math.isfinite(v)]
        return sum(values) / len(values) if values else None

    recon, truth = mean(stats["sharpness"]["prediction"]), mean(stats["sharpness"]["ground_truth"])
    return (f", change ratio {_fmt(stats['change_ratio'], 3)}, sharpness {_fmt(recon)} (truth {_fmt(truth)}): "
            "the motion and sharpness that survive the codec")


# ------------------------------------------------------------------------------------------------ HTML
def _figure_html(figure, include_js: bool) -> str:
    import plotly.io as pio

    # Plotly's JS is embedded once (no CDN): reports open on machines without internet.
    return pio.to_html(figure, full_html=False, include_plotlyjs=include_js, config={"displaylogo": False})


def _metric_figure(report: dict, metric: str):
    import plotly.graph_objects as go

    frames = list(range(1, report["protocol"]["num_frames"] + 1))
    figure = go.Figure()
    dashes = {"single": "solid", "mean_over_k": "dot", "best_of_k": "dash"}
    for name, section in report["predictors"].items():
        entry = section["metrics"].get(metric)
        if entry is None:
            continue
        views = ("single",) if section["deterministic"] else VIEWS
        for view in views:
            figure.add_trace(go.Scatter(x=frames, y=entry[view]["per_frame"], mode="lines+markers",
                                        name=f"{predictor_label(name, section)} {'' if section['deterministic'] else view}",
                                        line={"dash": dashes[view]}))
    reconstruction = (report.get("reconstruction") or {}).get("metrics", {}).get(metric)
    if reconstruction:
        figure.add_trace(go.Scatter(x=frames, y=reconstruction["per_frame"], mode="lines", name="VQVAE reconstruction (ceiling)",
                                    line={"color": "gray", "dash": "dashdot"}))
    figure.update_layout(title=f"{METRIC_LABELS[metric]} per predicted frame", xaxis_title="predicted frame",
                         yaxis_title=METRIC_LABELS[metric], height=380, margin={"t": 50, "b": 40})
    figure.update_xaxes(dtick=1)
    return figure


def _smoke_figure(report: dict, stat: str):
    import plotly.graph_objects as go

    frames = list(range(1, report["protocol"]["num_frames"] + 1))
    figure = go.Figure()
    first = next(iter(report["predictors"].values()))["smoke_statistics"][stat]
    figure.add_trace(go.Scatter(x=frames, y=first["ground_truth"], name="ground truth", mode="lines+markers",
                                line={"color": "black", "width": 3}))
    for name, section in report["predictors"].items():
        figure.add_trace(go.Scatter(x=frames, y=section["smoke_statistics"][stat]["prediction"], mode="lines+markers",
                                    name=predictor_label(name, section)))
    reconstruction = (report.get("reconstruction") or {}).get("smoke_statistics", {}).get(stat)
    if reconstruction:
        figure.add_trace(go.Scatter(x=frames, y=reconstruction["prediction"], mode="lines",
                                    name="VQVAE reconstruction (ceiling)", line={"color": "gray", "dash": "dashdot"}))
    figure.update_layout(title=f"{stat}: {first['description']}", xaxis_title="predicted frame", height=340,
                         margin={"t": 50, "b": 40})
    figure.update_xaxes(dtick=1)
    return figure


def _png_data_uri(image: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _examples_html(report: dict) -> str:
    """Image strips: for each example video, the last observed frame then the F frames, for ground truth
    and sample 0 of every predictor (2x nearest-neighbour upscaled so 64x64 frames are visible)."""
    examples = report.get("_examples")
    if not examples:
        return ""
    rows = [("ground truth", examples["ground_truth"])]
    rows += [(predictor_label(n, s), s["_example_frames"]) for n, s in report["predictors"].items() if "_example_frames" in s]
    parts = ["<h2>Example rollouts (sample 0)</h2><p class='note'>Each strip: last observed frame, then the "
             "predicted frames.</p>"]
    for index, name in enumerate(examples["names"]):
        parts.append(f"<h3>{html.escape(str(name))}</h3><table>")
        for label, frames in rows:
            if index >= len(frames):
                continue
            strip = np.concatenate([examples["observed"][index], *frames[index]], axis=1)  # [H, (1+F)*W, 3]
            strip = strip.repeat(2, axis=0).repeat(2, axis=1)
            parts.append(f"<tr><td class='label'>{html.escape(label)}</td><td><img src='{_png_data_uri(strip)}'></td></tr>")
        parts.append("</table>")
    return "\n".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
pre { background: #f4f4f4; padding: 12px; overflow-x: auto; white-space: pre-wrap; }
td.label { padding-right: 12px; font-size: 13px; white-space: nowrap; }
.note { color: #555; }
h2 { margin-top: 32px; }
"""


def write_html_report(report: dict, path: str | os.PathLike) -> str:
    """HTML with the table, the protocol, per-frame metric curves and smoke statistics (plotly)."""
    path = os.fspath(path)
    examples_html = _examples_html(report)
    report = to_json_safe(report)
    validate_report(report)
    _check_overwritable(path, "html")
    parts = [f"<!DOCTYPE html>\n{HTML_MARKER}\n<html><head><meta charset='utf-8'><title>smokeflow evaluation</title>"
             f"<style>{_STYLE}</style></head><body>",
             "<h1>smokeflow evaluation</h1>",
             f"<pre>{html.escape(format_table(report))}</pre>"]
    include_js = True
    parts.append("<h2>Frame metrics</h2>")
    for metric in ("psnr", "ssim", "psnr_smoke", "lpips"):
        if any(metric in s["metrics"] for s in report["predictors"].values()):
            parts.append(_figure_html(_metric_figure(report, metric), include_js))
            include_js = False
    parts.append(examples_html)
    parts.append("<h2>Smoke statistics (prediction vs ground truth)</h2>"
                 "<p class='note'>Does the rollout move, fade, spread or blur? Predictions are averaged over "
                 "videos and samples.</p>")
    first_stats = next(iter(report["predictors"].values()))["smoke_statistics"]
    for stat in ("mass", "area", "centroid_x", "centroid_y", "sharpness", "change", "rise", "drift"):
        if stat not in first_stats:  # rise and drift: reports made before they existed
            continue
        parts.append(_figure_html(_smoke_figure(report, stat), include_js))
        include_js = False
    parts.append("<h2>Protocol and settings</h2>")
    protocol = dict(report["protocol"])
    protocol["videos"] = f"{len(protocol['videos'])} videos: " + ", ".join(protocol["videos"][:20]) + (" ..." if len(protocol["videos"]) > 20 else "")
    parts.append(f"<pre>{html.escape(json.dumps({'settings': report['settings'], 'protocol': protocol, 'metrics_available': report['metrics_available']}, indent=2))}</pre>")
    parts.append("</body></html>")
    _atomic_write(path, "\n".join(parts))
    return path


def write_sweep_html(rows: list[dict], path: str | os.PathLike, title: str = "smokeflow sweep") -> str:
    """Quality (PSNR, SSIM, smoke PSNR, LPIPS when present) against NFE per frame and seconds per frame."""
    import plotly.graph_objects as go

    path = os.fspath(path)
    _check_overwritable(path, "html")

    def number(value):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    model_rows = [r for r in rows if r["predictor"] == "model"]
    baseline_rows = [r for r in rows if r["predictor"] != "model"]
    parts = [f"<!DOCTYPE html>\n{HTML_MARKER}\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    include_js = True
    metrics = [m for m in ("psnr", "psnr_best_of_k", "ssim", "psnr_smoke", "lpips")
               if any(number(r.get(m)) is not None for r in rows)]
    for x_key, x_label in (("nfe_per_frame", "network evaluations per frame (NFE)"), ("seconds_per_frame", "seconds per frame")):
        for metric in metrics:
            figure = go.Figure()
            groups: dict[tuple, list] = {}
            for r in model_rows:
                # One line per setting other than N (a sweep of motion modes or detail amounts gets its own lines).
                key = (r["solver"], r["warm_start"], r.get("warm_start_motion") or "", r.get("detail") or "")
                groups.setdefault(key, []).append(r)
            for (solver, warm_start, motion, detail), group in sorted(groups.items(), key=lambda kv: str(kv[0])):
                group = sorted(group, key=lambda r: number(r[x_key]) or 0.0)
                label = f"{solver}, warm start {warm_start}" + (f", motion {motion}" if motion else "") + \
                    (f", detail {detail}" if number(detail) else "")
                figure.add_trace(go.Scatter(
                    x=[number(r[x_key]) for r in group], y=[number(r.get(metric)) for r in group], mode="lines+markers",
                    name=label, text=[f"N={r['steps']}" for r in group]))
            # One dotted line per distinct baseline value (copy-last and linear extrapolation coincide
            # with one observed frame; their labels would otherwise print on top of each other).
            lines: dict[float, list[str]] = {}
            for r in baseline_rows:
                value = number(r.get(metric))
                if value is not None:
                    lines.setdefault(round(value, 6), []).append(r["predictor"])
            for value, names in lines.items():
                figure.add_hline(y=value, line_dash="dot", annotation_text=" = ".join(names),
                                 annotation_position="top left")
            figure.update_layout(title=f"{metric} vs {x_label}", xaxis_title=x_label, yaxis_title=metric, height=380)
            parts.append(_figure_html(figure, include_js))
            include_js = False
    parts.append("</body></html>")
    _atomic_write(path, "\n".join(parts))
    return path
