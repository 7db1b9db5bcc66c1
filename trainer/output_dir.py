"""The training output folder: one run per folder (resumable), never two runs mixed.

A rerun in the same folder resumes from its checkpoints and appends to its timings. That is
only sound for the same model on the same data: with another preset the checkpoint does not
fit, and with another dataset (or preset) timings.jsonl would mix two runs' records, which the
benchmark collector then reads as one. The run's identity (preset and the dataset manifest's
content hash) is stored in config.json and compared before anything is written or restored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from data_prep import uri

#: What a training run writes into its output folder (CONTRACTS §3); nothing else is removed.
RUN_FILES = ("config.json", "summary.json", "timings.jsonl")
RUN_FOLDERS = ("checkpoints", "generator", "snapshots", "tensorboard")


class OutputDirConflictError(ValueError):
    """output_dir holds a run of another preset or dataset (a user's choice to make)."""


@dataclass(frozen=True)
class RunIdentity:
    """What must match for a rerun to continue the run already in a folder.

    Attributes:
        preset: Model preset name.
        dataset: dataset_fingerprint of the manifest, or a description of the in-memory
            data a caller passed (tests, benchmarks).
        data: The manifest path as given (for messages, and for folders written before the
            hash was stored).
    """

    preset: str
    dataset: str
    data: str = ""

    def describe(self) -> str:
        where = f" ({self.data})" if self.data else ""
        return f"preset {self.preset!r}, dataset {self.dataset[:24]}{where}"


def dataset_fingerprint(manifest_uri: str, content_hash: str = "") -> str:
    """The dataset's identity: its manifest's content hash (the converter's sha256 of what the
    dataset holds, the same wherever it is copied), else the manifest file's sha256."""
    if content_hash:
        return "content:" + content_hash
    return "sha256:" + uri.sha256(manifest_uri)


def stored_identity(output_dir: str) -> Optional[RunIdentity]:
    """The identity of the run recorded in output_dir/config.json; None when there is none.

    Raises:
        OutputDirConflictError: when config.json exists but is not a training config.
    """
    path = uri.join(output_dir, "config.json")
    if not uri.exists(path):
        return None
    try:
        stored = json.loads(uri.read_text(path))
        train_config = stored["train_config"]
        preset = str(train_config["preset"])
    except (ValueError, KeyError, TypeError) as err:
        raise OutputDirConflictError(
            f"{path} is not a caloforge training config ({type(err).__name__}: {err}); "
            "choose another --output-dir") from None
    derived = stored.get("derived", {})
    data = str(train_config.get("data", ""))
    # Folders written before the hash was stored are identified by the manifest path.
    return RunIdentity(preset, str(derived.get("dataset_fingerprint") or f"path:{data}"), data)


def same_run(stored: RunIdentity, new: RunIdentity) -> bool:
    """True when a run of `new` may continue the run `stored` in the same folder."""
    if stored.preset != new.preset:
        return False
    if stored.dataset.startswith("path:"):
        return stored.data == new.data
    return stored.dataset == new.dataset


def prepare_output_dir(output_dir: str, identity: RunIdentity, overwrite: bool,
                       is_chief: bool = True) -> bool:
    """Refuse, or clear, a folder that holds another run; True when it was cleared.

    A folder holding the same run (same preset and dataset) is left alone whatever
    `overwrite` says, so a restarted or preempted job that keeps the flag still resumes. A
    folder holding another run is refused, or with overwrite the chief deletes that run's
    outputs (RUN_FILES and RUN_FOLDERS, nothing else that may be in the folder) and the new
    run starts from step 0 with clean timings. Other workers never delete.

    Raises:
        OutputDirConflictError: one line naming the folder, both runs and what to do, when the
            folder holds a run of another preset or dataset and overwrite is not set.
    """
    stored = stored_identity(output_dir)
    if stored is None or same_run(stored, identity):
        return False
    if not overwrite:
        raise OutputDirConflictError(
            f"output dir {output_dir} holds a run of {stored.describe()}; this run is "
            f"{identity.describe()}: choose another --output-dir, or pass --overwrite to "
            "replace that run")
    if is_chief:
        for name in RUN_FILES:
            uri.delete(uri.join(output_dir, name))
        for name in RUN_FOLDERS:
            uri.delete_tree(uri.join(output_dir, name))
    return True
