"""Per-event high-level shower features (sums, shapes, moments, hits, angle) from raw-unit ECAL images.

Units (docs/CONTRACTS.md section 1): ECAL images are in *raw* units, whose event sum is roughly the
primary energy in GeV. The deposited energy is ``raw * ECAL_TO_DEPOSIT`` (1/50), so the physical
sampling fraction is ``sum(raw) / 50 / E`` ~ 0.02. Thresholds that the 3DGAN analysis states in
GeV of deposited energy (the 3e-4 GeV hit threshold) are converted to raw units by dividing by
``ECAL_TO_DEPOSIT``: 3e-4 GeV deposited == 0.015 raw units.

Moments use integer cell indices 0..n-1 along each axis (conventions.md):
``M1 = sum_i i S(i) / E_sum`` and ``M2 = sum_i (i - M1)^2 S(i) / E_sum``, where S(i) is the energy
in slice i. Events with no energy have undefined moments: they are NaN and flagged in ``empty``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from data_prep.angle import is_empty_shower_angle, measured_angle

LOG = logging.getLogger(__name__)

ECAL_TO_DEPOSIT = 1.0 / 50.0
"""Raw ECAL unit -> deposited GeV (contract section 1)."""

DEFAULT_HIT_THRESHOLD_GEV = 3e-4
"""3DGAN's hit threshold, in GeV of *deposited* energy."""

AXES = ("x", "y", "z")

# Single-cell spectrum bins, in raw units (log-spaced; 1e-4 raw = 2e-6 GeV deposited up to 1e3 raw).
CELL_SPECTRUM_EDGES = np.logspace(-4.0, 3.0, 71)


def raw_threshold(threshold_gev: float) -> float:
    """Convert a threshold in GeV of deposited energy into raw ECAL units.

    Args:
        threshold_gev: Threshold in deposited GeV (3DGAN uses 3e-4).

    Returns:
        The same threshold in raw ECAL units (``threshold_gev / ECAL_TO_DEPOSIT``).

    Raises:
        ValueError: if the threshold is negative or not finite.
    """
    if not np.isfinite(threshold_gev) or threshold_gev < 0:
        raise ValueError(f"threshold_gev must be a finite value >= 0, got {threshold_gev!r}")
    return float(threshold_gev) / ECAL_TO_DEPOSIT


@dataclass
class ShowerFeatures:
    """High-level features of n showers; every array has the event axis first.

    Attributes:
        energy: Primary energy, GeV, (n,).
        theta: Generated (conditioning) angle, radians, (n,).
        ecal_sum: Raw ECAL sum, (n,).
        sampling_fraction: ``ecal_sum * ECAL_TO_DEPOSIT / energy``, (n,).
        shape_x, shape_y, shape_z: Raw energy per slice along each axis, (n, X), (n, Y), (n, Z).
        m1: First moments along x, y, z in cell-index units, (n, 3); NaN for empty events.
        m2: Second (central) moments along x, y, z, (n, 3); NaN for empty events.
        max_position: Cell index (x, y, z) of the maximum deposit, (n, 3) int.
        n_hits: Number of cells above the hit threshold, (n,) int.
        measured_angle: Angle measured from the shower (data_prep.angle, the published
            definition), radians, (n,); NaN for empty events.
        cell_hist: Per-event counts of cell energies in ``CELL_SPECTRUM_EDGES`` bins, (n, 70).
        empty: True where the event has no positive energy, (n,).
        hit_threshold_raw: The hit threshold used, raw units.
    """

    energy: np.ndarray
    theta: np.ndarray
    ecal_sum: np.ndarray
    sampling_fraction: np.ndarray
    shape_x: np.ndarray
    shape_y: np.ndarray
    shape_z: np.ndarray
    m1: np.ndarray
    m2: np.ndarray
    max_position: np.ndarray
    n_hits: np.ndarray
    measured_angle: np.ndarray
    cell_hist: np.ndarray
    empty: np.ndarray
    hit_threshold_raw: float

    @property
    def n_events(self) -> int:
        return int(self.energy.shape[0])

    def shape(self, axis: str) -> np.ndarray:
        """Return the per-event slice profile along ``axis`` ('x', 'y' or 'z')."""
        if axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
        return getattr(self, f"shape_{axis}")

    def subset(self, mask: np.ndarray) -> "ShowerFeatures":
        """Return the features of the events selected by a boolean mask or index array."""
        fields = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            fields[name] = value[mask] if isinstance(value, np.ndarray) else value
        return ShowerFeatures(**fields)

    def high_level_table(self) -> dict[str, np.ndarray]:
        """The per-event scalar features used by the CaloChallenge-style metrics.

        The incident energy itself is left out on purpose: the classifier must judge the showers,
        not the conditions, which are the same for both samples by construction.

        Returns:
            Ordered mapping feature name -> float64 array (n,). Empty events give NaN moments;
            callers drop non-finite rows.
        """
        z = self.shape_z
        total = np.where(self.ecal_sum > 0, self.ecal_sum, np.nan)
        table = {
            "log_ecal_sum": np.log(np.where(self.ecal_sum > 0, self.ecal_sum, np.nan)),
            "sampling_fraction": self.sampling_fraction,
        }
        for k, ax in enumerate(AXES):
            table[f"m1_{ax}"] = self.m1[:, k]
            table[f"width_{ax}"] = np.sqrt(np.clip(self.m2[:, k], 0.0, None))
        table["max_z"] = self.max_position[:, 2].astype(np.float64)
        table["log_n_hits"] = np.log1p(self.n_hits.astype(np.float64))
        table["measured_angle"] = self.measured_angle
        # Longitudinal energy fractions in (up to) five depth groups: the layer-energy features of
        # the CaloChallenge high-level set, coarsened so the set stays small and well conditioned.
        groups = np.array_split(np.arange(z.shape[1]), min(5, z.shape[1]))
        for g, idx in enumerate(groups):
            table[f"depth_fraction_{g}"] = z[:, idx].sum(axis=1) / total
        return {k: np.asarray(v, dtype=np.float64) for k, v in table.items()}


