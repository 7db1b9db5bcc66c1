"""Tests of eval.benchmark: warm-up exclusion, throughput, epoch projections, scaling, reference rows, errors."""

import json

import pytest

from eval.benchmark import (
    PUBLISHED_TRAIN_EVENTS,
    REFERENCE_LABEL,
    BenchmarkConfig,
    collect,
    main,
    read_reference_rows,
)
from tests.gcs_emulator import gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)

GLOBAL_BATCH = 8
REPLICAS = 2
STEPS_PER_RECORD = 5


def write_train_dir(path, warm_seconds=(30.0, 10.0), steady_seconds=2.0, n_records=10):
    """A trainer output folder in the documented format (docs/CONTRACTS.md section 3)."""
    path.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_records):
        seconds = warm_seconds[i] if i < len(warm_seconds) else steady_seconds
        lines.append(
            json.dumps(
                {
                    "step": (i + 1) * STEPS_PER_RECORD,
                    "steps": STEPS_PER_RECORD,
                    "epoch": 0,
                    "seconds": seconds,
                    "global_batch": GLOBAL_BATCH,
                    "replicas": REPLICAS,
                    "losses": {"d_loss": 1.0, "g_loss": 2.0},
                }
            )
        )
    (path / "timings.jsonl").write_text("\n".join(lines) + "\n")
    (path / "summary.json").write_text(
        json.dumps({"steps": n_records * STEPS_PER_RECORD, "strategy": "mirrored", "device_kind": "cpu"})
    )
    return path


def config(tmp_path, **kw) -> BenchmarkConfig:
    return BenchmarkConfig(
        train_dir=str(tmp_path / "train"), output_dir=str(tmp_path / "out"), include_tf_devices=False, **kw
    )


def test_throughput_excludes_warmup_records(tmp_path):
    write_train_dir(tmp_path / "train")
    result = collect(config(tmp_path))
    assert result["total_steps"] == 50 and result["total_records"] == 10
    assert result["warmup_excluded"] and result["warmup_records_excluded"] == 2
    assert result["measured_steps"] == 40
    # 8 steady records x 5 steps x 8 showers in 8 x 2 s.
    assert result["showers_per_second"] == pytest.approx(8 * 5 * 8 / 16.0)
    assert result["seconds_per_step"] == pytest.approx(0.4)
    assert result["showers_per_second_per_replica"] == pytest.approx(10.0)
    # Warm-up overhead: 40 s for 10 steps that would have taken 4 s.
    assert result["warmup_overhead_seconds"] == pytest.approx(36.0)
    assert result["trainer_strategy"] == "mirrored" and result["trainer_device"] == "cpu"
    written = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert written["showers_per_second"] == pytest.approx(result["showers_per_second"])
    assert written["config"]["warmup_records"] == 2
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name != "benchmark.json"]


def test_warmup_steps_and_all_warmup_runs(tmp_path):
    write_train_dir(tmp_path / "train", warm_seconds=(30.0, 10.0, 6.0))
    # Records start at steps 1, 6, 11, ...: warmup_steps=11 also drops the third record.
    r = collect(config(tmp_path, warmup_records=0, warmup_steps=11))
    assert r["warmup_records_excluded"] == 3
    assert r["seconds_per_step"] == pytest.approx(0.4)
    short = collect(config(tmp_path, warmup_records=20))
    assert not short["warmup_excluded"]
    assert short["measured_steps"] == 50


def test_epoch_projection_from_manifest_and_published_set(tmp_path):
    write_train_dir(tmp_path / "train")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"counts": {"train": 1003, "test": 100}}))
    r = collect(config(tmp_path, manifest=str(manifest)))
    assert r["train_events"] == 1003
    assert r["steps_per_epoch"] == 1003 // GLOBAL_BATCH
    assert r["seconds_per_epoch"] == pytest.approx(125 * 0.4)
    assert r["steps_per_epoch_published_set"] == PUBLISHED_TRAIN_EVENTS // GLOBAL_BATCH
    assert r["seconds_per_epoch_published_set"] == pytest.approx((PUBLISHED_TRAIN_EVENTS // GLOBAL_BATCH) * 0.4)
    explicit = collect(config(tmp_path, manifest=str(manifest), train_events=400))
    assert explicit["steps_per_epoch"] == 50


def test_scaling_against_baseline(tmp_path):
    write_train_dir(tmp_path / "train")
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"showers_per_second": 12.5, "replicas": 1}))
    r = collect(config(tmp_path, baseline=str(baseline)))
    assert r["scaling"]["speedup"] == pytest.approx(20.0 / 12.5)
    assert r["scaling"]["scaling_efficiency"] == pytest.approx(20.0 / 12.5 / 2)


