"""Scaling arithmetic (speedup, efficiency in both forms, cost per epoch) on known answers, the
price table, and `caloforge bench compare` on run folders the collector wrote from synthetic
timing records."""

import json

import pytest

from eval.benchmark import PUBLISHED_TRAIN_EVENTS, REFERENCE_LABEL, BenchmarkConfig, collect
from eval.scaling import (
    cost_per_epoch,
    efficiency_throughput,
    efficiency_time,
    load_prices,
    run_cost,
    speedup,
)
from pipelines.cli import main
from tests.test_benchmark_collector import NO_EXTRAS, write_records


def test_scaling_arithmetic_known_answers():
    assert speedup(100.0, 25.0) == pytest.approx(4.0)
    # T(1) / (N x T(N)): 100 s on one replica, 30 s on four.
    assert efficiency_time(100.0, 1, 30.0, 4) == pytest.approx(100.0 / 120.0)
    # Against a 2-replica baseline: the published V100 runs, 1784.42 s on 2 and 34.9 s on 128.
    assert efficiency_time(1784.42, 2, 34.9, 128) == pytest.approx(0.799, abs=1e-3)
    # Throughput form: 20 showers/s on 1 replica, 72 on 4 -> 18 per replica = 0.9.
    assert efficiency_throughput(20.0, 1, 72.0, 4) == pytest.approx(0.9)
    assert efficiency_throughput(40.0, 2, 72.0, 4) == pytest.approx(0.9)
    # One hour on 4 devices at $2 per device-hour.
    assert cost_per_epoch(3600.0, 4, 2.0) == pytest.approx(8.0)
    assert cost_per_epoch(900.0, 8, 3.0) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="seconds=0"):
        speedup(1.0, 0.0)
    with pytest.raises(ValueError, match="usd_per_device_hour"):
        cost_per_epoch(1.0, 1, -1.0)


