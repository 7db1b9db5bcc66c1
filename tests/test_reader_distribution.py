"""The reader under distribution: every record exactly once per epoch across input pipelines, for
any number of pipelines and shards; and a seed that reproduces the order by itself.

Tiny datasets (2x2x2 images) written with the project's record encoder and manifest writer; each
record's `energy` is its event id (a small integer, exact in float32), so events are compared
as integers, not as measured floats.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from data_prep import manifest as manifest_lib
from data_prep import records
from data_prep.dataset import FILE_SHARDING_TOLERANCE, make_dataset, plan_shards

IMAGE_SHAPE = (2, 2, 2)
N_RECORDS = 23  # prime: no pipeline count divides it, so shares differ by one
SHARD_COUNTS = (1, 4, 7)
PIPELINE_COUNTS = (1, 2, 3, 4, 6, 8)


def _split_sizes(total: int, n_shards: int) -> list[int]:
    """Uneven shard sizes summing to total (as Beam's shards are), none empty."""
    weights = np.arange(1, n_shards + 1, dtype=float)
    sizes = np.maximum(1, np.floor(total * weights / weights.sum())).astype(int)
    sizes[-1] += total - sizes.sum()
    return sizes.tolist()


def write_dataset(folder: str, sizes: list[int], split: str = "train") -> str:
    """A dataset whose record i has energy == i, spread over shards of the given sizes."""
    os.makedirs(folder, exist_ok=True)
    shards, digests, event_id = [], [], 0
    for k, size in enumerate(sizes):
        name = f"{split}-{k:05d}-of-{len(sizes):05d}.tfrecord"
        path = os.path.join(folder, name)
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(size):
                image = np.full(IMAGE_SHAPE, event_id + 1, np.float32)
                record = records.encode_event(image, float(event_id), 1.5, 1.5, float(image.sum()), event_id, 0)
                writer.write(record)
                digests.append(records.record_digest(record))
                event_id += 1
        shards.append({"split": split, "name": name, "records": size, "bytes": os.path.getsize(path), "sha256": "-"})
    manifest = manifest_lib.Manifest(
        image_shape=list(IMAGE_SHAPE), encoding="dense", compression="none", counts={split: event_id},
        shards=shards, preprocessing={}, split={}, events_read=event_id, bad_events={}, dropped_low_sum=0,
        histograms={}, records_digest={split: format(records.combine_digests(*digests), "x")}, sources=[],
        versions={}, config={}, seed=0,
    )
    manifest_lib.write_manifest(manifest.with_content_hash(), folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One dataset of N_RECORDS records per shard count, written once for the module."""
    root = tmp_path_factory.mktemp("tiny")
    return {n: write_dataset(str(root / f"shards{n}"), _split_sizes(N_RECORDS, n)) for n in SHARD_COUNTS}


def _ids(ds, limit: int | None = None) -> list[int]:
    energies = [float(e) for batch in (ds if limit is None else ds.take(limit)) for e in batch["energy"].numpy()]
    ids = [int(e) for e in energies]
    assert energies == [float(i) for i in ids]  # ids round-trip exactly
    return ids


def _pipelines(n: int):
    return [tf.distribute.InputContext(num_input_pipelines=n, input_pipeline_id=i, num_replicas_in_sync=n)
            for i in range(n)]


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_every_record_once_per_epoch_for_any_pipelines_and_shards(tiny, shuffle):
    """36 combinations, iterated in one process: the union of the pipelines' epoch is the split."""
    failures = []
    for n_shards, folder in tiny.items():
        for n_pipelines in PIPELINE_COUNTS:
            parts = [_ids(make_dataset(folder, "train", n_pipelines, input_context=ctx, shuffle=shuffle,
                                       repeat=False, drop_remainder=False, shuffle_buffer=8))
                     for ctx in _pipelines(n_pipelines)]
            union = sorted(i for part in parts for i in part)
            sizes = [len(part) for part in parts]
            if union != list(range(N_RECORDS)) or max(sizes) - min(sizes) > max(1, FILE_SHARDING_TOLERANCE * max(sizes)):
                failures.append((n_shards, n_pipelines, sizes, len(union), len(set(union))))
    assert not failures, f"(shards, pipelines, records per pipeline, read, distinct): {failures}"


def test_each_epoch_is_exact_when_repeating(tiny):
    """With repeat and shuffling, epoch e of every pipeline together is the split, for e = 0, 1, 2."""
    for n_shards, n_pipelines in ((4, 3), (7, 2), (1, 4), (4, 6)):
        per_pipeline = []
        for ctx in _pipelines(n_pipelines):
            share = len(_ids(make_dataset(tiny[n_shards], "train", n_pipelines, input_context=ctx, shuffle=False,
                                          repeat=False, drop_remainder=False)))
            stream = _ids(make_dataset(tiny[n_shards], "train", n_pipelines, input_context=ctx, shuffle=True,
                                       repeat=True, seed=3, shuffle_buffer=8), limit=3 * share)
            per_pipeline.append([stream[e * share:(e + 1) * share] for e in range(3)])
        for epoch in range(3):
            union = sorted(i for epochs in per_pipeline for i in epochs[epoch])
            assert union == list(range(N_RECORDS)), (n_shards, n_pipelines, epoch)
        assert per_pipeline[0][0] != per_pipeline[0][1]  # reshuffled each epoch


def test_plan_rule_by_file_when_files_deal_evenly_else_by_record():
    even = [(f"train-{k}", 100) for k in range(8)]
    assert all(plan_shards(even, 4, p).by_file and plan_shards(even, 4, p).records == 200 for p in range(4))
    # 8 equal files over 3 pipelines cannot be dealt evenly: by record, shares 267/267/266
    plans = [plan_shards(even, 3, p) for p in range(3)]
    assert not any(p.by_file for p in plans) and [p.records for p in plans] == [267, 267, 266]
    # uneven files that deal evenly (largest first): by file, whatever the count of files
    assert plan_shards([("a", 300), ("b", 100), ("c", 100), ("d", 100)], 2, 0).by_file
    with pytest.raises(ValueError, match="pipeline id 2"):
        plan_shards(even, 2, 2)


def test_more_pipelines_than_records_is_refused(tiny):
    ctx = _pipelines(N_RECORDS + 1)[-1]
    with pytest.raises(ValueError, match="fewer than the 24 input pipelines"):
        make_dataset(tiny[4], "train", N_RECORDS + 1, input_context=ctx)


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    """8 shards: the interleave reads up to 8 files in parallel."""
    return write_dataset(str(tmp_path_factory.mktemp("parallel")), [40] * 8)


def test_a_seed_alone_reproduces_the_order(parallel):
    """No deterministic=True: a seed must still give the same order, with parallel interleave and decode."""
    def order(seed):
        return _ids(make_dataset(parallel, "train", 8, seed=seed, repeat=False, shuffle_buffer=4))

    first = order(5)
    assert sorted(first) == list(range(320))
    for _ in range(3):
        assert order(5) == first
    assert order(6) != first
    with pytest.raises(ValueError, match="seed=5 asks for a reproducible order"):
        make_dataset(parallel, "train", 8, seed=5, deterministic=False)
