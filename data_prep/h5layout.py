"""Detect, validate and read the two 3DGAN HDF5 layouts (variable-angle and fixed-angle).

Readers elsewhere (the Beam converter, the evaluator, tests) go through this module only, so a
file is checked once, the same way, and every rejection names the file, dataset and event.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from typing import IO, Iterator, NamedTuple, Union

import h5py
import numpy as np

from data_prep.angle import measured_angle
from data_prep.errors import InputValidationError

LAYOUT_VARIABLE_ANGLE = "variable_angle"
LAYOUT_FIXED_ANGLE = "fixed_angle"
LAYOUTS = (LAYOUT_VARIABLE_ANGLE, LAYOUT_FIXED_ANGLE)

#: ECAL image shape (x, y, z) of each layout.
IMAGE_SHAPES = {
    LAYOUT_VARIABLE_ANGLE: (51, 51, 25),
    LAYOUT_FIXED_ANGLE: (25, 25, 25),
}
#: HCAL image shape of the fixed-angle layout (checked when present, never read).
HCAL_SHAPE = (5, 5, 60)

#: The primary-energy datasets each layout may hold: (layout, dataset) -> {shape after the
#: event axis: index of the primary energy in each event's row}. Published variable-angle files
#: store `energy` (N,); fixed-angle files `target` (N, 5) or (N, 1, 5) with the energy in column
#: 1, older ones `energy` (N, 1, 5). A fixed-angle `energy` is read only when `target` is absent.
ENERGY_SHAPES = {
    (LAYOUT_VARIABLE_ANGLE, "energy"): {(): (), (1,): (0,)},
    (LAYOUT_FIXED_ANGLE, "target"): {(5,): (1,), (1, 5): (0, 1)},
    (LAYOUT_FIXED_ANGLE, "energy"): {(1, 5): (0, 1)},
}

#: Events per read range for contiguous (unchunked) ECAL datasets: about 16 MiB of cells.
DEFAULT_RANGE_BYTES = 16 * 1024 * 1024

#: The HDF5 format signature; it sits at offset 0 or at 512 * 2**k after a user block.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

Source = Union[str, os.PathLike, IO[bytes]]

# Bad-event reasons reported by find_bad_events, in the order they are tested.
REASON_NON_FINITE = "non_finite"
REASON_NONPOSITIVE_ENERGY = "nonpositive_energy"
REASON_ENERGY_OUT_OF_RANGE = "energy_out_of_range"
REASON_ANGLE_OUT_OF_RANGE = "angle_out_of_range"
REASON_NEGATIVE_CELLS = "negative_cells"
BAD_EVENT_REASONS = (
    REASON_NON_FINITE,
    REASON_NONPOSITIVE_ENERGY,
    REASON_ENERGY_OUT_OF_RANGE,
    REASON_ANGLE_OUT_OF_RANGE,
    REASON_NEGATIVE_CELLS,
)


@dataclass(frozen=True)
class FileInfo:
    """What inspect_file learned about one valid input file.

    Attributes:
        uri: The name used in messages (the path, or the `name` given for a file object).
        layout: "variable_angle" or "fixed_angle".
        n_events: Number of events (> 0).
        image_shape: ECAL shape per event (x, y, z).
        chunk_events: HDF5 chunk length of ECAL along the event axis; for contiguous ECAL a
            default that reads about DEFAULT_RANGE_BYTES at a time. Aligning read ranges to it
            means each range decompresses every chunk it touches exactly once.
        size_bytes: File size in bytes.
        energy_key: Dataset holding the primary energy ("energy" or "target").
        energy_column: Index applied to each event's energy row ("" for 1-D energy, else e.g.
            "[1]" or "[0, 1]"), for messages and manifests.
        has_mtheta: Whether the file stores a measured angle; if not it is computed on read.
        datasets: Every dataset in the file's root, name -> (shape, dtype string).
    """

    uri: str
    layout: str
    n_events: int
    image_shape: tuple[int, int, int]
    chunk_events: int
    size_bytes: int
    energy_key: str = "energy"
    energy_column: str = ""
    has_mtheta: bool = True
    datasets: dict = field(default_factory=dict)


@dataclass
class EventBlock:
    """A contiguous range of events, cast to the types every stage expects.

    Attributes:
        ecal: float32 (n, X, Y, Z) raw cell energies.
        energy: float32 (n,) primary energy, GeV.
        theta: float32 (n,) generated polar angle, radians (pi/2 for fixed-angle files).
        mtheta: float32 (n,) measured angle, radians (from the file, or computed from ECAL).
        event_index: int64 (n,) index of each event inside its file.
        uri: The file the events came from.
    """

    ecal: np.ndarray
    energy: np.ndarray
    theta: np.ndarray
    mtheta: np.ndarray
    event_index: np.ndarray
    uri: str = ""

    def __len__(self) -> int:
        return int(self.energy.shape[0])


class BadEvent(NamedTuple):
    """One unusable event: its index inside the file and a reason from BAD_EVENT_REASONS."""

    event_index: int
    reason: str


# --------------------------------------------------------------------------------------------
# Opening files


def source_name(source: Source, name: str | None = None) -> str:
    """The display name of a source: `name` if given, else the path, else the object's name."""
    if name is not None:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", None) or f"<{type(source).__name__}>")


