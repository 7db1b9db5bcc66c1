"""trainer models: the full preset's layer shapes and parameter counts, every preset's output
shape, and the parameter-free discriminator heads against data_prep's NumPy definitions."""

import math

import numpy as np
import pytest
import tensorflow as tf

from data_prep.angle import EMPTY_SHOWER_ANGLE, measured_angle
from trainer.models import Discriminator, build_generator, generator_layer_table, measured_angle_tf
from trainer.presets import PRESETS, get_preset

# conventions.md: the published variable-angle 3DGAN, layer by layer.
FULL_GENERATOR_SHAPES = [
    ("dense", (5184,)), ("reshape", (9, 9, 8, 8)), ("upsample", (54, 54, 48, 8)),
    ("conv0", (49, 49, 41, 8)), ("relu0", (49, 49, 41, 8)), ("bn0", (49, 49, 41, 8)),
    ("pad1", (53, 53, 43, 8)), ("conv1", (50, 50, 38, 6)), ("relu1", (50, 50, 38, 6)), ("bn1", (50, 50, 38, 6)),
    ("pad2", (54, 54, 40, 6)), ("conv2", (51, 51, 35, 6)), ("relu2", (51, 51, 35, 6)), ("bn2", (51, 51, 35, 6)),
    ("pad3", (55, 55, 37, 6)), ("conv3", (52, 52, 32, 6)), ("relu3", (52, 52, 32, 6)), ("bn3", (52, 52, 32, 6)),
    ("pad4", (54, 54, 32, 6)), ("conv4", (52, 52, 28, 6)), ("relu4", (52, 52, 28, 6)), ("bn4", (52, 52, 28, 6)),
    ("pad5", (54, 54, 28, 6)), ("conv5", (52, 52, 26, 6)), ("relu5", (52, 52, 26, 6)),
    ("conv_out", (51, 51, 25, 1)), ("shower", (51, 51, 25, 1)),
]
FULL_DISCRIMINATOR_SHAPES = [
    ("conv_first", (51, 51, 25, 16)), ("leaky_first", (51, 51, 25, 16)),
    ("pad0", (51, 51, 27, 16)), ("conv0", (47, 46, 22, 8)), ("leaky0", (47, 46, 22, 8)), ("bn0", (47, 46, 22, 8)),
    ("pad1", (47, 46, 24, 8)), ("conv1", (43, 41, 19, 8)), ("leaky1", (43, 41, 19, 8)), ("bn1", (43, 41, 19, 8)),
    ("conv2", (39, 36, 14, 8)), ("leaky2", (39, 36, 14, 8)), ("bn2", (39, 36, 14, 8)),
    ("pool", (19, 18, 7, 8)), ("flatten", (19152,)), ("realfake", (1,)), ("energy", (1,)),
]


def conv_params(k, cin, cout):
    return math.prod(k) * cin * cout + cout


def test_full_generator_layer_shapes_and_parameter_count():
    gen = build_generator(get_preset("full"), implementation="keras")  # the published layers
    table = generator_layer_table(gen)
    assert [(name, shape) for name, shape, _ in table[1:]] == FULL_GENERATOR_SHAPES
    # BN layers carry gamma, beta, moving mean and moving variance: 4 values per channel.
    # blocks: 8->6, 6->6, 6->6
    expected = (256 * 5184 + 5184 + conv_params((6, 6, 8), 8, 8) + conv_params((4, 4, 6), 8, 6)
                + 2 * conv_params((4, 4, 6), 6, 6) + conv_params((3, 3, 5), 6, 6)
                + conv_params((3, 3, 3), 6, 6) + conv_params((2, 2, 2), 6, 1) + 4 * 8 + 4 * 6 * 4)
    assert gen.count_params() == expected == 1_365_047  # "about 1.37 M" (conventions.md)
    assert dict((n, p) for n, _, p in table)["conv0"] == conv_params((6, 6, 8), 8, 8)
    # The training form folds the upsampling into conv0; every other layer is the same.
    fused = build_generator(get_preset("full"))
    fused_table = [(n, s) for n, s, _ in generator_layer_table(fused)[1:]]
    assert fused_table == [row for row in FULL_GENERATOR_SHAPES if row[0] != "upsample"]
    assert fused.count_params() == gen.count_params()


def test_full_discriminator_layer_shapes_and_parameter_count():
    disc = Discriminator(get_preset("full"))
    table = disc.layer_table()
    assert [(name, shape) for name, shape, _ in table] == FULL_DISCRIMINATOR_SHAPES
    expected = (conv_params((5, 6, 6), 1, 16) + conv_params((5, 6, 6), 16, 8)
                + 2 * conv_params((5, 6, 6), 8, 8) + 3 * 4 * 8 + 2 * (19152 + 1))
    assert disc.count_params() == expected


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_generates_its_image_shape_and_four_heads(name):
    preset = get_preset(name)
    gen = build_generator(preset)
    disc = Discriminator(preset)
    z = tf.random.normal([2, preset.generator.latent_dim])
    images = gen(z, training=False)
    assert tuple(images.shape) == (2, *preset.image_shape, 1)
    assert float(tf.reduce_min(images)) >= 0.0  # showers are non-negative
    out = disc(images, training=False)
    assert sorted(out) == ["angle", "ecal_sum", "energy", "realfake"]
    assert all(tuple(v.shape) == (2,) for v in out.values())


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="full, small, tiny, fixed_angle"):
        get_preset("huge")


