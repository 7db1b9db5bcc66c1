"""Drawing helpers shared by the report's figures: honest histograms, per-bin statistics, ratios.

Rules every figure follows:
- integer features (hits, cell indices) are binned on integers: edges at half-integers, each bin
  holding the same whole number of values;
- values outside a histogram's axis are never folded into its edge bins: they stay out of the
  bins (the normalisation still counts them, so the missing area shows) and a triangle at the
  edge with its count marks them, with a line in the figure's warnings;
- the Monte Carlo reference carries a band of its own statistical uncertainty (+-1 standard
  error), which ratio panels show around 1;
- a bin with fewer than ``LOW_STATS_EVENTS`` events is drawn hollow and named in the warnings.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from eval.report_inputs import Sample

LOW_STATS_EVENTS = 100
"""Below this many events a per-bin mean is drawn hollow and the figure warns: its relative
statistical error (~1/sqrt(n) of the spread) is then comparable to the effects the report looks for."""

RATIO_LIMITS = (0.5, 1.5)


def png_bytes(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (no bbox tightening: it costs a second render)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def fixed_layout(fig: Figure, left_in: float = 0.8, right_in: float = 0.2, bottom_in: float = 0.6,
                 top_in: float = 0.4, wspace: float = 0.32, hspace: float = 0.5) -> None:
    """Margins in inches, without matplotlib's layout engines (tight_layout costs a full draw)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left_in / w, right=1 - right_in / w, bottom=bottom_in / h, top=1 - top_in / h,
                        wspace=wspace, hspace=hspace)


def finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def auto_bins(values: list[np.ndarray], most: int = 60) -> int:
    """Bins for the smallest sample: about 2 sqrt(n), between 10 and ``most`` (fewer bins, less noise)."""
    n = min((finite(v).size for v in values), default=0)
    return int(max(10, min(most, round(2 * math.sqrt(max(n, 1))))))


def integer_edges(values: list[np.ndarray], max_bins: int | None = None) -> np.ndarray:
    """Edges at half-integers spanning every value, each bin the same whole number of integers wide.

    Integer features must not be binned on a float grid: bins would hold 0, 1 or 2 integers each
    and the histogram would show a comb that is not in the data.
    """
    max_bins = max_bins or auto_bins(values)
    pooled = np.concatenate([finite(v) for v in values]) if values else np.zeros(0)
    if pooled.size == 0:
        return np.arange(-0.5, 1.0, 1.0)
    lo, hi = int(math.floor(pooled.min())), int(math.ceil(pooled.max()))
    width = max(1, math.ceil((hi - lo + 1) / max_bins))
    return lo - 0.5 + width * np.arange(math.ceil((hi - lo + 1) / width) + 1)


def float_edges(values: list[np.ndarray], bins: int | None = None, lo_pct: float = 0.5,
                hi_pct: float = 99.5) -> np.ndarray:
    """Edges over the pooled samples' lo_pct to hi_pct percentiles (outliers are marked, not binned)."""
    bins = bins or auto_bins(values, most=40)
    pooled = np.concatenate([finite(v) for v in values]) if values else np.zeros(0)
    if pooled.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    lo, hi = np.percentile(pooled, [lo_pct, hi_pct])
    if not hi > lo:
        lo, hi = pooled.min() - 0.5, pooled.max() + 0.5
    return np.linspace(lo, hi, bins + 1)


@dataclass
class Flow:
    """Values of one sample that fall outside a histogram's axis, and those that are not finite."""

    label: str
    below: int
    above: int
    missing: int
    total: int


def draw_histograms(ax, samples: list[tuple[Sample, np.ndarray]], edges: np.ndarray, xlabel: str,
                    logy: bool = False) -> list[str]:
    """Unit-area step histograms with the reference's +-1 sigma band and out-of-axis markers.

    Each histogram is normalised to the sample's finite values, so values outside the axis
    leave area missing; they are counted at the axis edges by triangles (left: below, right:
    above) in the sample's colour.

    Returns:
        Warnings (one per sample with values outside the axis or without a value).
    """
    width = np.diff(edges)
    warnings: list[str] = []
    flows: list[tuple[Sample, Flow]] = []
    for sample, values in samples:
        v = np.asarray(values, dtype=np.float64)
        ok = v[np.isfinite(v)]
        flow = Flow(sample.label, int((ok < edges[0]).sum()), int((ok > edges[-1]).sum()), int(v.size - ok.size), int(v.size))
        flows.append((sample, flow))
        if ok.size == 0:
            continue
        counts = np.histogram(ok, bins=edges)[0].astype(np.float64)
        dens = counts / ok.size / width
        ax.stairs(dens, edges, label=sample.label, linewidth=1.3, **sample.style)
        if sample.key == "reference":
            err = np.sqrt(counts) / ok.size / width
            ax.stairs(dens + err, edges, baseline=dens - err, fill=True, color="black", alpha=0.15, linewidth=0)
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    row = 0
    for sample, flow in flows:
        for count, x, marker, side in ((flow.below, edges[0], "<", "below"), (flow.above, edges[-1], ">", "above")):
            if count:
                y = 0.93 - 0.07 * row
                ax.plot([x], [y], marker=marker, color=sample.style["color"], markersize=7, transform=trans, clip_on=False)
                ax.annotate(str(count), (x, y), xycoords=trans, xytext=(6 if side == "below" else -6, 0),
                            textcoords="offset points", color=sample.style["color"], fontsize=7, va="center",
                            ha="left" if side == "below" else "right")
                row += 1
        if flow.below or flow.above:
            warnings.append(f"{xlabel}: {flow.label} has {flow.below} value(s) below and {flow.above} above the "
                            f"axis [{edges[0]:.4g}, {edges[-1]:.4g}] (of {flow.total}; marked by triangles, not binned)")
        if flow.missing:
            warnings.append(f"{xlabel}: {flow.label} has no value for {flow.missing} of {flow.total} events "
                            f"(empty showers); they are left out")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction per unit")
    if logy:
        ax.set_yscale("log")
    return warnings


