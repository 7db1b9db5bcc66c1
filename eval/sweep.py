"""The scaling sweep's table: one row per sweep point, from its benchmark and its evaluation.

The sweep DAG (pipelines/sweep.py) trains one configuration on several hardware profiles or
replica counts; its fan-in (components/sweep.py) hands this module every point's benchmark and
evaluation folder. The rows, speedup, efficiency (time and throughput forms), cost per epoch
and physics headline are eval.bench_compare's, computed over the sweep folder written here, so
`caloforge bench compare SWEEP` gives the same table again (with another price table, say).

The folders arrive in the order the backend collected them; they are matched by what they
record, never by position: a benchmark names its hardware profile (one per point) and the
training folder it read, an evaluation the generator it judged (inside that training folder).

The sweep folder:

    points/NAME/benchmark/   benchmark.json, benchmark.mllog (copies)
    points/NAME/evaluation/  metrics.json, report.html (copies)
    points/NAME/point.json   the point's settings and where its full outputs are
    prices.yaml              the price table given (absent: the packaged defaults)
    sweep.csv, sweep.md      the table (ours only; the markdown adds the published series apart)
    scaling.png              speedup vs replicas with the ideal line, and time per epoch
    index.html               table, plot and notes in one page
    sweep.json               everything above as data; written last, so the folder is complete
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from dataclasses import asdict
from typing import Any, Mapping, Sequence

from eval.bench_compare import Comparison, RunRow, compare, plot
from eval.benchmark import BENCHMARK_FILE, MLLOG_FILE, PUBLISHED_TRAIN_EVENTS

SWEEP_JSON = "sweep.json"
SWEEP_CSV = "sweep.csv"
SWEEP_MD = "sweep.md"
SWEEP_HTML = "index.html"
SWEEP_PNG = "scaling.png"
PRICES_FILE = "prices.yaml"
POINTS_DIR = "points"
POINT_JSON = "point.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"

#: The table's columns: (key, header). Keys are RunRow fields or the extras `table_rows` adds.
COLUMNS = (
    ("point", "point"), ("hardware_profile", "profile"), ("device", "device"), ("preset", "preset"),
    ("replicas", "replicas"), ("cpu_logical_devices", "logical CPUs"), ("global_batch", "global batch"),
    ("measured_steps", "measured steps"), ("seconds_per_step_median", "s/step (median)"),
    ("showers_per_second", "showers/s"), ("seconds_per_epoch_this_dataset", "s/epoch (this dataset)"),
    ("seconds_per_epoch", f"s/epoch ({PUBLISHED_TRAIN_EVENTS:,} events)"), ("speedup", "speedup"),
    ("efficiency_time", "efficiency (time)"), ("efficiency_throughput", "efficiency (throughput)"),
    ("usd_per_epoch", "$/epoch"), ("sampling_fraction_mre", "SF MRE"),
    ("sampling_fraction_floor", "SF MRE floor (MC vs MC)"), ("physics_passed", "physics verdict"),
    ("status", "status"),
)


def _uri():
    from data_prep import uri

    return uri


def _read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(_uri().read_bytes(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _norm(path: str) -> str:
    return str(path or "").rstrip("/")


def match_outputs(points: Sequence[Mapping[str, Any]], benchmarks: Sequence[str],
                  evaluations: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each point's benchmark and evaluation folder, matched by their records.

    Args:
        points: The sweep points (each with `point`, its name, and `hardware_profile`).
        benchmarks: Benchmark folders (each holding benchmark.json).
        evaluations: Evaluation folders (each holding metrics.json).

    Returns:
        point name -> {"benchmark": folder, "evaluation": folder or None, "model": training folder}.

    Raises:
        ValueError: a point without a benchmark, or two benchmarks of one point.
    """
    uri = _uri()
    by_profile: dict[str, list[tuple[str, dict]]] = {}
    for folder in benchmarks:
        bench = _read_json(uri.join(folder, BENCHMARK_FILE))
        profile = (bench.get("fingerprint") or {}).get("hardware_profile") or ""
        by_profile.setdefault(profile, []).append((folder, bench))
    judged: dict[str, str] = {}
    for folder in evaluations:
        path = uri.join(folder, METRICS_FILE)
        if not uri.exists(path):
            continue  # an evaluation that wrote no metrics: the row shows no physics
        generator_dir = _norm((_read_json(path).get("config") or {}).get("generator_dir", ""))
        judged[generator_dir.rsplit("/", 1)[0]] = folder
    out: dict[str, dict[str, Any]] = {}
    for point in points:
        found = by_profile.get(point["hardware_profile"], [])
        if len(found) != 1:
            raise ValueError(f"sweep point {point['point']!r}: {len(found)} benchmarks record hardware profile "
                             f"{point['hardware_profile']!r} (expected one)")
        folder, bench = found[0]
        model = _norm((bench.get("config") or {}).get("train_dir", ""))
        out[point["point"]] = {"benchmark": folder, "evaluation": judged.get(model), "model": model}
    return out


