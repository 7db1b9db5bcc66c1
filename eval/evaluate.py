"""Evaluator stage: generate showers for the test events, compare them with Monte Carlo, write metrics and report.

Method. The Monte Carlo test split is shuffled (seeded) and cut in two halves A and B. The
generator receives half B's energies and angles, so the generated sample and MC half B have the
same conditions and the same size. Every metric is computed twice against the same reference
(half A): generated vs A, and B vs A. The second is the noise floor: what a perfect generator would
score with this many events. Re-dealing events of nearly equal conditions between the two halves
gives the floor's spread with both condition sets kept, as every evaluation keeps them
(eval/null_model.py), and the verdict allows each metric its floor plus k standard deviations
(eval/verdict.py, rules in eval/thresholds/default.yaml).

Memory. The showers are never all held: the Monte Carlo is read and the generator run in batches
of ``STREAM_BATCH`` events, each batch is reduced to per-event feature rows (about 2 kB an event,
eval.features.FeatureAccumulator) and dropped. Every metric, the noise-floor replicas included,
works from these rows; the voxel classifier's downsampled cells are kept for at most
``classifier_voxel_max_events`` events per sample. Peak memory is thus set by the batch, the
generator and the classifiers, not by the number of events (docs/eval.md gives measurements).

Outputs (``output_dir``, local or gs://): ``plots/*.png``, ``report.html`` and ``metrics.json``.
Everything is computed in memory first; each file is written atomically and ``metrics.json`` last,
so a reader that finds metrics.json finds a complete evaluation.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from data_prep.config_cli import ConfigArgumentParser, add_verbose_flag, build_config_parser, choices_field, parse_config
from data_prep.console import ProgressLog, configure_console, import_quietly
from data_prep.manifest import SPLITS
from data_prep.strict_fields import reject_unknown_keys
from eval import calochallenge as cc
from eval.features import DEFAULT_HIT_THRESHOLD_GEV, FeatureAccumulator, ShowerFeatures
from eval.metrics import BinningConfig, compare_physics
from eval.null_model import resplit_replicas
from eval.verdict import Thresholds, load_thresholds, null_statistics, verdict

LOG = logging.getLogger(__name__)

MIN_EVENTS_PER_HALF = 20

#: Monte Carlo events read, and showers generated, per batch: 17 MB of 51 x 51 x 25 float32 cells.
STREAM_BATCH = 64


@dataclass
class EvalConfig:
    """Configuration of one evaluation; CLI flags map one to one onto these fields.

    Attributes:
        data: URI of the converted dataset's manifest.json (local or gs://).
        generator_dir: Folder of the exported generator (trainer output ``generator/``).
        output_dir: Folder (local or gs://) for metrics.json, report.html and plots/.
        max_events: Test events to use (0 = the whole test split).
        seed: Seed of the A/B split, the generator noise, the classifiers and the noise-floor
            replicas (FPD and KPD draw with jetnet's seed 42, as CaloChallenge's numbers do).
        batch_size: Generator batch size.
        split: Dataset split holding the Monte Carlo reference.
        hit_threshold_gev: Hit threshold in GeV of deposited energy (0.015 raw units at 3e-4).
        energy_centres: Explicit energy-bin centres, GeV, space- or comma-separated (empty =
            equal-population bins).
        energy_half_width: Half width of explicit energy bins, GeV.
        n_energy_bins: Number of equal-population energy bins.
        angle_centres_deg: Angle-bin centres, degrees, space- or comma-separated.
        angle_half_width_rad: Angle-bin half width, radians.
        min_events_per_bin: Bins with fewer events in either sample are skipped.
        histogram_bins: Bins of the separation-power histograms.
        fpd_min_samples: Smallest FPD batch (jetnet's min_samples; CaloChallenge passes 10000).
            Batches are drawn with replacement and may exceed the sample.
        fpd_max_samples: Largest FPD batch (jetnet's max_samples).
        fpd_batches: FPD batches averaged per batch size (jetnet's num_batches).
        fpd_points: Batch sizes in the FPD's 1/N fit (jetnet's num_points).
        kpd_batch_size: Events per sample in each KPD batch (CaloChallenge passes 10000).
        kpd_batches: Number of KPD batches (jetnet's num_batches).
        thresholds: YAML file (local or gs://) with the verdict rules; empty means the packaged
            eval/thresholds/default.yaml.
        classifier_voxel_max_events: Most events per sample whose downsampled cells the voxel
            classifier reads (a seeded random subset; 0 = every event). The cells are the one
            large per-event feature (500 values): capping them bounds the evaluator's memory
            whatever the number of events. The high-level classifier and every other metric
            read every event.
    """

    data: str = field(metadata={"path": "input"})
    generator_dir: str = field(metadata={"path": "input"})
    output_dir: str = field(metadata={"path": "output"})
    max_events: int = 0
    seed: int = 0
    batch_size: int = 64
    split: str = choices_field("test", SPLITS)
    hit_threshold_gev: float = DEFAULT_HIT_THRESHOLD_GEV
    # Binning defaults come from eval.metrics' own dataclass: one source.
    energy_centres: tuple[float, ...] = BinningConfig.energy_centres
    energy_half_width: float = BinningConfig.energy_half_width
    n_energy_bins: int = BinningConfig.n_energy_bins
    angle_centres_deg: tuple[float, ...] = BinningConfig.angle_centres_deg
    angle_half_width_rad: float = BinningConfig.angle_half_width_rad
    min_events_per_bin: int = BinningConfig.min_events_per_bin
    histogram_bins: int = 40
    # FPD and KPD settings of CaloChallenge's evaluation (jetnet's defaults otherwise).
    fpd_min_samples: int = 10_000
    fpd_max_samples: int = cc.JETNET_FPD_MAX_SAMPLES
    fpd_batches: int = cc.JETNET_FPD_NUM_BATCHES
    fpd_points: int = cc.JETNET_FPD_NUM_POINTS
    kpd_batch_size: int = 10_000
    kpd_batches: int = cc.JETNET_KPD_NUM_BATCHES
    thresholds: str = ""
    classifier_voxel_max_events: int = 5_000

    def __post_init__(self) -> None:
        self.energy_centres = tuple(float(c) for c in self.energy_centres)
        self.angle_centres_deg = tuple(float(c) for c in self.angle_centres_deg)
        if self.max_events < 0:
            raise ValueError(f"max_events must be >= 0 (0 = all), got {self.max_events}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.histogram_bins < 2:
            raise ValueError(f"histogram_bins must be >= 2, got {self.histogram_bins}")
        if not 1 < self.fpd_min_samples <= self.fpd_max_samples:
            raise ValueError(
                f"fpd_min_samples and fpd_max_samples must satisfy 1 < min <= max, got "
                f"{self.fpd_min_samples} and {self.fpd_max_samples}"
            )
        for name in ("fpd_batches", "fpd_points", "kpd_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kpd_batch_size < 2:
            raise ValueError(f"kpd_batch_size must be >= 2, got {self.kpd_batch_size}")
        if self.classifier_voxel_max_events < 0:
            raise ValueError(
                f"classifier_voxel_max_events must be >= 0 (0 = every event), got {self.classifier_voxel_max_events}"
            )
        self.binning()  # validates the binning fields
        self.verdict_rules()  # reads and validates the thresholds file before any work is done

    def binning(self) -> BinningConfig:
        return BinningConfig(
            energy_centres=self.energy_centres,
            energy_half_width=self.energy_half_width,
            n_energy_bins=self.n_energy_bins,
            angle_centres_deg=self.angle_centres_deg,
            angle_half_width_rad=self.angle_half_width_rad,
            min_events_per_bin=self.min_events_per_bin,
        )

    def verdict_rules(self) -> Thresholds:
        """The verdict rules of ``thresholds`` (the packaged default when empty)."""
        return load_thresholds(self.thresholds)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["energy_centres"] = list(self.energy_centres)
        d["angle_centres_deg"] = list(self.angle_centres_deg)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvalConfig":
        reject_unknown_keys(cls, d, "EvalConfig")
        return cls(**d)


# --------------------------------------------------------------------------- array-level core
def _classifier_metrics(prefix: str, real: np.ndarray, generated: np.ndarray, seed: int, notes: list[str]) -> dict:
    """AUC, BCE, JSD and test size of one classifier test, NaN with a note when it cannot run."""
    try:
        r = cc.classifier_test(real, generated, seed=seed)
        return {f"{prefix}_auc": r.auc, f"{prefix}_bce": r.bce, f"{prefix}_jsd": r.jsd,
                f"{prefix}_auc_uncalibrated": r.auc_uncalibrated, f"{prefix}_n_test": float(r.n_test)}
    except ValueError as err:
        notes.append(f"{prefix} not computed: {err}")
        return {f"{prefix}_{k}": float("nan") for k in ("auc", "bce", "jsd", "auc_uncalibrated", "n_test")}


def compare(
    reference: ShowerFeatures, candidate: ShowerFeatures, config: EvalConfig, seed: int, classifiers: bool = True
) -> dict:
    """Every metric of one sample against the reference.

    Args:
        reference: Monte Carlo half A.
        candidate: Generated showers, or Monte Carlo half B for the noise floor.
        config: Evaluation settings.
        seed: Seed of the classifiers' splits and training (FPD and KPD use jetnet's seed 42).
        classifiers: Train the two classifiers (the noise-floor replicas skip them: the AUC of
            an uninformative classifier is known).

    Returns:
        ``{"physics": compare_physics output, "flat": {metric: float}, "notes": [str]}``. A metric
        that cannot be computed (e.g. every generated shower is empty) is NaN with a note.
    """
    physics = compare_physics(reference, candidate, config.binning())
    flat: dict[str, float] = dict(physics["summary"])
    notes: list[str] = []
    ref_table, cand_table = reference.high_level_table(), candidate.high_level_table()
    sep = cc.feature_separation_powers(ref_table, cand_table, config.histogram_bins)
    for name, value in sep.items():
        flat[f"sep_power.{name}"] = value
    finite_sep = [v for v in sep.values() if math.isfinite(v)]
    flat["sep_power_mean"] = float(np.mean(finite_sep)) if finite_sep else float("nan")
    ref_cells, cand_cells = reference.cell_hist.sum(axis=0), candidate.cell_hist.sum(axis=0)
    flat["cell_spectrum_sep_power"] = (
        cc.separation_power(ref_cells, cand_cells) if ref_cells.sum() > 0 and cand_cells.sum() > 0 else float("nan")
    )
    # Classifier, FPD and KPD read the high-level features with the conditions, as CaloChallenge's do.
    x_ref = cc.table_to_matrix(reference.conditioned_table())
    x_cand = cc.table_to_matrix(candidate.conditioned_table())
    if classifiers:
        flat.update(_classifier_metrics("classifier", x_ref, x_cand, seed, notes))
        flat.update(_classifier_metrics("classifier_voxel", reference.voxel_table(), candidate.voxel_table(), seed, notes))
    try:
        f = cc.fpd(x_ref, x_cand, min_samples=config.fpd_min_samples, max_samples=config.fpd_max_samples,
                   num_batches=config.fpd_batches, num_points=config.fpd_points)
        flat.update(fpd_x1e3=f.value_x1e3, fpd_err_x1e3=f.error_x1e3)
    except ValueError as err:
        notes.append(f"FPD not computed: {err}")
        flat.update(fpd_x1e3=float("nan"), fpd_err_x1e3=float("nan"))
    try:
        k = cc.kpd(x_ref, x_cand, num_batches=config.kpd_batches, batch_size=config.kpd_batch_size)
        flat.update(kpd_x1e3=k.value_x1e3, kpd_err_x1e3=k.error_x1e3)
    except ValueError as err:
        notes.append(f"KPD not computed: {err}")
        flat.update(kpd_x1e3=float("nan"), kpd_err_x1e3=float("nan"))
    return {"physics": physics, "flat": flat, "notes": notes}


def split_halves(n_events: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of event indices into halves A and B of equal size (one event may be left out)."""
    perm = np.random.default_rng(seed).permutation(n_events)
    half = n_events // 2
    return np.sort(perm[:half]), np.sort(perm[half : 2 * half])


GenerateFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _checked_size(energy: np.ndarray) -> int:
    return _checked_count(int(np.shape(energy)[0]))


def _checked_count(n: int) -> int:
    if n < 2 * MIN_EVENTS_PER_HALF:
        raise ValueError(
            f"evaluation needs at least {2 * MIN_EVENTS_PER_HALF} Monte Carlo events "
            f"({MIN_EVENTS_PER_HALF} per half), got {n}; raise max_events or use a larger test split"
        )
    return n


@dataclass
class ShowerBatch:
    """Consecutive Monte Carlo events, the unit the evaluator reads.

    Attributes:
        ecal: Showers in raw units (power transform undone), (k, X, Y, Z).
        energy: Primary energies, GeV, (k,).
        theta: Generated angles, radians, (k,): used for the angle bins.
        condition_angle: The angle the generator is conditioned on, radians, (k,).
    """

    ecal: np.ndarray
    energy: np.ndarray
    theta: np.ndarray
    condition_angle: np.ndarray


def array_batches(
    ecal_raw: np.ndarray, energy: np.ndarray, theta: np.ndarray, condition_angle: np.ndarray | None = None,
    batch: int = STREAM_BATCH,
) -> Iterator[ShowerBatch]:
    """In-memory Monte Carlo arrays as a stream of ShowerBatch views."""
    energy, theta = np.asarray(energy), np.asarray(theta)
    angle = theta if condition_angle is None else np.asarray(condition_angle)
    for start in range(0, len(energy), batch):
        stop = start + batch
        yield ShowerBatch(ecal_raw[start:stop], energy[start:stop], theta[start:stop], angle[start:stop])


def _checked_showers(showers: np.ndarray, n: int, cells: tuple[int, ...]) -> np.ndarray:
    showers = np.asarray(showers)
    if showers.ndim == 5 and showers.shape[-1] == 1:
        showers = showers[..., 0]
    if showers.shape != (n, *cells):
        raise ValueError(f"generator returned showers of shape {showers.shape}, expected {(n, *cells)}")
    return showers


def sample_features(
    batches: Iterable[ShowerBatch], n_events: int, config: EvalConfig, generate: GenerateFn | None = None
) -> dict[str, ShowerFeatures]:
    """Features of Monte Carlo halves A and B, and of showers generated for B, read batch by batch.

    The first ``n_events`` events of the stream are split into halves as ``split_halves(n_events,
    config.seed)`` says. Each batch is reduced to feature rows and dropped, so memory does not
    grow with the showers; the coarse cells are kept for ``config.classifier_voxel_max_events``
    events per sample at most.

    Args:
        batches: The Monte Carlo, in a fixed order (at least ``n_events`` events).
        n_events: Monte Carlo events to use.
        config: Evaluation settings.
        generate: ``generate(energy_gev, angle_rad) -> raw-unit showers``, called on each batch
            with the conditions of its half-B events (in order); None measures the Monte Carlo
            alone. A generator with its own random stream must continue it from call to call.

    Returns:
        ``reference`` (half A), ``independent`` (half B) and, with a generator, ``generated``
        (one shower per half-B event, same order).

    Raises:
        ValueError: if the sample is too small, the stream ends early, or the generator returns
            the wrong shape.
    """
    n = _checked_count(int(n_events))
    a_idx, b_idx = split_halves(n, config.seed)
    half = np.full(n, -1, dtype=np.int8)
    half[a_idx], half[b_idx] = 0, 1
    names = ["reference", "independent"] + ([] if generate is None else ["generated"])
    sizes = {"reference": a_idx.size, "independent": b_idx.size, "generated": b_idx.size}
    accumulators = {
        name: FeatureAccumulator(sizes[name], config.hit_threshold_gev, config.classifier_voxel_max_events,
                                 [config.seed, 0x766F78, k])  # "vox": a stream of its own per sample
        for k, name in enumerate(names)
    }
    progress = ProgressLog(LOG, "features" if generate is None else "generating and reducing showers", n, "events")
    done = 0
    for batch in batches:
        k = min(len(batch.energy), n - done)
        if k <= 0:
            break
        which = half[done : done + k]
        for code, name in ((0, "reference"), (1, "independent")):
            sel = np.flatnonzero(which == code)
            accumulators[name].add(batch.ecal[sel], batch.energy[sel], batch.theta[sel], batch.condition_angle[sel])
        sel = np.flatnonzero(which == 1)
        if generate is not None and sel.size:
            energy, theta, angle = batch.energy[sel], batch.theta[sel], batch.condition_angle[sel]
            showers = _checked_showers(generate(energy, angle), sel.size, tuple(np.shape(batch.ecal)[1:4]))
            accumulators["generated"].add(showers, energy, theta, angle)
        done += k
        progress.update(done)
    if done < n:
        raise ValueError(f"the Monte Carlo ended after {done} events, {n} expected")
    return {name: acc.result() for name, acc in accumulators.items()}


@dataclass
class MonteCarloFloor:
    """The Monte Carlo halves and everything computed from them alone, reusable for any generator.

    Attributes:
        reference: Features of Monte Carlo half A (the reference of every comparison).
        independent: Features of half B, whose conditions the generator receives.
        noise: ``compare(A, B)``: the noise floor shown beside every figure.
        null: Mean, sd and count of every metric over the noise floor and its replicas.
        rules: The verdict rules in force.
        mc_events: Monte Carlo events before the split.
    """

    reference: ShowerFeatures
    independent: ShowerFeatures
    noise: dict
    null: dict
    rules: Thresholds
    mc_events: int


def floor_from_features(
    reference: ShowerFeatures, independent: ShowerFeatures, config: EvalConfig, mc_events: int
) -> MonteCarloFloor:
    """The noise floor (A vs B) and its spread (re-dealt halves) from the halves' features alone."""
    noise = compare(reference, independent, config, config.seed)
    independent = independent.without_coarse()  # its coarse cells served the voxel classifier above
    rules = config.verdict_rules()
    LOG.info("noise floor: Monte Carlo A vs B and %d re-drawn pairs", rules.replicas)
    # The replicas skip the classifiers, so they carry no coarse cells.
    replicas = resplit_replicas(
        reference.without_coarse(), independent,
        lambda a, b: compare(a, b, config, config.seed, classifiers=False)["flat"],
        rules.replicas, config.seed,
    )
    return MonteCarloFloor(reference, independent, noise, null_statistics([noise["flat"], *replicas]), rules, mc_events)


def monte_carlo_floor(
    ecal_raw: np.ndarray,
    energy: np.ndarray,
    theta: np.ndarray,
    config: EvalConfig,
    condition_angle: np.ndarray | None = None,
) -> MonteCarloFloor:
    """Split the Monte Carlo into halves A and B and measure the noise floor and its spread.

    Args:
        ecal_raw: Monte Carlo showers in raw units, (n, X, Y, Z).
        energy: Primary energies, GeV, (n,).
        theta: Generated angles, radians, (n,): used for the angle bins.
        config: Evaluation settings.
        condition_angle: The angle the generator is conditioned on (e.g. the measured ``mtheta``
            when it was trained on it); defaults to ``theta``.

    Raises:
        ValueError: if the sample is too small for a meaningful split.
    """
    n = _checked_size(energy)
    feats = sample_features(array_batches(ecal_raw, energy, theta, condition_angle), n, config)
    return floor_from_features(feats["reference"], feats["independent"], config, n)


def judge(floor: MonteCarloFloor, generated: ShowerFeatures, config: EvalConfig) -> dict:
    """Compare generated showers (made for half B's conditions) with half A, and apply the verdict.

    Returns:
        ``generated``, ``noise_floor`` (compare outputs), ``null``, ``verdict`` and ``counts``.
    """
    gen = compare(floor.reference, generated, config, config.seed)
    return {
        "generated": gen,
        "noise_floor": floor.noise,
        "null": floor.null,
        "verdict": verdict(gen["flat"], floor.noise["flat"], floor.null, floor.rules),
        "counts": {
            "mc_events": floor.mc_events,
            "reference_events": floor.reference.n_events,
            "generated_events": generated.n_events,
            "generated_empty": int(generated.empty.sum()),
        },
    }


def evaluate_stream(
    batches: Iterable[ShowerBatch], n_events: int, generate: GenerateFn, config: EvalConfig
) -> tuple[dict, dict[str, ShowerFeatures]]:
    """The whole comparison on a stream of Monte Carlo batches and a batch-wise generator.

    Args:
        batches: The Monte Carlo in a fixed order (``array_batches`` for arrays in memory).
        n_events: Monte Carlo events to use (the first of the stream).
        generate: Called per batch with half B's conditions (see ``sample_features``).
        config: Evaluation settings.

    Returns:
        ``(results, features)`` as ``evaluate_arrays``.
    """
    t0 = time.monotonic()
    feats = sample_features(batches, n_events, config, generate)
    LOG.info("features of %d Monte Carlo events and %d generated showers in %.1f s",
             n_events, feats["generated"].n_events, time.monotonic() - t0)
    t0 = time.monotonic()
    floor = floor_from_features(feats["reference"], feats["independent"], config, int(n_events))
    LOG.info("noise floor and %d replicas in %.1f s", floor.rules.replicas, time.monotonic() - t0)
    t0 = time.monotonic()
    results = judge(floor, feats["generated"], config)
    LOG.info("generated vs Monte Carlo in %.1f s", time.monotonic() - t0)
    return results, feats


def evaluate_arrays(
    ecal_raw: np.ndarray,
    energy: np.ndarray,
    theta: np.ndarray,
    generate: GenerateFn,
    config: EvalConfig,
    condition_angle: np.ndarray | None = None,
) -> tuple[dict, dict[str, ShowerFeatures]]:
    """Run the whole comparison on in-memory Monte Carlo events and a generator function.

    Args:
        ecal_raw: Monte Carlo showers in raw units, (n, X, Y, Z).
        energy: Primary energies, GeV, (n,).
        theta: Generated angles, radians, (n,): used for the angle bins.
        generate: ``generate(energy_gev, angle_rad) -> raw-unit showers``, called once with all
            of half B's conditions.
        config: Evaluation settings.
        condition_angle: The angle the generator is conditioned on (e.g. the measured ``mtheta``
            when it was trained on it); defaults to ``theta``.

    Returns:
        ``(results, features)``: results with ``generated``, ``noise_floor`` (compare outputs),
        ``null`` (mean, sd and count of every metric over the Monte Carlo replicas), ``verdict``
        and ``counts``; features of ``reference``, ``generated``, ``independent``.

    Raises:
        ValueError: if the sample is too small for a meaningful split, or the generator returns
            the wrong shape.
    """
    n = _checked_size(energy)
    _, b_idx = split_halves(n, config.seed)  # the split sample_features makes
    angle = theta if condition_angle is None else condition_angle
    # Generate first, in one call: a generator of the wrong shape fails before any other work.
    t0 = time.monotonic()
    LOG.info("generating %d showers (batch %d)", b_idx.size, config.batch_size)
    generated = _checked_showers(
        generate(np.asarray(energy)[b_idx], np.asarray(angle)[b_idx]), b_idx.size, tuple(np.shape(ecal_raw)[1:4])
    )
    LOG.info("generated %d showers in %.1f s", b_idx.size, time.monotonic() - t0)
    served = 0

    def next_showers(energy_b: np.ndarray, _angle: np.ndarray) -> np.ndarray:
        nonlocal served
        served += len(energy_b)
        return generated[served - len(energy_b) : served]

    return evaluate_stream(array_batches(ecal_raw, energy, theta, condition_angle), n, next_showers, config)


# --------------------------------------------------------------------------- I/O
def hdf5_batches(paths: Sequence[str], angle_key: str = "mtheta", batch: int = STREAM_BATCH) -> Iterator[ShowerBatch]:
    """Monte Carlo or published 3DGAN HDF5 files (raw units) as ShowerBatch-es, file after file.

    Read with data_prep.h5layout (either layout), ``batch`` events at a time; ``angle_key``
    ("mtheta" or "theta") names the angle a generator is conditioned on.
    """
    from data_prep.h5layout import inspect_file, read_events

    if angle_key not in ("mtheta", "theta"):
        raise ValueError(f"angle_key must be 'mtheta' or 'theta', got {angle_key!r}")
    for path in paths:
        n = inspect_file(path).n_events
        for start in range(0, n, batch):
            block = read_events(path, start, min(n, start + batch))
            yield ShowerBatch(block.ecal, block.energy, block.theta, getattr(block, angle_key))


def dataset_batches(manifest_uri: str, split: str, power: float, angle_key: str) -> Iterator[ShowerBatch]:
    """A converted split as ShowerBatch-es of ``STREAM_BATCH`` events, in file order, power transform undone.

    Decoded as training decodes it (data_prep.dataset.make_dataset), without shuffling or
    repetition; only a few batches are in memory at a time.
    """
    from data_prep.dataset import make_dataset

    ds = make_dataset(manifest_uri, split, global_batch_size=STREAM_BATCH, shuffle=False, repeat=False,
                      deterministic=True, drop_remainder=False)
    inverse = np.float32(1.0 / power)
    for batch in ds:
        ecal = np.clip(np.asarray(batch["ecal"].numpy(), dtype=np.float32), 0.0, None)
        np.power(ecal, inverse, out=ecal)
        energy = batch["energy"].numpy()
        yield ShowerBatch(ecal, energy, batch["theta"].numpy(), batch[angle_key].numpy())


def _json_safe(value: Any) -> Any:
    """Recursively convert numpy types to Python and non-finite floats to None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages the evaluation depends on ('absent' if not installed)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("caloforge", "numpy", "matplotlib", "tensorflow", "tensorflow-cpu", "keras", "h5py"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _manifest_power(manifest: Any) -> float:
    pre = getattr(manifest, "preprocessing", None)
    if pre is None and isinstance(manifest, dict):
        pre = manifest.get("preprocessing")
    power = pre.get("power") if isinstance(pre, dict) else getattr(pre, "power", None)
    if power is None or not (float(power) > 0):
        raise ValueError(f"manifest preprocessing has no valid 'power' (got {power!r}); cannot undo the transform")
    return float(power)


def write_outputs(output_dir: str, metrics: dict, figures) -> dict[str, str]:
    """Write plots/*.png, report.html and metrics.json (last), each atomically.

    Returns:
        Mapping of output name -> URI.
    """
    from data_prep import uri
    from eval.report import render_html  # matplotlib: loaded when a report is written

    paths = {}
    uri.makedirs(output_dir)
    for fig in figures:
        p = uri.join(output_dir, "plots", f"{fig.name}.png")
        uri.write_bytes(p, fig.png)
        paths[f"plots/{fig.name}.png"] = p
    paths["report.html"] = uri.join(output_dir, "report.html")
    uri.write_text(paths["report.html"], render_html(figures, metrics))
    paths["metrics.json"] = uri.join(output_dir, "metrics.json")
    uri.write_text(paths["metrics.json"], json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False))
    return paths


def assemble_metrics(results: dict, config: EvalConfig, extra: dict | None = None) -> dict:
    """The metrics.json payload: summary, verdict, per-bin details, config, seed and versions."""
    summary = {
        "passed": results["verdict"]["passed"],
        "generated": results["generated"]["flat"],
        "noise_floor": results["noise_floor"]["flat"],
    }
    payload = {
        "summary": summary,
        "verdict": results["verdict"],
        "counts": results["counts"],
        "generated": {"physics": results["generated"]["physics"], "notes": results["generated"]["notes"]},
        "noise_floor": {"physics": results["noise_floor"]["physics"], "notes": results["noise_floor"]["notes"]},
        "null": results["null"],
        "config": config.to_dict(),
        "seed": config.seed,
        "versions": software_versions(),
    }
    if extra:
        payload.update(extra)
    return _json_safe(payload)


def generator_function(bundle: Any, seed: int, batch_size: int) -> GenerateFn:
    """``generate(energy, angle)`` of an exported generator, called batch after batch on one noise stream.

    ``GeneratorBundle.generate`` draws event i's noise as row i of ``np.random.default_rng(seed)``,
    and ``default_rng`` returns a Generator it is given unchanged: passing the same Generator to
    successive calls continues one stream, so each event gets the noise row one call for all
    events would give it (the showers then agree with one call's to float32 rounding).
    """
    noise = np.random.default_rng(seed)

    def generate(energy: np.ndarray, angle: np.ndarray) -> np.ndarray:
        return bundle.generate(energy, angle, seed=noise, batch_size=batch_size)

    return generate


def evaluate(config: EvalConfig) -> dict:
    """Evaluate an exported generator against the Monte Carlo test split and publish the report.

    Args:
        config: Evaluation settings.

    Returns:
        The metrics.json content (``summary``, ``verdict``, ``counts``, per-bin details, ``config``,
        ``seed``, ``versions``, ``outputs``).

    Raises:
        ValueError: on a bad manifest, too few test events, or a generator of the wrong shape.
    """
    from data_prep.dataset import read_manifest
    from data_prep.records import OUTPUT_KEYS
    from trainer.export import load_generator

    started = time.monotonic()
    manifest = read_manifest(config.data)
    power = _manifest_power(manifest)
    available = int(manifest.counts.get(config.split, 0))
    n_events = min(available, config.max_events) if config.max_events > 0 else available
    _checked_count(n_events)
    cells = tuple(int(d) for d in manifest.image_shape)
    bundle = load_generator(config.generator_dir)
    # The generator is conditioned on the angle it was trained with (generator_config.json).
    angle_key = str(bundle.config.get("angle_key", "mtheta"))
    if angle_key not in OUTPUT_KEYS or angle_key == "ecal":
        raise ValueError(f"generator is conditioned on {angle_key!r}, which the dataset {config.data} lacks")
    image_shape = tuple(int(d) for d in bundle.config.get("image_shape", cells))
    if image_shape != cells:
        raise ValueError(
            f"generator {config.generator_dir} makes {image_shape} images but dataset {config.data} holds {cells}"
        )
    generate = generator_function(bundle, config.seed, config.batch_size)
    LOG.info("evaluating %d Monte Carlo events of %s in batches of %d (power %.3g undone)",
             n_events, config.data, STREAM_BATCH, power)
    results, feats = evaluate_stream(
        dataset_batches(config.data, config.split, power, angle_key), n_events, generate, config
    )
    extra = {
        "generator_angle_key": angle_key,
        "generator_config": bundle.config,
        "power": power,
        "wall_seconds": time.monotonic() - started,
    }
    metrics = assemble_metrics(results, config, extra)
    from eval.report import build_figures  # matplotlib: loaded when a report is written

    t0 = time.monotonic()
    figures = build_figures(feats["reference"], feats["generated"], feats["independent"], results)
    LOG.info("%d figures in %.1f s", len(figures), time.monotonic() - t0)
    from data_prep import uri

    metrics["outputs"] = {
        "metrics": uri.join(config.output_dir, "metrics.json"),
        "report": uri.join(config.output_dir, "report.html"),
        "plots": [uri.join(config.output_dir, "plots", f"{f.name}.png") for f in figures],
    }
    write_outputs(config.output_dir, metrics, figures)
    LOG.info(
        "evaluation %s in %.1f s -> %s",
        "PASSED" if metrics["verdict"]["passed"] else "FAILED",
        time.monotonic() - started,
        config.output_dir,
    )
    return metrics


# --------------------------------------------------------------------------- CLI
def build_parser() -> ConfigArgumentParser:
    """One flag per EvalConfig field (underscores become dashes); tuples take several values."""
    return build_config_parser(EvalConfig, prog="caloforge evaluate", description=__doc__.splitlines()[0])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: parse flags into an EvalConfig, evaluate, print the verdict.

    Returns:
        0 when the verdict is PASSED, 1 when it is FAILED (0 with ``--no-fail``, for runs that
        only want the report).
    """
    parser = build_parser()
    add_verbose_flag(parser)
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when the verdict is FAILED")
    config, args = parse_config(parser, EvalConfig, argv)
    no_fail = args.no_fail
    configure_console(args.verbose)
    import_quietly("tensorflow", args.verbose)  # the generator runs on TensorFlow
    metrics = evaluate(config)
    verdict_ = metrics["verdict"]
    for check in verdict_["checks"]:
        if not check["passed"]:
            print(
                f"FAILED {check['name']}: {check['value']} > threshold {check['threshold']} "
                f"(noise floor {check['noise_floor']}; {check['rule']})",
                file=sys.stderr,
            )
    print(json.dumps({"passed": verdict_["passed"], "failed": verdict_["failed"], "output_dir": config.output_dir}))
    return 0 if verdict_["passed"] or no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
