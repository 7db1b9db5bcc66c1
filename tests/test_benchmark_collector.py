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


#: The collector's own measurements (input pipeline, generation, Monte Carlo, FLOPs) off: these
#: tests check the arithmetic on synthetic timing records.
NO_EXTRAS = dict(include_tf_devices=False, input_batches=0, generation_batch_sizes=(), mc_seconds=0.0,
                 count_flops=False)


def config(tmp_path, **kw) -> BenchmarkConfig:
    return BenchmarkConfig(**{"train_dir": str(tmp_path / "train"), "output_dir": str(tmp_path / "out"),
                              **NO_EXTRAS, **kw})


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
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["benchmark.json", "benchmark.mllog"]


def test_warmup_steps_are_excluded_and_named(tmp_path):
    write_train_dir(tmp_path / "train", warm_seconds=(30.0, 10.0, 6.0))
    # Records start at steps 1, 6, 11, ...: warmup_steps=11 also drops the third record.
    r = collect(config(tmp_path, warmup_records=0, warmup_steps=11))
    assert r["warmup_records_excluded"] == 3 and r["warmup_steps_excluded"] == 15
    assert r["warmup_step_ranges"] == [[1, 15]]
    assert r["seconds_per_step"] == pytest.approx(0.4)
    assert "warm-up steps 1-15 left out" in r["measured"]
    # Every record warm-up: no figure (warm-up is never passed off as steady state).
    short = collect(config(tmp_path, warmup_records=20))
    assert short["status"] == "too_few_steps" and short["measured_steps"] == 0
    assert "showers_per_second" not in short and "seconds_per_epoch_published_set" not in short


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
    assert "efficiency_time_form" not in r["scaling"]  # the baseline has no epoch time
    # Time form T(1) / (N x T(N)): our 2 replicas take 15,623 steps x 0.4 s per published epoch.
    baseline.write_text(json.dumps({"showers_per_second": 12.5, "replicas": 1,
                                    "seconds_per_epoch_published_set": 10000.0}))
    r = collect(config(tmp_path, baseline=str(baseline)))
    assert r["scaling"]["efficiency_time_form"] == pytest.approx(10000.0 / (2 * 15623 * 0.4))


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
         "--include-tf-devices", "--mc-seconds", "0", "--input-batches", "0", "--hardware-profile", "gpu-t4-1"]
    )
    assert rc == 0
    written = json.loads((tmp_path / "cli" / "benchmark.json").read_text())
    assert written["warmup_records_excluded"] == 3
    assert written["fingerprint"]["hardware_profile"] == "gpu-t4-1"
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


# --------------------------------------------------------------------------- honesty rules
def write_records(path, seconds, steps=1, global_batch=GLOBAL_BATCH, replicas=1, identity=None, start_step=0):
    """One record per entry of `seconds`, each `steps` steps, through the trainer's own TimingLog."""
    from trainer.timings import TimingLog

    path.mkdir(parents=True, exist_ok=True)
    log = TimingLog(str(path / "timings.jsonl"), identity=identity)
    step = start_step
    for s in seconds:
        step += steps
        log.record(step=step, steps=steps, epoch=0, seconds=s, global_batch=global_batch, replicas=replicas,
                   losses={"d_loss": 1.0})
    log.flush()
    if not (path / "summary.json").exists():
        (path / "summary.json").write_text(json.dumps({"strategy": "default", "device_kind": "cpu"}))
    return path


