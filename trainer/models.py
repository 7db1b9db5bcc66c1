"""3DGAN networks: the conditional generator and the four-head discriminator, built from presets."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from data_prep.angle import ANGLE_DEFINITIONS, EMPTY_SHOWER_ANGLE, ZPROJ_FLOOR
from trainer import layers as fast
from trainer.presets import ModelPreset, generator_output_shape

HEADS = ("realfake", "energy", "angle", "ecal_sum")

# How the networks are assembled. "fused": trainer.layers' equivalent forms (upsampling folded
# into the first convolution, closed-form batch norm gradient, multiply-mask dropout, Pow-free
# power gradient, remapper-safe LeakyReLU), used for training. "keras": the stock layers one by one, as the published code builds them;
# used for export (a .keras file that loads without caloforge) and as the benchmark reference.
IMPLEMENTATIONS = ("fused", "keras")


def _batch_norm_class(implementation: str) -> type:
    """The batch norm layer of an implementation; rejects unknown implementations."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}")
    return fast.FastBatchNormalization if implementation == "fused" else keras.layers.BatchNormalization


def build_generator(preset: ModelPreset, precision: str = "float32",
                    sync_batch_norm: bool = False, implementation: str = "fused") -> keras.Model:
    """Functional generator: latent [E/scale, angle, noise...] -> power-transformed shower.

    The dtype policy is passed to every layer instead of set globally, so a float32 copy
    for export can be built in the same process as a mixed-precision training model.
    sync_batch_norm makes BatchNormalization use global-batch statistics across replicas:
    Keras 3 keeps one unsynchronised moving-statistics copy per replica otherwise, so
    workers would end with different generators.
    Both implementations hold the same weights in the same order (set_weights moves a trained
    fused model into a stock one) and compute the same function.

    Raises:
        ValueError: if the recipe does not produce the preset's image shape, or for an unknown
            implementation.
    """
    batch_norm = _batch_norm_class(implementation)
    fused = implementation == "fused"
    spec = preset.generator
    out_shape = generator_output_shape(spec)
    if tuple(out_shape) != tuple(preset.image_shape):
        raise ValueError(f"preset {preset.name!r}: generator recipe gives {out_shape}, "
                         f"image_shape is {preset.image_shape}")
    dt = precision
    latent = keras.Input(shape=(spec.latent_dim,), name="latent")
    x = keras.layers.Dense(math.prod(spec.seed_shape), dtype=dt, name="dense")(latent)
    x = keras.layers.Reshape(spec.seed_shape, dtype=dt, name="reshape")(x)
    first = spec.convs[0] if spec.convs else spec.output
    fold_upsampling = fused and all(p <= u for p, u in zip(first.padding, spec.upsampling))
    if not fold_upsampling:
        x = keras.layers.UpSampling3D(spec.upsampling, dtype=dt, name="upsample")(x)
    for i, conv in enumerate(spec.convs):
        if i == 0 and fold_upsampling:
            x = fast.UpsampledConv3D(conv.filters, conv.kernel, spec.upsampling, conv.padding,
                                     kernel_initializer=conv.initializer, dtype=dt, name="conv0")(x)
        else:
            x = _padded_conv(x, conv, dt, f"pad{i}", f"conv{i}")
        x = keras.layers.ReLU(dtype=dt, name=f"relu{i}")(x)
        if conv.batch_norm:
            x = batch_norm(epsilon=spec.bn_epsilon, synchronized=sync_batch_norm,
                           dtype=dt, name=f"bn{i}")(x)
    out = spec.output
    if fold_upsampling and not spec.convs:
        x = fast.UpsampledConv3D(1, out.kernel, spec.upsampling, out.padding,
                                 kernel_initializer=out.initializer, dtype=dt, name="conv_out")(x)
    else:
        x = _padded_conv(x, out, dt, "pad_out", "conv_out", filters=1)
    # The output ReLU runs in float32 so exported showers and the physics heads are float32.
    image = keras.layers.ReLU(dtype="float32", name="shower")(x)
    return keras.Model(latent, image, name=f"generator_{preset.name}")


