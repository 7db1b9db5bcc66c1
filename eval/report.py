"""The validation report: every figure a physicist reads, with the noise floor beside each number,
rendered as one self-contained report.html (PNG figures embedded, no scripts, no links out).

Every figure draws the Monte Carlo reference (half A of the test split, with a band of its own
statistical uncertainty), the independent Monte Carlo half B (what a perfect generator would
look like at this sample size) and each generator (made for half B's energies and angles); with
``caloforge evaluate --generator A --generator B`` both generators are overlaid. Beside each
figure a table gives its metrics for MC B vs MC A (the floor) and for every generator vs MC A.
Warnings (too few events for a metric, values outside a histogram's axis, bins not compared)
are printed in a box beside the figure they concern and at the top of the page.

Figures (ids in the page and file stems under plots/), in order: ``sampling_fraction`` (response:
mean sampling fraction per energy bin), ``resolution`` (sd/mean per energy bin),
``sampling_fraction_hist``, ``shapes`` (x, y, z, log) and ``shapes_linear``,
``shapes_per_energy_bin``, ``moments_per_energy_bin``, ``moments``, ``hits_and_maximum``,
``cell_spectrum``, ``measured_angle``, ``average_images``, ``classifier_roc``, ``discriminator``,
``training_curves``, ``separation_power``. A figure whose data is absent (no discriminator beside
the generator, no training log) is listed under "Figures not drawn" with the reason.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from eval import plots_model, plots_physics
from eval.features import ShowerFeatures
from eval.plot_common import LOW_STATS_EVENTS, png_bytes
from eval.plots_physics import Drawn
from eval.report_inputs import GeneratorView, ReportInputs
from eval.best_epoch import selection_html


class MetricRow(NamedTuple):
    """One line of a figure's side table: the metric, its Monte Carlo floor, each generator's value."""

    name: str
    floor: float
    generated: tuple[float, ...]


@dataclass
class ReportFigure:
    """One rendered figure with the metric rows and warnings shown beside it.

    Attributes:
        name: File stem under plots/ and the figure's id in the page (letters, digits, underscores).
        title: Heading in the report.
        png: The PNG bytes.
        rows: Metric rows for the side table.
        caption: What the figure shows.
        warnings: Lines printed in a warning box beside the figure.
    """

    name: str
    title: str
    png: bytes
    rows: list[MetricRow] = field(default_factory=list)
    caption: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class Report:
    """The rendered figures, the figures that could not be drawn (name, reason) and page-level warnings."""

    figures: list[ReportFigure]
    missing: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FigureSpec:
    """How one figure is made: its id, title, caption, drawing function and side-table metrics."""

    name: str
    title: str
    caption: str
    draw: Callable[[ReportInputs], "Drawn | tuple[Drawn | None, str] | None"]
    metrics: tuple[str, ...] = ()


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("sampling_fraction", "Response: mean sampling fraction per energy bin",
               "Mean of ECAL sum / 50 / E in each of the evaluation's energy bins (+- standard error), at the "
               "bin's mean energy; below, the ratio to MC A with MC A's own uncertainty as the grey band. "
               "Hollow points: fewer than %d events." % LOW_STATS_EVENTS,
               plots_physics.response, ("sampling_fraction_mre", "sampling_fraction_max_rel_err")),
    FigureSpec("resolution", "Resolution: sd / mean of the sampling fraction per energy bin",
               "sigma/mu of the per-event sampling fraction in each energy bin; error R sqrt(1/(2(n-1)) + R^2/n). "
               "Below, the ratio to MC A.", plots_physics.resolution, ("resolution_mre",)),
    FigureSpec("sampling_fraction_hist", "Sampling-fraction distribution",
               "Per-event sampling fraction, unit area; grey band: MC A +-1 sigma (Poisson).",
               plots_physics.sampling_fraction_hist, ("sep_power.sampling_fraction",)),
    FigureSpec("shapes", "Shower shapes along x, y, z (log scale)",
               "Mean raw energy per slice over all events; grey band: MC A +-1 standard error; below, the "
               "ratio to MC A (triangles: ratios beyond the axis).",
               lambda i: plots_physics.shapes(i, logy=True), ("shape_mre", "selection_profile_term")),
    FigureSpec("shapes_linear", "Shower shapes along x, y, z (linear scale)",
               "As above on a linear scale, where the core of the shower dominates.",
               lambda i: plots_physics.shapes(i, logy=False), ("shape_mre",)),
    FigureSpec("shapes_per_energy_bin", "Shower shapes per energy bin (z: depth, y: the tilted transverse axis)",
               "Mean raw energy per slice in each compared energy bin; the table gives each bin's relative error.",
               plots_physics.shapes_per_energy_bin),
    FigureSpec("moments_per_energy_bin", "Moments per energy bin",
               "Mean M1 = sum i S(i) / E and M2 = sum (i - M1)^2 S(i) / E (integer cell indices) in each energy "
               "bin, +- standard error; grey band: MC A.",
               plots_physics.moments_per_energy_bin, ("moment_mre", "selection_moment_term")),
    FigureSpec("moments", "Moment distributions", "Per-event M1 and M2 along x, y, z, all energies.",
               plots_physics.moments, tuple(f"sep_power.{m}_{a}" for m in ("m1", "width") for a in "xyz")),
    FigureSpec("hits_and_maximum", "Number of hits and position of the largest cell",
               "Integer features binned on integers. Hit threshold 3e-4 GeV of deposited energy = 0.015 raw units.",
               plots_physics.hits_and_maximum, ("sep_power.log_n_hits", "sep_power.max_z")),
    FigureSpec("cell_spectrum", "Single-cell energy spectrum",
               "Positive cells per event in 70 log bins from 1e-4 to 1e3 raw units; cells outside are counted "
               "apart and marked.", plots_physics.cell_spectrum, ("cell_spectrum_sep_power",)),
    FigureSpec("measured_angle", "Measured angle per angle bin",
               "Angle measured from the shower (3DGAN's published definition), events selected by generated "
               "angle.", plots_physics.measured_angle,
               ("angle_mre", "selection_angle_term", "sep_power.measured_angle")),
    FigureSpec("average_images", "Average shower images",
               "Mean shower per sample seen from the front (x-y, summed over depth) and the side (y-z, summed "
               "over x), log colour scale; right: the y-z image's ratio to MC A.",
               plots_model.average_images, ("shape_mre", "classifier_voxel_auc")),
    FigureSpec("classifier_roc", "Classifier ROC curves",
               "Calibrated test-split ROC of the CaloChallenge-style classifiers (MC A = real); MC B's curve is "
               "what indistinguishable samples give at this size.", plots_model.classifier_roc,
               ("classifier_auc", "classifier_jsd", "classifier_voxel_auc", "classifier_voxel_jsd")),
    FigureSpec("discriminator", "The trained discriminator's view",
               "Left: the discriminator's probability of 'real' for MC and generated showers (a converged GAN's D "
               "cannot tell them apart). Right: its regressed energy over the true energy per energy bin.",
               plots_model.discriminator),
    FigureSpec("training_curves", "Training curves",
               "Losses per step from the trainer's timings.jsonl (faint: per record; solid: running mean), and "
               "the sampling-fraction error of each generator snapshot when snapshots were compared.",
               plots_model.training_curves),
    FigureSpec("separation_power", "Separation power of the high-level features",
               "0.5 sum (h1 - h2)^2 / (h1 + h2) on unit-normalised histograms, per feature; MC B vs MC A is the floor.",
               plots_model.separation_power,
               ("sep_power_mean", "fpd_x1e3", "kpd_x1e3", "selection_metric", "selection_metric_caloforge")),
)
FIGURE_NAMES = tuple(f.name for f in FIGURES)


def _flat(comparison: dict, key: str) -> float:
    value = comparison.get("flat", {}).get(key)
    return float(value) if isinstance(value, (int, float)) and value is not None else float("nan")


def metric_rows(inputs: ReportInputs, keys: tuple[str, ...]) -> list[MetricRow]:
    return [MetricRow(k, _flat(inputs.noise_floor, k), tuple(_flat(g.results["generated"], k) for g in inputs.generators))
            for k in keys]


def _bin_rows(inputs: ReportInputs) -> list[MetricRow]:
    """Per-energy-bin shape errors along z and y, for the per-bin shape figure."""
    floor_bins = {r["label"]: r for r in inputs.noise_floor["physics"]["energy_bins"] if not r["skipped"]}
    rows = []
    for label, floor in floor_bins.items():
        for axis in ("z", "y"):
            values = []
            for g in inputs.generators:
                row = next((r for r in g.results["generated"]["physics"]["energy_bins"] if r["label"] == label), None)
                values.append(row["shape_rel_err"][axis] if row and not row["skipped"] else float("nan"))
            rows.append(MetricRow(f"shape_rel_err.{axis} [{label}]", floor["shape_rel_err"][axis], tuple(values)))
    return rows


def page_warnings(inputs: ReportInputs, config: dict | None = None) -> list[str]:
    """Warnings about the samples as a whole: sizes too small for a metric, metrics not computed."""
    out: list[str] = list(inputs.notes)
    n_ref, n_ind = inputs.reference.n_events, inputs.independent.n_events
    config = config or {}
    if n_ref < 1000:
        out.append(f"the Monte Carlo halves hold {n_ref} and {n_ind} events: every threshold widens as 1/sqrt(events); "
                   "2,000 events per half is the size the planted-defect suite shows defects failing at")
    for key, what in (("fpd_min_samples", "FPD batches"), ("kpd_batch_size", "KPD batches")):
        size = config.get(key)
        if isinstance(size, int) and size > n_ref:
            out.append(f"{what} of {size} events exceed the {n_ref} events per sample: they are drawn with replacement "
                       f"and the value includes the sample's own finite-size bias; read it against the MC-vs-MC floor")
    for note in inputs.noise_floor.get("notes", []):
        out.append(f"MC B vs MC A: {note}")
    for g in inputs.generators:
        for note in g.results["generated"].get("notes", []):
            out.append(f"{g.label}: {note}")
        n_empty = int(g.features.empty.sum())
        if n_empty:
            out.append(f"{g.label}: {n_empty} of {g.features.n_events} generated showers are empty (no positive cell): "
                       "their moments and angle are undefined and left out of those figures")
        for kind in ("classifier", "classifier_voxel"):
            n_test = _flat(g.results["generated"], f"{kind}_n_test")
            if math.isfinite(n_test) and n_test < LOW_STATS_EVENTS:
                out.append(f"{g.label}: the {kind} test split holds {int(n_test)} events per class (< {LOW_STATS_EVENTS}): "
                           "its AUC can only catch gross differences")
    return out


def build_report(inputs: ReportInputs, config: dict | None = None) -> Report:
    """Render every figure of ``FIGURES`` that has data; list the others with the reason.

    Args:
        inputs: The samples, results and side data.
        config: The evaluation's config (``EvalConfig.to_dict()``), for sample-size warnings.
    """
    figures, missing = [], []
    for spec in FIGURES:
        out = spec.draw(inputs)
        drawn, reason = out if isinstance(out, tuple) else (out, "no populated energy bin")
        if drawn is None:
            missing.append((spec.name, reason))
            continue
        rows = _bin_rows(inputs) if spec.name == "shapes_per_energy_bin" else metric_rows(inputs, spec.metrics)
        caption = " ".join([spec.caption, *drawn.notes])
        figures.append(ReportFigure(spec.name, spec.title, png_bytes(drawn.figure), rows, caption,
                                    list(dict.fromkeys(drawn.warnings))))
    return Report(figures, missing, page_warnings(inputs, config), [g.label for g in inputs.generators])


def build_figures(reference: ShowerFeatures, generated: ShowerFeatures, independent: ShowerFeatures,
                  results: dict, label: str = "Generator") -> list[ReportFigure]:
    """The figures of one generator from its features and results alone (no images, log or discriminator)."""
    view = GeneratorView(label, generated, results)
    return build_report(ReportInputs(reference, independent, [view])).figures


# --------------------------------------------------------------------------- HTML
def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.4g}"
    return html.escape(str(value))


def generator_verdicts(metrics: dict) -> list[tuple[str, dict]]:
    """(label, verdict) of every generator: ``metrics["generators"]`` for several, else the one verdict."""
    if metrics.get("generators"):
        return [(g["label"], g["verdict"]) for g in metrics["generators"]]
    return [(str(metrics.get("generator_label", "Generator")), metrics["verdict"])]


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:0.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}th{background:#f3f3f3}"
    "td:first-child,th:first-child{text-align:left}.fig{display:flex;gap:1.5em;align-items:flex-start;"
    "margin:1.5em 0;border-top:1px solid #ddd;padding-top:1em}.fig img{max-width:900px}"
    ".pass{color:#1a7f37}.fail{color:#b42318;font-weight:bold}"
    ".warn{background:#fff4e5;border:1px solid #f0a020;padding:0.5em 1em;margin:0.5em 0;font-size:13px;max-width:900px}"
    ".warn li{margin:0.2em 0}"
)


def _warn_box(title: str, lines: list[str], css_id: str = "") -> str:
    if not lines:
        return ""
    ident = f" id='{css_id}'" if css_id else ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<div class='warn'{ident}><b>&#9888; {html.escape(title)}</b><ul>{items}</ul></div>"


def _verdict_table(verdicts: list[tuple[str, dict]]) -> str:
    """One row per check: its rule's null, the Monte Carlo floor, then value / threshold / result per generator."""
    names = list(dict.fromkeys(c["name"] for _, v in verdicts for c in v["checks"]))
    head = "".join(f"<th>{html.escape(label)}</th><th>threshold</th><th>result</th>" for label, _ in verdicts)
    parts = ["<table id='verdict-table'><tr><th>check</th><th>MC vs MC (noise floor)</th><th>null mean</th>"
             f"<th>null sd</th>{head}</tr>"]
    for name in names:
        checks = [next((c for c in v["checks"] if c["name"] == name), None) for _, v in verdicts]
        first = next(c for c in checks if c is not None)
        cells = ""
        for c in checks:
            if c is None:
                cells += "<td>n/a</td><td></td><td></td>"
                continue
            cls = "pass" if c["passed"] else "fail"
            cells += (f"<td>{_fmt(c['value'])}</td><td>{_fmt(c['threshold'])}</td>"
                      f"<td class='{cls}'>{'pass' if c['passed'] else 'FAIL'}</td>")
        parts.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(first['noise_floor'])}</td>"
                     f"<td>{_fmt(first.get('null_mean'))}</td><td>{_fmt(first.get('null_sd'))}</td>{cells}</tr>")
    parts.append("</table>")
    return "".join(parts)


