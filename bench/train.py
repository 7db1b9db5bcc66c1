"""Benchmark: 3DGAN training throughput of the custom loop, keras fit, and a train_on_batch
reference written the way the original 3DGAN code trains; plus the full preset's achieved FLOP/s.

Same preset, batch, data and machine for the three loops:
  * custom: trainer.custom_loop.CustomLoop (strategy.run in one tf.function, several steps/call);
  * builtin: trainer.gan.GAN with compile(steps_per_execution)/fit;
  * reference: three compiled Keras models as in the published code: the generator
    (predict), the discriminator (compiled with the four weighted losses) and the combined
    generator->frozen discriminator model, each step driven by five host calls
    (predict, 2 x D.train_on_batch, 2 x combined.train_on_batch), label flips drawn with numpy.
Then the full preset trains a few steps (custom loop) and its analytic FLOPs per step
(trainer.flops, Conv3D and Dense only, backward = 2 forwards) over the measured time is
compared with a dense float32 matmul's FLOP/s measured in the same run.
Prints one line per figure and RESULT lines, headline (custom vs train_on_batch) last; exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.custom_loop import CustomLoop  # noqa: E402
from trainer.flops import discriminator_flops, generator_flops, step_flops  # noqa: E402
from trainer.gan import GAN  # noqa: E402
from trainer.models import Discriminator, build_generator  # noqa: E402
from trainer.presets import ModelPreset, get_preset  # noqa: E402
from trainer.steps import StepSettings  # noqa: E402

WEIGHTS = (3.0, 0.1, 25.0, 0.1)


def events(preset: ModelPreset, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Sparse random showers in the CONTRACTS §2 element format."""
    rng = np.random.default_rng(seed)
    shape = (n, *preset.image_shape)
    raw = (rng.exponential(1.0, shape) * (rng.random(shape) < 0.05)).astype(np.float32)
    theta = rng.uniform(1.05, 2.09, n).astype(np.float32)
    return {"ecal": raw ** preset.power, "energy": rng.uniform(10, 200, n).astype(np.float32),
            "theta": theta, "mtheta": theta, "ecal_sum": raw.reshape(n, -1).sum(1)}


