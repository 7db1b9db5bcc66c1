"""Apache Beam job converting 3DGAN HDF5 files into sharded TFRecords plus a manifest written last."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import gzip
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from data_prep import beam_flags, destination, h5layout, records, sanity, worker_guard
from data_prep import manifest as manifest_lib
from data_prep import uri as uri_lib
from data_prep.destination import STAGING_PREFIX  # noqa: F401  (public name, kept here)
from data_prep.config_cli import build_config_parser, check_choices, check_config, choices_field
from data_prep.errors import InputValidationError
from data_prep.preprocess import ANGLE_KEYS, PreprocessConfig, preprocess_block
from data_prep.strict_fields import reject_unknown_keys

_LOG = logging.getLogger(__name__)

STATS_NAME = "_stats.json"
SHARDS_NAME = "_shards.json"
_SAMPLE_EVENTS = 64  # events encoded up front to estimate record size (shard count)
_RANGE_BYTES = 64 << 20  # default raw ECAL bytes per read range: enough work per element
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "direct", "BundleBasedDirectRunner")
SPLIT_BY = ("event", "file")
ON_BAD_EVENT = ("fail", "skip")
PROGRESS_EVERY_S = 10.0  # seconds between the job-wide progress lines of a local run
# Relative CPU per event of the two halves of the work, ms per event on a quiet machine
# (docs/data_prep_convert.md, per-step tables): read 0.16 + validate 0.03 + preprocess 0.18;
# serialize 0.26 + frame and write 0.12 + two sha256 0.28. Only for the progress line's share
# done and ETA.
_WORK_WEIGHTS = (0.37, 0.67)


@dataclass
class ConvertConfig:
    """Settings of one conversion; stored whole in the manifest. CLI flags map one to one.

    Attributes:
        inputs: HDF5 files or wildcard patterns, local or gs://.
        output: Dataset folder or gs:// prefix. It may hold only a previous conversion (replaced
            with overwrite) and leftovers of our own dead runs; never one of the inputs.
        encoding: "dense" (float32 bytes of every cell) or "sparse" (non-zero cells only).
        compression: "none" or "gzip" (GZIP-compressed TFRecord shards).
        test_fraction: Fraction of events (or files) assigned to the test split.
        split_by: "event" (hash of file name and event index) or "file" (hash of file name).
        seed: Salt of the split hash; recorded so the split can be reproduced.
        on_bad_event: "fail" (raise naming file/event) or "skip" (drop and count by reason).
        energy_range: Declared (min, max) primary energy in GeV; events outside are bad.
            None disables the check.
        sampling_fraction_range: Accepted (min, max) of each file's median sampling fraction
            (raw ECAL sum / 50 / primary energy, ~0.02), checked on a sample of every file
            before Beam starts; catches energies in MeV, a wrong energy column or another
            ECAL scale. None disables the check.
        threshold: Cells below this raw value are zeroed (PreprocessConfig.threshold).
        power: Power transform exponent (3DGAN: 0.85).
        min_raw_sum: Events with thresholded raw ECAL sum <= this are dropped (3DGAN: 10).
        angle_key: Angle label the trainer should use: "mtheta" or "theta".
        target_shard_mb: Wanted shard size in MB; the shard count follows from it.
        min_shards: At least this many shards per split, so many hosts can read in parallel.
        events_per_range: Events per read range (rounded up to whole HDF5 chunks); 0 picks
            about 64 MB of raw ECAL per range.
        overwrite: Replace a previous conversion at `output` (its manifest and listed shards;
            nothing else is ever deleted). Also takes over another host's lock.
        allow_empty_split: Accept an empty test split (e.g. test_fraction 0). An empty train
            split, or a conversion that keeps no events, is always an error.
        stale_lock_hours: A lock left in `output` by a run on another host counts as dead
            after this many hours (on this host a dead run is recognised by its pid).
    """

    inputs: list[str]
    output: str = field(metadata={"path": "output"})
    encoding: str = choices_field(records.ENCODING_SPARSE, records.ENCODINGS)
    compression: str = choices_field(records.COMPRESSION_NONE, records.COMPRESSIONS)
    test_fraction: float = 0.2
    split_by: str = choices_field("event", SPLIT_BY)
    seed: int = 0
    on_bad_event: str = choices_field("fail", ON_BAD_EVENT)
    energy_range: tuple[float, float] | None = None
    sampling_fraction_range: tuple[float, float] | None = sanity.DEFAULT_SAMPLING_FRACTION_RANGE
    threshold: float = PreprocessConfig.threshold
    power: float = PreprocessConfig.power
    min_raw_sum: float = PreprocessConfig.min_raw_sum
    angle_key: str = choices_field(PreprocessConfig.angle_key, ANGLE_KEYS)
    target_shard_mb: float = 128.0
    min_shards: int = 4
    events_per_range: int = 0
    overwrite: bool = False
    allow_empty_split: bool = False
    stale_lock_hours: float = 24.0

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        self.inputs = list(self.inputs)
        if self.energy_range is not None:
            self.energy_range = tuple(float(e) for e in self.energy_range)
        if self.sampling_fraction_range is not None:
            self.sampling_fraction_range = tuple(float(e) for e in self.sampling_fraction_range)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its value."""
        if not self.inputs:
            raise ValueError("ConvertConfig.inputs is empty: give at least one HDF5 file or pattern")
        if not self.output:
            raise ValueError("ConvertConfig.output is empty: give a folder or gs:// prefix")
        records.check_encoding(self.encoding, self.compression)
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"ConvertConfig.test_fraction must be in [0, 1) (1 leaves no training events), "
                             f"got {self.test_fraction!r}")
        if self.test_fraction == 0.0 and not self.allow_empty_split:
            raise ValueError("ConvertConfig.test_fraction 0 leaves the test split empty; give a fraction > 0, or "
                             "pass --allow-empty-split (allow_empty_split=True) to make a dataset without test events")
        if not self.stale_lock_hours > 0:
            raise ValueError(f"ConvertConfig.stale_lock_hours must be > 0, got {self.stale_lock_hours!r}")
        check_choices(self)
        if self.energy_range is not None and (len(self.energy_range) != 2 or not self.energy_range[0] < self.energy_range[1]):
            raise ValueError(f"ConvertConfig.energy_range must be (min, max) with min < max, got {self.energy_range!r}")
        band = self.sampling_fraction_range
        if band is not None and (len(band) != 2 or not 0.0 <= band[0] < band[1]):
            raise ValueError(f"ConvertConfig.sampling_fraction_range must be (min, max) with 0 <= min < max, got {band!r}")
        if not self.target_shard_mb > 0:
            raise ValueError(f"ConvertConfig.target_shard_mb must be > 0, got {self.target_shard_mb!r}")
        if self.min_shards < 1:
            raise ValueError(f"ConvertConfig.min_shards must be >= 1, got {self.min_shards!r}")
        if self.events_per_range < 0:
            raise ValueError(f"ConvertConfig.events_per_range must be >= 0, got {self.events_per_range!r}")
        self.preprocess_config()  # PreprocessConfig checks its own fields

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig(
            threshold=float(self.threshold),
            power=float(self.power),
            min_raw_sum=float(self.min_raw_sum),
            angle_key=self.angle_key,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of all fields."""
        out = dataclasses.asdict(self)
        out["energy_range"] = None if self.energy_range is None else list(self.energy_range)
        band = self.sampling_fraction_range
        out["sampling_fraction_range"] = None if band is None else list(band)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConvertConfig":
        """Inverse of to_dict; unknown keys are an error so typos do not pass silently."""
        reject_unknown_keys(cls, data, "ConvertConfig")
        return cls(**data)


@dataclass
class _Source:
    index: int
    uri: str
    info: h5layout.FileInfo
    sha256: str = ""
    ranges: list = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Driver-side steps


def _log_rate(stage: str, n_events: int, seconds: float, extra: str = "") -> None:
    _LOG.info("%s: %d events in %.1f s (%.0f events/s)%s", stage, n_events, seconds,
              n_events / max(seconds, 1e-9), extra)


def resolve_inputs(patterns: Sequence[str]) -> list[str]:
    """Expand wildcards; every pattern must match at least one file.

    Raises:
        FileNotFoundError: naming the pattern that matched nothing.
    """
    out: list[str] = []
    for pattern in patterns:
        matched = uri_lib.glob(pattern)
        if not matched:
            raise FileNotFoundError(f"input {pattern!r} matches no file")
        out.extend(m for m in matched if m not in out)
    return out


def _inspect(uri: str) -> h5layout.FileInfo:
    if uri_lib.is_gcs(uri):
        with uri_lib.open_read(uri) as fh:
            return h5layout.inspect_file(fh, name=uri)
    return h5layout.inspect_file(uri)


def _inspect_sources(uris: list[str]) -> list[_Source]:
    """Check every file's layout (metadata only) and checksum it, a few files at a time."""
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(uris))) as pool:
        infos = list(pool.map(_inspect, uris))
        digests = list(pool.map(uri_lib.sha256, uris))
    sources = [_Source(i, u, info, sha) for i, (u, info, sha) in enumerate(zip(uris, infos, digests))]
    _refuse_duplicate_content(sources)
    shapes = {tuple(s.info.image_shape) for s in sources}
    if len(shapes) > 1:
        detail = ", ".join(f"{s.uri}: {tuple(s.info.image_shape)}" for s in sources)
        raise ValueError(f"input files have different ECAL shapes, cannot share one dataset: {detail}")
    n_events = sum(s.info.n_events for s in sources)
    _log_rate("InspectSources", n_events, time.monotonic() - t0, f", {len(sources)} files checksummed")
    return sources


