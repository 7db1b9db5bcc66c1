"""The trained discriminator's view of Monte Carlo and generated showers, for the report.

3DGAN's discriminator has a real/fake head and an energy-regression head. Where the trainer's
checkpoint is beside the exported generator (``<model>/checkpoints``, ``<model>/config.json``),
the discriminator is rebuilt with the run's preset and layer settings, its weights restored from
the latest checkpoint, and run on a subsample of each sample: the report shows how real it finds
Monte Carlo and generated showers (a converged GAN's D cannot tell them apart) and how well its
regressed energy follows the true one. Without a checkpoint there is no discriminator and the
report says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from data_prep import uri

LOG = logging.getLogger(__name__)


@dataclass
class DiscriminatorOutputs:
    """The discriminator's heads on n showers of one sample.

    Attributes:
        realfake: Probability the discriminator gives the shower of being real, sigmoid of its
            real/fake logit, (n,).
        energy_pred: Energy regressed by the energy head, GeV, (n,).
        energy_true: The shower's primary energy, GeV, (n,).
    """

    realfake: np.ndarray
    energy_pred: np.ndarray
    energy_true: np.ndarray

    @property
    def n_events(self) -> int:
        return int(self.realfake.size)

    def to_dict(self) -> dict:
        return {"realfake": self.realfake.tolist(), "energy_pred": self.energy_pred.tolist(),
                "energy_true": self.energy_true.tolist()}


def model_dir_of(generator_dir: str) -> str:
    """The trainer's output folder holding ``generator/`` (local or gs://)."""
    stripped = generator_dir.rstrip("/")
    return stripped.rsplit("/", 1)[0] if "/" in stripped else "."


@dataclass
class DiscriminatorProbe:
    """A restored discriminator with what its inputs need.

    Attributes:
        model: trainer.models.Discriminator with the checkpoint's weights.
        power: The preprocessing exponent (raw ** power is what the discriminator reads).
        energy_scale: The energy label's divisor (the energy head predicts E / energy_scale).
        checkpoint: Path of the restored checkpoint (shown in the report).
    """

    model: object
    power: float
    energy_scale: float
    checkpoint: str

    def outputs(self, showers_raw: np.ndarray, energy: np.ndarray, batch_size: int = 64) -> DiscriminatorOutputs:
        """Run the heads on raw-unit showers (n, X, Y, Z) with their primary energies (n,)."""
        showers_raw = np.asarray(showers_raw, dtype=np.float32)
        if showers_raw.ndim == 5 and showers_raw.shape[-1] == 1:
            showers_raw = showers_raw[..., 0]
        logits, energies = [], []
        for start in range(0, showers_raw.shape[0], batch_size):
            block = np.power(np.clip(showers_raw[start : start + batch_size], 0.0, None), np.float32(self.power))
            heads = self.model(block[..., None], training=False)
            logits.append(np.asarray(heads["realfake"], dtype=np.float64))
            energies.append(np.asarray(heads["energy"], dtype=np.float64))
        logit = np.concatenate(logits) if logits else np.zeros(0)
        return DiscriminatorOutputs(
            realfake=1.0 / (1.0 + np.exp(-np.clip(logit, -30.0, 30.0))),
            energy_pred=(np.concatenate(energies) if energies else np.zeros(0)) * self.energy_scale,
            energy_true=np.asarray(energy, dtype=np.float64),
        )


def load_discriminator(generator_dir: str) -> tuple[DiscriminatorProbe | None, str]:
    """The discriminator of the run that exported ``generator_dir``, or None and the reason.

    Returns:
        ``(probe, "")`` when the trainer's config.json and a checkpoint are beside the
        generator; ``(None, reason)`` otherwise (an exported generator alone has no
        discriminator), and when the checkpoint does not fit the rebuilt model.
    """
    model_dir = model_dir_of(generator_dir)
    config_path = uri.join(model_dir, "config.json")
    if not uri.exists(config_path):
        return None, f"no trainer config.json beside the generator ({config_path})"
    import tensorflow as tf

    checkpoint = tf.train.latest_checkpoint(uri.join(model_dir, "checkpoints"))
    if checkpoint is None:
        return None, f"no checkpoint in {uri.join(model_dir, 'checkpoints')}"
    from trainer.models import Discriminator
    from trainer.presets import get_preset

    train_config = json.loads(uri.read_text(config_path)).get("train_config", {})
    try:
        preset = get_preset(str(train_config.get("preset", "")))
        model = Discriminator(preset, "float32", implementation=str(train_config.get("layers", "fused")),
                              angle_definition=str(train_config.get("angle_definition", "published")))
        # The trainer's checkpoint lists the discriminator's variables in creation order
        # (trainer.checkpointing.make_checkpoint); the rebuilt model creates them in that order.
        status = tf.train.Checkpoint(discriminator=list(model.variables)).restore(checkpoint)
        status.expect_partial().assert_existing_objects_matched()
    except (ValueError, KeyError, AssertionError, tf.errors.OpError) as err:
        return None, f"discriminator of {checkpoint} could not be restored ({str(err).splitlines()[0]})"
    LOG.info("discriminator restored from %s", checkpoint)
    return DiscriminatorProbe(model, float(preset.power), float(train_config.get("energy_scale", 100.0)),
                              checkpoint), ""
