"""Faster, numerically equivalent forms of the operations that dominate a 3DGAN step on CPU.

A profile of one training step (bench/train.py, 2 CPU cores) shows where the time goes besides
the convolutions: Keras 3's BatchNormalization computes moments with separate mean, squared
difference and broadcast passes and autodiff doubles them; dropout selects twice over every
activation; the x ** (1/0.85) heads pay a second Pow in their gradient; grappler's remapper
gives up on the whole training graph (so no Conv3D + BiasAdd + activation fusion) because of
LeakyReluGrad and Pad fan-outs; and the generator's first convolution runs over a
nearest-neighbour upsampled grid in which each 6x6x6 block is constant, so most of its
multiply-adds recompute the same sums (that one layer is over a third of the full preset's
FLOPs).

Each replacement here computes the same function as the stock layers (tests compare values
and gradients), keeps the same weights in the same order, and is used only for training:
exported generators are rebuilt from stock Keras layers so a `.keras` file loads anywhere.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf


def _polyphase_matrix(factor: int, kernel: int) -> np.ndarray:
    """(factor, taps, kernel) 0/1 matrix: which kernel tap of phase r reads coarse offset j.

    For an output cell whose shifted fine index is s = factor * q + r, kernel tap k reads fine
    cell s + k, i.e. coarse cell q + (r + k) // factor (see UpsampledConv3D).
    """
    taps = (factor - 1 + kernel - 1) // factor + 1
    m = np.zeros((factor, taps, kernel), np.float32)
    for r in range(factor):
        for k in range(kernel):
            m[r, (r + k) // factor, k] = 1.0
    return m


@keras.saving.register_keras_serializable(package="caloforge")
class UpsampledConv3D(keras.layers.Layer):
    """UpSampling3D(size) -> ZeroPadding3D(padding) -> Conv3D(valid, bias), on the coarse grid.

    Nearest-neighbour upsampling makes the fine grid piecewise constant, so each output cell
    only sees a few distinct coarse cells (2 x 2 x 3 for the full preset's 6x6x8 kernel over a
    6x upsampled grid, instead of 288 fine cells). Grouping the output cells by their phase
    (position modulo the upsampling factor) turns the layer into one small "valid" convolution
    on the coarse grid with factor^3 x filters output channels, whose kernel is a fixed linear
    map of the Conv3D kernel, followed by a depth-to-space shuffle and a crop. Same function,
    same weights (`kernel` (kx, ky, kz, in, filters), `bias`), and a matrix shape CPUs and
    accelerators run well. Far fewer multiply-adds when the kernel is wider than the
    upsampling factor (full preset: 0.13 instead of 1.81 GMAC per event); about as many or
    somewhat more when it is not (small, tiny), where it still avoids materialising the
    upsampled grid.

    Requires padding <= size on every axis (zero padding then lies within one coarse cell).
    """

    def __init__(self, filters: int, kernel_size: Sequence[int], size: Sequence[int],
                 padding: Sequence[int] = (0, 0, 0), kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.size = tuple(int(s) for s in size)
        self.padding = tuple(int(p) for p in padding)
        if any(p > s for p, s in zip(self.padding, self.size)):
            raise ValueError(f"{self.name}: padding {self.padding} must not exceed the "
                             f"upsampling size {self.size} on any axis")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape) -> None:
        channels = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(*self.kernel_size, channels, self.filters),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        # NumPy, not tf.constant: a constant made here would belong to whatever graph the
        # first call traces in, and a later eager call or retrace could not use it.
        self._mix = [_polyphase_matrix(u, k) for u, k in zip(self.size, self.kernel_size)]
        coarse = [int(n) for n in input_shape[1:4]]
        # The geometry is fixed here: refuse other spatial shapes instead of cropping wrongly.
        self.input_spec = keras.layers.InputSpec(shape=(None, *coarse, channels))
        self._geometry = [self._axis_geometry(n, u, p, k) for n, u, p, k in
                          zip(coarse, self.size, self.padding, self.kernel_size)]

    @staticmethod
    def _axis_geometry(n: int, u: int, p: int, k: int) -> tuple[int, int, int, int]:
        """(zeros after the coarse axis, coarse outputs q, first fine index kept, fine outputs).

        The coarse axis gets one zero cell in front (shift s = out + u - p >= 0) and enough
        zero cells behind for every needed q; fine outputs are s in [u - p, u - p + out).
        """
        out = n * u + 2 * p - k + 1
        taps = (u - 1 + k - 1) // u + 1
        q_needed = (u - p + out - 1) // u + 1
        after = max(0, q_needed + taps - 1 - (1 + n))
        return after, q_needed, u - p, out

    def compute_output_shape(self, input_shape):
        dims = [None if n is None else int(n) * u + 2 * p - k + 1 for n, u, p, k in
                zip(input_shape[1:4], self.size, self.padding, self.kernel_size)]
        return (input_shape[0], *dims, self.filters)

    def _coarse_kernel(self, dtype) -> tf.Tensor:
        # weff[jx, jy, jz, c, rx, ry, rz, f] = sum_k M[rx, jx, kx] M[ry, jy, ky] M[rz, jz, kz] W[k, c, f]
        mx, my, mz = (tf.constant(m) for m in self._mix)
        kernel = tf.cast(self.kernel, tf.float32)
        weff = tf.einsum("aix,bjy,ckz,xyzmf->ijkmabcf", mx, my, mz, kernel)
        t = [int(d) for d in weff.shape]
        weff = tf.reshape(weff, [t[0], t[1], t[2], t[3], t[4] * t[5] * t[6] * t[7]])
        return tf.cast(weff, dtype)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(inputs)
        dtype = x.dtype
        (ax, qx, sx, ox), (ay, qy, sy, oy), (az, qz, sz, oz) = self._geometry
        # Zero cells around the (small) coarse grid by concatenation: grappler's remapper fails
        # on a Pad feeding a convolution whose gradient reads the padded shape (TF 2.21).
        for axis, after in ((1, ax), (2, ay), (3, az)):
            x = _zero_extend(x, axis, 1, after)
        y = tf.nn.conv3d(x, self._coarse_kernel(dtype), strides=[1, 1, 1, 1, 1], padding="VALID")
        ux, uy, uz = self.size
        if tuple(y.shape[1:4]) != (qx, qy, qz):
            y = tf.slice(y, [0, 0, 0, 0, 0], [-1, qx, qy, qz, -1])
        y = tf.reshape(y, [-1, qx, qy, qz, ux, uy, uz, self.filters])
        y = tf.transpose(y, [0, 1, 4, 2, 5, 3, 6, 7])
        y = tf.reshape(y, [-1, qx * ux, qy * uy, qz * uz, self.filters])
        # tf.slice, not [...] indexing: its gradient is one Pad instead of a StridedSliceGrad.
        y = tf.slice(y, [0, sx, sy, sz, 0], [-1, ox, oy, oz, -1])
        return tf.nn.bias_add(y, tf.cast(self.bias, dtype))

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "size": self.size, "padding": self.padding,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="caloforge")
class FastBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization with a hand-written training-mode gradient.

    Keras 3 builds batch norm from moments, broadcasts and arithmetic and lets autodiff
    differentiate all of it (about a dozen passes over the activation, several allocating
    broadcasts); this computes the same forward pass in five passes and the closed-form
    gradient dx = g * dy + xc * c2 + c1 (g = gamma / sigma, per-channel c1, c2) in seven.
    TensorFlow's FusedBatchNormV3 kernel was measured slower still on CPU for 5-D inputs with
    few channels (no oneDNN rewrite for 5-D), so it is not used. Same variables and the same
    moving-average update with the biased batch variance as the parent; the parent handles
    what this does not (synchronized statistics, renorm, masks, a non-last axis, inference).
    """

    def call(self, inputs, training=None, mask=None):
        rank = len(inputs.shape)
        if (not (training and self.trainable) or mask is not None or self.synchronized
                or self.renorm or self.axis not in (-1, rank - 1)
                or keras.backend.backend() != "tensorflow"
                or tf.as_dtype(inputs.dtype) not in (tf.float16, tf.bfloat16, tf.float32)):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # as the parent: statistics in float32
        channels = int(x.shape[-1])
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        y, mean, variance = _batch_norm_train(x, gamma, beta, self.epsilon)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return tf.cast(y, self.compute_dtype)


