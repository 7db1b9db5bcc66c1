"""Benchmark collector: turn the trainer's timings.jsonl + summary.json into benchmark.json.

Throughput excludes warm-up (tracing, XLA compilation, input-pipeline fill): the first
``warmup_records`` records of every process segment (a resumed run warms up again) and every
record that starts at or before step ``warmup_steps``; the steps left out are named in the output.
A timings file holding records of more than one run (another preset, dataset or config hash, e.g.
a killed run's) is refused, and no training figure is given from fewer than ``min_measured_steps``
measured steps (the output says so instead). Epoch times are projected for our training set and
for the published 124,987-event set; the published per-epoch times (eval/reference_data) are shown
beside ours, always labelled as published reference, never as our result. The collector also reads
the training dataset alone (input-pipeline events/s), times the exported generator at several batch
sizes beside the embedded Monte Carlo, and counts the model FLOPs of a step (eval.bench_measure).
Outputs: benchmark.json and benchmark.mllog (MLPerf-style `:::MLLOG` lines, eval.mllog).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from data_prep.config_cli import ConfigArgumentParser, add_verbose_flag, build_config_parser, parse_config
from data_prep.console import configure_console, import_quietly
from data_prep.strict_fields import reject_unknown_keys
from eval.bench_fingerprint import fingerprint, trainer_fingerprint  # noqa: F401  (fingerprint: public name)
from eval.scaling import efficiency_throughput, efficiency_time
from trainer.timings import IDENTITY_KEYS, config_hash

LOG = logging.getLogger(__name__)

PUBLISHED_TRAIN_EVENTS = 124_987
"""Training events of the published 100-200 GeV reduced set after the 3DGAN preprocessing."""

REFERENCE_CSV = os.path.join(os.path.dirname(__file__), "reference_data", "published_3dgan_tfjobs_runs_reduced.csv")
REFERENCE_LABEL = (
    "published reference: recardoso/ISC_HPC_3DGAN kubeflow/results/tfjobs_runs_reduced.csv "
    "(3DGAN, 100-200 GeV reduced set, 124,987 training events); NOT a result of this project"
)
REQUIRED_KEYS = ("step", "steps", "seconds", "global_batch")
BENCHMARK_FILE = "benchmark.json"
MLLOG_FILE = "benchmark.mllog"
#: Record keys that must agree across one run's records (besides IDENTITY_KEYS).
RUN_SHAPE_KEYS = ("global_batch", "replicas")


@dataclass
class BenchmarkConfig:
    """Configuration of the collector; CLI flags map one to one onto these fields.

    Attributes:
        train_dir: Trainer output folder (local or gs://) with timings.jsonl and summary.json.
        output_dir: Folder (local or gs://) receiving benchmark.json and benchmark.mllog.
        manifest: Converted dataset manifest.json; its train count sets the epoch size, and its
            training split is read alone for the input-pipeline throughput ("" = none).
        warmup_records: Leading timing records of each run segment left out of the throughput.
        warmup_steps: Records starting at or before this step are also left out (0 = none).
        min_measured_steps: Fewest measured (non-warm-up) steps a training figure is given from;
            with fewer, benchmark.json says so and gives none.
        train_events: Training events per epoch (0 = from the manifest, if given).
        published_events: Events per epoch of the published set, for the comparable projection.
        baseline: A previous benchmark.json to compute speed-up and scaling efficiency against ("" = none).
        reference_csv: Published reference rows ("" = the packaged copy).
        hardware_profile: Name of the hardware profile the training ran on, recorded in the
            fingerprint (the DAG sets it from the compiled profile; "" = not recorded).
        input_batches: Batches of the training split read alone to time the input pipeline
            (0 = not measured; needs manifest).
        generation_batch_sizes: Batch sizes the exported generator is timed at (none = not timed).
        generation_seconds: Seconds of timed generation per batch size (after one untimed call).
        generation_memory_gb: A generation batch estimated to need more memory than this is skipped
            (named in the output).
        mc_seconds: Seconds of timed embedded Monte Carlo, shown beside the generator (0 = not timed).
        count_flops: Count the model FLOPs of a training step and report the achieved FLOP/s.
        include_tf_devices: List TensorFlow's devices in the fingerprint (imports TensorFlow).
    """

    train_dir: str = field(metadata={"path": "input"})
    output_dir: str = field(metadata={"path": "output"})
    manifest: str = field(default="", metadata={"path": "input"})
    warmup_records: int = 2
    warmup_steps: int = 0
    min_measured_steps: int = 20
    train_events: int = 0
    published_events: int = PUBLISHED_TRAIN_EVENTS
    baseline: str = field(default="", metadata={"path": "input"})
    reference_csv: str = field(default="", metadata={"path": "input"})
    hardware_profile: str = ""
    input_batches: int = 30
    generation_batch_sizes: tuple[int, ...] = (1, 64, 1024)
    generation_seconds: float = 2.0
    generation_memory_gb: float = 4.0
    mc_seconds: float = 1.0
    count_flops: bool = True
    include_tf_devices: bool = True

    def __post_init__(self) -> None:
        self.generation_batch_sizes = tuple(int(b) for b in self.generation_batch_sizes)
        for name in ("warmup_records", "warmup_steps", "train_events", "input_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_measured_steps < 1:
            raise ValueError(f"min_measured_steps must be >= 1, got {self.min_measured_steps}")
        if self.published_events <= 0:
            raise ValueError(f"published_events must be > 0, got {self.published_events}")
        if any(b < 1 for b in self.generation_batch_sizes):
            raise ValueError(f"generation_batch_sizes must be >= 1, got {list(self.generation_batch_sizes)}")
        for name in ("generation_seconds", "generation_memory_gb", "mc_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["generation_batch_sizes"] = list(self.generation_batch_sizes)
        return out

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


def check_single_run(records: list[dict], path: str, train_config: dict | None = None) -> dict[str, Any]:
    """The identity (preset, dataset, config hash, global batch, replicas) all records share.

    A killed run leaves its records in timings.jsonl and a new run in the same folder appends to
    them: such a file measures two runs, and its figures would describe neither.

    Args:
        records: read_timings' records, in file order.
        path: the file, for messages.
        train_config: config.json's `train_config` of the folder, if present: the records must be
            of that configuration.

    Returns:
        The shared identity; `identity_recorded` is False for records of a trainer that did not
        write preset, dataset and config hash (their mixing cannot be checked).

    Raises:
        ValueError: naming the key, the values and the lines where each begins.
    """
    for key in (*IDENTITY_KEYS, *RUN_SHAPE_KEYS):
        runs: list[tuple[Any, int]] = []  # (value, first line) of each run of equal values
        for lineno, rec in enumerate(records, start=1):
            value = rec.get(key)
            if key == "replicas" and value is None:
                value = 1
            if not runs or runs[-1][0] != value:
                runs.append((value, lineno))
        values = {json.dumps(v) for v, _ in runs}
        if len(values) > 1:
            where = ", ".join(f"{key}={v!r} from record {line}" for v, line in runs[:4])
            raise ValueError(
                f"{path} mixes the records of more than one run ({where}): a killed or earlier run left its "
                "records in this folder. Train into a fresh output folder, or move the other run's lines "
                "out of timings.jsonl, then collect again")
    first = records[0]
    recorded = all(k in first for k in IDENTITY_KEYS)
    identity = {k: first.get(k) for k in IDENTITY_KEYS}
    if recorded and train_config:
        expected = config_hash(train_config)
        if identity["config_hash"] != expected:
            raise ValueError(
                f"{path}: its records are of config hash {identity['config_hash']} but the folder's config.json "
                f"is {expected} (preset {train_config.get('preset')!r}): the records are another run's; train "
                "into a fresh output folder")
    return {**identity, "global_batch": int(first["global_batch"]), "replicas": int(first.get("replicas", 1) or 1),
            "identity_recorded": recorded}


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


def step_ranges(records: list[dict]) -> list[list[int]]:
    """[first, last] step of each run of consecutive records (the warm-up, named)."""
    ranges: list[list[int]] = []
    for rec in records:
        first, last = int(rec["step"]) - int(rec["steps"]) + 1, int(rec["step"])
        if ranges and first == ranges[-1][1] + 1:
            ranges[-1][1] = last
        else:
            ranges.append([first, last])
    return ranges


def step_time_spread(per_step: list[float]) -> dict[str, float]:
    """Median and spread of the per-record seconds per step (each record one call)."""
    a = np.asarray(per_step, dtype=float)
    p10, p25, p50, p75, p90 = (float(v) for v in np.percentile(a, [10, 25, 50, 75, 90]))
    return {"median": p50, "p10": p10, "p25": p25, "p75": p75, "p90": p90, "min": float(a.min()),
            "max": float(a.max()), "iqr": p75 - p25, "relative_iqr": (p75 - p25) / p50 if p50 > 0 else None,
            "records": int(a.size)}


def throughput(records: list[dict], config: BenchmarkConfig) -> dict:
    """Steps, showers/s and seconds per step from the timing records, warm-up excluded.

    Figures come only from measured (non-warm-up) records, and only from at least
    ``config.min_measured_steps`` measured steps: with fewer, ``status`` is "too_few_steps",
    ``withheld`` says why and no throughput key is present.
    """
    positions = segment_indices(records)
    flags = [is_warmup(p, r, config) for p, r in zip(positions, records)]
    measured = [r for r, w in zip(records, flags) if not w]
    warm = [r for r, w in zip(records, flags) if w]
    steps = sum(int(r["steps"]) for r in measured)
    warm_steps = sum(int(r["steps"]) for r in warm)
    last = records[-1]
    replicas = int(last.get("replicas", 1) or 1)
    global_batch = int(last["global_batch"])
    out: dict[str, Any] = {
        "total_steps": int(max(int(r["step"]) for r in records)),
        "total_records": len(records),
        "segments": sum(1 for p in positions if p == 0),
        "total_seconds": sum(float(r["seconds"]) for r in records),
        "warmup_excluded": True,
        "warmup_records_excluded": len(warm),
        "warmup_steps_excluded": warm_steps,
        "warmup_step_ranges": step_ranges(warm),
        "warmup_seconds": sum(float(r["seconds"]) for r in warm),
        "measured_steps": steps,
        "measured_records": len(measured),
        "min_measured_steps": config.min_measured_steps,
        "global_batch": global_batch,
        "replicas": replicas,
        "batch_per_replica": global_batch / replicas,
    }
    if steps < config.min_measured_steps:
        out["status"] = "too_few_steps"
        out["withheld"] = (
            f"no training figure: {steps} measured steps after leaving out {warm_steps} warm-up steps "
            f"({len(warm)} records), fewer than min_measured_steps={config.min_measured_steps}; train longer "
            "(max_steps) or lower --min-measured-steps")
        return out
    seconds = sum(float(r["seconds"]) for r in measured)
    showers = sum(int(r["steps"]) * int(r["global_batch"]) for r in measured)
    per_step = [float(r["seconds"]) / int(r["steps"]) for r in measured]
    spread = step_time_spread(per_step)
    sps = showers / seconds
    out.update({
        "status": "measured",
        "withheld": None,
        "warmup_overhead_seconds": out["warmup_seconds"] - warm_steps * seconds / steps,
        "measured_seconds": seconds,
        "measured_showers": showers,
        "showers_per_second": sps,
        "steps_per_second": steps / seconds,
        "seconds_per_step": seconds / steps,
        "seconds_per_step_median": spread["median"],
        "seconds_per_step_p50": spread["median"],
        "seconds_per_step_max": spread["max"],
        "step_time": spread,
        "showers_per_second_per_replica": sps / replicas,
    })
    return out


def epoch_seconds(events: int, global_batch: int, seconds_per_step: float) -> dict:
    """Projected epoch time: full batches per epoch (the reader drops the remainder) x s/step."""
    steps = events // global_batch
    return {"events": events, "steps_per_epoch": steps, "seconds_per_epoch": steps * seconds_per_step}


def scaling_vs_baseline(current: dict, baseline: dict) -> dict:
    """Speed-up and scaling efficiency relative to a baseline benchmark.json.

    scaling_efficiency (throughput form) = (showers/s / replicas) / (baseline showers/s / baseline
    replicas); efficiency_time_form = T0 x N0 / (N x T) with T the published-set epoch time, when
    both have one. 1.0 means perfectly linear scaling with the number of replicas.
    """
    b_sps, b_rep = float(baseline["showers_per_second"]), int(baseline.get("replicas", 1) or 1)
    speedup = current["showers_per_second"] / b_sps
    out = {
        "baseline_showers_per_second": b_sps,
        "baseline_replicas": b_rep,
        "speedup": speedup,
        "replica_ratio": current["replicas"] / b_rep,
        "scaling_efficiency": efficiency_throughput(b_sps, b_rep, current["showers_per_second"], current["replicas"]),
    }
    b_epoch, epoch = baseline.get("seconds_per_epoch_published_set"), current.get("seconds_per_epoch_published_set")
    if b_epoch and epoch:
        out["efficiency_time_form"] = efficiency_time(float(b_epoch), b_rep, float(epoch), current["replicas"])
    return out


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


def _measure(name: str, func, *args) -> dict:
    """Run one extra measurement; a failure is recorded in benchmark.json, not raised (the
    training figures stand without it)."""
    try:
        return func(*args)
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        LOG.warning("benchmark: %s not measured: %s", name, err)
        return {"not_measured": f"{type(err).__name__}: {err}"}


def extra_measurements(config: BenchmarkConfig, identity: dict, train_config: dict, tp: dict) -> dict[str, Any]:
    """Input pipeline, generation beside Monte Carlo, FLOPs (eval.bench_measure), as configured."""
    from eval import bench_measure as bm

    uri = _uri()
    out: dict[str, Any] = {}
    if config.input_batches and config.manifest:
        out["input_pipeline"] = _measure("input pipeline", bm.input_throughput, config.manifest,
                                         identity["global_batch"], config.input_batches)
        rate = out["input_pipeline"].get("events_per_second")
        if rate and tp.get("showers_per_second"):
            out["input_pipeline"]["headroom_vs_training"] = rate / tp["showers_per_second"]
    else:
        out["input_pipeline"] = {"not_measured": "input_batches is 0 or no manifest given"}
    generator_dir = uri.join(config.train_dir, "generator")
    if not config.generation_batch_sizes:
        out["generation"] = {"not_measured": "generation_batch_sizes is empty"}
    elif not uri.exists(uri.join(generator_dir, "generator_config.json")):
        out["generation"] = {"not_measured": f"no exported generator in {generator_dir}"}
    else:
        out["generation"] = _measure("generation", bm.generation_throughput, generator_dir,
                                     config.generation_batch_sizes, config.generation_seconds,
                                     config.generation_memory_gb)
    if config.mc_seconds:
        from trainer.presets import get_preset

        shape = get_preset(identity["preset"]).image_shape if identity.get("preset") else (51, 51, 25)
        out["monte_carlo"] = _measure("Monte Carlo", bm.monte_carlo_throughput, shape, config.mc_seconds)
    if config.count_flops and identity.get("preset"):
        updates = int(train_config.get("generator_updates", 2))
        flops = _measure("FLOPs", bm.training_flops, identity["preset"], updates,
                         train_config.get("layers", "fused"))
        if "model_per_event" in flops:
            flops["model_per_step"] = flops["model_per_event"] * identity["global_batch"]
            if "executed_per_event" in flops:
                flops["executed_per_step"] = flops["executed_per_event"] * identity["global_batch"]
            if tp.get("status") == "measured":
                flops["achieved_model_flops_per_second"] = flops["model_per_step"] / tp["seconds_per_step"]
                if "executed_per_step" in flops:
                    flops["achieved_executed_flops_per_second"] = flops["executed_per_step"] / tp["seconds_per_step"]
        out["flops"] = flops
    return out


def headline_figures(result: dict) -> dict[str, float]:
    """Flat numeric figures (KFP Metrics, the index page): only those measured."""
    keys = ("showers_per_second", "steps_per_second", "seconds_per_step", "seconds_per_step_median",
            "seconds_per_epoch", "seconds_per_epoch_published_set", "measured_steps", "warmup_steps_excluded")
    out = {k: float(result[k]) for k in keys if isinstance(result.get(k), (int, float))}
    spread = result.get("step_time") or {}
    if "iqr" in spread:
        out["seconds_per_step_iqr"] = spread["iqr"]
    rate = (result.get("input_pipeline") or {}).get("events_per_second")
    if rate:
        out["input_events_per_second"] = rate
    for batch, entry in ((result.get("generation") or {}).get("batches") or {}).items():
        if "showers_per_second" in entry:
            out[f"generation_showers_per_second_batch{batch}"] = entry["showers_per_second"]
    mc = (result.get("monte_carlo") or {}).get("showers_per_second")
    if mc:
        out["monte_carlo_showers_per_second"] = mc
    flops = result.get("flops") or {}
    for key in ("model_per_step", "achieved_model_flops_per_second"):
        if key in flops:
            out[f"flops_{key}" if key == "model_per_step" else key] = flops[key]
    return out


def measured_statement(result: dict) -> str:
    """One sentence: what the figures were measured over, and on what."""
    device = result["fingerprint"]["trainer"]["device_summary"]
    profile = result["fingerprint"].get("hardware_profile")
    on = f"{device}" + (f", hardware profile {profile}" if profile else "")
    warm = result["warmup_step_ranges"]
    named = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in warm) or "none"
    if result["status"] != "measured":
        return f"{result['withheld']} ({on})"
    return (f"{result['measured_steps']} measured steps ({result['measured_records']} records) at global batch "
            f"{result['global_batch']} on {on}; warm-up steps {named} left out")


def collect(config: BenchmarkConfig) -> dict:
    """Read the trainer's timings and summary, compute the figures, write benchmark.json.

    Args:
        config: Collector settings.

    Returns:
        The benchmark.json content; top-level numbers are the headline figures (showers/s,
        seconds per step, seconds per epoch) so pipelines can log them directly; `figures`
        holds them flat. With fewer than min_measured_steps measured steps, `status` is
        "too_few_steps", `withheld` says why and no training figure is present.

    Raises:
        FileNotFoundError: if timings.jsonl or summary.json is missing.
        ValueError: on malformed or mixed records, manifest or baseline.
    """
    from eval.mllog import benchmark_mllog

    uri = _uri()
    started = time.monotonic()
    timings_path = uri.join(config.train_dir, "timings.jsonl")
    records = read_timings(timings_path)
    summary = _read_json(uri.join(config.train_dir, "summary.json"))
    config_path = uri.join(config.train_dir, "config.json")
    config_doc = _read_json(config_path) if uri.exists(config_path) else {}
    train_config = config_doc.get("train_config") or {}
    identity = check_single_run(records, timings_path, train_config)
    if not identity["identity_recorded"]:
        identity["preset"] = train_config.get("preset") or (summary.get("extra") or {}).get("preset")
    tp = throughput(records, config)
    result: dict[str, Any] = {"benchmark_version": 2, **tp}
    train_events = config.train_events or (manifest_train_events(config.manifest) if config.manifest else 0)
    if train_events:
        result["train_events"] = train_events
    if tp["status"] == "measured":
        if train_events:
            ours = epoch_seconds(train_events, tp["global_batch"], tp["seconds_per_step"])
            result["seconds_per_epoch"] = ours["seconds_per_epoch"]
            result["steps_per_epoch"] = ours["steps_per_epoch"]
        published = epoch_seconds(config.published_events, tp["global_batch"], tp["seconds_per_step"])
        result["seconds_per_epoch_published_set"] = published["seconds_per_epoch"]
        result["steps_per_epoch_published_set"] = published["steps_per_epoch"]
        if config.baseline:
            result["scaling"] = scaling_vs_baseline(result, _read_json(config.baseline))
        reference_rows = read_reference_rows(config.reference_csv)
        result["reference_comparison"] = _reference_comparison(reference_rows, published, tp["replicas"])
        result["reference_rows"] = {"label": REFERENCE_LABEL, "rows": reference_rows}
    else:
        LOG.warning("benchmark: %s", tp["withheld"])
    result.update(extra_measurements(config, identity, train_config, tp))
    result["trainer_summary"] = summary
    result["trainer_device"] = summary.get("device_kind", summary.get("device"))
    result["trainer_strategy"] = summary.get("strategy")
    host = fingerprint(config.include_tf_devices)
    result["host"] = host
    result["fingerprint"] = {
        "hardware_profile": config.hardware_profile or None,
        "preset": identity.get("preset"),
        "dataset": identity.get("dataset"),
        "config_hash": identity.get("config_hash") or (config_hash(train_config) if train_config else None),
        "identity_recorded": identity["identity_recorded"],
        "trainer": trainer_fingerprint(config_doc, summary, identity),
        "collector": {"cpu_model": host.get("cpu_model"), "cpu_count": host.get("cpu_count"),
                      "gpu_names": host.get("gpu_names"), "versions": host["versions"],
                      "git_commit": host.get("git_commit")},
    }
    result["measured"] = measured_statement(result)
    result["figures"] = headline_figures(result)
    result["config"] = config.to_dict()
    result["inputs"] = {"timings": timings_path, "summary": uri.join(config.train_dir, "summary.json")}
    result["collected_at_unix"] = time.time()
    result = _json_safe(result)
    out = uri.join(config.output_dir, BENCHMARK_FILE)
    uri.makedirs(config.output_dir)
    mllog = uri.join(config.output_dir, MLLOG_FILE)
    uri.write_text(mllog, "\n".join(benchmark_mllog(result, int(result["collected_at_unix"] * 1000))) + "\n")
    result["mllog"] = mllog
    # benchmark.json last: its presence says the folder is complete.
    uri.write_text(out, json.dumps(result, indent=2, sort_keys=True, allow_nan=False))
    if tp["status"] == "measured":
        LOG.info("benchmark: %.1f showers/s, %.3f s/step (median %.3f) over %d measured steps (collected in %.1f s) -> %s",
                 tp["showers_per_second"], tp["seconds_per_step"], tp["seconds_per_step_median"], tp["measured_steps"],
                 time.monotonic() - started, out)
    result["output"] = out
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


# --------------------------------------------------------------------------- CLI
def build_parser() -> ConfigArgumentParser:
    """One flag per BenchmarkConfig field (underscores become dashes; booleans --x/--no-x)."""
    return build_config_parser(BenchmarkConfig, prog="caloforge benchmark", description=__doc__.splitlines()[0])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: collect, then print the headline figures as one JSON line (with what they
    were measured over), or why there are none."""
    parser = build_parser()
    add_verbose_flag(parser)
    config, args = parse_config(parser, BenchmarkConfig, argv)
    configure_console(args.verbose)
    if config.include_tf_devices:
        import_quietly("tensorflow", args.verbose)
    result = collect(config)
    keys = ("status", "showers_per_second", "seconds_per_step", "seconds_per_step_median", "measured_steps",
            "measured", "output")
    print(json.dumps({k: result.get(k) for k in keys}))
    if result["status"] != "measured":
        print(f"caloforge benchmark: {result['withheld']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