def _source_size(source: Source) -> int:
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source)
    pos = source.tell()
    try:
        return source.seek(0, io.SEEK_END)
    finally:
        source.seek(pos)


def _has_hdf5_signature(source: Source, size: int) -> bool:
    """True when the HDF5 signature appears at offset 0, 512, 1024, ... 128 KiB (user blocks).

    Larger user blocks are legal but rare; stopping at 128 KiB keeps the rejection of a big
    non-HDF5 object on gs:// to a few small reads instead of one per power of two.
    """
    offsets = [0] + [512 * 2**k for k in range(0, 9) if 512 * 2**k + 8 <= size]

    def check(read_at) -> bool:
        return any(read_at(off) == HDF5_SIGNATURE for off in offsets if off + 8 <= size)

    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            return check(lambda off: (fh.seek(off), fh.read(8))[1])
    pos = source.tell()
    try:
        return check(lambda off: (source.seek(off), source.read(8))[1])
    finally:
        source.seek(pos)


@contextlib.contextmanager
def open_h5(source: Source, name: str | None = None) -> Iterator[tuple[h5py.File, str, int]]:
    """Open a path or seekable binary file object as HDF5, read-only, with clear failures.

    Args:
        source: Local path or seekable binary file object (gs:// objects are opened by the
            caller, e.g. with apache_beam.io.filesystems.FileSystems.open).
        name: Display name for messages when `source` is a file object.

    Yields:
        (h5py.File, uri, size_bytes).

    Raises:
        InputValidationError: missing, empty, non-HDF5 or truncated/corrupt files.
    """
    uri = source_name(source, name)
    try:
        size = _source_size(source)
        is_hdf5 = size > 0 and _has_hdf5_signature(source, size)
    except OSError as exc:  # missing file, a directory, permissions, a broken stream
        raise InputValidationError(uri, f"cannot open file: {exc}") from exc
    if size == 0:
        raise InputValidationError(uri, "file is empty (0 bytes), not an HDF5 file")
    if not is_hdf5:
        raise InputValidationError(
            uri, f"not an HDF5 file (no HDF5 signature in its first bytes; size {size} bytes)"
        )
    try:
        h5 = h5py.File(source, "r")
    except (OSError, ValueError) as exc:
        raise InputValidationError(
            uri, f"HDF5 file is truncated or corrupt (size {size} bytes): {exc}"
        ) from exc
    try:
        yield h5, uri, size
    finally:
        h5.close()


# --------------------------------------------------------------------------------------------
# Validation of the file structure