def _tilted_showers(rng, n):
    """Random showers whose axis moves in y with depth (slope drawn per event)."""
    ecal = np.zeros((n, 51, 51, 25), np.float32)
    for i in range(n):
        slope = rng.uniform(-1.2, 1.2)
        for z in range(25):
            y = 25 + slope * (z - 12) + rng.normal(0, 0.5)
            yi = int(np.clip(round(y), 1, 49))
            ecal[i, 24:27, yi - 1:yi + 2, z] = rng.exponential(1.0, (3, 3)) * np.exp(-((z - 8) / 6) ** 2)
    return ecal


def _angle_test_showers():
    """Tilted random showers, an empty event, a one-layer event, dense noise and showers
    whose axis also moves in x, with empty layers inside."""
    rng = np.random.default_rng(7)
    raw = _tilted_showers(rng, 6)
    raw = np.concatenate([raw, np.zeros((1, 51, 51, 25), np.float32)])  # empty event
    one_layer = np.zeros((1, 51, 51, 25), np.float32)
    one_layer[0, 25, 25, 3] = 5.0
    xtilt = _tilted_showers(rng, 2).transpose(0, 2, 1, 3) + _tilted_showers(rng, 2)
    xtilt[:, :, :, 10] = 0.0
    return np.concatenate([raw, one_layer, rng.random((2, 51, 51, 25)).astype(np.float32), xtilt])


@pytest.mark.parametrize("definition", ["published", "slope"])
def test_angle_head_matches_data_prep_measured_angle(definition):
    raw = _angle_test_showers()
    expected = measured_angle(raw, definition)
    got = measured_angle_tf(tf.constant(raw), definition).numpy()
    # float32 against float64 sums over up to 65k cells: at most 5.5e-7 rad measured.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    empty = EMPTY_SHOWER_ANGLE if definition == "published" else np.pi / 2
    assert got[6] == pytest.approx(empty) and got[7] == pytest.approx(np.pi / 2)
    assert np.ptp(got[:6]) > 0.3  # the tilted showers really span different angles


@pytest.mark.parametrize("theta_deg,phi_deg", [(62.0, 90.0), (118.0, 60.0), (90.0, 120.0)])
def test_published_angle_head_reads_a_known_axis(theta_deg, phi_deg):
    from tests.test_angle import line_shower

    raw = line_shower(theta_deg, phi_deg=phi_deg, z_range=(4, 18))[None]
    got = measured_angle_tf(tf.constant(raw)).numpy()[0]
    assert np.degrees(got) == pytest.approx(theta_deg, abs=1e-3)


@pytest.mark.parametrize("implementation", ["fused", "keras"])
@pytest.mark.parametrize("definition", ["published", "slope"])
def test_discriminator_physics_heads_work_on_power_transformed_images(implementation, definition):
    preset = get_preset("tiny")
    disc = Discriminator(preset, implementation=implementation, angle_definition=definition)
    raw = _angle_test_showers()
    images = tf.constant(raw ** preset.power)[..., None]
    out = disc(images, training=False)
    np.testing.assert_allclose(out["ecal_sum"].numpy(), raw.reshape(len(raw), -1).sum(1), rtol=1e-4)
    # The power round trip costs float32 rounding on every cell: 2e-4 rad allowed.
    np.testing.assert_allclose(out["angle"].numpy(), measured_angle(raw, definition), rtol=0, atol=2e-4)


def test_discriminator_rejects_an_unknown_angle_definition():
    with pytest.raises(ValueError, match="angle_definition='axis'; valid: published, slope"):
        Discriminator(get_preset("tiny"), angle_definition="axis")


def test_published_angle_head_gradient_is_finite_with_empty_layers_and_showers():
    preset = get_preset("tiny")
    disc = Discriminator(preset)
    raw = _tilted_showers(np.random.default_rng(4), 3)
    raw[1, :, :, 12:] = 0.0  # empty layers behind the shower
    raw[2] = 0.0  # an empty shower: its head is the sentinel, its gradient zero
    images = tf.Variable(raw[..., None] ** preset.power)
    with tf.GradientTape() as tape:
        angle = disc(images, training=False)["angle"]
        loss = tf.reduce_sum(angle)
    grad = tape.gradient(loss, images).numpy()
    assert angle.numpy()[2] == pytest.approx(EMPTY_SHOWER_ANGLE)
    assert np.all(np.isfinite(grad)) and np.abs(grad[:2]).max() > 0
    assert np.abs(grad[2]).max() == 0.0


def test_discriminator_batch_norm_epsilon_and_generator_initialisers_are_published():
    # Published: discriminator BatchNormalization(epsilon=1e-6); generator hidden Conv3D
    # kernel_initializer='he_uniform', output Conv3D 'glorot_normal'.
    for name in ("full", "small", "tiny"):
        preset = get_preset(name)
        for implementation in ("fused", "keras"):
            disc = Discriminator(preset, implementation=implementation)
            bns = [l for block in disc.blocks for l in block if "bn" in l.name]
            assert bns and all(bn.epsilon == 1e-6 for bn in bns)
            gen = build_generator(preset, implementation=implementation)
            convs = [l for l in gen.layers if l.name.startswith("conv")]
            kinds = {l.name: type(l.kernel_initializer).__name__ for l in convs}
            assert kinds.pop("conv_out") == "GlorotNormal"
            assert kinds and set(kinds.values()) == {"HeUniform"}, kinds


def test_physics_heads_pass_gradients_to_generated_images():
    preset = get_preset("tiny")
    disc = Discriminator(preset)
    images = tf.Variable(tf.random.uniform([2, *preset.image_shape, 1]))
    with tf.GradientTape() as tape:
        out = disc(images, training=False)
        loss = tf.reduce_sum(out["angle"]) + tf.reduce_sum(out["ecal_sum"])
    grad = tape.gradient(loss, images)
    assert np.all(np.isfinite(grad.numpy())) and float(tf.reduce_max(tf.abs(grad))) > 0
