"""Checkpoints: weights, optimizer slots and the step counter under a tf.train.CheckpointManager."""

from __future__ import annotations

import logging
import os

import keras
import tensorflow as tf

log = logging.getLogger(__name__)


def make_checkpoint(generator: keras.Model, discriminator: keras.Model,
                    d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer,
                    step: tf.Variable) -> tf.train.Checkpoint:
    """A checkpoint of everything a bit-exact resume needs.

    The random state is the step counter itself (all draws are stateless functions of seed and
    step) and the input position is derived from it (each epoch's read order is a function of
    seed and epoch, data_prep.epoch_order), so restoring `step` restores both; no iterator
    state (shuffle buffers) is saved.
    Variables are listed explicitly, in creation order, so the layout does not depend on how
    Keras exposes trackable children across versions. Optimizers must be built.
    """
    return tf.train.Checkpoint(
        generator=list(generator.variables),
        discriminator=list(discriminator.variables),
        d_optimizer=list(d_optimizer.variables),
        g_optimizer=list(g_optimizer.variables),
        step=step,
    )


class Checkpointer:
    """CheckpointManager that lets every multi-worker task save (saving is collective) while
    only the chief writes into the real directory; other tasks write to a scratch folder that
    is deleted right after."""

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, keep: int,
                 is_chief: bool = True, task_id: int = 0):
        self.checkpoint = checkpoint
        self.directory = directory
        self.is_chief = is_chief
        self._write_dir = directory if is_chief else os.path.join(directory, f".worker-{task_id}-tmp")
        self.manager = tf.train.CheckpointManager(checkpoint, self._write_dir, max_to_keep=keep)

    def restore_latest(self) -> str | None:
        """Restore the newest checkpoint of the chief's directory; None when there is none."""
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is None:
            return None
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        log.info("resumed from %s", latest)
        return latest

    def save(self, step: int) -> str:
        path = self.manager.save(checkpoint_number=step)
        if not self.is_chief:
            tf.io.gfile.rmtree(self._write_dir)
        return path