def _batch_norm_train(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float):
    """Training-mode batch norm over all axes but the last: (y, batch mean, biased variance)."""
    axes = list(range(len(x.shape) - 1))

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        n = tf.cast(tf.size(x, out_type=tf.int64) // tf.shape(x, out_type=tf.int64)[-1],
                    tf.float32)
        mean = tf.reduce_mean(x, axis=axes)
        xc = x - mean
        variance = tf.reduce_mean(tf.square(xc), axis=axes)
        inv = tf.math.rsqrt(variance + epsilon)
        g = gamma * inv
        y = xc * g + beta

        def grad(dy, d_mean, d_variance):
            # Statistics feed only the moving averages (assignments): no gradient through them.
            del d_mean, d_variance
            s1 = tf.reduce_sum(dy, axis=axes)
            s2 = tf.reduce_sum(dy * xc, axis=axes)
            d_gamma = s2 * inv
            c1 = -g * s1 / n
            c2 = -g * inv * inv * s2 / n
            dx = dy * g + (xc * c2 + c1)
            return dx, d_gamma, s1

        return (y, tf.stop_gradient(mean), tf.stop_gradient(variance)), grad

    return normalize(x, gamma, beta)


def _zero_extend(x: tf.Tensor, axis: int, before: int, after: int) -> tf.Tensor:
    """Concatenate `before` and `after` zero slices to `x` along `axis` (static shapes)."""
    parts = []
    for n in (before, after):
        shape = [tf.shape(x)[0]] + [n if a == axis else int(d) for a, d in
                                    enumerate(x.shape) if a > 0]
        parts.append(tf.zeros(shape, x.dtype) if n else None)
    pieces = [p for p in (parts[0], x, parts[1]) if p is not None]
    return tf.concat(pieces, axis=axis) if len(pieces) > 1 else x


