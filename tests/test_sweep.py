"""The scaling sweep: its table from the points' records (matched by what they record, not by order),
the points it plans, the YAML it compiles per target, its one-line user errors, and the real local
sweep over 1 and 2 logical CPU devices through kfp.local."""

import csv
import io
import json
import math

import pytest
import yaml

from eval.benchmark import PUBLISHED_TRAIN_EVENTS, REFERENCE_LABEL, BenchmarkConfig, collect
from eval.scaling import load_prices
from pipelines.cli import main
from tests.test_benchmark_collector import NO_EXTRAS, write_records

# --------------------------------------------------------------------------- the table
STEP_SECONDS = {"cpu": 0.40, "cpu-x2": 0.50, "cpu-x4": 0.62}
REPLICAS = {"cpu": 1, "cpu-x2": 2, "cpu-x4": 4}
SF = {"cpu": (0.02, 0.01), "cpu-x2": (0.03, 0.01), "cpu-x4": (0.40, 0.01)}


def _point_outputs(root, name, index):
    """One point's outputs where kfp.local leaves them: model, benchmark and evaluation folders of
    the loop's iteration `index` (names say nothing of the point)."""
    from trainer.config import TrainConfig
    from trainer.timings import run_identity

    it = root / f"for-loop-1-iteration-{index}"
    model, bench, evaluation = it / "train-gan" / "model", it / "collect-benchmark" / "benchmark", it / "eval" / "evaluation"
    identity = run_identity(TrainConfig(preset="tiny", batch_size_per_replica=2).to_dict())
    n = REPLICAS[name]
    write_records(model, [3.0, 2.0] + [STEP_SECONDS[name]] * 20, global_batch=2 * n, replicas=n, identity=identity)
    collect(BenchmarkConfig(train_dir=str(model), output_dir=str(bench), hardware_profile=name, train_events=384,
                            **NO_EXTRAS))
    evaluation.mkdir(parents=True)
    mre, floor = SF[name]
    (evaluation / "metrics.json").write_text(json.dumps({
        "config": {"generator_dir": str(model / "generator")},
        "summary": {"passed": mre <= 3 * floor, "generated": {"sampling_fraction_mre": mre},
                    "noise_floor": {"sampling_fraction_mre": floor}}}))
    (evaluation / "report.html").write_text(f"<html>{name}</html>")
    return str(bench), str(evaluation)