def _require(h5: h5py.File, key: str, uri: str) -> h5py.Dataset:
    if key not in h5:
        raise InputValidationError(
            uri, f"missing dataset (file has: {sorted(h5.keys())})", dataset=key
        )
    obj = h5[key]
    if not isinstance(obj, h5py.Dataset):
        raise InputValidationError(uri, f"expected a dataset, found {type(obj).__name__}", dataset=key)
    return obj


def _require_float(ds: h5py.Dataset, uri: str) -> None:
    if not np.issubdtype(ds.dtype, np.floating):
        raise InputValidationError(
            uri, f"dtype {ds.dtype} is not a floating-point type", dataset=ds.name.lstrip("/")
        )


def _require_shape(ds: h5py.Dataset, expected: tuple, uri: str, what: str) -> None:
    if tuple(ds.shape) != tuple(expected):
        raise InputValidationError(
            uri,
            f"shape {tuple(ds.shape)} does not match {what} {tuple(expected)}",
            dataset=ds.name.lstrip("/"),
        )


def _energy_selector(layout: str, key: str, shape: tuple, n: int) -> tuple[str, tuple] | None:
    """How to extract the primary energy from an energy/target dataset, or None if unsupported.

    Only the shapes of ENERGY_SHAPES are accepted: any other row would have to be guessed at,
    and a guessed column silently gives wrong labels (an (N, 2) `energy` once read as column 1
    made every event 1.0 GeV).

    Returns (text for messages, index tuple applied after the event axis).
    """
    accepted = ENERGY_SHAPES.get((layout, key), {})
    if len(shape) < 1 or shape[0] != n or tuple(shape[1:]) not in accepted:
        return None
    index = accepted[tuple(shape[1:])]
    return ("[" + ", ".join(str(i) for i in index) + "]" if index else ""), index


def _accepted_energy_shapes(layout: str) -> str:
    """The accepted energy datasets and shapes of a layout, as text for error messages."""
    parts = []
    for (lay, key), shapes in ENERGY_SHAPES.items():
        if lay != layout:
            continue
        for row, index in shapes.items():
            shape = "(N, " + ", ".join(str(d) for d in row) + ")" if row else "(N,)"
            column = f", primary energy at [:, {', '.join(str(i) for i in index)}]" if index else ""
            parts.append(f"'{key}' {shape}{column}")
    return "; ".join(parts)


def _detect_layout(ecal: h5py.Dataset, uri: str) -> str:
    if ecal.ndim != 4:
        raise InputValidationError(
            uri,
            f"shape {tuple(ecal.shape)} is not (N, X, Y, Z); expected (N, 51, 51, 25) "
            "(variable-angle) or (N, 25, 25, 25) (fixed-angle)",
            dataset="ECAL",
        )
    for layout, shape in IMAGE_SHAPES.items():
        if tuple(ecal.shape[1:]) == shape:
            return layout
    raise InputValidationError(
        uri,
        f"shape {tuple(ecal.shape)} matches no known layout; expected (N, 51, 51, 25) "
        "(variable-angle) or (N, 25, 25, 25) (fixed-angle)",
        dataset="ECAL",
    )