def write_point_folders(points: Sequence[Mapping[str, Any]], matched: Mapping[str, Mapping[str, Any]],
                        output_dir: str) -> None:
    """points/NAME/{benchmark,evaluation}/ copies and point.json, as `bench compare` reads a run."""
    uri = _uri()
    for point in points:
        name = point["point"]
        sources = matched[name]
        folder = os.path.join(output_dir, POINTS_DIR, name)
        copies = [("benchmark", sources["benchmark"], (BENCHMARK_FILE, MLLOG_FILE))]
        if sources["evaluation"]:
            copies.append(("evaluation", sources["evaluation"], (METRICS_FILE, REPORT_FILE)))
        for stage, src, names in copies:
            os.makedirs(os.path.join(folder, stage), exist_ok=True)
            for file_name in names:
                if uri.exists(uri.join(src, file_name)):
                    with open(os.path.join(folder, stage, file_name), "wb") as f:
                        f.write(uri.read_bytes(uri.join(src, file_name)))
        record = {"point": dict(point), "sources": dict(sources)}
        with open(os.path.join(folder, POINT_JSON), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)


def table_rows(comparison: Comparison, points: Sequence[Mapping[str, Any]], output_dir: str) -> list[dict[str, Any]]:
    """One dict per point in sweep order: the RunRow's fields plus the point's own settings and
    the time per epoch of the dataset it trained on."""
    by_name = {r.name: r for r in comparison.runs}
    rows = []
    for point in points:
        row: RunRow | None = by_name.get(point["point"])
        if row is None:
            raise ValueError(f"sweep point {point['point']!r}: no row in the comparison")
        bench_path = os.path.join(output_dir, POINTS_DIR, point["point"], "benchmark", BENCHMARK_FILE)
        with open(bench_path, encoding="utf-8") as f:
            bench = json.load(f)
        rows.append({**asdict(row), "point": point["point"],
                     "cpu_logical_devices": point.get("cpu_logical_devices", 0),
                     "seconds_per_epoch_this_dataset": bench.get("seconds_per_epoch"),
                     "train_events": bench.get("train_events")})
    return rows


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float):
        return format(value, ".3f" if key.startswith("efficiency") else ".4g")
    return str(value)


def render_markdown(rows: Sequence[Mapping[str, Any]], comparison: Comparison, notes: Sequence[str]) -> str:
    """Our table, its notes, then the published series under their label (never among ours)."""
    def md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
        return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body])

    lines = ["# caloforge scaling sweep", ""]
    lines += md_table([h for _, h in COLUMNS], [[_cell(r.get(k), k) for k, _ in COLUMNS] for r in rows])
    lines += [""] + [f"- {n}" for n in notes] + ["", f"## {comparison.reference_label}", ""]
    lines += md_table(["published series (NOT ours)", "replicas", "s/epoch", "showers/s", "speedup", "efficiency T",
                       "efficiency X"],
                      [[s["series"], str(s["replicas"]), _cell(s["seconds_per_epoch"], ""),
                        _cell(s["showers_per_second"], ""), _cell(s["speedup"], ""),
                        _cell(s["efficiency_time"], "efficiency"), _cell(s["efficiency_throughput"], "efficiency")]
                       for s in comparison.reference])
    return "\n".join(lines) + "\n"


def render_text(rows: Sequence[Mapping[str, Any]], notes: Sequence[str]) -> str:
    """The table for a terminal (what `caloforge run --local --pipeline sweep` prints)."""
    from eval.bench_compare import _table

    lines = _table([h for _, h in COLUMNS], [[_cell(r.get(k), k) for k, _ in COLUMNS] for r in rows])
    return "\n".join(lines + [f"  * {n}" for n in notes])


def render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as CSV: one row per point, machine-readable values (empty where none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([k for k, _ in COLUMNS])
    for r in rows:
        writer.writerow(["" if r.get(k) is None else r.get(k) for k, _ in COLUMNS])
    return buffer.getvalue()


def render_html(rows: Sequence[Mapping[str, Any]], notes: Sequence[str], png: bytes, comparison: Comparison) -> str:
    """index.html: the table, the plot (embedded, so the Vertex AI and Kubeflow UIs show it inline),
    the notes, links to each point's evaluation report, and the published series apart."""
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(k), k))}</td>" for k, _ in COLUMNS) + "</tr>"
                   for r in rows)
    links = "".join(f'<li><a href="{POINTS_DIR}/{html.escape(r["point"])}/evaluation/{REPORT_FILE}">'
                    f'{html.escape(r["point"])}: physics report</a></li>' for r in rows)
    ref = "".join(f"<tr><td>{html.escape(s['series'])}</td><td>{s['replicas']}</td>"
                  f"<td>{_cell(s['seconds_per_epoch'], '')}</td><td>{_cell(s['speedup'], '')}</td>"
                  f"<td>{_cell(s['efficiency_time'], 'efficiency')}</td></tr>" for s in comparison.reference)
    image = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>caloforge scaling sweep</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style></head>
