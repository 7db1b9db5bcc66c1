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

    def train_step(self, data):
        logs = gan_step(self.generator, self.discriminator, self.d_optimizer, self.g_optimizer,
                        data, self.step_counter.read_value(), self.settings,
                        self.global_batch_size)
        self.step_counter.assign_add(1)
        # Each value is this replica's share of a global mean: sum it here so every replica
        # returns the global value and fit's per-replica "mean"/"first" reduction is exact.
        ctx = tf.distribute.get_replica_context()
        return {k: ctx.all_reduce(tf.distribute.ReduceOp.SUM, v) for k, v in logs.items()}
