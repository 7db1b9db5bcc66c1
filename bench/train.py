"""Benchmark: 3DGAN training steps/s, custom loop vs published-style train_on_batch; FLOP/s.

The custom loop's steps/s against a train_on_batch reference written the way the published
3DGAN code trains, and the achieved FLOP/s beside a dense matmul measured in the same run.

Two configurations, each timed on its own (flags change them): the full preset at batch 4,
the configuration with a target (custom loop >= 1.5 x the reference), and the small preset at
batch 16 (reported, no target). In each, same preset, batch, data, float32 and machine for:
  * custom: trainer.custom_loop.CustomLoop (strategy.run in one tf.function, several steps per
    call) on the networks the trainer trains (trainer.layers' fused forms);
  * reference: the published code's way: its stock Keras layers (implementation "keras") in
    three compiled Keras models: the generator (predict), the discriminator (compiled with the
    four weighted losses) and the combined generator->frozen discriminator model, each step
    driven by five host calls (predict, 2 x D.train_on_batch, 2 x combined.train_on_batch),
    label flips drawn with numpy;
  * reference on fused layers (the "gain split", --no-split drops it): the same five host
    calls on the trainer's networks, which splits the gain into its loop part (custom vs this)
    and its layer part (this vs the reference);
  * a dense float32 2048^3 matmul, the FLOP/s yardstick, measured in the same rounds.
Everything is timed in alternating rounds and each one's best round kept (the machine is shared
and noisy; best-of-rounds treats every loop alike); the matmul figure is its best over the run.
FLOP/s are FLOPs per event per step (trainer.flops: Conv3D and Dense multiply-adds, backward =
2 forwards) x showers/s, counted two ways: model FLOPs (the published architecture's, whatever
the implementation computes: the MFU convention) and executed FLOPs (what the fused layers
really run: the generator's first convolution folded onto the coarse grid does far fewer).
Keras fit is not timed: it runs the same tf.function step as the custom loop and measured
within noise of it on CPU (docs/trainer.md).
Prints one line per figure, then RESULT lines for the loop ratios (full preset last: the one
with a target); the FLOP/s lines have no target. Exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.custom_loop import CustomLoop  # noqa: E402
from trainer.flops import discriminator_flops, generator_flops, step_flops  # noqa: E402
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
    """Build and warm the custom loop; return a function timing `steps` steps (steps/s).

    Warm-up is one step: it traces the tf.function, and the step count is a tensor argument,
    so the timed calls of `per_call` steps do not retrace.
    """
    gen, disc, d_opt, g_opt, step = build(preset, implementation)
    settings = StepSettings(seed=1, latent_dim=preset.generator.latent_dim)
    loop = CustomLoop(tf.distribute.get_strategy(), gen, disc, d_opt, g_opt, settings, batch, step)
    it = iter(tf.data.Dataset.from_tensor_slices(data).repeat().batch(batch).prefetch(2))
    loop.run(it, 1)  # trace + warm-up
    per_call = max(1, min(per_call, steps))
    calls = max(1, steps // per_call)

    def timed() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            loop.run(it, per_call)
        return calls * per_call / (time.perf_counter() - t0)

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


def prepare_matmul(n: int = 2048, repeats: int = 10):
    """Return a timer of a dense float32 n x n matmul (FLOP/s), traced and warmed here."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda a, b: tf.matmul(a, b))
    f(a, b).numpy()

    def timed() -> float:
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = f(a, b)
        out.numpy()
        return 2.0 * n ** 3 * repeats / (time.perf_counter() - t0)

    return timed


@dataclass(frozen=True)
class Configuration:
    """One timed configuration: `slot` names its RESULT line (full_..., small_...)."""

    slot: str
    preset: ModelPreset
    batch: int
    steps: int


@dataclass(frozen=True)
class Measured:
    """Best rates (steps/s) of one configuration and its FLOPs per event per training step."""

    config: Configuration
    rates: dict[str, float]
    model_flops: int     # published architecture (stock layers), the MFU convention
    executed_flops: int  # what the fused layers compute


def step_flops_per_event(preset: ModelPreset) -> tuple[int, int]:
    """(model, executed) FLOPs per event of one training step; D is the same in both forms."""
    d_forward = discriminator_flops(Discriminator(preset))
    model = step_flops(generator_flops(build_generator(preset, implementation="keras")), d_forward)
    executed = step_flops(generator_flops(build_generator(preset)), d_forward)
    return model, executed


def measure(config: Configuration, rounds: int, per_call: int, split: bool,
            matmul) -> Measured:
    """Build, warm and time one configuration's loops (and the matmul) in alternating rounds."""
    preset, batch, steps = config.preset, config.batch, config.steps
    data = events(preset, max(4 * batch, 64))
    timers = {"custom": prepare_custom(preset, data, batch, steps, per_call),
              "reference": prepare_reference(preset, data, batch, steps)}
    if split:
        timers["reference_fused"] = prepare_reference(preset, data, batch, steps, "fused")
    timers["matmul"] = matmul
    rates = best_of_rounds(timers, rounds)
    return Measured(config, rates, *step_flops_per_event(preset))


