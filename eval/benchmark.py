"""Benchmark collector: turn the trainer's timings.jsonl + summary.json into benchmark.json.

Throughput excludes warm-up (tracing, XLA compilation, input-pipeline fill): the first
``warmup_records`` records of every process segment (a resumed run warms up again) and every
record that starts at or before step ``warmup_steps`` are left out. Epoch times are projected for our training set and for the published 124,987-event set,
and the published per-epoch times (eval/reference_data) are shown beside ours, always labelled as
published reference, never as our result.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from data_prep.config_cli import ConfigArgumentParser, add_verbose_flag, build_config_parser, parse_config
from data_prep.console import configure_console, import_quietly
from data_prep.strict_fields import reject_unknown_keys

LOG = logging.getLogger(__name__)

PUBLISHED_TRAIN_EVENTS = 124_987
"""Training events of the published 100-200 GeV reduced set after the 3DGAN preprocessing."""

REFERENCE_CSV = os.path.join(os.path.dirname(__file__), "reference_data", "published_3dgan_tfjobs_runs_reduced.csv")
REFERENCE_LABEL = (
    "published reference: recardoso/ISC_HPC_3DGAN kubeflow/results/tfjobs_runs_reduced.csv "
    "(3DGAN, 100-200 GeV reduced set, 124,987 training events); NOT a result of this project"
)
REQUIRED_KEYS = ("step", "steps", "seconds", "global_batch")


@dataclass
class BenchmarkConfig:
    """Configuration of the collector; CLI flags map one to one onto these fields.

    Attributes:
        train_dir: Trainer output folder (local or gs://) with timings.jsonl and summary.json.
        output_dir: Folder (local or gs://) receiving benchmark.json.
        manifest: Converted dataset manifest.json; its train count sets the epoch size ("" = none).
        warmup_records: Leading timing records of each run segment left out of the throughput.
        warmup_steps: Records starting at or before this step are also left out (0 = none).
        train_events: Training events per epoch (0 = from the manifest, if given).
        published_events: Events per epoch of the published set, for the comparable projection.
        baseline: A previous benchmark.json to compute speed-up and scaling efficiency against ("" = none).
        reference_csv: Published reference rows ("" = the packaged copy).
        include_tf_devices: List TensorFlow's devices in the fingerprint (imports TensorFlow).
    """

    train_dir: str = field(metadata={"path": "input"})
    output_dir: str = field(metadata={"path": "output"})
    manifest: str = field(default="", metadata={"path": "input"})
    warmup_records: int = 2
    warmup_steps: int = 0
    train_events: int = 0
    published_events: int = PUBLISHED_TRAIN_EVENTS
    baseline: str = field(default="", metadata={"path": "input"})
    reference_csv: str = field(default="", metadata={"path": "input"})
    include_tf_devices: bool = True

    def __post_init__(self) -> None:
        for name in ("warmup_records", "warmup_steps", "train_events"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.published_events <= 0:
            raise ValueError(f"published_events must be > 0, got {self.published_events}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchmarkConfig":
        reject_unknown_keys(cls, d, "BenchmarkConfig")
        return cls(**d)


# --------------------------------------------------------------------------- reading
def _uri():
    from data_prep import uri

    return uri


def read_timings(path: str) -> list[dict]:
    """Parse timings.jsonl (docs/CONTRACTS.md section 3), checking every record.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file and line of a malformed record or one missing a key.
    """
    uri = _uri()
    if not uri.exists(path):
        raise FileNotFoundError(f"timings file not found: {path}")
    records = []
    for lineno, line in enumerate(uri.read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in rec]
        if missing:
            raise ValueError(f"{path}:{lineno}: record lacks {missing}")
        if int(rec["steps"]) < 1 or not float(rec["seconds"]) > 0 or int(rec["global_batch"]) < 1:
            raise ValueError(
                f"{path}:{lineno}: steps, seconds and global_batch must be positive, got "
                f"steps={rec['steps']!r} seconds={rec['seconds']!r} global_batch={rec['global_batch']!r}"
            )
        records.append(rec)
    if not records:
        raise ValueError(f"{path}: no timing records")
    return records


def _read_json(path: str) -> dict:
    uri = _uri()
    if not uri.exists(path):
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return json.loads(uri.read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from err


def manifest_train_events(manifest_uri: str) -> int:
    """Training-split event count from a converted dataset's manifest.json."""
    m = _read_json(manifest_uri)
    counts = m.get("counts", {})
    train = counts.get("train")
    if isinstance(train, dict):  # a manifest may break counts down further
        train = train.get("events", train.get("written"))
    if not isinstance(train, (int, float)) or train <= 0:
        raise ValueError(f"{manifest_uri}: counts.train is missing or not positive (got {train!r})")
    return int(train)


def read_reference_rows(path: str = "") -> list[dict]:
    """Published reference rows with derived seconds per step and showers/s.

    Args:
        path: CSV in the published column layout ("" = the packaged copy).

    Returns:
        One dict per row: the published columns, plus ``global_batch``, ``steps_per_epoch``,
        ``seconds_per_step`` and ``showers_per_second`` derived for 124,987 events per epoch.
    """
    path = path or REFERENCE_CSV
    text = _uri().read_text(path)
    rows = []
    for i, raw in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            replicas = int(float(raw["num_replicas_in_sync"]))
            batch = int(float(raw["batch_size_per_replica"]))
            train_time = float(raw["average_train_time"])
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}:{i}: bad reference row ({err})") from err
        global_batch = replicas * batch
        steps = PUBLISHED_TRAIN_EVENTS // global_batch
        rows.append(
            {
                "device": raw["device"],
                "replicas": replicas,
                "batch_size_per_replica": batch,
                "prefetch": raw.get("prefetch", ""),
                "cache": raw.get("cache", ""),
                "nodes": raw.get("nodes") or None,
                "gpus_per_node": raw.get("gpus_per_node") or None,
                "seconds_per_epoch": train_time,
                "global_batch": global_batch,
                "steps_per_epoch": steps,
                "seconds_per_step": train_time / steps,
                "showers_per_second": PUBLISHED_TRAIN_EVENTS / train_time,
            }
        )
    return rows


# --------------------------------------------------------------------------- computing
def segment_indices(records: list[dict]) -> list[int]:
    """Position of each record inside its process segment.

    A resumed run appends to the same timings.jsonl; its first records pay the warm-up again.
    A new segment starts where a record does not continue the previous one (its first step is
    not the previous record's last step + 1), e.g. after a restart from an older checkpoint.
    A restart exactly at the last recorded step cannot be seen in the records.
    """
    positions, pos, prev_step = [], 0, None
    for rec in records:
        first_step = int(rec["step"]) - int(rec["steps"]) + 1
        pos = pos + 1 if prev_step is not None and first_step == prev_step + 1 else 0
        positions.append(pos)
        prev_step = int(rec["step"])
    return positions


def is_warmup(position: int, record: dict, config: BenchmarkConfig) -> bool:
    """True for a warm-up record: among the first of its segment, or starting at an early step."""
    first_step = int(record["step"]) - int(record["steps"]) + 1
    return position < config.warmup_records or (config.warmup_steps > 0 and first_step <= config.warmup_steps)


def throughput(records: list[dict], config: BenchmarkConfig) -> dict:
    """Steps, showers/s and seconds per step from the timing records, warm-up excluded.

    If every record is warm-up (a very short run), all records are used and
    ``warmup_excluded`` is False so the figure is not mistaken for a steady-state one.
    """
    positions = segment_indices(records)
    flags = [is_warmup(p, r, config) for p, r in zip(positions, records)]
    measured = [r for r, w in zip(records, flags) if not w]
    excluded = bool(measured)
    if not measured:
        LOG.warning("all %d timing records are warm-up; throughput includes warm-up", len(records))
        measured = records
    steps = sum(int(r["steps"]) for r in measured)
    seconds = sum(float(r["seconds"]) for r in measured)
    showers = sum(int(r["steps"]) * int(r["global_batch"]) for r in measured)
    per_step = sorted(float(r["seconds"]) / int(r["steps"]) for r in measured)
    warm = [r for r, w in zip(records, flags) if w] if excluded else []
    warm_seconds = sum(float(r["seconds"]) for r in warm)
    warm_steps = sum(int(r["steps"]) for r in warm)
    last = records[-1]
    replicas = int(last.get("replicas", 1) or 1)
    global_batch = int(last["global_batch"])
    sps = showers / seconds
    return {
        "total_steps": int(max(int(r["step"]) for r in records)),
        "total_records": len(records),
        "segments": sum(1 for p in positions if p == 0),
        "total_seconds": sum(float(r["seconds"]) for r in records),
        "warmup_excluded": excluded,
        "warmup_records_excluded": len(warm),
        "warmup_steps_excluded": warm_steps,
        "warmup_overhead_seconds": warm_seconds - warm_steps * seconds / steps if warm else 0.0,
        "measured_steps": steps,
        "measured_seconds": seconds,
        "measured_showers": showers,
        "showers_per_second": sps,
        "steps_per_second": steps / seconds,
        "seconds_per_step": seconds / steps,
        "seconds_per_step_p50": per_step[len(per_step) // 2],
        "seconds_per_step_max": per_step[-1],
        "global_batch": global_batch,
        "replicas": replicas,
        "batch_per_replica": global_batch / replicas,
        "showers_per_second_per_replica": sps / replicas,
    }


def epoch_seconds(events: int, global_batch: int, seconds_per_step: float) -> dict:
    """Projected epoch time: full batches per epoch (the reader drops the remainder) x s/step."""
    steps = events // global_batch
    return {"events": events, "steps_per_epoch": steps, "seconds_per_epoch": steps * seconds_per_step}


def scaling_vs_baseline(current: dict, baseline: dict) -> dict:
    """Speed-up and scaling efficiency relative to a baseline benchmark.json.

    efficiency = (showers/s / replicas) / (baseline showers/s / baseline replicas): 1.0 means
    perfectly linear scaling with the number of replicas.
    """
    b_sps, b_rep = float(baseline["showers_per_second"]), int(baseline.get("replicas", 1) or 1)
    speedup = current["showers_per_second"] / b_sps
    return {
        "baseline_showers_per_second": b_sps,
        "baseline_replicas": b_rep,
        "speedup": speedup,
        "replica_ratio": current["replicas"] / b_rep,
        "scaling_efficiency": speedup / (current["replicas"] / b_rep),
    }


def fingerprint(include_tf_devices: bool = True) -> dict:
    """Hardware and software of the machine running the collector (the trainer's own device
    label comes from summary.json; in a pipeline both usually run on different machines)."""
    from importlib import metadata

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": None,
        "memory_gb": None,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    info["memory_gb"] = round(int(line.split()[1]) / 1024**2, 2)
                    break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for dist in ("caloforge", "tensorflow", "tensorflow-cpu", "keras", "kfp", "apache-beam", "numpy", "h5py"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    info["versions"] = versions
    if include_tf_devices:
        try:
            import tensorflow as tf

            devices = tf.config.list_physical_devices()
            info["tf_devices"] = [f"{d.device_type}:{d.name}" for d in devices]
            gpus = []
            for d in tf.config.list_physical_devices("GPU"):
                details = tf.config.experimental.get_device_details(d)
                gpus.append(details.get("device_name", d.name))
            info["gpu_names"] = gpus
        except ImportError:
            info["tf_devices"], info["gpu_names"] = None, None
    return info


def _reference_comparison(rows: list[dict], ours: dict, replicas: int) -> dict:
    fastest = min(rows, key=lambda r: r["seconds_per_epoch"])
    same = [r for r in rows if r["replicas"] == replicas]
    out = {
        "label": REFERENCE_LABEL,
        "our_seconds_per_epoch_published_set": ours["seconds_per_epoch"],
        "fastest_reference": fastest,
        "ratio_to_fastest_reference": ours["seconds_per_epoch"] / fastest["seconds_per_epoch"],
    }
    if same:
        best_same = min(same, key=lambda r: r["seconds_per_epoch"])
        out["same_replicas_reference"] = best_same
        out["ratio_to_same_replicas_reference"] = ours["seconds_per_epoch"] / best_same["seconds_per_epoch"]
    return out


def collect(config: BenchmarkConfig) -> dict:
    """Read the trainer's timings and summary, compute the figures, write benchmark.json.

    Args:
        config: Collector settings.

    Returns:
        The benchmark.json content; top-level numbers are the headline figures (showers/s,
        seconds per step, seconds per epoch) so pipelines can log them directly.

    Raises:
        FileNotFoundError: if timings.jsonl or summary.json is missing.
        ValueError: on malformed records, manifest or baseline.
    """
    uri = _uri()
    started = time.monotonic()
    timings_path = uri.join(config.train_dir, "timings.jsonl")
    records = read_timings(timings_path)
    summary = _read_json(uri.join(config.train_dir, "summary.json"))
    tp = throughput(records, config)
    result: dict[str, Any] = {"benchmark_version": 1, **tp}
    train_events = config.train_events or (manifest_train_events(config.manifest) if config.manifest else 0)
    if train_events:
        ours = epoch_seconds(train_events, tp["global_batch"], tp["seconds_per_step"])
        result["train_events"] = train_events
        result["seconds_per_epoch"] = ours["seconds_per_epoch"]
        result["steps_per_epoch"] = ours["steps_per_epoch"]
    published = epoch_seconds(config.published_events, tp["global_batch"], tp["seconds_per_step"])
    result["seconds_per_epoch_published_set"] = published["seconds_per_epoch"]
    result["steps_per_epoch_published_set"] = published["steps_per_epoch"]
    if config.baseline:
        result["scaling"] = scaling_vs_baseline(tp, _read_json(config.baseline))
    reference_rows = read_reference_rows(config.reference_csv)
    result["reference_comparison"] = _reference_comparison(reference_rows, published, tp["replicas"])
    result["reference_rows"] = {"label": REFERENCE_LABEL, "rows": reference_rows}
    result["trainer_summary"] = summary
    result["trainer_device"] = summary.get("device_kind", summary.get("device"))
    result["trainer_strategy"] = summary.get("strategy")
    result["host"] = fingerprint(config.include_tf_devices)
    result["config"] = config.to_dict()
    result["inputs"] = {"timings": timings_path, "summary": uri.join(config.train_dir, "summary.json")}
    result["collected_at_unix"] = time.time()
    out = uri.join(config.output_dir, "benchmark.json")
    uri.makedirs(config.output_dir)
    uri.write_text(out, json.dumps(_json_safe(result), indent=2, sort_keys=True, allow_nan=False))
    LOG.info(
        "benchmark: %.1f showers/s, %.3f s/step over %d measured steps (collected in %.1f s) -> %s",
        tp["showers_per_second"], tp["seconds_per_step"], tp["measured_steps"], time.monotonic() - started, out,
    )
    result["output"] = out
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- CLI
def build_parser() -> ConfigArgumentParser:
    """One flag per BenchmarkConfig field (underscores become dashes; booleans --x/--no-x)."""
    return build_config_parser(BenchmarkConfig, prog="caloforge benchmark", description=__doc__.splitlines()[0])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: collect and print the headline figures as one JSON line."""
    parser = build_parser()
    add_verbose_flag(parser)
    config, args = parse_config(parser, BenchmarkConfig, argv)
    configure_console(args.verbose)
    if config.include_tf_devices:
        import_quietly("tensorflow", args.verbose)
    result = collect(config)
    print(json.dumps({k: result.get(k) for k in ("showers_per_second", "seconds_per_step", "output")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
