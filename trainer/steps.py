"""The one 3DGAN training step (D on real, D on fake, G twice), shared by fit and the custom loop."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from trainer.losses import LOSS_PARTS, per_example_losses

# Keys of the dict a step returns; every value is this replica's share of a global-batch mean,
# so summing over replicas gives the global value.
LOG_KEYS = (
    "d_loss", "d_real", "d_fake",
    "g_loss", "g_bce", "g_energy", "g_angle", "g_ecal_sum",
    "fake_ecal_sum", "real_flipped", "fake_flipped",
)


@dataclass(frozen=True)
class StepSettings:
    """Constants of the step, taken from TrainConfig and the preset."""

    seed: int
    latent_dim: int
    angle_key: str = "mtheta"
    energy_scale: float = 100.0
    loss_weights: tuple[float, float, float, float] = (3.0, 0.1, 25.0, 0.1)
    label_flip_prob: float = 0.05
    generator_updates: int = 2
    power: float = 0.85
    d_mode_in_g_update: str = "train"


def step_keys(seed: int, step: tf.Tensor, n: int) -> list[tf.Tensor]:
    """`n` independent stateless seeds for (run seed, step, replica).

    Deriving all randomness from the step counter makes it part of the checkpoint for free and
    draws fresh values in the graph every step (the published code drew its label flips with
    numpy at trace time, freezing them).
    """
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    key = tf.constant([seed & 0x7FFFFFFF, 0x3D6A], tf.int32)
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64))
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(replica, tf.int64))
    return [tf.random.experimental.stateless_fold_in(key, i) for i in range(n)]


def _latent(conditions: tf.Tensor, latent_dim: int, key: tf.Tensor) -> tf.Tensor:
    noise = tf.random.stateless_normal([tf.shape(conditions)[0], latent_dim - 2], seed=key)
    return tf.concat([conditions, noise], axis=1)


def gan_step(generator: keras.Model, discriminator: keras.Model,
             d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer,
             batch: dict[str, tf.Tensor], step: tf.Tensor, settings: StepSettings,
             global_batch_size: int) -> dict[str, tf.Tensor]:
    """Run one 3DGAN step on this replica's share of the batch. Call in replica context.

    Order and modes as in the published 3DGAN training step:
    1. fakes from the generator in inference mode (its BatchNorm uses the moving statistics),
       with the real batch's energies and angles;
    2. D update on the real batch, labels 1 flipped to 0 with probability label_flip_prob;
    3. D update on the fakes, labels 0 flipped to 1 with the same probability (drawn apart);
    4. `generator_updates` G updates with fresh noise and target "real", through D whose
       weights are not updated but which runs in training mode by default (batch statistics,
       dropout; its BatchNorm moving statistics keep updating, as published) or, with
       d_mode_in_g_update="inference", in inference mode.

    Args:
        batch: dict with ecal (B, X, Y, Z), energy, theta, mtheta, ecal_sum (B,).
        step: Global step counter (int64 scalar) before this step; keys all randomness.
        global_batch_size: Per-replica batch x replicas: the denominator of every loss.

    Returns:
        dict over LOG_KEYS of this replica's share of each global-batch mean.
    """
    w = settings.loss_weights
    g_updates = settings.generator_updates
    # Key layout (kept stable so a given step draws the same numbers as before this change
    # wherever a draw already existed): 0 fake noise, 1 real flips, 2-3 D dropout,
    # 4.. G noise, then fake flips, then D dropout during each G update.
    keys = step_keys(settings.seed, step, 5 + 2 * g_updates)
    images = tf.cast(batch["ecal"], tf.float32)[..., None]
    energy = tf.cast(batch["energy"], tf.float32) / settings.energy_scale
    angle = tf.cast(batch[settings.angle_key], tf.float32)
    ecal_sum = tf.cast(batch["ecal_sum"], tf.float32)
    n = tf.shape(images)[0]
    conditions = tf.stack([energy, angle], axis=1)

    def mean(per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)

    fakes = tf.stop_gradient(
        generator(_latent(conditions, settings.latent_dim, keys[0]), training=False))
    real_flipped = tf.random.stateless_uniform([n], seed=keys[1]) < settings.label_flip_prob
    fake_flipped = (tf.random.stateless_uniform([n], seed=keys[4 + g_updates])
                    < settings.label_flip_prob)
    real_target = tf.where(real_flipped, 0.0, 1.0)
    fake_target = tf.where(fake_flipped, 1.0, 0.0)

    def d_update(x: tf.Tensor, target: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            out = discriminator(x, training=True, dropout_seed=key)
            total, _ = per_example_losses(out, target, energy, angle, ecal_sum, w)
            loss = mean(total)
            scaled = d_optimizer.scale_loss(loss)
        variables = discriminator.trainable_variables
        grads = tape.gradient(scaled, variables)
        d_optimizer.apply_gradients(zip(grads, variables))
        return loss

    d_real = d_update(images, real_target, keys[2])
    d_fake = d_update(fakes, fake_target, keys[3])

    d_training = settings.d_mode_in_g_update == "train"
    g_sums = {name: tf.constant(0.0) for name in ("g_loss", *("g_" + p for p in LOSS_PARTS))}
    ones = tf.ones_like(real_target)
    for i in range(g_updates):
        with tf.GradientTape() as tape:
            generated = generator(_latent(conditions, settings.latent_dim, keys[4 + i]),
                                  training=True)
            out = discriminator(generated, training=d_training,
                                dropout_seed=keys[5 + g_updates + i] if d_training else None)
            total, parts = per_example_losses(out, ones, energy, angle, ecal_sum, w)
            loss = mean(total)
            scaled = g_optimizer.scale_loss(loss)
        variables = generator.trainable_variables
        grads = tape.gradient(scaled, variables)
        g_optimizer.apply_gradients(zip(grads, variables))
        g_sums["g_loss"] += loss
        for p in LOSS_PARTS:
            g_sums["g_" + p] += mean(parts[p])

    k = float(g_updates)
    logs = {name: value / k for name, value in g_sums.items()}
    logs["d_real"] = d_real
    logs["d_fake"] = d_fake
    logs["d_loss"] = 0.5 * (d_real + d_fake)
    logs["fake_ecal_sum"] = mean(tf.reduce_sum(
        tf.reshape(tf.pow(tf.nn.relu(fakes), 1.0 / settings.power), [n, -1]), axis=1))
    logs["real_flipped"] = mean(tf.cast(real_flipped, tf.float32))
    logs["fake_flipped"] = mean(tf.cast(fake_flipped, tf.float32))
    return {key: logs[key] for key in LOG_KEYS}
