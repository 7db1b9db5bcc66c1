"""The report's physics figures: response and resolution vs energy, shapes, moments, hits, cells, angle.

Each function takes the ReportInputs and returns a ``Drawn`` (the figure plus its warnings), or
None with a reason when the samples hold nothing to draw. Per-energy-bin figures use the
evaluation's own energy bins (``results[...]["physics"]["energy_bins"]``), so every point is
the bin the metrics tables name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from eval.features import AXES, CELL_SPECTRUM_EDGES
from eval.plot_common import (
    LOW_STATS_EVENTS,
    bin_means,
    bin_resolutions,
    clip_ratio_axis,
    draw_histograms,
    draw_points,
    fixed_layout,
    float_edges,
    integer_edges,
    reference_band,
    warn_text,
)
from eval.report_inputs import ReportInputs, Sample


@dataclass
class Drawn:
    """A drawn figure, the warnings to show beside it, and notes added to its caption."""

    figure: Figure
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def energy_bins(inputs: ReportInputs) -> list[dict]:
    """The evaluation's energy bins (label, lo, hi, skipped) from the noise-floor comparison."""
    return list(inputs.noise_floor["physics"]["energy_bins"])


def _bin_warnings(inputs: ReportInputs, bins: list[dict]) -> list[str]:
    """One line per energy bin that a sample leaves too sparse: not compared, or hollow points."""
    out = []
    for b in bins:
        sizes = [(s.label, int(((s.features.energy >= b["lo"]) & (s.features.energy < b["hi"])).sum()))
                 for s in inputs.samples()]
        skipped = [f"{label} {n}" for label, n in sizes if n < inputs.min_events_per_bin]
        sparse = [f"{label} {n}" for label, n in sizes if inputs.min_events_per_bin <= n < LOW_STATS_EVENTS]
        if skipped:
            out.append(f"energy bin {b['label']}: {', '.join(skipped)} events, fewer than "
                       f"min_events_per_bin={inputs.min_events_per_bin}: the bin is not compared")
        if sparse:
            out.append(f"energy bin {b['label']}: only {', '.join(sparse)} events (< {LOW_STATS_EVENTS}): "
                       "hollow points, large statistical errors")
    return out


def _offsets(samples: list[Sample]) -> dict[str, float]:
    """Small relative x shifts so error bars of several samples do not hide each other."""
    n = len(samples)
    return {s.key: 0.006 * (i - (n - 1) / 2) for i, s in enumerate(samples)}


def _per_energy_figure(inputs: ReportInputs, quantity, ylabel: str, stat_fn) -> Drawn:
    """Top: a per-energy-bin statistic of every sample; bottom: its ratio to Monte Carlo A."""
    bins = energy_bins(inputs)
    edges = [(b["lo"], b["hi"]) for b in bins]
    fig = Figure(figsize=(7, 5.6))
    top = fig.add_axes((0.12, 0.36, 0.84, 0.58))
    bottom = fig.add_axes((0.12, 0.08, 0.84, 0.24), sharex=top)
    samples = inputs.samples()
    offsets = _offsets(samples)
    ref_stats = stat_fn(inputs.reference.energy, quantity(inputs.reference), edges)
    reference_band(top, ref_stats, ratio=False)
    reference_band(bottom, ref_stats, ratio=True)
    series = []
    for sample in samples:
        stats = stat_fn(sample.features.energy, quantity(sample.features), edges)
        draw_points(top, stats, sample, offsets[sample.key])
        if sample.key != "reference":
            series.append(draw_points(bottom, stats, sample, offsets[sample.key], divide_by=ref_stats))
    outside = clip_ratio_axis(bottom, series)
    top.set_ylabel(ylabel)
    top.legend(fontsize=7)
    top.tick_params(labelbottom=False)
    bottom.set_xlabel("primary energy [GeV] (mean of the bin's events)")
    warnings = _bin_warnings(inputs, bins)
    if outside:
        lo, hi = bottom.get_ylim()
        warnings.append(f"{outside} ratio point(s) lie outside the ratio axis [{lo:g}, {hi:g}]: marked by triangles at its edge")
    return Drawn(fig, warnings)