def leaky_relu(x: tf.Tensor, alpha: float = 0.3) -> tf.Tensor:
    """tf.nn.leaky_relu whose gradient reads the output, not the input (same values).

    With alpha > 0 the output has the input's sign, so LeakyReluGrad(dy, y) equals
    LeakyReluGrad(dy, x). Reading y lets grappler fuse Conv3D + BiasAdd + LeakyRelu in
    training graphs; with the stock gradient its remapper fails on the whole graph (TF 2.21,
    "fanout LeakyReluGrad exist for missing node BiasAdd") and drops every fusion.

    Raises:
        ValueError: for alpha < 0 (the output's sign would no longer be the input's).
    """
    if alpha < 0:
        raise ValueError(f"leaky_relu: alpha={alpha} must be >= 0")

    @tf.custom_gradient
    def leaky(t):
        y = tf.nn.leaky_relu(t, alpha)

        def grad(dy):
            return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=alpha)

        return y, grad

    return leaky(x)


def stateless_dropout(x: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """Inverted dropout with a stateless mask, as one multiply forward and one backward.

    Same keep decision as tf.nn.experimental.stateless_dropout (uniform >= rate, same seed,
    same draw), but applied as x * (mask / keep) so the gradient is a single multiply by the
    saved mask instead of two selects.
    """
    keep = 1.0 - rate
    uniform = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype)
    mask = tf.cast(uniform >= rate, x.dtype) * tf.cast(1.0 / keep, x.dtype)
    return x * mask


def invert_power(image: tf.Tensor, power: float) -> tf.Tensor:
    """relu(image) ** (1 / power) in float32, with a gradient that reuses the forward Pow.

    Same values as trainer.models.invert_power_tf. The gradient a * x^a / x is computed from
    the forward result (one divide) instead of TensorFlow's second Pow x^(a - 1).
    """
    x = tf.nn.relu(tf.cast(image, tf.float32))
    exponent = 1.0 / power
    if exponent == 1.0:
        return x

    @tf.custom_gradient
    def power_of_nonnegative(t):
        y = tf.pow(t, exponent)

        def grad(dy):
            # t >= 0; at t == 0 y is 0 too, so the guarded divide gives the right 0. Below
            # ~6e-33 y underflows to 0 and so does this gradient (stock: ~1e-6): immaterial
            # for showers, whose cells are 0 or far above that.
            return dy * (exponent * y / tf.maximum(t, np.finfo(np.float32).tiny))

        return y, grad

    return power_of_nonnegative(x)
