"""The report's model figures: average shower images, classifier ROC, the discriminator's outputs,
training curves and separation powers.

Each function returns a ``Drawn`` or None with the reason the figure cannot be drawn (no
projections, no classifier curve, no discriminator, no training log), which the report lists.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from eval.plot_common import LOW_STATS_EVENTS, bin_means, draw_histograms, draw_points, fixed_layout
from eval.plots_physics import Drawn
from eval.report_inputs import ReportInputs, Sample

IMAGE_RATIO_LIMITS = (0.5, 1.5)


def average_images(inputs: ReportInputs) -> tuple[Drawn | None, str]:
    """Mean x-y (front) and y-z (side) projections per sample, and each one's ratio to Monte Carlo A."""
    samples = [s for s in inputs.samples() if s.projections is not None and s.projections.n_events]
    ref = inputs.reference_projections
    if ref is None or not ref.n_events or len(samples) < 2:
        return None, "no summed projections were recorded for the samples"
    fig = Figure(figsize=(11, 2.6 * len(samples) + 0.7))
    ref_yz = ref.mean_yz()
    norms = {}
    for name, get in (("xy", lambda p: p.mean_xy()), ("yz", lambda p: p.mean_yz())):
        top = max(float(np.nanmax(get(s.projections))) for s in samples)
        norms[name] = LogNorm(vmin=max(top * 1e-5, 1e-12), vmax=max(top, 1e-11))
    ratio_norm = Normalize(vmin=IMAGE_RATIO_LIMITS[0], vmax=IMAGE_RATIO_LIMITS[1])
    columns: dict[str, tuple] = {}
    for r, sample in enumerate(samples):
        images = (("xy", sample.projections.mean_xy(), "y cell", "x cell", "x-y (front)"),
                  ("yz", sample.projections.mean_yz(), "z cell (depth)", "y cell", "y-z (side)"))
        for c, (name, img, xlabel, ylabel, view) in enumerate(images):
            ax = fig.add_subplot(len(samples), 3, r * 3 + c + 1)
            im = ax.imshow(np.where(img > 0, img, np.nan), origin="lower", aspect="auto", norm=norms[name],
                           cmap="viridis", interpolation="nearest")
            columns[name] = (im, columns.get(name, (None, []))[1] + [ax])
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(f"{sample.label}: {view}", fontsize=8)
            if r == len(samples) - 1:
                ax.set_xlabel(xlabel, fontsize=8)
        ax = fig.add_subplot(len(samples), 3, r * 3 + 3)
        if sample.key == "reference":
            ax.text(0.5, 0.5, f"reference\n{sample.projections.n_events} showers", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
            ax.set_axis_off()
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ref_yz > 0, sample.projections.mean_yz() / ref_yz, np.nan)
        im = ax.imshow(ratio, origin="lower", aspect="auto", cmap="RdBu_r", norm=ratio_norm, interpolation="nearest")
        columns["ratio"] = (im, columns.get("ratio", (None, []))[1] + [ax])
        ax.set_title(f"{sample.label} / MC A: y-z", fontsize=8)
        if r == len(samples) - 1:
            ax.set_xlabel("z cell (depth)", fontsize=8)
    fixed_layout(fig, bottom_in=0.95, right_in=0.4, hspace=0.35, wspace=0.25)
    for name, label in (("xy", "mean raw energy per cell"), ("yz", "mean raw energy per cell"), ("ratio", "ratio to MC A")):
        if name in columns:
            im, axes = columns[name]
            fig.colorbar(im, ax=axes, orientation="horizontal", location="bottom", fraction=0.04, pad=0.08,
                         aspect=30, label=label)
    warnings = [f"average images: {s.label} holds only {s.projections.n_events} showers: cell-level noise dominates the ratio map"
                for s in samples if s.projections.n_events < LOW_STATS_EVENTS]
    warnings.append(f"ratio colour scale spans {IMAGE_RATIO_LIMITS[0]:g} to {IMAGE_RATIO_LIMITS[1]:g}; "
                    "cells beyond it show the end colour, cells empty in MC A are blank")
    return Drawn(fig, warnings), ""


