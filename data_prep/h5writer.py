"""Write 3DGAN HDF5 files, in either published layout, block by block under a temporary name.

One writer for every file caloforge produces in the 3DGAN layouts (the embedded Monte Carlo,
`caloforge generate`, and the generator's fast simulation, `caloforge simulate`), so both carry
the same datasets, dtypes, chunking and attributes, and whatever reads one reads the other:

* variable angle: ECAL float32 (N, 51, 51, 25), energy, theta, eta, sum float32 (N,), mtheta
  float64 (N,), as the published converters write them;
* fixed angle: ECAL float32 (N, 25, 25, 25), target float32 (N, 5) with the PDG code in column 0
  and the primary energy in column 1, and HCAL (N, 5, 5, 60) when there is one.

Datasets are allocated at their final size and filled block by block, so memory holds one block
whatever the file size. The file is written under a hidden temporary name in the destination
folder and published (renamed) only when complete: a reader never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterable, Mapping

import h5py
import numpy as np

from data_prep import uri
from data_prep.angle import measured_angle, pseudorapidity
from data_prep.h5layout import HCAL_SHAPE, IMAGE_SHAPES, LAYOUT_FIXED_ANGLE, LAYOUT_VARIABLE_ANGLE

#: PDG code written in column 0 of the fixed-angle `target` (electrons).
ELECTRON_PDG = 11.0
#: HDF5 filters for the cell datasets: gzip (readable everywhere), lzf (h5py only) or none.
COMPRESSIONS = ("gzip", "lzf", "none")

Block = tuple[int, int, Mapping[str, np.ndarray]]


def dataset_specs(layout: str, n_events: int, hcal: bool = True) -> dict[str, tuple[tuple, type]]:
    """Name -> (shape, dtype) of every dataset of a file in `layout` holding `n_events`.

    Args:
        hcal: Whether a fixed-angle file gets an HCAL dataset (readers accept files without one).
    """
    grid = IMAGE_SHAPES[layout]
    if layout == LAYOUT_VARIABLE_ANGLE:
        return {
            "ECAL": ((n_events, *grid), np.float32),
            "energy": ((n_events,), np.float32),
            "theta": ((n_events,), np.float32),
            "mtheta": ((n_events,), np.float64),
            "eta": ((n_events,), np.float32),
            "sum": ((n_events,), np.float32),
        }
    specs = {"ECAL": ((n_events, *grid), np.float32)}
    if hcal:
        specs["HCAL"] = ((n_events, *HCAL_SHAPE), np.float32)
    specs["target"] = ((n_events, 5), np.float32)
    return specs


def derived_datasets(layout: str, ecal: np.ndarray, energy: np.ndarray, theta: np.ndarray) -> dict[str, np.ndarray]:
    """The per-event datasets besides the cells, from raw cells and the primary conditions.

    Variable angle: energy, theta (the generated angle), mtheta (the angle measured on the
    cells with the published definition, data_prep.angle), eta and sum (raw ECAL sum).
    Fixed angle: target (PDG code, energy, and the momentum along the depth axis at 90 degrees).

    Args:
        ecal: float32 (n, X, Y, Z) raw cells.
        energy: (n,) primary energies, GeV.
        theta: (n,) generated polar angles, radians.
    """
    n = ecal.shape[0]
    if layout == LAYOUT_VARIABLE_ANGLE:
        return {
            "energy": np.asarray(energy, dtype=np.float32),
            "theta": np.asarray(theta, dtype=np.float32),
            "mtheta": measured_angle(ecal).astype(np.float64),
            "eta": pseudorapidity(theta).astype(np.float32),
            "sum": ecal.reshape(n, -1).sum(axis=1, dtype=np.float64).astype(np.float32),
        }
    target = np.zeros((n, 5), dtype=np.float32)
    target[:, 0] = ELECTRON_PDG
    target[:, 1] = energy  # primary energy in column 1, as in the published files
    target[:, 4] = energy  # momentum (px, py, pz) along the depth axis at 90 degrees
    return {"target": target}


def compression_filters(compression: str, level: int = 1) -> dict:
    """h5py keyword arguments of a filter in COMPRESSIONS.

    gzip without the shuffle filter: on these mostly-zero float32 images shuffling makes files
    larger and halves write and read speed (measured: gzip-1 4.5 kB/event plain, 6.4 kB shuffled).
    """
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": int(level)}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression == "none":
        return {}
    raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")


def write_blocks(
    path: str,
    specs: Mapping[str, tuple[tuple, type]],
    blocks: Iterable[Block],
    attrs: Callable[[], Mapping[str, object]],
    chunk_events: int,
    filters: Mapping[str, object] | None = None,
    on_block: Callable[[int], None] | None = None,
    publish: Callable[[str, str], None] = os.replace,
) -> None:
    """Write one HDF5 file from (start, stop, datasets) blocks, then publish it at `path`.

    Datasets of more than two dimensions (the cells) are chunked by `chunk_events` events and
    filtered; the others are contiguous. Writers should hand blocks that cover whole chunks
    (start a multiple of chunk_events): a partial write to a compressed chunk larger than the
    HDF5 chunk cache is read back, decompressed and rewritten.

    Args:
        path: Destination file (local); its folder must exist.
        specs: dataset_specs() of the file.
        blocks: Consecutive blocks covering every event; each holds every dataset in `specs`.
        attrs: Called once every block is written; its items become the file's attributes
            (so they may report on the writing itself, e.g. its speed).
        chunk_events: HDF5 chunk length of the cell datasets along the event axis.
        filters: compression_filters() of the cell datasets.
        on_block: Called with `stop` after each block is written (progress lines).
        publish: (temporary path, path) -> None; the default os.replace replaces any file at
            `path`, so callers decide first whether they may.

    Raises:
        ValueError: a block lacking a dataset, or blocks that do not cover every event.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    n_events = next(iter(specs.values()))[0][0]
    try:
        with h5py.File(tmp, "w") as h5:
            for name, (shape, dtype) in specs.items():
                if len(shape) > 2:
                    chunks = (max(1, min(chunk_events, n_events)), *shape[1:])
                    h5.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, **(filters or {}))
                else:
                    h5.create_dataset(name, shape=shape, dtype=dtype)
            written = 0
            for start, stop, datasets in blocks:
                if start != written:
                    raise ValueError(f"{path}: block starts at event {start}, expected {written}")
                missing = sorted(set(specs) - set(datasets))
                if missing:
                    raise ValueError(f"{path}: block [{start}, {stop}) lacks datasets {missing}")
                for name in specs:
                    h5[name][start:stop] = datasets[name]
                written = stop
                if on_block is not None:
                    on_block(stop)
            if written != n_events:
                raise ValueError(f"{path}: blocks covered {written} of {n_events} events")
            for key, value in attrs().items():
                h5.attrs[key] = value
        os.chmod(tmp, 0o666 & ~uri._umask())  # mkstemp makes 0600; published files get normal modes
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

