"""Export and load the trained generator: generator.keras + generator_config.json (CONTRACTS §3)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator

import keras
import numpy as np

from data_prep import uri
from data_prep.console import ProgressLog
from trainer.models import build_generator
from trainer.presets import get_preset

log = logging.getLogger(__name__)

MODEL_FILE = "generator.keras"
CONFIG_FILE = "generator_config.json"


def generator_config(preset_name: str, info: dict[str, Any]) -> dict[str, Any]:
    """The generator_config.json content: what a user needs to call the generator, plus `info`
    (angle_key, energy_scale, seed, steps...; its keys win)."""
    preset = get_preset(preset_name)
    return {
        "latent_dim": preset.generator.latent_dim,
        "image_shape": list(preset.image_shape),
        "power": preset.power,
        "energy_scale": 100.0,
        "angle_key": "mtheta",
        "preset": preset.name,
        "conditioning": "[energy / energy_scale, angle] + standard normal noise",
        **info,
    }


def float32_generator(preset_name: str, weights: list[np.ndarray]) -> keras.Model:
    """The preset's generator built from stock Keras layers in float32, holding `weights`.

    `weights` is any generator's get_weights() list of this preset: the fused training model,
    any precision, or the stock model itself list their variables in the same order.
    """
    model = build_generator(get_preset(preset_name), "float32", implementation="keras")
    model.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
    return model


def export_generator(generator: keras.Model, preset_name: str, output_dir: str,
                     info: dict[str, Any]) -> str:
    """Write `output_dir`/generator.keras then generator_config.json (last, so a folder with a
    config is complete).

    The exported model is a float32 copy built from the preset with stock Keras layers
    (implementation "keras": same weights, same function as the fused training model), so a
    generator trained in mixed precision or with trainer.layers loads and runs anywhere,
    without caloforge installed.

    Args:
        generator: Trained generator (any precision policy).
        preset_name: Preset it was built from.
        output_dir: Destination folder or gs:// prefix.
        info: Extra fields for generator_config.json (angle_key, energy_scale, seed, steps...).

    Returns:
        The folder written.
    """
    model = float32_generator(preset_name, generator.get_weights())
    config = generator_config(preset_name, info)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        with open(local, "rb") as fh:
            uri.write_bytes(uri.join(output_dir, MODEL_FILE), fh.read())
    uri.write_text(uri.join(output_dir, CONFIG_FILE), json.dumps(config, indent=2, sort_keys=True))
    return output_dir


@dataclass
class GeneratorBundle:
    """A loaded generator with the preprocessing needed to return raw-unit showers."""

    model: keras.Model
    config: dict[str, Any]

    def generate(self, energy_gev: np.ndarray, theta_rad: np.ndarray, seed: int,
                 batch_size: int = 64) -> np.ndarray:
        """Generate one shower per (energy, angle) in raw ECAL units.

        Event i's noise is row i of one standard-normal stream drawn from `seed`, so it depends
        on the seed and the event's index only: not on `batch_size`, nor on how many events
        follow. Same inputs, seed and batch_size give bit-identical showers (same machine and
        software). Another batch_size computes the same function on differently shaped batches,
        and oneDNN picks its kernels (so the order of each sum) by batch shape and CPU
        (AVX-512, AVX2): the showers then agree to float32 rounding, not bit for bit (measured:
        within 3e-6 of each shower's largest cell; tests allow 1e-5).

        Args:
            energy_gev: (N,) primary energies in GeV.
            theta_rad: (N,) angles in radians (the quantity named by config['angle_key']).
            seed: Seed of the latent noise.
            batch_size: Events per forward pass.

        Returns:
            float32 array (N, *image_shape), the power transform inverted.

        Raises:
            ValueError: if the inputs differ in length, are not 1-D or not finite.
        """
        energy = np.asarray(energy_gev, dtype=np.float32).reshape(-1)
        shape = tuple(self.config["image_shape"])
        out = np.empty((energy.size, *shape), dtype=np.float32)
        progress = ProgressLog(log, "generating showers", energy.size, "showers")
        for start, stop, showers in self.iter_generate(energy_gev, theta_rad, seed, batch_size):
            out[start:stop] = showers
            progress.update(stop)
        return out

    def iter_generate(self, energy_gev: np.ndarray, theta_rad: np.ndarray, seed: int,
                      batch_size: int = 64) -> Iterator[tuple[int, int, np.ndarray]]:
        """generate(), one batch at a time: yields (start, stop, showers of events start..stop-1).

        Memory holds one batch of showers and noise, whatever the number of events (the fast
        simulation streams millions of showers to a file this way). The noise of each batch is
        the next rows of the one standard-normal stream (drawing it in consecutive pieces gives
        the same numbers as one draw), so event i's noise still depends on the seed and i only;
        generate() is this loop collected into one array.

        Raises:
            ValueError: as generate(), before the first batch.
        """
        energy = np.asarray(energy_gev, dtype=np.float32).reshape(-1)
        theta = np.asarray(theta_rad, dtype=np.float32).reshape(-1)
        if energy.shape != theta.shape:
            raise ValueError(f"energy_gev has {energy.size} values but theta_rad has {theta.size}")
        if not (np.all(np.isfinite(energy)) and np.all(np.isfinite(theta))):
            raise ValueError("energy_gev and theta_rad must be finite")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        return self._batches(energy, theta, seed, batch_size)

    def _batches(self, energy: np.ndarray, theta: np.ndarray, seed: int,
                 batch_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
        latent_dim = int(self.config["latent_dim"])
        scale = float(self.config["energy_scale"])
        inverse_power = 1.0 / float(self.config["power"])
        rng = np.random.default_rng(seed)
        for start in range(0, energy.size, batch_size):
            stop = min(start + batch_size, energy.size)
            noise = rng.standard_normal((stop - start, latent_dim - 2), dtype=np.float32)
            cond = np.stack([energy[start:stop] / scale, theta[start:stop]], axis=1)
            images = self.model(np.concatenate([cond, noise], axis=1), training=False)
            showers = np.array(np.asarray(images)[..., 0], dtype=np.float32, order="C")  # writable copy
            np.power(np.clip(showers, 0.0, None), inverse_power, out=showers)
            yield start, stop, showers


def load_generator(directory: str) -> GeneratorBundle:
    """Load an exported generator folder (local or gs://).

    Raises:
        FileNotFoundError: naming the missing file when the folder is incomplete.
    """
    config_path = uri.join(directory, CONFIG_FILE)
    model_path = uri.join(directory, MODEL_FILE)
    for path in (config_path, model_path):
        if not uri.exists(path):
            raise FileNotFoundError(f"exported generator incomplete: {path} does not exist")
    config = json.loads(uri.read_text(config_path))
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        with open(local, "wb") as fh:
            fh.write(uri.read_bytes(model_path))
        model = keras.models.load_model(local, compile=False)
    return GeneratorBundle(model=model, config=config)