def build(preset: ModelPreset):
    keras.utils.set_random_seed(0)
    gen, disc = build_generator(preset), Discriminator(preset)
    d_opt, g_opt = keras.optimizers.RMSprop(1e-3), keras.optimizers.RMSprop(1e-3)
    d_opt.build(disc.trainable_variables)
    g_opt.build(gen.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    return gen, disc, d_opt, g_opt, step


def time_custom(preset, data, batch, steps, per_call) -> float:
    gen, disc, d_opt, g_opt, step = build(preset)
    settings = StepSettings(seed=1, latent_dim=preset.generator.latent_dim)
    loop = CustomLoop(tf.distribute.get_strategy(), gen, disc, d_opt, g_opt, settings, batch, step)
    it = iter(tf.data.Dataset.from_tensor_slices(data).repeat().batch(batch).prefetch(2))
    loop.run(it, per_call)  # trace + warm-up
    t0 = time.perf_counter()
    for _ in range(steps // per_call):
        loop.run(it, per_call)
    return (steps // per_call * per_call) / (time.perf_counter() - t0)


def time_builtin(preset, data, batch, steps, per_call) -> float:
    gen, disc, d_opt, g_opt, step = build(preset)
    settings = StepSettings(seed=1, latent_dim=preset.generator.latent_dim)
    gan = GAN(gen, disc, settings, batch, step)
    gan.compile(d_opt, g_opt, steps_per_execution=per_call)
    ds = tf.data.Dataset.from_tensor_slices(data).repeat().batch(batch).prefetch(2)
    gan.fit(ds, epochs=1, steps_per_epoch=per_call, verbose=0)  # trace + warm-up
    n = steps // per_call * per_call
    t0 = time.perf_counter()
    gan.fit(ds, epochs=1, steps_per_epoch=n, verbose=0)
    return n / (time.perf_counter() - t0)


class _Combined(keras.Model):
    """Generator followed by the (frozen) discriminator, as the original combined model."""

    def __init__(self, gen, disc):
        super().__init__(name="combined")
        self.gen, self.disc = gen, disc

    def call(self, latent, training=False):
        return self.disc(self.gen(latent, training=training), training=training)


def time_reference(preset, data, batch, steps) -> float:
    gen, disc, _, _, _ = build(preset)
    losses = {"realfake": keras.losses.BinaryCrossentropy(from_logits=True),
              "energy": keras.losses.MeanAbsolutePercentageError(),
              "angle": keras.losses.MeanAbsoluteError(),
              "ecal_sum": keras.losses.MeanAbsolutePercentageError()}
    weights = dict(zip(losses, WEIGHTS))
    disc.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss=losses, loss_weights=weights)
    combined = _Combined(gen, disc)
    combined.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss=losses, loss_weights=weights)
    latent_dim = preset.generator.latent_dim
    rng = np.random.default_rng(0)
    n_events = data["ecal"].shape[0]

    def one_step(i):
        sl = slice((i * batch) % n_events, (i * batch) % n_events + batch)
        real = data["ecal"][sl][..., None]
        energy, angle, esum = data["energy"][sl] / 100.0, data["mtheta"][sl], data["ecal_sum"][sl]
        cond = np.stack([energy, angle], 1)
        noise = rng.standard_normal((batch, latent_dim - 2)).astype(np.float32)
        fake = gen.predict(np.concatenate([cond, noise], 1), verbose=0)
        labels = np.where(rng.random(batch) < 0.05, 0.0, 1.0).astype(np.float32)
        aux = {"energy": energy, "angle": angle, "ecal_sum": esum}
        disc.train_on_batch(real, {"realfake": labels, **aux})
        disc.train_on_batch(fake, {"realfake": np.zeros(batch, np.float32), **aux})
        for _ in range(2):
            noise = rng.standard_normal((batch, latent_dim - 2)).astype(np.float32)
            combined.train_on_batch(np.concatenate([cond, noise], 1),
                                    {"realfake": np.ones(batch, np.float32), **aux})

    # Keras 3 fixes a model's trainable variables when its train function is first traced:
    # trace the combined model with D frozen (as the original compiled it), then D trainable.
    disc.trainable = False
    warm = np.concatenate([np.zeros((batch, 2), np.float32),
                           rng.standard_normal((batch, latent_dim - 2)).astype(np.float32)], 1)
    aux = {"energy": np.ones(batch, np.float32), "angle": np.ones(batch, np.float32),
           "ecal_sum": np.ones(batch, np.float32)}
    combined.train_on_batch(warm, {"realfake": np.ones(batch, np.float32), **aux})
    disc.trainable = True
    one_step(0)
    one_step(1)
    t0 = time.perf_counter()
    for i in range(steps):
        one_step(i + 2)
    return steps / (time.perf_counter() - t0)


def matmul_flops_per_second(n: int = 2048, repeats: int = 10) -> float:
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda a, b: tf.matmul(a, b))
    f(a, b).numpy()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = f(a, b)
    out.numpy()
    return 2.0 * n ** 3 * repeats / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="preset of the loop comparison")
    parser.add_argument("--batch", type=int, default=16, help="events per step (one device)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per loop")
    parser.add_argument("--steps-per-call", type=int, default=4,
                        help="steps per tf.function call / keras steps_per_execution")
    parser.add_argument("--overhead-preset", default="tiny",
                        help="second, cheap configuration where per-call host overhead shows")
    parser.add_argument("--overhead-batch", type=int, default=4)
    parser.add_argument("--full-batch", type=int, default=2, help="batch of the full-preset FLOP/s run")
    parser.add_argument("--full-steps", type=int, default=2, help="timed steps of the full preset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    preset = get_preset(args.preset)
    data = events(preset, max(4 * args.batch, 64))
    print(f"preset {preset.name}, batch {args.batch}, {args.steps} timed steps, "
          f"{args.steps_per_call} steps per call, {os.cpu_count()} CPUs, TF {tf.__version__}")
    custom = time_custom(preset, data, args.batch, args.steps, args.steps_per_call)
    print(f"custom loop: {custom:.3f} steps/s, {custom * args.batch:.1f} showers/s")
    builtin = time_builtin(preset, data, args.batch, args.steps, args.steps_per_call)
    print(f"keras fit (built-in): {builtin:.3f} steps/s, {builtin * args.batch:.1f} showers/s")
    reference = time_reference(preset, data, args.batch, args.steps)
    print(f"train_on_batch reference: {reference:.3f} steps/s, {reference * args.batch:.1f} showers/s")

    small_steps = get_preset(args.overhead_preset)
    small_data = events(small_steps, 64)
    oc = time_custom(small_steps, small_data, args.overhead_batch, 2 * args.steps, args.steps_per_call)
    ob = time_builtin(small_steps, small_data, args.overhead_batch, 2 * args.steps, args.steps_per_call)
    orf = time_reference(small_steps, small_data, args.overhead_batch, 2 * args.steps)
    print(f"{small_steps.name} preset, batch {args.overhead_batch} (short steps, host overhead "
          f"visible): custom {oc:.2f}, fit {ob:.2f}, train_on_batch {orf:.2f} steps/s; "
          f"custom/fit {oc / ob:.2f} x, custom/train_on_batch {oc / orf:.2f} x")

    full = get_preset("full")
    gen, disc = build_generator(full), Discriminator(full)
    per_event = step_flops(generator_flops(gen), discriminator_flops(disc))
    print(f"full preset: {generator_flops(gen) / 2e9:.2f} GMAC generator, "
          f"{discriminator_flops(disc) / 2e9:.2f} GMAC discriminator forward per event; "
          f"{per_event / 1e9:.1f} GFLOP per event per training step")
    full_rate = time_custom(full, events(full, 4 * args.full_batch), args.full_batch,
                            args.full_steps, 1)
    achieved = full_rate * args.full_batch * per_event
    print(f"full preset training: {full_rate:.3f} steps/s at batch {args.full_batch}, "
          f"{achieved / 1e9:.1f} GFLOP/s achieved")
    matmul = matmul_flops_per_second()
    print(f"dense float32 matmul 2048^3: {matmul / 1e9:.1f} GFLOP/s")

    print(f"RESULT full_preset_vs_matmul_flops {100 * achieved / matmul:.1f} % target >= 35")
    print(f"RESULT custom_vs_builtin {custom / builtin:.2f} x target >= 1.2")
    print(f"RESULT custom_vs_train_on_batch {custom / reference:.2f} x target >= 2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