def _padded_conv(x, conv, dtype: str, pad_name: str, conv_name: str, filters: int | None = None):
    """[ZeroPadding3D] -> Conv3D(valid) of one generator recipe entry."""
    if any(conv.padding):
        x = keras.layers.ZeroPadding3D(conv.padding, dtype=dtype, name=pad_name)(x)
    return keras.layers.Conv3D(conv.filters if filters is None else filters, conv.kernel,
                               padding="valid", kernel_initializer=conv.initializer, dtype=dtype,
                               name=conv_name)(x)


def measured_angle_tf(raw: tf.Tensor, definition: str = "published") -> tf.Tensor:
    """TensorFlow twin of data_prep.angle.measured_angle (same formulas, float32, differentiable).

    Args:
        raw: (B, X, Y, Z) or (B, X, Y, Z, 1) cell energies in raw units.
        definition: "published" (3DGAN's measured angle) or "slope" (data_prep.angle).

    Returns:
        (B,) angle in radians; EMPTY_SHOWER_ANGLE (100) for an empty shower under "published",
        pi/2 for an empty or single-layer shower under "slope".
    """
    e = tf.nn.relu(tf.cast(raw, tf.float32))
    if e.shape.rank == 5:
        e = e[..., 0]
    return angle_of_cells(e, tf.reduce_sum(e, axis=1), definition)


def angle_of_cells(cells: tf.Tensor, eyz: tf.Tensor, definition: str = "published") -> tf.Tensor:
    """The measured angle of (B, X, Y, Z) cells E >= 0 whose x-projection eyz (B, Y, Z) the
    caller already has (the fused discriminator shares it with the ECAL-sum head).

    Raises:
        ValueError: for an unknown definition.
    """
    if definition not in ANGLE_DEFINITIONS:
        raise ValueError(f"angle definition {definition!r} is not one of "
                         f"{', '.join(ANGLE_DEFINITIONS)}")
    if definition == "slope":
        return angle_from_yz_projection(eyz)
    nx, ny = cells.shape[1], cells.shape[2]
    xc = tf.range(nx, dtype=tf.float32) + 0.5
    yc = tf.range(ny, dtype=tf.float32) + 0.5
    xw = tf.einsum("bxyz,x->bz", cells, xc)
    yw = tf.einsum("byz,y->bz", eyz, yc)
    return published_angle_from_layer_sums(tf.reduce_sum(eyz, axis=1), xw, yw)


def published_angle_from_layer_sums(ez: tf.Tensor, xw: tf.Tensor, yw: tf.Tensor) -> tf.Tensor:
    """3DGAN's measured angle from per-layer sums (B, Z): E, E (x + 0.5), E (y + 0.5); the
    formula of data_prep.angle.angle_from_layer_sums.

    Every division has a guarded denominator (not only a guarded result): an empty layer or
    shower then has a zero gradient instead of the NaN that 0 * (0 / 0) gives through tf.where.
    """
    zc = tf.range(ez.shape[1], dtype=tf.float32) + 0.5
    w = tf.reduce_sum(ez, axis=1)
    has = w > 0
    safe_w = tf.where(has, w, tf.ones_like(w))
    x_ref = tf.reduce_sum(xw, axis=1) / safe_w
    y_ref = tf.reduce_sum(yw, axis=1) / safe_w
    z_ref = tf.reduce_sum(ez * zc, axis=1) / safe_w
    layer = ez > 0
    safe_ez = tf.where(layer, ez, tf.ones_like(ez))
    x_mid = xw / safe_ez
    y_mid = yw / safe_ez
    dz = zc[None, :] - z_ref[:, None]
    zproj = tf.sqrt(tf.maximum(tf.square(x_mid - x_ref[:, None]) + tf.square(dz), ZPROJ_FLOOR))
    m = (y_mid - y_ref[:, None]) / zproj
    m = tf.where(dz < 0, -m, m)
    weights = tf.where(layer, zc[None, :] * tf.ones_like(ez), tf.zeros_like(ez))
    total = tf.reduce_sum(weights, axis=1)
    safe_total = tf.where(total > 0, total, tf.ones_like(total))
    angle = tf.reduce_sum((math.pi / 2.0 - tf.atan(m)) * weights, axis=1) / safe_total
    return tf.where(has, angle, tf.fill(tf.shape(angle), EMPTY_SHOWER_ANGLE))