def test_reference_rows_are_labelled_and_derived():
    rows = read_reference_rows()
    assert len(rows) == 29
    first = rows[0]
    assert first["device"] == "gpu-v100" and first["replicas"] == 32 and first["batch_size_per_replica"] == 96
    assert first["steps_per_epoch"] == PUBLISHED_TRAIN_EVENTS // (32 * 96)
    assert first["seconds_per_step"] == pytest.approx(154.29 / first["steps_per_epoch"])
    assert {r["device"] for r in rows} >= {"gpu-v100", "tpu-preemtible-v2", "tpu-preemtible-v3"}
    assert "NOT a result of this project" in REFERENCE_LABEL


def test_reference_comparison_in_output(tmp_path):
    write_train_dir(tmp_path / "train")
    r = collect(config(tmp_path))
    comp = r["reference_comparison"]
    assert comp["label"] == REFERENCE_LABEL
    assert comp["fastest_reference"]["seconds_per_epoch"] == pytest.approx(34.9)
    assert comp["same_replicas_reference"]["replicas"] == REPLICAS
    assert comp["ratio_to_same_replicas_reference"] == pytest.approx(
        r["seconds_per_epoch_published_set"] / comp["same_replicas_reference"]["seconds_per_epoch"]
    )


def test_bad_inputs_name_file_and_line(tmp_path):
    train = write_train_dir(tmp_path / "train")
    with open(train / "timings.jsonl", "a") as fh:
        fh.write('{"step": 55, "steps": 5, "seconds": 2.0}\n')
    with pytest.raises(ValueError, match=r"timings.jsonl:11: record lacks \['global_batch'\]"):
        collect(config(tmp_path))
    (train / "timings.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="timings.jsonl:1: not valid JSON"):
        collect(config(tmp_path))
    write_train_dir(tmp_path / "train")
    (train / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="summary.json"):
        collect(config(tmp_path))
    with pytest.raises(ValueError, match="warmup_steps"):
        config(tmp_path, warmup_steps=-1)


def test_cli_maps_flags_to_config_and_fingerprints_host(tmp_path, capsys):
    write_train_dir(tmp_path / "train")
    rc = main(
        ["--train-dir", str(tmp_path / "train"), "--output-dir", str(tmp_path / "cli"), "--warmup-records", "3",
         "--include-tf-devices"]
    )
    assert rc == 0
    written = json.loads((tmp_path / "cli" / "benchmark.json").read_text())
    assert written["warmup_records_excluded"] == 3
    host = written["host"]
    assert host["cpu_count"] >= 1 and host["versions"]["numpy"] != "absent"
    assert any(d.startswith("CPU") for d in host["tf_devices"])
    assert '"showers_per_second"' in capsys.readouterr().out


def test_resumed_run_warms_up_again_and_real_timing_log_format(tmp_path):
    """Records written by the trainer's own TimingLog; the run restarts from step 10 after step 15."""
    from trainer.timings import TimingLog

    train = tmp_path / "train"
    train.mkdir()
    log = TimingLog(str(train / "timings.jsonl"))
    plan = [(5, 30.0), (10, 10.0), (15, 2.0), (20, 2.0)]  # first process
    plan += [(15, 25.0), (20, 9.0), (25, 2.0), (30, 2.0), (35, 2.0)]  # resumed from the step-10 checkpoint
    for step, seconds in plan:
        log.record(step=step, steps=5, epoch=0, seconds=seconds, global_batch=GLOBAL_BATCH, replicas=1,
                   losses={"d": 0.5})
    log.flush()
    (train / "summary.json").write_text(json.dumps({"strategy": "default", "device_kind": "cpu"}))
    r = collect(config(tmp_path))
    assert r["segments"] == 2
    assert r["warmup_records_excluded"] == 4
    assert r["measured_steps"] == 25 and r["seconds_per_step"] == pytest.approx(0.4)
    assert r["total_steps"] == 35 and r["replicas"] == 1


def test_collect_reads_and_writes_gcs(gcs_bucket, tmp_path):
    from data_prep import uri

    local = write_train_dir(tmp_path / "train")
    base = f"gs://{gcs_bucket}/run"
    for name in ("timings.jsonl", "summary.json"):
        uri.upload_file(str(local / name), f"{base}/train/{name}")
    r = collect(BenchmarkConfig(train_dir=f"{base}/train", output_dir=f"{base}/bench", include_tf_devices=False))
    assert r["output"] == f"{base}/bench/benchmark.json"
    written = json.loads(uri.read_text(r["output"]))
    assert written["seconds_per_step"] == pytest.approx(0.4)


def test_benchmark_config_round_trip(tmp_path):
    cfg = config(tmp_path, warmup_steps=4, baseline="b.json")
    assert BenchmarkConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="BenchmarkConfig: unknown keys"):
        BenchmarkConfig.from_dict({**cfg.to_dict(), "warmup": 1})
