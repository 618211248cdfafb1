"""Training metrics as JSON lines in the run folder (``runs/<name>/metrics.jsonl``), optionally mirrored to
Weights & Biases. Shared by the VQVAE and flow trainers; the app's training tab polls the JSONL file.

Each line is one JSON object: ``{"step": int, "time": unix seconds, "kind": "train"|"val"|..., <metrics>}``.
Lines are appended and flushed immediately, so a killed run keeps everything it logged. Only the main rank
logs (pass ``enabled=ctx.is_main``).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from smokeflow.errors import SmokeflowError

METRICS_FILE = "metrics.jsonl"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null keeps the line parseable everywhere
    return value


class RunLogger:
    """Appends metrics to ``<run_dir>/metrics.jsonl``; with ``use_wandb`` also logs to wandb.

    wandb is optional: ``use_wandb=True`` without the package raises a clear SmokeflowError; without network,
    set ``WANDB_MODE=offline`` (the run is then stored locally under ``<run_dir>/wandb``).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, use_wandb: bool = False,
                 project: str = "smokeflow", run_name: str | None = None, config: dict | None = None):
        self.run_dir = os.fspath(run_dir)
        self.path = os.path.join(self.run_dir, METRICS_FILE)
        self.enabled = enabled
        self._wandb_run = None
        if not enabled:
            return
        os.makedirs(self.run_dir, exist_ok=True)
        if use_wandb:
            try:
                import wandb
            except ImportError:
                raise SmokeflowError("--wandb: the wandb package is not installed (pip install wandb), or "
                                     "drop --wandb; metrics are always written to metrics.jsonl") from None
            self._wandb_run = wandb.init(project=project, name=run_name or os.path.basename(self.run_dir),
                                         dir=self.run_dir, config=config or {}, resume="allow")

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "time": round(time.time(), 3), "kind": kind}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._wandb_run is not None:
            self._wandb_run.log({f"{kind}/{k}": v for k, v in record.items() if k not in ("step", "time", "kind")},
                                step=int(step))

    def note(self, step: int, message: str) -> None:
        """A free-text event (e.g. 'LPIPS skipped: ...') as a line of kind 'note'."""
        self.log(step, {"message": message}, kind="note")

    def close(self) -> None:
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None


def read_metrics(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl (optionally only one kind); a torn last line is skipped."""
    path = os.path.join(os.fspath(run_dir), METRICS_FILE)
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written while we read
            if kind is None or record.get("kind") == kind:
                records.append(record)
    return records


def truncate_after_step(run_dir: str | os.PathLike, step: int) -> None:
    """On resume, drop records logged after the checkpointed ``step`` (they will be logged again)."""
    path = os.path.join(os.fspath(run_dir), METRICS_FILE)
    if not os.path.isfile(path):
        return
    kept = [r for r in read_metrics(run_dir) if int(r.get("step", 0)) <= step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in kept:
            fh.write(json.dumps(record) + "\n")
    os.replace(tmp, path)
