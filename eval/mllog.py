"""MLPerf-style `:::MLLOG` lines of a benchmark, in the format of the `mlperf-logging` package.

Each line is `:::MLLOG ` followed by one JSON object with the keys, in this order, namespace,
time_ms, event_type, key, value, metadata (mlperf_logging.mllog's encoding; its compliance
parser reads `time_ms`, `key`, `value` and `metadata`). The package itself is not used: it would
bring pandas and scipy into every image for a one-line format.

Keys are MLPerf's where one fits (submission_benchmark, submission_platform, global_batch_size,
seed, train_samples, num_warmup_steps, tracked_stats); caloforge's own figures use `caloforge_`
keys. Every line's metadata says what the value measures, its unit and over how many steps.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = ":::MLLOG "
EVENT_TYPES = ("INTERVAL_START", "INTERVAL_END", "POINT_IN_TIME")
FIELD_ORDER = ("namespace", "time_ms", "event_type", "key", "value", "metadata")


def mllog_line(key: str, value: Any, time_ms: int, metadata: dict[str, Any] | None = None,
               event_type: str = "POINT_IN_TIME", namespace: str = "") -> str:
    """One `:::MLLOG {...}` line.

    Raises:
        ValueError: an event type MLPerf does not know.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"event_type {event_type!r} is not one of {', '.join(EVENT_TYPES)}")
    record = {"namespace": namespace, "time_ms": int(time_ms), "event_type": event_type, "key": key,
              "value": value, "metadata": {"file": "eval/benchmark.py", **(metadata or {})}}
    return PREFIX + json.dumps(record, allow_nan=False)


def parse_mllog(text: str) -> list[dict[str, Any]]:
    """The records of every `:::MLLOG` line in `text` (other lines ignored), as MLPerf's parser reads them."""
    return [json.loads(line[line.index(PREFIX) + len(PREFIX):]) for line in text.splitlines() if PREFIX in line]


def benchmark_mllog(result: dict[str, Any], time_ms: int) -> list[str]:
    """The lines of one benchmark.json (eval.benchmark.collect's result).

    Figures withheld for too few measured steps are not written; a `caloforge_status` line says so.
    """
    fp = result.get("fingerprint", {})
    trainer = fp.get("trainer", {})
    steps = result.get("measured_steps", 0)
    device = trainer.get("device_summary") or result.get("trainer_device") or "unknown"
    where = {"device": device, "hardware_profile": fp.get("hardware_profile"), "replicas": result.get("replicas")}
    lines = [
        mllog_line("submission_benchmark", "3dgan", time_ms),
        mllog_line("submission_platform", device, time_ms, {"hardware_profile": fp.get("hardware_profile")}),
        mllog_line("global_batch_size", result.get("global_batch"), time_ms, {"replicas": result.get("replicas")}),
    ]
    if trainer.get("seed") is not None:
        lines.append(mllog_line("seed", trainer["seed"], time_ms))
    if result.get("train_events"):
        lines.append(mllog_line("train_samples", result["train_events"], time_ms))
    lines.append(mllog_line("num_warmup_steps", result.get("warmup_steps_excluded", 0), time_ms,
                            {"records": result.get("warmup_records_excluded", 0),
                             "what": "steps left out of every figure (tracing, compilation, input fill)"}))
    lines.append(mllog_line("caloforge_status", result.get("status"), time_ms,
                            {"measured_steps": steps, "min_measured_steps": result.get("min_measured_steps"),
                             "message": result.get("withheld") or ""}))
    if result.get("status") != "measured":
        return lines
    over = {**where, "measured_steps": steps}
    lines.append(mllog_line("tracked_stats", {"throughput": result["showers_per_second"]}, time_ms,
                            {**over, "step": result.get("total_steps"), "unit": "showers/s"}))
    figures = [
        ("caloforge_seconds_per_step_median", result.get("seconds_per_step_median"), "s"),
        ("caloforge_steps_per_second", result.get("steps_per_second"), "steps/s"),
        ("caloforge_showers_per_second", result.get("showers_per_second"), "showers/s"),
        ("caloforge_seconds_per_epoch", result.get("seconds_per_epoch"), "s"),
        ("caloforge_seconds_per_epoch_published_set", result.get("seconds_per_epoch_published_set"), "s"),
        ("caloforge_achieved_model_flops_per_second",
         (result.get("flops") or {}).get("achieved_model_flops_per_second"), "FLOP/s"),
    ]
    for key, value, unit in figures:
        if value is not None:
            lines.append(mllog_line(key, value, time_ms, {**over, "unit": unit}))
    return lines
