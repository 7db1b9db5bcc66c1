"""Evaluator stage: generate showers for the test events, compare them with Monte Carlo, write metrics and report.

Method. The Monte Carlo test split is shuffled (seeded) and cut in two halves A and B. The
generator receives half B's energies and angles, so the generated sample and MC half B have the
same conditions and the same size. Every metric is computed twice against the same reference
(half A): generated vs A, and B vs A. The second is the noise floor: what a perfect generator would
score with this many events. Re-dealing events of nearly equal conditions between the two halves
gives the floor's spread with both condition sets kept, as every evaluation keeps them
(eval/null_model.py), and the verdict allows each metric its floor plus k standard deviations
(eval/verdict.py, rules in eval/thresholds/default.yaml). The generator judged is, by default,
the training run's best snapshot by 3DGAN's best-epoch rule (eval/best_epoch.py).

Several generators (``--generator A --generator B``: e.g. a 1-GPU and an 8-replica training) are
each given half B's conditions and the same noise seed, each judged against the same floor, and
overlaid on every figure of one report.

Memory. The showers are never all held: the Monte Carlo is read and the generator run in batches
of ``STREAM_BATCH`` events, each batch is reduced to per-event feature rows (about 2 kB an event,
eval.features.FeatureAccumulator), running sums of the average images (eval.projections) and
the discriminator's outputs on a capped subsample, and dropped. Every metric, the noise-floor
replicas included, works from these rows; the voxel classifier's downsampled cells are kept for
at most ``classifier_voxel_max_events`` events per sample. Peak memory is thus set by the batch,
the generators and the classifiers, not by the number of events (docs/eval.md gives measurements).

Outputs (``output_dir``, local or gs://): ``generator/`` (a copy of the generator evaluated;
with several generators ``generators/<i>/``), ``plots/*.png``, ``report.html`` and ``metrics.json``.
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
from eval import best_epoch
from eval import calochallenge as cc
from eval.discriminator_view import DiscriminatorOutputs, DiscriminatorProbe
from eval.features import DEFAULT_HIT_THRESHOLD_GEV, ECAL_TO_DEPOSIT, FeatureAccumulator, ShowerFeatures
from eval.metrics import BinningConfig, compare_physics
from eval.null_model import resplit_replicas
from eval.projections import ProjectionSums
from eval.report_inputs import GeneratorView, ReportInputs
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
        output_dir: Folder (local or gs://) for metrics.json, report.html and plots/.
        generator_dir: Folder of the exported generator (trainer output ``generator/``).
        generator: Exported generator folder to evaluate; repeat the flag to compare several in
            one report (each judged against the same Monte Carlo floor). Adds to
            ``generator_dir``; at least one of the two is needed.
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
        discriminator_events: Showers of each sample passed through each generator's trained
            discriminator (found from the checkpoint beside the generator) for the report's
            discriminator figure; 0 skips it.
        select_best: Score the training run's generator snapshots and its final generator by
            sampling_fraction_mre (3DGAN's best-epoch quantity, on the same Monte Carlo events)
            and evaluate the best of the last best_of_last (eval/best_epoch.py); without
            snapshots the final generator is evaluated, as with --no-select-best.
        best_of_last: Candidates scored: the last this many by step (3DGAN: the last 10 epochs).
            Each costs one generation of half the test events.
        snapshots_dir: Folder of the run's generator snapshots; empty: the snapshots/ folder
            beside generator_dir (the trainer's layout). With several generators, selection
            applies to each: this folder is the first one's, the others use the snapshots/
            folder beside theirs.
    """

    data: str = field(metadata={"path": "input"})
    output_dir: str = field(metadata={"path": "output"})
    generator_dir: str = field(default="", metadata={"path": "input"})
    generator: tuple[str, ...] = field(default=(), metadata={"path": "input", "repeat": True})
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
    discriminator_events: int = 300
    select_best: bool = True
    best_of_last: int = 10
    snapshots_dir: str = field(default="", metadata={"path": "input"})

    def __post_init__(self) -> None:
        self.energy_centres = tuple(float(c) for c in self.energy_centres)
        self.angle_centres_deg = tuple(float(c) for c in self.angle_centres_deg)
        self.generator = tuple(str(g) for g in self.generator)
        if not self.generator_dirs():
            raise ValueError("no generator given: set generator_dir or generator (repeat it to compare several)")
        if self.discriminator_events < 0:
            raise ValueError(f"discriminator_events must be >= 0, got {self.discriminator_events}")
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
        for name in ("fpd_batches", "fpd_points", "kpd_batches", "best_of_last"):
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

    def generator_dirs(self) -> list[str]:
        """Every generator folder to evaluate, in order: generator_dir, then each generator (duplicates once)."""
        dirs = ([self.generator_dir] if self.generator_dir else []) + list(self.generator)
        return list(dict.fromkeys(d.rstrip("/") or d for d in dirs))

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
        d["generator"] = list(self.generator)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvalConfig":
        reject_unknown_keys(cls, d, "EvalConfig")
        return cls(**{**d, "generator": tuple(d.get("generator", ()))})