@dataclass
class BinStat:
    """Mean of one quantity in one bin, with its standard error and event count."""

    x: float
    mean: float
    err: float
    n: int


def bin_means(x: np.ndarray, y: np.ndarray, bins: list[tuple[float, float]]) -> list[BinStat]:
    """Mean and standard error of y for events with lo <= x < hi, bin by bin (NaN below 2 events)."""
    out = []
    for lo, hi in bins:
        sel = (x >= lo) & (x < hi)
        v = np.asarray(y, dtype=np.float64)[sel]
        ok = np.isfinite(v)
        v = v[ok]
        xs = np.asarray(x, dtype=np.float64)[sel][ok]
        n = int(v.size)
        mean = float(v.mean()) if n else math.nan
        err = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        out.append(BinStat(float(xs.mean()) if n else (lo + hi) / 2, mean, err, n))
    return out


def bin_resolutions(x: np.ndarray, y: np.ndarray, bins: list[tuple[float, float]]) -> list[BinStat]:
    """Relative spread R = sd(y) / mean(y) per bin with its standard error.

    The error is R sqrt(1 / (2 (n - 1)) + R^2 / n): the relative errors of a Gaussian sample's
    standard deviation and of its mean, added in quadrature (the two are uncorrelated for a
    symmetric distribution).
    """
    out = []
    for lo, hi in bins:
        sel = (x >= lo) & (x < hi)
        v = finite(np.asarray(y)[sel])
        xs = finite(np.asarray(x)[sel])
        n = int(v.size)
        if n > 2 and v.mean() != 0:
            r = float(v.std(ddof=1) / v.mean())
            err = abs(r) * math.sqrt(1.0 / (2 * (n - 1)) + r * r / n)
        else:
            r, err = math.nan, math.nan
        out.append(BinStat(float(xs.mean()) if xs.size else (lo + hi) / 2, r, err, n))
    return out


def draw_points(ax, stats: list[BinStat], sample: Sample, offset: float = 0.0,
                divide_by: list[BinStat] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Error-bar points (hollow where a bin has fewer than LOW_STATS_EVENTS events).

    With ``divide_by``, each point is divided by the reference's mean in the same bin (a ratio
    panel); the error bar is then the sample's own error only, since the reference's error is
    the band drawn around 1.
    """
    xs, ys, es, hollow = [], [], [], []
    for i, s in enumerate(stats):
        if s.n < 2 or not math.isfinite(s.mean):
            continue
        denom = 1.0
        if divide_by is not None:
            denom = divide_by[i].mean
            if not (math.isfinite(denom) and denom != 0):
                continue
        xs.append(s.x * (1 + offset))
        ys.append(s.mean / denom)
        es.append(s.err / abs(denom) if math.isfinite(s.err) else 0.0)
        hollow.append(s.n < LOW_STATS_EVENTS)
    colour = sample.style["color"]
    for want_hollow in (False, True):
        idx = [i for i, h in enumerate(hollow) if h == want_hollow]
        if not idx:
            continue
        ax.errorbar([xs[i] for i in idx], [ys[i] for i in idx], yerr=[es[i] for i in idx], fmt="o", markersize=4,
                    color=colour, mfc="white" if want_hollow else colour, capsize=2,
                    label=sample.label if not want_hollow or len(idx) == len(xs) else None)
    if len(xs) > 1:
        ax.plot(xs, ys, color=colour, linestyle=sample.style.get("linestyle", "-"), linewidth=0.8, alpha=0.7)
    return np.asarray(xs), np.asarray(ys), colour


def reference_band(ax, stats: list[BinStat], ratio: bool) -> None:
    """The reference's +-1 standard error as a grey band (around 1 in a ratio panel)."""
    pts = [s for s in stats if s.n > 1 and math.isfinite(s.mean) and math.isfinite(s.err) and s.mean != 0]
    if not pts:
        return
    x = [s.x for s in pts]
    if ratio:
        lo = [1 - s.err / abs(s.mean) for s in pts]
        hi = [1 + s.err / abs(s.mean) for s in pts]
    else:
        lo = [s.mean - s.err for s in pts]
        hi = [s.mean + s.err for s in pts]
    ax.fill_between(x, lo, hi, color="black", alpha=0.15, linewidth=0, label="MC A +-1 s.e.")


def clip_ratio_axis(ax, series: list[tuple[np.ndarray, np.ndarray, str]],
                    limits: tuple[float, float] = RATIO_LIMITS) -> int:
    """Fix a ratio panel's y range; points of ``series`` (x, y, colour) beyond it get an edge marker.

    Returns:
        How many points lie outside the range.
    """
    lo, hi = limits
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    outside = 0
    for x, y, colour in series:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        out = np.isfinite(y) & ((y > hi) | (y < lo))
        for xi, yi in zip(x[out], y[out]):
            above = yi > hi
            ax.plot([xi], [0.95 if above else 0.05], marker="^" if above else "v", color=colour,
                    transform=trans, clip_on=False, markersize=5, linestyle="none")
        outside += int(out.sum())
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_ylim(lo, hi)
    ax.set_ylabel("ratio to MC A")
    return outside


def warn_text(ax, text: str) -> None:
    """A visible red note inside a panel (e.g. too few events for it)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#b42318", fontsize=9, wrap=True)