def _check_inputs(ecal_raw: np.ndarray, energy: np.ndarray, theta: np.ndarray) -> np.ndarray:
    ecal = np.asarray(ecal_raw)
    if ecal.ndim == 5 and ecal.shape[-1] == 1:
        ecal = ecal[..., 0]
    if ecal.ndim != 4:
        raise ValueError(f"ecal_raw must have shape (n, X, Y, Z) (optionally with a channel of 1), got {ecal.shape}")
    n = ecal.shape[0]
    for name, arr in (("energy", energy), ("theta", theta)):
        if np.shape(arr) != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match ecal_raw, got {np.shape(arr)}")
    bad = np.flatnonzero(~(np.asarray(energy) > 0))
    if bad.size:
        raise ValueError(
            f"energy must be > 0 GeV for every event; event index {int(bad[0])} has {np.asarray(energy)[bad[0]]!r}"
        )
    return ecal


def compute_features(
    ecal_raw: np.ndarray,
    energy: np.ndarray,
    theta: np.ndarray,
    hit_threshold_gev: float = DEFAULT_HIT_THRESHOLD_GEV,
    chunk_size: int = 256,
) -> ShowerFeatures:
    """Compute every per-event feature of a batch of raw-unit showers, chunk by chunk.

    Chunking keeps memory bounded: one 51x51x25 event is 260 kB in float32, so thousands of events
    would otherwise need several GB of float64 temporaries.

    Args:
        ecal_raw: Cell energies in raw units (power transform already inverted), (n, X, Y, Z).
        energy: Primary energies in GeV, (n,).
        theta: Generated angles in radians, (n,).
        hit_threshold_gev: Hit threshold in GeV of deposited energy (converted with ``raw_threshold``).
        chunk_size: Events processed at once.

    Returns:
        The ShowerFeatures of the n events.

    Raises:
        ValueError: on mismatched shapes, non-positive energies or a bad threshold.
    """
    ecal = _check_inputs(ecal_raw, energy, theta)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    thr = raw_threshold(hit_threshold_gev)
    n, nx, ny, nz = ecal.shape
    idx = [np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64), np.arange(nz, dtype=np.float64)]
    shapes = [np.empty((n, nx)), np.empty((n, ny)), np.empty((n, nz))]
    max_position = np.empty((n, 3), dtype=np.int64)
    n_hits = np.empty(n, dtype=np.int64)
    angle = np.empty(n, dtype=np.float64)
    nbins = CELL_SPECTRUM_EDGES.size - 1
    cell_hist = np.zeros((n, nbins), dtype=np.int64)
    started = time.monotonic()
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        # No float64 copy of the block (it dominated the run time): reductions accumulate in
        # float64 directly from the float32 cells.
        block = np.asarray(ecal[start:stop])
        eyz = block.sum(axis=1, dtype=np.float64)  # (c, Y, Z) projection, reused below
        shapes[0][start:stop] = block.sum(axis=(2, 3), dtype=np.float64)
        shapes[1][start:stop] = eyz.sum(axis=2)
        shapes[2][start:stop] = eyz.sum(axis=1)
        flat = block.reshape(stop - start, -1)
        max_position[start:stop] = np.stack(np.unravel_index(flat.argmax(axis=1), (nx, ny, nz)), axis=1)
        n_hits[start:stop] = np.count_nonzero(flat > thr, axis=1)
        angle[start:stop] = measured_angle(block)
        # Per-event histogram of positive cell energies: one bincount over (event, bin) pairs.
        ev, cell = np.nonzero(flat > 0)
        bins = np.searchsorted(CELL_SPECTRUM_EDGES, flat[ev, cell], side="right") - 1
        keep = (bins >= 0) & (bins < nbins)
        cell_hist[start:stop] = np.bincount(
            ev[keep] * nbins + bins[keep], minlength=(stop - start) * nbins
        ).reshape(stop - start, nbins)
        if stop < n and time.monotonic() - started > 10:
            rate = stop / (time.monotonic() - started)
            LOG.info("features: %d/%d events, %.0f events/s, ETA %.0f s", stop, n, rate, (n - stop) / rate)
    ecal_sum = shapes[2].sum(axis=1)
    empty = ~(ecal_sum > 0)
    angle[is_empty_shower_angle(angle)] = np.nan  # the published sentinel (100) is no angle
    safe = np.where(empty, 1.0, ecal_sum)
    m1 = np.stack([(s @ i) / safe for s, i in zip(shapes, idx)], axis=1)
    m2 = np.stack([(s @ (i * i)) / safe - m1[:, k] ** 2 for k, (s, i) in enumerate(zip(shapes, idx))], axis=1)
    m2 = np.clip(m2, 0.0, None)  # round-off can push a zero variance slightly negative
    m1[empty] = np.nan
    m2[empty] = np.nan
    energy = np.asarray(energy, dtype=np.float64)
    return ShowerFeatures(
        energy=energy,
        theta=np.asarray(theta, dtype=np.float64),
        ecal_sum=ecal_sum,
        sampling_fraction=ecal_sum * ECAL_TO_DEPOSIT / energy,
        shape_x=shapes[0],
        shape_y=shapes[1],
        shape_z=shapes[2],
        m1=m1,
        m2=m2,
        max_position=max_position,
        n_hits=n_hits,
        measured_angle=angle,
        cell_hist=cell_hist,
        empty=empty,
        hit_threshold_raw=thr,
    )
