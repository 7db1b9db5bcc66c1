"""The compiled DAG run end to end by kfp.local on a tiny configuration (real Beam, TF, evaluation)."""

import json
import os

import pytest

from pipelines.cli import main
from pipelines.config import PipelineParams

TINY = {
    "mc_events": "480",
    "mc_events_per_file": "160",
    "mc_energy_min": "20",
    "mc_energy_max": "200",
    "preset": "tiny",
    "max_steps": "6",
    "batch_size_per_replica": "8",
    "distribution_strategy": "default",
    "warmup_steps": "1",
}


@pytest.mark.e2e
def test_dag_runs_locally_and_collects_a_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["run", "--local", "--output-dir", str(run_dir)]
    for key, value in TINY.items():
        argv += ["--param", f"{key}={value}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "index.html" in out

    run = json.loads((run_dir / "run.json").read_text())
    assert set(run["stages"]) == {"raw_data", "tfrecords", "model", "evaluation", "benchmark"}
    assert run["parameters"]["preset"] == "tiny"
    assert run["passed"] in (True, False)  # a 6-step GAN is judged, whatever the verdict

    files = json.loads((run_dir / "raw_data" / "files.json").read_text())
    assert files["events"] == 480 and len(files["files"]) == 3

    manifest = json.loads((run_dir / "tfrecords" / "manifest.json").read_text())
    assert sum(manifest["counts"].values()) > 0

    summary = json.loads((run_dir / "model" / "summary.json").read_text())
    assert summary["steps"] == 6
    assert os.path.exists(run_dir / "model" / "generator" / "generator.keras")
    with open(run_dir / "model" / "timings.jsonl", encoding="utf-8") as f:
        assert sum(json.loads(line)["steps"] for line in f if line.strip()) == 6

    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert isinstance(metrics["verdict"]["passed"], bool) and metrics["verdict"]["checks"]
    bench = json.loads((run_dir / "benchmark" / "benchmark.json").read_text())
    assert bench["showers_per_second"] > 0

    index = (run_dir / "index.html").read_text()
    for link in ("evaluation/report.html", "evaluation/metrics.json", "benchmark/benchmark.json"):
        assert f'href="{link}"' in index
        assert (run_dir / link).exists()


def test_default_parameters_are_the_embedded_demo():
    params = PipelineParams()
    assert params.input_uri == "" and params.preset == "small"
    assert params.mc_events > 0 and params.max_steps > 0