# --------------------------------------------------------------------------- array-level core
def _classifier_metrics(prefix: str, real: np.ndarray, generated: np.ndarray, seed: int, notes: list[str],
                        curves: dict | None = None) -> dict:
    """AUC, BCE, JSD and test size of one classifier test, NaN with a note when it cannot run.

    The test split's ROC curve goes into ``curves[prefix]`` (fpr, tpr, auc, n_test) for the report.
    """
    try:
        r = cc.classifier_test(real, generated, seed=seed)
        if curves is not None:
            curves[prefix] = {"fpr": list(r.roc_fpr), "tpr": list(r.roc_tpr), "auc": r.auc, "n_test": r.n_test}
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
        ``{"physics": compare_physics output, "flat": {metric: float}, "notes": [str], "curves":
        {classifier: {fpr, tpr, auc, n_test}}}``. A metric that cannot be computed (e.g. every
        generated shower is empty) is NaN with a note.
    """
    physics = compare_physics(reference, candidate, config.binning())
    flat: dict[str, float] = dict(physics["summary"])
    notes: list[str] = []
    curves: dict[str, dict] = {}
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
        flat.update(_classifier_metrics("classifier", x_ref, x_cand, seed, notes, curves))
        flat.update(_classifier_metrics("classifier_voxel", reference.voxel_table(), candidate.voxel_table(), seed,
                                        notes, curves))
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
    return {"physics": physics, "flat": flat, "notes": notes, "curves": curves}


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


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    """k seeded indices of n (all when k >= n), sorted: the discriminator figure's events."""
    return np.sort(np.random.default_rng(seed).permutation(n)[: min(n, k)])


def _joined_outputs(parts: list[DiscriminatorOutputs]) -> DiscriminatorOutputs:
    """Discriminator outputs of successive batches as one."""
    if not parts:
        return DiscriminatorOutputs(np.zeros(0), np.zeros(0), np.zeros(0))
    return DiscriminatorOutputs(*(np.concatenate([getattr(p, name) for p in parts])
                                  for name in ("realfake", "energy_pred", "energy_true")))


@dataclass
class StreamedSamples:
    """What the evaluator keeps of the streamed showers: nothing that grows as showers do.

    Attributes:
        reference, independent: Features of Monte Carlo halves A and B.
        generated: Features of each generator's showers (made for half B's conditions), in order.
        reference_projections, independent_projections: Summed x-y and y-z images of A and B.
        generated_projections: The same for each generator.
        discriminator: For each generator, its discriminator's outputs on subsamples of A, B and
            its own showers (keys "reference", "independent", "generated"), or None.
    """

    reference: ShowerFeatures
    independent: ShowerFeatures
    generated: list[ShowerFeatures]
    reference_projections: ProjectionSums
    independent_projections: ProjectionSums
    generated_projections: list[ProjectionSums]
    discriminator: list[dict[str, DiscriminatorOutputs] | None]