def response(inputs: ReportInputs) -> Drawn:
    """Mean sampling fraction (ECAL sum / 50 / E) per energy bin: the calorimeter response."""
    return _per_energy_figure(inputs, lambda f: f.sampling_fraction, "mean sampling fraction (+- s.e.)", bin_means)


def resolution(inputs: ReportInputs) -> Drawn:
    """sigma / mu of the sampling fraction per energy bin: the relative energy resolution."""
    return _per_energy_figure(inputs, lambda f: f.sampling_fraction, "resolution sd(SF) / mean(SF)", bin_resolutions)


def sampling_fraction_hist(inputs: ReportInputs) -> Drawn:
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    values = [(s, s.features.sampling_fraction) for s in inputs.samples()]
    warnings = draw_histograms(ax, values, float_edges([v for _, v in values]), "sampling fraction per event")
    ax.legend(fontsize=7)
    fixed_layout(fig)
    return Drawn(fig, warnings)


def shapes(inputs: ReportInputs, logy: bool) -> Drawn:
    """Mean energy per slice along x, y, z over all events, MC band, ratio panels."""
    fig = Figure(figsize=(13, 5.4))
    samples = inputs.samples()
    series_all = 0
    for i, axis in enumerate(AXES):
        left = 0.06 + i * 0.33
        top = fig.add_axes((left, 0.36, 0.27, 0.58))
        bottom = fig.add_axes((left, 0.08, 0.27, 0.24), sharex=top)
        ref = inputs.reference.shape(axis)
        ref_mean = ref.mean(axis=0)
        ref_err = ref.std(axis=0, ddof=1) / math.sqrt(ref.shape[0]) if ref.shape[0] > 1 else np.zeros_like(ref_mean)
        idx = np.arange(ref_mean.size)
        top.fill_between(idx, ref_mean - ref_err, ref_mean + ref_err, step="mid", color="black", alpha=0.15, linewidth=0,
                         label="MC A +-1 s.e.")
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(ref_mean > 0, ref_err / ref_mean, np.nan)
        bottom.fill_between(idx, 1 - rel, 1 + rel, step="mid", color="black", alpha=0.15, linewidth=0)
        series = []
        for sample in samples:
            prof = sample.features.shape(axis).mean(axis=0)
            top.step(idx, prof, where="mid", label=sample.label, linewidth=1.2, **sample.style)
            if sample.key != "reference":
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = np.where(ref_mean > 0, prof / ref_mean, np.nan)
                bottom.step(idx, ratio, where="mid", linewidth=1.0, **sample.style)
                series.append((idx, ratio, sample.style["color"]))
        series_all += clip_ratio_axis(bottom, series)
        if logy:
            top.set_yscale("log")
        top.set_ylabel("mean raw energy per slice")
        top.tick_params(labelbottom=False)
        bottom.set_xlabel(f"{axis} cell index")
        if i == 0:
            top.legend(fontsize=7)
    warnings = []
    if series_all:
        warnings.append(f"{series_all} ratio value(s) outside the ratio axis (tail slices): marked by triangles")
    return Drawn(fig, warnings)


