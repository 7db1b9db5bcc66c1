"""Training input: the converted dataset distributed over replicas, positioned at the resume step."""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from trainer.config import TrainConfig

# dataset_fn(input_context, per_replica_batch) -> tf.data.Dataset of per-replica batches
DatasetFn = Callable[[tf.distribute.InputContext, int], tf.data.Dataset]


def manifest_dataset_fn(config: TrainConfig, global_batch_size: int) -> DatasetFn:
    """Reader over the converted dataset (data_prep.dataset.make_dataset, CONTRACTS §2).

    Every record is read once per epoch across all input pipelines. The order follows from
    config.seed alone (seeded shuffles, ordered interleave and decode), which is what makes
    "skip the consumed batches" an exact resume; config.deterministic adds TF op determinism
    for bit-identical weights.
    """
    from data_prep.dataset import make_dataset

    def fn(ctx: tf.distribute.InputContext, per_replica: int) -> tf.data.Dataset:
        return make_dataset(config.data, "train", global_batch_size, input_context=ctx,
                            shuffle=config.shuffle, repeat=True, seed=config.seed)

    return fn


def distributed_input(strategy: tf.distribute.Strategy, dataset_fn: DatasetFn,
                      global_batch_size: int, start_step: int) -> tf.distribute.DistributedDataset:
    """One input pipeline per worker via distribute_datasets_from_function, each skipping the
    `start_step` per-replica batches a resumed run has already consumed."""

    def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        ds = dataset_fn(ctx, per_replica)
        if start_step:
            ds = ds.skip(start_step * ctx.num_replicas_in_sync // ctx.num_input_pipelines)
        return ds

    return strategy.distribute_datasets_from_function(fn)


def in_memory_dataset_fn(arrays: dict, shuffle_seed: Optional[int] = None) -> DatasetFn:
    """Dataset over in-memory arrays in the CONTRACTS §2 element format (tests, benchmarks).

    Each input pipeline takes its shard of the events, repeats and batches per replica.
    """

    def fn(ctx: tf.distribute.InputContext, per_replica: int) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices(arrays)
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        if shuffle_seed is not None:
            ds = ds.shuffle(4096, seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.repeat().batch(per_replica, drop_remainder=True).prefetch(2)

    return fn