def test_sweep_table_matches_outputs_by_their_records_with_known_answers(tmp_path, capsys):
    from eval.sweep import SWEEP_CSV, SWEEP_HTML, SWEEP_JSON, SWEEP_MD, SWEEP_PNG, summarize

    names = ["cpu", "cpu-x2", "cpu-x4"]
    outputs = [_point_outputs(tmp_path / "kfp", name, i) for i, name in enumerate(names)]
    points = [{"point": n, "hardware_profile": n, "cpu_logical_devices": REPLICAS[n] if REPLICAS[n] > 1 else 0,
               "replicas": REPLICAS[n]} for n in names]
    # The backend collects in any order: benchmarks reversed, evaluations rotated.
    benchmarks = [b for b, _ in outputs][::-1]
    evaluations = [e for _, e in outputs][1:] + [outputs[0][1]]
    out = tmp_path / "sweep"
    result = summarize(points, benchmarks, evaluations, str(out),
                       prices_yaml="source: my quote\nprofiles:\n  cpu: {usd_per_device_hour: 2.0}\n")
    rows = result["rows"]
    assert [r["point"] for r in rows] == names
    t = {n: PUBLISHED_TRAIN_EVENTS // (2 * REPLICAS[n]) * STEP_SECONDS[n] for n in names}
    x = {n: 2 * REPLICAS[n] / STEP_SECONDS[n] for n in names}
    for r in rows:
        n, name = r["replicas"], r["point"]
        assert n == REPLICAS[name] and r["baseline"] == "cpu" and r["status"] == "measured"
        assert r["seconds_per_epoch"] == pytest.approx(t[name])
        assert r["seconds_per_epoch_this_dataset"] == pytest.approx(384 // (2 * n) * STEP_SECONDS[name])
        assert r["speedup"] == pytest.approx(t["cpu"] / t[name])
        assert r["efficiency_time"] == pytest.approx(t["cpu"] / (n * t[name]))
        assert r["efficiency_throughput"] == pytest.approx((x[name] / n) / x["cpu"])
        # cpu-xN is the cpu machine split: billed at the given cpu price, one machine.
        assert r["usd_per_epoch"] == pytest.approx(t[name] / 3600 * 2.0) and "my quote" in r["cost_note"]
        # Each point's own physics, though the evaluations came in another order.
        assert (r["sampling_fraction_mre"], r["sampling_fraction_floor"]) == SF[name]
    assert [r["physics_passed"] for r in rows] == [True, True, False]
    saved = json.loads((out / SWEEP_JSON).read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and saved["prices"] == "prices.yaml"
    assert any("not speed" in n for n in saved["notes"])
    table = list(csv.DictReader(io.StringIO((out / SWEEP_CSV).read_text())))
    assert [r["point"] for r in table] == names and float(table[2]["speedup"]) == pytest.approx(rows[2]["speedup"])
    md = (out / SWEEP_MD).read_text()
    ours, published = md.split(REFERENCE_LABEL)
    assert "| cpu-x4 |" in ours and "gpu-v100" not in ours and "cpu-x4" not in published
    assert '<img alt="speedup vs replicas' in (out / SWEEP_HTML).read_text()
    assert (out / SWEEP_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "points" / "cpu-x4" / "evaluation" / "report.html").read_text() == "<html>cpu-x4</html>"
    # `bench compare` reads the sweep folder: the same three rows, counted once.
    assert main(["bench", "compare", str(out), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert sorted(r["name"] for r in runs) == names
    # A point whose benchmark is missing is named.
    with pytest.raises(ValueError, match="sweep point 'cpu-x2': 0 benchmarks record hardware profile 'cpu-x2'"):
        summarize(points, [benchmarks[0], benchmarks[2]], evaluations, str(tmp_path / "again"))


def test_split_cpu_bills_as_the_cpu_machine():
    from eval.scaling import run_cost

    prices = load_prices()
    assert run_cost(3600.0, "cpu-x2", prices)["usd_per_epoch"] == pytest.approx(prices["cpu"].usd_per_device_hour)
    assert run_cost(3600.0, "gpu-a100-1-x2", prices)["usd_per_epoch"] is None


# --------------------------------------------------------------------------- the points
def test_sweep_points_from_profiles_and_replica_counts():
    from pipelines.hardware_profiles import profile_defaults
    from pipelines.sweep import parse_sweep, plan_sweep

    profiles = parse_sweep(" 1, 2,4 ")
    assert [p.name for p in profiles] == ["cpu", "cpu-x2", "cpu-x4"] and profiles[2].count == 4
    plan = plan_sweep(profiles, "vertex", profile_defaults)
    items = plan.items()
    assert [(i["replicas"], i["cpu_logical_devices"], i["distribution_strategy"]) for i in items] == [
        (1, 0, "auto"), (2, 2, "mirrored"), (4, 4, "mirrored")]
    assert "hardware_profile" not in plan.shared_values() and plan.shared_values()["preset"] == "small"
    gpus = plan_sweep(parse_sweep("gpu-l4-1,gpu-l4-4"), "vertex", profile_defaults)
    assert [(i["replicas"], i["distribution_strategy"], i["precision"]) for i in gpus.items()] == [
        (1, "one_device", "mixed_float16"), (4, "mirrored", "mixed_float16")]
    for bad, message in [("", "give profiles or replica counts"), ("0", "replica count 0 must be 1 to 64"),
                         ("1,cpu", "cpu given twice"), ("gpu-a100-9", "'gpu-a100-9' is not a profile")]:
        with pytest.raises(ValueError, match=message):
            parse_sweep(bad)


def _compile(tmp_path, *flags):
    path = tmp_path / "sweep.yaml"
    assert main(["compile", "--pipeline", "sweep", "--output", str(path), *flags]) == 0
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    return docs[0], docs[1:]


def test_sweep_compiles_a_parallel_for_over_the_points_and_a_collected_fan_in(tmp_path, capsys):
    spec, _ = _compile(tmp_path)
    assert "cpu-x2: 2 replica(s), strategy mirrored" in capsys.readouterr().out
    assert spec["pipelineInfo"]["name"] == "caloforge-3dgan-sweep"
    root = spec["root"]
    params = root["inputDefinitions"]["parameters"]
    points = params["sweep_points"]["defaultValue"]
    assert [p["point"] for p in points] == ["cpu", "cpu-x2"] and points[1]["cpu_logical_devices"] == 2
    for name in ("distribution_strategy", "cpu_logical_devices", "batch_size_per_replica", "hardware_profile"):
        assert name not in params  # a point's, from its profile
    assert params["preset"]["defaultValue"] == "small" and params["compile_target"]["defaultValue"] == "vertex"
    tasks = root["dag"]["tasks"]
    loop = next(t for name, t in tasks.items() if name.startswith("for-loop"))
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--sweep_points"
    assert loop["dependentTasks"] == ["convert-to-tfrecords"]  # the data are prepared once
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"train-gan", "evaluate-gan", "collect-benchmark"}
    train = inner["train-gan"]["inputs"]["parameters"]
    assert train["cpu_logical_devices"]["parameterExpressionSelector"] == 'parseJson(string_value)["cpu_logical_devices"]'
    fan_in = tasks["summarize-sweep"]["inputs"]["artifacts"]
    assert fan_in["benchmarks"]["taskOutputArtifact"]["producerTask"].startswith("for-loop")
    assert set(fan_in) == {"benchmarks", "evaluations"}
    assert '"sweep": [' in spec["pipelineInfo"]["description"]


def test_cloud_sweeps_carry_each_points_hardware(tmp_path):
    spec, _ = _compile(tmp_path, "--sweep", "gpu-a100-1,tpu-v5e-8,gpu-a100-8x4", "--target", "vertex",
                       "--registry", "example.org/r", "--param", "batch_size_per_replica=128")
    points = {p["point"]: p for p in spec["root"]["inputDefinitions"]["parameters"]["sweep_points"]["defaultValue"]}
    a100 = points["gpu-a100-1"]["worker_pool_specs"]
    assert a100[0]["machine_spec"] == {"machine_type": "a2-highgpu-1g", "accelerator_type": "NVIDIA_TESLA_A100",
                                       "accelerator_count": 1}
    assert a100[0]["container_spec"]["image_uri"] == "example.org/r/caloforge-gpu:0.1.0"
    tpu = points["tpu-v5e-8"]["worker_pool_specs"][0]
    assert tpu["machine_spec"] == {"machine_type": "ct5lp-hightpu-8t", "tpu_topology": "2x4"}
    assert tpu["container_spec"]["image_uri"] == "example.org/r/caloforge-tpu:0.1.0"
    assert [p["replica_count"] for p in points["gpu-a100-8x4"]["worker_pool_specs"]] == [1, 3]
    assert points["gpu-a100-8x4"]["restart_job_on_worker_restart"] is True
    assert points["tpu-v5e-8"]["distribution_strategy"] == "tpu" and points["gpu-a100-8x4"]["replicas"] == 32
    spec, platform = _compile(tmp_path, "--sweep", "gpu-l4-1,gpu-l4-4", "--target", "kubeflow")
    resources = spec["deploymentSpec"]["executors"]["exec-train-gan"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "sweep_points-loop-item-subvar-accelerator_count" in resources["accelerator"]["resourceCount"]
    selectors = platform[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-gan"]["nodeSelector"]
    assert selectors["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}


@pytest.mark.parametrize("argv,message", [
    (["compile", "--pipeline", "sweep", "--sweep", "1,gpu-a100-1"],
     "the points imply different values of preset, epochs, max_steps"),
    (["compile", "--pipeline", "sweep", "--sweep", "gpu-a100-1,gpu-a100-8x4", "--target", "kubeflow"],
     "gpu-a100-8x4 needs several pods started together"),
    (["compile", "--pipeline", "sweep", "--sweep", "gpu-l4-1,tpu-v5e-8", "--target", "kubeflow"],
     "points of gpu and tpu together"),
    (["compile", "--pipeline", "sweep", "--hardware", "gpu-a100-8"], "--hardware: a sweep trains on each of"),
    (["compile", "--sweep", "1,2"], "--sweep: only for the sweep; add --pipeline sweep"),
    (["compile", "--pipeline", "sweep", "--sweep", "2", "--param", "distribution_strategy=one_device"],
     "distribution_strategy='one_device', cpu_logical_devices=2"),
    (["compile", "--pipeline", "sweep", "--prices", "absent.yaml"], "price table absent.yaml: no such file"),
    (["run", "--local", "--pipeline", "sweep", "--sweep", "1,gpu-t4-1", "--param", "preset=small",
      "--param", "epochs=1", "--param", "max_steps=10"], "gpu-t4-1 needs accelerators or several machines"),
])
def test_sweep_user_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------- the real local sweep
TINY_SWEEP = {
    "mc_events": "480", "mc_events_per_file": "160", "mc_energy_min": "20", "mc_energy_max": "200",
    "preset": "tiny",
    "max_steps": "22",  # 2 warm-up records + 20 measured steps: the collector's minimum
    "batch_size_per_replica": "2",
}


@pytest.mark.e2e
@pytest.mark.timeout(2400)
def test_local_sweep_over_one_and_two_logical_cpus(tmp_path, capsys):
    """Plumbing, not speed: both points train, are judged and benchmarked, and the table holds.

    Over a minute on purpose: it is the one test of the sweep DAG as kfp.local runs it (data once,
    two trainings, evaluations and benchmarks, the fan-in), on the smallest configuration the
    collector gives figures for (20 measured steps) and the evaluator judges (480 events). The
    timeout allows for a loaded machine (one run under load 10 on 2 cores took 34 min).
    """
    out = tmp_path / "sweep"
    argv = ["run", "--local", "--pipeline", "sweep", "--sweep", "1,2", "--output-dir", str(out)]
    for key, value in TINY_SWEEP.items():
        argv += ["--param", f"{key}={value}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "cpu-x2" in printed and "index.html" in printed
    check_local_sweep_folder(out)


def check_local_sweep_folder(out):
    """What a local sweep over 1 and 2 logical CPUs on TINY_SWEEP leaves in its folder."""
    from eval.bench_compare import compare

    sweep = json.loads((out / "sweep.json").read_text())
    rows = {r["point"]: r for r in sweep["rows"]}
    assert list(rows) == ["cpu", "cpu-x2"]
    one, two = rows["cpu"], rows["cpu-x2"]
    assert (one["replicas"], two["replicas"]) == (1, 2) and (one["global_batch"], two["global_batch"]) == (2, 4)
    # The second point really trained on two replicas: MirroredStrategy over the split CPU.
    summary = json.loads((out / "points" / "cpu-x2" / "model" / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["extra"]["strategy_class"] == "MirroredStrategy"
    config = json.loads((out / "points" / "cpu-x2" / "model" / "config.json").read_text())
    assert config["derived"]["cpu_logical_devices"] == 2
    for row in (one, two):
        assert row["status"] == "measured" and row["measured_steps"] == 20 and row["preset"] == "tiny"
        assert row["showers_per_second"] > 0 and row["seconds_per_epoch"] > 0
        assert row["seconds_per_epoch_this_dataset"] > 0 and row["train_events"] > 0
        # cpu-x2 is the cpu machine split in two: billed as one cpu machine (packaged $0.38/h).
        assert row["usd_per_epoch"] == pytest.approx(row["seconds_per_epoch"] / 3600 * 0.38, rel=1e-9)
        # The physics headline beside each row (a 22-step GAN is judged, whatever the verdict).
        assert math.isfinite(row["sampling_fraction_mre"]) and math.isfinite(row["sampling_fraction_floor"])
        assert row["physics_passed"] in (True, False)
    # Speedup and efficiency are the rows' own arithmetic (no wall times asserted: plumbing).
    assert one["speedup"] == pytest.approx(1.0) and one["efficiency_time"] == pytest.approx(1.0)
    assert two["speedup"] == pytest.approx(one["seconds_per_epoch"] / two["seconds_per_epoch"], rel=1e-9)
    assert two["efficiency_time"] == pytest.approx(one["seconds_per_epoch"] / (2 * two["seconds_per_epoch"]), rel=1e-9)
    assert two["efficiency_throughput"] == pytest.approx(
        (two["showers_per_second"] / 2) / one["showers_per_second"], rel=1e-9)
    table = list(csv.DictReader(io.StringIO((out / "sweep.csv").read_text())))
    assert [r["point"] for r in table] == ["cpu", "cpu-x2"] and all(r["usd_per_epoch"] for r in table)
    for name in ("sweep.md", "scaling.png", "index.html", "run.json"):
        assert (out / name).exists(), name
    for point in ("cpu", "cpu-x2"):
        for stage in ("model/generator/generator.keras", "evaluation/report.html", "benchmark/benchmark.json"):
            assert (out / "points" / point / stage).exists(), (point, stage)
    assert (out / "raw_data" / "files.json").exists() and (out / "tfrecords" / "manifest.json").exists()
    # `bench compare` takes the sweep folder: each point once (kfp/ holds links only).
    runs = {r.name: r for r in compare([str(out)]).runs}
    assert sorted(runs) == ["cpu", "cpu-x2"] and runs["cpu-x2"].speedup == pytest.approx(two["speedup"])