def stream_samples(
    batches: Iterable[ShowerBatch], n_events: int, config: EvalConfig, generators: Sequence[GeneratorInput] = ()
) -> StreamedSamples:
    """Features, projections and discriminator outputs of halves A, B and each generator, batch by batch.

    The first ``n_events`` events of the stream are split into halves as ``split_halves(n_events,
    config.seed)`` says. Each batch is reduced to feature rows, added to the projection sums and,
    for the events of the discriminator subsample (``config.discriminator_events`` per sample,
    seeded), passed through each generator's discriminator; then it is dropped, so memory does
    not grow with the showers. The coarse cells are kept for ``config.classifier_voxel_max_events``
    events per sample at most.

    Args:
        batches: The Monte Carlo, in a fixed order (at least ``n_events`` events).
        n_events: Monte Carlo events to use.
        config: Evaluation settings.
        generators: Each one's ``generate(energy_gev, angle_rad) -> raw-unit showers`` is called
            on each batch with the conditions of its half-B events (in order); none measures the
            Monte Carlo alone. A generator with its own random stream must continue it from call
            to call.

    Raises:
        ValueError: if the sample is too small, the stream ends early, or a generator returns
            the wrong shape.
    """
    n = _checked_count(int(n_events))
    a_idx, b_idx = split_halves(n, config.seed)
    half = np.full(n, -1, dtype=np.int8)
    half[a_idx], half[b_idx] = 0, 1
    sizes = {0: a_idx.size, 1: b_idx.size}

    def accumulator(size: int, k: int) -> FeatureAccumulator:
        # "vox": a subset stream of its own per sample (k: 0 = A, 1 = B, 2 + i = generator i).
        return FeatureAccumulator(size, config.hit_threshold_gev, config.classifier_voxel_max_events,
                                  [config.seed, 0x766F78, k])

    mc = {code: accumulator(sizes[code], code) for code in (0, 1)}
    gen_acc = [accumulator(b_idx.size, 2 + i) for i in range(len(generators))]
    mc_proj: dict[int, ProjectionSums] = {}
    gen_proj: list[ProjectionSums] = []
    # The discriminator subsample: positions within each half.
    in_sub = {code: np.zeros(sizes[code], dtype=bool) for code in (0, 1)}
    if config.discriminator_events:
        in_sub[0][_subsample(sizes[0], config.discriminator_events, config.seed)] = True
        in_sub[1][_subsample(sizes[1], config.discriminator_events, config.seed + 1)] = True
    probes = [g.discriminator if config.discriminator_events else None for g in generators]
    d_parts = [None if p is None else {"reference": [], "independent": [], "generated": []} for p in probes]
    seen = {0: 0, 1: 0}
    progress = ProgressLog(LOG, "features" if not generators else "generating and reducing showers", n, "events")
    done = 0
    for batch in batches:
        k = min(len(batch.energy), n - done)
        if k <= 0:
            break
        cells = tuple(np.shape(batch.ecal)[1:4])
        if not mc_proj:
            mc_proj = {code: ProjectionSums.empty(cells) for code in (0, 1)}
            gen_proj = [ProjectionSums.empty(cells) for _ in generators]
        which = half[done : done + k]
        sel, sub = {}, {}
        for code in (0, 1):
            sel[code] = np.flatnonzero(which == code)
            showers = batch.ecal[sel[code]]
            mc[code].add(showers, batch.energy[sel[code]], batch.theta[sel[code]], batch.condition_angle[sel[code]])
            mc_proj[code].add(showers)
            sub[code] = in_sub[code][seen[code] : seen[code] + sel[code].size]
            seen[code] += sel[code].size
            for probe, parts in zip(probes, d_parts):
                if probe is not None and sub[code].any():
                    rows = sel[code][sub[code]]
                    parts["reference" if code == 0 else "independent"].append(
                        probe.outputs(batch.ecal[rows], batch.energy[rows], config.batch_size))
        b = sel[1]
        if b.size:
            energy, theta, angle = batch.energy[b], batch.theta[b], batch.condition_angle[b]
            for i, gen in enumerate(generators):
                try:
                    showers = _checked_showers(gen.generate(energy, angle), b.size, cells)
                except ValueError as err:
                    if len(generators) == 1:
                        raise
                    raise ValueError(f"{gen.label}: {err}") from err
                gen_acc[i].add(showers, energy, theta, angle)
                gen_proj[i].add(showers)
                if probes[i] is not None and sub[1].any():
                    d_parts[i]["generated"].append(
                        probes[i].outputs(showers[sub[1]], energy[sub[1]], config.batch_size))
                del showers
        done += k
        progress.update(done)
    if done < n:
        raise ValueError(f"the Monte Carlo ended after {done} events, {n} expected")
    return StreamedSamples(
        mc[0].result(), mc[1].result(), [acc.result() for acc in gen_acc], mc_proj[0], mc_proj[1], gen_proj,
        [None if parts is None else {key: _joined_outputs(v) for key, v in parts.items()} for parts in d_parts],
    )


