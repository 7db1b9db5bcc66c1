"""trainer.layers: each fast form computes the stock layers' function, values and gradients,
and the fused networks equal the stock ones with the same weights."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from trainer import layers as fast
from trainer.export import export_generator, load_generator
from trainer.flops import generator_flops
from trainer.models import Discriminator, build_generator
from trainer.presets import get_preset


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


# (coarse input xyz, upsampling, kernel, padding): the full preset's conv0 (kernel wider than
# the upsampling), the small preset's (narrower, padded), and an uneven one with padding == size.
GEOMETRIES = [
    ((9, 9, 8), (6, 6, 6), (6, 6, 8), (0, 0, 0)),
    ((9, 9, 5), (6, 6, 5), (2, 2, 3), (0, 0, 1)),
    ((3, 4, 3), (2, 3, 2), (3, 1, 5), (2, 1, 0)),
]


@pytest.mark.parametrize("coarse, size, kernel, padding", GEOMETRIES)
def test_upsampled_conv_equals_upsampling_padding_conv(coarse, size, kernel, padding):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((2, *coarse, 3)), tf.float32)
    stock = keras.Sequential([
        keras.Input((*coarse, 3)), keras.layers.UpSampling3D(size),
        keras.layers.ZeroPadding3D(padding), keras.layers.Conv3D(4, kernel, padding="valid")])
    folded = fast.UpsampledConv3D(4, kernel, size, padding)
    folded.build(x.shape)
    kernel_value = rng.standard_normal(folded.kernel.shape).astype(np.float32)
    bias_value = rng.standard_normal(4).astype(np.float32)
    stock.layers[-1].set_weights([kernel_value, bias_value])
    folded.set_weights([kernel_value, bias_value])
    upstream = None
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a, b = stock(x), folded(x)
        upstream = tf.constant(rng.standard_normal(a.shape), tf.float32)
        la, lb = tf.reduce_sum(a * upstream), tf.reduce_sum(b * upstream)
    assert a.shape == b.shape == folded.compute_output_shape(x.shape)
    assert rel_err(a, b) < 1e-5
    ga = tape.gradient(la, [x, *stock.layers[-1].trainable_variables])
    gb = tape.gradient(lb, [x, folded.kernel, folded.bias])
    for u, v in zip(ga, gb):
        assert rel_err(u, v) < 1e-5


def test_upsampled_conv_rejects_padding_wider_than_a_coarse_cell():
    with pytest.raises(ValueError, match="conv_x.*padding"):
        fast.UpsampledConv3D(2, (3, 3, 3), (2, 2, 2), (3, 0, 0), name="conv_x")


def test_upsampled_conv_first_built_in_a_graph_then_used_eagerly_and_on_other_batches():
    layer = fast.UpsampledConv3D(2, (3, 3, 3), (2, 2, 2), (1, 1, 1))
    traced = tf.function(lambda x: layer(x))
    shape_in_graph = traced(tf.ones([2, 4, 4, 3, 1])).shape
    eager = layer(tf.ones([5, 4, 4, 3, 1]))  # eager, another batch size
    assert tuple(shape_in_graph) == (2, 8, 8, 6, 2) and tuple(eager.shape) == (5, 8, 8, 6, 2)
    with pytest.raises(ValueError):  # another spatial shape: refused, not silently cropped
        layer(tf.ones([1, 5, 4, 3, 1]))


@pytest.mark.parametrize("epsilon", [1e-6, 1e-3])
def test_fast_batch_norm_matches_keras_values_gradients_and_moving_statistics(epsilon, monkeypatch):
    calls = []
    original = fast._batch_norm_train
    monkeypatch.setattr(fast, "_batch_norm_train", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((3, 7, 6, 5, 4)) * 2 + 1, tf.float32)
    upstream = tf.constant(rng.standard_normal(x.shape), tf.float32)
    stock = keras.layers.BatchNormalization(epsilon=epsilon)
    mine = fast.FastBatchNormalization(epsilon=epsilon)
    stock.build(x.shape)
    mine.build(x.shape)
    weights = [rng.standard_normal(4).astype(np.float32) + 1, rng.standard_normal(4).astype(np.float32),
               np.zeros(4, np.float32), np.ones(4, np.float32)]
    stock.set_weights(weights)
    mine.set_weights(weights)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a, b = stock(x, training=True), mine(x, training=True)
        la, lb = tf.reduce_sum(a * upstream), tf.reduce_sum(b * upstream)
    assert rel_err(a, b) < 1e-5
    for u, v in zip(tape.gradient(la, [x, stock.gamma, stock.beta]),
                    tape.gradient(lb, [x, mine.gamma, mine.beta])):
        assert rel_err(u, v) < 1e-4
    for u, v in zip(stock.get_weights()[2:], mine.get_weights()[2:]):  # moving mean, variance
        np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mine.get_weights()[2], 0.0)  # the update did happen
    assert calls == [1]  # through the hand-written path, not the parent
    np.testing.assert_allclose(mine(x, training=False), stock(x, training=False), rtol=1e-5, atol=1e-5)


def test_dropout_is_bitwise_tf_stateless_dropout_and_its_gradient_the_scaled_mask():
    x = tf.random.stateless_normal([4, 9, 8, 7, 3], seed=[1, 2])
    seed = tf.constant([5, 6], tf.int32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fast.stateless_dropout(x, 0.2, seed)
    expected = tf.nn.experimental.stateless_dropout(x, rate=0.2, seed=seed)
    # Bitwise on purpose: same shapes, element-wise only; kept cells are x * (1 / 0.8) rounded
    # once on both paths, dropped ones 0.
    np.testing.assert_array_equal(y.numpy(), expected.numpy())
    grad = tape.gradient(y, x).numpy()
    kept = expected.numpy() != 0
    np.testing.assert_allclose(grad[kept], 1 / 0.8, rtol=1e-6)
    assert np.all(grad[~kept] == 0) and 0.7 < kept.mean() < 0.9


def test_leaky_relu_refuses_a_negative_slope():
    with pytest.raises(ValueError, match="alpha"):
        fast.leaky_relu(tf.ones([2]), -0.5)


def test_invert_power_and_leaky_relu_match_tensorflow_values_and_gradients():
    x = tf.constant(np.concatenate([np.linspace(-2, 3, 101), [0.0, 1e-30, 1e-6]]), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        outputs = [(fast.invert_power(x, 0.85), tf.pow(tf.nn.relu(x), 1 / 0.85)),
                   (fast.leaky_relu(x, 0.3), tf.nn.leaky_relu(x, 0.3))]
    for mine, ref in outputs:
        np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(tape.gradient(mine, x), tape.gradient(ref, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["full", "small", "fixed_angle"])
def test_fused_networks_equal_stock_networks_with_the_same_weights(name):
    preset = get_preset(name)
    stock_g, fused_g = build_generator(preset, implementation="keras"), build_generator(preset)
    stock_d = Discriminator(preset, implementation="keras")
    fused_d = Discriminator(preset)
    fused_g.set_weights(stock_g.get_weights())
    fused_d.set_weights(stock_d.get_weights())
    latent = tf.random.stateless_normal([2, preset.generator.latent_dim], seed=[3, 4])
    seed = tf.constant([7, 8], tf.int32)
    images = [g(latent, training=True) for g in (stock_g, fused_g)]
    assert rel_err(*images) < 1e-4
    heads = [d(images[0], training=True, dropout_seed=seed) for d in (stock_d, fused_d)]
    for key in heads[0]:
        assert rel_err(heads[0][key], heads[1][key]) < 1e-4, key

    def generator_grads(g, d, z):
        with tf.GradientTape() as tape:
            out = d(g(z, training=True), training=False)
            loss = tf.add_n([tf.reduce_sum(v) for v in out.values()])
        return tape.gradient(loss, g.trainable_variables)

    # The discriminator update path: training mode (batch norm statistics, dropout masks).
    d_grads = []
    for d in (stock_d, fused_d):
        with tf.GradientTape() as tape:
            out = d(images[0], training=True, dropout_seed=seed)
            loss = tf.reduce_sum(out["realfake"]) + tf.reduce_sum(out["energy"])
        d_grads.append(tape.gradient(loss, d.trainable_variables))
    assert max(rel_err(u, v) for u, v in zip(*d_grads)) < 1e-3

    reference = generator_grads(stock_g, stock_d, latent)
    # The stock model's own float32 noise: the same batch in reverse order (same sums, other
    # summation order). Deep batch-normalised generators amplify it to percents.
    noise = [rel_err(u, v) for u, v in
             zip(reference, generator_grads(stock_g, stock_d, tf.reverse(latent, [0])))]
    errors = [rel_err(u, v) for u, v in zip(reference, generator_grads(fused_g, fused_d, latent))]
    assert max(errors) <= max(2 * max(noise), 1e-4)
    assert float(np.median(errors)) <= max(2 * float(np.median(noise)), 1e-5)


def test_exported_generator_uses_stock_layers_and_reproduces_the_fused_model(tmp_path):
    preset = get_preset("small")
    generator = build_generator(preset)
    assert any(isinstance(l, fast.UpsampledConv3D) for l in generator.layers)
    export_generator(generator, "small", str(tmp_path), {"seed": 0})
    loaded = load_generator(str(tmp_path)).model
    assert all(type(l).__module__.startswith("keras.") for l in loaded.layers)
    latent = tf.random.stateless_normal([2, preset.generator.latent_dim], seed=[1, 1])
    assert rel_err(generator(latent, training=False), loaded(latent, training=False)) < 1e-5


def test_flop_counts_give_model_flops_for_stock_and_executed_flops_for_fused_generators():
    preset = get_preset("full")
    stock, fused = build_generator(preset, implementation="keras"), build_generator(preset)
    assert round(generator_flops(stock) / 2e9, 2) == 3.06  # conventions.md: ~3.1 G (multiply-adds)
    # conv0 on the fine grid: 49x49x41 outputs x 6x6x8 taps x 8 in x 8 out multiply-adds;
    # folded: 10x10x8 coarse outputs x 2x2x3 taps x 8 in x (216 phases x 8 filters).
    folded = 2 * (10 * 10 * 8) * (2 * 2 * 3) * 8 * (216 * 8)
    assert generator_flops(stock) - generator_flops(fused) == 2 * 49 * 49 * 41 * 288 * 8 * 8 - folded


def test_train_config_layer_choices_are_the_model_implementations():
    from trainer.config import LAYERS
    from trainer.models import IMPLEMENTATIONS
    assert LAYERS == IMPLEMENTATIONS
    with pytest.raises(ValueError, match="implementation"):
        build_generator(get_preset("tiny"), implementation="cudnn")
