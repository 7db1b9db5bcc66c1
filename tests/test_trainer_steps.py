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
from data_prep.angle import EMPTY_SHOWER_ANGLE
from trainer.losses import angle_error, per_example_losses
from trainer.steps import LOG_KEYS, StepSettings, step_keys

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


def test_builtin_fit_and_custom_loop_take_the_same_steps_and_log_the_same_means():
    strategy = tf.distribute.get_strategy()
    gen_a, disc_a, d_a, g_a, step_a = build()
    gen_b, disc_b, d_b, g_b, step_b = build()
    before = [w.copy() for w in gen_a.get_weights()]
    np.testing.assert_array_equal(before[0], gen_b.get_weights()[0])  # same start

    # Two steps in one call: both paths must log the mean over the call's steps.
    loop = CustomLoop(strategy, gen_a, disc_a, d_a, g_a, settings(), BATCH, step_a)
    logs_a = loop.run(iter(dataset()), 2)
    gan = GAN(gen_b, disc_b, settings(), BATCH, step_b)
    gan.compile(d_b, g_b, steps_per_execution=2)
    logs_b = {k: v[-1] for k, v in gan.fit(dataset(), epochs=1, steps_per_epoch=2, verbose=0).history.items()}

    assert int(step_a.numpy()) == int(step_b.numpy()) == 2
    for a, b in zip(gen_a.get_weights() + disc_a.get_weights(), gen_b.get_weights() + disc_b.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, gen_a.get_weights()))  # it trained
    for key in LOG_KEYS:
        assert logs_a[key] == pytest.approx(logs_b[key], rel=1e-5, abs=1e-6), key

    # ... and that mean is the mean of the two single steps, not the last one.
    gen_c, disc_c, d_c, g_c, step_c = build()
    single = CustomLoop(strategy, gen_c, disc_c, d_c, g_c, settings(), BATCH, step_c)
    it = iter(dataset())
    one, two = single.run(it, 1), single.run(it, 1)
    for key in ("d_loss", "g_loss", "fake_ecal_sum"):
        assert logs_b[key] == pytest.approx(0.5 * (one[key] + two[key]), rel=1e-4), key
        assert abs(one[key] - two[key]) > 1e-3 * abs(two[key])  # the mean is not the last step


def reference_step(gen, disc, d_opt, g_opt, batch, cfg, d_training_in_g_update=True):
    """The published 3DGAN training step written out eagerly (Train_steps of the published
    distributed code), drawing its randomness from the step's stateless keys:
    fakes from the generator in inference mode; D on the real batch with its ones flipped to
    zero, then on the fake batch with its zeros flipped to one (BitFlip on both); G twice
    through D, which runs in training mode (batch statistics, dropout)."""
    gu = cfg.generator_updates
    keys = step_keys(cfg.seed, tf.constant(0, tf.int64), 5 + 2 * gu)
    images = tf.constant(batch["ecal"])[..., None]
    energy = tf.constant(batch["energy"]) / cfg.energy_scale
    angle = tf.constant(batch["mtheta"])
    ecal_sum = tf.constant(batch["ecal_sum"])
    n = images.shape[0]

    def latent(key):
        noise = tf.random.stateless_normal([n, cfg.latent_dim - 2], seed=key)
        return tf.concat([tf.stack([energy, angle], axis=1), noise], axis=1)

    def loss(out, target):
        return tf.reduce_mean(per_example_losses(out, target, energy, angle, ecal_sum, cfg.loss_weights)[0])

    fakes = gen(latent(keys[0]), training=False)
    real_target = tf.where(tf.random.stateless_uniform([n], seed=keys[1]) < cfg.label_flip_prob, 0.0, 1.0)
    fake_target = tf.where(tf.random.stateless_uniform([n], seed=keys[4 + gu]) < cfg.label_flip_prob, 1.0, 0.0)
    for x, target, key in ((images, real_target, keys[2]), (fakes, fake_target, keys[3])):
        with tf.GradientTape() as tape:
            value = loss(disc(x, training=True, dropout_seed=key), target)
        d_opt.apply_gradients(zip(tape.gradient(value, disc.trainable_variables), disc.trainable_variables))
    for i in range(gu):
        with tf.GradientTape() as tape:
            generated = gen(latent(keys[4 + i]), training=True)
            seed = keys[5 + gu + i] if d_training_in_g_update else None
            value = loss(disc(generated, training=d_training_in_g_update, dropout_seed=seed), tf.ones([n]))
        g_opt.apply_gradients(zip(tape.gradient(value, gen.trainable_variables), gen.trainable_variables))
    return tf.reduce_mean(real_target), tf.reduce_mean(fake_target)