def shapes_per_energy_bin(inputs: ReportInputs) -> Drawn | None:
    """Depth (z) and tilted transverse (y) profiles per energy bin, log scale, MC band."""
    bins = [b for b in energy_bins(inputs) if not b["skipped"]]
    if not bins:
        return None
    fig = Figure(figsize=(3.3 * len(bins), 6.0))
    for i, b in enumerate(bins):
        for j, axis in enumerate(("z", "y")):
            ax = fig.add_subplot(2, len(bins), j * len(bins) + i + 1)
            for sample in inputs.samples():
                f = sample.features
                sel = (f.energy >= b["lo"]) & (f.energy < b["hi"])
                prof = f.shape(axis)[sel]
                if prof.shape[0] == 0:
                    continue
                mean = prof.mean(axis=0)
                idx = np.arange(mean.size)
                if sample.key == "reference" and prof.shape[0] > 1:
                    err = prof.std(axis=0, ddof=1) / math.sqrt(prof.shape[0])
                    ax.fill_between(idx, mean - err, mean + err, step="mid", color="black", alpha=0.15, linewidth=0)
                ax.step(idx, mean, where="mid", label=sample.label, linewidth=1.0, **sample.style)
            ax.set_yscale("log")
            ax.set_xlabel(f"{axis} cell index", fontsize=8)
            if j == 0:
                ax.set_title(b["label"], fontsize=9)
    fig.axes[0].legend(fontsize=6)
    fixed_layout(fig)
    return Drawn(fig, _bin_warnings(inputs, bins))


def moments_per_energy_bin(inputs: ReportInputs) -> Drawn:
    """Mean M1 and M2 along x, y, z per energy bin (+- s.e.), MC band."""
    bins = energy_bins(inputs)
    edges = [(b["lo"], b["hi"]) for b in bins]
    fig = Figure(figsize=(13, 6.4))
    samples = inputs.samples()
    offsets = _offsets(samples)
    for k, axis in enumerate(AXES):
        for row, (name, attr) in enumerate((("M1", "m1"), ("M2", "m2"))):
            ax = fig.add_subplot(2, 3, row * 3 + k + 1)
            ref_stats = bin_means(inputs.reference.energy, getattr(inputs.reference, attr)[:, k], edges)
            reference_band(ax, ref_stats, ratio=False)
            for sample in samples:
                stats = bin_means(sample.features.energy, getattr(sample.features, attr)[:, k], edges)
                draw_points(ax, stats, sample, offsets[sample.key])
            ax.set_ylabel(f"mean {name} {axis} [cells{'^2' if attr == 'm2' else ''}]")
            ax.set_xlabel("primary energy [GeV]", fontsize=8)
    fig.axes[0].legend(fontsize=6)
    fixed_layout(fig)
    return Drawn(fig, _bin_warnings(inputs, bins))


def moments(inputs: ReportInputs) -> Drawn:
    """Distributions of M1 and M2 along x, y, z, all events."""
    fig = Figure(figsize=(13, 6.4))
    warnings: list[str] = []
    samples = inputs.samples()
    for k, axis in enumerate(AXES):
        for row, (name, attr) in enumerate((("M1", "m1"), ("M2", "m2"))):
            ax = fig.add_subplot(2, 3, row * 3 + k + 1)
            values = [(s, getattr(s.features, attr)[:, k]) for s in samples]
            unit = "cells^2" if attr == "m2" else "cells"
            warnings += draw_histograms(ax, values, float_edges([v for _, v in values]), f"{name} {axis} [{unit}]")
    fig.axes[0].legend(fontsize=6)
    fixed_layout(fig)
    return Drawn(fig, warnings)


def hits_and_maximum(inputs: ReportInputs) -> Drawn:
    """Cells above the hit threshold, and the z and y index of the largest cell: integer bins."""
    fig = Figure(figsize=(13, 4.0))
    samples = inputs.samples()
    warnings: list[str] = []
    thr = inputs.reference.hit_threshold_raw
    columns = (
        (lambda f: f.n_hits, f"hits: cells above {thr:g} raw ({thr / 50:g} GeV deposited)"),
        (lambda f: f.max_position[:, 2], "z index of the largest cell"),
        (lambda f: f.max_position[:, 1], "y index of the largest cell"),
    )
    for i, (get, label) in enumerate(columns):
        ax = fig.add_subplot(1, 3, i + 1)
        values = [(s, get(s.features).astype(np.float64)) for s in samples]
        warnings += draw_histograms(ax, values, integer_edges([v for _, v in values]), label)
    fig.axes[0].legend(fontsize=6)
    fixed_layout(fig)
    return Drawn(fig, warnings)


