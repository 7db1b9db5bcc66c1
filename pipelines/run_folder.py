"""Collects a finished local DAG run into one run folder with an index.html a person can open."""

from __future__ import annotations

import html
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

# Each stage's artifact is moved under this name; order is the DAG's order.
STAGE_FOLDERS = ("raw_data", "tfrecords", "model", "evaluation", "benchmark")


@dataclass
class RunSummary:
    """What one local run produced, recorded as run.json beside index.html.

    Attributes:
        run_dir: the run folder.
        stages: stage name -> folder (relative to run_dir) holding that stage's outputs.
        parameters: the pipeline parameters the run used.
        seconds: wall time of the DAG.
        passed: the evaluator's verdict, or None when the evaluator wrote none.
        metrics: headline figures shown on the index page.
        publication: the gate's record: `{"published": True, "name", "destination", ...}` or
            `{"published": False, "reason"}`; None when the DAG had no gate.
    """

    run_dir: str
    stages: dict[str, str]
    parameters: dict[str, Any]
    seconds: float
    passed: bool | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    publication: dict[str, Any] | None = None


#: Where a model published into the run's own artifact (models_uri empty) is moved.
MODELS_FOLDER = "models"


def _move_artifact(src: str, dst: str) -> None:
    """Moves (renames, within one file system) a stage's artifact folder or file to dst/.

    A symbolic link is left at the old place: the stages' own records (benchmark.json's inputs,
    kfp's executor outputs) name the kfp.local paths, and those keep resolving.
    """
    if os.path.isdir(src):
        shutil.move(src, dst)
        os.symlink(os.path.abspath(dst), src, target_is_directory=True)
    elif os.path.isfile(src):
        os.makedirs(dst, exist_ok=True)
        moved = os.path.join(dst, os.path.basename(src))
        shutil.move(src, moved)
        os.symlink(os.path.abspath(moved), src)
    else:
        raise FileNotFoundError(f"stage output {src!r} is missing: the stage did not write its artifact")


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _find(root: str, name: str) -> str | None:
    """First file called `name` under root (artifacts may hold sub-folders)."""
    for dirpath, _, files in sorted(os.walk(root)):
        if name in files:
            return os.path.join(dirpath, name)
    return None


def collect_run(
    artifact_paths: dict[str, str],
    run_dir: str,
    parameters: dict[str, Any],
    seconds: float,
    publication: dict[str, Any] | None = None,
) -> RunSummary:
    """Moves each stage's artifact into run_dir/<stage>/ and writes index.html and run.json last.

    Args:
        artifact_paths: stage name (one of STAGE_FOLDERS) -> local path of its artifact.
        run_dir: destination run folder (created; existing stage folders are replaced).
        parameters: pipeline parameters, recorded for reproducibility.
        seconds: wall time of the DAG run.
        publication: the DAG's `publication` output (eval.publish.publication_summary). A model
            published into the step's own artifact (models_uri empty) is moved to run_dir/models/.

    Returns:
        The RunSummary also written to run.json.
    """
    os.makedirs(run_dir, exist_ok=True)
    # index.html and run.json mark a complete run: remove them first so a failure below
    # never leaves an index pointing at a half-copied folder.
    for marker in ("index.html", "run.json"):
        if os.path.exists(os.path.join(run_dir, marker)):
            os.remove(os.path.join(run_dir, marker))
    stages: dict[str, str] = {}
    for stage in STAGE_FOLDERS:
        if stage not in artifact_paths:
            continue
        dst = os.path.join(run_dir, stage)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        _move_artifact(artifact_paths[stage], dst)
        stages[stage] = stage
    publication = dict(publication) if publication else None
    if publication and publication.get("published") and publication.get("in_artifact"):
        dst = os.path.join(run_dir, MODELS_FOLDER)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        _move_artifact(publication["artifact"], dst)
        stages[MODELS_FOLDER] = MODELS_FOLDER
        publication["destination"] = os.path.join(os.path.abspath(run_dir), MODELS_FOLDER, publication["name"])

    metrics_path = _find(os.path.join(run_dir, "evaluation"), "metrics.json") if "evaluation" in stages else None
    metrics = _read_json(metrics_path) if metrics_path else {}
    bench_path = _find(os.path.join(run_dir, "benchmark"), "benchmark.json") if "benchmark" in stages else None
    bench = _read_json(bench_path) if bench_path else {}
    verdict = metrics.get("verdict", {})
    headline = _headline(metrics, bench)
    summary = RunSummary(
        run_dir=os.path.abspath(run_dir),
        stages=stages,
        parameters=parameters,
        seconds=round(seconds, 2),
        passed=verdict.get("passed") if isinstance(verdict, dict) else None,
        metrics=headline,
        publication=publication,
    )
    links = {
        "report": _rel(run_dir, _find(os.path.join(run_dir, "evaluation"), "report.html")) if "evaluation" in stages else None,
        "metrics": _rel(run_dir, metrics_path),
        "benchmark": _rel(run_dir, bench_path),
        "benchmark MLLOG lines": _rel(run_dir, _find(os.path.join(run_dir, "benchmark"), "benchmark.mllog")) if bench_path else None,
        "manifest": _rel(run_dir, _find(os.path.join(run_dir, "tfrecords"), "manifest.json")) if "tfrecords" in stages else None,
        "training summary": _rel(run_dir, _find(os.path.join(run_dir, "model"), "summary.json")) if "model" in stages else None,
    }
    _write_atomic(os.path.join(run_dir, "run.json"), json.dumps(summary.__dict__, indent=2, default=str))
    _write_atomic(os.path.join(run_dir, "index.html"), render_index(summary, links, bench))
    return summary


