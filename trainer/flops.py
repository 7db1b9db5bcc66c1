"""Analytic FLOP counts of the 3DGAN networks and of one training step (for benchmarks)."""

from __future__ import annotations

import math

import keras

from trainer.layers import UpsampledConv3D
from trainer.models import Discriminator

_COUNTED = (keras.layers.Conv3D, keras.layers.Dense, UpsampledConv3D)


def _layer_flops(layer: keras.layers.Layer, in_shape: tuple, out_shape: tuple) -> int:
    """2 x multiply-accumulates of a Conv3D, Dense or UpsampledConv3D layer (others: 0).

    An UpsampledConv3D counts what it executes: its coarse-grid convolution (coarse outputs x
    taps x channels in x phases x filters), not the fine-grid Conv3D it equals. So a stock
    network gives the model (published architecture) FLOPs and a fused one the executed FLOPs.
    """
    if isinstance(layer, UpsampledConv3D):
        taps = [(u - 1 + k - 1) // u + 1 for u, k in zip(layer.size, layer.kernel_size)]
        # Coarse grid with one zero cell before and `after` cells behind, "valid" convolution.
        outputs = math.prod(n + 1 + g[0] - t + 1 for n, g, t in zip(in_shape[:3], layer._geometry, taps))
        return 2 * outputs * math.prod(taps) * in_shape[-1] * math.prod(layer.size) * layer.filters
    if isinstance(layer, keras.layers.Conv3D):
        cin = in_shape[-1]
        return 2 * math.prod(out_shape[:-1]) * out_shape[-1] * math.prod(layer.kernel_size) * cin
    if isinstance(layer, keras.layers.Dense):
        return 2 * in_shape[-1] * out_shape[-1]
    return 0


def generator_flops(generator: keras.Model) -> int:
    """Forward FLOPs per event of a functional generator (Conv3D, Dense, UpsampledConv3D)."""
    total = 0
    for layer in generator.layers:
        if isinstance(layer, _COUNTED):
            total += _layer_flops(layer, tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:]))
    return total


def discriminator_flops(discriminator: Discriminator) -> int:
    """Forward FLOPs per event of the discriminator trunk and heads (Conv3D and Dense only)."""
    shape = (None, *discriminator.preset.image_shape, 1)
    trunk = ([discriminator.first, discriminator.first_act]
             + [l for block in discriminator.blocks for l in block]
             + [discriminator.pool, discriminator.flatten])
    total = 0
    for layer in trunk:
        out = layer.compute_output_shape(shape)
        total += _layer_flops(layer, tuple(shape[1:]), tuple(out[1:]))
        shape = out
    for head in (discriminator.realfake, discriminator.energy):
        total += _layer_flops(head, tuple(shape[1:]), (1,))
    return total


def step_flops(g_forward: int, d_forward: int, generator_updates: int = 2) -> int:
    """FLOPs per event of one 3DGAN step, counting a backward pass as 2 forwards.

    G makes the fakes (1 G); D trains on real and fake batches (2 x 3 D); each generator
    update runs G forward and backward (3 G) through D forward and its input gradient (2 D).
    """
    return g_forward * (1 + 3 * generator_updates) + d_forward * (6 + 2 * generator_updates)