def report_loops(m: Measured) -> None:
    """The configuration's steps/s and showers/s, and the gain split when it was timed."""
    c, r = m.config, m.rates
    labels = {"custom": "custom loop (fused layers)",
              "reference": "train_on_batch reference (published: stock layers, three models)",
              "reference_fused": "train_on_batch on fused layers"}
    for name, label in labels.items():
        if name in r:
            print(f"{c.slot}: {label}: {r[name]:.3f} steps/s, {r[name] * c.batch:.2f} showers/s")
    print(f"{c.slot}: custom loop vs train_on_batch reference {r['custom'] / r['reference']:.2f} x")
    if "reference_fused" in r:
        print(f"{c.slot}: gain split: loop (custom vs train_on_batch, both fused) "
              f"{r['custom'] / r['reference_fused']:.2f} x; layers (train_on_batch, fused vs "
              f"stock) {r['reference_fused'] / r['reference']:.2f} x")


def report_flops(m: Measured, matmul: float) -> None:
    """Achieved FLOP/s of the custom loop (model and executed) and of the reference, vs matmul."""
    c, r = m.config, m.rates
    print(f"{c.slot}: {m.model_flops / 1e9:.2f} GFLOP model, {m.executed_flops / 1e9:.2f} GFLOP "
          f"executed per event per training step")
    showers = r["custom"] * c.batch
    model, executed = showers * m.model_flops, showers * m.executed_flops
    print(f"{c.slot}: custom loop model FLOP/s (MFU convention) {model / 1e9:.1f} GFLOP/s = "
          f"{100 * model / matmul:.1f} % of matmul (no target)")
    print(f"{c.slot}: custom loop executed FLOP/s {executed / 1e9:.1f} GFLOP/s = "
          f"{100 * executed / matmul:.1f} % of matmul (no target)")
    stock = r["reference"] * c.batch * m.model_flops
    print(f"{c.slot}: train_on_batch reference FLOP/s (stock layers: executed = model) "
          f"{stock / 1e9:.1f} GFLOP/s = {100 * stock / matmul:.1f} % of matmul")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-preset", default="full", help="preset of the configuration with the target")
    parser.add_argument("--full-batch", type=int, default=4, help="its events per step")
    parser.add_argument("--full-steps", type=int, default=4, help="its timed steps per loop and round")
    parser.add_argument("--small-preset", default="small", help="preset of the second configuration")
    parser.add_argument("--small-batch", type=int, default=16, help="its events per step")
    parser.add_argument("--small-steps", type=int, default=8, help="its timed steps per loop and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds")
    parser.add_argument("--steps-per-call", type=int, default=4,
                        help="custom loop steps per tf.function call (at most the timed steps)")
    parser.add_argument("--no-split", dest="split", action="store_false",
                        help="skip train_on_batch on fused layers (the loop/layer gain split)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # Lines as they come, so a run stopped part-way (a loaded machine) still shows its figures.
    sys.stdout.reconfigure(line_buffering=True)

    started = time.perf_counter()
    configs = [Configuration("small", get_preset(args.small_preset), args.small_batch, args.small_steps),
               Configuration("full", get_preset(args.full_preset), args.full_batch, args.full_steps)]
    print(f"{args.rounds} alternating rounds (best kept), up to {args.steps_per_call} custom-loop "
          f"steps per call, float32, {os.cpu_count()} CPUs, TF {tf.__version__}")
    matmul_timer = prepare_matmul()
    measured = []
    for c in configs:
        print(f"{c.slot}: preset {c.preset.name}, batch {c.batch}, {c.steps} timed steps per loop "
              f"and round")
        m = measure(c, args.rounds, args.steps_per_call, args.split, matmul_timer)
        report_loops(m)
        measured.append(m)
    matmul = max(m.rates["matmul"] for m in measured)
    print(f"dense float32 matmul 2048^3: {matmul / 1e9:.1f} GFLOP/s (best of "
          f"{len(measured) * args.rounds} rounds, alternating with the loops)")
    for m in measured:
        report_flops(m, matmul)
    print(f"bench time {time.perf_counter() - started:.0f} s")
    for m in measured:  # small first, full (the target) last
        ratio = m.rates["custom"] / m.rates["reference"]
        target = "target >= 1.5" if m.config.slot == "full" else "(no target)"
        print(f"RESULT {m.config.slot}_custom_vs_train_on_batch {ratio:.2f} x {target}")
    return 0


if __name__ == "__main__":
    from entry import run_benchmark

    run_benchmark(main)