def _rel(run_dir: str, path: str | None) -> str | None:
    return os.path.relpath(path, run_dir) if path else None


HEADLINE_EVAL_KEYS = (
    "sampling_fraction_mre",
    "moment_mre",
    "angle_mre",
    "selection_metric",
    "classifier_auc",
    "fpd_x1e3",
    "kpd_x1e3",
)


def _headline(metrics: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    """Picks the few figures worth showing on the index page, tolerating absent keys.

    Evaluation figures are shown beside their Monte Carlo noise floor (MC vs independent MC),
    without which a generated-vs-MC number cannot be read.
    """
    out: dict[str, Any] = {}
    for key in ("showers_per_second", "seconds_per_step", "seconds_per_step_median", "seconds_per_epoch", "steps"):
        if key in bench:
            out[f"benchmark.{key}"] = bench[key]
    summary = metrics.get("summary", {})
    generated = summary.get("generated", {}) if isinstance(summary, dict) else {}
    floor = summary.get("noise_floor", {}) if isinstance(summary, dict) else {}
    for key in HEADLINE_EVAL_KEYS:
        if key in generated:
            value = generated[key]
            if key in floor:
                out[f"eval.{key} (generated | MC noise floor)"] = f"{_fmt(value)} | {_fmt(floor[key])}"
            else:
                out[f"eval.{key}"] = value
    return out


def benchmark_section(bench: dict[str, Any] | None) -> str:
    """The benchmark's summary: what was measured, over how many steps, on what (eval.bench_report).

    Empty for a run without a benchmark, or with one written before benchmark.json had a status.
    """
    if not bench or "status" not in bench:
        return ""
    from eval.bench_report import fingerprint_line, summary_rows

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td><td>{html.escape(how)}</td></tr>"
        for name, value, how in summary_rows(bench))
    return (f"<h2>Benchmark</h2><p>{html.escape(str(bench.get('measured', '')))}</p>"
            f"<table><tr><th>figure</th><th>value</th><th>measured</th></tr>{rows}</table>"
            f"<p><small>{html.escape(fingerprint_line(bench))}</small></p>")


def render_index(summary: RunSummary, links: dict[str, str | None], bench: dict[str, Any] | None = None) -> str:
    """A small self-contained page: verdict, links to each stage's outputs, headline figures, the
    benchmark's summary."""
    verdict = {True: "PASSED", False: "FAILED", None: "no verdict"}[summary.passed]
    rows_links = "".join(
        f'<li><a href="{html.escape(path)}">{html.escape(name)}</a></li>' for name, path in links.items() if path
    )
    rows_stages = "".join(
        f'<li><a href="{html.escape(folder)}/">{html.escape(stage)}</a></li>' for stage, folder in summary.stages.items()
    )
    rows_metrics = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summary.metrics.items()
    )
    rows_params = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in sorted(summary.parameters.items())
    )
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    model_line = publication_line(summary.publication, summary.run_dir)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>caloforge run</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td{{padding:2px 8px}}
th{{text-align:left;padding:2px 8px}}.PASSED{{color:#070}}.FAILED{{color:#b00}}</style></head>
<body><h1>caloforge run</h1>
<p>Physics validation: <b class="{verdict.replace(' ', '_')}">{verdict}</b> &middot; DAG wall time {summary.seconds:.1f} s &middot; {created}</p>
{model_line}
<h2>Outputs</h2><ul>{rows_links}</ul>
<h2>Stage folders</h2><ul>{rows_stages}</ul>
<h2>Headline figures</h2><table>{rows_metrics}</table>
{benchmark_section(bench)}
<h2>Parameters</h2><table>{rows_params}</table>
</body></html>
"""


def publication_line(publication: dict[str, Any] | None, run_dir: str) -> str:
    """The index page's line on the gate: where the model was published, or why it was not."""
    if not publication:
        return ""
    if not publication.get("published"):
        reason = str(publication.get("reason") or "not published")
        return f'<p id="publication">Model: <b class="FAILED">{html.escape(reason)}</b></p>'
    destination = str(publication.get("destination", ""))
    shown = html.escape(destination)
    inside = os.path.abspath(destination).startswith(os.path.abspath(run_dir) + os.sep) if "://" not in destination else False
    if inside:
        rel = os.path.relpath(destination, run_dir)
        shown = f'<a href="{html.escape(rel)}/">{html.escape(rel)}/</a>'
    vertex = publication.get("vertex_model") or {}
    extra = f" and registered in Vertex AI as {html.escape(str(vertex.get('resource_name')))}" if vertex else ""
    return (f'<p id="publication">Model: <b class="PASSED">published</b> to {shown}{extra} '
            f'(publication.json: provenance, sha256 of every file)</p>')


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
