"""3DGAN physics metrics per energy and angle bin, and 3DGAN's model-selection metric.

Every comparison is ``compare_physics(reference, candidate)`` on ShowerFeatures. The evaluator runs
it for Monte Carlo half A vs the generator (which received half B's energies and angles), for
Monte Carlo half A vs Monte Carlo half B (the noise floor), and for re-drawn Monte Carlo halves
(the spread of the noise floor, eval.null_model); eval.verdict compares them.

Definitions (docs/eval.md repeats them):
- Sampling-fraction relative error of a bin: |mean SF_cand - mean SF_ref| / mean SF_ref.
- Resolution relative error of a bin: |R_cand - R_ref| / R_ref with R = sd(SF) / mean(SF), the
  relative energy resolution at the bin's energy (independent of the energy scale, which the
  sampling fraction judges); a generator with the right mean response but too little or too much
  spread, or a collapsed one, fails here.
- Shape relative error along an axis: sum_i |S_cand(i) - S_ref(i)| / sum_i S_ref(i), S = mean energy
  per slice over the bin's events. It is the per-slice relative error weighted by the reference
  profile, which stays finite where tail slices are empty.
- Moment relative error: |mean M_cand - mean M_ref| / |mean M_ref| for M1 and M2 along x, y, z.
- Angle relative error per angle bin: |mean measured angle cand - ref| / mean ref.
- 3DGAN's model-selection metric as published (svalleco/3Dgan, keras/analysis/utils/GANutils.py
  ``metric``, called by ``OptAnalysisShort`` in the distributed-training validation): per energy
  bin, the moment term (mean over the two moments and three axes of the relative error of the
  mean moment: ``moment_mre`` above), the profile term (mean over the three axes of the mean over
  *all* slices of |S_ref(i) - S_cand(i)| / S_ref(i)) and the angle term (mean over the bin's
  candidate events of |a_cond - a_meas| / a_cond, with a_cond the angle the shower was generated
  for and a_meas the angle measured from it); each averaged over energy bins and summed. An
  earlier revision of that file adds the moment term twice (a bug); it is counted once here.
  ``selection_metric`` is this published metric; ``selection_metric_caloforge`` is
  ``moment_mre + shape_mre + angle_mre``, the variant with the profile-weighted shape term and the
  per-angle-bin angle term, which this project reported before and keeps under that name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def _nansd(values: np.ndarray) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.std(ddof=1)) if arr.size > 1 else float("nan")


def profile_relative_error_3dgan(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Mean over slices of |r - c| / r, 3DGAN's published profile error.

    Slices where the reference profile is exactly 0 are left out (the published code divides by
    zero there and gets NaN or inf); near-empty tail slices count fully, which makes this term
    noisier than ``profile_relative_error``.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    used = reference != 0
    if not used.any():
        return float("nan")
    return float(np.mean(np.abs((reference[used] - candidate[used]) / reference[used])))


def angle_error_3dgan(candidate: ShowerFeatures) -> float:
    """Mean over events of |a_cond - a_meas| / a_cond: 3DGAN's published angle term of one bin."""
    cond = np.asarray(candidate.condition_angle, dtype=np.float64)
    meas = np.asarray(candidate.measured_angle, dtype=np.float64)
    ok = np.isfinite(cond) & np.isfinite(meas) & (cond != 0)
    return float(np.mean(np.abs((cond[ok] - meas[ok]) / cond[ok]))) if ok.any() else float("nan")


def _moment_means(f: ShowerFeatures) -> dict[str, float]:
    out = {}
    for k, ax in enumerate(AXES):
        out[f"m1_{ax}"] = _nanmean(f.m1[:, k])
        out[f"m2_{ax}"] = _nanmean(f.m2[:, k])
    return out


def compare_energy_bin(reference: ShowerFeatures, candidate: ShowerFeatures) -> dict:
    """All per-energy-bin comparisons of two already-selected samples.

    Returns:
        Dict with the sample sizes, mean and spread of the sampling fractions and their relative
        errors, the mean shapes and their relative errors per axis (ours and 3DGAN's), moment
        means and relative errors, the bin's shape and moment terms (means over axes / moments)
        and 3DGAN's profile and angle terms.
    """
    sf_ref, sf_cand = _nanmean(reference.sampling_fraction), _nanmean(candidate.sampling_fraction)
    res_ref = _nansd(reference.sampling_fraction) / sf_ref if sf_ref else float("nan")
    res_cand = _nansd(candidate.sampling_fraction) / sf_cand if sf_cand else float("nan")
    shapes, shape_err, profile_err_3dgan = {}, {}, {}
    for ax in AXES:
        r, c = reference.shape(ax).mean(axis=0, dtype=np.float64), candidate.shape(ax).mean(axis=0, dtype=np.float64)
        shapes[ax] = {"reference": r.tolist(), "candidate": c.tolist()}
        shape_err[ax] = profile_relative_error(c, r)
        profile_err_3dgan[ax] = profile_relative_error_3dgan(c, r)
    m_ref, m_cand = _moment_means(reference), _moment_means(candidate)
    moment_err = {k: relative_error(m_cand[k], m_ref[k]) for k in m_ref}
    return {
        "n_reference": reference.n_events,
        "n_candidate": candidate.n_events,
        "n_candidate_empty": int(candidate.empty.sum()),
        "sampling_fraction_reference": sf_ref,
        "sampling_fraction_candidate": sf_cand,
        "sampling_fraction_rel_err": relative_error(sf_cand, sf_ref),
        "resolution_reference": res_ref,
        "resolution_candidate": res_cand,
        "resolution_rel_err": relative_error(res_cand, res_ref),
        "shapes": shapes,
        "shape_rel_err": shape_err,
        "shape_term": _nanmean(shape_err.values()),
        "moments_reference": m_ref,
        "moments_candidate": m_cand,
        "moment_rel_err": moment_err,
        "moment_term": _nanmean(moment_err.values()),
        "profile_rel_err_3dgan": profile_err_3dgan,
        "profile_term_3dgan": _nanmean(profile_err_3dgan.values()),
        "angle_term_3dgan": angle_error_3dgan(candidate),
    }