def _validate(h5: h5py.File, uri: str, size: int) -> FileInfo:
    ecal = _require(h5, "ECAL", uri)
    layout = _detect_layout(ecal, uri)
    _require_float(ecal, uri)
    n = int(ecal.shape[0])
    if n == 0:
        raise InputValidationError(uri, "file holds 0 events (empty dataset)", dataset="ECAL")

    if layout == LAYOUT_VARIABLE_ANGLE:
        energy_key = "energy"
        energy = _require(h5, "energy", uri)
        theta = _require(h5, "theta", uri)
        for ds in (energy, theta):
            _require_float(ds, uri)
        _require_shape(theta, (n,), uri, "the expected (N,) with N from ECAL")
        for key in ("mtheta", "eta", "sum"):
            if key in h5:
                ds = _require(h5, key, uri)
                _require_float(ds, uri)
                _require_shape(ds, (n,), uri, "the expected (N,) with N from ECAL")
        has_mtheta = "mtheta" in h5
    else:
        energy_key = "target" if "target" in h5 else "energy"
        if energy_key not in h5:
            raise InputValidationError(
                uri,
                f"missing dataset: fixed-angle files need 'target' (N, 5) or 'energy' (N, 1, 5) "
                f"(file has: {sorted(h5.keys())})",
                dataset="target",
            )
        energy = _require(h5, energy_key, uri)
        _require_float(energy, uri)
        if "HCAL" in h5:
            hcal = _require(h5, "HCAL", uri)
            _require_float(hcal, uri)
            _require_shape(hcal, (n, *HCAL_SHAPE), uri, "the expected")
        has_mtheta = False

    selector = _energy_selector(layout, energy_key, tuple(energy.shape), n)
    if selector is None:
        raise InputValidationError(
            uri,
            f"shape {tuple(energy.shape)} is not an accepted primary-energy shape of a "
            f"{layout.replace('_', '-')} file; accepted: {_accepted_energy_shapes(layout)} "
            f"(N={n} from ECAL)",
            dataset=energy_key,
        )

    chunk_events = _chunk_events(ecal, n)
    datasets = {
        k: (tuple(v.shape), str(v.dtype)) for k, v in h5.items() if isinstance(v, h5py.Dataset)
    }
    return FileInfo(
        uri=uri,
        layout=layout,
        n_events=n,
        image_shape=tuple(int(s) for s in ecal.shape[1:]),
        chunk_events=chunk_events,
        size_bytes=int(size),
        energy_key=energy_key,
        energy_column=selector[0],
        has_mtheta=has_mtheta,
        datasets=datasets,
    )


