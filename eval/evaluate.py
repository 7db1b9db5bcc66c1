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

Outputs (``output_dir``, local or gs://): ``generator/`` (a copy of the generator evaluated),
``plots/*.png``, ``report.html`` and ``metrics.json``. Everything is computed in memory first;
each file is written atomically and ``metrics.json`` last, so a reader that finds metrics.json
finds a complete evaluation.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from data_prep.config_cli import ConfigArgumentParser, add_verbose_flag, build_config_parser, choices_field, parse_config
from data_prep.console import configure_console, import_quietly
from data_prep.manifest import SPLITS
from data_prep.strict_fields import reject_unknown_keys
from eval import best_epoch
from eval import calochallenge as cc
from eval.features import DEFAULT_HIT_THRESHOLD_GEV, ShowerFeatures, compute_features
from eval.metrics import BinningConfig, compare_physics
from eval.null_model import resplit_replicas
from eval.verdict import Thresholds, load_thresholds, null_statistics, verdict

LOG = logging.getLogger(__name__)

MIN_EVENTS_PER_HALF = 20


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
        select_best: Score the training run's generator snapshots and its final generator by
            sampling_fraction_mre (3DGAN's best-epoch quantity, on the same Monte Carlo events)
            and evaluate the best of the last best_of_last (eval/best_epoch.py); without
            snapshots the final generator is evaluated, as with --no-select-best.
        best_of_last: Candidates scored: the last this many by step (3DGAN: the last 10 epochs).
            Each costs one generation of half the test events.
        snapshots_dir: Folder of the run's generator snapshots; empty: the snapshots/ folder
            beside generator_dir (the trainer's layout).
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
    select_best: bool = True
    best_of_last: int = 10
    snapshots_dir: str = field(default="", metadata={"path": "input"})

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
        for name in ("fpd_batches", "fpd_points", "kpd_batches", "best_of_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kpd_batch_size < 2:
            raise ValueError(f"kpd_batch_size must be >= 2, got {self.kpd_batch_size}")
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
    n = int(np.shape(energy)[0])
    if n < 2 * MIN_EVENTS_PER_HALF:
        raise ValueError(
            f"evaluation needs at least {2 * MIN_EVENTS_PER_HALF} Monte Carlo events "
            f"({MIN_EVENTS_PER_HALF} per half), got {n}; raise max_events or use a larger test split"
        )
    return n


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
    energy, theta = np.asarray(energy), np.asarray(theta)
    angle = theta if condition_angle is None else np.asarray(condition_angle)
    a_idx, b_idx = split_halves(n, config.seed)
    thr = config.hit_threshold_gev
    reference = compute_features(ecal_raw[a_idx], energy[a_idx], theta[a_idx], thr, condition_angle=angle[a_idx])
    independent = compute_features(ecal_raw[b_idx], energy[b_idx], theta[b_idx], thr, condition_angle=angle[b_idx])
    noise = compare(reference, independent, config, config.seed)
    rules = config.verdict_rules()
    LOG.info("noise floor: Monte Carlo A vs B and %d re-drawn pairs", rules.replicas)
    replicas = resplit_replicas(
        reference, independent,
        lambda a, b: compare(a, b, config, config.seed, classifiers=False)["flat"],
        rules.replicas, config.seed,
    )
    return MonteCarloFloor(reference, independent, noise, null_statistics([noise["flat"], *replicas]), rules, n)


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
        generate: ``generate(energy_gev, angle_rad) -> raw-unit showers`` for half B's conditions.
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
    _, b_idx = split_halves(_checked_size(energy), config.seed)  # the split monte_carlo_floor makes
    angle = theta if condition_angle is None else condition_angle
    # Generate first: a generator of the wrong shape fails before the noise floor is measured.
    t0 = time.monotonic()
    LOG.info("generating %d showers (batch %d)", b_idx.size, config.batch_size)
    generated = np.asarray(generate(np.asarray(energy)[b_idx], np.asarray(angle)[b_idx]))
    if generated.ndim == 5 and generated.shape[-1] == 1:
        generated = generated[..., 0]
    expected = (b_idx.size, *np.shape(ecal_raw)[1:4])
    if generated.shape != expected:
        raise ValueError(f"generator returned showers of shape {generated.shape}, expected {expected}")
    LOG.info("generated %d showers in %.1f s", b_idx.size, time.monotonic() - t0)
    floor = monte_carlo_floor(ecal_raw, energy, theta, config, condition_angle)
    b = floor.independent
    feats = {
        "reference": floor.reference,
        "independent": b,
        "generated": compute_features(generated, b.energy, b.theta, config.hit_threshold_gev, condition_angle=b.condition_angle),
    }
    return judge(floor, feats["generated"], config), feats


# --------------------------------------------------------------------------- I/O
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


def _select_generator(
    config: EvalConfig, final: Any, ecal_raw: np.ndarray, energy: np.ndarray, angle: np.ndarray
) -> best_epoch.Selection:
    """The generator to evaluate: the best snapshot (config.select_best) or the final generator."""
    if config.select_best:
        snapshots = config.snapshots_dir or best_epoch.snapshots_beside(config.generator_dir)
        candidates = best_epoch.find_candidates(config.generator_dir, final, snapshots, config.best_of_last)
    else:
        candidates = [best_epoch.unselected(config.generator_dir, final)]
    a_idx, b_idx = split_halves(_checked_size(energy), config.seed)  # the split monte_carlo_floor makes
    if len(candidates) > 1:
        LOG.info("scoring %d generators by %s (best of the last %d)", len(candidates), best_epoch.METRIC,
                 config.best_of_last)
    selection = best_epoch.select_best(
        candidates,
        energy[a_idx], best_epoch.sampling_fractions(ecal_raw, a_idx, energy[a_idx]),
        best_epoch.sampling_fractions(ecal_raw, b_idx, energy[b_idx]),
        energy[b_idx], angle[b_idx], config.binning(), config.seed, config.batch_size,
    )
    if not config.select_best:
        selection.rule = "select_best off: the final generator"
    return selection


def evaluate(config: EvalConfig) -> dict:
    """Evaluate an exported generator against the Monte Carlo test split and publish the report.

    Args:
        config: Evaluation settings.

    Returns:
        The metrics.json content (``summary``, ``verdict``, ``counts``, per-bin details, ``config``,
        ``seed``, ``versions``, ``selected_generator``, ``snapshot_selection``, ``outputs``).

    Raises:
        ValueError: on a bad manifest, too few test events, or a generator of the wrong shape.
    """
    from data_prep.dataset import load_split_numpy, read_manifest
    from trainer.export import load_generator

    started = time.monotonic()
    manifest = read_manifest(config.data)
    power = _manifest_power(manifest)
    max_events = config.max_events if config.max_events > 0 else None
    data = load_split_numpy(config.data, config.split, max_events)
    for key in ("ecal", "energy", "theta"):
        if key not in data:
            raise ValueError(f"{config.data}: split {config.split!r} has no {key!r} array")
    # In place: the test split can hold several GB of cells, so no second copy is made.
    ecal_raw = np.ascontiguousarray(data.pop("ecal"), dtype=np.float32)
    np.clip(ecal_raw, 0.0, None, out=ecal_raw)
    np.power(ecal_raw, np.float32(1.0 / power), out=ecal_raw)
    LOG.info("loaded %d Monte Carlo events from %s (power %.3g undone)", ecal_raw.shape[0], config.data, power)
    bundle = load_generator(config.generator_dir)
    # The generator is conditioned on the angle it was trained with (generator_config.json).
    angle_key = str(bundle.config.get("angle_key", "mtheta"))
    if angle_key not in data:
        raise ValueError(f"generator is conditioned on {angle_key!r}, which the dataset {config.data} lacks")
    image_shape = tuple(int(d) for d in bundle.config.get("image_shape", ecal_raw.shape[1:4]))
    if image_shape != tuple(ecal_raw.shape[1:4]):
        raise ValueError(
            f"generator {config.generator_dir} makes {image_shape} images but dataset {config.data} "
            f"holds {tuple(ecal_raw.shape[1:4])}"
        )

    energy, angle = np.asarray(data["energy"]), np.asarray(data[angle_key])
    selection = _select_generator(config, bundle, ecal_raw, energy, angle)
    chosen = selection.chosen.load()

    def generate(energy: np.ndarray, angle: np.ndarray) -> np.ndarray:
        return chosen.generate(energy, angle, seed=config.seed, batch_size=config.batch_size)

    results, feats = evaluate_arrays(
        ecal_raw, energy, np.asarray(data["theta"]), generate, config, condition_angle=angle,
    )
    if not selection.scored:
        selection.fill_from_full_evaluation(results["generated"]["flat"].get("sampling_fraction_mre"))
    generator_copy = best_epoch.write_generator(config.output_dir, selection.chosen, chosen)
    extra = {
        "generator_angle_key": angle_key,
        "generator_config": chosen.config,
        **selection.metrics(generator_copy, config.best_of_last),
        "power": power,
        "wall_seconds": time.monotonic() - started,
    }
    metrics = assemble_metrics(results, config, extra)
    from eval.report import build_figures  # matplotlib: loaded when a report is written

    figures = build_figures(feats["reference"], feats["generated"], feats["independent"], results)
    from data_prep import uri

    metrics["outputs"] = {
        "generator": generator_copy,
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
    print(json.dumps({"passed": verdict_["passed"], "failed": verdict_["failed"], "output_dir": config.output_dir,
                      "selected_step": metrics["selected_generator"]["step"]}))
    return 0 if verdict_["passed"] or no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
