"""Validation plots (matplotlib Agg) and one self-contained report.html with the noise floor beside each figure.

Every figure draws three samples: the Monte Carlo reference (half A of the test split), the
generator (conditioned on half B's energies and angles) and the independent Monte Carlo half B.
Beside each figure a small table gives the figure's metric for generated-vs-MC and for
MC-vs-independent-MC, so a reader sees at once how far the generator is from statistical noise.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from eval.best_epoch import selection_html
from eval.features import AXES, CELL_SPECTRUM_EDGES, ShowerFeatures

SAMPLE_STYLE = {
    "reference": {"label": "Monte Carlo (A)", "color": "black", "linestyle": "-"},
    "generated": {"label": "Generator", "color": "tab:red", "linestyle": "-"},
    "independent": {"label": "Monte Carlo (B, noise floor)", "color": "tab:blue", "linestyle": "--"},
}


@dataclass
class ReportFigure:
    """One rendered figure with the metric rows shown beside it.

    Attributes:
        name: File stem under plots/ (letters, digits, underscores).
        title: Heading in the report.
        png: The PNG bytes.
        rows: (metric name, generated value, noise-floor value) rows for the side table.
        caption: One sentence saying what the figure shows.
    """

    name: str
    title: str
    png: bytes
    rows: list[tuple[str, float, float]] = field(default_factory=list)
    caption: str = ""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def _samples(reference, generated, independent) -> list[tuple[str, ShowerFeatures]]:
    return [("reference", reference), ("generated", generated), ("independent", independent)]


def _hist_panel(ax, values: dict[str, np.ndarray], xlabel: str, bins: int = 40, logy: bool = False) -> None:
    finite = [v[np.isfinite(v)] for v in values.values()]
    allv = np.concatenate(finite) if finite else np.array([])
    if allv.size == 0:
        ax.text(0.5, 0.5, "no finite values", ha="center", transform=ax.transAxes)
        return
    lo, hi = np.percentile(allv, [0.5, 99.5])
    if not hi > lo:
        lo, hi = allv.min() - 0.5, allv.max() + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    for key, v in values.items():
        v = v[np.isfinite(v)]
        if v.size:
            ax.hist(np.clip(v, lo, hi), bins=edges, density=True, histtype="step", **SAMPLE_STYLE[key])
    ax.set_xlabel(xlabel)
    if logy:
        ax.set_yscale("log")


def _metric(results: dict, key: str) -> tuple[float, float]:
    return results["generated"]["flat"].get(key, float("nan")), results["noise_floor"]["flat"].get(key, float("nan"))


def build_figures(
    reference: ShowerFeatures, generated: ShowerFeatures, independent: ShowerFeatures, results: dict
) -> list[ReportFigure]:
    """Render every validation figure.

    Args:
        reference: Monte Carlo half A.
        generated: Generated showers (half B's conditions).
        independent: Monte Carlo half B.
        results: The evaluator's ``{"generated": {...}, "noise_floor": {...}}`` comparison dicts,
            each with ``physics`` (compare_physics output) and ``flat`` (scalar metrics).

    Returns:
        The figures in report order.
    """
    samples = _samples(reference, generated, independent)
    figs: list[ReportFigure] = []

    # Sampling fraction per energy bin.
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for key, res_key in (("generated", "generated"), ("independent", "noise_floor")):
        rows = [r for r in results[res_key]["physics"]["energy_bins"] if not r["skipped"]]
        centres = [(r["lo"] + r["hi"]) / 2 for r in rows]
        if key == "generated":
            ax.plot(centres, [r["sampling_fraction_reference"] for r in rows], marker="o", **SAMPLE_STYLE["reference"])
        ax.plot(centres, [r["sampling_fraction_candidate"] for r in rows], marker="s", **SAMPLE_STYLE[key])
    ax.set_xlabel("primary energy [GeV]")
    ax.set_ylabel("mean sampling fraction (sum / 50 / E)")
    ax.legend(fontsize=8)
    figs.append(
        ReportFigure(
            "sampling_fraction",
            "Sampling fraction per energy bin",
            _png(fig),
            [("sampling_fraction_mre", *_metric(results, "sampling_fraction_mre")),
             ("sampling_fraction_max_rel_err", *_metric(results, "sampling_fraction_max_rel_err"))],
            "Mean of ECAL sum / 50 / primary energy in each energy bin.",
        )
    )

    # ECAL sum over primary energy, all events.
    fig = Figure(figsize=(6, 4))
    _hist_panel(fig.add_subplot(), {k: f.sampling_fraction for k, f in samples}, "sampling fraction per event")
    fig.axes[0].legend(fontsize=8)
    figs.append(
        ReportFigure(
            "sampling_fraction_hist",
            "Sampling-fraction distribution",
            _png(fig),
            [("sep_power.sampling_fraction", *_metric(results, "sep_power.sampling_fraction")),
             ("resolution_mre", *_metric(results, "resolution_mre"))],
            "Per-event sampling fraction, unit-normalised; separation power beside it.",
        )
    )

    # Shower shapes.
    fig = Figure(figsize=(12, 3.6))
    for i, axis in enumerate(AXES):
        ax = fig.add_subplot(1, 3, i + 1)
        for key, f in samples:
            profile = f.shape(axis).mean(axis=0)
            ax.step(np.arange(profile.size), profile, where="mid", **SAMPLE_STYLE[key])
        ax.set_yscale("log")
        ax.set_xlabel(f"{axis} cell index")
        ax.set_ylabel("mean raw energy per slice")
    fig.axes[0].legend(fontsize=7)
    figs.append(
        ReportFigure(
            "shapes",
            "Shower shapes along x, y, z",
            _png(fig),
            [("shape_mre", *_metric(results, "shape_mre"))],
            "Energy per slice averaged over events (all energies and angles).",
        )
    )

    # Longitudinal and transverse profiles per energy bin (3DGAN plots shapes bin by bin).
    gen_bins = [r for r in results["generated"]["physics"]["energy_bins"] if not r["skipped"]]
    noise_bins = {r["label"]: r for r in results["noise_floor"]["physics"]["energy_bins"] if not r["skipped"]}
    if gen_bins:
        fig = Figure(figsize=(3.4 * len(gen_bins), 6.2))
        for i, row in enumerate(gen_bins):
            for j, axis in enumerate(("z", "y")):
                ax = fig.add_subplot(2, len(gen_bins), j * len(gen_bins) + i + 1)
                ref = np.asarray(row["shapes"][axis]["reference"])
                ax.step(np.arange(ref.size), ref, where="mid", **SAMPLE_STYLE["reference"])
                ax.step(np.arange(ref.size), row["shapes"][axis]["candidate"], where="mid", **SAMPLE_STYLE["generated"])
                if row["label"] in noise_bins:
                    other = noise_bins[row["label"]]["shapes"][axis]["candidate"]
                    ax.step(np.arange(ref.size), other, where="mid", **SAMPLE_STYLE["independent"])
                ax.set_yscale("log")
                ax.set_xlabel(f"{axis} cell index")
                if j == 0:
                    ax.set_title(row["label"], fontsize=9)
        fig.axes[0].legend(fontsize=6)
        figs.append(
            ReportFigure(
                "shapes_per_energy_bin",
                "Shower shapes per energy bin (z: depth, y: the tilted transverse axis)",
                _png(fig),
                [(f"shape_rel_err.{axis} [{r['label']}]",
                  r["shape_rel_err"][axis],
                  noise_bins.get(r["label"], {}).get("shape_rel_err", {}).get(axis, float("nan")))
                 for r in gen_bins for axis in ("z", "y")],
                "Mean raw energy per slice in each energy bin; the side table gives each bin's relative error.",
            )
        )

    # Moments.
    fig = Figure(figsize=(12, 6.5))
    for k, axis in enumerate(AXES):
        _hist_panel(fig.add_subplot(2, 3, k + 1), {key: f.m1[:, k] for key, f in samples}, f"M1 {axis} [cells]")
        _hist_panel(fig.add_subplot(2, 3, k + 4), {key: f.m2[:, k] for key, f in samples}, f"M2 {axis} [cells^2]")
    fig.axes[0].legend(fontsize=7)
    figs.append(
        ReportFigure(
            "moments",
            "First and second moments",
            _png(fig),
            [("moment_mre", *_metric(results, "moment_mre"))]
            + [(f"sep_power.m1_{a}", *_metric(results, f"sep_power.m1_{a}")) for a in AXES],
            "M1 = sum i S(i) / E, M2 = sum (i - M1)^2 S(i) / E with integer cell indices.",
        )
    )

    # Measured angle per angle bin.
    angle_rows = results["generated"]["physics"]["angle_bins"]
    fig = Figure(figsize=(4 * max(1, len(angle_rows)), 3.6))
    for i, row in enumerate(angle_rows):
        ax = fig.add_subplot(1, max(1, len(angle_rows)), i + 1)
        values = {k: np.degrees(f.measured_angle[(f.theta >= row["lo"]) & (f.theta < row["hi"])]) for k, f in samples}
        _hist_panel(ax, values, "measured angle [deg]", bins=30)
        ax.set_title(row["label"])
    if fig.axes:
        fig.axes[0].legend(fontsize=7)
    figs.append(
        ReportFigure(
            "measured_angle",
            "Measured angle per angle bin",
            _png(fig),
            [("angle_mre", *_metric(results, "angle_mre"))],
            "Angle measured from the energy-weighted shower axis, events selected by generated angle.",
        )
    )

    # Hits and position of the maximum.
    fig = Figure(figsize=(12, 3.6))
    _hist_panel(fig.add_subplot(1, 3, 1), {k: f.n_hits.astype(float) for k, f in samples},
                f"cells above {reference.hit_threshold_raw:g} raw (3e-4 GeV deposited)")
    _hist_panel(fig.add_subplot(1, 3, 2), {k: f.max_position[:, 2].astype(float) for k, f in samples},
                "z index of the maximum deposit")
    _hist_panel(fig.add_subplot(1, 3, 3), {k: f.max_position[:, 1].astype(float) for k, f in samples},
                "y index of the maximum deposit")
    fig.axes[0].legend(fontsize=7)
    figs.append(
        ReportFigure(
            "hits_and_maximum",
            "Number of hits and position of the maximum",
            _png(fig),
            [("sep_power.log_n_hits", *_metric(results, "sep_power.log_n_hits")),
             ("sep_power.max_z", *_metric(results, "sep_power.max_z"))],
            "Hit threshold 3e-4 GeV of deposited energy = 0.015 raw ECAL units.",
        )
    )

    # Single-cell spectrum.
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    centres = np.sqrt(CELL_SPECTRUM_EDGES[:-1] * CELL_SPECTRUM_EDGES[1:])
    for key, f in samples:
        counts = f.cell_hist.sum(axis=0).astype(float) / max(1, f.n_events)
        ax.step(centres, np.where(counts > 0, counts, np.nan), where="mid", **SAMPLE_STYLE[key])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cell energy [raw units]")
    ax.set_ylabel("cells per event")
    ax.legend(fontsize=8)
    figs.append(
        ReportFigure(
            "cell_spectrum",
            "Single-cell energy spectrum",
            _png(fig),
            [("cell_spectrum_sep_power", *_metric(results, "cell_spectrum_sep_power"))],
            "All positive cells, per event.",
        )
    )

    # Separation power per high-level feature.
    gen_sp = {k[len("sep_power."):]: v for k, v in results["generated"]["flat"].items() if k.startswith("sep_power.")}
    noise_sp = {k[len("sep_power."):]: v for k, v in results["noise_floor"]["flat"].items() if k.startswith("sep_power.")}
    names = list(gen_sp)
    fig = Figure(figsize=(8, 0.3 * len(names) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y - 0.2, [gen_sp[n] for n in names], height=0.4, color="tab:red", label="generated vs MC")
    ax.barh(y + 0.2, [noise_sp.get(n, np.nan) for n in names], height=0.4, color="tab:blue", label="MC vs MC")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("separation power")
    ax.legend(fontsize=8)
    figs.append(
        ReportFigure(
            "separation_power",
            "Separation power of the high-level features",
            _png(fig),
            [("sep_power_mean", *_metric(results, "sep_power_mean")),
             ("classifier_auc", *_metric(results, "classifier_auc")),
             ("classifier_jsd", *_metric(results, "classifier_jsd")),
             ("classifier_voxel_auc", *_metric(results, "classifier_voxel_auc")),
             ("fpd_x1e3", *_metric(results, "fpd_x1e3")),
             ("kpd_x1e3", *_metric(results, "kpd_x1e3"))],
            "0.5 sum (h1 - h2)^2 / (h1 + h2) on unit-normalised histograms, per feature.",
        )
    )
    return figs


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


def render_html(figures: list[ReportFigure], metrics: dict) -> str:
    """One self-contained HTML page: verdict table, summary, then each figure with its side table.

    Args:
        figures: Rendered figures (embedded as base64 PNG, so the file stands alone).
        metrics: The metrics.json content (``verdict``, ``summary``, ``config``, ``versions``...).

    Returns:
        The HTML text.
    """
    verdict = metrics["verdict"]
    status = "PASSED" if verdict["passed"] else "FAILED"
    colour = "#1a7f37" if verdict["passed"] else "#b42318"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>caloforge validation report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;"
        "margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.fig{display:flex;gap:1.5em;"
        "align-items:flex-start;margin:1.5em 0;border-top:1px solid #ddd;padding-top:1em}"
        ".fig img{max-width:850px}.pass{color:#1a7f37}.fail{color:#b42318}</style></head><body>",
        "<h1>caloforge: generated vs Monte Carlo showers</h1>",
        f"<p style='font-size:20px;color:{colour}'><b>Verdict: {status}</b></p>",
        "<p>Each check passes when its value is at most what a perfect generator would score with "
        "this many events: the mean of the same metric between independent Monte Carlo samples "
        "(half A vs half B and re-drawn halves) plus <i>k</i> standard deviations, plus a margin "
        "(0 unless the thresholds file sets one). "
        f"Rules: {html.escape(str(verdict.get('thresholds', {}).get('source', '')))}.</p>",
        "<table><tr><th>check</th><th>generated vs MC</th><th>MC vs MC (noise floor)</th>"
        "<th>null mean</th><th>null sd</th><th>threshold</th><th>result</th></tr>",
    ]
    for c in verdict["checks"]:
        cls = "pass" if c["passed"] else "fail"
        parts.append(
            f"<tr><td>{html.escape(c['name'])}</td><td>{_fmt(c['value'])}</td><td>{_fmt(c['noise_floor'])}</td>"
            f"<td>{_fmt(c.get('null_mean'))}</td><td>{_fmt(c.get('null_sd'))}</td>"
            f"<td>{_fmt(c['threshold'])}</td><td class='{cls}'>{'pass' if c['passed'] else 'FAIL'}</td></tr>"
        )
    parts.append("</table>")
    counts = metrics.get("counts", {})
    if counts:
        parts.append("<p>" + ", ".join(f"{html.escape(k)}: {_fmt(v)}" for k, v in counts.items()) + "</p>")
    parts.append(selection_html(metrics))
    for fig in figures:
        b64 = base64.b64encode(fig.png).decode("ascii")
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{_fmt(g)}</td><td>{_fmt(m)}</td></tr>" for n, g, m in fig.rows
        )
        parts.append(
            f"<div class='fig' id='{fig.name}'><div><h3>{html.escape(fig.title)}</h3>"
            f"<img alt='{html.escape(fig.title)}' src='data:image/png;base64,{b64}'/>"
            f"<p>{html.escape(fig.caption)}</p></div><div><h4>metric</h4><table><tr><th>metric</th>"
            f"<th>generated vs MC</th><th>MC vs MC</th></tr>{rows}</table></div></div>"
        )
    parts.append("<h2>Configuration and versions</h2><pre>")
    parts.append(
        html.escape(json.dumps({k: metrics.get(k) for k in ("config", "seed", "versions")}, indent=2, default=str))
    )
    parts.append("</pre></body></html>")
    return "\n".join(parts)