def _chunk_events(ecal: h5py.Dataset, n: int) -> int:
    if ecal.chunks is not None:
        return int(ecal.chunks[0])
    per_event = int(np.prod(ecal.shape[1:])) * ecal.dtype.itemsize
    return int(max(1, min(n, DEFAULT_RANGE_BYTES // max(per_event, 1))))


def inspect_file(source: Source, name: str | None = None) -> FileInfo:
    """Detect the layout of one file and check its keys, shapes and dtypes.

    Reads metadata only (no cell data), so planning many files stays cheap.

    Args:
        source: Local path or seekable binary file object.
        name: Display name (e.g. the gs:// URI) when `source` is a file object.

    Returns:
        The FileInfo of a structurally valid file.

    Raises:
        InputValidationError: non-HDF5, empty, truncated files; missing datasets; wrong shapes
            or non-float dtypes; 0 events. The message names file and dataset.
    """
    with open_h5(source, name) as (h5, uri, size):
        return _validated(h5, uri, size)


def _validated(h5: h5py.File, uri: str, size: int) -> FileInfo:
    """_validate, with unreadable metadata reported as a corrupt file."""
    try:
        return _validate(h5, uri, size)
    except (OSError, RuntimeError, KeyError) as exc:
        raise InputValidationError(uri, f"HDF5 metadata unreadable (corrupt file?): {exc}") from exc


# --------------------------------------------------------------------------------------------
# Reading


def _read(ds: h5py.Dataset, start: int, stop: int, uri: str) -> np.ndarray:
    try:
        return ds[start:stop]
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputValidationError(
            uri,
            f"cannot read events {start}..{stop - 1} (truncated or corrupt data): {exc}",
            dataset=ds.name.lstrip("/"),
            event_index=start,
        ) from exc


def read_events(source: Source, start: int, stop: int, name: str | None = None) -> EventBlock:
    """Read events [start, stop) of one file as an EventBlock, validating the file first.

    Args:
        source: Local path or seekable binary file object.
        start: First event index (inclusive).
        stop: Last event index (exclusive); must not exceed the number of events.
        name: Display name (e.g. the gs:// URI) when `source` is a file object.

    Returns:
        EventBlock with float32 arrays. Fixed-angle files get theta = mtheta = pi/2; files
        without `mtheta` get it computed from ECAL with angle.measured_angle.

    Raises:
        InputValidationError: structural problems (see inspect_file), a range outside the file,
            or unreadable (truncated) data, naming the dataset and first event of the range.
    """
    with open_h5(source, name) as (h5, uri, size):
        info = _validated(h5, uri, size)
        start, stop = _check_range(info, start, stop)
        ecal = _read(h5["ECAL"], start, stop, uri).astype(np.float32, copy=False)
        energy = _read_primary_energy(h5, info, start, stop)
        n = stop - start
        if info.layout == LAYOUT_VARIABLE_ANGLE:
            theta = _read(h5["theta"], start, stop, uri).astype(np.float32)
            if info.has_mtheta:
                mtheta = _read(h5["mtheta"], start, stop, uri).astype(np.float32)
            else:
                mtheta = measured_angle(ecal).astype(np.float32)
        else:
            theta = np.full((n,), np.pi / 2.0, dtype=np.float32)
            mtheta = theta.copy()
    return EventBlock(
        ecal=np.ascontiguousarray(ecal),
        energy=np.ascontiguousarray(energy),
        theta=theta,
        mtheta=mtheta,
        event_index=np.arange(start, stop, dtype=np.int64),
        uri=uri,
    )


def _check_range(info: FileInfo, start: int, stop: int) -> tuple[int, int]:
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop <= info.n_events:
        raise InputValidationError(
            info.uri,
            f"event range [{start}, {stop}) is outside the file's {info.n_events} events",
            dataset="ECAL",
            event_index=start,
        )
    return start, stop


def _read_primary_energy(h5: h5py.File, info: FileInfo, start: int, stop: int) -> np.ndarray:
    """float32 (stop - start,) primary energies, taken from the validated dataset and column."""
    ds = h5[info.energy_key]
    index = _energy_selector(info.layout, info.energy_key, tuple(ds.shape), info.n_events)[1]
    return _read(ds, start, stop, info.uri)[(slice(None), *index)].astype(np.float32)


def read_energy_and_ecal_sum(
    source: Source, ranges: list[tuple[int, int]], name: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Primary energy and raw ECAL sum of the events in `ranges`, validating the file first.

    Reads only ECAL and the energy dataset, one range at a time (no angles, so nothing is
    computed for files without `mtheta`): the conversion's sampling-fraction check calls it on
    a few chunk-aligned ranges per file before any conversion starts.

    Args:
        source: Local path or seekable binary file object.
        ranges: [start, stop) event ranges inside the file.
        name: Display name (e.g. the gs:// URI) when `source` is a file object.

    Returns:
        (energy float32 (n,) in the file's unit, ecal_sum float64 (n,)) over all ranges, in order.

    Raises:
        InputValidationError: as read_events.
    """
    energies, sums = [np.zeros(0, np.float32)], [np.zeros(0, np.float64)]
    with open_h5(source, name) as (h5, uri, size):
        info = _validated(h5, uri, size)
        for start, stop in ranges:
            start, stop = _check_range(info, start, stop)
            ecal = _read(h5["ECAL"], start, stop, uri)
            sums.append(ecal.reshape(stop - start, -1).sum(axis=1, dtype=np.float64))
            energies.append(_read_primary_energy(h5, info, start, stop))
    return np.concatenate(energies), np.concatenate(sums)


def plan_ranges(
    info: FileInfo, events_per_range: int | None = None, start: int = 0, stop: int | None = None
) -> list[tuple[int, int]]:
    """Split a file's events [start, stop) into ranges whose bounds fall on chunk boundaries.

    Args:
        info: The file's FileInfo.
        events_per_range: Wanted range length; rounded up to a multiple of info.chunk_events.
            Defaults to one chunk.
        start: First event (a chunk boundary, or the ranges will not be chunk-aligned).
        stop: End of the events to cover (exclusive); defaults to the file's end.

    Returns:
        Consecutive ranges covering [start, stop) (none when it is empty).
    """
    chunk = max(1, info.chunk_events)
    want = chunk if events_per_range is None else max(1, int(events_per_range))
    step = -(-want // chunk) * chunk
    stop = info.n_events if stop is None else min(int(stop), info.n_events)
    return [(s, min(s + step, stop)) for s in range(int(start), stop, step)]


# --------------------------------------------------------------------------------------------
# Per-event checks


def _classify_events(
    block: EventBlock, energy_range: tuple[float, float] | None
) -> list[tuple[int, str, str, str]]:
    """(event_index, reason, dataset, detail) for each bad event, first failing test wins."""
    n = len(block)
    ecal = block.ecal.reshape(n, -1)
    reasons: list[tuple[str, str, str] | None] = [None] * n

    def mark(mask: np.ndarray, reason: str, dataset: str, detail) -> None:
        for i in np.flatnonzero(mask):
            if reasons[i] is None:
                reasons[i] = (reason, dataset, detail(i))

    ecal_finite = np.isfinite(ecal).all(axis=1)
    mark(~ecal_finite, REASON_NON_FINITE, "ECAL",
         lambda i: f"{int((~np.isfinite(ecal[i])).sum())} non-finite (NaN/inf) cells")
    for key in ("energy", "theta", "mtheta"):
        arr = getattr(block, key)
        mark(~np.isfinite(arr), REASON_NON_FINITE, key, lambda i, a=arr: f"value {a[i]!r} is not finite")
    mark(block.energy <= 0, REASON_NONPOSITIVE_ENERGY, "energy",
         lambda i: f"primary energy {float(block.energy[i])!r} GeV is not positive")
    if energy_range is not None:
        lo, hi = float(energy_range[0]), float(energy_range[1])
        mark((block.energy < lo) | (block.energy > hi), REASON_ENERGY_OUT_OF_RANGE, "energy",
             lambda i: f"primary energy {float(block.energy[i])!r} GeV outside the declared "
                       f"range [{lo}, {hi}] GeV")
    for key in ("theta", "mtheta"):
        arr = getattr(block, key)
        mark((arr <= 0) | (arr >= np.pi), REASON_ANGLE_OUT_OF_RANGE, key,
             lambda i, a=arr: f"angle {float(a[i])!r} rad outside (0, pi)")
    with np.errstate(invalid="ignore"):
        neg = (ecal < 0).any(axis=1)
    mark(neg, REASON_NEGATIVE_CELLS, "ECAL",
         lambda i: f"{int((ecal[i] < 0).sum())} negative cells (min {float(ecal[i].min())!r})")
    return [
        (int(block.event_index[i]), r[0], r[1], r[2]) for i, r in enumerate(reasons) if r is not None
    ]


def find_bad_events(
    block: EventBlock, uri: str, energy_range: tuple[float, float] | None = None
) -> list[BadEvent]:
    """List the unusable events of a block, one reason per event.

    Tests in order: non_finite (NaN/inf in ECAL, energy, theta or mtheta), nonpositive_energy,
    energy_out_of_range (only when energy_range is given), angle_out_of_range (theta or mtheta
    outside (0, pi)), negative_cells.

    Args:
        block: Events read with read_events.
        uri: The file, for symmetry with check_events (not used in the result).
        energy_range: Optional declared (min, max) primary energy in GeV, inclusive.

    Returns:
        [(event_index, reason)] as BadEvent tuples, in event order; empty when all are good.
    """
    del uri  # the result carries indices only; check_events puts the uri in its message
    return [BadEvent(i, r) for i, r, _, _ in _classify_events(block, energy_range)]


def check_events(
    block: EventBlock, uri: str, energy_range: tuple[float, float] | None = None
) -> None:
    """Raise for the first bad event of a block (the `--on-bad-event=fail` policy).

    Raises:
        InputValidationError: naming the file, the dataset, the event index, the reason code
            and the bad value.
    """
    bad = _classify_events(block, energy_range)
    if bad:
        index, reason, dataset, detail = bad[0]
        more = f" ({len(bad) - 1} more bad events in this block)" if len(bad) > 1 else ""
        raise InputValidationError(uri, f"{reason}: {detail}{more}", dataset=dataset, event_index=index)
