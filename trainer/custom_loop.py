"""Custom training path: strategy.run inside one tf.function that runs several steps per call."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from trainer.steps import LOG_KEYS, StepSettings, gan_step


class CustomLoop:
    """Runs `n` shared GAN steps per Python call, reducing the logs with strategy.reduce.

    Several steps per call keep the host out of the loop (one dispatch per call instead of one
    per model per step, which is what the original train_on_batch code paid).
    """

    def __init__(self, strategy: tf.distribute.Strategy, generator: keras.Model,
                 discriminator: keras.Model, d_optimizer: keras.optimizers.Optimizer,
                 g_optimizer: keras.optimizers.Optimizer, settings: StepSettings,
                 global_batch_size: int, step: tf.Variable, jit_compile: bool = False):
        self.strategy = strategy
        self.step = step

        def replica_step(batch, step_value):
            return gan_step(generator, discriminator, d_optimizer, g_optimizer, batch,
                            step_value, settings, global_batch_size)

        def all_replicas_step(batch, step_value):
            return strategy.run(replica_step, args=(batch, step_value))

        # As keras does: XLA compiles the call that runs every replica, not the per-replica
        # function (a jitted per-replica function is placed on the first device and cannot
        # reach the other replicas' variables).
        self._all_replicas_step = (tf.function(all_replicas_step, jit_compile=True)
                                   if jit_compile else all_replicas_step)
        self._multi_step = tf.function(self._steps)

    def _steps(self, iterator, n: tf.Tensor) -> tf.Tensor:
        totals = tf.zeros([len(LOG_KEYS)], tf.float32)
        for _ in tf.range(n):
            batch = next(iterator)
            per_replica = self._all_replicas_step(batch, self.step.read_value())
            reduced = [self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None)
                       for k in LOG_KEYS]
            totals += tf.stack(reduced)
            self.step.assign_add(1)
        return totals / tf.cast(n, tf.float32)

    def run(self, iterator, n: int) -> dict[str, float]:
        """Run `n` steps from `iterator` (a distributed iterator); mean logs over those steps."""
        values = self._multi_step(iterator, tf.constant(int(n), tf.int64))
        return dict(zip(LOG_KEYS, np.asarray(values, dtype=np.float64).tolist()))