def classifier_roc(inputs: ReportInputs) -> tuple[Drawn | None, str]:
    """ROC curves of both classifiers, Monte Carlo B vs A beside each generator vs A."""
    kinds = (("classifier", "high-level features + conditions"), ("classifier_voxel", "coarse voxels / E + conditions"))
    have = any(g.results["generated"].get("curves", {}).get(k) for g in inputs.generators for k, _ in kinds)
    if not have:
        return None, "the classifiers were not run or returned no ROC curve (see the notes)"
    fig = Figure(figsize=(11, 4.6))
    warnings = []
    curves_of = [(inputs.mc_samples()[1], inputs.noise_floor)] + [
        (s, g.results["generated"]) for s, g in zip(inputs.generator_samples(), inputs.generators)]
    for i, (kind, title) in enumerate(kinds):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="chance (AUC 0.5)")
        for sample, comparison in curves_of:
            curve = comparison.get("curves", {}).get(kind)
            if not curve:
                continue
            ax.plot(curve["fpr"], curve["tpr"], linewidth=1.3,
                    label=f"{sample.label} vs MC A (AUC {curve['auc']:.3f}, {curve['n_test']} test/class)", **sample.style)
            if curve["n_test"] < LOW_STATS_EVENTS:
                warnings.append(f"{title}: {sample.label} has only {curve['n_test']} test events per class: "
                                f"the AUC's spread for indistinguishable samples is "
                                f"{math.sqrt((2 * curve['n_test'] + 1) / (12 * curve['n_test'] ** 2)):.3f}")
        ax.set_xlabel("false positive rate (generated called real)")
        ax.set_ylabel("true positive rate (MC A called real)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
    fixed_layout(fig)
    return Drawn(fig, warnings), ""


def discriminator(inputs: ReportInputs) -> tuple[Drawn | None, str]:
    """Per generator with a discriminator: its real-probability for MC and generated showers, and
    its regressed energy over the true one per energy bin."""
    views = [(s, g) for s, g in zip(inputs.generator_samples(), inputs.generators) if g.discriminator]
    if not views:
        notes = "; ".join(f"{g.label}: {g.discriminator_note}" for g in inputs.generators if g.discriminator_note)
        return None, f"no discriminator ({notes or 'none was given'})"
    fig = Figure(figsize=(11, 3.9 * len(views)))
    warnings: list[str] = []
    mc = inputs.mc_samples()
    for r, (gen_sample, view) in enumerate(views):
        outs = view.discriminator
        drawn = [(s, outs[k]) for s, k in ((mc[0], "reference"), (mc[1], "independent"), (gen_sample, "generated")) if k in outs]
        ax = fig.add_subplot(len(views), 2, 2 * r + 1)
        warnings += draw_histograms(ax, [(s, o.realfake) for s, o in drawn], np.linspace(0.0, 1.0, 41),
                                    "D output: probability of being real")
        ax.set_title(f"discriminator of {view.label}", fontsize=9)
        ax.legend(fontsize=6)
        ax = fig.add_subplot(len(views), 2, 2 * r + 2)
        energies = np.concatenate([o.energy_true for _, o in drawn])
        edges = np.quantile(energies, np.linspace(0, 1, 4)) if energies.size else np.array([0.0, 1.0])
        edges[-1] = np.nextafter(edges[-1], np.inf)
        bins = list(zip(edges[:-1], edges[1:]))
        for s, o in drawn:
            with np.errstate(divide="ignore", invalid="ignore"):
                draw_points(ax, bin_means(o.energy_true, o.energy_pred / o.energy_true, bins), s)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xlabel("primary energy [GeV]")
        ax.set_ylabel("D energy regression / true energy (+- s.e.)")
        ax.set_title(f"{view.discriminator_note}", fontsize=7)
        ax.legend(fontsize=6)
        for s, o in drawn:
            if o.n_events < LOW_STATS_EVENTS:
                warnings.append(f"discriminator of {view.label}: only {o.n_events} {s.label} showers were passed through it")
    fixed_layout(fig)
    notes = [f"{view.label}: discriminator of its own run, {view.discriminator_note}." for _, view in views]
    return Drawn(fig, warnings, notes), ""


LOSS_PANELS = (
    ("discriminator losses", ("d_loss", "d_real", "d_fake")),
    ("generator loss", ("g_loss", "g_bce")),
    ("generator auxiliary losses", ("g_energy", "g_angle", "g_ecal_sum")),
)
LOSS_STYLES = ("-", "--", ":", "-.")


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def training_curves(inputs: ReportInputs) -> tuple[Drawn | None, str]:
    """Losses per step of every generator's training run, and sampling-fraction error per snapshot."""
    logs = [(s, g) for s, g in zip(inputs.generator_samples(), inputs.generators) if g.training is not None]
    snaps = [(s, g) for s, g in zip(inputs.generator_samples(), inputs.generators) if g.snapshots is not None]
    if not logs and not snaps:
        notes = "; ".join(f"{g.label}: {g.training_note}" for g in inputs.generators if g.training_note)
        return None, f"no training log ({notes or 'none was given'})"
    panels = list(LOSS_PANELS) + ([("sampling-fraction MRE per snapshot", ())] if snaps else [])
    fig = Figure(figsize=(4.2 * len(panels), 4.0))
    warnings = []
    for p, (title, names) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        ax.set_title(title, fontsize=9)
        if not names:
            for sample, view in snaps:
                t = view.snapshots
                ax.plot(t.x, t.sf_mre, marker="o", markersize=3, label=view.label, **sample.style)
                if t.selected is not None:
                    sel = np.flatnonzero(t.x == t.selected)
                    if sel.size:
                        ax.plot([t.x[sel[0]]], [t.sf_mre[sel[0]]], marker="*", markersize=13, color=sample.style["color"],
                                linestyle="none", label=f"{view.label}: selected")
            ax.set_xlabel(snaps[0][1].snapshots.x_name)
            ax.set_ylabel("sampling-fraction MRE")
            ax.legend(fontsize=6)
            continue
        drew = False
        for sample, view in logs:
            log = view.training
            window = max(1, log.steps.size // 50)
            for k, name in enumerate(names):
                if name not in log.losses or not np.isfinite(log.losses[name]).any():
                    continue
                y = log.losses[name]
                ax.plot(log.steps, y, color=sample.style["color"], alpha=0.25, linewidth=0.6, linestyle=LOSS_STYLES[k % 4])
                ax.plot(log.steps, _smooth(y, window), color=sample.style["color"], linewidth=1.2,
                        linestyle=LOSS_STYLES[k % 4], label=f"{view.label}: {name}")
                drew = True
        if not drew:
            ax.text(0.5, 0.5, "not in the log", transform=ax.transAxes, ha="center")
        values = [v for line in ax.lines for v in np.asarray(line.get_ydata(), dtype=np.float64) if np.isfinite(v)]
        if values and min(values) > 0:
            ax.set_yscale("log")  # the terms differ by orders of magnitude
        ax.set_ylabel("loss")
        ax.set_xlabel("training step")
        ax.legend(fontsize=6)
    for sample, view in logs:
        if view.training.steps.size < 10:
            warnings.append(f"training log of {view.label} has only {view.training.steps.size} records: "
                            "the curves say little about convergence")
    for g in inputs.generators:
        if g.training is None and g.training_note:
            warnings.append(f"{g.label}: {g.training_note}")
    notes = [f"{view.label}: {view.training.steps.size} records up to step {int(view.training.steps[-1])} from "
             f"{view.training.source} ({view.training.replicas} replica(s), global batch {view.training.global_batch})."
             for _, view in logs]
    fixed_layout(fig)
    return Drawn(fig, warnings, notes), ""


def separation_power(inputs: ReportInputs) -> tuple[Drawn | None, str]:
    """Separation power per high-level feature: Monte Carlo B vs A beside each generator vs A."""
    floor = {k[len("sep_power."):]: v for k, v in inputs.noise_floor["flat"].items() if k.startswith("sep_power.")}
    names = list(floor)
    if not names:
        return None, "no separation powers were computed"
    rows: list[tuple[Sample, dict]] = [(inputs.mc_samples()[1], floor)] + [
        (s, {k[len("sep_power."):]: v for k, v in g.results["generated"]["flat"].items() if k.startswith("sep_power.")})
        for s, g in zip(inputs.generator_samples(), inputs.generators)]
    fig = Figure(figsize=(8.5, 0.32 * len(names) * max(1, len(rows) / 2) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    height = 0.8 / len(rows)
    for i, (sample, values) in enumerate(rows):
        vals = np.array([values.get(n, np.nan) for n in names], dtype=np.float64)
        ax.barh(y - 0.4 + (i + 0.5) * height, np.where(vals > 0, vals, np.nan), height=height, color=sample.style["color"],
                label=f"{sample.label} vs MC A")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("separation power (0 identical, 1 disjoint)")
    ax.legend(fontsize=7)
    fixed_layout(fig, left_in=1.7)
    return Drawn(fig, []), ""
