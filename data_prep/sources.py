"""Finds and describes the HDF5 input files of a run, local or gs://, before any conversion starts."""

from __future__ import annotations

import dataclasses
from typing import Any

from data_prep import h5layout, uri
from data_prep.errors import InputValidationError

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def list_hdf5(location: str) -> list[str]:
    """HDF5 files at a folder/prefix (recursive), a wildcard pattern, or a single file, sorted.

    Raises:
        FileNotFoundError: nothing matching was found, naming the location.
    """
    if any(c in location for c in "*?["):
        files = uri.glob(location)
    elif location.lower().endswith(HDF5_SUFFIXES) and uri.exists(location):
        files = [location]
    else:
        files = [f for f in uri.list_files(location) if f.lower().endswith(HDF5_SUFFIXES)]
    if not files:
        raise FileNotFoundError(f"no HDF5 files (*.h5, *.hdf5) found at {location!r}")
    return files


def describe_sources(files: list[str]) -> dict[str, Any]:
    """Inspects each file's layout, event count and shape, failing on the first invalid one.

    Checking every file up front means a bad file named by the user is reported before a long
    conversion starts, with the file and dataset in the message.

    Returns:
        {"files": [FileInfo as dict, ...], "layouts": sorted distinct layouts, "events": total}.
    """
    infos = []
    for path in files:
        if uri.is_gcs(path):
            with uri.open_read(path) as handle:
                info = h5layout.inspect_file(handle, name=path)
        else:
            info = h5layout.inspect_file(path)
        infos.append(info)
    layouts = sorted({i.layout for i in infos})
    if len({tuple(i.image_shape) for i in infos}) > 1:
        shapes = {i.uri: list(i.image_shape) for i in infos}
        raise InputValidationError(files[0], f"input files mix ECAL shapes {shapes}; convert each layout separately", dataset="ECAL")
    entries = []
    for info in infos:
        entry = dataclasses.asdict(info)
        entry["image_shape"] = list(info.image_shape)
        entries.append(entry)
    return {"files": entries, "layouts": layouts, "events": sum(i.n_events for i in infos)}
