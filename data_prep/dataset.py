"""tf.data input pipeline over a converted dataset: sharding, parallel interleave, batched decode."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_prep import epoch_order
from data_prep import manifest as manifest_lib
from data_prep import records
from data_prep import uri as uri_lib
from data_prep.manifest import Manifest

_LOG = logging.getLogger(__name__)

DEFAULT_SHUFFLE_BUFFER = 512  # events permuted together; a dense 51x51x25 event is 260 kB: ~130 MB held


def read_manifest(uri: str) -> Manifest:
    """Load a dataset's manifest from its folder or manifest.json URI (local or gs://).

    Raises:
        FileNotFoundError: when there is no manifest.json (then there is no finished dataset).
        ValueError: when the manifest is unreadable.
    """
    return manifest_lib.load_manifest(uri)


def shard_uris(manifest_uri: str, split: str, manifest: Manifest | None = None) -> list[str]:
    """Full URIs of one split's shards, sorted."""
    manifest = manifest or read_manifest(manifest_uri)
    folder = manifest_lib.dataset_dir(manifest_uri)
    return [uri_lib.join(folder, name) for name in manifest.shard_names(split)]


def tf_can_read(uri: str) -> bool:
    """Whether TensorFlow's own filesystems can read `uri`.

    TensorFlow's gs:// filesystem always talks to the real Google endpoint; it has no setting for
    an emulator. So when STORAGE_EMULATOR_HOST is set, gs:// shards are staged locally first.
    """
    return not (uri_lib.is_gcs(uri) and uri_lib.emulator_host())


def stage_shards(uris: list[str], manifest: Manifest, stage_dir: str) -> list[str]:
    """Copy shards to a local folder through the uri layer, checking each sha256 from the manifest.

    Args:
        uris: Shard URIs (gs:// or local).
        manifest: The dataset manifest (for the expected checksums).
        stage_dir: Local folder to copy into; a shard already there with the right checksum is
            reused.

    Returns:
        The local paths, in the order of `uris`.

    Raises:
        ValueError: when a copied shard's sha256 differs from the manifest's.
    """
    expected = {s["name"]: s["sha256"] for s in manifest.shards}
    os.makedirs(stage_dir, exist_ok=True)
    t0 = time.monotonic()
    out = []
    n_bytes = 0
    for uri in uris:
        name = uri_lib.basename(uri)
        local = os.path.join(stage_dir, name)
        if not (os.path.exists(local) and uri_lib.sha256(local) == expected[name]):
            uri_lib.download_file(uri, local)
            digest = uri_lib.sha256(local)
            if digest != expected[name]:
                os.remove(local)
                raise ValueError(f"shard {uri}: sha256 {digest} differs from the manifest's {expected[name]}")
        n_bytes += os.path.getsize(local)
        out.append(local)
    seconds = time.monotonic() - t0
    _LOG.info("staged %d shards (%.1f MB) in %.1f s (%.1f MB/s) to %s", len(out), n_bytes / 1e6, seconds,
              n_bytes / 1e6 / max(seconds, 1e-9), stage_dir)
    return out


#: Sharding by file is used when whole files can be dealt to the input pipelines so that their
#: record counts differ by at most this share of the largest; otherwise records are dealt.
FILE_SHARDING_TOLERANCE = 0.01


@dataclass(frozen=True)
class ShardPlan:
    """What one input pipeline reads in each epoch.

    Attributes:
        by_file: True when this pipeline reads whole files of its own; False when every pipeline
            reads every file and keeps its share of the records.
        names: The shard names this pipeline opens, in sorted order.
        skips: Per name, the records to skip at the start of the file before keeping every
            `stride`-th one (all 0 when sharding by file).
        stride: 1 by file; the number of input pipelines by record.
        records: Records this pipeline yields per epoch (from the manifest's per-shard counts).
        kept: Per name, the records this pipeline reads from it (they sum to `records`).
    """

    by_file: bool
    names: tuple[str, ...]
    skips: tuple[int, ...]
    stride: int
    records: int
    kept: tuple[int, ...]


def _deal_files(counts: list[int], n_pipelines: int) -> list[int] | None:
    """The pipeline of each file, or None when whole files cannot be dealt evenly enough.

    Largest file first to the least loaded pipeline (ties: the earlier file, the lower pipeline
    id): a pure function of the manifest, so every pipeline computes the same assignment.
    """
    owner = [0] * len(counts)
    loads = [0] * n_pipelines
    for k in sorted(range(len(counts)), key=lambda k: (-counts[k], k)):
        p = min(range(n_pipelines), key=lambda p: (loads[p], p))
        owner[k] = p
        loads[p] += counts[k]
    if min(loads) == 0 or max(loads) - min(loads) > FILE_SHARDING_TOLERANCE * max(loads):
        return None
    return owner


