"""3DGAN physics metrics per energy and angle bin, the model-selection metric, and the verdict.

Every comparison is ``compare_physics(reference, candidate)`` on ShowerFeatures. The evaluator runs
it twice: Monte Carlo half A vs the generator (which received half B's energies and angles), and
Monte Carlo half A vs Monte Carlo half B, the noise floor. The verdict compares the two.

Definitions (docs/eval.md repeats them):
- Sampling-fraction relative error of a bin: |mean SF_cand - mean SF_ref| / mean SF_ref.
- Shape relative error along an axis: sum_i |S_cand(i) - S_ref(i)| / sum_i S_ref(i), S = mean energy
  per slice over the bin's events. It is the per-slice relative error weighted by the reference
  profile, which stays finite where tail slices are empty (the plain per-slice mean is not).
- Moment relative error: |mean M_cand - mean M_ref| / |mean M_ref| for M1 and M2 along x, y, z.
- Angle relative error per angle bin: |mean measured angle cand - ref| / mean ref.
- 3DGAN model-selection metric: moment term + shape term + angle term, each counted ONCE (the
  published code adds the moment term twice).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from eval.features import AXES, ShowerFeatures


@dataclass
class BinningConfig:
    """How events are grouped for the per-bin comparisons.

    Attributes:
        energy_centres: Explicit energy-bin centres in GeV (3DGAN style, +- energy_half_width).
            Empty: ``n_energy_bins`` equal-population bins spanning all test energies, which keeps
            every bin populated for small test sets.
        energy_half_width: Half width of the explicit energy bins, GeV (3DGAN uses 5).
        n_energy_bins: Number of equal-population bins when no centres are given.
        angle_centres_deg: Angle-bin centres, degrees (3DGAN: 62, 90, 118).
        angle_half_width_rad: Half width of the angle bins, radians (3DGAN: 0.1).
        min_events_per_bin: Bins with fewer events in either sample are reported but skipped.
    """

    energy_centres: tuple[float, ...] = ()
    energy_half_width: float = 5.0
    n_energy_bins: int = 4
    angle_centres_deg: tuple[float, ...] = (62.0, 90.0, 118.0)
    angle_half_width_rad: float = 0.1
    min_events_per_bin: int = 5

    def __post_init__(self) -> None:
        self.energy_centres = tuple(float(c) for c in self.energy_centres)
        self.angle_centres_deg = tuple(float(c) for c in self.angle_centres_deg)
        if self.energy_half_width <= 0:
            raise ValueError(f"energy_half_width must be > 0 GeV, got {self.energy_half_width}")
        if self.n_energy_bins < 1:
            raise ValueError(f"n_energy_bins must be >= 1, got {self.n_energy_bins}")
        if self.angle_half_width_rad <= 0:
            raise ValueError(f"angle_half_width_rad must be > 0, got {self.angle_half_width_rad}")


@dataclass
class Bin:
    """One closed-open interval [lo, hi) of a conditioning variable, with a label for tables."""

    label: str
    lo: float
    hi: float

    def mask(self, values: np.ndarray) -> np.ndarray:
        return (values >= self.lo) & (values < self.hi)


def energy_bins(energies: np.ndarray, cfg: BinningConfig) -> list[Bin]:
    """Energy bins: explicit centres +- half width, or equal-population bins over ``energies``."""
    if cfg.energy_centres:
        return [
            Bin(f"{c:g}+-{cfg.energy_half_width:g} GeV", c - cfg.energy_half_width, c + cfg.energy_half_width)
            for c in cfg.energy_centres
        ]
    edges = np.quantile(np.asarray(energies, dtype=np.float64), np.linspace(0, 1, cfg.n_energy_bins + 1))
    edges[-1] = np.nextafter(edges[-1], np.inf)  # include the largest energy
    return [Bin(f"{lo:.1f}-{hi:.1f} GeV", float(lo), float(hi)) for lo, hi in zip(edges[:-1], edges[1:])]


def angle_bins(cfg: BinningConfig) -> list[Bin]:
    """3DGAN angle bins: centre (degrees) +- half width (radians), on the generated angle."""
    out = []
    for c in cfg.angle_centres_deg:
        centre = math.radians(c)
        out.append(Bin(f"{c:g} deg", centre - cfg.angle_half_width_rad, centre + cfg.angle_half_width_rad))
    return out


def relative_error(candidate: float, reference: float) -> float:
    """|candidate - reference| / |reference|; NaN when either is undefined or the reference is 0."""
    if not (np.isfinite(candidate) and np.isfinite(reference)) or reference == 0:
        return float("nan")
    return float(abs(candidate - reference) / abs(reference))


def profile_relative_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """sum |c - r| / sum r: per-slice relative error weighted by the reference profile."""
    total = float(np.sum(reference))
    if total <= 0:
        return float("nan")
    return float(np.sum(np.abs(candidate - reference)) / total)


def _nanmean(values) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _moment_means(f: ShowerFeatures) -> dict[str, float]:
    out = {}
    for k, ax in enumerate(AXES):
        out[f"m1_{ax}"] = _nanmean(f.m1[:, k])
        out[f"m2_{ax}"] = _nanmean(f.m2[:, k])
    return out


def compare_energy_bin(reference: ShowerFeatures, candidate: ShowerFeatures) -> dict:
    """All per-energy-bin comparisons of two already-selected samples.

    Returns:
        Dict with the sample sizes, mean sampling fractions and their relative error, the mean
        shapes and their relative errors per axis, moment means and relative errors, and the
        bin's shape and moment terms (means over axes / moments).
    """
    sf_ref, sf_cand = _nanmean(reference.sampling_fraction), _nanmean(candidate.sampling_fraction)
    shapes, shape_err = {}, {}
    for ax in AXES:
        r, c = reference.shape(ax).mean(axis=0), candidate.shape(ax).mean(axis=0)
        shapes[ax] = {"reference": r.tolist(), "candidate": c.tolist()}
        shape_err[ax] = profile_relative_error(c, r)
    m_ref, m_cand = _moment_means(reference), _moment_means(candidate)
    moment_err = {k: relative_error(m_cand[k], m_ref[k]) for k in m_ref}
    return {
        "n_reference": reference.n_events,
        "n_candidate": candidate.n_events,
        "n_candidate_empty": int(candidate.empty.sum()),
        "sampling_fraction_reference": sf_ref,
        "sampling_fraction_candidate": sf_cand,
        "sampling_fraction_rel_err": relative_error(sf_cand, sf_ref),
        "shapes": shapes,
        "shape_rel_err": shape_err,
        "shape_term": _nanmean(shape_err.values()),
        "moments_reference": m_ref,
        "moments_candidate": m_cand,
        "moment_rel_err": moment_err,
        "moment_term": _nanmean(moment_err.values()),
    }


def compare_physics(reference: ShowerFeatures, candidate: ShowerFeatures, cfg: BinningConfig) -> dict:
    """Compare two samples bin by bin with the 3DGAN analysis quantities.

    Energy bins are built from the reference energies (when no explicit centres are given) and
    applied to each sample's own energies; angle bins select on each sample's generated angle.

    Args:
        reference: Features of the reference (Monte Carlo) sample.
        candidate: Features of the sample under test (generated, or independent Monte Carlo).
        cfg: Binning.

    Returns:
        Dict with ``energy_bins`` and ``angle_bins`` (per-bin details, ``skipped`` flags) and
        ``summary``: sampling_fraction_mre, shape_mre, moment_mre, angle_mre (means over the
        used bins), selection_metric (moment + shape + angle, each once), and
        empty_fraction (fraction of candidate events with no energy).
    """
    e_rows = []
    for b in energy_bins(reference.energy, cfg):
        mr, mc = b.mask(reference.energy), b.mask(candidate.energy)
        row = {"label": b.label, "lo": b.lo, "hi": b.hi, "n_reference": int(mr.sum()), "n_candidate": int(mc.sum())}
        if min(row["n_reference"], row["n_candidate"]) < cfg.min_events_per_bin:
            row["skipped"] = True
        else:
            row.update(compare_energy_bin(reference.subset(mr), candidate.subset(mc)))
            row["skipped"] = False
        e_rows.append(row)
    a_rows = []
    for b in angle_bins(cfg):
        mr, mc = b.mask(reference.theta), b.mask(candidate.theta)
        row = {"label": b.label, "lo": b.lo, "hi": b.hi, "n_reference": int(mr.sum()), "n_candidate": int(mc.sum())}
        if min(row["n_reference"], row["n_candidate"]) < cfg.min_events_per_bin:
            row["skipped"] = True
        else:
            ref_angle = _nanmean(reference.measured_angle[mr])
            cand_angle = _nanmean(candidate.measured_angle[mc])
            row.update(
                skipped=False,
                measured_angle_reference=ref_angle,
                measured_angle_candidate=cand_angle,
                angle_rel_err=relative_error(cand_angle, ref_angle),
            )
        a_rows.append(row)
    used_e = [r for r in e_rows if not r["skipped"]]
    used_a = [r for r in a_rows if not r["skipped"]]
    shape_mre = _nanmean(r["shape_term"] for r in used_e)
    moment_mre = _nanmean(r["moment_term"] for r in used_e)
    angle_mre = _nanmean(r["angle_rel_err"] for r in used_a)
    terms = [t for t in (moment_mre, shape_mre, angle_mre) if np.isfinite(t)]
    summary = {
        "sampling_fraction_mre": _nanmean(r["sampling_fraction_rel_err"] for r in used_e),
        "sampling_fraction_max_rel_err": max(
            (r["sampling_fraction_rel_err"] for r in used_e), default=float("nan")
        ),
        "shape_mre": shape_mre,
        "moment_mre": moment_mre,
        "angle_mre": angle_mre,
        # Each term once; NaN terms (e.g. no populated angle bin) are left out and counted.
        "selection_metric": float(sum(terms)) if terms else float("nan"),
        "selection_metric_terms": len(terms),
        "n_energy_bins_used": len(used_e),
        "n_angle_bins_used": len(used_a),
        "empty_fraction": float(candidate.empty.mean()) if candidate.n_events else float("nan"),
    }
    return {"energy_bins": e_rows, "angle_bins": a_rows, "summary": summary}


# --------------------------------------------------------------------------- verdict
@dataclass
class Tolerances:
    """Pass/fail rules: a check passes when value <= factor * noise_floor + margin.

    The noise floor is the same metric for Monte Carlo vs an independent Monte Carlo sample of the
    same size, so ``factor`` says how many times worse than statistics a generator may be and
    ``margin`` is an absolute allowance for the systematic quality one accepts. For the AUC the
    compared quantity is |AUC - 0.5|. A check whose value is NaN fails.

    Attributes:
        factor: Multiple of the noise floor allowed.
        sampling_fraction: Margin on the mean relative error of the sampling fraction.
        shape: Margin on the shape mean relative error.
        moment: Margin on the moment mean relative error.
        angle: Margin on the measured-angle mean relative error.
        auc: Margin on |AUC - 0.5| of the classifier.
        fpd_x1e3: Margin on FPD x 1e3.
        kpd_x1e3: Margin on KPD x 1e3.
        max_empty_fraction: Largest allowed fraction of generated events with no energy.
        n_sigma: For FPD and KPD, which carry a statistical error, the threshold also adds
            n_sigma x sqrt(2) x the noise floor's error (the error both values would have if the
            generator were as good as the Monte Carlo).
    """

    factor: float = 3.0
    sampling_fraction: float = 0.05
    shape: float = 0.10
    moment: float = 0.05
    angle: float = 0.02
    auc: float = 0.15
    fpd_x1e3: float = 200.0
    kpd_x1e3: float = 20.0
    max_empty_fraction: float = 0.01
    n_sigma: float = 3.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"tolerance {f.name} must be a finite number >= 0, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _check(
    name: str, value: float, noise: float, margin: float, factor: float, rule: str, error: float = 0.0
) -> dict:
    noise_term = abs(noise) if np.isfinite(noise) else 0.0  # KPD noise can be slightly negative
    threshold = factor * noise_term + margin + (error if np.isfinite(error) else 0.0)
    passed = bool(np.isfinite(value) and value <= threshold)
    return {
        "name": name,
        "value": float(value),
        "noise_floor": float(noise),
        "threshold": float(threshold),
        "passed": passed,
        "rule": rule,
    }


def verdict(generated: dict, noise_floor: dict, tol: Tolerances) -> dict:
    """Pass/fail of every check, generated metrics against the Monte Carlo noise floor.

    Args:
        generated: Flat metric dict for reference vs generated (``flat_metrics`` output).
        noise_floor: The same keys for reference vs independent Monte Carlo.
        tol: Tolerances.

    Returns:
        ``{"passed": all checks passed, "checks": [ {name, value, noise_floor, threshold, passed,
        rule}, ... ]}``.
    """
    f = tol.factor
    rule = f"value <= {f:g} x noise_floor + margin"
    checks = []
    for key, margin in (
        ("sampling_fraction_mre", tol.sampling_fraction),
        ("shape_mre", tol.shape),
        ("moment_mre", tol.moment),
        ("angle_mre", tol.angle),
    ):
        if key in generated:
            checks.append(_check(key, generated[key], noise_floor.get(key, float("nan")), margin, f, rule))
    for key, margin in (("fpd_x1e3", tol.fpd_x1e3), ("kpd_x1e3", tol.kpd_x1e3)):
        if key in generated:
            # Distances come with a statistical error. Under the hypothesis "the generator is as
            # good as the Monte Carlo" both measurements carry the noise floor's error, so allow
            # n_sigma x sqrt(2) x that error. The generated value's own error is NOT used: a broken
            # generator with wild outliers has a huge error, which must not buy it a pass.
            err = noise_floor.get(key.replace("_x1e3", "_err_x1e3"), 0.0)
            allowance = tol.n_sigma * math.sqrt(2.0) * (err if np.isfinite(err) else 0.0)
            checks.append(
                _check(key, generated[key], noise_floor.get(key, float("nan")), margin, f,
                       rule + f" + {tol.n_sigma:g} x sqrt(2) x noise-floor error", allowance)
            )
    if "classifier_auc" in generated:
        checks.append(
            _check(
                "classifier_auc_minus_half",
                abs(generated["classifier_auc"] - 0.5),
                abs(noise_floor.get("classifier_auc", float("nan")) - 0.5),
                tol.auc,
                f,
                rule + " on |AUC - 0.5|",
            )
        )
    if "empty_fraction" in generated:
        checks.append(
            _check("empty_fraction", generated["empty_fraction"], float("nan"), tol.max_empty_fraction, 0.0,
                   "value <= margin")
        )
    return {"passed": bool(checks) and all(c["passed"] for c in checks), "checks": checks}