def test_median_spread_and_rates_have_known_answers(tmp_path):
    # 2 warm-up steps, then 20 one-step records: ten of 0.2 s, five of 0.3 s, five of 0.5 s.
    write_records(tmp_path / "train", [5.0, 3.0] + [0.2] * 10 + [0.3] * 5 + [0.5] * 5)
    r = collect(config(tmp_path, train_events=1000))
    assert r["status"] == "measured" and r["measured_steps"] == 20
    assert r["warmup_step_ranges"] == [[1, 2]] and r["warmup_seconds"] == pytest.approx(8.0)
    assert r["seconds_per_step"] == pytest.approx(6.0 / 20)  # mean: the epoch is a sum of steps
    assert r["steps_per_second"] == pytest.approx(20 / 6.0)
    assert r["showers_per_second"] == pytest.approx(20 * GLOBAL_BATCH / 6.0)
    spread = r["step_time"]
    assert spread["median"] == pytest.approx(0.25) and r["seconds_per_step_median"] == pytest.approx(0.25)
    assert (spread["p25"], spread["p75"]) == (pytest.approx(0.2), pytest.approx(0.35))
    assert spread["iqr"] == pytest.approx(0.15) and (spread["min"], spread["max"]) == (0.2, 0.5)
    assert r["seconds_per_epoch"] == pytest.approx(1000 // GLOBAL_BATCH * 0.3)
    assert r["seconds_per_epoch_published_set"] == pytest.approx(PUBLISHED_TRAIN_EVENTS // GLOBAL_BATCH * 0.3)
    assert r["figures"]["seconds_per_step_iqr"] == pytest.approx(0.15)
    assert r["measured"].startswith("20 measured steps (20 records) at global batch 8 on CPU")


def test_no_figure_from_fewer_than_min_measured_steps(tmp_path, capsys):
    write_records(tmp_path / "train", [5.0, 3.0] + [0.2] * 20)
    assert collect(config(tmp_path))["status"] == "measured"  # exactly 20: the default minimum
    r = collect(config(tmp_path, min_measured_steps=21))
    assert r["status"] == "too_few_steps"
    assert "20 measured steps" in r["withheld"] and "min_measured_steps=21" in r["withheld"]
    for key in ("showers_per_second", "seconds_per_step", "seconds_per_step_median", "seconds_per_epoch_published_set",
                "reference_comparison"):
        assert key not in r
    assert set(r["figures"]) == {"measured_steps", "warmup_steps_excluded"}
    written = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert written["status"] == "too_few_steps" and written["withheld"] == r["withheld"]
    from eval.mllog import parse_mllog

    events = parse_mllog((tmp_path / "out" / "benchmark.mllog").read_text())
    keys = [e["key"] for e in events]
    assert "tracked_stats" not in keys and not [k for k in keys if k.startswith("caloforge_seconds")]
    status = next(e for e in events if e["key"] == "caloforge_status")
    assert status["value"] == "too_few_steps" and status["metadata"]["measured_steps"] == 20
    # The command says so and still exits 0 (a benchmark measures, it does not judge).
    args = ["--train-dir", str(tmp_path / "train"), "--output-dir", str(tmp_path / "cli"), "--min-measured-steps", "21",
            "--no-include-tf-devices", "--input-batches", "0", "--mc-seconds", "0", "--no-count-flops"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert '"status": "too_few_steps"' in captured.out and "no training figure: 20 measured steps" in captured.err


def _identity(**kw):
    from trainer.config import TrainConfig
    from trainer.timings import run_identity

    return run_identity(TrainConfig(**{"data": "/d/manifest.json", "output_dir": "/o", **kw}).to_dict())


def test_records_of_another_run_are_refused(tmp_path, capsys):
    # A killed run of the tiny preset left 3 records; a small-preset run then appended 25.
    train = write_records(tmp_path / "train", [1.0] * 3, identity=_identity(preset="tiny"))
    write_records(train, [1.0] * 25, identity=_identity(preset="small"))
    with pytest.raises(ValueError, match=r"mixes the records of more than one run \(preset='tiny' from record 1, "
                                         r"preset='small' from record 4\)"):
        collect(config(tmp_path))
    assert not (tmp_path / "out" / "benchmark.json").exists()
    from pipelines.cli import main as caloforge

    assert caloforge(["benchmark", "--train-dir", str(train), "--output-dir", str(tmp_path / "o2"),
                      "--no-include-tf-devices"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("caloforge benchmark: error: ") and "fresh output folder" in err[0]
    for other in ({"dataset": "/other/manifest.json"}, {"seed": 9}, {"batch_size_per_replica": 8}):
        folder = tmp_path / f"mixed-{list(other)[0]}"
        write_records(folder, [1.0] * 3, identity=_identity())
        identity = _identity(**{k: v for k, v in other.items() if k != "dataset"})
        if "dataset" in other:
            identity["dataset"] = other["dataset"]
        write_records(folder, [1.0] * 3, identity=identity, start_step=3)
        key = "dataset" if "dataset" in other else "config_hash"
        with pytest.raises(ValueError, match=f"{key}="):
            collect(config(tmp_path, train_dir=str(folder)))


def test_one_run_resumed_with_more_steps_is_one_run(tmp_path):
    from trainer.timings import config_hash

    base = dict(data="/d/manifest.json", preset="tiny", seed=3)
    assert config_hash({**base, "max_steps": 10, "output_dir": "/a"}) == config_hash({**base, "max_steps": 40,
                                                                                      "output_dir": "/b"})
    assert config_hash({**base, "batch_size_per_replica": 4}) != config_hash({**base, "batch_size_per_replica": 8})
    train = write_records(tmp_path / "train", [1.0] * 12, identity=_identity(max_steps=12))
    write_records(train, [1.0] * 12, identity=_identity(max_steps=24), start_step=12)
    r = collect(config(tmp_path))
    assert r["measured_steps"] == 22 and r["fingerprint"]["preset"] == "small"
    # config.json of another configuration: the records are not its run's.
    from trainer.config import TrainConfig

    (train / "config.json").write_text(json.dumps({"train_config": TrainConfig(preset="tiny").to_dict()}))
    with pytest.raises(ValueError, match="config.json is"):
        collect(config(tmp_path))


def test_mllog_lines_have_the_mlperf_format(tmp_path):
    from eval.mllog import EVENT_TYPES, FIELD_ORDER, PREFIX, mllog_line

    write_records(tmp_path / "train", [5.0, 3.0] + [0.25] * 24, identity=_identity())
    r = collect(config(tmp_path, hardware_profile="cpu"))
    lines = (tmp_path / "out" / "benchmark.mllog").read_text().splitlines()
    assert lines and all(line.startswith(PREFIX + "{") for line in lines)
    events = [json.loads(line[len(PREFIX):]) for line in lines]
    for event in events:
        assert tuple(event) == FIELD_ORDER  # mlperf_logging.mllog's key order
        assert isinstance(event["time_ms"], int) and event["event_type"] in EVENT_TYPES
        assert event["namespace"] == "" and isinstance(event["metadata"], dict)
    by_key = {e["key"]: e for e in events}
    assert by_key["submission_benchmark"]["value"] == "3dgan"
    assert by_key["global_batch_size"]["value"] == GLOBAL_BATCH
    assert by_key["num_warmup_steps"]["value"] == 2
    stats = by_key["tracked_stats"]
    assert stats["value"]["throughput"] == pytest.approx(r["showers_per_second"])
    assert stats["metadata"]["measured_steps"] == 24 and stats["metadata"]["hardware_profile"] == "cpu"
    assert by_key["caloforge_seconds_per_step_median"]["value"] == pytest.approx(0.25)
    assert by_key["caloforge_seconds_per_step_median"]["metadata"]["unit"] == "s"
    with pytest.raises(ValueError, match="event_type"):
        mllog_line("x", 1, 0, event_type="POINT")


# --------------------------------------------------------------------------- the collector's own measurements
def write_shower_dataset(folder, n_events=24, shards=2, seed=0):
    """A converted dataset of random sparse 51x51x25 showers, written with the project's record
    encoder and manifest writer (no Beam: the collector only reads it)."""
    import numpy as np
    import tensorflow as tf

    from data_prep import manifest as manifest_lib
    from data_prep import records

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries, digests, event = [], [], 0
    for k in range(shards):
        name = f"train-{k:05d}-of-{shards:05d}.tfrecord"
        with tf.io.TFRecordWriter(str(folder / name)) as writer:
            for _ in range(n_events // shards):
                image = (rng.exponential(1.0, (51, 51, 25)) * (rng.random((51, 51, 25)) < 0.02)).astype(np.float32)
                record = records.encode_event(image, 100.0, 1.5, 1.5, float(image.sum()), event, 0)
                writer.write(record)
                digests.append(records.record_digest(record))
                event += 1
        entries.append({"split": "train", "name": name, "records": n_events // shards,
                        "bytes": (folder / name).stat().st_size, "sha256": "-"})
    manifest = manifest_lib.Manifest(
        image_shape=[51, 51, 25], encoding="dense", compression="none", counts={"train": event}, shards=entries,
        preprocessing={}, split={}, events_read=event, bad_events={}, dropped_low_sum=0, histograms={},
        records_digest={"train": format(records.combine_digests(*digests), "x")}, sources=[], versions={}, config={},
        seed=0)
    manifest_lib.write_manifest(manifest.with_content_hash(), str(folder))
    return str(folder / "manifest.json")


def test_input_generation_monte_carlo_flops_and_fingerprint_on_real_outputs(tmp_path):
    """A tiny generator exported by the trainer's exporter, a real dataset, config.json with the
    trainer's fingerprint: every figure of the collector's own measurements is present and labelled."""
    import tensorflow as tf

    from trainer.config import TrainConfig
    from trainer.export import export_generator
    from trainer.flops import discriminator_flops, generator_flops, step_flops
    from trainer.models import Discriminator, build_generator
    from trainer.presets import get_preset
    from trainer.timings import config_hash, run_fingerprint, run_identity

    manifest = write_shower_dataset(tmp_path / "data")
    train = tmp_path / "train"
    train_config = TrainConfig(data=manifest, output_dir=str(train), preset="tiny", batch_size_per_replica=4,
                               jit_compile=False, precision="float32", seed=11).to_dict()
    write_records(train, [4.0, 2.0] + [0.1] * 20, global_batch=4, identity=run_identity(train_config))
    (train / "config.json").write_text(json.dumps({
        "train_config": train_config,
        "derived": {"replicas": 1, "device_kind": "cpu", "strategy_class": "_DefaultDistributionStrategy",
                    "fingerprint": run_fingerprint(tf.distribute.get_strategy())}}))
    preset = get_preset("tiny")
    export_generator(build_generator(preset), "tiny", str(train / "generator"), {})
    r = collect(config(tmp_path, manifest=manifest, hardware_profile="cpu", input_batches=3,
                       generation_batch_sizes=(2, 16, 4096), generation_seconds=0.2, generation_memory_gb=1.0,
                       mc_seconds=0.2, count_flops=True, include_tf_devices=True))
    assert r["status"] == "measured" and r["seconds_per_step"] == pytest.approx(0.1)
    assert r["input_pipeline"]["events_per_second"] > 0 and r["input_pipeline"]["batch"] == 4
    assert r["input_pipeline"]["headroom_vs_training"] == pytest.approx(
        r["input_pipeline"]["events_per_second"] / r["showers_per_second"])
    batches = r["generation"]["batches"]
    assert batches["2"]["showers_per_second"] > 0 and batches["16"]["calls"] >= 1
    assert "needs about" in batches["4096"]["skipped"]  # 4096 tiny showers: over 1 GB by estimate
    assert r["generation"]["device"].startswith("cpu")
    assert r["monte_carlo"]["showers_per_second"] > 0 and r["monte_carlo"]["grid"] == [51, 51, 25]
    g = generator_flops(build_generator(preset, implementation="keras"))
    d = discriminator_flops(Discriminator(preset, implementation="keras"))
    flops = r["flops"]
    assert flops["model_per_step"] == step_flops(g, d, 2) * 4
    assert flops["achieved_model_flops_per_second"] == pytest.approx(flops["model_per_step"] / 0.1)
    fp = r["fingerprint"]
    assert fp["hardware_profile"] == "cpu" and fp["preset"] == "tiny" and fp["dataset"] == manifest
    assert fp["config_hash"] == config_hash(train_config) and fp["identity_recorded"]
    trainer = fp["trainer"]
    assert trainer["physical_devices"]["CPU"] >= 1 and trainer["replicas"] == 1
    assert (trainer["precision"], trainer["xla"], trainer["batch_size_per_replica"], trainer["global_batch"]) == (
        "float32", False, 4, 4)
    assert {"tensorflow-cpu", "keras", "apache-beam", "kfp"} <= set(trainer["libraries"])
    assert "git_commit" in trainer and trainer["device_summary"].startswith("CPU")
    assert set(fp["collector"]["versions"]) >= {"tensorflow", "keras", "kfp", "apache-beam"}
    figures = r["figures"]
    assert {"generation_showers_per_second_batch2", "monte_carlo_showers_per_second", "input_events_per_second",
            "achieved_model_flops_per_second"} <= set(figures)
    assert "generation_showers_per_second_batch4096" not in figures
    # The index page's rows, read from the written file (JSON sorts its keys as text), in batch order.
    from eval.bench_report import summary_rows

    written = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    rows = [(name, value) for name, value, _ in summary_rows(written) if name.startswith("generation")]
    assert [name for name, _ in rows] == ["generation, batch 2", "generation, batch 16", "generation, batch 4096"]
    assert rows[2][1] == "skipped"
