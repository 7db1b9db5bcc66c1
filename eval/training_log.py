"""Training curves for the report: losses per step from the trainer's timings.jsonl, and the
sampling-fraction error per generator snapshot when the evaluator compared snapshots.

The trainer appends one record per training call to ``<model>/timings.jsonl`` (trainer/timings.py)
with the step and the losses of that call. The best-snapshot selection stores its per-snapshot
table in metrics.json under ``snapshot_selection``; its exact layout belongs to that step, so it
is read tolerantly: any list of rows that carry a step (or epoch) and a sampling-fraction error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_prep import uri
from eval.discriminator_view import model_dir_of


@dataclass
class TrainingLog:
    """Losses per step of one training run.

    Attributes:
        source: The timings.jsonl read.
        steps: Step at the end of each record, (n,).
        losses: Loss name -> value per record, (n,) (NaN where a record lacks it).
        replicas: Replicas of the run (from the last record), for the legend.
        global_batch: Global batch of the run (from the last record).
    """

    source: str
    steps: np.ndarray
    losses: dict[str, np.ndarray] = field(default_factory=dict)
    replicas: int = 1
    global_batch: int = 0


def read_training_log(generator_dir: str) -> tuple[TrainingLog | None, str]:
    """The losses the trainer recorded beside ``generator_dir``, or None and the reason.

    Unreadable lines (a run killed while writing) are skipped; records are ordered by step and a
    resumed run's repeated steps keep their last record.
    """
    path = uri.join(model_dir_of(generator_dir), "timings.jsonl")
    if not uri.exists(path):
        return None, f"no training log ({path} not found)"
    records: dict[int, dict] = {}
    for line in uri.read_text(path).splitlines():
        try:
            rec = json.loads(line)
            records[int(rec["step"])] = rec
        except (ValueError, KeyError, TypeError):
            continue
    if not records:
        return None, f"training log {path} holds no records"
    steps = sorted(records)
    names = sorted({k for r in records.values() for k in (r.get("losses") or {})})
    losses = {n: np.array([float((records[s].get("losses") or {}).get(n, math.nan)) for s in steps]) for n in names}
    last = records[steps[-1]]
    return TrainingLog(path, np.asarray(steps, dtype=np.int64), losses, int(last.get("replicas", 1)),
                       int(last.get("global_batch", 0))), ""


STEP_KEYS = ("step", "steps", "epoch", "snapshot_step", "snapshot")


@dataclass
class SnapshotTable:
    """Sampling-fraction error per generator snapshot.

    Attributes:
        x_name: What the x values are ("step" or "epoch").
        x: Snapshot positions.
        sf_mre: Sampling-fraction mean relative error of each snapshot.
        selected: Position of the chosen snapshot, or None.
    """

    x_name: str
    x: np.ndarray
    sf_mre: np.ndarray
    selected: float | None = None


def _rows_in(value: Any) -> list[dict]:
    """The first list of dicts found in value (depth first)."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return value
    if isinstance(value, dict):
        for v in value.values():
            rows = _rows_in(v)
            if rows:
                return rows
    return []


def _sf_key(row: dict) -> str | None:
    for key in row:
        if "sampling_fraction" in key and "mre" in key:
            return key
    for key in row:
        if key.startswith("sf") and isinstance(row[key], (int, float)):
            return key
    return None


def snapshot_table(selection: Any) -> SnapshotTable | None:
    """The per-snapshot table of a ``snapshot_selection`` entry, or None when it has none."""
    rows = _rows_in(selection)
    if not rows:
        return None
    x_key = next((k for k in STEP_KEYS if k in rows[0]), None)
    y_key = _sf_key(rows[0])
    if x_key is None or y_key is None:
        return None
    pts = [(r.get(x_key), r.get(y_key)) for r in rows]
    pts = [(float(x), float(y)) for x, y in pts if isinstance(x, (int, float)) and isinstance(y, (int, float))]
    if not pts:
        return None
    selected = None
    chosen = [r for r in rows if r.get("selected") is True or r.get("chosen") is True or r.get("best") is True]
    if chosen and isinstance(chosen[0].get(x_key), (int, float)):
        selected = float(chosen[0][x_key])
    elif isinstance(selection, dict):
        for key in (f"selected_{x_key}", f"best_{x_key}", "selected", "best"):
            if isinstance(selection.get(key), (int, float)) and not isinstance(selection.get(key), bool):
                selected = float(selection[key])
                break
    x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    order = np.argsort(x, kind="stable")
    return SnapshotTable("epoch" if x_key == "epoch" else "step", x[order], y[order], selected)