def sample_features(
    batches: Iterable[ShowerBatch], n_events: int, config: EvalConfig, generate: GenerateFn | None = None
) -> dict[str, ShowerFeatures]:
    """Features of Monte Carlo halves A and B, and of showers generated for B (``stream_samples``).

    Returns:
        ``reference`` (half A), ``independent`` (half B) and, with a generator, ``generated``
        (one shower per half-B event, same order).
    """
    generators = [] if generate is None else [GeneratorInput("Generator", generate)]
    samples = stream_samples(batches, n_events, config, generators)
    feats = {"reference": samples.reference, "independent": samples.independent}
    if generate is not None:
        feats["generated"] = samples.generated[0]
    return feats


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
        reference_projections, independent_projections: Summed x-y and y-z projections of A and
            B (the report's average images); None when made from features alone.
    """

    reference: ShowerFeatures
    independent: ShowerFeatures
    noise: dict
    null: dict
    rules: Thresholds
    mc_events: int
    reference_projections: ProjectionSums | None = None
    independent_projections: ProjectionSums | None = None


def floor_from_features(
    reference: ShowerFeatures, independent: ShowerFeatures, config: EvalConfig, mc_events: int,
    reference_projections: ProjectionSums | None = None, independent_projections: ProjectionSums | None = None,
) -> MonteCarloFloor:
    """The noise floor (A vs B) and its spread (re-dealt halves) from the halves' features alone.

    The projections (the halves' average images) are only carried along for the report.
    """
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
    return MonteCarloFloor(reference, independent, noise, null_statistics([noise["flat"], *replicas]), rules, mc_events,
                           reference_projections, independent_projections)


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
    n = _checked_size(energy)
    samples = stream_samples(array_batches(ecal_raw, energy, theta, condition_angle), n, config)
    return floor_from_features(samples.reference, samples.independent, config, n,
                               samples.reference_projections, samples.independent_projections)


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


@dataclass
class GeneratorInput:
    """One generator to evaluate.

    Attributes:
        label: Its name in the report and in metrics.json.
        generate: ``generate(energy_gev, angle_rad) -> raw-unit showers``, called batch after
            batch with half B's conditions (see ``stream_samples``).
        discriminator: Its trained discriminator (eval.discriminator_view), or None.
    """

    label: str
    generate: GenerateFn
    discriminator: DiscriminatorProbe | None = None


@dataclass
class Evaluation:
    """The floor and every generator's view (features, results, projections, discriminator outputs)."""

    floor: MonteCarloFloor
    views: list[GeneratorView]


def evaluate_stream_generators(
    batches: Iterable[ShowerBatch], n_events: int, generators: Sequence[GeneratorInput], config: EvalConfig
) -> Evaluation:
    """Judge one or several generators against one Monte Carlo floor, on a stream of batches.

    Every generator receives half B's energies and angles batch by batch; each is compared with
    half A and judged against the same null. Showers are reduced to feature rows, projection
    sums and discriminator outputs on a subsample, then dropped (``stream_samples``).

    Raises:
        ValueError: if the sample is too small, the stream ends early, a generator returns the
            wrong shape, or two generators share a label.
    """
    labels = [g.label for g in generators]
    if not generators or len(set(labels)) != len(labels):
        raise ValueError(f"generators need distinct labels, got {labels}")
    t0 = time.monotonic()
    samples = stream_samples(batches, n_events, config, generators)
    LOG.info("features of %d Monte Carlo events and %d x %d generated showers in %.1f s",
             n_events, len(generators), samples.independent.n_events, time.monotonic() - t0)
    t0 = time.monotonic()
    floor = floor_from_features(samples.reference, samples.independent, config, int(n_events),
                                samples.reference_projections, samples.independent_projections)
    LOG.info("noise floor and %d replicas in %.1f s", floor.rules.replicas, time.monotonic() - t0)
    views = []
    for i, gen in enumerate(generators):
        t0 = time.monotonic()
        feats = samples.generated[i]
        view = GeneratorView(gen.label, feats, judge(floor, feats, config), projections=samples.generated_projections[i])
        outputs = samples.discriminator[i]
        if outputs is not None:
            view.discriminator = outputs
            view.discriminator_note = (f"checkpoint {gen.discriminator.checkpoint.rsplit('/', 1)[-1]}, "
                                       f"{outputs['generated'].n_events} showers per sample")
        LOG.info("%s vs Monte Carlo in %.1f s", gen.label, time.monotonic() - t0)
        views.append(view)
    return Evaluation(floor, views)


def evaluate_stream(
    batches: Iterable[ShowerBatch], n_events: int, generate: GenerateFn, config: EvalConfig
) -> tuple[dict, dict[str, ShowerFeatures]]:
    """The whole comparison on a stream of Monte Carlo batches and one batch-wise generator.

    Args:
        batches: The Monte Carlo in a fixed order (``array_batches`` for arrays in memory).
        n_events: Monte Carlo events to use (the first of the stream).
        generate: Called per batch with half B's conditions (see ``stream_samples``).
        config: Evaluation settings.

    Returns:
        ``(results, features)`` as ``evaluate_arrays``.
    """
    ev = evaluate_stream_generators(batches, n_events, [GeneratorInput("Generator", generate)], config)
    view = ev.views[0]
    return view.results, {"reference": ev.floor.reference, "independent": ev.floor.independent,
                          "generated": view.features}


def evaluate_generators(
    ecal_raw: np.ndarray,
    energy: np.ndarray,
    theta: np.ndarray,
    generators: Sequence[GeneratorInput],
    config: EvalConfig,
    condition_angle: np.ndarray | None = None,
) -> Evaluation:
    """``evaluate_stream_generators`` on Monte Carlo arrays in memory, each generator called once.

    Each ``generate`` is called once with every half-B condition (a generator seeded per call
    then draws one noise stream, not the same noise per batch); its showers are then served
    batch by batch, and the first generator runs before any other work, so a generator of the
    wrong shape fails early.

    Raises:
        ValueError: if the sample is too small, a generator returns the wrong shape, or two
            generators share a label.
    """
    n = _checked_size(energy)
    _, b_idx = split_halves(n, config.seed)  # the split stream_samples makes
    energy_b = np.asarray(energy)[b_idx]
    angle_b = np.asarray(theta if condition_angle is None else condition_angle)[b_idx]
    cells = tuple(np.shape(ecal_raw)[1:4])

    def served(gen: GeneratorInput) -> GeneratorInput:
        t0 = time.monotonic()
        LOG.info("%s: generating %d showers (batch %d)", gen.label, b_idx.size, config.batch_size)
        try:
            generated = _checked_showers(gen.generate(energy_b, angle_b), b_idx.size, cells)
        except ValueError as err:
            if len(generators) == 1:
                raise
            raise ValueError(f"{gen.label}: {err}") from err
        LOG.info("%s: generated %d showers in %.1f s", gen.label, b_idx.size, time.monotonic() - t0)
        start = 0

        def next_showers(e: np.ndarray, _angle: np.ndarray) -> np.ndarray:
            nonlocal start
            start += len(e)
            return generated[start - len(e) : start]

        return GeneratorInput(gen.label, next_showers, gen.discriminator)

    inputs = [served(g) for g in generators]
    return evaluate_stream_generators(array_batches(ecal_raw, energy, theta, condition_angle), n, inputs, config)


def evaluate_arrays(
    ecal_raw: np.ndarray,
    energy: np.ndarray,
    theta: np.ndarray,
    generate: GenerateFn,
    config: EvalConfig,
    condition_angle: np.ndarray | None = None,
) -> tuple[dict, dict[str, ShowerFeatures]]:
    """Run the whole comparison on in-memory Monte Carlo events and one generator function.

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
    ev = evaluate_generators(ecal_raw, energy, theta, [GeneratorInput("Generator", generate)], config, condition_angle)
    view = ev.views[0]
    return view.results, {"reference": ev.floor.reference, "independent": ev.floor.independent, "generated": view.features}


def report_inputs(ev: Evaluation, config: EvalConfig, notes: list[str] | None = None) -> ReportInputs:
    """What the report draws from an evaluation."""
    return ReportInputs(ev.floor.reference, ev.floor.independent, ev.views, ev.floor.reference_projections,
                        ev.floor.independent_projections, config.min_events_per_bin, list(notes or []))


def generator_labels(paths: Sequence[str]) -> list[str]:
    """Short distinct names for generator folders: the path parts that differ between them.

    ``runs/gpu1/model/generator`` and ``runs/gpu8/model/generator`` become ``gpu1`` and ``gpu8``;
    a single generator is called "Generator".
    """
    if len(paths) == 1:
        return ["Generator"]
    parts = [[p for p in path.rstrip("/").split("/") if p] for path in paths]
    parts = [p[:-1] if len(p) > 1 and p[-1] == "generator" else p for p in parts]
    while all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    while all(len(p) > 1 for p in parts) and len({p[-1] for p in parts}) == 1:
        parts = [p[:-1] for p in parts]
    labels = ["/".join(p) or "generator" for p in parts]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


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


def write_outputs(output_dir: str, metrics: dict, report) -> dict[str, str]:
    """Write plots/*.png, report.html and metrics.json (last), each atomically.

    Args:
        output_dir: Destination folder (local or gs://).
        metrics: The metrics.json content.
        report: An eval.report.Report (or a bare list of ReportFigure).

    Returns:
        Mapping of output name -> URI.
    """
    from data_prep import uri
    from eval.report import Report, render_html  # matplotlib: loaded when a report is written

    if not isinstance(report, Report):
        report = Report(list(report))
    paths = {}
    uri.makedirs(output_dir)
    for fig in report.figures:
        p = uri.join(output_dir, "plots", f"{fig.name}.png")
        uri.write_bytes(p, fig.png)
        paths[f"plots/{fig.name}.png"] = p
    paths["report.html"] = uri.join(output_dir, "report.html")
    uri.write_text(paths["report.html"], render_html(report, metrics))
    paths["metrics.json"] = uri.join(output_dir, "metrics.json")
    uri.write_text(paths["metrics.json"], json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False))
    return paths


def _comparison(comparison: dict) -> dict:
    return {"physics": comparison["physics"], "notes": comparison["notes"], "curves": comparison.get("curves", {})}


def assemble_metrics(results: dict, config: EvalConfig, extra: dict | None = None) -> dict:
    """The metrics.json payload of one generator: summary, verdict, per-bin details, config, seed and versions."""
    summary = {
        "passed": results["verdict"]["passed"],
        "generated": results["generated"]["flat"],
        "noise_floor": results["noise_floor"]["flat"],
    }
    return _payload({
        "summary": summary,
        "verdict": results["verdict"],
        "counts": results["counts"],
        "generated": _comparison(results["generated"]),
    }, results, config, extra)


def _payload(body: dict, floor: dict, config: EvalConfig, extra: dict | None) -> dict:
    """metrics.json: ``body`` (the generators' part), then what every evaluation records once:
    the noise floor, the null, the config, seed and versions, and ``extra`` over them."""
    payload = {
        **body,
        "noise_floor": _comparison(floor["noise_floor"]),
        "null": floor["null"],
        "config": config.to_dict(),
        "seed": config.seed,
        "versions": software_versions(),
    }
    if extra:
        payload.update(extra)
    return _json_safe(payload)


def assemble_metrics_many(views: Sequence[GeneratorView], config: EvalConfig, per_generator: Sequence[dict] | None = None,
                          extra: dict | None = None) -> dict:
    """The metrics.json payload of several generators judged against one floor.

    One generator gives ``assemble_metrics``'s layout unchanged. Several give the floor once
    (``noise_floor``, ``null``, ``summary.noise_floor``) and, under ``generators`` (a list in
    the order given), each one's ``label``, ``summary`` (``passed``, ``generated``), ``verdict``,
    ``counts`` and per-bin ``generated`` details plus ``per_generator[i]``; the top ``verdict``
    passes when every generator passes and names failed checks as ``label: check``.
    """
    per_generator = list(per_generator or [{} for _ in views])
    if len(views) == 1:
        return assemble_metrics(views[0].results, config, {**(extra or {}), **per_generator[0]})
    floor = views[0].results
    generators = []
    for view, more in zip(views, per_generator):
        r = view.results
        generators.append({
            "label": view.label,
            "summary": {"passed": r["verdict"]["passed"], "generated": r["generated"]["flat"]},
            "verdict": r["verdict"],
            "counts": r["counts"],
            "generated": _comparison(r["generated"]),
            **more,
        })
    passed = all(g["verdict"]["passed"] for g in generators)
    return _payload({
        "summary": {"passed": passed, "noise_floor": floor["noise_floor"]["flat"],
                    "generators": {g["label"]: g["summary"] for g in generators}},
        "verdict": {"passed": passed,
                    "failed": [f"{g['label']}: {name}" for g in generators for name in g["verdict"]["failed"]],
                    "generators": {g["label"]: g["verdict"]["passed"] for g in generators},
                    "thresholds": floor["verdict"]["thresholds"]},
        "generators": generators,
        "counts": {k: v for k, v in floor["counts"].items() if k in ("mc_events", "reference_events")},
    }, floor, config, extra)


def _snapshot_selection(metrics: dict, label: str) -> Any:
    """The ``snapshot_selection`` entry for one generator, wherever the selection step put it."""
    for g in metrics.get("generators") or []:
        if g.get("label") == label and "snapshot_selection" in g:
            return g["snapshot_selection"]
    return metrics.get("snapshot_selection")


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


@dataclass
class HalfSamplingFractions:
    """Per-event sampling fractions of Monte Carlo halves A and B, and what half B's generation needs.

    Attributes:
        reference_energy, reference_sf: Half A's energies and sampling fractions.
        energy, angle, independent_sf: Half B's energies, conditioning angles and sampling fractions.
        chunks: Half-B events of each Monte Carlo batch, in order: the generator calls the
            streaming evaluation makes (``stream_samples``).
    """

    reference_energy: np.ndarray
    reference_sf: np.ndarray
    energy: np.ndarray
    angle: np.ndarray
    independent_sf: np.ndarray
    chunks: list[int]


def half_sampling_fractions(batches: Iterable[ShowerBatch], n_events: int, seed: int) -> HalfSamplingFractions:
    """Stream the Monte Carlo once, keeping per event only its energy, angle and sampling fraction.

    The halves are ``split_halves(n_events, seed)``, the split ``stream_samples`` makes; each
    batch's showers are summed and dropped (a few floats an event are kept).
    """
    n = _checked_count(int(n_events))
    a_idx, b_idx = split_halves(n, seed)
    half = np.full(n, -1, dtype=np.int8)
    half[a_idx], half[b_idx] = 0, 1
    energy, angle, sf, chunks = np.empty(n), np.empty(n), np.empty(n), []
    done = 0
    for batch in batches:
        k = min(len(batch.energy), n - done)
        if k <= 0:
            break
        e = np.asarray(batch.energy[:k], dtype=np.float64)
        sums = np.asarray(batch.ecal[:k]).reshape(k, -1).sum(axis=1, dtype=np.float64)
        energy[done:done + k], angle[done:done + k] = e, np.asarray(batch.condition_angle[:k], dtype=np.float64)
        sf[done:done + k] = sums * ECAL_TO_DEPOSIT / e
        chunks.append(int(np.count_nonzero(half[done:done + k] == 1)))
        done += k
    if done < n:
        raise ValueError(f"the Monte Carlo ended after {done} events, {n} expected")
    return HalfSamplingFractions(energy[a_idx], sf[a_idx], energy[b_idx], angle[b_idx], sf[b_idx], chunks)


def _candidates(config: EvalConfig, generator_dir: str, final: Any, first: bool) -> list[best_epoch.Candidate]:
    """The generators the selection may choose for one ``--generator`` (only the final one without select_best).

    ``snapshots_dir`` names the first generator's snapshots; the others' are beside their folders.
    """
    if not config.select_best:
        return [best_epoch.unselected(generator_dir, final)]
    snapshots = (config.snapshots_dir if first and config.snapshots_dir
                 else best_epoch.snapshots_beside(generator_dir))
    return best_epoch.find_candidates(generator_dir, final, snapshots, config.best_of_last)


def _select_generators(config: EvalConfig, dirs: Sequence[str], bundles: Sequence[Any], labels: Sequence[str],
                       batches: Callable[[], Iterable[ShowerBatch]], n_events: int) -> list[best_epoch.Selection]:
    """For each generator folder, the generator to evaluate: its run's best snapshot (select_best) or itself.

    Scoring needs per-event sampling fractions only: when some folder has several candidates,
    the Monte Carlo is streamed once (``half_sampling_fractions``) and each candidate generates
    half B chunk by chunk, keeping the sums. A folder with one candidate is not scored: its
    score (and the floor) come from the full evaluation (``Selection.fill_from_full_evaluation``).
    """
    candidates = [_candidates(config, d, b, i == 0) for i, (d, b) in enumerate(zip(dirs, bundles))]
    halves = None
    if any(len(c) > 1 for c in candidates):
        t0 = time.monotonic()
        halves = half_sampling_fractions(batches(), n_events, config.seed)
        LOG.info("sampling fractions of %d Monte Carlo events in %.1f s", n_events, time.monotonic() - t0)
    selections = []
    for label, cands in zip(labels, candidates):
        if len(cands) > 1:
            LOG.info("%s: scoring %d generators by %s (best of the last %d)", label, len(cands), best_epoch.METRIC,
                     config.best_of_last)
            selection = best_epoch.select_best(
                cands, halves.reference_energy, halves.reference_sf, halves.independent_sf, halves.energy,
                halves.angle, config.binning(), config.seed, config.batch_size, halves.chunks)
        else:
            series = [{**cands[0].row(), best_epoch.METRIC: None, "selected": True}]
            selection = best_epoch.Selection(cands[0], series, float("nan"), scored=False)
        if not config.select_best:
            selection.rule = "select_best off: the final generator"
        selections.append(selection)
    return selections


def evaluate(config: EvalConfig) -> dict:
    """Evaluate one or several exported generators against the Monte Carlo test split and publish the report.

    Args:
        config: Evaluation settings.

    Returns:
        The metrics.json content (``summary``, ``verdict``, ``counts``, per-bin details, ``config``,
        ``seed``, ``versions``, ``selected_generator``, ``snapshot_selection``, ``outputs``; with
        several generators, ``generators`` holds each one's, see ``assemble_metrics_many``, and
        each generator's selection).

    Raises:
        ValueError: on a bad manifest, too few test events, generators that do not fit the
            dataset or each other, or a generator of the wrong shape.
    """
    from data_prep.dataset import read_manifest
    from data_prep.records import OUTPUT_KEYS
    from eval.discriminator_view import load_discriminator
    from eval.training_log import read_training_log, snapshot_table
    from trainer.export import load_generator

    started = time.monotonic()
    manifest = read_manifest(config.data)
    power = _manifest_power(manifest)
    available = int(manifest.counts.get(config.split, 0))
    n_events = min(available, config.max_events) if config.max_events > 0 else available
    _checked_count(n_events)
    cells = tuple(int(d) for d in manifest.image_shape)
    dirs = config.generator_dirs()
    labels = generator_labels(dirs)
    bundles = [load_generator(d) for d in dirs]
    # Each generator is conditioned on the angle it was trained with (generator_config.json); the
    # floor's conditioned features use that angle, so every generator must share it.
    angle_keys = [str(b.config.get("angle_key", "mtheta")) for b in bundles]
    if len(set(angle_keys)) > 1:
        raise ValueError("generators " + ", ".join(f"{d} ({k})" for d, k in zip(dirs, angle_keys))
                         + " are conditioned on different angles; evaluate them separately")
    angle_key = angle_keys[0]
    if angle_key not in OUTPUT_KEYS or angle_key == "ecal":
        raise ValueError(f"generator is conditioned on {angle_key!r}, which the dataset {config.data} lacks")
    for d, bundle in zip(dirs, bundles):
        image_shape = tuple(int(v) for v in bundle.config.get("image_shape", cells))
        if image_shape != cells:
            raise ValueError(f"generator {d} makes {image_shape} images but dataset {config.data} holds {cells}")

    def batches() -> Iterable[ShowerBatch]:
        return dataset_batches(config.data, config.split, power, angle_key)

    # Best epoch, before the full evaluation: each folder's generator is replaced by its run's best
    # snapshot (eval/best_epoch.py), scored from per-event sampling fractions only.
    selections = _select_generators(config, dirs, bundles, labels, batches, n_events)
    bundles = [s.chosen.load() for s in selections]
    inputs, notes = [], {}
    for d, label, bundle in zip(dirs, labels, bundles):
        probe, reason = load_discriminator(d) if config.discriminator_events else (None, "discriminator_events is 0")
        notes[label] = reason
        # Every generator draws the same noise stream (config.seed), continued from batch to batch.
        inputs.append(GeneratorInput(label, generator_function(bundle, config.seed, config.batch_size), probe))
    LOG.info("evaluating %d Monte Carlo events of %s in batches of %d (power %.3g undone), %d generator(s)",
             n_events, config.data, STREAM_BATCH, power, len(inputs))
    ev = evaluate_stream_generators(batches(), n_events, inputs, config)
    from data_prep import uri

    copies = []
    for i, (selection, bundle, view) in enumerate(zip(selections, bundles, ev.views)):
        if not selection.scored:
            selection.fill_from_full_evaluation(view.results["generated"]["flat"].get(best_epoch.METRIC),
                                                view.results["noise_floor"]["flat"].get(best_epoch.METRIC))
        relative = best_epoch.GENERATOR_DIR if len(dirs) == 1 else f"generators/{i + 1}"
        copies.append((best_epoch.write_generator(config.output_dir, selection.chosen, bundle, relative), relative))
    for d, view in zip(dirs, ev.views):
        view.source = d
        if view.discriminator is None:
            view.discriminator_note = notes[view.label]
        view.training, view.training_note = read_training_log(d)
    extra = {"generator_angle_key": angle_key, "power": power, "wall_seconds": time.monotonic() - started}
    per_generator = [{"generator_dir": d, "generator_config": b.config,
                      **s.metrics(path, config.best_of_last, relative)}
                     for d, b, s, (path, relative) in zip(dirs, bundles, selections, copies)]
    if len(dirs) == 1:
        extra["generator_config"] = bundles[0].config
        extra.update(selections[0].metrics(copies[0][0], config.best_of_last))
        per_generator = [{}]
    metrics = assemble_metrics_many(ev.views, config, per_generator, extra)
    for view in ev.views:
        view.snapshots = snapshot_table(_snapshot_selection(metrics, view.label))
    from eval.report import build_report  # matplotlib: loaded when a report is written

    t0 = time.monotonic()
    report = build_report(report_inputs(ev, config), config.to_dict())
    LOG.info("report: %d figures in %.1f s", len(report.figures), time.monotonic() - t0)
    metrics["outputs"] = {
        **({"generator": copies[0][0]} if len(dirs) == 1 else {"generators": [path for path, _ in copies]}),
        "metrics": uri.join(config.output_dir, "metrics.json"),
        "report": uri.join(config.output_dir, "report.html"),
        "plots": [uri.join(config.output_dir, "plots", f"{f.name}.png") for f in report.figures],
    }
    write_outputs(config.output_dir, metrics, report)
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


def _print_failures(label: str, verdict_: dict) -> None:
    prefix = f"{label}: " if label else ""
    for check in verdict_["checks"]:
        if not check["passed"]:
            print(
                f"{prefix}FAILED {check['name']}: {check['value']} > threshold {check['threshold']} "
                f"(noise floor {check['noise_floor']}; {check['rule']})",
                file=sys.stderr,
            )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: parse flags into an EvalConfig, evaluate, print the verdict.

    Returns:
        0 when every generator's verdict is PASSED, 1 when one is FAILED (0 with ``--no-fail``,
        for runs that only want the report).
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
    if metrics.get("generators"):
        for g in metrics["generators"]:
            _print_failures(g["label"], g["verdict"])
        out = {"passed": verdict_["passed"], "failed": verdict_["failed"], "output_dir": config.output_dir,
               "generators": {g["label"]: {"passed": g["verdict"]["passed"], "failed": g["verdict"]["failed"],
                                           "generator_dir": g.get("generator_dir"),
                                           "selected_step": (g.get("selected_generator") or {}).get("step")}
                               for g in metrics["generators"]}}
    else:
        _print_failures("", verdict_)
        out = {"passed": verdict_["passed"], "failed": verdict_["failed"], "output_dir": config.output_dir,
               "selected_step": metrics["selected_generator"]["step"]}
    print(json.dumps(out))
    return 0 if verdict_["passed"] or no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