def plan_shards(shards: list[tuple[str, int]], n_pipelines: int, pipeline_id: int) -> ShardPlan:
    """Which records input pipeline `pipeline_id` of `n_pipelines` reads, so that every record
    of the split is read by exactly one pipeline in every epoch.

    Rule: shard by file when whole files can be dealt to the pipelines with record counts within
    FILE_SHARDING_TOLERANCE of each other (each pipeline then reads only its files); otherwise
    shard by record: the records, numbered in sorted-name order across files, go round robin
    (record g to pipeline g mod n), so the pipelines' counts differ by at most one, at the price
    of every pipeline reading every file. The split is fixed by the manifest alone, before any
    shuffling, and inside each file by position: it holds whatever order the files are read in,
    whatever seed each pipeline shuffles with, and with a non-deterministic interleave.

    Args:
        shards: (name, record count) of the split's shards, from the manifest.
        n_pipelines: Number of input pipelines (tf.distribute.InputContext.num_input_pipelines).
        pipeline_id: This pipeline's id, 0 <= pipeline_id < n_pipelines.

    Raises:
        ValueError: on a pipeline id outside [0, n_pipelines).
    """
    if n_pipelines < 1 or not 0 <= pipeline_id < n_pipelines:
        raise ValueError(f"input pipeline id {pipeline_id} is not in [0, {n_pipelines})")
    shards = sorted(shards)
    counts = [int(count) for _, count in shards]
    owner = _deal_files(counts, n_pipelines)
    if owner is not None:
        mine = [k for k in range(len(shards)) if owner[k] == pipeline_id]
        return ShardPlan(True, tuple(shards[k][0] for k in mine), (0,) * len(mine), 1,
                         sum(counts[k] for k in mine), tuple(counts[k] for k in mine))
    names, skips, kept = [], [], []
    offset = 0
    for (name, count) in shards:
        skip = (pipeline_id - offset) % n_pipelines  # first record g of this file with g % n == id
        if skip < count:
            names.append(name)
            skips.append(skip)
            kept.append((count - skip + n_pipelines - 1) // n_pipelines)
        offset += count
    total = sum(counts)
    return ShardPlan(False, tuple(names), tuple(skips), n_pipelines,
                     (total - pipeline_id + n_pipelines - 1) // n_pipelines, tuple(kept))


def _pipeline_seed(seed: int | None, pipeline_id: int) -> int | None:
    """Each pipeline shuffles its own records with its own seed (the split does not depend on it)."""
    return None if seed is None else int(seed) + pipeline_id


def make_dataset(
    manifest_uri: str,
    split: str,
    global_batch_size: int,
    input_context=None,
    shuffle: bool = True,
    repeat: bool = True,
    deterministic: bool | None = None,
    seed: int | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    drop_remainder: bool = True,
    stage_dir: str | None = None,
    start_batch: int = 0,
):
    """Build the tf.data pipeline of one split, batched per replica.

    Args:
        manifest_uri: Dataset folder or its manifest.json, local or gs://.
        split: "train" or "test".
        global_batch_size: Batch over all replicas; with `input_context` each pipeline batches
            input_context.get_per_replica_batch_size(global_batch_size).
        input_context: tf.distribute.InputContext (from distribute_datasets_from_function).
            Across all input pipelines every record is read exactly once per epoch
            (`plan_shards`: by file when the files deal evenly, by record otherwise).
        shuffle: Shuffle file order and records (training): each epoch's order is drawn from
            (seed, epoch) alone (`data_prep.epoch_order`). Unshuffled, files are read in
            sorted order, up to READ_PARALLEL_FILES at a time, round robin.
        repeat: Repeat forever (training); each epoch is complete before the next begins.
        deterministic: Order guarantee of the parallel interleave and decode. None means: True
            when a seed is given or when not shuffling (evaluation), else False (training
            without a seed takes records as soon as any file delivers them). False together
            with a seed is refused: a seed promises a reproducible order.
        seed: Shuffle seed. Given, the same seed gives the same order on every run (the
            interleave and decode are then deterministic); None shuffles differently each run.
            Each pipeline shuffles with seed + its id.
        shuffle_buffer: Records permuted together (consecutive windows of the epoch's read
            order, each permuted by its own draw; it is what a shuffle buffer of this size
            would hold, and unlike one it can be restarted mid-epoch).
        drop_remainder: Drop a last partial batch (static batch shape, as TPUs need).
        stage_dir: Local folder to copy shards into first. Used automatically (a temporary
            folder) for gs:// when STORAGE_EMULATOR_HOST is set, since TensorFlow cannot read an
            emulator; otherwise TensorFlow reads local paths and gs:// directly.
        start_batch: Begin at this batch of the uninterrupted stream (a resumed run's
            consumed batches): the same batches as `.skip(start_batch)`, with a seed, but in
            time independent of `start_batch`: whole files before the position are not
            opened, the open ones are skipped to it by TFRecord headers, and at most one
            interleave turn plus one window are read (undecoded) to realign.

    Returns:
        tf.data.Dataset of dicts {"ecal": (B, X, Y, Z), "energy", "theta", "mtheta",
        "ecal_sum": (B,)}, all float32.

    Raises:
        ValueError: bad split or batch size, a split without shards, or deterministic=False
            with a seed.
    """
    import tensorflow as tf

    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size!r}")
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch!r}")
    if seed is not None and deterministic is False:
        raise ValueError(f"make_dataset: seed={seed!r} asks for a reproducible order, which "
                         "deterministic=False cannot give; pass seed=None or leave deterministic unset")
    manifest = read_manifest(manifest_uri)
    names = manifest.shard_names(split)
    uris = dict(zip(names, shard_uris(manifest_uri, split, manifest)))
    if not names or manifest.counts.get(split, 0) == 0:
        raise ValueError(f"dataset {manifest_uri} has no {split!r} records (counts {manifest.counts})")
    if deterministic is None:
        deterministic = seed is not None or not shuffle

    n_pipelines, pipeline_id, batch = 1, 0, int(global_batch_size)
    if input_context is not None:
        n_pipelines = int(input_context.num_input_pipelines)
        pipeline_id = int(input_context.input_pipeline_id)
        batch = int(input_context.get_per_replica_batch_size(global_batch_size))
    records_per_shard = {s["name"]: int(s["records"]) for s in manifest.shards if s["split"] == split}
    plan = plan_shards([(name, records_per_shard[name]) for name in names], n_pipelines, pipeline_id)
    if plan.records == 0:
        raise ValueError(f"dataset {manifest_uri}: {split!r} has {manifest.counts[split]} records, fewer than "
                         f"the {n_pipelines} input pipelines; use fewer hosts or a larger dataset")
    _LOG.info("input pipeline %d of %d reads %d records per epoch from %d of %d shards (sharded by %s)",
              pipeline_id, n_pipelines, plan.records, len(plan.names), len(names),
              "file" if plan.by_file else "record")
    files = [uris[name] for name in plan.names]

    if not all(tf_can_read(f) for f in files) or stage_dir is not None:
        if stage_dir is None:
            stage_dir = tempfile.mkdtemp(prefix="caloforge-shards-")
            _LOG.info("TensorFlow cannot read %s (emulator); staging shards locally", manifest_uri)
        files = stage_shards(files, manifest, stage_dir)

    compression = records.tf_compression_type(manifest.compression)
    image_shape = tuple(int(d) for d in manifest.image_shape)
    encoding = manifest.encoding
    stride = plan.stride

    def read_file(path, first):
        ds = tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=8 << 20)
        ds = ds.skip(first)  # by length header: the skipped records are not read (uncompressed)
        return ds.shard(stride, 0) if stride > 1 else ds

    window = max(1, int(shuffle_buffer)) if shuffle else 1
    pipeline_seed = _pipeline_seed(seed, pipeline_id)
    if pipeline_seed is None:  # no seed: a fresh order every run
        pipeline_seed = int.from_bytes(os.urandom(4), "little")
    first_record = int(start_batch) * batch
    epoch, record = divmod(first_record, plan.records)
    order = epoch_order.file_order_numpy(pipeline_seed, epoch, len(files), shuffle)
    start = epoch_order.locate(record, epoch, list(plan.kept), order, window)
    if first_record:
        _LOG.info("input pipeline %d starts at batch %d: epoch %d, record %d of %d; %d records skipped by "
                  "position (%d of %d interleave groups not opened), %d read and dropped to realign",
                  pipeline_id, start_batch, epoch, record, plan.records, start.records_skipped, start.group,
                  len(epoch_order.groups_of(order)), start.drop_read + start.drop_window)
    ds = epoch_order.record_stream(files, read_file, stride, list(plan.skips), pipeline_seed, shuffle, window,
                                   deterministic, start, repeat)
    if not repeat and epoch > 0:
        ds = ds.take(0)  # the start lies past the only epoch
    ds = ds.batch(batch, drop_remainder=drop_remainder)
    ds = ds.map(
        lambda serialized: records.parse_batch(serialized, image_shape, encoding),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def load_split_numpy(manifest_uri: str, split: str, max_events: int | None = None) -> dict[str, np.ndarray]:
    """A whole split (or its first max_events records, in a fixed order) as numpy arrays.

    For the evaluator: same decoding as training, no shuffling, no repetition, nothing dropped.

    Returns:
        {"ecal": (N, X, Y, Z), "energy", "theta", "mtheta", "ecal_sum": (N,)} float32.
    """
    manifest = read_manifest(manifest_uri)
    total = int(manifest.counts.get(split, 0))
    want = total if max_events is None else min(total, int(max_events))
    ds = make_dataset(manifest_uri, split, global_batch_size=256, shuffle=False, repeat=False,
                      deterministic=True, drop_remainder=False)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in records.OUTPUT_KEYS}
    n = 0
    for batch in ds:
        for key in records.OUTPUT_KEYS:
            parts[key].append(batch[key].numpy())
        n += int(batch["energy"].shape[0])
        if n >= want:
            break
    image_shape = tuple(int(d) for d in manifest.image_shape)
    out: dict[str, Any] = {}
    for key in records.OUTPUT_KEYS:
        if parts[key]:
            out[key] = np.concatenate(parts[key])[:want]
        else:
            out[key] = np.zeros((0, *image_shape) if key == "ecal" else (0,), np.float32)
    return out
