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


# --- resuming: start_batch restores the position without reading what came before -------------

#: 18 shards: 9 per pipeline when two pipelines deal them by file, so each epoch of each pipeline
#: spans two interleave groups (READ_PARALLEL_FILES = 8) and the resume arithmetic crosses them.
RESUME_SIZES = [2, 3, 4, 5, 2, 3, 4, 5, 6] * 2
RESUME_WINDOW = 5  # shuffle_buffer: windows of 5 records permuted together
RESUME_BATCH = 2  # per pipeline


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp("resumable")), RESUME_SIZES)


def _resume_dataset(folder, ctx, n_pipelines, start_batch=0, shuffle=True):
    return make_dataset(folder, "train", RESUME_BATCH * n_pipelines, input_context=ctx, shuffle=shuffle, seed=7,
                        shuffle_buffer=RESUME_WINDOW, start_batch=start_batch)


def _positions(records_per_epoch: int) -> list[int]:
    """Start batches mid-window, at a window boundary, mid-epoch (second interleave group), at
    the last batch of the epoch, exactly at an epoch boundary, and in epoch 2."""
    per_epoch = records_per_epoch // RESUME_BATCH
    assert records_per_epoch % RESUME_BATCH == 0  # so that some batch starts exactly at an epoch
    return [1, RESUME_WINDOW * 2 // RESUME_BATCH, per_epoch * 2 // 3, per_epoch - 1, per_epoch,
            2 * per_epoch + per_epoch // 2]


@pytest.mark.parametrize("n_pipelines,shuffle", [(1, True), (2, True), (1, False), (3, True)],
                         ids=["1-pipeline", "2-pipelines", "1-pipeline-ordered", "3-pipelines-by-record"])
def test_start_batch_gives_the_uninterrupted_stream_from_there(resumable, n_pipelines, shuffle):
    """The restored stream is the uninterrupted one from the resume point, event id for event id,
    for positions inside windows, at window and epoch boundaries, and epochs later."""
    for ctx in _pipelines(n_pipelines):
        records_per_epoch = plan_shards([(f"train-{k:05d}-of-{len(RESUME_SIZES):05d}.tfrecord", n)
                                         for k, n in enumerate(RESUME_SIZES)], n_pipelines, ctx.input_pipeline_id).records
        if records_per_epoch % RESUME_BATCH:
            continue  # by record, 68 = 23 + 23 + 22: the odd ones are covered by the next pipeline
        positions = _positions(records_per_epoch)
        follow = 12  # batches compared from each start: across a window and an epoch boundary
        uninterrupted = _ids(_resume_dataset(resumable, ctx, n_pipelines, shuffle=shuffle),
                             limit=max(positions + [2 * records_per_epoch // RESUME_BATCH]) + follow)
        for epoch in range(2):  # the stream really is whole epochs, reshuffled when shuffling
            block = uninterrupted[epoch * records_per_epoch:(epoch + 1) * records_per_epoch]
            assert len(set(block)) == records_per_epoch
        assert (uninterrupted[:records_per_epoch] != uninterrupted[records_per_epoch:2 * records_per_epoch]) == shuffle
        for start in positions:
            restored = _ids(_resume_dataset(resumable, ctx, n_pipelines, start, shuffle=shuffle), limit=follow)
            expected = uninterrupted[start * RESUME_BATCH:(start + follow) * RESUME_BATCH]
            assert restored == expected, (n_pipelines, ctx.input_pipeline_id, start)


def _record_spans(path: str) -> list[tuple[int, int]]:
    """(start, length) of each record's payload in a TFRecord file (8-byte length, 4-byte
    length CRC, payload, 4-byte payload CRC)."""
    data = open(path, "rb").read()
    spans, offset = [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 8], "little")
        spans.append((offset + 12, length))
        offset += 12 + length + 4
    return spans


def _corrupt_payloads(path: str, positions: list[int]) -> None:
    """Flip one payload byte of each record at `positions`: reading such a record fails its CRC
    (DataLossError); skipping it by its length header does not."""
    data = bytearray(open(path, "rb").read())
    spans = _record_spans(path)
    for k in positions:
        start, length = spans[k]
        data[start + length // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("n_pipelines", [1, 2, 3], ids=["1-pipeline", "2-pipelines", "3-pipelines-by-record"])
def test_restoring_reads_none_of_the_records_before_the_position(resumable, tmp_path, n_pipelines):
    """Every record a resumed pipeline has no need of (all of epoch 0, and epoch 1 up to its
    last realignment turn) is corrupted on disk: the restored stream is still read without a
    CRC error and equals the uninterrupted one to the end of that epoch (epoch 2 reads them
    again), while a replay (`skip`) fails on the first one."""
    import shutil

    names = sorted(n for n in os.listdir(resumable) if n.endswith(".tfrecord"))
    first_id = np.cumsum([0] + RESUME_SIZES)  # ids are numbered in sorted-name order
    ctx = _pipelines(n_pipelines)[0]
    records_per_epoch = plan_shards(list(zip(names, RESUME_SIZES)), n_pipelines, 0).records
    start = (records_per_epoch + records_per_epoch * 3 // 4) // RESUME_BATCH  # epoch 1, second group
    follow = (2 * records_per_epoch - start * RESUME_BATCH) // RESUME_BATCH  # the rest of epoch 1
    uninterrupted = _ids(_resume_dataset(resumable, ctx, n_pipelines), limit=start + follow)

    # The records read before the start's window, i.e. whole windows of epoch 1 (epoch 0 read
    # them all); in each file this pipeline reads its records in file order, so they are a prefix.
    in_epoch = start * RESUME_BATCH - records_per_epoch
    window_start = records_per_epoch + in_epoch // RESUME_WINDOW * RESUME_WINDOW
    consumed = uninterrupted[records_per_epoch:window_start]
    corrupt = tmp_path / "corrupt"
    shutil.copytree(resumable, corrupt)
    n_corrupted = 0
    for k, name in enumerate(names):
        positions = sorted(i - first_id[k] for i in consumed if first_id[k] <= i < first_id[k + 1])
        if not positions:
            continue
        mine = [p for p in range(RESUME_SIZES[k]) if (first_id[k] + p) % n_pipelines == 0] if n_pipelines == 3 \
            else list(range(RESUME_SIZES[k]))
        assert positions == mine[:len(positions)]  # a prefix of this pipeline's records of the file
        # Everything in the file before the last consumed record (every pipeline's), which the
        # restore skips by header: at most that one record per file is in a realignment turn.
        _corrupt_payloads(str(corrupt / name), list(range(positions[-1])))
        n_corrupted += positions[-1]
    assert n_corrupted >= len(consumed) // 2

    restored = _ids(_resume_dataset(str(corrupt), ctx, n_pipelines, start), limit=follow)
    assert restored == uninterrupted[start * RESUME_BATCH:(start + follow) * RESUME_BATCH]
    with pytest.raises(tf.errors.DataLossError, match="corrupted record"):
        _ids(_resume_dataset(str(corrupt), ctx, n_pipelines).skip(start), limit=follow)