def angle_from_yz_projection(eyz: tf.Tensor) -> tf.Tensor:
    """The "slope" angle from the shower already summed over x: (B, Y, Z) -> (B,) radians."""
    ny, nz = eyz.shape[1], eyz.shape[2]
    y = tf.range(ny, dtype=tf.float32)
    z = tf.range(nz, dtype=tf.float32)
    w = tf.reduce_sum(eyz, axis=[1, 2])
    safe_w = tf.where(w > 0, w, tf.ones_like(w))
    ez = tf.reduce_sum(eyz, axis=1)  # (B, Z)
    ey = tf.reduce_sum(eyz, axis=2)  # (B, Y)
    zbar = tf.reduce_sum(ez * z, axis=1) / safe_w
    ybar = tf.reduce_sum(ey * y, axis=1) / safe_w
    dy = y[None, :] - ybar[:, None]  # (B, Y)
    dz = z[None, :] - zbar[:, None]  # (B, Z)
    # Centred sums: no cancellation of E[yz] - E[y]E[z] in float32.
    cov = tf.reduce_sum(eyz * dy[:, :, None] * dz[:, None, :], axis=[1, 2]) / safe_w
    var = tf.reduce_sum(ez * dz * dz, axis=1) / safe_w
    ok = tf.logical_and(w > 0, var > 1e-12)
    slope = tf.where(ok, cov / tf.where(ok, var, tf.ones_like(var)), tf.zeros_like(var))
    return math.pi / 2.0 - tf.atan(slope)


def ecal_sum_tf(raw: tf.Tensor) -> tf.Tensor:
    """(B,) total raw energy of each event (float32)."""
    e = tf.nn.relu(tf.cast(raw, tf.float32))
    return tf.reduce_sum(tf.reshape(e, [tf.shape(e)[0], -1]), axis=1)


def invert_power_tf(image: tf.Tensor, power: float) -> tf.Tensor:
    """Undo the x ** power preprocessing (float32; negative values clipped to 0)."""
    return tf.pow(tf.nn.relu(tf.cast(image, tf.float32)), 1.0 / power)


