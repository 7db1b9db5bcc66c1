"""Generator snapshots during training: the candidates of 3DGAN's best-epoch selection.

The published 3DGAN analysis does not take the last epoch's generator: it scores the generator of
each epoch with the sampling-fraction error against Monte Carlo and keeps the best of the last
ten (eval/best_epoch.py does the scoring). A checkpoint holds far more than that needs (the
discriminator and both optimizers' slots) and the CheckpointManager keeps only a few, so the
trainer writes the generator's weights alone, every `snapshot_every` steps (once an epoch by
default), into `output_dir/snapshots/`:

- `step_000000120.npz`: the generator's `get_weights()` arrays (np.savez, arr_0, arr_1, ... in
  that order: the order of the stock-Keras generator of the preset too, trainer.export), float32
  whatever the training precision. Small preset: 1.7 MB; full: about 5.5 MB.
- `step_000000120.json`, written after the weights (so a snapshot with a json is complete):
  `step`, `epoch` (steps / steps per epoch), `weights` (the npz's name), `weights_sha256` and
  `generator_config` (what generator_config.json holds for an export, with this step).

Only the last `keep` snapshots (by step) stay. A resumed run continues the sequence: snapshots
after the step it resumes from belong to the part of the killed run that is being redone and are
removed first, and a step already written is not written twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from data_prep import uri

log = logging.getLogger(__name__)

SNAPSHOT_DIR = "snapshots"
_NAME = re.compile(r"^step_(\d+)\.json$")


def snapshot_stem(step: int) -> str:
    return f"step_{int(step):09d}"


@dataclass(frozen=True)
class SnapshotInfo:
    """One complete snapshot found in a folder.

    Attributes:
        step: Global step the weights were taken after.
        epoch: Epochs done at that step (steps / steps per epoch; fractional between epochs).
        json_uri: The snapshot's json.
        weights_uri: Its npz of weights.
        generator_config: generator_config.json's fields for this snapshot.
    """

    step: int
    epoch: float
    json_uri: str
    weights_uri: str
    generator_config: dict[str, Any]


def list_snapshots(directory: str) -> list[SnapshotInfo]:
    """Complete snapshots (those with a json) in `directory`, ordered by step; [] if none.

    Raises:
        ValueError: naming the file, when a snapshot json is not one this module wrote.
    """
    out = []
    for name in uri.list_children(directory):
        match = _NAME.match(name)
        if not match:
            continue
        path = uri.join(directory, name)
        try:
            meta = json.loads(uri.read_text(path))
            info = SnapshotInfo(int(meta["step"]), float(meta["epoch"]), path,
                                uri.join(directory, str(meta["weights"])), dict(meta["generator_config"]))
        except FileNotFoundError:
            continue  # rotated away between the listing and the read
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a caloforge generator snapshot "
                             f"({type(err).__name__}: {err})") from None
        if info.step != int(match.group(1)):
            raise ValueError(f"{path} holds step {info.step}, not the step its name says")
        out.append(info)
    return sorted(out, key=lambda s: s.step)


def read_weights(info: SnapshotInfo) -> list[np.ndarray]:
    """The snapshot's weight arrays, in get_weights() order."""
    with np.load(io.BytesIO(uri.read_bytes(info.weights_uri)), allow_pickle=False) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def load_snapshot(info: SnapshotInfo):
    """The snapshot as a trainer.export.GeneratorBundle (stock Keras layers, float32)."""
    from trainer.export import GeneratorBundle, float32_generator

    config = info.generator_config
    return GeneratorBundle(model=float32_generator(str(config["preset"]), read_weights(info)),
                           config=dict(config))


class SnapshotWriter:
    """Writes, rotates and (on resume) prunes the snapshots of one run. Chief only.

    Args:
        directory: The snapshots folder (local or gs://).
        keep: Snapshots kept (the newest by step); >= 1.
        config_of: step -> generator_config fields of a snapshot taken at that step.
    """

    def __init__(self, directory: str, keep: int, config_of):
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1")
        self.directory = directory
        self.keep = keep
        self.config_of = config_of
        self.steps = {s.step for s in list_snapshots(directory)}
        # Weights without their json: a save or a rotation interrupted between its two files.
        for name in uri.list_children(directory):
            match = re.match(r"^step_(\d+)\.npz$", name)
            if match and int(match.group(1)) not in self.steps:
                uri.delete(uri.join(directory, name))

    def prune_after(self, step: int) -> list[int]:
        """Remove snapshots taken after `step` (a resumed run redoes those steps); their steps."""
        removed = sorted(s for s in self.steps if s > step)
        for s in removed:
            self._delete(s)
        if removed:
            log.info("snapshots after the resumed step %d removed (steps %s): the run redoes them",
                     step, ", ".join(map(str, removed)))
        return removed

    def save(self, weights: list[np.ndarray], step: int, epoch: float) -> Optional[str]:
        """Write the snapshot of `step` (weights first, json last) and rotate; None if it exists.

        Returns:
            The json's URI, or None when this step was already written.
        """
        if step in self.steps:
            return None
        stem = snapshot_stem(step)
        buf = io.BytesIO()
        np.savez(buf, *[np.asarray(w, dtype=np.float32) for w in weights])
        data = buf.getvalue()
        uri.makedirs(self.directory)
        uri.write_bytes(uri.join(self.directory, stem + ".npz"), data)
        meta = {"step": int(step), "epoch": round(float(epoch), 6), "weights": stem + ".npz",
                "weights_sha256": hashlib.sha256(data).hexdigest(),
                "generator_config": self.config_of(step)}
        path = uri.join(self.directory, stem + ".json")
        uri.write_text(path, json.dumps(meta, indent=2, sort_keys=True))
        self.steps.add(step)
        for old in sorted(self.steps)[:-self.keep]:
            self._delete(old)
        return path

    def _delete(self, step: int) -> None:
        stem = snapshot_stem(step)
        uri.delete(uri.join(self.directory, stem + ".json"))  # json first: never a json without weights
        uri.delete(uri.join(self.directory, stem + ".npz"))
        self.steps.discard(step)
