"""Per-example 3DGAN losses: BCE (real/fake), MAPE (energy), MAE (angle), MAPE (ECAL sum)."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from data_prep.angle import VALID_ANGLE_MAX

LOSS_PARTS = ("bce", "energy", "angle", "ecal_sum")
_EPS = 1e-7


def mape(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-example mean absolute percentage error, 100 |y - p| / max(|y|, eps)."""
    return 100.0 * tf.abs(y_true - y_pred) / tf.maximum(tf.abs(y_true), _EPS)


def per_example_losses(outputs: dict[str, tf.Tensor], realfake_target: tf.Tensor,
                       energy: tf.Tensor, angle: tf.Tensor, ecal_sum: tf.Tensor,
                       weights: Sequence[float]) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Weighted per-example loss (B,) and its four unweighted parts.

    Per-example values (not batch means) are returned so the caller can scale them to the
    global batch with tf.nn.compute_average_loss, which makes gradients summed over replicas
    equal the single-device gradient.

    Args:
        outputs: Discriminator heads (realfake logit, energy, angle, ecal_sum), each (B,).
        realfake_target: (B,) 1 for real, 0 for fake.
        energy: (B,) energy label in E/scale units.
        angle: (B,) angle label, radians (the empty-shower sentinel 100 is allowed; see
            angle_error).
        ecal_sum: (B,) raw ECAL-sum label.
        weights: (bce, energy, angle, ecal_sum) weights.
    """
    parts = {
        "bce": tf.nn.sigmoid_cross_entropy_with_logits(labels=realfake_target,
                                                       logits=outputs["realfake"]),
        "energy": mape(energy, outputs["energy"]),
        "angle": angle_error(angle, outputs["angle"]),
        "ecal_sum": mape(ecal_sum, outputs["ecal_sum"]),
    }
    total = tf.add_n([float(w) * parts[k] for w, k in zip(weights, LOSS_PARTS)])
    return total, parts


def angle_error(label: tf.Tensor, measured: tf.Tensor) -> tf.Tensor:
    """Per-example |label - measured|, 0 where either is the empty-shower sentinel (100).

    The published angle head returns 100 for a shower without energy (a generator that has
    collapsed to empty showers, or a real event with no deposit), and the published loss takes
    |angle - 100| ~ 98 rad x weight 25 for it. That term carries no gradient (the head's
    output there is a constant), so dropping it changes no update; it only keeps the logged
    angle loss an angle error instead of one dominated by a few empty showers. Empty
    generated showers are watched by the divergence guard (fake_ecal_sum) instead.
    """
    valid = tf.logical_and(label < VALID_ANGLE_MAX, measured < VALID_ANGLE_MAX)
    return tf.where(valid, tf.abs(label - measured), tf.zeros_like(measured))
