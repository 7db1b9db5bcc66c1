"""Beam PTransforms of the HDF5 -> TFRecord conversion: read ranges, validate, preprocess, split, encode, write."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from typing import Any, Iterable, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import Metrics

from data_prep import h5layout, records
from data_prep.convert import ON_BAD_EVENT, SPLIT_BY  # the config owns its choices
from data_prep import manifest as manifest_lib
from data_prep import uri as uri_lib
from data_prep.preprocess import PreprocessConfig, ProcessedBlock, preprocess_block

_LOG = logging.getLogger(__name__)

# Workers import this module when they unpickle the steps (the writers' ExampleCoder included), so
# Beam's GCS IO on every worker skips the credential search when talking to an emulator.
uri_lib.configure_beam_gcs()

METRICS_NAMESPACE = "caloforge.convert"
TAG_TRAIN = "train"
TAG_TEST = "test"
TAG_STATS = "stats"
_LOG_EVERY_S = 15.0


class EventRange(NamedTuple):
    """A slice [start, stop) of one source file; the unit of parallel work."""

    source_index: int
    uri: str
    start: int
    stop: int


# ----------------------------------------------------------------------------------------------
# Progress and statistics


class _Progress:
    """Counts events through one stage; Beam counters for the driver, a periodic log line here.

    The driver turns the counters into one `events/s` line per stage after the run; the log line
    lets someone watching a long job on a worker see it move.
    """

    def __init__(self, stage: str):
        self.stage = stage
        self.events = Metrics.counter(METRICS_NAMESPACE, f"{stage}_events")
        self.busy_ms = Metrics.counter(METRICS_NAMESPACE, f"{stage}_busy_ms")
        self._seen = 0
        self._t0 = time.monotonic()
        self._last_log = self._t0

    def add(self, n_events: int, seconds: float) -> None:
        self.events.inc(int(n_events))
        self.busy_ms.inc(int(seconds * 1000))
        self._seen += int(n_events)
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            _LOG.info("%s: %d events on this worker, %.1f events/s", self.stage, self._seen,
                      self._seen / max(now - self._t0, 1e-9))
            # the job-wide count, rate and ETA are logged by the driver (convert._log_stage_rates,
            # convert._wait_with_progress while a remote job runs, ProgressCounts for local runs)


# Labels of the counts ProgressCounts files carry (read back by read_progress).
PROGRESS_PREPROCESSED = "preprocessed"  # events into PreprocessEvents
PROGRESS_KEPT = "kept"  # events out of it (after the low-sum drop)
PROGRESS_WRITTEN = "written"  # records written (and hashed as they are written) to the shards
PROGRESS_HASHED = "hashed"  # records read back and hashed by describe_shard


class ProgressCounts:
    """Event counts a local worker hands to the driver of the job, through a local folder.

    Local runners give the driver no metrics until the job ends (FnApiRunner's run() returns
    then), so for local runs each worker process appends one line per count ("256\n") to its
    own file in a folder the driver reads every few seconds (read_progress). A small O_APPEND
    write costs microseconds, nothing beside the work it counts. Remote runners get no folder
    (their workers cannot reach the driver's disk): there the driver polls Beam's counters.
    """

    def __init__(self, folder: str, label: str):
        self._folder = folder
        self._label = label
        self._fd: int | None = None
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            if self._fd is None:
                name = f"{self._label}-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
                self._fd = os.open(os.path.join(self._folder, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                weakref.finalize(self, os.close, self._fd)
            os.write(self._fd, b"%d\n" % int(n))

    def __getstate__(self):  # travels to the workers without its file
        return {"_folder": self._folder, "_label": self._label}

    def __setstate__(self, state):
        self.__init__(state["_folder"], state["_label"])


def read_progress(folder: str) -> dict[str, int]:
    """Sum of the counts in a ProgressCounts folder, per label; a line still being written is skipped."""
    totals: dict[str, int] = {}
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return totals
    for name in names:
        label = name.split("-", 1)[0]
        try:
            with open(os.path.join(folder, name), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            continue
        complete = data[: data.rfind(b"\n") + 1]
        totals[label] = totals.get(label, 0) + sum(int(v) for v in complete.split())
    return totals


def empty_stats() -> dict[str, Any]:
    """The identity element of the conversion statistics (see SumStats)."""
    return {}


def _add_stats(acc: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for key, value in other.items():
        if isinstance(value, np.ndarray):
            acc[key] = acc[key] + value if key in acc else value.copy()
        else:
            acc[key] = acc.get(key, 0) + value
    return acc


class SumStats(beam.CombineFn):
    """Sums per-block statistics dicts: counters add, histograms add bin-wise."""

    def create_accumulator(self):
        return empty_stats()

    def add_input(self, accumulator, element):
        return _add_stats(accumulator, element)

    def merge_accumulators(self, accumulators):
        out = empty_stats()
        for acc in accumulators:
            _add_stats(out, acc)
        return out

    def extract_output(self, accumulator):
        return accumulator


def stats_to_json(stats: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe form: arrays to lists of ints."""
    out = {}
    for key, value in stats.items():
        if isinstance(value, np.ndarray):
            out[key] = [int(v) for v in value]
        else:
            out[key] = int(value)
    return out


# ----------------------------------------------------------------------------------------------
# Reading


def read_range(element: EventRange) -> h5layout.EventBlock:
    """The events of one range, read with h5py (gs:// through the uri layer)."""
    if uri_lib.is_gcs(element.uri):
        with uri_lib.open_read(element.uri) as fh:
            return h5layout.read_events(fh, element.start, element.stop, name=element.uri)
    return h5layout.read_events(element.uri, element.start, element.stop)


class _ReadRangeFn(beam.DoFn):
    def setup(self):
        uri_lib.configure_beam_gcs()
        self._progress = _Progress("ReadEvents")

    def process(self, element: EventRange) -> Iterable[tuple[int, h5layout.EventBlock]]:
        t0 = time.monotonic()
        block = read_range(element)
        self._progress.add(len(block), time.monotonic() - t0)
        yield element.source_index, block


class ReadEventBlocks(beam.PTransform):
    """EventRange -> (source_index, EventBlock), reading each slice with h5py (gs:// via uri)."""

    def expand(self, ranges):
        return ranges | "ReadRange" >> beam.ParDo(_ReadRangeFn())


# ----------------------------------------------------------------------------------------------
# Validation


def check_on_bad_event(on_bad_event: str) -> None:
    if on_bad_event not in ON_BAD_EVENT:
        raise ValueError(f"on_bad_event must be one of {ON_BAD_EVENT}, got {on_bad_event!r}")


def validate_block(block: h5layout.EventBlock, on_bad_event: str, energy_range: tuple[float, float] | None
                   ) -> tuple[h5layout.EventBlock, dict[str, Any]]:
    """(the block's good events, statistics: events_read and bad:<reason> counts).

    Under on_bad_event="fail" the first bad event raises InputValidationError naming the file,
    dataset and event; under "skip" bad events are dropped, counted by reason and logged.
    """
    stats: dict[str, Any] = {"events_read": len(block)}
    if on_bad_event == "fail":
        h5layout.check_events(block, block.uri, energy_range)
        return block, stats
    bad = h5layout.find_bad_events(block, block.uri, energy_range)
    if not bad:
        return block, stats
    bad_index = np.array([b.event_index for b in bad], dtype=np.int64)
    keep = ~np.isin(block.event_index, bad_index)
    for b in bad:
        stats[f"bad:{b.reason}"] = stats.get(f"bad:{b.reason}", 0) + 1
    _LOG.warning("skipping %d bad events of file %s, events %d..%d (first: event %d, %s)", len(bad),
                 block.uri, int(block.event_index[0]), int(block.event_index[-1]),
                 bad[0].event_index, bad[0].reason)
    good = h5layout.EventBlock(
        ecal=block.ecal[keep],
        energy=block.energy[keep],
        theta=block.theta[keep],
        mtheta=block.mtheta[keep],
        event_index=block.event_index[keep],
        uri=block.uri,
    )
    return good, stats


class _ValidateFn(beam.DoFn):
    def __init__(self, on_bad_event: str, energy_range: tuple[float, float] | None):
        check_on_bad_event(on_bad_event)
        self._on_bad_event = on_bad_event
        self._energy_range = None if energy_range is None else tuple(float(e) for e in energy_range)

    def setup(self):
        self._progress = _Progress("ValidateEvents")

    def process(self, element):
        source_index, block = element
        t0 = time.monotonic()
        block, stats = validate_block(block, self._on_bad_event, self._energy_range)
        self._progress.add(stats["events_read"], time.monotonic() - t0)
        yield beam.pvalue.TaggedOutput(TAG_STATS, stats)
        if len(block):
            yield source_index, block


class ValidateEvents(beam.PTransform):
    """(source_index, EventBlock) -> good blocks (main) and statistics (tag "stats").

    Under on_bad_event="fail" the first bad event raises InputValidationError naming the file,
    dataset and event; under "skip" bad events are dropped and counted by reason.
    """

    def __init__(self, on_bad_event: str = "fail", energy_range: tuple[float, float] | None = None):
        super().__init__()
        self._fn = _ValidateFn(on_bad_event, energy_range)

    def expand(self, blocks):
        return blocks | "CheckEvents" >> beam.ParDo(self._fn).with_outputs(TAG_STATS, main="good")


# ----------------------------------------------------------------------------------------------
# Preprocessing


class _PreprocessFn(beam.DoFn):
    def __init__(self, cfg: dict[str, Any], progress_dir: str | None = None):
        self._cfg = PreprocessConfig.from_dict(cfg)
        self._progress_dir = progress_dir

    def setup(self):
        self._progress = _Progress("PreprocessEvents")
        self._local = None
        if self._progress_dir:
            self._local = (ProgressCounts(self._progress_dir, PROGRESS_PREPROCESSED),
                           ProgressCounts(self._progress_dir, PROGRESS_KEPT))

    def process(self, element):
        source_index, block = element
        t0 = time.monotonic()
        processed, n_low = preprocess_block(block, self._cfg)
        self._progress.add(len(block), time.monotonic() - t0)
        if self._local:
            self._local[0].add(len(block))
            self._local[1].add(len(processed))
        yield beam.pvalue.TaggedOutput(TAG_STATS, {"dropped_low_sum": n_low})
        if len(processed):
            yield source_index, block.uri, processed


class PreprocessEvents(beam.PTransform):
    """(source_index, EventBlock) -> (source_index, uri, ProcessedBlock) and statistics.

    With `progress_dir` (local runs) it also reports its counts there (ProgressCounts).
    """

    def __init__(self, cfg: PreprocessConfig, progress_dir: str | None = None):
        super().__init__()
        self._fn = _PreprocessFn(cfg.to_dict(), progress_dir)

    def expand(self, blocks):
        return blocks | "ThresholdAndPower" >> beam.ParDo(self._fn).with_outputs(TAG_STATS, main="processed")


# ----------------------------------------------------------------------------------------------
# Split, encode


def split_of(file_name: str, event_index: int, test_fraction: float, seed: int, by: str = "event") -> str:
    """Deterministic train/test assignment from a hash (stable across runs, runners, machines).

    Args:
        file_name: The source file's base name (not its location: moving files keeps the split).
        event_index: Index of the event in the file (ignored when by == "file").
        test_fraction: Wanted fraction of test events, in [0, 1].
        seed: Salt: another seed gives another, equally deterministic split.
        by: "event" (each event on its own) or "file" (whole files go to one side).

    Returns:
        "train" or "test".
    """
    if by == "event":
        key = f"{seed}:{file_name}:{int(event_index)}"
    elif by == "file":
        key = f"{seed}:{file_name}"
    else:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {by!r}")
    u = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") / 2.0**64
    return TAG_TEST if u < test_fraction else TAG_TRAIN


def check_split_by(split_by: str) -> None:
    if split_by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")


def assign_splits(block: ProcessedBlock, uri: str, test_fraction: float, seed: int, split_by: str
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """(split of each event of a preprocessed block, statistics: count and histograms per split)."""
    name = uri_lib.basename(uri)
    splits = np.array([split_of(name, i, test_fraction, seed, split_by) for i in block.event_index])
    stats: dict[str, Any] = {}
    for split in manifest_lib.SPLITS:
        mask = splits == split
        stats[f"count:{split}"] = int(mask.sum())
        for key, edges in manifest_lib.HISTOGRAM_EDGES.items():
            stats[f"hist:{split}:{key}"] = manifest_lib.histogram_counts(getattr(block, key)[mask], edges)
    return splits, stats


class _EncodeFn(beam.DoFn):
    def __init__(self, test_fraction: float, seed: int, split_by: str):
        check_split_by(split_by)
        self._test_fraction = float(test_fraction)
        self._seed = int(seed)
        self._split_by = split_by

    def setup(self):
        self._progress = _Progress("EncodeEvents")

    def process(self, element):
        source_index, uri, block = element
        t0 = time.monotonic()
        splits, stats = assign_splits(block, uri, self._test_fraction, self._seed, self._split_by)
        for i in range(len(block)):
            packed = records.pack_event(
                block.ecal[i], block.energy[i], block.theta[i], block.mtheta[i], block.ecal_sum[i],
                block.event_index[i], source_index,
            )
            yield beam.pvalue.TaggedOutput(str(splits[i]), packed)
        self._progress.add(len(block), time.monotonic() - t0)
        yield beam.pvalue.TaggedOutput(TAG_STATS, stats)


class EncodeAndSplit(beam.PTransform):
    """(source_index, uri, ProcessedBlock) -> packed events tagged "train"/"test" + statistics.

    A building block for pipelines that shuffle events (e.g. into WriteToTFRecord): events leave
    as records.pack_event tuples (non-zero cells only) and ExampleCoder turns them into the final
    tf.train.Example bytes in the sink. The conversion itself does not shuffle events: it writes
    them where it reads them (ConvertShardTasks).
    """

    def __init__(self, test_fraction: float, seed: int, split_by: str = "event"):
        super().__init__()
        self._fn = _EncodeFn(test_fraction, seed, split_by)

    def expand(self, processed):
        return processed | "PackEvents" >> beam.ParDo(self._fn).with_outputs(TAG_TRAIN, TAG_TEST, TAG_STATS)


class ExampleCoder(beam.coders.Coder):
    """A TFRecord sink's coder: packed event -> serialized tf.train.Example (dense or sparse).

    The writers call it once per record, so with `progress_dir` (local runs) it is where the
    records written are counted (ProgressCounts).
    """

    def __init__(self, image_shape: tuple[int, ...], encoding: str, progress_dir: str | None = None):
        records.check_encoding(encoding, records.COMPRESSION_NONE)
        self._image_shape = tuple(int(d) for d in image_shape)
        self._encoding = encoding
        self._progress_dir = progress_dir
        self._written = ProgressCounts(progress_dir, PROGRESS_WRITTEN) if progress_dir else None

    def encode(self, value) -> bytes:
        encoded = records.encode_packed(value, self._image_shape, self._encoding)
        if self._written is not None:
            self._written.add(1)
        return encoded

    def decode(self, encoded):
        raise NotImplementedError("ExampleCoder only writes; read records with data_prep.dataset")

    def is_deterministic(self) -> bool:
        return True

    def __eq__(self, other):
        return type(self) is type(other) and (self._image_shape, self._encoding, self._progress_dir) == (
            other._image_shape, other._encoding, other._progress_dir)

    def __hash__(self):
        return hash((type(self), self._image_shape, self._encoding, self._progress_dir))


# ----------------------------------------------------------------------------------------------
# Shard description by reading a shard back (checks; ShardWriter describes while writing)


class _HashingReader:
    """File-object wrapper that hashes and counts every byte read through it."""

    def __init__(self, fh):
        self._fh = fh
        self.digest = hashlib.sha256()
        self.n_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.digest.update(data)
        self.n_bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(8 << 20):
            pass


def describe_shard(path: str, compression: str, progress: ProgressCounts | None = None) -> dict[str, Any]:
    """One pass over a finished shard: split, relative name, record count, bytes, sha256, and the
    order-independent digest of its records (summed per split into the manifest).

    `progress` (local runs) receives the number of records hashed."""
    name = uri_lib.basename(path)
    n_records = 0
    digest = 0
    with uri_lib.open_read(path) as raw:
        reader = _HashingReader(raw)
        for record in records.iter_tfrecord_file(reader, compression):
            n_records += 1
            digest = records.combine_digests(digest, records.record_digest(record))
        reader.drain()
    if progress is not None:
        progress.add(n_records)
    return {
        "split": name.split("-", 1)[0],
        "name": name,
        "records": n_records,
        "bytes": reader.n_bytes,
        "sha256": reader.digest.hexdigest(),
        "records_digest": f"{digest:064x}",
    }


# ----------------------------------------------------------------------------------------------
# The conversion: one task per pair of shards, read -> validate -> preprocess -> encode -> write


class ShardTask(NamedTuple):
    """Shard pair `index` of `n_shards`: the events of `ranges` (read in this order) go to
    train-<index>-of-<n_shards> and test-<index>-of-<n_shards>."""

    index: int
    n_shards: int
    ranges: tuple[EventRange, ...]


def shard_name(split: str, index: int, n_shards: int, compression: str) -> str:
    """`train-00003-of-00041.tfrecord[.gz]`: the names Beam's file sinks give shards."""
    return f"{split}-{index:05d}-of-{n_shards:05d}{records.shard_suffix(compression)}"


class _ConvertTaskFn(beam.DoFn):
    """Converts one ShardTask from start to end inside one worker, one read range at a time.

    No event leaves the worker: the records go straight into the task's two shard files, each
    described (records, bytes, sha256, records digest) while it is written, so the job moves
    only small dicts between steps (nothing waits in a runner's shuffle, nothing is pickled to
    estimate its size) and holds one range of events at a time, whatever the number of events.
    The file names are fixed by the task, so a retried task replaces its own files whole
    (uri.atomic_writer); only the attempt the runner commits is listed.
    """

    def __init__(self, settings: dict[str, Any], progress_dir: str | None = None):
        check_on_bad_event(settings["on_bad_event"])
        check_split_by(settings["split_by"])
        records.check_encoding(settings["encoding"], settings["compression"])
        energy_range = settings["energy_range"]
        self._on_bad_event = settings["on_bad_event"]
        self._energy_range = None if energy_range is None else tuple(float(e) for e in energy_range)
        self._preprocess = PreprocessConfig.from_dict(settings["preprocess"])
        self._test_fraction = float(settings["test_fraction"])
        self._seed = int(settings["seed"])
        self._split_by = settings["split_by"]
        self._encoding = settings["encoding"]
        self._compression = settings["compression"]
        self._staging = settings["staging"]
        self._progress_dir = progress_dir

    def setup(self):
        uri_lib.configure_beam_gcs()
        self._steps = {name: _Progress(name) for name in
                       ("ReadEvents", "ValidateEvents", "PreprocessEvents", "EncodeEvents")}
        self._local = None
        if self._progress_dir:
            self._local = {label: ProgressCounts(self._progress_dir, label)
                           for label in (PROGRESS_PREPROCESSED, PROGRESS_KEPT, PROGRESS_WRITTEN)}

    def process(self, task: ShardTask):
        names = {split: shard_name(split, task.index, task.n_shards, self._compression)
                 for split in manifest_lib.SPLITS}
        stats = empty_stats()
        with contextlib.ExitStack() as files:
            writers = {
                split: records.ShardWriter(
                    files.enter_context(uri_lib.atomic_writer(uri_lib.join(self._staging, name), fsync=False)),
                    self._compression)
                for split, name in names.items()
            }
            for element in task.ranges:
                self._convert_range(element, writers, stats)
            for writer in writers.values():
                writer.close()
        yield beam.pvalue.TaggedOutput(TAG_STATS, stats)
        for split, name in names.items():
            yield writers[split].describe(name)

    def _convert_range(self, element: EventRange, writers: dict[str, records.ShardWriter],
                       stats: dict[str, Any]) -> None:
        t0 = time.monotonic()
        block = read_range(element)
        t1 = time.monotonic()
        self._steps["ReadEvents"].add(len(block), t1 - t0)
        block, block_stats = validate_block(block, self._on_bad_event, self._energy_range)
        _add_stats(stats, block_stats)
        t2 = time.monotonic()
        self._steps["ValidateEvents"].add(block_stats["events_read"], t2 - t1)
        if not len(block):
            return
        processed, n_low = preprocess_block(block, self._preprocess)
        _add_stats(stats, {"dropped_low_sum": n_low})
        t3 = time.monotonic()
        self._steps["PreprocessEvents"].add(len(block), t3 - t2)
        if self._local:
            self._local[PROGRESS_PREPROCESSED].add(len(block))
            self._local[PROGRESS_KEPT].add(len(processed))
        if not len(processed):
            return
        splits, split_stats = assign_splits(processed, block.uri, self._test_fraction, self._seed, self._split_by)
        _add_stats(stats, split_stats)
        for i in range(len(processed)):
            writers[str(splits[i])].write(records.encode_event(
                processed.ecal[i], processed.energy[i], processed.theta[i], processed.mtheta[i],
                processed.ecal_sum[i], processed.event_index[i], element.source_index, self._encoding))
        self._steps["EncodeEvents"].add(len(processed), time.monotonic() - t3)
        if self._local:
            self._local[PROGRESS_WRITTEN].add(len(processed))


class ConvertShardTasks(beam.PTransform):
    """ShardTask -> shard descriptions (main output) and statistics (tag "stats").

    Each task's events are read, validated (on_bad_event "fail" raises InputValidationError
    naming file, dataset and event; "skip" drops and counts by reason), preprocessed, split
    (split_of), encoded and written to the task's train and test shards in `staging`. With
    `progress_dir` (local runs) the counts go there too (ProgressCounts).

    Args:
        settings: on_bad_event, energy_range, preprocess (PreprocessConfig.to_dict()),
            test_fraction, seed, split_by, encoding, compression, staging (folder or gs:// prefix).
        progress_dir: Folder of the local job-wide progress counts, or None.
    """

    def __init__(self, settings: dict[str, Any], progress_dir: str | None = None):
        super().__init__()
        self._fn = _ConvertTaskFn(settings, progress_dir)

    def expand(self, tasks):
        return tasks | "ConvertTask" >> beam.ParDo(self._fn).with_outputs(TAG_STATS, main="shards")


def write_json(value: Any, target: str) -> str:
    """Write a JSON side file from inside the pipeline (read by the driver after the run)."""
    uri_lib.write_text(target, json.dumps(value, sort_keys=True))
    return target