<body><h1>caloforge scaling sweep</h1>
<table><tr>{head}</tr>{body}</table>
<ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes)}</ul>
<img alt="speedup vs replicas and time per epoch" src="data:image/png;base64,{image}" style="max-width:100%">
<h2>Physics reports</h2><ul>{links}</ul>
<h2>{html.escape(comparison.reference_label)}</h2>
<table><tr><th>published series (NOT ours)</th><th>replicas</th><th>s/epoch</th><th>speedup</th><th>efficiency T</th></tr>
{ref}</table></body></html>
"""


def sweep_notes(rows: Sequence[Mapping[str, Any]], comparison: Comparison) -> list[str]:
    """What the figures are: the comparison's notes, then what this sweep's rows need said."""
    notes = list(comparison.notes)
    notes.append("speedup T0 / T and efficiency, time form T0 x N0 / (N x T) (T(1) / (N x T(N)) from one replica) and "
                 "throughput form (X / N) / (X0 / N0) with X the showers/s, are against the point with the fewest "
                 "replicas (T0, X0 on N0); 1.0 is linear scaling")
    notes.append("SF MRE: sampling-fraction mean relative error over energy bins, generated vs Monte Carlo; its "
                 "floor is Monte Carlo vs an independent Monte Carlo sample of the same size. A faster point whose "
                 "SF MRE stands far above the others' has broken the physics")
    if any((r.get("cpu_logical_devices") or 0) > 1 for r in rows):
        notes.append("logical CPU devices share the same cores: those rows test the multi-replica code, not speed "
                     "(a speedup below 1 is expected there)")
    for r in rows:
        if r.get("status") != "measured":
            notes.append(f"{r['point']}: no figures: {r.get('status')}")
        if r.get("usd_per_epoch") is None and r.get("cost_note"):
            notes.append(f"{r['point']}: no cost: {r['cost_note']}")
    priced = sorted({r["cost_note"] for r in rows if r.get("usd_per_epoch") is not None and r.get("cost_note")})
    notes += [f"prices: {p}" for p in priced]
    return notes


def _write(path: str, data: str | bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def summarize(points: Sequence[Mapping[str, Any]], benchmarks: Sequence[str], evaluations: Sequence[str],
              output_dir: str, prices_yaml: str = "") -> dict[str, Any]:
    """Writes the sweep folder (see the module docstring) and returns sweep.json's content.

    Args:
        points: The sweep points, in sweep order (pipelines.sweep.SweepPoint.item()).
        benchmarks: Every point's benchmark folder (local or gs://), in any order.
        evaluations: Every point's evaluation folder, in any order.
        output_dir: A local folder (the fan-in's output artifact).
        prices_yaml: Text of a price table `profiles: {NAME: {usd_per_device_hour: X, devices: N}}`
            laid over the packaged defaults ("" = the defaults alone).

    Raises:
        ValueError: a point without its benchmark, an unreadable record or price table.
    """
    os.makedirs(output_dir, exist_ok=True)
    for marker in (SWEEP_JSON, SWEEP_HTML):  # written last: none is left from an earlier attempt
        if os.path.exists(os.path.join(output_dir, marker)):
            os.remove(os.path.join(output_dir, marker))
    matched = match_outputs(points, benchmarks, evaluations)
    write_point_folders(points, matched, output_dir)
    prices_path = ""
    if prices_yaml.strip():
        prices_path = os.path.join(output_dir, PRICES_FILE)
        _write(prices_path, prices_yaml)
    comparison = compare([os.path.join(output_dir, POINTS_DIR)], prices_path=prices_path)
    rows = table_rows(comparison, points, output_dir)
    notes = sweep_notes(rows, comparison)
    plot(comparison, os.path.join(output_dir, SWEEP_PNG))
    with open(os.path.join(output_dir, SWEEP_PNG), "rb") as f:
        png = f.read()
    _write(os.path.join(output_dir, SWEEP_CSV), render_csv(rows))
    _write(os.path.join(output_dir, SWEEP_MD), render_markdown(rows, comparison, notes))
    result = {"sweep_version": 1, "points": [dict(p) for p in points], "rows": rows, "notes": notes,
              "sources": matched, "comparison": comparison.to_dict(),
              "prices": PRICES_FILE if prices_path else "packaged defaults (eval/reference_data/device_prices.yaml)",
              "files": {"csv": SWEEP_CSV, "markdown": SWEEP_MD, "plot": SWEEP_PNG, "html": SWEEP_HTML}}
    _write(os.path.join(output_dir, SWEEP_HTML), render_html(rows, notes, png, comparison))
    _write(os.path.join(output_dir, SWEEP_JSON), json.dumps(result, indent=2, allow_nan=False, default=str))
    return result