def test_price_table_user_file_over_defaults_and_bad_entries(tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("source: my quote\nprofiles:\n  gpu-t4-1: {usd_per_device_hour: 0.5}\n"
                      "  my-box: {usd_per_device_hour: 1.5, devices: 3}\n")
    table = load_prices(str(prices))
    assert table["gpu-t4-1"].usd_per_device_hour == 0.5 and table["gpu-t4-1"].devices == 1
    assert table["my-box"].devices == 3 and "my quote" in table["my-box"].source
    assert table["tpu-v3-8"].devices == 4  # defaults kept for the others
    cost = run_cost(7200.0, "my-box", table)
    assert cost["usd_per_epoch"] == pytest.approx(2 * 3 * 1.5)
    assert "not in the price table" in run_cost(1.0, "nope", table)["why"]
    assert run_cost(1.0, None, table)["usd_per_epoch"] is None
    prices.write_text("profiles:\n  x: {usd_per_device_hour: -1}\n")
    with pytest.raises(ValueError, match=r"profile 'x': usd_per_device_hour=-1"):
        load_prices(str(prices))
    prices.write_text("profiles:\n  x: {usd_per_device_hour: 1, devices: 0}\n")
    with pytest.raises(ValueError, match="devices=0"):
        load_prices(str(prices))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_prices(str(tmp_path / "absent.yaml"))


def test_default_prices_cover_every_builtin_profile_with_its_device_count():
    """The packaged table bills what each profile requests: GPUs x workers, TPU chips, one CPU machine."""
    import math

    from pipelines.hardware import resolve
    from pipelines.hardware_profiles import BUILTIN_PROFILES

    table = load_prices()
    assert set(BUILTIN_PROFILES) <= set(table)
    for name, profile in BUILTIN_PROFILES.items():
        resolved = resolve(profile, "kubeflow")
        if profile.accelerator == "gpu":
            expected = profile.count * profile.workers
        elif profile.accelerator == "tpu":
            expected = math.prod(int(d) for d in resolved.tpu_topology.split("x"))
        else:
            expected = profile.workers
        assert table[name].devices == expected, name
        assert table[name].usd_per_device_hour > 0


# --------------------------------------------------------------------------- compare
STEP_SECONDS = {1: 0.4, 2: 0.44, 4: 0.5}  # weak scaling: 8 showers per replica per step
PROFILES = {1: "gpu-a100-1", 2: "gpu-l4-4", 4: "gpu-a100-8"}


def make_run(root, replicas, preset="small", steps=24, sf=(0.05, 0.01), profile=None):
    """A run folder as `caloforge run` leaves it: benchmark/ by the collector, evaluation/metrics.json."""
    from trainer.config import TrainConfig
    from trainer.timings import run_identity

    run = root / f"run-{preset}-{replicas}r"
    identity = run_identity(TrainConfig(preset=preset, batch_size_per_replica=8).to_dict())
    write_records(run / "model", [3.0, 2.0] + [STEP_SECONDS[replicas]] * steps, global_batch=8 * replicas,
                  replicas=replicas, identity=identity)
    collect(BenchmarkConfig(train_dir=str(run / "model"), output_dir=str(run / "benchmark"),
                            hardware_profile=profile or PROFILES[replicas], **NO_EXTRAS))
    (run / "evaluation").mkdir()
    (run / "evaluation" / "metrics.json").write_text(json.dumps({"summary": {
        "passed": sf[0] <= 3 * sf[1], "generated": {"sampling_fraction_mre": sf[0]},
        "noise_floor": {"sampling_fraction_mre": sf[1]}}}))
    return run


def test_compare_table_speedup_efficiency_cost_physics_and_reference_apart(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for n in (4, 1, 2):
        make_run(sweep, n, sf=(0.02, 0.01) if n < 4 else (0.30, 0.01))
    make_run(sweep, 2, preset="tiny", steps=10)  # too few steps: listed, no figures
    from eval.bench_compare import compare, render_text, write_outputs

    comparison = compare([str(sweep)])
    rows = {r.name: r for r in comparison.runs}
    assert set(rows) == {"run-small-1r", "run-small-2r", "run-small-4r", "run-tiny-2r"}
    t = {n: (PUBLISHED_TRAIN_EVENTS // (8 * n)) * STEP_SECONDS[n] for n in (1, 2, 4)}
    x = {n: 8 * n / STEP_SECONDS[n] for n in (1, 2, 4)}
    for n in (1, 2, 4):
        row = rows[f"run-small-{n}r"]
        assert row.baseline == "run-small-1r" and row.seconds_per_epoch == pytest.approx(t[n])
        assert row.speedup == pytest.approx(t[1] / t[n])
        assert row.efficiency_time == pytest.approx(t[1] / (n * t[n]))
        assert row.efficiency_throughput == pytest.approx((x[n] / n) / x[1])
    # The two forms differ only by the epoch's whole-batch rounding here.
    assert rows["run-small-4r"].efficiency_time == pytest.approx(rows["run-small-4r"].efficiency_throughput, rel=1e-3)
    assert rows["run-small-4r"].efficiency_time == pytest.approx(0.8, rel=1e-3)
    # Cost: 8 A100s at the packaged $3.67 per device-hour.
    assert rows["run-small-4r"].usd_per_epoch == pytest.approx(t[4] / 3600 * 8 * 3.67)
    # The physics headline beside each run: the fastest one breaks the sampling fraction.
    assert (rows["run-small-4r"].sampling_fraction_mre, rows["run-small-4r"].physics_passed) == (0.30, False)
    tiny = rows["run-tiny-2r"]
    assert "fewer than min_measured_steps" in tiny.status and tiny.speedup is None and tiny.seconds_per_epoch is None
    # Published rows: their own table, own baselines; none of them among our runs.
    assert comparison.reference and all(r["series"] not in rows for r in comparison.reference)
    v100 = [r for r in comparison.reference if r["series"] == "gpu-v100 b96 prefetch=yes cache=no"]
    assert [r["replicas"] for r in v100] == [2, 4, 8, 16, 32, 64, 128]
    assert v100[-1]["efficiency_time"] == pytest.approx(1784.42 * 2 / (128 * 34.9))
    assert {r["device"] for r in comparison.reference} == {"gpu-v100", "tpu-preemtible-v2", "tpu-preemtible-v3"}
    text = render_text(comparison)
    ours, published = text.split(REFERENCE_LABEL)
    assert "run-small-4r" in ours and "gpu-v100" not in ours and "tpu" not in ours
    assert "run-small" not in published and "published series (NOT ours)" in published
    assert "0.3 (0.01)" in ours and "FAIL" in ours
    written = write_outputs(comparison, str(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["published_reference"]["label"] == REFERENCE_LABEL and len(saved["runs"]) == 4
    with open(written["plot"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # The command: a run folder, a benchmark.json and the sweep (its runs counted once).
    single = sweep / "run-small-1r"
    assert main(["bench", "compare", str(sweep), str(single), "--output-dir", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert out.count("run-small-1r") == 1 and REFERENCE_LABEL in out
    assert (tmp_path / "cli" / "compare.png").exists()
    assert main(["bench", "compare", str(single / "benchmark" / "benchmark.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["name"] == "run-small-1r"


def test_compare_user_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "compare", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"caloforge bench: error: {tmp_path / 'absent'}: no such run, sweep folder or benchmark.json"]
    (tmp_path / "empty").mkdir()
    assert main(["bench", "compare", str(tmp_path / "empty")]) == 2
    assert "no benchmark.json in it or below" in capsys.readouterr().err
    other = tmp_path / "other" / "benchmark.json"
    other.parent.mkdir()
    other.write_text(json.dumps({"hello": 1}))
    assert main(["bench", "compare", str(other)]) == 2
    assert "not a caloforge benchmark.json" in capsys.readouterr().err
