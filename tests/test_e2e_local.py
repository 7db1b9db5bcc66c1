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
    "max_steps": "26",  # 2 warm-up + 24 measured: over the collector's 20-step minimum
    "batch_size_per_replica": "8",
    "distribution_strategy": "default",
    "warmup_steps": "1",
    "snapshot_every": "13",  # two generator snapshots for the evaluator's best-epoch selection
}


#: Verdict rules a 26-step GAN passes for sure (one check, a margin no fraction exceeds), so the
#: gate publishes; two replicas keep the evaluation short. The gate's FAILED branch: test_publish_gate.
PASS_EVERYTHING = """version: 1
replicas: 2
checks:
  empty_fraction: {null_model: none, margin: 1.0}
"""


@pytest.mark.e2e
def test_dag_runs_locally_and_collects_a_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    thresholds = tmp_path / "pass-everything.yaml"
    thresholds.write_text(PASS_EVERYTHING)
    argv = ["run", "--local", "--output-dir", str(run_dir), "--param", f"eval_thresholds={thresholds}"]
    for key, value in TINY.items():
        argv += ["--param", f"{key}={value}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "index.html" in out

    run = json.loads((run_dir / "run.json").read_text())
    assert set(run["stages"]) == {"raw_data", "tfrecords", "model", "evaluation", "benchmark", "models"}
    assert run["parameters"]["preset"] == "tiny"
    assert run["passed"] is True  # judged by PASS_EVERYTHING
    # The gate published the blessed model into the run folder (models_uri empty), provenance last.
    publication = run["publication"]
    assert publication["published"] is True and f"model published: {publication['destination']}" in out
    published = run_dir / "models" / publication["name"]
    assert publication["destination"] == str(published)
    record = json.loads((published / "publication.json").read_text())
    assert record["run_id"] == publication["name"] and record["verdict"]["passed"] is True
    assert record["training"]["config_hash"] == json.loads((run_dir / "model" / "config.json").read_text())["derived"]["config_hash"]
    assert record["verdict"]["thresholds"]["source"] == str(thresholds)
    assert set(record["files"]) == {"generator/generator.keras", "generator/generator_config.json", "train_config.json",
                                    "summary.json", "metrics.json", "report.html"}
    assert (published / "generator" / "generator.keras").read_bytes() == (run_dir / "model" / "generator" / "generator.keras").read_bytes()
    # The KFP Metrics carry every figure beside its Monte Carlo floor.
    executor_outputs = list((run_dir / "kfp").glob("*/evaluate-gan/executor_output.json"))
    assert len(executor_outputs) == 1
    logged = json.loads(executor_outputs[0].read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["passed"] == 1.0
    for name in ("sampling_fraction_mre", "moment_mre", "sep_power_mean", "empty_fraction"):
        assert f"{name}_floor" in logged and name in logged, name

    files = json.loads((run_dir / "raw_data" / "files.json").read_text())
    assert files["events"] == 480 and len(files["files"]) == 3

    manifest = json.loads((run_dir / "tfrecords" / "manifest.json").read_text())
    assert sum(manifest["counts"].values()) > 0

    summary = json.loads((run_dir / "model" / "summary.json").read_text())
    assert summary["steps"] == 26
    assert os.path.exists(run_dir / "model" / "generator" / "generator.keras")
    with open(run_dir / "model" / "timings.jsonl", encoding="utf-8") as f:
        assert sum(json.loads(line)["steps"] for line in f if line.strip()) == 26

    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert isinstance(metrics["verdict"]["passed"], bool) and metrics["verdict"]["checks"]
    # Best epoch: both snapshots scored, the chosen one evaluated and copied beside its metrics.
    assert sorted(os.listdir(run_dir / "model" / "snapshots")) == [
        f"step_0000000{s}.{e}" for s in (13, 26) for e in ("json", "npz")]
    series = metrics["snapshot_selection"]["series"]
    assert [r["step"] for r in series] == [13, 26] and all(r["sampling_fraction_mre"] is not None for r in series)
    assert metrics["selected_generator"]["step"] == min(series, key=lambda r: r["sampling_fraction_mre"])["step"]
    assert os.path.exists(run_dir / "evaluation" / "generator" / "generator.keras")
    bench = json.loads((run_dir / "benchmark" / "benchmark.json").read_text())
    assert bench["status"] == "measured" and bench["showers_per_second"] > 0
    assert bench["measured_steps"] == 24 and bench["warmup_step_ranges"] == [[1, 2]]
    fp = bench["fingerprint"]
    assert fp["hardware_profile"] == "cpu" and fp["preset"] == "tiny" and fp["identity_recorded"]
    assert fp["trainer"]["physical_devices"]["CPU"] >= 1 and fp["trainer"]["libraries"]["kfp"]
    assert bench["input_pipeline"]["events_per_second"] > 0 and bench["monte_carlo"]["showers_per_second"] > 0
    assert bench["generation"]["batches"]["64"]["showers_per_second"] > 0
    assert bench["flops"]["achieved_model_flops_per_second"] > 0
    from eval.mllog import parse_mllog

    events = parse_mllog((run_dir / "benchmark" / "benchmark.mllog").read_text())
    assert next(e for e in events if e["key"] == "tracked_stats")["metadata"]["measured_steps"] == 24

    index = (run_dir / "index.html").read_text()
    for link in ("evaluation/report.html", "evaluation/metrics.json", "benchmark/benchmark.json"):
        assert f'href="{link}"' in index
        assert (run_dir / link).exists()
    assert "<h2>Benchmark</h2>" in index and "24 measured steps (24 records)" in index
    assert f'published</b> to <a href="models/{publication["name"]}/">' in index
    # The finished run in the comparison table, beside (never among) the published rows.
    assert main(["bench", "compare", str(run_dir)]) == 0
    table = capsys.readouterr().out
    assert "run " in table and "tiny" in table.split("published reference")[0]


def test_default_parameters_are_the_embedded_demo():
    params = PipelineParams()
    assert params.input_uri == "" and params.preset == "small"
    assert params.mc_events > 0 and params.max_steps > 0