def cell_spectrum(inputs: ReportInputs) -> Drawn:
    """Positive cells per event in log bins of cell energy; cells outside the range counted apart."""
    fig = Figure(figsize=(7, 4.4))
    ax = fig.add_subplot()
    edges = CELL_SPECTRUM_EDGES
    warnings = []
    for sample in inputs.samples():
        f = sample.features
        counts = f.cell_hist.sum(axis=0).astype(np.float64) / max(1, f.n_events)
        ax.stairs(np.where(counts > 0, counts, np.nan), edges, label=sample.label, linewidth=1.2, **sample.style)
        if sample.key == "reference" and f.n_events:
            err = np.sqrt(f.cell_hist.sum(axis=0)) / f.n_events
            pos = counts > 0
            ax.stairs(np.where(pos, counts + err, np.nan), edges, baseline=np.where(pos, np.maximum(counts - err, counts / 10), np.nan),
                      fill=True, color="black", alpha=0.15, linewidth=0)
        outside = f.cell_outside.sum(axis=0) if f.cell_outside is not None else None
        if outside is not None and outside.sum():
            below, above = (int(v) for v in outside)
            for count, x, marker in ((below, edges[0], "<"), (above, edges[-1], ">")):
                if count:
                    ax.plot([x], [counts[counts > 0].max() if (counts > 0).any() else 1], marker=marker,
                            color=sample.style["color"], markersize=7, clip_on=False)
            warnings.append(f"cell spectrum: {sample.label} has {below} positive cell(s) below {edges[0]:g} raw and "
                            f"{above} above {edges[-1]:g} raw ({below / max(1, f.n_events):.3g} and "
                            f"{above / max(1, f.n_events):.3g} per event): counted apart, marked, not binned")
    ax.set_xscale("log")
    ax.set_yscale("log")
    lowest = min((float(np.min(v[v > 0])) for v in [s.features.cell_hist.sum(axis=0) / max(1, s.features.n_events)
                                                     for s in inputs.samples()] if (v > 0).any()), default=1e-3)
    ax.set_ylim(bottom=lowest / 3)
    ax.set_xlabel("cell energy [raw units] (x 1/50 = deposited GeV)")
    ax.set_ylabel("cells per event per bin")
    ax.legend(fontsize=7)
    fixed_layout(fig)
    return Drawn(fig, warnings)


def measured_angle(inputs: ReportInputs) -> Drawn:
    """Measured angle per bin of the generated angle (3DGAN's 62, 90, 118 degrees +- 0.1 rad)."""
    rows = inputs.noise_floor["physics"]["angle_bins"]
    fig = Figure(figsize=(4.3 * max(1, len(rows)), 3.9))
    warnings: list[str] = []
    samples = inputs.samples()
    for i, row in enumerate(rows):
        ax = fig.add_subplot(1, max(1, len(rows)), i + 1)
        values = [(s, np.degrees(s.features.measured_angle[(s.features.theta >= row["lo"]) & (s.features.theta < row["hi"])]))
                  for s in samples]
        sizes = {s.label: int(v.size) for s, v in values}
        small = {k: n for k, n in sizes.items() if n < inputs.min_events_per_bin}
        if all(n == 0 for n in sizes.values()):
            warn_text(ax, f"no events in {row['label']}")
        else:
            warnings += draw_histograms(ax, values, float_edges([v for _, v in values]), "measured angle [deg]")
        if small:
            warnings.append(f"angle bin {row['label']}: " + ", ".join(f"{k} {n}" for k, n in small.items())
                            + f" events, fewer than min_events_per_bin={inputs.min_events_per_bin}: not compared")
        ax.set_title(f"generated angle {row['label']}", fontsize=9)
    if fig.axes:
        fig.axes[0].legend(fontsize=6)
    fixed_layout(fig)
    return Drawn(fig, warnings)
