"""The run folder: stage outputs gathered, index.html and run.json written last."""

import json
import os

import pytest

from pipelines.run_folder import collect_run


def _stage(tmp_path, name, files):
    folder = tmp_path / "kfp" / name
    folder.mkdir(parents=True)
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(folder)


def test_collects_stages_and_links_outputs(tmp_path):
    metrics = {
        "verdict": {"passed": True, "checks": []},
        "summary": {"generated": {"sampling_fraction_mre": 0.03}, "noise_floor": {"sampling_fraction_mre": 0.01}},
    }
    artifacts = {
        "raw_data": _stage(tmp_path, "raw", {"files.json": "{}"}),
        "tfrecords": _stage(tmp_path, "tfr", {"manifest.json": "{}"}),
        "model": _stage(tmp_path, "model", {"summary.json": "{}", "generator/generator.keras": "x"}),
        "evaluation": _stage(tmp_path, "eval", {"report.html": "<html>", "metrics.json": json.dumps(metrics)}),
        "benchmark": _stage(tmp_path, "bench", {"benchmark.json": json.dumps({"showers_per_second": 12.5})}),
    }
    run_dir = tmp_path / "run"
    summary = collect_run(artifacts, str(run_dir), {"preset": "small"}, 12.0)
    assert summary.passed is True
    assert summary.metrics["benchmark.showers_per_second"] == 12.5
    assert summary.metrics["eval.sampling_fraction_mre (generated | MC noise floor)"] == "0.03 | 0.01"
    index = (run_dir / "index.html").read_text()
    for link in ("evaluation/report.html", "evaluation/metrics.json", "benchmark/benchmark.json", "tfrecords/manifest.json"):
        assert f'href="{link}"' in index
        assert (run_dir / link).exists()
    assert "PASSED" in index
    saved = json.loads((run_dir / "run.json").read_text())
    assert saved["parameters"] == {"preset": "small"}
    # paths recorded by the stages (kfp.local locations) still resolve after the move
    assert os.path.realpath(artifacts["model"]) == os.path.realpath(run_dir / "model")
    assert os.path.exists(os.path.join(artifacts["model"], "generator", "generator.keras"))


def test_missing_artifact_leaves_no_index(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "index.html").write_text("stale")
    with pytest.raises(FileNotFoundError, match="model"):
        collect_run({"model": str(tmp_path / "nowhere" / "model")}, str(run_dir), {}, 1.0)
    assert not os.path.exists(run_dir / "index.html")


def test_failed_verdict_is_shown(tmp_path):
    metrics = {"verdict": {"passed": False, "checks": []}}
    artifacts = {"evaluation": _stage(tmp_path, "eval", {"report.html": "r", "metrics.json": json.dumps(metrics)})}
    summary = collect_run(artifacts, str(tmp_path / "run"), {}, 1.0)
    assert summary.passed is False
    assert "FAILED" in (tmp_path / "run" / "index.html").read_text()
