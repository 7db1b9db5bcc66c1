"""The converted dataset's manifest.json: schema, content hash, histograms, atomic write and read."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_prep import uri as uri_lib
from data_prep.strict_fields import reject_unknown_keys, unknown_keys

_LOG = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
#: The manifest format this caloforge writes and reads, "MAJOR.MINOR" (docs/CONTRACTS.md §2).
#: A minor bump only adds keys an older reader may ignore; anything else (a key removed, renamed
#: or changing meaning, a new kind of shard) is a major bump, which older readers refuse.
FORMAT_VERSION = "1.0"
_FORMAT_VERSION_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
SPLITS = ("train", "test")

#: Histogram edges are fixed in advance (not taken from the data) so two conversions of the same
#: inputs bin identically and the manifest hash is stable. Energy: log-spaced 1 GeV to 1 TeV
#: (covers the 2-500 GeV and 100-200 GeV sets with even relative resolution); angles: 2-degree
#: bins over (0, pi) radians.
ENERGY_EDGES = np.geomspace(1.0, 1000.0, 61)
ANGLE_EDGES = np.linspace(0.0, np.pi, 91)
HISTOGRAM_EDGES = {"energy": ENERGY_EDGES, "theta": ANGLE_EDGES, "mtheta": ANGLE_EDGES}

#: Top-level manifest keys left out of the content hash: when and how the run happened, where the
#: files live, and how Beam happened to pack records into shards (not deterministic across runs;
#: the per-split record digests cover the content instead).
VOLATILE_KEYS = ("content_hash", "created_utc", "run", "shards", "output")


def histogram_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin plus an underflow (first) and overflow (last) slot, as int64 (len(edges)+1)."""
    values = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(edges, values, side="right")  # 0: below edges[0]; len(edges): >= last
    idx = np.where(values == edges[-1], len(edges) - 1, idx)
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)


def _distribution_version(*names: str) -> str:
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "absent"