def sampling_fraction_mre(
    reference_energy: np.ndarray,
    reference_sf: np.ndarray,
    candidate_energy: np.ndarray,
    candidate_sf: np.ndarray,
    cfg: BinningConfig,
) -> dict:
    """``compare_physics``'s ``sampling_fraction_mre`` from the per-event sampling fractions alone.

    3DGAN's best-epoch quantity, for scoring many generators cheaply (eval/best_epoch.py): the
    same bins (built from the reference energies), the same skip rule and the same per-bin
    relative error of the mean sampling fraction as ``compare_physics``, which needs every
    feature of every shower; tests/test_best_epoch.py checks that both agree.

    Returns:
        ``{"sampling_fraction_mre": mean over used bins, "energy_bins": [{label, n_reference,
        n_candidate, skipped, sampling_fraction_rel_err}]}``.
    """
    # float64 as ShowerFeatures holds them: quantile edges computed in float32 can put an event
    # at an edge into the other bin.
    ref_e, cand_e = (np.asarray(e, dtype=np.float64) for e in (reference_energy, candidate_energy))
    ref_sf, cand_sf = (np.asarray(sf, dtype=np.float64) for sf in (reference_sf, candidate_sf))
    rows = []
    for b in energy_bins(ref_e, cfg):
        mr, mc = b.mask(ref_e), b.mask(cand_e)
        row = {"label": b.label, "n_reference": int(mr.sum()), "n_candidate": int(mc.sum())}
        row["skipped"] = min(row["n_reference"], row["n_candidate"]) < cfg.min_events_per_bin
        row["sampling_fraction_rel_err"] = (
            float("nan") if row["skipped"] else relative_error(_nanmean(cand_sf[mc]), _nanmean(ref_sf[mr]))
        )
        rows.append(row)
    mre = _nanmean(r["sampling_fraction_rel_err"] for r in rows if not r["skipped"])
    return {"sampling_fraction_mre": mre, "energy_bins": rows}


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
        ``summary``: sampling_fraction_mre, resolution_mre, shape_mre, moment_mre, angle_mre
        (means over the used bins); 3DGAN's published selection metric ``selection_metric``
        with its terms ``selection_moment_term``, ``selection_profile_term``,
        ``selection_angle_term`` (each counted once); ``selection_metric_caloforge`` (moment_mre
        + shape_mre + angle_mre); and empty_fraction (fraction of candidate events with no
        energy).
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
    published = {
        "selection_moment_term": moment_mre,
        "selection_profile_term": _nanmean(r["profile_term_3dgan"] for r in used_e),
        "selection_angle_term": _nanmean(r["angle_term_3dgan"] for r in used_e),
    }
    terms = [t for t in published.values() if np.isfinite(t)]
    ours = [t for t in (moment_mre, shape_mre, angle_mre) if np.isfinite(t)]
    summary = {
        "sampling_fraction_mre": _nanmean(r["sampling_fraction_rel_err"] for r in used_e),
        "sampling_fraction_max_rel_err": max(
            (r["sampling_fraction_rel_err"] for r in used_e), default=float("nan")
        ),
        "resolution_mre": _nanmean(r["resolution_rel_err"] for r in used_e),
        "shape_mre": shape_mre,
        "moment_mre": moment_mre,
        "angle_mre": angle_mre,
        # Each term once; NaN terms (e.g. no populated bin) are left out and counted.
        **published,
        "selection_metric": float(sum(terms)) if terms else float("nan"),
        "selection_metric_terms": len(terms),
        "selection_metric_caloforge": float(sum(ours)) if ours else float("nan"),
        "n_energy_bins_used": len(used_e),
        "n_angle_bins_used": len(used_a),
        "empty_fraction": float(candidate.empty.mean()) if candidate.n_events else float("nan"),
    }
    return {"energy_bins": e_rows, "angle_bins": a_rows, "summary": summary}
