"""`caloforge simulate`: a trained generator's showers written in the Monte Carlo's 3DGAN HDF5 layout,
read unchanged by Monte Carlo readers and the converter, streamed, never over someone else's file."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
import tracemalloc

import h5py
import numpy as np
import pytest

from data_prep import h5layout, records
from data_prep.angle import measured_angle, pseudorapidity
from data_prep.montecarlo import MonteCarloConfig, generate_files, simulate_file_events
from eval import simulate as sim
from eval.simulate import SimulateConfig, ValueSpec, chunk_events_for, draw_conditions, parse_values
from pipelines.cli import main
from tests.test_cli_surface import _probe

IN_PROCESS_BEAM = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
# Showers of one generator and seed made in differently sized batches agree to float32 rounding
# only (oneDNN picks kernels by batch shape): tests/test_trainer_train.py measured at most 2.8e-6
# of a shower's largest cell and allows 1e-5; so do we.
ACROSS_BATCHES_OF_PEAK = 1e-5


# ------------------------------------------------------------------------------- conditions (no model)
def test_value_syntax_single_list_and_range():
    assert parse_values("energies", "100") == ValueSpec(text="100", values=(100.0,))
    assert parse_values("energies", " 10, 50 ,100") == ValueSpec(text="10, 50 ,100", values=(10.0, 50.0, 100.0))
    assert parse_values("energies", "10:200") == ValueSpec(text="10:200", low=10.0, high=200.0)
    assert parse_values("angles", "1.0472:2.0944").bounds == (1.0472, 2.0944)


@pytest.mark.parametrize("name, text, message", [
    ("energies", "200:10", "a range LO:HI needs LO < HI (did you mean 10:200?)"),
    ("energies", "50:50", "write the single value 50"),
    ("energies", "10:50:90", "is not one value, a comma-separated list"),
    ("energies", "ten", "is not one value"),
    ("energies", "", "is not one value"),
    ("energies", "0,50", "0 GeV is not > 0 GeV"),
    ("energies", "nan", "nan GeV is not > 0 GeV"),
    ("angles", "60:120", "60 rad is not in (0, pi) radians; degrees? theta is in radians: 60:120 degrees is 1.0472:2.0944"),
    ("angles", "90", "degrees? theta is in radians: 90 degrees is 1.5708"),
    ("angles", "-0.1", "is not in (0, pi) radians"),
])
def test_bad_values_name_the_flag_and_the_fix(name, text, message):
    with pytest.raises(ValueError) as info:
        parse_values(name, text)
    assert message in str(info.value) and str(info.value).startswith(f"{name}=")


def test_lists_deal_the_energy_major_grid_and_ranges_draw_per_event():
    energy, theta = draw_conditions(parse_values("energies", "10,50"), parse_values("angles", "1.2,1.5,1.9"), 13, seed=0)
    assert energy.tolist() == [10, 10, 10, 50, 50, 50] * 2 + [10]
    assert theta.tolist() == [1.2, 1.5, 1.9] * 4 + [1.2]
    energy, theta = draw_conditions(parse_values("energies", "10:200"), parse_values("angles", "1.5708"), 500, seed=4)
    assert energy.min() >= 10 and energy.max() <= 200 and np.unique(energy).size == 500 and set(theta) == {1.5708}
    again, _ = draw_conditions(parse_values("energies", "10:200"), parse_values("angles", "1.2:1.9"), 500, seed=4)
    other, _ = draw_conditions(parse_values("energies", "10:200"), parse_values("angles", "1.5708"), 500, seed=5)
    # Energies come from their own stream: an angle range beside them does not change them.
    np.testing.assert_array_equal(again, energy)
    assert not np.array_equal(other, energy)


def test_chunks_divide_the_batch_so_every_write_covers_whole_chunks():
    assert [chunk_events_for(b) for b in (1, 4, 7, 50, 64, 100, 1024, 67)] == [1, 4, 7, 25, 32, 25, 32, 1]


def test_default_angles_follow_the_model_layout():
    config = SimulateConfig(model="m", energies="100", events=1, output="o.h5")
    assert config.conditions(h5layout.LAYOUT_VARIABLE_ANGLE)[1].bounds == pytest.approx((np.pi / 3, 2 * np.pi / 3))
    assert config.conditions(h5layout.LAYOUT_FIXED_ANGLE)[1].values == (np.pi / 2,)
    with pytest.raises(ValueError, match="a fixed-angle generator makes showers at theta = pi/2"):
        SimulateConfig(model="m", energies="100", angles="1.2", events=1, output="o.h5").conditions(
            h5layout.LAYOUT_FIXED_ANGLE)


def test_bad_input_is_one_line_and_exit_2_before_tensorflow_loads(tmp_path):
    fake = tmp_path / "model"
    fake.mkdir()
    (fake / sim.CONFIG_FILE).write_text(json.dumps({"image_shape": [51, 51, 25], "latent_dim": 16, "power": 0.85,
                                                    "energy_scale": 100.0}))
    (fake / sim.MODEL_FILE).write_bytes(b"")  # never loaded: every case fails before
    foreign = tmp_path / "theirs.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = np.arange(3)
    before = foreign.read_bytes()
    base = ["--energies", "50", "--events", "2", "--output", str(tmp_path / "o.h5")]
    cases = [
        (["simulate", "--model", str(tmp_path / "nope"), *base], f"--model {tmp_path / 'nope'}: no such file or folder"),
        (["simulate", "--model", str(tmp_path), *base], f"--model {tmp_path}: no exported generator there"),
        (["simulate", "--model", str(fake), "--energies", "200:10", "--events", "2", "--output", "o.h5"],
         "--energies: energies='200:10': a range LO:HI needs LO < HI (did you mean 10:200?)"),
        (["simulate", "--model", str(fake), "--energies", "50", "--events", "-3", "--output", "o.h5"],
         "--events: events must be an integer >= 1, got -3"),
        (["simulate", "--model", str(fake), "--energies", "50", "--angles", "60:120", "--events", "2", "--output",
          "o.h5"], "degrees? theta is in radians"),
        (["simulate", "--model", str(fake), "--energies", "50", "--events", "2", "--output", str(foreign)],
         f"--output {foreign} exists; pass --overwrite"),
        (["simulate", "--model", str(fake), "--energies", "50", "--events", "2", "--output", str(foreign),
          "--overwrite"], "is not a file caloforge wrote; not even --overwrite replaces it"),
        (["simulate", "--model", str(fake), "--energies", "50", "--events", "2", "--output", str(tmp_path)],
         "is a folder; give a file name"),
    ]
    results = _probe([argv for argv, _ in cases], cwd=str(tmp_path))
    for (argv, message), result in zip(cases, results):
        assert result["rc"] == 2, result
        assert result["stderr"].count("\n") == 1 and message in result["stderr"], result
        assert result["heavy"] == [], result
    assert foreign.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model", "theirs.h5"]


# ------------------------------------------------------------------------------- with a trained generator
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny generator after three real training steps on Monte Carlo showers; the training folder."""
    from trainer.config import TrainConfig
    from trainer.inputs import in_memory_dataset_fn
    from trainer.train import train

    ev = simulate_file_events(MonteCarloConfig(n_events=8, events_per_file=8, energy_min=50, energy_max=150, seed=2,
                                               workers=1), 0, 8)
    arrays = {"ecal": ev["ECAL"] ** np.float32(0.85), "energy": ev["energy"], "theta": ev["theta"],
              "mtheta": ev["mtheta"].astype(np.float32), "ecal_sum": ev["sum"]}
    out = tmp_path_factory.mktemp("train")
    train(TrainConfig(output_dir=str(out), preset="tiny", strategy="default", batch_size_per_replica=4, max_steps=3,
                      checkpoint_every=0, seed=1), dataset_fn=in_memory_dataset_fn(arrays))
    return out


