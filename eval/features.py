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

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from data_prep.angle import is_empty_shower_angle, measured_angle
from data_prep.console import ProgressLog

LOG = logging.getLogger(__name__)

ECAL_TO_DEPOSIT = 1.0 / 50.0
"""Raw ECAL unit -> deposited GeV (contract section 1)."""

DEFAULT_HIT_THRESHOLD_GEV = 3e-4
"""3DGAN's hit threshold, in GeV of *deposited* energy."""

AXES = ("x", "y", "z")

# Single-cell spectrum bins, in raw units (log-spaced; 1e-4 raw = 2e-6 GeV deposited up to 1e3 raw).
CELL_SPECTRUM_EDGES = np.logspace(-4.0, 3.0, 71)

COARSE_GROUPS = (10, 10, 5)
"""Groups of cells along x, y, z summed into the downsampled image the voxel classifier sees.

51 x 51 x 25 cells become 10 x 10 x 5 = 500 inputs (about 5 x 5 x 5 cells each): fine enough to
show the shower's width, tilt and depth, small enough for a CPU classifier (CaloChallenge's
low-level classifier reads every voxel of its much coarser geometry)."""


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
        condition_angle: The angle the shower was generated for, radians, (n,): the generator's
            input angle (``mtheta`` when it was trained on the measured angle); equals ``theta``
            unless given. The published 3DGAN angle term compares it with ``measured_angle``.
        coarse_cells: Raw energy summed over ``COARSE_GROUPS`` blocks of cells, (n, gx * gy * gz),
            or (k, gx * gy * gz) for the k events listed in ``coarse_index``.
        coarse_index: None when every event has its coarse cells; otherwise the sorted indices
            (k,) of the events whose coarse cells are kept. The streaming evaluator keeps them
            for a capped random subset only (``FeatureAccumulator``): they are 500 values per
            event where every other feature together is about 200, and only the voxel
            classifier reads them.
        cell_outside: Positive cells outside the ``CELL_SPECTRUM_EDGES`` range, below and above,
            (n, 2) int: counted apart, never folded into the spectrum's edge bins.
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
    condition_angle: np.ndarray | None = None
    coarse_cells: np.ndarray | None = None
    cell_outside: np.ndarray | None = None
    coarse_index: np.ndarray | None = None

    # Fields that are not one row per event (subset and concatenate handle them on their own).
    _NOT_PER_EVENT = ("coarse_cells", "coarse_index", "hit_threshold_raw")

    def __post_init__(self) -> None:
        if self.condition_angle is None:
            self.condition_angle = self.theta
        if self.coarse_cells is None:
            self.coarse_index = None

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
            if name in self._NOT_PER_EVENT:
                fields[name] = value
            else:
                fields[name] = value[mask] if isinstance(value, np.ndarray) else value
        if self.coarse_cells is not None and self.coarse_index is None:
            fields["coarse_cells"] = self.coarse_cells[mask]
        elif self.coarse_cells is not None:
            # Row of each event in coarse_cells (-1: not kept), then the selected events' rows.
            row = np.full(self.n_events, -1, dtype=np.int64)
            row[self.coarse_index] = np.arange(self.coarse_index.size)
            picked = row[np.arange(self.n_events)[mask]]
            kept = picked >= 0
            fields["coarse_cells"] = self.coarse_cells[picked[kept]]
            fields["coarse_index"] = np.flatnonzero(kept)
        return ShowerFeatures(**fields)

    def without_coarse(self) -> "ShowerFeatures":
        """The same features without coarse cells (what needs no voxel classifier carries less)."""
        return dataclasses.replace(self, coarse_cells=None, coarse_index=None)

    @staticmethod
    def concatenate(parts: "list[ShowerFeatures]") -> "ShowerFeatures":
        """The features of several samples as one (event arrays joined in order).

        Raises:
            ValueError: if the parts were computed with different hit thresholds.
        """
        thresholds = {p.hit_threshold_raw for p in parts}
        if len(thresholds) != 1:
            raise ValueError(f"cannot join features computed with different hit thresholds {sorted(thresholds)}")
        joined = {}
        for name in ShowerFeatures.__dataclass_fields__:
            if name in ShowerFeatures._NOT_PER_EVENT:
                continue
            values = [getattr(p, name) for p in parts]
            if any(v is None for v in values):
                joined[name] = None
            elif isinstance(values[0], np.ndarray):
                joined[name] = np.concatenate(values)
            else:
                joined[name] = values[0]
        joined["hit_threshold_raw"] = parts[0].hit_threshold_raw
        if any(p.coarse_cells is None for p in parts):
            joined["coarse_cells"] = None
        elif all(p.coarse_index is None for p in parts):
            joined["coarse_cells"] = np.concatenate([p.coarse_cells for p in parts])
        else:
            offsets = np.cumsum([0] + [p.n_events for p in parts[:-1]])
            joined["coarse_cells"] = np.concatenate([p.coarse_cells for p in parts])
            joined["coarse_index"] = np.concatenate(
                [off + (np.arange(p.n_events) if p.coarse_index is None else p.coarse_index)
                 for off, p in zip(offsets, parts)]
            )
        return ShowerFeatures(**joined)

    def conditioned_table(self) -> dict[str, np.ndarray]:
        """The high-level table with the conditions first: log10 of the incident energy and the angle.

        This is what the classifier, FPD and KPD read, as CaloChallenge's high-level inputs start
        with log10(E_inc). They let the metrics see how each shower fits its conditions (a
        generator that ignores the angle or gets the energy dependence wrong). Two finite samples
        differ in their conditions too; the evaluator's null keeps that difference fixed, as it
        is in every evaluation (eval/null_model.py).
        """
        return {
            "log10_energy": np.log10(self.energy),
            "condition_angle": np.asarray(self.condition_angle, dtype=np.float64),
            **self.high_level_table(),
        }

    def voxel_table(self) -> np.ndarray:
        """Inputs of the voxel classifier: log10(E), angle and the coarse cells divided by E, (k, 2 + cells).

        One row per event with coarse cells (every event unless ``coarse_index`` names a subset).
        Dividing by the incident energy follows CaloChallenge's low-level classifier.

        Raises:
            ValueError: if the features were built without coarse cells.
        """
        if self.coarse_cells is None:
            raise ValueError("these ShowerFeatures have no coarse_cells (compute_features makes them)")
        rows = slice(None) if self.coarse_index is None else self.coarse_index
        energy = self.energy[rows]
        # The table has the coarse cells' type: float32 as the evaluator stores them (the
        # classifier standardises in float64 split by split), float64 from compute_features.
        table = np.empty((len(energy), 2 + self.coarse_cells.shape[1]), dtype=self.coarse_cells.dtype)
        table[:, 0] = np.log10(energy)
        table[:, 1] = np.asarray(self.condition_angle, dtype=np.float64)[rows]
        np.divide(self.coarse_cells, energy[:, None], out=table[:, 2:], casting="unsafe")
        return table

    def high_level_table(self) -> dict[str, np.ndarray]:
        """The per-event scalar features used by the CaloChallenge-style metrics.

        The conditions (energy, angle) are not columns here: the separation powers compare
        features one by one, where identically distributed conditions would only add noise.
        ``conditioned_table`` adds them for the multivariate metrics.

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
            table[f"depth_fraction_{g}"] = z[:, idx].sum(axis=1, dtype=np.float64) / total
        return {k: np.asarray(v, dtype=np.float64) for k, v in table.items()}


def coarse_groups(n: int, groups: int) -> np.ndarray:
    """Start indices of ``groups`` nearly equal consecutive blocks of n cells (np.array_split's cuts)."""
    return np.array([part[0] for part in np.array_split(np.arange(n), min(groups, n))])


def _group_sums(a: np.ndarray, starts: np.ndarray, axis: int, dtype: type | None = None) -> np.ndarray:
    """Sums over consecutive groups of indices along ``axis`` (groups begin at ``starts``).

    What ``np.add.reduceat(a, starts, axis, dtype)`` computes, as one ``sum`` per group: on a
    float32 block of 51 x 51 x 25 cells reduceat with a float64 accumulator took 90 % of the
    feature time (6 s of 7 s for 256 showers, measured); the sums take a few per cent.
    """
    bounds = [*np.asarray(starts).tolist(), a.shape[axis]]
    lead = (slice(None),) * axis
    return np.concatenate(
        [a[(*lead, slice(lo, hi))].sum(axis=axis, dtype=dtype, keepdims=True) for lo, hi in zip(bounds[:-1], bounds[1:])],
        axis=axis,
    )


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
    condition_angle: np.ndarray | None = None,
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
        condition_angle: The angle the showers were generated for, radians, (n,) (default: theta).

    Returns:
        The ShowerFeatures of the n events.

    Raises:
        ValueError: on mismatched shapes, non-positive energies or a bad threshold.
    """
    ecal = _check_inputs(ecal_raw, energy, theta)
    if condition_angle is not None and np.shape(condition_angle) != np.shape(theta):
        raise ValueError(f"condition_angle must have shape {np.shape(theta)} like theta, got {np.shape(condition_angle)}")
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
    cell_outside = np.zeros((n, 2), dtype=np.int64)
    progress = ProgressLog(LOG, "features", n, "events")
    starts = [coarse_groups(size, groups) for size, groups in zip((nx, ny, nz), COARSE_GROUPS)]
    coarse = np.empty((n, starts[0].size * starts[1].size * starts[2].size))
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        # No float64 copy of the block (it dominated the run time): reductions accumulate in
        # float64 directly from the float32 cells.
        block = np.asarray(ecal[start:stop])
        eyz = block.sum(axis=1, dtype=np.float64)  # (c, Y, Z) projection, reused below
        shapes[0][start:stop] = block.sum(axis=(2, 3), dtype=np.float64)
        shapes[1][start:stop] = eyz.sum(axis=2)
        shapes[2][start:stop] = eyz.sum(axis=1)
        block_sums = _group_sums(block, starts[0], 1, np.float64)
        block_sums = _group_sums(block_sums, starts[1], 2)
        coarse[start:stop] = _group_sums(block_sums, starts[2], 3).reshape(stop - start, -1)
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
        cell_outside[start:stop, 0] = np.bincount(ev[bins < 0], minlength=stop - start)
        cell_outside[start:stop, 1] = np.bincount(ev[bins >= nbins], minlength=stop - start)
        progress.update(stop)
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
        condition_angle=None if condition_angle is None else np.asarray(condition_angle, dtype=np.float64),
        coarse_cells=coarse,
        cell_outside=cell_outside,
    )


# Storage types of the streamed features: what the largest per-event arrays need, not float64 and
# int64. Profiles in float32 keep 7 significant digits (the cells themselves are float32); counts
# and cell indices are exact in int32; the coarse cells are stored in float32 too.
_COMPACT_TYPES = {"shape_x": np.float32, "shape_y": np.float32, "shape_z": np.float32,
                  "cell_hist": np.int32, "cell_outside": np.int32, "max_position": np.int32,
                  "n_hits": np.int32}


class FeatureAccumulator:
    """The features of one sample, filled batch by batch while the showers themselves are dropped.

    A shower is 51 x 51 x 25 float32 cells (260 kB); its features take about 1 kB (profiles in
    float32, counts in int32). The evaluator reads the Monte Carlo and generates showers in
    batches, passes each batch through ``add`` and forgets it, so its memory holds feature rows,
    not showers; the rows are written into arrays allocated once for ``n_events`` (no list of
    parts joined at the end, which would hold them twice). The coarse cells (500 values an
    event, for the voxel classifier only) are kept for at most ``coarse_limit`` events, a seeded
    random subset drawn up front: with the limit, the memory they take is bounded whatever the
    sample size.

    Args:
        n_events: Events the sample will hold (the subset is drawn among them).
        hit_threshold_gev: Hit threshold in GeV of deposited energy.
        coarse_limit: Most events whose coarse cells are kept; 0 keeps every event's.
        seed: Seed of the subset (a sequence such as ``[seed, sample]`` keeps samples apart).
    """

    def __init__(
        self, n_events: int, hit_threshold_gev: float = DEFAULT_HIT_THRESHOLD_GEV,
        coarse_limit: int = 0, seed: int | list[int] = 0,
    ) -> None:
        if n_events < 1 or coarse_limit < 0:
            raise ValueError(f"n_events must be >= 1 and coarse_limit >= 0, got {n_events} and {coarse_limit}")
        self.n_events = int(n_events)
        self.hit_threshold_gev = hit_threshold_gev
        keep = np.ones(self.n_events, dtype=bool)
        if 0 < coarse_limit < self.n_events:
            keep[:] = False
            keep[np.random.default_rng(seed).choice(self.n_events, coarse_limit, replace=False)] = True
        self._coarse_index = np.flatnonzero(keep)
        self._coarse_row = np.cumsum(keep) - 1  # row of event i in the coarse array, where kept
        self._keep = keep
        self._arrays: dict[str, np.ndarray] = {}
        self._threshold_raw = raw_threshold(hit_threshold_gev)
        self.filled = 0

    def add(
        self, ecal_raw: np.ndarray, energy: np.ndarray, theta: np.ndarray, condition_angle: np.ndarray | None = None
    ) -> None:
        """Compute the features of the next batch of showers (raw units, (k, X, Y, Z)) and keep them.

        Raises:
            ValueError: on bad inputs (compute_features), or more events than ``n_events``.
        """
        if len(energy) == 0:
            return
        f = compute_features(ecal_raw, energy, theta, self.hit_threshold_gev, condition_angle=condition_angle)
        start, stop = self.filled, self.filled + f.n_events
        if stop > self.n_events:
            raise ValueError(f"FeatureAccumulator for {self.n_events} events received {stop}")
        if not self._arrays:
            for name in ShowerFeatures.__dataclass_fields__:
                value = getattr(f, name)
                if name in ShowerFeatures._NOT_PER_EVENT or not isinstance(value, np.ndarray):
                    continue
                self._arrays[name] = np.empty((self.n_events, *value.shape[1:]), _COMPACT_TYPES.get(name, value.dtype))
            self._arrays["coarse_cells"] = np.empty((self._coarse_index.size, f.coarse_cells.shape[1]), np.float32)
        for name, array in self._arrays.items():
            if name != "coarse_cells":
                array[start:stop] = getattr(f, name)
        keep = self._keep[start:stop]
        rows = self._coarse_row[start:stop][keep]
        self._arrays["coarse_cells"][rows] = f.coarse_cells[keep]
        self.filled = stop

    def result(self) -> ShowerFeatures:
        """The sample's features, in the order the events were added.

        Raises:
            ValueError: if fewer events were added than announced.
        """
        if self.filled != self.n_events:
            raise ValueError(f"FeatureAccumulator expected {self.n_events} events, received {self.filled}")
        every = self._coarse_index.size == self.n_events
        return ShowerFeatures(
            **self._arrays, hit_threshold_raw=self._threshold_raw, coarse_index=None if every else self._coarse_index
        )