@pytest.mark.parametrize("d_mode", ["train", "inference"])
def test_step_follows_the_published_recipe(d_mode):
    cfg = settings(label_flip_prob=0.5, d_mode_in_g_update=d_mode)
    batch = fake_events(BATCH, seed=2)
    gen_a, disc_a, d_a, g_a, step_a = build()
    gen_b, disc_b, d_b, g_b, _ = build()
    logs = CustomLoop(tf.distribute.get_strategy(), gen_a, disc_a, d_a, g_a, cfg, BATCH, step_a).run(
        iter(tf.data.Dataset.from_tensors(batch).repeat()), 1)
    real_ones, fake_ones = tf.function(lambda: reference_step(gen_b, disc_b, d_b, g_b, batch, cfg,
                                                              d_mode == "train"))()
    # With p = 0.5 this seed flips labels in both batches: the fake batch's flips are exercised.
    assert 0 < logs["fake_flipped"] == pytest.approx(float(fake_ones))
    assert 0 < logs["real_flipped"] == pytest.approx(1 - float(real_ones))
    for a, b in zip(gen_a.get_weights() + disc_a.get_weights(), gen_b.get_weights() + disc_b.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_one_step_updates_d_twice_and_g_twice():
    gen, disc, d_opt, g_opt, step = build()
    loop = CustomLoop(tf.distribute.get_strategy(), gen, disc, d_opt, g_opt,
                      settings(label_flip_prob=0.0), BATCH, step)
    logs = loop.run(iter(dataset()), 1)
    assert logs["real_flipped"] == 0.0 and logs["fake_flipped"] == 0.0
    assert int(d_opt.iterations.numpy()) == 2  # real batch, then fake batch
    assert int(g_opt.iterations.numpy()) == 2  # generator trained twice
    assert all(np.isfinite(v) for v in logs.values())
    assert logs["d_loss"] == pytest.approx(0.5 * (logs["d_real"] + logs["d_fake"]), rel=1e-5)


def test_label_flips_are_drawn_in_the_graph_every_step():
    gen, disc, d_opt, g_opt, step = build()
    loop = CustomLoop(tf.distribute.get_strategy(), gen, disc, d_opt, g_opt,
                      settings(label_flip_prob=0.5), BATCH, step)
    it = iter(dataset())
    logs = [loop.run(it, 1) for _ in range(5)]
    assert loop._multi_step.experimental_get_tracing_count() == 1  # one trace, fresh draws
    for key in ("real_flipped", "fake_flipped"):
        flips = [entry[key] for entry in logs]
        assert len(set(flips)) > 1, (key, flips)
        assert all(0.0 <= f <= 1.0 for f in flips)
    # The two batches draw their flips independently.
    assert [e["real_flipped"] for e in logs] != [e["fake_flipped"] for e in logs]


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


def test_empty_shower_sentinel_is_left_out_of_the_angle_loss():
    # The published head says 100 for an empty shower; |angle - 100| x 25 would swamp the
    # logged loss while carrying no gradient. Events with the sentinel on either side add 0.
    label = tf.constant([1.2, 1.2, EMPTY_SHOWER_ANGLE, 1.5])
    head = tf.Variable([1.0, EMPTY_SHOWER_ANGLE, 1.3, 1.6])
    with tf.GradientTape() as tape:
        err = angle_error(label, head)
        total = tf.reduce_sum(err)
    np.testing.assert_allclose(err.numpy(), [0.2, 0.0, 0.0, 0.1], atol=1e-6)
    np.testing.assert_allclose(tape.gradient(total, head).numpy(), [-1.0, 0.0, 0.0, 1.0])
    outputs = {"realfake": tf.zeros(4), "energy": tf.ones(4), "angle": head, "ecal_sum": tf.ones(4)}
    _, parts = per_example_losses(outputs, tf.ones(4), tf.ones(4), label, tf.ones(4), (3, 0.1, 25, 0.1))
    np.testing.assert_allclose(parts["angle"].numpy(), [0.2, 0.0, 0.0, 0.1], atol=1e-6)
