"""The shared GAN step: fit and the custom loop agree, D and G update counts, in-graph label
flips, mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.custom_loop import CustomLoop
from trainer.gan import GAN
from trainer.models import Discriminator, build_generator
from trainer.presets import get_preset
from trainer.steps import LOG_KEYS, StepSettings

PRESET = get_preset("tiny")
BATCH = 4


def fake_events(n, seed=0):
    """Events in the CONTRACTS §2 element format (random sparse cells, labels in range)."""
    rng = np.random.default_rng(seed)
    shape = (n, *PRESET.image_shape)
    raw = (rng.exponential(1.0, shape) * (rng.random(shape) < 0.03)).astype(np.float32)
    theta = rng.uniform(1.05, 2.09, n).astype(np.float32)
    return {"ecal": raw ** PRESET.power, "energy": rng.uniform(20, 200, n).astype(np.float32),
            "theta": theta, "mtheta": theta + 0.01, "ecal_sum": raw.reshape(n, -1).sum(1)}


def build(precision="float32", seed=1):
    keras.utils.set_random_seed(seed)
    gen = build_generator(PRESET, precision)
    disc = Discriminator(PRESET, precision)

    def opt():
        o = keras.optimizers.RMSprop(1e-3)
        return keras.optimizers.LossScaleOptimizer(o) if precision == "mixed_float16" else o

    d_opt, g_opt = opt(), opt()
    d_opt.build(disc.trainable_variables)
    g_opt.build(gen.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    return gen, disc, d_opt, g_opt, step


def dataset(seed=0):
    return tf.data.Dataset.from_tensor_slices(fake_events(3 * BATCH, seed)).batch(BATCH).repeat()


def settings(**kw):
    return StepSettings(seed=11, latent_dim=PRESET.generator.latent_dim, **kw)


def test_builtin_fit_and_custom_loop_take_the_same_step():
    strategy = tf.distribute.get_strategy()
    gen_a, disc_a, d_a, g_a, step_a = build()
    gen_b, disc_b, d_b, g_b, step_b = build()
    before = [w.copy() for w in gen_a.get_weights()]
    np.testing.assert_array_equal(before[0], gen_b.get_weights()[0])  # same start

    loop = CustomLoop(strategy, gen_a, disc_a, d_a, g_a, settings(), BATCH, step_a)
    logs_a = loop.run(iter(dataset()), 1)
    gan = GAN(gen_b, disc_b, settings(), BATCH, step_b)
    gan.compile(d_b, g_b)
    logs_b = {k: v[-1] for k, v in gan.fit(dataset(), epochs=1, steps_per_epoch=1, verbose=0).history.items()}

    assert int(step_a.numpy()) == int(step_b.numpy()) == 1
    for a, b in zip(gen_a.get_weights() + disc_a.get_weights(), gen_b.get_weights() + disc_b.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, gen_a.get_weights()))  # it trained
    for key in LOG_KEYS:
        assert logs_a[key] == pytest.approx(logs_b[key], rel=1e-5, abs=1e-6)


def test_one_step_updates_d_twice_and_g_twice():
    gen, disc, d_opt, g_opt, step = build()
    loop = CustomLoop(tf.distribute.get_strategy(), gen, disc, d_opt, g_opt,
                      settings(label_flip_prob=0.0), BATCH, step)
    logs = loop.run(iter(dataset()), 1)
    assert logs["real_flipped"] == 0.0
    assert int(d_opt.iterations.numpy()) == 2  # real batch, then fake batch
    assert int(g_opt.iterations.numpy()) == 2  # generator trained twice
    assert all(np.isfinite(v) for v in logs.values())
    assert logs["d_loss"] == pytest.approx(0.5 * (logs["d_real"] + logs["d_fake"]), rel=1e-5)


def test_label_flips_are_drawn_in_the_graph_every_step():
    gen, disc, d_opt, g_opt, step = build()
    loop = CustomLoop(tf.distribute.get_strategy(), gen, disc, d_opt, g_opt,
                      settings(label_flip_prob=0.5), BATCH, step)
    it = iter(dataset())
    flips = [loop.run(it, 1)["real_flipped"] for _ in range(5)]
    assert loop._multi_step.experimental_get_tracing_count() == 1  # one trace, fresh draws
    assert len(set(flips)) > 1, flips
    assert all(0.0 <= f <= 1.0 for f in flips)


def test_several_steps_per_call_equal_single_calls():
    runs = []
    for per_call in (2, 1):
        gen, disc, d_opt, g_opt, step = build()
        loop = CustomLoop(tf.distribute.get_strategy(), gen, disc, d_opt, g_opt, settings(), BATCH, step)
        it = iter(dataset())
        for _ in range(2 // per_call):
            loop.run(it, per_call)
        runs.append(gen.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_runs_with_float32_heads(precision):
    gen, disc, d_opt, g_opt, step = build(precision)
    assert gen.get_layer("conv0").compute_dtype == precision.split("_")[1]
    assert gen.output.dtype == "float32"
    loop = CustomLoop(tf.distribute.get_strategy(), gen, disc, d_opt, g_opt, settings(), BATCH, step)
    logs = loop.run(iter(dataset()), 1)
    assert all(np.isfinite(v) for v in logs.values()), logs
    if precision == "mixed_float16":
        assert isinstance(g_opt, keras.optimizers.LossScaleOptimizer)
