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


def test_index_page_summarises_the_benchmark(tmp_path):
    """The collector's own benchmark.json (synthetic timing records) on the index page: what was
    measured, over how many steps, on what; withheld figures say why."""
    from eval.benchmark import BenchmarkConfig, collect
    from trainer.timings import TimingLog

    train = tmp_path / "train"
    train.mkdir()
    log = TimingLog(str(train / "timings.jsonl"), identity={"preset": "small", "dataset": "d", "config_hash": "abc"})
    for step, seconds in enumerate([9.0, 4.0] + [0.5] * 24, start=1):
        log.record(step=step, steps=1, epoch=0, seconds=seconds, global_batch=16, replicas=1, losses={})
    (train / "summary.json").write_text(json.dumps({"strategy": "default", "device_kind": "cpu"}))
    pages = {}
    for name, minimum in (("measured", 20), ("withheld", 30)):
        bench_dir = tmp_path / f"bench-{name}"
        collect(BenchmarkConfig(train_dir=str(train), output_dir=str(bench_dir), hardware_profile="cpu",
                                min_measured_steps=minimum, include_tf_devices=False, input_batches=0,
                                generation_batch_sizes=(), mc_seconds=0.0, count_flops=False))
        run_dir = tmp_path / f"run-{name}"
        artifacts = {"benchmark": str(bench_dir)}
        summary = collect_run(artifacts, str(run_dir), {}, 1.0)
        pages[name] = (run_dir / "index.html").read_text()
        assert 'href="benchmark/benchmark.mllog"' in pages[name]
    measured = pages["measured"]
    assert "<h2>Benchmark</h2>" in measured
    assert "24 measured steps (24 records) at global batch 16 on CPU" in measured
    assert "median 0.5 s" in measured and "32 showers/s" in measured
    assert "published reference (not ours)" in measured and "profile cpu" in measured
    assert "steps 1-2" in measured  # the warm-up, named
    assert summary.metrics.get("benchmark.showers_per_second") is None  # the withheld run has none
    withheld = pages["withheld"]
    assert "withheld" in withheld and "24 measured steps" in withheld and "min_measured_steps=30" in withheld
    assert "showers/s" not in withheld.split("<h2>Benchmark</h2>")[1].split("</table>")[0]
