"""Per-file sanity check run before a conversion: is the energy label on the scale the ECAL says?

A structurally valid file can still carry wrong labels: energies in MeV instead of GeV, a wrong
column of a multi-column energy dataset, or ECAL cells on another scale. Every event then looks
fine on its own and the whole dataset comes out silently wrong. The ratio of the two, the
sampling fraction (raw ECAL sum / 50 / primary energy, ~0.02 for the 3DGAN calorimeter), is
nearly constant, so its median over a small sample of a file catches all of these at once,
whatever the file's layout.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from typing import Iterator, Sequence

import numpy as np

from data_prep import h5layout
from data_prep import uri as uri_lib
from data_prep.errors import InputValidationError
from data_prep.mc_shower import ECAL_RAW_SCALE

_LOG = logging.getLogger(__name__)

#: Accepted band of the per-file median sampling fraction; the 3DGAN files sit near 0.02.
DEFAULT_SAMPLING_FRACTION_RANGE = (0.005, 0.08)
#: At most this many events are read per file (whole chunks, spread over the file).
SAMPLE_EVENTS = 256
#: The flag (and ConvertConfig field) that changes the band; named in every error.
RANGE_FLAG = "--sampling-fraction-range MIN MAX"


def sample_ranges(info: h5layout.FileInfo, max_events: int = SAMPLE_EVENTS) -> list[tuple[int, int]]:
    """Chunk-aligned [start, stop) ranges, at most max_events events in all, spread over a file.

    Each range starts on an HDF5 chunk boundary and covers at most one chunk, so every chunk
    touched is decompressed once and mostly used. Ranges are taken from chunks evenly spaced
    from the first to the last, so a file whose later part differs is still seen. A chunk
    longer than max_events gives one range of max_events events from the file's start.
    """
    chunk = max(1, int(info.chunk_events))
    length = max(1, min(chunk, int(max_events)))
    n_chunks = -(-info.n_events // chunk)
    wanted = max(1, min(n_chunks, int(max_events) // length))
    picks = sorted({int(round(c)) for c in np.linspace(0, n_chunks - 1, wanted)})
    return [(c * chunk, min(c * chunk + length, info.n_events)) for c in picks]


def median_sampling_fraction(energy: np.ndarray, ecal_sum: np.ndarray) -> tuple[float | None, int]:
    """(median of ecal_sum / 50 / energy, events used) over events with both values finite and > 0.

    Events with zero (or bad) energy or an empty ECAL carry no information on the scale and are
    left out instead of turning the median into inf or 0; the result is None when none is left.
    """
    energy = np.asarray(energy, dtype=np.float64)
    ecal_sum = np.asarray(ecal_sum, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(energy) & np.isfinite(ecal_sum) & (energy > 0) & (ecal_sum > 0)
    if not usable.any():
        return None, 0
    fractions = ecal_sum[usable] / ECAL_RAW_SCALE / energy[usable]
    return float(np.median(fractions)), int(usable.sum())


@contextlib.contextmanager
def _open_source(uri: str) -> Iterator[tuple[h5layout.Source, str | None]]:
    """(source, display name) for h5layout: gs:// objects as seekable streams, paths as they are."""
    if uri_lib.is_gcs(uri):
        with uri_lib.open_read(uri) as handle:
            yield handle, uri
    else:
        yield uri, None


def check_sampling_fraction(
    uri: str,
    info: h5layout.FileInfo,
    sampling_fraction_range: tuple[float, float],
    max_events: int = SAMPLE_EVENTS,
) -> float | None:
    """Check one file's median sampling fraction against the accepted band.

    Args:
        uri: Local path or gs:// URI of the file.
        info: The file's FileInfo (from h5layout.inspect_file).
        sampling_fraction_range: (min, max) accepted for the median.
        max_events: Events to sample at most (see sample_ranges).

    Returns:
        The median, or None when no sampled event has a positive energy and ECAL sum (nothing
        to judge; the bad-event checks of the conversion deal with such events).

    Raises:
        InputValidationError: the median is outside the band; the message names the file, the
            energy dataset and column, the median, the band, likely causes and the flag.
    """
    with _open_source(uri) as (source, name):
        energy, ecal_sum = h5layout.read_energy_and_ecal_sum(source, sample_ranges(info, max_events), name=name)
    median, used = median_sampling_fraction(energy, ecal_sum)
    if median is None:
        _LOG.warning("SamplingFraction: %s: none of %d sampled events has a positive energy and ECAL sum; "
                     "cannot check the energy scale", uri, len(energy))
        return None
    low, high = (float(v) for v in sampling_fraction_range)
    if not low <= median <= high:
        label = f"'{info.energy_key}'" + (f"[:, {info.energy_column[1:-1]}]" if info.energy_column else "")
        raise InputValidationError(
            uri,
            f"median sampling fraction (raw ECAL sum / {ECAL_RAW_SCALE:g} / primary energy from "
            f"{label}) is {median:.4g} over {used} sampled events, outside the accepted band "
            f"[{low:g}, {high:g}] (3DGAN files: about 0.02). Likely causes: energies in the wrong "
            "unit (MeV instead of GeV gives about 1000x too small a value), the primary energy in "
            "another column, or ECAL cells on another scale than raw = 50 x deposited GeV. If the "
            f"file is right, set the band with {RANGE_FLAG} (ConvertConfig.sampling_fraction_range; "
            "0 inf turns the check off)",
            dataset=info.energy_key,
        )
    return median


def check_sampling_fractions(
    files: Sequence[tuple[str, h5layout.FileInfo]],
    sampling_fraction_range: tuple[float, float] | None,
    max_events: int = SAMPLE_EVENTS,
) -> dict[str, float | None]:
    """Run check_sampling_fraction on every file, a few at a time; None as the band does nothing.

    Returns:
        {uri: median or None}.

    Raises:
        InputValidationError: for the first file (in input order) outside the band.
    """
    if sampling_fraction_range is None or not files:
        return {}
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
        futures = [pool.submit(check_sampling_fraction, u, info, sampling_fraction_range, max_events)
                   for u, info in files]
        medians = {u: f.result() for (u, _), f in zip(files, futures)}
    found = [m for m in medians.values() if m is not None]
    _LOG.info("SamplingFraction: %d files checked in %.1f s, medians %s, band [%g, %g]",
              len(files), time.monotonic() - t0,
              f"{min(found):.4g}..{max(found):.4g}" if found else "n/a", *sampling_fraction_range)
    return medians
