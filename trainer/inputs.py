"""Training input: the converted dataset distributed over replicas, positioned at the resume step."""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import tensorflow as tf

from trainer.config import TrainConfig

# dataset_fn(input_context, per_replica_batch, start_batch) -> tf.data.Dataset of per-replica
# batches beginning at batch `start_batch` of the pipeline's uninterrupted stream.
DatasetFn = Callable[[tf.distribute.InputContext, int, int], tf.data.Dataset]


def manifest_dataset_fn(config: TrainConfig, global_batch_size: int) -> DatasetFn:
    """Reader over the converted dataset (data_prep.dataset.make_dataset, CONTRACTS §2).

    Every record is read once per epoch across all input pipelines. Each epoch's order follows
    from (config.seed, epoch) alone (data_prep.epoch_order), so a resumed run starts at its
    position without replaying the consumed batches, in time independent of the step;
    config.deterministic adds TF op determinism for bit-identical weights.
    """
    from data_prep.dataset import make_dataset

    def fn(ctx: tf.distribute.InputContext, per_replica: int, start_batch: int = 0) -> tf.data.Dataset:
        return make_dataset(config.data, "train", global_batch_size, input_context=ctx,
                            shuffle=config.shuffle, repeat=True, seed=config.seed,
                            start_batch=start_batch)

    return fn


def _takes_start_batch(dataset_fn: Callable) -> bool:
    """Whether dataset_fn accepts a third argument (start_batch); older two-argument functions
    are still accepted and positioned by replay."""
    try:
        params = inspect.signature(dataset_fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return (any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params)
            or sum(p.kind in positional for p in params) >= 3)


def distributed_input(strategy: tf.distribute.Strategy, dataset_fn: DatasetFn,
                      global_batch_size: int, start_step: int) -> tf.distribute.DistributedDataset:
    """One input pipeline per worker via distribute_datasets_from_function, each starting after
    the `start_step` steps' per-replica batches a resumed run has already consumed (every
    pipeline feeds num_replicas_in_sync / num_input_pipelines replicas per step)."""
    positions = _takes_start_batch(dataset_fn)

    def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        start_batch = start_step * ctx.num_replicas_in_sync // ctx.num_input_pipelines
        if positions:
            return dataset_fn(ctx, per_replica, start_batch)
        ds = dataset_fn(ctx, per_replica)
        return ds.skip(start_batch) if start_batch else ds  # replay: time grows with the step

    return strategy.distribute_datasets_from_function(fn)


def in_memory_dataset_fn(arrays: dict, shuffle_seed: Optional[int] = None) -> DatasetFn:
    """Dataset over in-memory arrays in the CONTRACTS §2 element format (tests, benchmarks).

    Each input pipeline takes its shard of the events, repeats and batches per replica; a
    start_batch is reached by skipping (in memory, nothing to decode).
    """

    def fn(ctx: tf.distribute.InputContext, per_replica: int, start_batch: int = 0) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices(arrays)
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        if shuffle_seed is not None:
            ds = ds.shuffle(4096, seed=shuffle_seed, reshuffle_each_iteration=True)
        ds = ds.repeat().batch(per_replica, drop_remainder=True)
        return ds.skip(start_batch).prefetch(2)

    return fn
