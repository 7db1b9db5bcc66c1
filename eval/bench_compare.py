"""`caloforge bench compare`: one table across finished runs, with the published runs beside it.

Each run contributes its benchmark.json (and, when the run folder has one, its evaluation's
metrics.json for the physics headline). Within runs of one preset, the run with the fewest
replicas is the baseline: speedup T0 / T, efficiency in its time form T0 x N0 / (N x T) and its
throughput form (X / N) / (X0 / N0) (eval.scaling), with T the time per epoch of the published
124,987-event set, so runs on different datasets compare. Cost per epoch comes from a price
table. The published 3DGAN runs (eval/reference_data: V100 and TPU) are a separate, labelled
reference table with their own speedup and efficiency within each published series; they are
never mixed into ours.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from eval.benchmark import BENCHMARK_FILE, PUBLISHED_TRAIN_EVENTS, REFERENCE_LABEL, read_reference_rows
from eval.scaling import Price, efficiency_throughput, efficiency_time, load_prices, run_cost, speedup

COMPARE_JSON = "compare.json"
COMPARE_PNG = "compare.png"


@dataclass
class RunRow:
    """One finished run in the table (None where not measured or not applicable).

    Attributes:
        name: The run (its folder's name, or the benchmark file's path).
        benchmark: Path of its benchmark.json.
        status: "measured" or why figures are withheld.
        hardware_profile: The profile it trained on, if recorded.
        device: The training hardware in words.
        preset: Model preset (runs are compared within one preset).
        replicas: Replicas in sync.
        global_batch: Showers per step.
        measured_steps: Steps the figures come from (warm-up left out).
        seconds_per_step_median: Median step time.
        showers_per_second: Training throughput.
        seconds_per_epoch: Time per epoch of the published 124,987-event set (projected).
        baseline: Name of the run the speedup is against.
        speedup: T0 / T.
        efficiency_time: T0 x N0 / (N x T).
        efficiency_throughput: (X / N) / (X0 / N0).
        usd_per_epoch: Cost of one epoch from the price table.
        cost_note: Why there is no cost, or where the price comes from.
        sampling_fraction_mre: Physics headline of the run's evaluation (generated vs Monte Carlo).
        sampling_fraction_floor: The same for Monte Carlo vs independent Monte Carlo (the noise floor).
        physics_passed: The evaluation's verdict.
    """

    name: str
    benchmark: str
    status: str
    hardware_profile: str | None = None
    device: str | None = None
    preset: str | None = None
    replicas: int = 1
    global_batch: int | None = None
    measured_steps: int | None = None
    seconds_per_step_median: float | None = None
    showers_per_second: float | None = None
    seconds_per_epoch: float | None = None
    baseline: str | None = None
    speedup: float | None = None
    efficiency_time: float | None = None
    efficiency_throughput: float | None = None
    usd_per_epoch: float | None = None
    cost_note: str = ""
    sampling_fraction_mre: float | None = None
    sampling_fraction_floor: float | None = None
    physics_passed: bool | None = None


@dataclass
class Comparison:
    """The table of our runs and, apart, the published reference rows."""

    runs: list[RunRow]
    reference: list[dict[str, Any]]
    reference_label: str = REFERENCE_LABEL
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [asdict(r) for r in self.runs],
                "published_reference": {"label": self.reference_label, "rows": self.reference},
                "epoch": f"published set, {PUBLISHED_TRAIN_EVENTS} events", "notes": self.notes}


# --------------------------------------------------------------------------- finding runs
def find_benchmarks(paths: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """(name, benchmark.json, run folder or None) for each RUN_OR_SWEEP argument.

    A path may be a benchmark.json, a folder holding one, a run folder (`benchmark/benchmark.json`
    inside) or a sweep folder holding several runs (searched below, links not followed, so a run
    folder's kfp/ links are not counted twice).

    Raises:
        FileNotFoundError: a path that does not exist or holds no benchmark.json.
    """
    found: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such run, sweep folder or benchmark.json")
        if os.path.isfile(path):
            files = [path]
        elif os.path.isfile(os.path.join(path, BENCHMARK_FILE)):
            files = [os.path.join(path, BENCHMARK_FILE)]
        else:
            files = sorted(os.path.join(d, BENCHMARK_FILE) for d, _, names in os.walk(path) if BENCHMARK_FILE in names)
        if not files:
            raise FileNotFoundError(f"{path}: no {BENCHMARK_FILE} in it or below (is the run finished?)")
        for f in files:
            real = os.path.realpath(f)
            if real in seen:
                continue
            seen.add(real)
            parent = os.path.dirname(os.path.abspath(f))
            run_dir = os.path.dirname(parent) if os.path.basename(parent) == "benchmark" else None
            name = os.path.basename(run_dir) if run_dir else os.path.relpath(f)
            found.append((name, f, run_dir))
    return found


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def run_row(name: str, bench_path: str, run_dir: str | None, prices: dict[str, Price]) -> RunRow:
    """The table row of one benchmark.json (and its run's metrics.json, if any)."""
    bench = _read_json(bench_path)
    if "showers_per_second" not in bench and "status" not in bench:
        raise ValueError(f"{bench_path}: not a caloforge benchmark.json (no status, no showers_per_second)")
    fp = bench.get("fingerprint") or {}
    trainer = fp.get("trainer") or {}
    status = bench.get("status", "measured")
    row = RunRow(
        name=name, benchmark=bench_path, status=status if status == "measured" else str(bench.get("withheld") or status),
        hardware_profile=fp.get("hardware_profile"), device=trainer.get("device_summary") or bench.get("trainer_device"),
        preset=fp.get("preset") or (bench.get("trainer_summary") or {}).get("extra", {}).get("preset"),
        replicas=int(bench.get("replicas") or 1), global_batch=bench.get("global_batch"),
        measured_steps=bench.get("measured_steps"),
    )
    if status == "measured":
        row.seconds_per_step_median = bench.get("seconds_per_step_median", bench.get("seconds_per_step_p50"))
        row.showers_per_second = bench.get("showers_per_second")
        row.seconds_per_epoch = bench.get("seconds_per_epoch_published_set")
    cost = run_cost(row.seconds_per_epoch, row.hardware_profile, prices)
    row.usd_per_epoch = cost["usd_per_epoch"]
    row.cost_note = cost.get("why") or cost.get("price_source", "")
    metrics_path = os.path.join(run_dir, "evaluation", "metrics.json") if run_dir else None
    if metrics_path and os.path.isfile(metrics_path):
        summary = _read_json(metrics_path).get("summary") or {}
        row.sampling_fraction_mre = (summary.get("generated") or {}).get("sampling_fraction_mre")
        row.sampling_fraction_floor = (summary.get("noise_floor") or {}).get("sampling_fraction_mre")
        row.physics_passed = summary.get("passed")
    return row


def add_scaling(rows: list[RunRow]) -> None:
    """Speedup and efficiency of each measured row against the fewest-replica run of its preset
    (the first given among equals)."""
    by_preset: dict[Any, list[RunRow]] = {}
    for row in rows:
        if row.status == "measured" and row.seconds_per_epoch and row.showers_per_second:
            by_preset.setdefault(row.preset, []).append(row)
    for group in by_preset.values():
        base = min(group, key=lambda r: r.replicas)
        for row in group:
            row.baseline = base.name
            row.speedup = speedup(base.seconds_per_epoch, row.seconds_per_epoch)
            row.efficiency_time = efficiency_time(base.seconds_per_epoch, base.replicas, row.seconds_per_epoch,
                                                  row.replicas)
            row.efficiency_throughput = efficiency_throughput(base.showers_per_second, base.replicas,
                                                              row.showers_per_second, row.replicas)


def reference_series(path: str = "") -> list[dict[str, Any]]:
    """The published rows that form scaling series (same device, batch per replica, prefetch and
    cache; default node layout), each with speedup and efficiency against its smallest run."""
    series: dict[tuple, dict[int, dict]] = {}
    for row in read_reference_rows(path):
        if row.get("nodes"):  # the node-layout study: same replica count, other layouts
            continue
        key = (row["device"], row["batch_size_per_replica"], row["prefetch"], row["cache"])
        best = series.setdefault(key, {})
        if row["replicas"] not in best or row["seconds_per_epoch"] < best[row["replicas"]]["seconds_per_epoch"]:
            best[row["replicas"]] = row
    out = []
    for (device, batch, prefetch, cache), by_replicas in series.items():
        if len(by_replicas) < 2:
            continue
        base = by_replicas[min(by_replicas)]
        for replicas in sorted(by_replicas):
            row = by_replicas[replicas]
            out.append({
                "series": f"{device} b{batch} prefetch={prefetch} cache={cache}", "device": device,
                "replicas": replicas, "batch_size_per_replica": batch, "global_batch": row["global_batch"],
                "seconds_per_epoch": row["seconds_per_epoch"], "showers_per_second": row["showers_per_second"],
                "speedup": speedup(base["seconds_per_epoch"], row["seconds_per_epoch"]),
                "efficiency_time": efficiency_time(base["seconds_per_epoch"], base["replicas"], row["seconds_per_epoch"],
                                                   replicas),
                "efficiency_throughput": efficiency_throughput(base["showers_per_second"], base["replicas"],
                                                               row["showers_per_second"], replicas),
                "baseline_replicas": base["replicas"],
            })
    return out


def compare(paths: Sequence[str], prices_path: str = "", reference_csv: str = "") -> Comparison:
    """The comparison of the runs found under `paths` (see find_benchmarks).

    Raises:
        FileNotFoundError: a path without a benchmark.json, or a missing price table.
        ValueError: a file that is not a benchmark.json, or a bad price table.
    """
    prices = load_prices(prices_path)
    rows = [run_row(name, path, run_dir, prices) for name, path, run_dir in find_benchmarks(paths)]
    add_scaling(rows)
    notes = ["epoch = the published 124,987-event set, projected from each run's mean step time",
             "speedup and efficiency are within one preset, against its run with the fewest replicas"]
    if len({r.preset for r in rows}) > 1:
        notes.append("several presets: each is compared with its own baseline, never across presets")
    return Comparison(runs=rows, reference=reference_series(reference_csv), notes=notes)


# --------------------------------------------------------------------------- text and plot
def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return lines


def render_text(comparison: Comparison) -> str:
    """Our runs, then the published reference table under its label."""
    header = ["run", "profile", "device", "preset", "replicas", "batch", "steps", "s/step (median)", "showers/s",
              "s/epoch*", "speedup", "eff T", "eff X", "$/epoch*", "SF MRE (floor)", "physics"]
    rows = []
    for r in comparison.runs:
        physics = (f"{_fmt(r.sampling_fraction_mre, '.3g')} ({_fmt(r.sampling_fraction_floor, '.3g')})"
                   if r.sampling_fraction_mre is not None else "-")
        rows.append([r.name, _fmt(r.hardware_profile), _fmt(r.device), _fmt(r.preset), str(r.replicas),
                     _fmt(r.global_batch), _fmt(r.measured_steps), _fmt(r.seconds_per_step_median),
                     _fmt(r.showers_per_second), _fmt(r.seconds_per_epoch), _fmt(r.speedup, ".3g"),
                     _fmt(r.efficiency_time, ".3f"), _fmt(r.efficiency_throughput, ".3f"),
                     _fmt(r.usd_per_epoch, ".3g"), physics, _fmt(r.physics_passed)])
    lines = ["our runs (measured by caloforge)"] + _table(header, rows)
    withheld = [r for r in comparison.runs if r.status != "measured"]
    for r in withheld:
        lines.append(f"  {r.name}: {r.status}")
    lines.append("  * " + "; ".join(comparison.notes) + ". eff T = T0 x N0 / (N x T), eff X = (X/N) / (X0/N0); "
                 "SF MRE = sampling-fraction mean relative error, generated vs Monte Carlo (floor: MC vs MC).")
    uncosted = sorted({r.cost_note for r in comparison.runs if r.usd_per_epoch is None and r.cost_note})
    priced = sorted({r.cost_note for r in comparison.runs if r.usd_per_epoch is not None})
    for note in priced:
        lines.append(f"  prices: {note}")
    for note in uncosted:
        lines.append(f"  no cost: {note}")
    lines.append("")
    lines.append(comparison.reference_label)
    ref_rows = [[s["series"], str(s["replicas"]), str(s["global_batch"]), _fmt(s["seconds_per_epoch"]),
                 _fmt(s["showers_per_second"]), _fmt(s["speedup"], ".3g"), _fmt(s["efficiency_time"], ".3f"),
                 _fmt(s["efficiency_throughput"], ".3f")] for s in comparison.reference]
    lines += _table(["published series (NOT ours)", "replicas", "batch", "s/epoch", "showers/s", "speedup", "eff T",
                     "eff X"], ref_rows)
    return "\n".join(lines)


def plot(comparison: Comparison, path: str) -> str:
    """compare.png: speedup vs replicas with the ideal line, and time per epoch vs replicas; ours
    as filled markers, the published series as grey open markers labelled `published`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    ax_s, ax_t = fig.subplots(1, 2)
    measured = [r for r in comparison.runs if r.speedup is not None]
    groups: dict[str, list[dict]] = {}
    for s in comparison.reference:
        groups.setdefault(s["series"], []).append(s)
    top = 2.0
    for k, (series, points) in enumerate(groups.items()):
        n0 = points[0]["baseline_replicas"]
        xs = [p["replicas"] / n0 for p in points]
        top = max(top, *xs)
        style = {"marker": "o^vDs"[k % 5], "linestyle": "--", "color": ("0.35", "0.55", "0.7")[k % 3], "mfc": "none",
                 "label": f"published {series}"}
        ax_s.plot(xs, [p["speedup"] for p in points], **style)
        ax_t.plot([p["replicas"] for p in points], [p["seconds_per_epoch"] for p in points], **style)
    by_preset: dict[Any, list[RunRow]] = {}
    for r in measured:
        by_preset.setdefault(r.preset, []).append(r)
    for preset, rows in by_preset.items():
        rows = sorted(rows, key=lambda r: r.replicas)
        n0 = min(r.replicas for r in rows)
        top = max(top, *(r.replicas / n0 for r in rows))
        ax_s.plot([r.replicas / n0 for r in rows], [r.speedup for r in rows], "s-", label=f"ours, preset {preset}")
        ax_t.plot([r.replicas for r in rows], [r.seconds_per_epoch for r in rows], "s-", label=f"ours, preset {preset}")
    ideal = [1, top]
    ax_s.plot(ideal, ideal, "k:", label="ideal (linear)")
    ax_s.set(xlabel="replicas / baseline replicas", ylabel="speedup T0 / T", xscale="log", yscale="log",
             title="speedup vs replicas")
    ax_t.set(xlabel="replicas", ylabel=f"seconds per epoch ({PUBLISHED_TRAIN_EVENTS:,} events)", xscale="log",
             yscale="log", title="time per epoch")
    for ax in (ax_s, ax_t):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_outputs(comparison: Comparison, output_dir: str) -> dict[str, str]:
    """compare.png, then compare.json (last: its presence says the folder is complete)."""
    os.makedirs(output_dir, exist_ok=True)
    png = plot(comparison, os.path.join(output_dir, COMPARE_PNG))
    out = os.path.join(output_dir, COMPARE_JSON)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(comparison.to_dict(), fh, indent=2, allow_nan=False)
    os.replace(tmp, out)
    return {"json": out, "plot": png}