def _anchor(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def render_html(report: "Report | list[ReportFigure]", metrics: dict) -> str:
    """One self-contained HTML page: verdicts, warnings, the check table, then every figure.

    Args:
        report: The rendered report (a bare list of figures is accepted: no warnings, nothing missing).
        metrics: The metrics.json content (``verdict`` and, for several generators, ``generators``;
            ``counts``, ``config``, ``versions``...).

    Returns:
        The HTML text. Each figure is a ``div`` with the figure's name as id holding an ``img``
        with id ``img-<name>`` (a base64 PNG), so the page stands alone.
    """
    if not isinstance(report, Report):
        report = Report(list(report))
    verdicts = generator_verdicts(metrics)
    labels = report.labels or [label for label, _ in verdicts]
    overall = all(v["passed"] for _, v in verdicts)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>caloforge validation report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>caloforge: generated vs Monte Carlo showers</h1>",
    ]
    for label, v in verdicts:
        status = "PASSED" if v["passed"] else "FAILED"
        colour = "#1a7f37" if v["passed"] else "#b42318"
        prefix = f"{html.escape(label)}: " if len(verdicts) > 1 else ""
        failed = f" (failed: {html.escape(', '.join(v['failed']))})" if v.get("failed") else ""
        parts.append(f"<p style='font-size:20px;color:{colour}'><b>{prefix}Verdict: {status}</b>"
                     f"<span style='font-size:13px'>{failed}</span></p>")
    if len(verdicts) > 1:
        parts.append(f"<p>Overall: <b>{'PASSED' if overall else 'FAILED'}</b> (every generator against the same "
                     "Monte Carlo floor)</p>")
    parts.append(_warn_box("Warnings about the samples", report.warnings, "page-warnings"))
    thresholds = verdicts[0][1].get("thresholds", {})
    parts += [
        "<p>Each check passes when its value is at most what a perfect generator would score with "
        "this many events: the mean of the same metric between independent Monte Carlo samples "
        "(half A vs half B and re-drawn halves) plus <i>k</i> standard deviations, plus a margin "
        "(0 unless the thresholds file sets one). "
        f"Rules: {html.escape(str(thresholds.get('source', '')))}.</p>",
        _verdict_table(verdicts),
    ]
    counts = metrics.get("counts", {})
    if counts:
        parts.append("<p>" + ", ".join(f"{html.escape(k)}: {_fmt(v)}" for k, v in counts.items()) + "</p>")
    parts.append(selection_html(metrics))
    toc = " &middot; ".join(f"<a href='#{_anchor(f.name)}'>{html.escape(f.name)}</a>" for f in report.figures)
    parts.append(f"<p id='contents'>Figures: {toc}</p>")
    parts.append(_warn_box("Figures not drawn", [f"{name}: {reason}" for name, reason in report.missing], "missing-figures"))
    gen_heads = "".join(f"<th>{html.escape(label)} vs MC</th>" for label in labels)
    for fig in report.figures:
        b64 = base64.b64encode(fig.png).decode("ascii")
        rows = "".join(
            f"<tr><td>{html.escape(r.name)}</td><td>{_fmt(r.floor)}</td>" + "".join(f"<td>{_fmt(v)}</td>" for v in r.generated)
            + "</tr>" for r in fig.rows)
        table = (f"<table><tr><th>metric</th><th>MC vs MC</th>{gen_heads}</tr>{rows}</table>" if fig.rows
                 else "<p><small>no scalar metric for this figure</small></p>")
        parts.append(
            f"<div class='fig' id='{_anchor(fig.name)}'><div><h3>{html.escape(fig.title)}</h3>"
            f"<img id='img-{_anchor(fig.name)}' alt='{html.escape(fig.title)}' src='data:image/png;base64,{b64}'/>"
            f"<p>{html.escape(fig.caption)}</p></div><div><h4>metrics</h4>{table}"
            f"{_warn_box('Read with care', fig.warnings)}</div></div>"
        )
    parts.append("<h2>Configuration and versions</h2><pre>")
    parts.append(html.escape(json.dumps({k: metrics.get(k) for k in ("config", "seed", "versions")}, indent=2, default=str)))
    parts.append("</pre></body></html>")
    return "\n".join(parts)