@pytest.fixture(scope="module")
def simulated(trained, tmp_path_factory):
    """10 showers on a 2 x 2 grid of conditions, batches of 4, written through the CLI."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("sim") / "new" / "showers.h5"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["simulate", "--model", str(trained), "--energies", "60,120", "--angles", "1.2,1.9", "--events", "10",
                   "--batch-size", "4", "--seed", "3", "--output", str(out), "--mc-reference-events", "3"])
    assert rc == 0
    return out, json.loads(stdout.getvalue().strip().splitlines()[-1])


def test_file_has_the_monte_carlo_layout_conditions_and_provenance(simulated, trained, tmp_path):
    out, summary = simulated
    mc = generate_files(MonteCarloConfig(n_events=2, events_per_file=2, workers=1), str(tmp_path))[0]
    with h5py.File(mc) as ref, h5py.File(out) as h5:
        assert {k: (v.shape[1:], v.dtype) for k, v in h5.items()} == {k: (v.shape[1:], v.dtype) for k, v in ref.items()}
        assert h5["ECAL"].shape[0] == 10 and h5["ECAL"].chunks[0] == 4 and h5["ECAL"].compression == "gzip"
        assert h5.attrs["ecal_units"] == ref.attrs["ecal_units"] and h5.attrs["layout"] == ref.attrs["layout"]
        ecal, energy, theta = h5["ECAL"][:], h5["energy"][:], h5["theta"][:]
        assert energy.tolist() == [60, 60, 120, 120] * 2 + [60, 60]
        np.testing.assert_allclose(theta, np.float32([1.2, 1.9] * 5))
        # Measured on each written batch (4, 4, 2 showers), as the Monte Carlo's mtheta is.
        np.testing.assert_array_equal(h5["mtheta"][:], np.concatenate([measured_angle(ecal[i:i + 4]) for i in (0, 4, 8)]))
        np.testing.assert_allclose(h5["sum"][:], ecal.reshape(10, -1).sum(axis=1), rtol=1e-6)
        np.testing.assert_allclose(h5["eta"][:], pseudorapidity(theta.astype(np.float64)), rtol=1e-6)
        attrs = dict(h5.attrs)
    assert attrs["generator"] == sim.GENERATOR_ATTR and attrs["seed"] == 3
    assert attrs["model"] == str(trained) and attrs["model_dir"] == str(trained / "generator")
    digest = hashlib.sha256((trained / "generator" / sim.MODEL_FILE).read_bytes()).hexdigest()
    assert attrs["model_sha256"] == digest
    assert json.loads(attrs["generator_config_json"])["preset"] == "tiny"
    assert SimulateConfig.from_dict(json.loads(attrs["config_json"])).events == 10
    versions = json.loads(attrs["versions_json"])
    assert {"keras", "h5py", "hdf5", "numpy", "caloforge", "git_commit"} <= set(versions)
    assert {"tensorflow", "tensorflow-cpu"} & set(versions)
    assert json.loads(attrs["throughput_json"]) == summary["throughput"]
    # The showers are the generator's for this seed (GeneratorBundle.generate), whatever the batch size.
    from trainer.export import load_generator

    expected = load_generator(str(trained / "generator")).generate(energy, theta, seed=3, batch_size=10)
    peak = np.maximum(np.abs(expected).reshape(10, -1).max(axis=1), 1e-30)
    assert (np.abs(ecal - expected).reshape(10, -1).max(axis=1) / peak).max() < ACROSS_BATCHES_OF_PEAK
    # Published with normal permissions (not the temporary file's 0600), nothing else left.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~umask
    assert os.listdir(out.parent) == ["showers.h5"]


def test_showers_per_second_reported_beside_the_monte_carlo(simulated):
    _, summary = simulated
    t = summary["throughput"]
    assert summary["events"] == 10 and summary["empty_showers"] == 0
    assert t["generator"]["events"] == 6 and "warm-up" in t["generator"]["what"]  # batches 2-3 of 4, 4, 2
    assert t["end_to_end"]["events"] == 10 and t["end_to_end"]["showers_per_s"] > 0
    assert t["montecarlo"]["events"] == 3 and t["montecarlo"]["showers_per_s"] > 0
    assert t["speedup_vs_montecarlo"] == pytest.approx(t["generator"]["showers_per_s"] / t["montecarlo"]["showers_per_s"])
    assert t["device"].startswith(("cpu:", "gpu:"))


def test_monte_carlo_readers_read_it_unchanged(simulated):
    out, _ = simulated
    info = h5layout.inspect_file(str(out))
    assert (info.layout, info.n_events, info.has_mtheta, info.chunk_events) == ("variable_angle", 10, True, 4)
    block = h5layout.read_events(str(out), 0, 10)
    assert h5layout.find_bad_events(block, str(out)) == []
    with h5py.File(out, "r") as h5:  # as published analysis code reads a Monte Carlo file
        np.testing.assert_array_equal(block.ecal, h5["ECAL"][:])
        np.testing.assert_array_equal(block.energy, h5["energy"][:])
        np.testing.assert_array_equal(block.mtheta, h5["mtheta"][:].astype(np.float32))


def _records_by_event(folder: str) -> dict[int, dict]:
    from tensorflow.core.example import example_pb2

    from data_prep.dataset import read_manifest

    manifest = read_manifest(folder)
    out = {}
    for shard in manifest.shards:
        with open(os.path.join(folder, shard["name"]), "rb") as fh:
            raw = list(records.iter_tfrecord_file(fh, manifest.compression))
        if not raw:
            continue
        decoded = records.decode_records(raw, tuple(manifest.image_shape), manifest.encoding)
        for i, record in enumerate(raw):
            index = example_pb2.Example.FromString(record).features.feature["event_index"].int64_list.value[0]
            out[index] = {key: value[i] for key, value in decoded.items()}
    return out


def test_converter_accepts_it_and_records_round_trip(simulated, tmp_path):
    out, _ = simulated
    folder = str(tmp_path / "tfr")
    # A generator after three steps puts ~80x the Monte Carlo's energy in its showers: the
    # sampling-fraction check (meant to catch MeV files) would rightly refuse it, so it is off.
    assert main(["convert", "--inputs", str(out), "--output", folder, "--sampling-fraction-range", "none",
                 "--min-shards", "1", "--allow-empty-split", *IN_PROCESS_BEAM]) == 0
    manifest = json.loads(open(os.path.join(folder, "manifest.json")).read())
    got = _records_by_event(folder)
    with h5py.File(out) as h5:
        ecal, energy, theta, mtheta = h5["ECAL"][:], h5["energy"][:], h5["theta"][:], h5["mtheta"][:]
    power, threshold = manifest["preprocessing"]["power"], manifest["preprocessing"]["threshold"]
    kept = np.flatnonzero(np.where(ecal < threshold, 0, ecal).reshape(10, -1).sum(axis=1, dtype=np.float64) > 10)
    assert sorted(got) == kept.tolist() and sum(manifest["counts"].values()) == len(kept) and not manifest["bad_events"]
    for i, rec in got.items():
        assert rec["energy"] == energy[i] and rec["theta"] == theta[i] and rec["mtheta"] == np.float32(mtheta[i])
        kept = np.where(ecal[i] < threshold, 0.0, ecal[i])
        # float32 x ** 0.85 and back: a few ulp relative.
        np.testing.assert_allclose(rec["ecal"] ** (1.0 / power), kept, rtol=2e-6, atol=0, err_msg=f"event {i}")


def test_overwrite_replaces_only_our_file_and_a_failure_publishes_nothing(trained, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    run = ["simulate", "--model", str(trained / "generator"), "--energies", "80", "--events", "4", "--batch-size", "4",
           "--output", str(out), "--mc-reference-events", "0", "--compression", "none"]
    assert main(run) == 0
    first = out.read_bytes()
    assert main(run + ["--seed", "9"]) == 2 and out.read_bytes() == first  # no --overwrite
    assert main(run + ["--seed", "9", "--overwrite"]) == 0
    with h5py.File(out) as h5:
        assert h5.attrs["seed"] == 9 and json.loads(h5.attrs["throughput_json"])["montecarlo"] is None
    # A Monte Carlo file is caloforge's too.
    mc = generate_files(MonteCarloConfig(n_events=2, events_per_file=2, workers=1), str(tmp_path / "mc"))[0]
    assert main(run[:-6] + ["--output", mc, "--mc-reference-events", "0", "--overwrite"]) == 0
    assert h5py.File(mc).attrs["generator"] == sim.GENERATOR_ATTR

    # A failure after the first batch: no output, no temporary file, no folder we made.
    def broken(layout, ecal, energy, theta):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("data_prep.h5writer.derived_datasets", broken)
    target = tmp_path / "made" / "x.h5"
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(run[:-6] + ["--output", str(target), "--mc-reference-events", "0"])
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(run + ["--overwrite"])
    assert not (tmp_path / "made").exists()
    assert sorted(os.listdir(tmp_path)) == ["mc", "s.h5"] and h5py.File(out).attrs["seed"] == 9


def test_memory_holds_one_batch_not_the_whole_sample(trained, tmp_path, monkeypatch):
    """Peak numpy memory (tracemalloc sees numpy's buffers) while writing 8 and 48 showers in
    batches of 4: one shower is 0.26 MB, so holding the sample would add 10 MB for 40 more."""
    from trainer.export import load_generator

    bundle = load_generator(str(trained / "generator"))  # loaded once, outside the measurement
    monkeypatch.setattr("trainer.export.load_generator", lambda directory: bundle)

    def peak(events: int) -> float:
        config = SimulateConfig(model=str(trained), energies="50:150", events=events, batch_size=4,
                                output=str(tmp_path / f"{events}.h5"), compression="none", mc_reference_events=0)
        tracemalloc.start()
        try:
            sim.simulate(config)
            return tracemalloc.get_traced_memory()[1] / 1e6
        finally:
            tracemalloc.stop()

    peak(4)  # warm-up
    small, large = peak(8), peak(48)
    assert large < small + 2.0, (small, large)


def test_fixed_angle_generator_writes_the_fixed_angle_layout(tmp_path):
    from trainer.export import export_generator
    from trainer.models import build_generator
    from trainer.presets import get_preset

    export_generator(build_generator(get_preset("fixed_angle"), "float32"), "fixed_angle", str(tmp_path / "g"), {})
    out = tmp_path / "fixed.h5"
    assert main(["simulate", "--model", str(tmp_path / "g"), "--energies", "100,200", "--events", "3", "--output",
                 str(out), "--mc-reference-events", "2"]) == 0
    info = h5layout.inspect_file(str(out))
    assert (info.layout, info.energy_key, info.image_shape) == ("fixed_angle", "target", (25, 25, 25))
    block = h5layout.read_events(str(out), 0, 3)
    assert block.energy.tolist() == [100, 200, 100]
    with h5py.File(out) as h5:
        assert set(h5) == {"ECAL", "target"} and h5["target"][0, 0] == 11.0
    assert glob.glob(str(tmp_path / ".*.tmp")) == []
