"""Per-call timing records (timings.jsonl, CONTRACTS §3), the run's identity and hardware
fingerprint they are read with, and the progress log line with rate and ETA."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from data_prep import uri
from data_prep.console import format_duration

log = logging.getLogger(__name__)

#: TrainConfig fields that neither change what a step computes nor what it costs: how long the run
#: goes on, where it writes, how often it logs or saves. Left out of the config hash, so a run
#: resumed with more steps (or a new output folder) keeps its identity; the dataset is recorded
#: on its own (`dataset`).
NOT_HASHED_FIELDS = ("data", "output_dir", "epochs", "steps_per_epoch", "max_steps", "checkpoint_every",
                     "keep_checkpoints", "snapshot_every", "keep_snapshots", "log_every",
                     "empty_check_every", "empty_patience", "empty_threshold")
#: Keys every record of one run shares (eval.benchmark refuses a timings file that mixes them).
IDENTITY_KEYS = ("preset", "dataset", "config_hash")


def config_hash(train_config: dict[str, Any]) -> str:
    """Short sha256 of the TrainConfig fields that define what one step computes and costs.

    Args:
        train_config: TrainConfig.to_dict() (or config.json's `train_config`).
    """
    kept = {k: v for k, v in sorted(train_config.items()) if k not in NOT_HASHED_FIELDS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def run_identity(train_config: dict[str, Any]) -> dict[str, str]:
    """What every timing record of this run carries: preset, dataset (its manifest URI; "" for
    an in-memory dataset) and config hash."""
    return {"preset": str(train_config.get("preset", "")), "dataset": str(train_config.get("data", "")),
            "config_hash": config_hash(train_config)}


def run_fingerprint(strategy: Any) -> dict[str, Any]:
    """The training machine as the benchmark reports it: devices and counts, library versions,
    git commit (written into config.json; the collector usually runs elsewhere)."""
    import tensorflow as tf

    from data_prep.provenance import git_commit, host_info, library_versions

    physical = tf.config.list_physical_devices()
    counts: dict[str, int] = {}
    for device in physical:
        counts[device.device_type] = counts.get(device.device_type, 0) + 1
    gpu_names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        gpu_names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
    try:
        workers = list(strategy.extended.worker_devices)
    except (AttributeError, RuntimeError):  # the default strategy has no worker_devices
        workers = []
    return {"physical_devices": counts, "gpu_names": gpu_names, "replica_devices": workers or ["default"],
            "host": host_info(), "libraries": library_versions(), "git_commit": git_commit()}


class TimingLog:
    """Appends one JSON object per training call to timings.jsonl.

    Local files are appended and flushed per record (a crash keeps every finished record);
    gs:// objects cannot be appended, so the whole file is rewritten at each flush.
    """

    def __init__(self, path: str, enabled: bool = True, flush_every: int = 1,
                 identity: dict[str, str] | None = None):
        self.path = path
        self.enabled = enabled
        self.flush_every = flush_every
        self.identity = dict(identity or {})  # run_identity(): added to every record
        self._lines: list[str] = []
        self._pending = 0
        if enabled and uri.exists(path):
            # Resumed run: keep earlier records.
            self._lines = [l for l in uri.read_text(path).splitlines() if l.strip()]

    def record(self, step: int, steps: int, epoch: int, seconds: float, global_batch: int,
               replicas: int, losses: dict[str, float]) -> None:
        if not self.enabled:
            return
        rec = {"step": int(step), "steps": int(steps), "epoch": int(epoch),
               "seconds": float(seconds), "global_batch": int(global_batch),
               "replicas": int(replicas), "losses": {k: float(v) for k, v in losses.items()},
               **self.identity}
        line = json.dumps(rec, sort_keys=True)
        self._lines.append(line)
        self._pending += 1
        if uri.is_gcs(self.path):
            if self._pending >= self.flush_every:
                self.flush()
        else:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
            self._pending = 0

    def flush(self) -> None:
        if self.enabled and uri.is_gcs(self.path) and self._pending:
            uri.write_text(self.path, "\n".join(self._lines) + "\n")
            self._pending = 0


class Progress:
    """Builds the periodic progress line: step, epoch, steps/s, showers/s, ETA, main losses."""

    def __init__(self, total_steps: int, start_step: int, global_batch: int):
        self.total = total_steps
        self.start_step = start_step
        self.global_batch = global_batch
        self.t0 = time.monotonic()

    def line(self, step: int, epoch: int, logs: dict[str, float]) -> str:
        elapsed = time.monotonic() - self.t0
        done = step - self.start_step
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        losses = " ".join(f"{k}={logs[k]:.4g}" for k in ("d_loss", "g_loss") if k in logs)
        return (f"step {step}/{self.total} epoch {epoch} {rate:.2f} steps/s "
                f"{rate * self.global_batch:.1f} showers/s ETA {format_duration(eta)} {losses}")


def write_scalar(name: str, value: float, step: int) -> None:
    """Write a TensorBoard scalar with the default summary writer.

    tensorflow-cpu does not depend on the tensorboard package, whose absence makes
    tf.summary.scalar raise; this writes the same record (a float32 tensor tagged with the
    'scalars' plugin) through the core tf.summary.write op.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                     metadata=metadata.SerializeToString())
