"""Built-in training path: the 3DGAN as a keras.Model whose train_step is the shared step."""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer.steps import StepSettings, gan_step


class GAN(keras.Model):
    """Generator + discriminator trained with `compile`/`fit` (steps_per_execution, jit_compile).

    The step counter is passed in (not created here) so fit and the custom loop share one
    variable and one checkpoint layout; it keys every random draw of the step.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, settings: StepSettings,
                 global_batch_size: int, step: tf.Variable, **kwargs):
        super().__init__(name=kwargs.pop("name", "gan"), **kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.settings = settings
        self.global_batch_size = int(global_batch_size)
        self.step_counter = step
        self.built = True

    def compile(self, d_optimizer: keras.optimizers.Optimizer,
                g_optimizer: keras.optimizers.Optimizer, steps_per_execution: int = 1,
                jit_compile: bool = False) -> None:
        """Attach the two optimizers (already built on their variables) and loop options."""
        super().compile(steps_per_execution=steps_per_execution, jit_compile=jit_compile)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def make_train_function(self, force: bool = False):
        """One call runs steps_per_execution steps and returns the MEAN of their logs.

        Keras' own multi-step function returns the last step's logs; the custom loop (and so
        timings.jsonl, the progress line and TensorBoard) reports the mean over the call, so
        both paths log the same quantity. The loop is a plain tf.range over exactly
        steps_per_execution steps: Keras 3 wraps each step in a tf.cond inside a
        tf.while_loop, and with several replicas the optimizer's merge_call inside that cond
        fails ("You must feed a value for placeholder tensor", keras-team/keras#19246).
        train() therefore asks fit for a multiple of steps_per_execution steps.
        """
        strategy = self.distribute_strategy
        k = int(self.steps_per_execution)
        if k == 1:
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        def all_replicas_step(data):
            return strategy.run(self.train_step, args=(data,))

        if self.jit_compile:  # as keras: XLA compiles the call over all replicas
            all_replicas_step = tf.function(all_replicas_step, jit_compile=True)

        def one_step(data):
            per_replica = all_replicas_step(data)
            # Values are already summed over replicas: take the first replica's copy.
            return {key: strategy.experimental_local_results(v)[0]
                    for key, v in per_replica.items()}

        @tf.function
        def multi_step(iterator):
            totals = one_step(next(iterator))
            for _ in tf.range(k - 1):
                logs = one_step(next(iterator))
                totals = {key: totals[key] + logs[key] for key in totals}
            return {key: value / float(k) for key, value in totals.items()}

        self.train_function = multi_step
        return multi_step

    def train_step(self, data):
        logs = gan_step(self.generator, self.discriminator, self.d_optimizer, self.g_optimizer,
                        data, self.step_counter.read_value(), self.settings,
                        self.global_batch_size)
        self.step_counter.assign_add(1)
        # Each value is this replica's share of a global mean: sum it here so every replica
        # returns the global value and fit's per-replica "mean"/"first" reduction is exact.
        ctx = tf.distribute.get_replica_context()
        return {k: ctx.all_reduce(tf.distribute.ReduceOp.SUM, v) for k, v in logs.items()}