def _refuse_duplicate_content(sources: list[_Source]) -> None:
    """Two inputs with the same bytes would put the same events into both splits (their names
    hash differently), leaking test events into training."""
    first: dict[str, _Source] = {}
    for source in sources:
        if source.sha256 in first:
            raise ValueError(
                f"inputs {first[source.sha256].uri} and {source.uri} have identical content (sha256 "
                f"{source.sha256[:16]}...): their events would land in both splits; give each file once"
            )
        first[source.sha256] = source


def _events_per_range(config: ConvertConfig, info: h5layout.FileInfo) -> int:
    if config.events_per_range:
        return config.events_per_range
    per_event = 4 * math.prod(info.image_shape)
    return max(1, _RANGE_BYTES // per_event)


def _estimate_record_bytes(config: ConvertConfig, source: _Source) -> tuple[float, float]:
    """(bytes per record, kept fraction) from encoding the first events of the first file.

    The shard count must be fixed before Beam runs; a small real sample gives the record size
    for sparse and compressed encodings, whose size depends on the showers.
    """
    stop = min(source.info.n_events, _SAMPLE_EVENTS)
    if uri_lib.is_gcs(source.uri):
        with uri_lib.open_read(source.uri) as fh:
            block = h5layout.read_events(fh, 0, stop, name=source.uri)
    else:
        block = h5layout.read_events(source.uri, 0, stop)
    if config.on_bad_event == "fail":
        # The workers would stop at the same event; saying so now saves starting them.
        h5layout.check_events(block, source.uri, config.energy_range)
    bad = {b.event_index for b in h5layout.find_bad_events(block, source.uri, config.energy_range)}
    keep = [i for i, e in enumerate(block.event_index) if int(e) not in bad]
    fallback = 4.0 * math.prod(source.info.image_shape), 1.0  # dense size; nothing to measure
    if not keep:
        return fallback
    block = h5layout.EventBlock(block.ecal[keep], block.energy[keep], block.theta[keep],
                                block.mtheta[keep], block.event_index[keep], block.uri)
    processed, _ = preprocess_block(block, config.preprocess_config())
    if not len(processed):
        return fallback
    encoded = [
        records.encode_event(processed.ecal[i], processed.energy[i], processed.theta[i], processed.mtheta[i],
                             processed.ecal_sum[i], processed.event_index[i], 0, config.encoding)
        for i in range(len(processed))
    ]
    payload = b"".join(encoded)
    if config.compression == records.COMPRESSION_GZIP:
        payload = gzip.compress(payload, compresslevel=6)
    return (len(payload) + 16 * len(encoded)) / len(encoded), len(processed) / max(stop, 1)


def plan_shards(config: ConvertConfig, n_events: int, record_bytes: float, kept_fraction: float) -> dict[str, int]:
    """Shards per split: estimated split bytes / target shard size, at least min_shards."""
    target = config.target_shard_mb * 1e6
    expected = n_events * kept_fraction
    fractions = {"train": 1.0 - config.test_fraction, "test": config.test_fraction}
    return {
        split: max(config.min_shards, math.ceil(expected * fraction * record_bytes / target))
        for split, fraction in fractions.items()
    }


def default_pipeline_args(pipeline_args: Sequence[str] | None) -> list[str]:
    """Pipeline flags with the local default filled in; anything the caller gave passes unchanged.

    Without --runner we name Beam's local Python runner, FnApiRunner, in multi-processing mode
    with one worker per core. It is what DirectRunner itself falls back to, but DirectRunner
    (Beam 2.7x) first tries to download the Prism runner binary from the internet, which fails
    or stalls offline. For the local runners (FnApiRunner, DirectRunner) a missing running mode
    or worker count is filled in the same way; other runners' flags are left exactly as given.
    """
    args = list(pipeline_args or [])
    runner = None
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(args):
            runner = args[i + 1]
    if runner is None:
        runner = "FnApiRunner"
        args.append(f"--runner={runner}")
    if runner.rsplit(".", 1)[-1] in LOCAL_RUNNERS:
        given = " ".join(args)
        if "--direct_running_mode" not in given:
            args.append("--direct_running_mode=multi_processing")
        in_memory = "in_memory" in given
        if "--direct_num_workers" not in given and not in_memory:
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return args


# ----------------------------------------------------------------------------------------------
# The pipeline


def plan_tasks(config: ConvertConfig, sources: list[_Source], n_tasks: int) -> list[list[tuple[int, str, int, int]]]:
    """The read ranges (source index, uri, start, stop) of each of `n_tasks` shard tasks.

    Each task takes a contiguous run of the events (files in order), about total / n_tasks of
    them, cut at HDF5 chunk boundaries (so no chunk is decompressed twice), in ranges of the
    configured size (h5layout.plan_ranges). A task with no events (fewer chunks than tasks)
    writes empty shards, as a sink with a fixed shard count does.
    """
    total = sum(s.info.n_events for s in sources)
    cuts = [round(k * total / n_tasks) for k in range(n_tasks + 1)]
    tasks: list[list[tuple[int, str, int, int]]] = [[] for _ in range(n_tasks)]
    offset = 0
    for source in sources:
        n, chunk = source.info.n_events, max(1, source.info.chunk_events)

        def local(cut: int) -> int:  # a task boundary inside this file, moved to the nearest chunk boundary
            if cut - offset >= n:  # at or past the file's end: all of it (rounding must not cut the last chunk off)
                return n
            return min(n, max(0, round((cut - offset) / chunk) * chunk))

        for k in range(n_tasks):
            start, stop = local(cuts[k]), local(cuts[k + 1])
            for a, b in h5layout.plan_ranges(source.info, _events_per_range(config, source.info), start, stop):
                tasks[k].append((source.index, source.uri, a, b))
        offset += n
    return tasks


def build_pipeline(pipeline, config: ConvertConfig, sources: list[_Source], staging: str, shards: dict[str, int],
                   progress_dir: str | None = None):
    """Add the conversion steps to a Beam pipeline (the caller runs it).

    One task per pair of shards (train-i-of-n, test-i-of-n; n = the larger planned shard count)
    does all the work of its events inside one worker (transforms.ConvertShardTasks); the job
    moves only the tasks and small dicts (shard descriptions, statistics) between steps.
    `progress_dir` (local runs only) is the folder the workers report their counts to
    (transforms.ProgressCounts), for the driver's job-wide progress line.
    """
    import apache_beam as beam

    from data_prep import transforms as tr

    n_shards = max(shards.values())
    tasks = [
        tr.ShardTask(index, n_shards, tuple(tr.EventRange(*r) for r in ranges))
        for index, ranges in enumerate(plan_tasks(config, sources, n_shards))
    ]
    settings = {
        "on_bad_event": config.on_bad_event, "energy_range": config.energy_range,
        "preprocess": config.preprocess_config().to_dict(), "test_fraction": config.test_fraction,
        "seed": config.seed, "split_by": config.split_by, "encoding": config.encoding,
        "compression": config.compression, "staging": staging,
    }
    converted = (
        pipeline
        | "CreateTasks" >> beam.Create(tasks)  # Create's own Reshuffle spreads them over the workers
        | "ConvertShards" >> tr.ConvertShardTasks(settings, progress_dir)
    )
    (
        converted[tr.TAG_STATS]
        | "SumStats" >> beam.CombineGlobally(tr.SumStats())
        | "StatsToJson" >> beam.Map(tr.stats_to_json)
        | "WriteStats" >> beam.Map(tr.write_json, uri_lib.join(staging, STATS_NAME))
    )
    (
        converted.shards
        | "CollectShards" >> beam.combiners.ToList()
        | "WriteShardList" >> beam.Map(tr.write_json, uri_lib.join(staging, SHARDS_NAME))
    )


def _wait_with_progress(result, n_events: int, poll_s: float = 30.0) -> None:
    """Wait for the job; while a remote runner (Dataflow, Flink, ...) works, log events done,
    rate and ETA from the workers' counters every poll_s seconds.

    Local runners return from run() when the job has finished, so this only waits on them; their
    job-wide progress line comes from _local_progress, which runs beside run().
    """
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.runners.runner import PipelineState

    from data_prep.transforms import METRICS_NAMESPACE

    t0 = time.monotonic()
    while not PipelineState.is_terminal(result.state):
        result.wait_until_finish(duration=int(poll_s * 1000))
        if PipelineState.is_terminal(result.state):
            break
        try:
            counters = result.metrics().query(
                MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name("PreprocessEvents_events"))["counters"]
            done = sum(c.attempted or 0 for c in counters)
        except Exception:  # metrics are best effort while a job runs
            continue
        elapsed = time.monotonic() - t0
        rate = done / max(elapsed, 1e-9)
        eta = (n_events - done) / rate if rate > 0 else float("nan")
        _LOG.info("BeamJob: %d/%d events preprocessed, %.0f events/s, ETA %.0f s", done, n_events, rate, eta)
    result.wait_until_finish()


def _is_local_runner(pipeline_args: Sequence[str]) -> bool:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    runner = PipelineOptions(list(pipeline_args)).view_as(StandardOptions).runner
    return runner is None or str(runner).rsplit(".", 1)[-1] in LOCAL_RUNNERS


def _progress_line(counts: dict[str, int], n_events: int, elapsed: float) -> str:
    """"BeamJob: events preprocessed, records written and hashed, share of the job done, rate, ETA".

    Each worker reads and preprocesses a range of events, then encodes and writes them, hashing
    the shards as it writes (so "hashed" is the records written). The share done weighs the two
    halves by their cost per event, roughly as measured (_WORK_WEIGHTS); records expected =
    events x the fraction kept so far.
    """
    from data_prep import transforms as tr

    pre = counts.get(tr.PROGRESS_PREPROCESSED, 0)
    kept = counts.get(tr.PROGRESS_KEPT, 0)
    written = counts.get(tr.PROGRESS_WRITTEN, 0)
    expected = round(n_events * kept / pre) if pre else n_events
    w_pre, w_write = _WORK_WEIGHTS
    fraction = min(1.0, (w_pre * pre + w_write * written) / max(w_pre * n_events + w_write * expected, 1e-9))
    rate = fraction * n_events / max(elapsed, 1e-9)
    eta = f"{elapsed * (1 - fraction) / fraction:.0f} s" if fraction > 0 else "unknown"
    return (f"BeamJob: {pre}/{n_events} events preprocessed, {written}/{expected} records written, "
            f"{written} hashed; {100 * fraction:.0f} % done, {rate:.0f} events/s, ETA {eta}")


@contextlib.contextmanager
def _local_progress(pipeline_args: Sequence[str], n_events: int):
    """For a local runner: yield a folder for the workers' counts and, while the job runs, log
    one job-wide progress line (events done, rate, ETA) every PROGRESS_EVERY_S seconds and a
    last one when the job has finished. Yields None for remote runners (see _wait_with_progress).

    Beam's metrics are not visible while FnApiRunner runs (run() blocks), and each worker
    process only knows its own share; the workers append their counts to files here
    (transforms.ProgressCounts) and a thread of the driver sums them.
    """
    if not _is_local_runner(pipeline_args):
        yield None
        return
    every_s = PROGRESS_EVERY_S
    folder = tempfile.mkdtemp(prefix="caloforge-progress-")
    stop = threading.Event()
    t0 = time.monotonic()

    def report() -> None:
        from data_prep.transforms import read_progress

        while not stop.wait(every_s):
            _LOG.info(_progress_line(read_progress(folder), n_events, time.monotonic() - t0))

    thread = threading.Thread(target=report, name="caloforge-progress", daemon=True)
    thread.start()
    finished = False
    try:
        yield folder
        finished = True
    finally:
        stop.set()
        thread.join()
        if finished:
            from data_prep.transforms import read_progress

            _LOG.info(_progress_line(read_progress(folder), n_events, time.monotonic() - t0))
        shutil.rmtree(folder, ignore_errors=True)


_INPUT_ERROR_TEXT = re.compile(
    r"InputValidationError: file (?P<uri>.+?)(?:, dataset '(?P<dataset>[^']*)')?(?:, event (?P<event>\d+))?: "
    r"(?P<reason>.+?)(?: \[while running .*)?$",
    re.MULTILINE,
)


def _raise_input_error(exc: BaseException) -> None:
    """Re-raise a bad-input failure from inside Beam as the InputValidationError it was.

    Runners wrap worker exceptions: in-process the original is the cause; across processes only
    its text survives, which names file, dataset and event in InputValidationError's format.
    Returns (so the caller re-raises `exc`) when the failure was something else.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, InputValidationError):
            raise cause from exc
        cause = cause.__cause__ or cause.__context__
    matches = list(_INPUT_ERROR_TEXT.finditer(str(exc)))
    if matches:
        m = matches[-1]
        event = m.group("event")
        raise InputValidationError(
            m.group("uri"), m.group("reason").strip(), dataset=m.group("dataset"),
            event_index=None if event is None else int(event),
        ) from exc


def _log_stage_rates(result, wall_s: float) -> dict[str, dict[str, float]]:
    """One log line per Beam stage with events and events/s, from the workers' counters."""
    from apache_beam.metrics.metric import MetricsFilter

    from data_prep.transforms import METRICS_NAMESPACE

    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    except Exception as exc:  # some runners report no metrics; rates are then simply not logged
        _LOG.info("stage metrics unavailable from this runner: %s", exc)
        return {}
    values: dict[str, float] = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        values[counter.key.metric.name] = values.get(counter.key.metric.name, 0) + (value or 0)
    rates = {}
    for stage in ("ReadEvents", "ValidateEvents", "PreprocessEvents", "EncodeEvents"):
        n = values.get(f"{stage}_events", 0)
        busy = values.get(f"{stage}_busy_ms", 0) / 1000.0
        rates[stage] = {"events": int(n), "busy_s": round(busy, 3),
                        "events_per_s_wall": round(n / max(wall_s, 1e-9), 1)}
        _LOG.info("%s: %d events, %.0f events/s over the job's wall time (%.1f s busy across workers)",
                  stage, n, n / max(wall_s, 1e-9), busy)
    return rates


def _refuse_empty(config: ConvertConfig, stats: dict, sources: list[_Source]) -> None:
    """Refuse a dataset that would be empty, or whose train (or, unless allowed, test) split is.

    Runs after the job and before publishing, so nothing is published; the counts say why.
    """
    counts = {split: int(stats.get(f"count:{split}", 0)) for split in manifest_lib.SPLITS}
    n_files = len(sources)
    where = f"test_fraction {config.test_fraction}, split by {config.split_by} over {n_files} file(s)"
    if not sum(counts.values()):
        bad = ", ".join(f"{k.split(':', 1)[1]}: {int(v)}" for k, v in sorted(stats.items()) if k.startswith("bad:"))
        names = ", ".join(s.uri for s in sources[:3]) + (f" and {n_files - 3} more" if n_files > 3 else "")
        raise ValueError(
            f"the conversion kept no events, nothing was published: {int(stats.get('events_read', 0))} read from "
            f"{names}; bad events by reason: {bad or 'none'}; "
            f"{int(stats.get('dropped_low_sum', 0))} dropped by the raw-sum cut (--min-raw-sum {config.min_raw_sum}); "
            f"check the inputs' units (energy in GeV, angles in radians) and --energy-range, --threshold, --min-raw-sum"
        )
    by_file = " or --split-by event" if config.split_by == "file" else ""
    if not counts["train"]:
        raise ValueError(f"the train split would be empty ({counts['test']} events all hashed to test; {where}), "
                         f"nothing was published: lower --test-fraction{by_file}")
    if not counts["test"] and not config.allow_empty_split:
        raise ValueError(f"the test split would be empty ({counts['train']} events all hashed to train; {where}), "
                         f"nothing was published: raise --test-fraction{by_file}, or pass --allow-empty-split to "
                         f"accept a dataset without test events")


def _advise(error: InputValidationError, config: ConvertConfig) -> InputValidationError:
    """Add what the user can do about a bad input to the error's one line."""
    if error.event_index is not None and config.on_bad_event == "fail":
        return error.with_hint("to drop bad events instead (counted by reason in the manifest), "
                               "rerun with --on-bad-event skip")
    if error.event_index is None:
        return error.with_hint("fix this file or leave it out of --inputs")
    return error


def convert(config: ConvertConfig, pipeline_args: Sequence[str] | None = None, save_main_session: bool = False) -> dict:
    """Convert HDF5 files into a TFRecord dataset with a manifest, using Apache Beam.

    Args:
        config: What to convert and how.
        pipeline_args: Beam pipeline flags, passed unchanged (e.g. --runner=DataflowRunner
            --project=... --region=... --temp_location=gs://... --setup_file=./setup.py).
            Without --runner the local multi-process DirectRunner is used.
        save_main_session: Pickle the __main__ session for workers (for scripts that define
            things in __main__; library use does not need it).

    Returns:
        The manifest as a dict (also written to <output>/manifest.json, last).

    Raises:
        ValueError: bad config values, input files of different shapes or identical content, an
            output that is or holds an input, or a result with no events or an empty split
            (checked before publishing: nothing is published).
        UsageError: a pipeline flag Beam does not know.
        FileNotFoundError: an input pattern matching nothing.
        FileExistsError: an output holding files no conversion wrote (even with overwrite), a
            previous dataset without overwrite, or another live conversion's lock (named).
        InputValidationError: an input file that is not a valid 3DGAN HDF5 file (checked before
            Beam starts), or under on_bad_event="fail" the first bad event a worker met (file,
            dataset, event index, reason), re-raised from the runner's error.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

    config.validate()
    t_start = time.monotonic()
    uri_lib.configure_beam_gcs()
    args = default_pipeline_args(pipeline_args)
    beam_flags.split_pipeline_args(args, _app_flags())
    uris = resolve_inputs(config.inputs)
    destination.refuse_output_over_inputs(config.output, uris)
    with destination.OutputClaim(config.output, config.overwrite, config.stale_lock_hours * 3600.0) as claim:
        try:
            sources = _inspect_sources(uris)
            sanity.check_sampling_fractions([(s.uri, s.info) for s in sources], config.sampling_fraction_range)
            for s in sources:
                s.ranges = h5layout.plan_ranges(s.info, _events_per_range(config, s.info))
            n_events = sum(s.info.n_events for s in sources)
            n_ranges = sum(len(s.ranges) for s in sources)
            record_bytes, kept_fraction = _estimate_record_bytes(config, sources[0])
            shards = plan_shards(config, n_events, record_bytes, kept_fraction)
            _LOG.info("PlanRanges: %d files, %d events, %d ranges; ~%.0f bytes/record -> shards %s",
                      len(sources), n_events, n_ranges, record_bytes, shards)

            options = PipelineOptions(args)
            options.view_as(SetupOptions).save_main_session = save_main_session
            t0 = time.monotonic()
            pipeline = beam.Pipeline(runner=worker_guard.guarded_runner(args), options=options)
            with _local_progress(args, n_events) as progress_dir:
                build_pipeline(pipeline, config, sources, claim.staging, shards, progress_dir)
                try:
                    with worker_guard.guard_workers(args):
                        result = pipeline.run()
                        _wait_with_progress(result, n_events)
                except Exception as exc:
                    _raise_input_error(exc)
                    raise
        except InputValidationError as err:
            raise _advise(err, config) from err
        wall = time.monotonic() - t0
        _log_rate("BeamJob", n_events, wall)
        rates = _log_stage_rates(result, wall)
        stats = json.loads(uri_lib.read_text(uri_lib.join(claim.staging, STATS_NAME)))
        _refuse_empty(config, stats, sources)
        shard_list = sorted(json.loads(uri_lib.read_text(uri_lib.join(claim.staging, SHARDS_NAME))),
                            key=lambda s: s["name"])
        manifest = _make_manifest(config, sources, shard_list, stats, args, wall, rates)
        manifest.created_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        manifest.run["total_seconds"] = round(time.monotonic() - t_start, 3)
        manifest = manifest.with_content_hash()
        t0 = time.monotonic()
        target = claim.publish([s["name"] for s in shard_list],
                               lambda: manifest_lib.write_manifest(manifest, config.output))
        _LOG.info("Publish: %d shards moved in %.1f s", len(shard_list), time.monotonic() - t0)
    _LOG.info("Manifest written last: %s (content hash %s)", target, manifest.content_hash[:16])
    return manifest.to_dict()


def _make_manifest(config, sources, shard_list, stats, args, wall, rates) -> manifest_lib.Manifest:
    """Assemble the manifest, cross-checking the workers' counts against the shards' records.

    Each split's records_digest sums its shards' record digests: it does not depend on how the
    records were divided into shards.
    """
    counts = {split: int(stats.get(f"count:{split}", 0)) for split in manifest_lib.SPLITS}
    digests = {}
    for split in manifest_lib.SPLITS:
        in_split = [s for s in shard_list if s["split"] == split]
        digests[split] = f"{records.combine_digests(*(int(s.pop('records_digest'), 16) for s in in_split)):064x}"
        in_shards = sum(s["records"] for s in in_split)
        if in_shards != counts[split]:
            raise RuntimeError(
                f"conversion inconsistent: {counts[split]} {split} events encoded but {in_shards} "
                f"records found in the {split} shards"
            )
    histograms = {
        split: {
            key: {"edges": [float(e) for e in edges], "counts": stats.get(f"hist:{split}:{key}", [0] * (len(edges) + 1))}
            for key, edges in manifest_lib.HISTOGRAM_EDGES.items()
        }
        for split in manifest_lib.SPLITS
    }
    bad = {k.split(":", 1)[1]: int(v) for k, v in sorted(stats.items()) if k.startswith("bad:")}
    return manifest_lib.Manifest(
        image_shape=[int(d) for d in sources[0].info.image_shape],
        encoding=config.encoding,
        compression=config.compression,
        counts=counts,
        shards=shard_list,
        preprocessing=config.preprocess_config().to_dict(),
        split={"by": config.split_by, "test_fraction": config.test_fraction, "seed": config.seed},
        events_read=int(stats.get("events_read", 0)),
        bad_events=bad,
        dropped_low_sum=int(stats.get("dropped_low_sum", 0)),
        histograms=histograms,
        records_digest=digests,
        sources=[
            {"name": uri_lib.basename(s.uri), "uri": s.uri, "size_bytes": int(s.info.size_bytes),
             "sha256": s.sha256, "n_events": int(s.info.n_events), "layout": s.info.layout}
            for s in sources
        ],
        versions=manifest_lib.versions(),
        config=config.to_dict(),
        seed=int(config.seed),
        output=config.output,
        run={"pipeline_args": list(args), "beam_seconds": round(wall, 3), "stages": rates},
    )


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """One flag per ConvertConfig field (data_prep.config_cli); other flags must be Beam's."""
    return build_config_parser(
        ConvertConfig,
        prog="caloforge convert",
        description="Convert 3DGAN HDF5 files to TFRecord shards + manifest.json with Apache Beam. "
        "Other flags must be Beam pipeline options and go to Beam (e.g. --runner=DataflowRunner --project ... "
        "--region ... --temp_location gs://... --setup_file ./setup.py); an unknown flag is an error.",
    )


def _app_flags() -> list[str]:
    return [s for action in build_parser()._actions for s in action.option_strings]  # pylint: disable=protected-access


def run(argv: Sequence[str] | None = None, save_main_session: bool = True) -> dict:
    """Command-line entry: app flags become a ConvertConfig; the rest must be Beam flags and go to
    Beam unchanged (an unknown flag raises UsageError naming the closest valid one)."""
    parser = build_parser()
    known, pipeline_args = beam_flags.parse_app_and_pipeline_args(parser, argv)
    config = check_config(parser, ConvertConfig, known)
    return convert(config, pipeline_args, save_main_session=save_main_session)


if __name__ == "__main__":
    from pipelines.cli import main  # the CLI's error handling: one line and exit code 2 for user errors

    sys.exit(main(["convert", *sys.argv[1:]]))
