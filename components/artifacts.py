"""Small translations between KFP artifacts and the paths and figures the library works with."""

from __future__ import annotations

import json
import os
from typing import Any


def location(artifact: Any) -> str:
    """The URI a stage should read or write for this artifact.

    On Vertex AI an artifact's uri is gs://...; Beam and TensorFlow write there directly, which
    is faster and works on Dataflow workers that do not see the component's FUSE mount. Locally
    (kfp.local) the uri is a plain path.
    """
    uri = artifact.uri
    if uri.startswith("gs://"):
        return uri.rstrip("/")
    return artifact.path


def uri_of(artifact: Any, local_path: str) -> str:
    """The URI of a file written under the artifact's local path.

    On Vertex AI the local path is the FUSE mount of the artifact's gs:// uri; remote workers
    (Dataflow) cannot see that mount, so files handed to them must be named by gs:// URI.
    """
    uri = artifact.uri.rstrip("/")
    root = artifact.path.rstrip("/")
    if uri.startswith("gs://") and local_path.startswith(root + "/"):
        return uri + local_path[len(root):]
    return local_path


def local_dir(artifact: Any) -> str:
    """A local folder at the artifact's path (FUSE-mounted on Vertex), created if needed."""
    os.makedirs(artifact.path, exist_ok=True)
    return artifact.path


def write_json(folder: str, name: str, payload: dict[str, Any]) -> str:
    path = os.path.join(folder, name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)
    return path


def log_scalars(metrics: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Logs every numeric scalar of a (nested) dict into a KFP Metrics artifact."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            metrics.log_metric(name, float(value))
        elif isinstance(value, (int, float)):
            metrics.log_metric(name, float(value))
        elif isinstance(value, dict) and not prefix:
            log_scalars(metrics, value, prefix=f"{key}.")


FLOOR_SUFFIX = "_floor"


def log_with_floor(metrics: Any, values: dict[str, Any], floors: dict[str, Any]) -> None:
    """Logs each numeric figure as `<name>` and its Monte Carlo noise floor as `<name>_floor`.

    A figure without its floor cannot be read (docs/eval.md), so the KFP Metrics carry both side
    by side; a figure whose floor was not computed (None or absent) is logged alone.
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metrics.log_metric(name, float(value))
        floor = floors.get(name)
        if isinstance(floor, (int, float)) and not isinstance(floor, bool):
            metrics.log_metric(f"{name}{FLOOR_SUFFIX}", float(floor))
