"""tf.data input pipeline over a converted dataset: sharding, parallel interleave, batched decode."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

import numpy as np

from data_prep import manifest as manifest_lib
from data_prep import records
from data_prep import uri as uri_lib
from data_prep.manifest import Manifest

_LOG = logging.getLogger(__name__)

DEFAULT_SHUFFLE_BUFFER = 512  # events; a dense 51x51x25 event is 260 kB, so ~130 MB of buffer


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


def make_dataset(
    manifest_uri: str,
    split: str,
    global_batch_size: int,
    input_context=None,
    shuffle: bool = True,
    repeat: bool = True,
    deterministic: bool | None = None,
    seed: int = 0,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    drop_remainder: bool = True,
    stage_dir: str | None = None,
):
    """Build the tf.data pipeline of one split, batched per replica.

    Args:
        manifest_uri: Dataset folder or its manifest.json, local or gs://.
        split: "train" or "test".
        global_batch_size: Batch over all replicas; with `input_context` each pipeline batches
            input_context.get_per_replica_batch_size(global_batch_size).
        input_context: tf.distribute.InputContext (from distribute_datasets_from_function).
            With as many shards as input pipelines each pipeline reads its own files
            (sharding by file); with fewer, each reads every file and keeps every n-th record.
        shuffle: Shuffle file order and records (training).
        repeat: Repeat forever (training).
        deterministic: Order guarantee of the parallel interleave and decode. None means
            "not shuffle": training takes records as soon as any file delivers them, evaluation
            keeps a reproducible order.
        seed: Shuffle seed (offset by the input pipeline id so pipelines differ).
        shuffle_buffer: Records held for shuffling.
        drop_remainder: Drop a last partial batch (static batch shape, as TPUs need).
        stage_dir: Local folder to copy shards into first. Used automatically (a temporary
            folder) for gs:// when STORAGE_EMULATOR_HOST is set, since TensorFlow cannot read an
            emulator; otherwise TensorFlow reads local paths and gs:// directly.

    Returns:
        tf.data.Dataset of dicts {"ecal": (B, X, Y, Z), "energy", "theta", "mtheta",
        "ecal_sum": (B,)}, all float32.

    Raises:
        ValueError: bad split or batch size, or a split without shards.
    """
    import tensorflow as tf

    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size!r}")
    manifest = read_manifest(manifest_uri)
    files = shard_uris(manifest_uri, split, manifest)
    if not files or manifest.counts.get(split, 0) == 0:
        raise ValueError(f"dataset {manifest_uri} has no {split!r} records (counts {manifest.counts})")
    if deterministic is None:
        deterministic = not shuffle

    n_pipelines, pipeline_id, batch = 1, 0, int(global_batch_size)
    if input_context is not None:
        n_pipelines = int(input_context.num_input_pipelines)
        pipeline_id = int(input_context.input_pipeline_id)
        batch = int(input_context.get_per_replica_batch_size(global_batch_size))
    by_file = len(files) >= n_pipelines
    if by_file and n_pipelines > 1:
        files = files[pipeline_id::n_pipelines]

    if not all(tf_can_read(f) for f in files) or stage_dir is not None:
        if stage_dir is None:
            stage_dir = tempfile.mkdtemp(prefix="caloforge-shards-")
            _LOG.info("TensorFlow cannot read %s (emulator); staging shards locally", manifest_uri)
        files = stage_shards(files, manifest, stage_dir)

    compression = records.tf_compression_type(manifest.compression)
    image_shape = tuple(int(d) for d in manifest.image_shape)
    encoding = manifest.encoding

    file_ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        file_ds = file_ds.shuffle(len(files), seed=seed + pipeline_id, reshuffle_each_iteration=True)
    ds = file_ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression, buffer_size=8 << 20),
        cycle_length=max(1, min(len(files), 8)),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if not by_file and n_pipelines > 1:
        ds = ds.shard(n_pipelines, pipeline_id)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed + pipeline_id, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
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
