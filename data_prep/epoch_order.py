"""The order one input pipeline reads its records in, epoch after epoch, as a pure function of
(seed, epoch): what lets a resumed run start reading at any record in time independent of how
far training got, instead of replaying every record consumed before.

Epoch e of a pipeline that holds F files (its `ShardPlan`):
1. the files are put in an order drawn from (seed, e) (sorted order when not shuffling);
2. taken in consecutive groups of up to READ_PARALLEL_FILES files, each group read by a
   parallel interleave with one slot per file and one record per turn (round robin, the
   deterministic interleave's order), every file from its start to its end;
3. the epoch's records, in that order, cut into windows of `window` records and each window
   permuted by a draw seeded from (seed, e, window index) (no permutation when not shuffling;
   tf.data's shuffle op draws it, so the process's global TensorFlow seed, which the trainer
   sets from the same seed, takes part as in any seeded tf.data shuffle).
Every epoch is complete before the next begins, and nothing depends on what was read before, so
record k of epoch e is located by arithmetic (`locate`): the groups before it are not opened,
the files of its group are skipped to their offset by TFRecord's skip (it reads each record's
12-byte length header, not the record), and at most one round of the interleave (< group size
records) plus the part of one window before k are read and dropped, undecoded.

Windows replace one running shuffle buffer over the epoch: such a buffer's output depends on
every record that went through it, so it cannot be restarted mid-epoch without replaying the
epoch; a window is a fresh draw, restarted by reading that one window again. Both hold `window`
records (dense 51x51x25 events: 512 x 260 kB = 133 MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

#: Files of one pipeline read in parallel (one interleave group). Also the bound on the files a
#: resume skips into, and on the records (one round robin turn) it reads to realign.
READ_PARALLEL_FILES = 8

_INT64_MAX = np.iinfo(np.int64).max
_ALG = "philox"  # fixed, so eager (resume arithmetic) and tf.data graph draws are the same bits
_FILE_ORDER, _WINDOW = 0, 1  # purposes folded into an epoch's seed


@dataclass(frozen=True)
class ReadPosition:
    """Where reading restarts to deliver record `record` of epoch `epoch` first.

    Attributes:
        epoch: The epoch.
        record: The record of the epoch (0-based, in the epoch's delivered order).
        window: Index of the window holding `record` (the first window re-read).
        group: Index of the interleave group holding the window's first record; earlier
            groups are not opened.
        file_offsets: Per file of the plan (plan order), the records of this pipeline skipped
            at the file's start; nonzero only for the files of `group`.
        drop_read: Records read in `group`'s interleave and dropped to reach the window's
            first record (the part of one round robin turn before it, < group size).
        drop_window: Records of the permuted window dropped before `record`.
    """

    epoch: int
    record: int
    window: int
    group: int
    file_offsets: tuple[int, ...]
    drop_read: int
    drop_window: int

    @property
    def records_skipped(self) -> int:
        """Records of this epoch before `record` skipped by position (groups not opened, file
        offsets): never decoded, and for uncompressed shards never read."""
        return self.record - self.drop_read - self.drop_window


def groups_of(order: np.ndarray, group_size: int = READ_PARALLEL_FILES) -> list[np.ndarray]:
    """The epoch's interleave groups: consecutive runs of `group_size` files of `order`."""
    return [order[i:i + group_size] for i in range(0, len(order), group_size)]


def locate(record: int, epoch: int, kept: list[int], order: np.ndarray, window: int,
           group_size: int = READ_PARALLEL_FILES) -> ReadPosition:
    """Where to restart reading so that record `record` of epoch `epoch` comes first.

    Args:
        record: Record index within the epoch, 0 <= record < sum(kept).
        epoch: The epoch (carried into the position).
        kept: Records this pipeline reads from each file, in plan order.
        order: The epoch's file order (indices into `kept`), as `file_order` draws it.
        window: Window size (1 when not shuffling).
        group_size: Files per interleave group.
    """
    kept_arr = np.asarray(kept, dtype=np.int64)
    total = int(kept_arr.sum())
    if not 0 <= record < total:
        raise ValueError(f"record {record} is outside the epoch's {total} records")
    window_index, drop_window = divmod(record, window)
    first = window_index * window  # first record of the window, in read order
    start = 0
    for g, files in enumerate(groups_of(np.asarray(order), group_size)):
        counts = kept_arr[files]
        if first < start + int(counts.sum()):
            break
        start += int(counts.sum())
    within = first - start
    # Round robin: after `turns` full turns each file has given min(count, turns) records.
    turns_given = np.minimum(counts[None, :], np.arange(int(counts.max()) + 1)[:, None]).sum(axis=1)
    turns = int(np.searchsorted(turns_given, within, side="right")) - 1
    offsets = np.zeros(len(kept_arr), dtype=np.int64)
    offsets[files] = np.minimum(counts, turns)
    return ReadPosition(epoch=int(epoch), record=int(record), window=int(window_index), group=g,
                        file_offsets=tuple(int(o) for o in offsets),
                        drop_read=int(within - turns_given[turns]), drop_window=int(drop_window))


def _epoch_seed(base_seed, epoch):
    import tensorflow as tf

    base = tf.stack([tf.constant(base_seed, tf.int64), tf.constant(0, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64), alg=_ALG)


def file_order(base_seed: int, epoch, n_files: int, shuffle: bool):
    """The epoch's file order (int64 tensor of plan indices): a draw from (seed, epoch)."""
    import tensorflow as tf

    indices = tf.range(n_files, dtype=tf.int64)
    if not shuffle:
        return indices
    seed = tf.random.experimental.stateless_fold_in(_epoch_seed(base_seed, epoch), _FILE_ORDER, alg=_ALG)
    return tf.random.experimental.stateless_shuffle(indices, seed=seed, alg=_ALG)


def file_order_numpy(base_seed: int, epoch: int, n_files: int, shuffle: bool) -> np.ndarray:
    """`file_order` evaluated now (on the host CPU, the device tf.data's graphs run on)."""
    import tensorflow as tf

    with tf.device("CPU:0"):
        return file_order(base_seed, epoch, n_files, shuffle).numpy()


ReadFile = Callable[[Any, Any], Any]  # read_file(path, first_record) -> tf.data.Dataset of records


def record_stream(files: list[str], read_file: ReadFile, stride: int,
                  file_starts: list[int], base_seed: int, shuffle: bool, window: int,
                  deterministic: bool, start: ReadPosition, repeat: bool,
                  group_size: int = READ_PARALLEL_FILES):
    """Serialized records of one pipeline from `start` on, epoch after epoch (or to the end of
    `start.epoch` without `repeat`).

    Args:
        files: The pipeline's files, plan order.
        read_file: read_file(path, first) -> dataset of the file's records from record `first`
            on (TFRecordDataset.skip, then its share when records are dealt by stride).
        stride: Input pipelines sharing each file by record (1 by file).
        file_starts: Per file, the file record of this pipeline's first record.
        base_seed: This pipeline's seed.
        shuffle: Draw file orders and permute windows (else sorted order, no permutation).
        window: Records permuted together.
        deterministic: The interleave's order guarantee (exact positions need True).
        start: Where to start (`locate`).
        repeat: Continue with the following epochs forever.
        group_size: Files per interleave group.
    """
    import tensorflow as tf

    n_files = len(files)
    n_groups = -(-n_files // group_size)
    files_t = tf.constant(files)
    starts_t = tf.constant(file_starts, tf.int64)

    def epoch_records(epoch, first_group, offsets, drop_read):
        order = file_order(base_seed, epoch, n_files, shuffle)

        def group(g):
            idx = order[g * group_size:(g + 1) * group_size]
            skip = tf.where(g == first_group, tf.gather(offsets, idx), tf.zeros_like(idx))
            firsts = tf.gather(starts_t, idx) + skip * stride
            return tf.data.Dataset.from_tensor_slices((tf.gather(files_t, idx), firsts)).interleave(
                read_file, cycle_length=group_size, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)

        return tf.data.Dataset.range(first_group, n_groups).flat_map(group).skip(drop_read)

    def epoch_stream(epoch, first_group, offsets, drop_read, first_window, drop_window):
        ds = epoch_records(epoch, first_group, offsets, drop_read)
        if shuffle and window > 1:
            window_seed = tf.random.experimental.stateless_fold_in(_epoch_seed(base_seed, epoch), _WINDOW, alg=_ALG)

            def permute(index, records):
                # A shuffle buffer as large as the window, seeded for this window: one uniform
                # draw over the window's records, which it holds without copying them.
                seed = tf.random.experimental.stateless_fold_in(window_seed, index, alg=_ALG)
                return records.shuffle(window, seed=seed[0] ^ seed[1], reshuffle_each_iteration=False)

            windows = tf.data.Dataset.zip(tf.data.Dataset.range(first_window, _INT64_MAX), ds.window(window))
            ds = windows.flat_map(permute)
        return ds.skip(drop_window)

    def from_start(epoch):
        first = tf.equal(epoch, start.epoch)  # the start's epoch from its position, later ones whole

        def at(value):
            return tf.where(first, tf.constant(value, tf.int64), tf.zeros_like(tf.constant(value, tf.int64)))

        return epoch_stream(epoch, at(start.group), at(start.file_offsets), at(start.drop_read),
                            at(start.window), at(start.drop_window))

    last = _INT64_MAX if repeat else start.epoch + 1
    return tf.data.Dataset.range(start.epoch, last).flat_map(from_start)