class Discriminator(keras.Model):
    """Four-head 3DGAN discriminator.

    Heads: real/fake logit (Dense 1; the sigmoid is applied in the loss for stability),
    energy regression (Dense 1, linear, in E/scale units), and two parameter-free heads
    computed on image ** (1/power): the measured angle (data_prep.angle's `angle_definition`,
    "published" by default, the formula of real files' mtheta) and the raw ECAL sum.

    Dropout is applied with stateless ops keyed by an explicit seed, so a training step is a
    pure function of (weights, batch, step seed): resumed runs, the custom loop and keras fit
    see identical dropout masks, and no stateful RNG variable needs syncing across replicas.
    """

    def __init__(self, preset: ModelPreset, precision: str = "float32",
                 sync_batch_norm: bool = False, implementation: str = "fused",
                 angle_definition: str = "published", **kwargs):
        super().__init__(name=kwargs.pop("name", f"discriminator_{preset.name}"), **kwargs)
        batch_norm = _batch_norm_class(implementation)
        if angle_definition not in ANGLE_DEFINITIONS:
            raise ValueError(f"angle_definition={angle_definition!r}; valid: "
                             f"{', '.join(ANGLE_DEFINITIONS)}")
        self.implementation = implementation
        self.angle_definition = angle_definition
        spec = preset.discriminator
        dt = precision
        self.preset = preset
        self.power = preset.power
        self.dropout_rate = spec.dropout
        self.first = keras.layers.Conv3D(spec.first_filters, spec.first_kernel, padding="same",
                                         dtype=dt, name="conv_first")
        self.first_act = keras.layers.LeakyReLU(spec.leaky_alpha, dtype=dt, name="leaky_first")
        self.blocks = []
        for i, block in enumerate(spec.blocks):
            layers = []
            if any(block.padding):
                layers.append(keras.layers.ZeroPadding3D(block.padding, dtype=dt, name=f"pad{i}"))
            layers.append(keras.layers.Conv3D(block.filters, block.kernel, padding="valid",
                                              dtype=dt, name=f"conv{i}"))
            layers.append(keras.layers.LeakyReLU(spec.leaky_alpha, dtype=dt, name=f"leaky{i}"))
            if block.batch_norm:
                layers.append(batch_norm(epsilon=spec.bn_epsilon, synchronized=sync_batch_norm,
                                         dtype=dt, name=f"bn{i}"))
            self.blocks.append(layers)
        # float32: CPUs have no float16 AvgPool3D kernel, and pooling costs nothing either way.
        self.pool = keras.layers.AveragePooling3D(spec.pool, dtype="float32", name="pool")
        self.flatten = keras.layers.Flatten(dtype=dt, name="flatten")
        self.realfake = keras.layers.Dense(1, dtype="float32", name="realfake")
        self.energy = keras.layers.Dense(1, dtype="float32", name="energy")
        self.build((None, *preset.image_shape, 1))

    def build(self, input_shape) -> None:
        self.call(tf.zeros((1, *input_shape[1:]), tf.float32))
        self.built = True

    def _dropout(self, x: tf.Tensor, training: bool, seed: tf.Tensor | None, index: int) -> tf.Tensor:
        if not training or seed is None or self.dropout_rate <= 0:
            return x
        layer_seed = tf.random.experimental.stateless_fold_in(seed, index)
        if self.implementation == "fused":
            return fast.stateless_dropout(x, self.dropout_rate, layer_seed)
        return tf.nn.experimental.stateless_dropout(x, rate=self.dropout_rate, seed=layer_seed)

    def _activation(self, layer: keras.layers.LeakyReLU, x: tf.Tensor) -> tf.Tensor:
        if self.implementation == "fused":
            return fast.leaky_relu(x, float(layer.negative_slope))
        return layer(x)

    def features(self, images: tf.Tensor, training: bool = False,
                 dropout_seed: tf.Tensor | None = None) -> tf.Tensor:
        """Flattened trunk features (B, F)."""
        x = self._activation(self.first_act, self.first(images))
        x = self._dropout(x, training, dropout_seed, 0)
        for i, layers in enumerate(self.blocks):
            for layer in layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    x = layer(x, training=training)
                elif isinstance(layer, keras.layers.LeakyReLU):
                    x = self._activation(layer, x)
                else:
                    x = layer(x)
            x = self._dropout(x, training, dropout_seed, i + 1)
        return self.flatten(self.pool(x))

    def call(self, images: tf.Tensor, training: bool = False,
             dropout_seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Run all four heads on a batch of (B, X, Y, Z, 1) power-transformed images.

        Returns:
            dict of (B,) float32 tensors: realfake (logit), energy, angle (rad), ecal_sum (raw).
        """
        feats = self.features(images, training=training, dropout_seed=dropout_seed)
        heads = {
            "realfake": tf.cast(self.realfake(feats), tf.float32)[:, 0],
            "energy": tf.cast(self.energy(feats), tf.float32)[:, 0],
        }
        if self.implementation == "fused":
            # One power pass and the projections shared by both parameter-free heads.
            raw = fast.invert_power(images, self.power)[..., 0]
            eyz = tf.reduce_sum(raw, axis=1)
            heads["angle"] = angle_of_cells(raw, eyz, self.angle_definition)
            heads["ecal_sum"] = tf.reduce_sum(eyz, axis=[1, 2])
        else:
            raw = invert_power_tf(images, self.power)
            heads["angle"] = measured_angle_tf(raw, self.angle_definition)
            heads["ecal_sum"] = ecal_sum_tf(raw)
        return heads

    def layer_table(self) -> list[tuple[str, tuple, int]]:
        """(layer name, output shape without batch, parameter count) along the trunk and heads."""
        shape = (None, *self.preset.image_shape, 1)
        rows = []
        trunk = [self.first, self.first_act] + [l for b in self.blocks for l in b] + [self.pool, self.flatten]
        for layer in trunk:
            shape = layer.compute_output_shape(shape)
            rows.append((layer.name, tuple(shape[1:]), int(layer.count_params())))
        for head in (self.realfake, self.energy):
            rows.append((head.name, (1,), int(head.count_params())))
        return rows


def generator_layer_table(generator: keras.Model) -> list[tuple[str, tuple, int]]:
    """(layer name, output shape without batch, parameter count) for a functional generator."""
    return [(l.name, tuple(l.output.shape[1:]), int(l.count_params())) for l in generator.layers]