def versions() -> dict[str, str]:
    """Versions of the software that shaped the records (recorded, and part of the hash).

    Read from the installed distributions' metadata, so the driver does not pay for importing
    TensorFlow just to learn its version.
    """
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": _distribution_version("h5py"),
        "apache_beam": _distribution_version("apache-beam"),
        "tensorflow": _distribution_version("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    }


class ManifestVersionError(ValueError):
    """A manifest whose format_version this caloforge cannot read (newer major, or malformed)."""


def parse_format_version(value: Any, where: str = "manifest") -> tuple[int, int]:
    """(major, minor) of a manifest's format_version.

    Accepts the string "MAJOR.MINOR" and, for manifests written before caloforge versioned
    minors, an integer MAJOR (read as MAJOR.0). A float (1.10 would read as 1.1) or any other
    text is refused.

    Raises:
        ManifestVersionError: naming `where` and the value.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, 0
    match = _FORMAT_VERSION_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ManifestVersionError(
            f"{where}: format_version {value!r} is malformed: expected a string \"MAJOR.MINOR\" "
            f"such as {FORMAT_VERSION!r}, the version this caloforge writes")
    return int(match.group(1)), int(match.group(2))


def check_format_version(value: Any, where: str = "manifest") -> tuple[int, int]:
    """(major, minor) of a format_version this caloforge can read.

    Raises:
        ManifestVersionError: for a malformed version, or a major version other than ours
            (newer: upgrade caloforge; older: convert the data again).
    """
    major, minor = parse_format_version(value, where)
    ours, _ = parse_format_version(FORMAT_VERSION)
    if major > ours:
        raise ManifestVersionError(
            f"{where}: manifest format_version {value!r} is newer than this caloforge supports "
            f"({FORMAT_VERSION!r}, i.e. {ours}.x): upgrade caloforge to read this dataset")
    if major < ours:
        raise ManifestVersionError(
            f"{where}: manifest format_version {value!r} is older than this caloforge supports "
            f"({FORMAT_VERSION!r}, i.e. {ours}.x): convert the data again with this caloforge")
    return major, minor


#: (manifest, unknown keys) already logged, so a reader that loads the manifest once per input
#: pipeline says it once.
_TOLERATED_LOGGED: set[tuple[str, tuple[str, ...]]] = set()


@dataclass
class Manifest:
    """Everything a reader, a trainer or a reviewer needs to know about a converted dataset.

    Attributes:
        format_version: Format of this file, "MAJOR.MINOR" (FORMAT_VERSION); manifests written
            before minor versions existed hold the integer 1 (read as "1.0").
        image_shape: ECAL image shape (x, y, z) of every record.
        encoding: "dense" or "sparse".
        compression: "none" or "gzip".
        counts: Records per split.
        shards: One dict per TFRecord file: split, name (relative to the dataset folder),
            records, bytes, sha256.
        preprocessing: The PreprocessConfig used (threshold, power, min_raw_sum, angle_key).
        split: How train/test were assigned (by, test_fraction, seed).
        events_read: Events read from the sources.
        bad_events: Events dropped as bad, by reason (skip policy; empty under fail).
        dropped_low_sum: Events dropped by the preprocessing's raw-sum cut.
        histograms: Per split, for energy/theta/mtheta: {"edges", "counts"} with counts having an
            underflow first and an overflow last.
        records_digest: Per split, hex of the sum mod 2**256 of the records' sha256 values.
        sources: One dict per input file: name, uri, size_bytes, sha256, n_events, layout.
        versions: Python, numpy, h5py, apache_beam, tensorflow versions.
        config: The whole ConvertConfig.
        seed: The split seed.
        output: Where the dataset was written.
        run: Volatile facts of the run (runner, wall seconds, stage rates).
        created_utc: ISO time the manifest was written.
        content_hash: sha256 of the canonical JSON of every key except VOLATILE_KEYS.
    """

    image_shape: list[int]
    encoding: str
    compression: str
    counts: dict[str, int]
    shards: list[dict[str, Any]]
    preprocessing: dict[str, Any]
    split: dict[str, Any]
    events_read: int
    bad_events: dict[str, int]
    dropped_low_sum: int
    histograms: dict[str, dict[str, dict[str, list]]]
    records_digest: dict[str, str]
    sources: list[dict[str, Any]]
    versions: dict[str, str]
    config: dict[str, Any]
    seed: int
    output: str = ""
    run: dict[str, Any] = field(default_factory=dict)
    created_utc: str = ""
    content_hash: str = ""
    format_version: str | int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest") -> "Manifest":
        """Build from a dict, checking its format_version first.

        A newer major version is refused (ManifestVersionError: upgrade caloforge). A newer minor
        version may carry keys this caloforge does not know: they are left out, and logged once.
        At this caloforge's own minor version (or an older one) an unknown key is an error: no
        writer of that version puts one there, so it is a typo or a hand edit.

        Args:
            data: The manifest's JSON object.
            where: Where it came from (its URI), for messages.

        Raises:
            ManifestVersionError: malformed, missing or unsupported format_version.
            ValueError: unknown keys at a version this caloforge knows.
            TypeError: missing keys.
        """
        if "format_version" not in data:
            raise ManifestVersionError(f"{where}: has no format_version; it was not written by caloforge")
        _, minor = check_format_version(data["format_version"], where)
        _, our_minor = parse_format_version(FORMAT_VERSION)
        if minor <= our_minor:
            reject_unknown_keys(cls, data, "manifest")
            return cls(**data)
        extra = unknown_keys(cls, data)
        if extra and (where, tuple(extra)) not in _TOLERATED_LOGGED:
            _TOLERATED_LOGGED.add((where, tuple(extra)))
            _LOG.warning("%s: format_version %s is newer than this caloforge's %s; ignoring keys it does "
                         "not know: %s", where, data["format_version"], FORMAT_VERSION, ", ".join(extra))
        return cls(**{key: value for key, value in data.items() if key not in extra})

    def shard_names(self, split: str) -> list[str]:
        """Relative names of the shards of one split, sorted."""
        if split not in self.counts:
            raise ValueError(f"split must be one of {sorted(self.counts)}, got {split!r}")
        return sorted(s["name"] for s in self.shards if s["split"] == split)

    def with_content_hash(self) -> "Manifest":
        """A copy with content_hash filled in from the current content."""
        out = dataclasses.replace(self)
        out.content_hash = compute_content_hash(self.to_dict())
        return out


def compute_content_hash(manifest: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the manifest without VOLATILE_KEYS.

    The config's `output` and `overwrite` are left out too: the same inputs written elsewhere
    are the same dataset.
    """
    content = {k: v for k, v in manifest.items() if k not in VOLATILE_KEYS}
    config = dict(content.get("config", {}))
    for key in ("output", "overwrite", "inputs"):
        config.pop(key, None)
    content["config"] = config
    content["sources"] = [
        {k: v for k, v in source.items() if k != "uri"} for source in content.get("sources", [])
    ]
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dataset_dir(manifest_uri: str) -> str:
    """The dataset folder of a manifest URI (accepts the folder itself too)."""
    if manifest_uri.rstrip("/").endswith(MANIFEST_NAME):
        stripped = manifest_uri.rstrip("/")
        return stripped[: -len(MANIFEST_NAME)].rstrip("/") or "."
    return manifest_uri.rstrip("/")


def manifest_path(uri: str) -> str:
    """The manifest.json URI for a dataset folder or a manifest URI."""
    return uri_lib.join(dataset_dir(uri), MANIFEST_NAME)


def write_manifest(manifest: Manifest, folder: str) -> str:
    """Write manifest.json atomically (temp name + rename locally; one upload on GCS).

    Returns:
        The manifest URI.
    """
    target = uri_lib.join(folder, MANIFEST_NAME)
    uri_lib.write_text(target, json.dumps(manifest.to_dict(), indent=1, sort_keys=True, allow_nan=False) + "\n")
    return target


def load_manifest(uri: str) -> Manifest:
    """Read a manifest from a dataset folder or manifest URI.

    Raises:
        FileNotFoundError: when there is no manifest.json (then there is no finished dataset).
        ManifestVersionError: when its format_version is malformed or of another major version,
            naming the file, its version and ours.
        ValueError: when the manifest is not valid JSON of this schema, naming the file.
    """
    path = manifest_path(uri)
    try:
        text = uri_lib.read_text(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{path} does not exist: {dataset_dir(uri)} is not a finished dataset "
            f"(the converter writes manifest.json last)"
        ) from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return Manifest.from_dict(data, where=path)
    except ManifestVersionError:
        raise
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid caloforge manifest: {exc}") from exc
