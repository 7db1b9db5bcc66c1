"""Benchmark: 3DGAN training throughput of the custom loop, keras fit, and a train_on_batch
reference written the way the original 3DGAN code trains; plus the full preset's achieved FLOP/s.

Same preset, batch, data, float32 and machine for every loop:
  * custom: trainer.custom_loop.CustomLoop (strategy.run in one tf.function, several steps/call)
    on the networks the trainer trains (trainer.layers' fused forms);
  * builtin: trainer.gan.GAN with compile(steps_per_execution)/fit, same networks;
  * reference: the published code's way: its stock Keras layers (implementation "keras") in
    three compiled Keras models: the generator (predict), the discriminator (compiled with the
    four weighted losses) and the combined generator->frozen discriminator model, each step
    driven by five host calls (predict, 2 x D.train_on_batch, 2 x combined.train_on_batch),
    label flips drawn with numpy;
  * reference on fused layers: the same five host calls on the trainer's networks, which
    splits the gain into its loop part and its layer part.
Each loop is timed in alternating rounds and its best round kept (the machine is shared and
noisy; best-of-rounds treats every loop alike).
Then the full preset trains a few steps (custom loop), on fused and on stock layers. Its
FLOP/s are given over the measured time as executed FLOPs (what really runs: the generator's
first convolution folded onto the coarse grid does far fewer; backward = 2 forwards), the
RESULT, and as model FLOPs (the published architecture's Conv3D and Dense multiply-adds
whatever the implementation: the MFU convention), both against a dense float32 matmul's
FLOP/s measured in the same run.
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


def build(preset: ModelPreset, implementation: str = "fused"):
    keras.utils.set_random_seed(0)
    gen = build_generator(preset, implementation=implementation)
    disc = Discriminator(preset, implementation=implementation)
    d_opt, g_opt = keras.optimizers.RMSprop(1e-3), keras.optimizers.RMSprop(1e-3)
    d_opt.build(disc.trainable_variables)
    g_opt.build(gen.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    return gen, disc, d_opt, g_opt, step


def prepare_custom(preset, data, batch, steps, per_call, implementation="fused"):
    """Build and warm the custom loop; return a function timing `steps` steps (steps/s)."""
    gen, disc, d_opt, g_opt, step = build(preset, implementation)
    settings = StepSettings(seed=1, latent_dim=preset.generator.latent_dim)
    loop = CustomLoop(tf.distribute.get_strategy(), gen, disc, d_opt, g_opt, settings, batch, step)
    it = iter(tf.data.Dataset.from_tensor_slices(data).repeat().batch(batch).prefetch(2))
    loop.run(it, per_call)  # trace + warm-up
    calls = max(1, steps // per_call)

    def timed() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            loop.run(it, per_call)
        return calls * per_call / (time.perf_counter() - t0)

    return timed


class _ExecutionClock(keras.callbacks.Callback):
    """Wall time at the end of every execution (steps_per_execution steps) of fit."""

    def __init__(self):
        super().__init__()
        self.stamps: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())


def prepare_builtin(preset, data, batch, steps, per_call):
    """Build and warm keras fit on the trainer's networks; return a steps/s timer.

    The rate is fit's steady state: from the end of its first execution to the end of its
    last, so fit's per-call start-up (data adapter, callbacks; paid once per training run, not
    per step) is not charged to its steps.
    """
    gen, disc, d_opt, g_opt, step = build(preset)
    settings = StepSettings(seed=1, latent_dim=preset.generator.latent_dim)
    gan = GAN(gen, disc, settings, batch, step)
    gan.compile(d_opt, g_opt, steps_per_execution=per_call)
    ds = tf.data.Dataset.from_tensor_slices(data).repeat().batch(batch).prefetch(2)
    gan.fit(ds, epochs=1, steps_per_epoch=per_call, verbose=0)  # trace + warm-up
    executions = max(1, steps // per_call)

    def timed() -> float:
        clock = _ExecutionClock()
        gan.fit(ds, epochs=1, steps_per_epoch=(executions + 1) * per_call, verbose=0,
                callbacks=[clock])
        return executions * per_call / (clock.stamps[-1] - clock.stamps[0])

    return timed


class _KerasStyleDiscriminator(keras.Model):
    """The discriminator as Keras' fit/train_on_batch drives it: dropout draws fresh masks from
    a stateful generator on every training call (trainer.models.Discriminator takes an explicit
    seed, and applies no dropout without one)."""

    def __init__(self, disc):
        super().__init__(name="discriminator")
        self.disc = disc

    def call(self, images, training=False):
        seed = (tf.random.uniform([2], 0, 2 ** 31 - 1, dtype=tf.int32) if training else None)
        return self.disc(images, training=training, dropout_seed=seed)


class _Combined(keras.Model):
    """Generator followed by the frozen discriminator in inference mode, as in gan_step."""

    def __init__(self, gen, disc):
        super().__init__(name="combined")
        self.gen, self.disc = gen, disc

    def call(self, latent, training=False):
        return self.disc(self.gen(latent, training=training), training=False)


def prepare_reference(preset, data, batch, steps, implementation="keras"):
    """Build and warm the published code's train_on_batch loop; return a steps/s timer."""
    gen, bare_disc, _, _, _ = build(preset, implementation)
    disc = _KerasStyleDiscriminator(bare_disc)
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
    counter = [0]

    def one_step():
        i = counter[0]
        counter[0] += 1
        start = (i % (n_events // batch)) * batch  # whole batches only
        sl = slice(start, start + batch)
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
    one_step()
    one_step()

    def timed() -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            one_step()
        return steps / (time.perf_counter() - t0)

    return timed


def best_of_rounds(timers: dict, rounds: int) -> dict[str, float]:
    """Run every timer once per round, alternating, and keep each one's best rate."""
    best = {name: 0.0 for name in timers}
    for _ in range(rounds):
        for name, timed in timers.items():
            best[name] = max(best[name], timed())
    return best


def matmul_flops_per_second(n: int = 2048, repeats: int = 10, rounds: int = 3) -> float:
    """Best-of-rounds FLOP/s of a dense float32 n x n matmul."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda a, b: tf.matmul(a, b))
    f(a, b).numpy()
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = f(a, b)
        out.numpy()
        best = max(best, 2.0 * n ** 3 * repeats / (time.perf_counter() - t0))
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="preset of the loop comparison")
    parser.add_argument("--batch", type=int, default=16, help="events per step (one device)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per loop and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds")
    parser.add_argument("--steps-per-call", type=int, default=4,
                        help="steps per tf.function call / keras steps_per_execution")
    parser.add_argument("--overhead-preset", default="tiny",
                        help="second, cheap configuration where per-call host overhead shows")
    parser.add_argument("--overhead-batch", type=int, default=4)
    parser.add_argument("--full-batch", type=int, default=4, help="batch of the full-preset FLOP/s run")
    parser.add_argument("--full-steps", type=int, default=2, help="timed steps of the full preset per round")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    preset = get_preset(args.preset)
    data = events(preset, max(4 * args.batch, 64))
    print(f"preset {preset.name}, batch {args.batch}, {args.steps} timed steps x {args.rounds} "
          f"rounds (best kept), {args.steps_per_call} steps per call, float32, "
          f"{os.cpu_count()} CPUs, TF {tf.__version__}")
    rate = best_of_rounds({
        "custom": prepare_custom(preset, data, args.batch, args.steps, args.steps_per_call),
        "builtin": prepare_builtin(preset, data, args.batch, args.steps, args.steps_per_call),
        "reference": prepare_reference(preset, data, args.batch, args.steps),
        "reference_fused": prepare_reference(preset, data, args.batch, args.steps, "fused"),
    }, args.rounds)
    labels = {"custom": "custom loop (fused layers)", "builtin": "keras fit (fused layers)",
              "reference": "train_on_batch reference (published: stock layers)",
              "reference_fused": "train_on_batch on fused layers"}
    for name, label in labels.items():
        print(f"{label}: {rate[name]:.3f} steps/s, {rate[name] * args.batch:.1f} showers/s")
    print(f"gain split: loop (custom vs train_on_batch, both fused) "
          f"{rate['custom'] / rate['reference_fused']:.2f} x; layers (train_on_batch fused vs "
          f"stock) {rate['reference_fused'] / rate['reference']:.2f} x")

    cheap = get_preset(args.overhead_preset)
    cheap_data = events(cheap, 64)
    o = best_of_rounds({
        "custom": prepare_custom(cheap, cheap_data, args.overhead_batch, 2 * args.steps,
                                 args.steps_per_call),
        "builtin": prepare_builtin(cheap, cheap_data, args.overhead_batch, 2 * args.steps,
                                   args.steps_per_call),
        "reference": prepare_reference(cheap, cheap_data, args.overhead_batch, 2 * args.steps),
    }, args.rounds)
    print(f"{cheap.name} preset, batch {args.overhead_batch} (short steps, host overhead "
          f"visible): custom {o['custom']:.2f}, fit {o['builtin']:.2f}, train_on_batch "
          f"{o['reference']:.2f} steps/s; custom/fit {o['custom'] / o['builtin']:.2f} x, "
          f"custom/train_on_batch {o['custom'] / o['reference']:.2f} x")

    full = get_preset("full")
    stock_gen = build_generator(full, implementation="keras")
    disc = Discriminator(full)
    g_model, d_model = generator_flops(stock_gen), discriminator_flops(disc)
    g_exec = generator_flops(build_generator(full))  # fused: what really runs
    model_per_event = step_flops(g_model, d_model)
    exec_per_event = step_flops(g_exec, d_model)
    print(f"full preset: {g_model / 2e9:.2f} GMAC generator ({g_exec / 2e9:.2f} executed with the "
          f"folded first convolution), {d_model / 2e9:.2f} GMAC discriminator forward per event; "
          f"{model_per_event / 1e9:.1f} GFLOP model, {exec_per_event / 1e9:.1f} GFLOP executed "
          f"per event per training step")
    full_data = events(full, 4 * args.full_batch)
    full_rates = best_of_rounds({
        "fused": prepare_custom(full, full_data, args.full_batch, args.full_steps, 1),
        "keras": prepare_custom(full, full_data, args.full_batch, args.full_steps, 1, "keras"),
    }, args.rounds)
    full_rate = full_rates["fused"]
    print(f"full preset custom loop, stock layers: {full_rates['keras']:.3f} steps/s; fused "
          f"layers {full_rate / full_rates['keras']:.2f} x faster")
    model_flops = full_rate * args.full_batch * model_per_event
    exec_flops = full_rate * args.full_batch * exec_per_event
    print(f"full preset training: {full_rate:.3f} steps/s at batch {args.full_batch}, "
          f"{full_rate * args.full_batch:.2f} showers/s, {model_flops / 1e9:.1f} GFLOP/s model, "
          f"{exec_flops / 1e9:.1f} GFLOP/s executed")
    matmul = matmul_flops_per_second(rounds=args.rounds + 1)
    print(f"dense float32 matmul 2048^3: {matmul / 1e9:.1f} GFLOP/s")
    stock_flops = full_rates["keras"] * args.full_batch * model_per_event
    print(f"full preset model FLOP/s (published architecture's FLOPs over the fused run's time, "
          f"the MFU convention): {100 * model_flops / matmul:.1f} % of matmul")
    print(f"full preset on stock layers (executed = model FLOPs): {100 * stock_flops / matmul:.1f} "
          f"% of matmul")
    # The target is read as hardware utilisation: FLOPs that really run, per second.
    print(f"RESULT full_preset_vs_matmul_flops {100 * exec_flops / matmul:.1f} % target >= 35")
    print(f"RESULT custom_vs_builtin {rate['custom'] / rate['builtin']:.2f} x target >= 1.2")
    print(f"RESULT custom_vs_train_on_batch {rate['custom'] / rate['reference']:.2f} x target >= 2")
    return 0


if __name__ == "__main__":
    from entry import run_benchmark

    run_benchmark(main)
