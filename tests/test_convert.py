"""Tests of the Beam HDF5 -> TFRecord conversion: transforms, full runs, publishing rules, bad events."""

from __future__ import annotations

import json
import os
import shutil

import apache_beam as beam
import h5py
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from data_prep import convert as convert_module
from data_prep import h5layout, records, transforms, uri
from data_prep.convert import ConvertConfig, convert, default_pipeline_args, plan_shards, run
from data_prep.dataset import load_split_numpy, read_manifest
from data_prep.errors import InputValidationError
from data_prep.montecarlo import MonteCarloConfig, generate_files
from data_prep.preprocess import PreprocessConfig, preprocess_block

# In-process Python runner: no worker start-up per test; the multi-process default is exercised
# by test_run_command_line_multiprocess.
IN_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


def _options():
    return PipelineOptions(IN_PROCESS)


@pytest.fixture(scope="module")
def mc_files(tmp_path_factory):
    """Two real Monte Carlo files of 120 events each, chunked by 32 events."""
    folder = tmp_path_factory.mktemp("mc")
    return generate_files(MonteCarloConfig(n_events=240, events_per_file=120, seed=3, chunk_events=32), str(folder))


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory, mc_files):
    """A copy of an MC file with a NaN cell in event 5 and a negative primary energy in event 9."""
    path = str(tmp_path_factory.mktemp("bad") / "bad_events.h5")
    shutil.copyfile(mc_files[0], path)
    with h5py.File(path, "r+") as h5:
        ecal = h5["ECAL"][5]
        ecal[10, 10, 3] = np.nan
        h5["ECAL"][5] = ecal
        h5["energy"][9] = -50.0
    return path


@pytest.fixture(scope="module")
def dense_dataset(tmp_path_factory, mc_files):
    out = str(tmp_path_factory.mktemp("dense") / "ds")
    manifest = convert(ConvertConfig(inputs=mc_files, output=out, encoding="dense", min_shards=2), IN_PROCESS)
    return out, manifest


# ----------------------------------------------------------------------------------------------
# Transforms, one at a time, with TestPipeline + Create + assert_that


def test_read_and_validate_transforms_skip_bad_events(bad_file):
    ranges = [transforms.EventRange(0, bad_file, 0, 8), transforms.EventRange(0, bad_file, 8, 16)]
    with test_pipeline.TestPipeline(options=_options()) as p:
        blocks = p | "Ranges" >> beam.Create(ranges) | "Read" >> transforms.ReadEventBlocks()
        checked = blocks | "Validate" >> transforms.ValidateEvents("skip")
        kept = checked.good | beam.FlatMap(lambda sb: [int(i) for i in sb[1].event_index])
        reasons = (
            checked[transforms.TAG_STATS]
            | beam.CombineGlobally(transforms.SumStats())
            | beam.Map(lambda s: sorted((k, v) for k, v in s.items() if k.startswith("bad:") or k == "events_read"))
        )
        assert_that(kept, equal_to([i for i in range(16) if i not in (5, 9)]), label="KeptEvents")
        assert_that(
            reasons,
            equal_to([[("bad:non_finite", 1), ("bad:nonpositive_energy", 1), ("events_read", 16)]]),
            label="BadReasons",
        )


def test_preprocess_and_encode_transforms_split_deterministically(mc_files):
    name = os.path.basename(mc_files[0])
    test_fraction = 0.3
    block = h5layout.read_events(mc_files[0], 0, 40)
    processed, _ = preprocess_block(block, PreprocessConfig())
    expected_test = sorted(
        int(i) for i in processed.event_index if transforms.split_of(name, int(i), test_fraction, 7) == "test"
    )
    expected_train = sorted(int(i) for i in processed.event_index if int(i) not in expected_test)
    assert expected_test and expected_train  # the fixture must exercise both sides

    def event_index(packed: tuple) -> int:
        return int(packed[records.PACKED_FIELDS.index("event_index")])

    with test_pipeline.TestPipeline(options=_options()) as p:
        out = (
            p
            | beam.Create([transforms.EventRange(0, mc_files[0], 0, 40)])
            | transforms.ReadEventBlocks()
            | "Pre" >> transforms.PreprocessEvents(PreprocessConfig())
        )
        encoded = out.processed | transforms.EncodeAndSplit(test_fraction, seed=7)
        assert_that(encoded["test"] | "TestIdx" >> beam.Map(event_index), equal_to(expected_test), label="Test")
        assert_that(encoded["train"] | "TrainIdx" >> beam.Map(event_index), equal_to(expected_train), label="Train")


def test_split_by_file_keeps_files_whole():
    sides = {transforms.split_of("f.h5", i, 0.5, 0, by="file") for i in range(50)}
    assert len(sides) == 1
    per_event = [transforms.split_of("f.h5", i, 0.5, 0, by="event") for i in range(400)]
    assert 0.4 < per_event.count("test") / 400 < 0.6
    with pytest.raises(ValueError, match="split_by"):
        transforms.split_of("f.h5", 0, 0.5, 0, by="shard")


# ----------------------------------------------------------------------------------------------
# Whole conversions


def test_dense_conversion_manifest_is_complete_and_consistent(dense_dataset, mc_files):
    out, manifest = dense_dataset
    assert manifest == read_manifest(out).to_dict()
    assert manifest["events_read"] == 240
    assert manifest["counts"]["train"] + manifest["counts"]["test"] == 240 - manifest["dropped_low_sum"]
    assert manifest["counts"]["test"] > 0 and manifest["counts"]["train"] > manifest["counts"]["test"]
    assert manifest["image_shape"] == [51, 51, 25]
    assert manifest["preprocessing"]["power"] == 0.85 and manifest["preprocessing"]["min_raw_sum"] == 10.0
    # shards on disk are exactly those listed, with the listed sizes, checksums and record counts
    listed = {s["name"]: s for s in manifest["shards"]}
    on_disk = sorted(f for f in os.listdir(out) if f != "manifest.json")
    assert on_disk == sorted(listed)
    assert {s["split"] for s in manifest["shards"]} == {"train", "test"}
    assert sum(1 for s in manifest["shards"] if s["split"] == "train") >= 2  # min_shards
    for name, shard in listed.items():
        path = os.path.join(out, name)
        assert os.path.getsize(path) == shard["bytes"]
        assert uri.sha256(path) == shard["sha256"]
        with open(path, "rb") as fh:
            assert sum(1 for _ in records.iter_tfrecord_file(fh, "none")) == shard["records"]
    for split in ("train", "test"):
        for key in ("energy", "theta", "mtheta"):
            assert sum(manifest["histograms"][split][key]["counts"]) == manifest["counts"][split]
    assert [s["sha256"] for s in manifest["sources"]] == [uri.sha256(f) for f in mc_files]
    assert [s["size_bytes"] for s in manifest["sources"]] == [os.path.getsize(f) for f in mc_files]
    assert set(manifest["versions"]) >= {"python", "tensorflow", "apache_beam", "numpy", "h5py"}
    assert manifest["config"]["encoding"] == "dense" and manifest["seed"] == 0
    assert len(manifest["content_hash"]) == 64
    # every decoded test record is exactly a preprocessed source event (matched by energy).
    # Bit-exact on purpose although Beam read other blocks than the 120 events read here: every
    # float is computed per event by NumPy (per-cell power, per-event float64 sum), whose result
    # does not depend on the block it sits in, on the same machine.
    data = load_split_numpy(out, "test")
    assert data["ecal"].shape == (manifest["counts"]["test"], 51, 51, 25)
    matched = 0
    for path in mc_files:
        processed, _ = preprocess_block(h5layout.read_events(path, 0, 120), PreprocessConfig())
        for i, energy in enumerate(processed.energy):
            hit = np.flatnonzero(data["energy"] == energy)
            if hit.size:
                matched += 1
                np.testing.assert_array_equal(data["ecal"][hit[0]], processed.ecal[i])
                for key in ("theta", "mtheta", "ecal_sum"):
                    assert data[key][hit[0]] == getattr(processed, key)[i], key
    assert matched == manifest["counts"]["test"]


def test_same_inputs_give_same_content_hash_and_seed_changes_it(tmp_path, dense_dataset, mc_files):
    _, first = dense_dataset
    again = convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "again"), encoding="dense",
                                    min_shards=2), IN_PROCESS)
    # Exact on purpose: same inputs, same process, per-event NumPy arithmetic (see
    # docs/data_prep_convert.md: not a cross-CPU fingerprint).
    assert again["content_hash"] == first["content_hash"]
    assert again["created_utc"] and again["output"] != first["output"]
    reseeded = convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "reseeded"), encoding="dense",
                                       min_shards=2, seed=1),
                       IN_PROCESS)
    assert reseeded["content_hash"] != first["content_hash"]
    assert reseeded["records_digest"] != first["records_digest"]


def test_refuses_foreign_files_even_with_overwrite_and_overwrite_replaces_a_dataset(tmp_path, mc_files):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        with pytest.raises(FileExistsError, match="precious.txt"):
            run(["--inputs", *mc_files, "--output", str(out), *extra, *IN_PROCESS], save_main_session=False)
        assert sorted(os.listdir(out)) == ["precious.txt"]
    (out / "precious.txt").unlink()
    run(["--inputs", *mc_files, "--output", str(out), "--min-shards", "2", *IN_PROCESS], save_main_session=False)
    with pytest.raises(FileExistsError, match="already holds a dataset.*--overwrite"):
        run(["--inputs", *mc_files, "--output", str(out), *IN_PROCESS], save_main_session=False)
    manifest = run(["--inputs", *mc_files, "--output", str(out), "--overwrite", "--min-shards", "3",
                    "--test-fraction", "0.25", *IN_PROCESS], save_main_session=False)
    names = sorted(os.listdir(out))
    assert "manifest.json" in names
    assert not any(n.startswith("_staging") or n == "_caloforge.lock" for n in names)
    assert sorted(n for n in names if n != "manifest.json") == sorted(s["name"] for s in manifest["shards"])
    assert manifest["split"]["test_fraction"] == 0.25


def test_run_command_line_multiprocess(tmp_path, mc_files):
    """The default runner (multi-process DirectRunner, one worker per core) from the CLI entry."""
    pattern = os.path.join(os.path.dirname(mc_files[0]), "*.h5")
    manifest = run(["--inputs", pattern, "--output", str(tmp_path / "cli"), "--encoding", "sparse",
                    "--compression", "gzip", "--split-by", "file", "--test-fraction", "0.5", "--seed", "2"],
                   save_main_session=False)  # seed 2 hashes one file to each side (0 sent both to test)
    assert "--direct_running_mode=multi_processing" in manifest["run"]["pipeline_args"]
    assert all(s["name"].endswith(".tfrecord.gz") for s in manifest["shards"])
    # split by file: the records of each source file all land on one side
    from tensorflow.core.example import example_pb2

    sides: dict[int, set] = {}
    for shard in manifest["shards"]:
        with open(tmp_path / "cli" / shard["name"], "rb") as fh:
            for record in records.iter_tfrecord_file(fh, "gzip"):
                source = example_pb2.Example.FromString(record).features.feature["source_index"].int64_list.value[0]
                sides.setdefault(int(source), set()).add(shard["split"])
    assert sorted(sides) == [0, 1] and all(len(s) == 1 for s in sides.values())
    assert sides[0] != sides[1]
    assert manifest["run"]["stages"]["EncodeEvents"]["events"] == sum(manifest["counts"].values())


def test_fail_policy_names_file_and_event(tmp_path, bad_file):
    with pytest.raises(InputValidationError) as info:
        convert(ConvertConfig(inputs=[bad_file], output=str(tmp_path / "fail")), IN_PROCESS)
    error = info.value
    assert error.uri == bad_file and error.event_index == 5 and error.dataset == "ECAL"
    assert "non_finite" in error.reason and "event 5" in str(error)
    assert not os.path.exists(tmp_path / "fail" / "manifest.json")
    assert uri.list_files(str(tmp_path / "fail")) == []  # staging removed, nothing half-written


@pytest.fixture(scope="module")
def mev_file(tmp_path_factory, mc_files):
    """A copy of an MC file whose energies are in MeV: every event valid on its own, all labels 1000x off."""
    path = str(tmp_path_factory.mktemp("mev") / "energies_in_mev.h5")
    shutil.copyfile(mc_files[1], path)
    with h5py.File(path, "r+") as h5:
        h5["energy"][...] = h5["energy"][...] * 1000.0
    return path


def test_wrong_energy_unit_fails_before_beam_and_publishes_nothing(tmp_path, mc_files, mev_file):
    out = tmp_path / "mev_out"
    with pytest.raises(InputValidationError) as info:
        convert(ConvertConfig(inputs=[mc_files[0], mev_file], output=str(out)), IN_PROCESS)
    error = info.value
    assert (error.uri, error.dataset, error.event_index) == (mev_file, "energy", None)
    for needed in ("median sampling fraction", "[0.005, 0.08]", "MeV", "--sampling-fraction-range MIN MAX"):
        assert needed in str(error), (needed, str(error))
    # The converter creates the output folder only with its staging folder, just before Beam runs.
    assert not os.path.exists(out)


def test_sampling_fraction_range_flag_reaches_the_check(tmp_path, mev_file):
    from data_prep.config_cli import check_config
    from data_prep.convert import build_parser

    parser = build_parser()
    known, _ = parser.parse_known_args(["--inputs", "a.h5", "--output", "o", "--sampling-fraction-range", "0", "inf"])
    assert check_config(parser, ConvertConfig, known).sampling_fraction_range == (0.0, float("inf"))
    assert ConvertConfig(inputs=["a.h5"], output="o").sampling_fraction_range == (0.005, 0.08)
    for band in ((0.08, 0.005), (-0.01, 0.08), (0.01,)):
        with pytest.raises(ValueError, match="sampling_fraction_range"):
            ConvertConfig(inputs=["a.h5"], output="o", sampling_fraction_range=band).validate()
    # A band around the MeV file's median (0.02 / 1000) lets it through, from the command line.
    manifest = run(["--inputs", mev_file, "--output", str(tmp_path / "wide"), "--min-shards", "1",
                    "--sampling-fraction-range", "5e-6", "8e-5", *IN_PROCESS], save_main_session=False)
    assert manifest["config"]["sampling_fraction_range"] == [5e-6, 8e-5]
    assert manifest["events_read"] == 120


def test_worker_error_text_becomes_input_validation_error():
    """Across processes only the text of a worker's exception survives; it is turned back into
    the structured error."""
    from data_prep.convert import _raise_input_error

    original = InputValidationError("gs://b/f.h5", "nonpositive_energy: primary energy -1.0 GeV is not positive",
                                    dataset="energy", event_index=42)
    wrapped = RuntimeError(f"Traceback ...\ndata_prep.errors.{type(original).__name__}: {original} "
                           f"[while running 'ValidateEvents/CheckEvents']\n")
    with pytest.raises(InputValidationError) as info:
        _raise_input_error(wrapped)
    assert (info.value.uri, info.value.dataset, info.value.event_index) == ("gs://b/f.h5", "energy", 42)
    assert info.value.reason == original.reason
    _raise_input_error(RuntimeError("disk full"))  # anything else is left to the caller


def test_skip_policy_counts_bad_events_by_reason(tmp_path, bad_file):
    manifest = convert(ConvertConfig(inputs=[bad_file], output=str(tmp_path / "skip"), on_bad_event="skip"),
                       IN_PROCESS)
    assert manifest["bad_events"] == {"non_finite": 1, "nonpositive_energy": 1}
    assert manifest["events_read"] == 120
    assert sum(manifest["counts"].values()) == 120 - 2 - manifest["dropped_low_sum"]


def test_energy_range_rejects_out_of_range_events(tmp_path, mc_files):
    manifest = convert(ConvertConfig(inputs=[mc_files[1]], output=str(tmp_path / "range"), on_bad_event="skip",
                                     energy_range=(100.0, 300.0)), IN_PROCESS)
    with h5py.File(mc_files[1], "r") as h5:
        energy = h5["energy"][:]
    outside = int(((energy < 100) | (energy > 300)).sum())
    assert outside > 0
    assert manifest["bad_events"] == {"energy_out_of_range": outside}


def test_encodings_round_trip_to_identical_events(tmp_path, dense_dataset, mc_files):
    dense_dir, dense_manifest = dense_dataset
    reference = load_split_numpy(dense_dir, "train")
    order = np.argsort(reference["energy"])
    for encoding, compression in (("sparse", "none"), ("dense", "gzip"), ("sparse", "gzip")):
        out = str(tmp_path / f"{encoding}-{compression}")
        manifest = convert(ConvertConfig(inputs=mc_files, output=out, encoding=encoding, compression=compression,
                                         min_shards=2), IN_PROCESS)
        assert manifest["counts"] == dense_manifest["counts"]
        assert manifest["records_digest"]["train"] != dense_manifest["records_digest"]["train"] or encoding == "dense"
        data = load_split_numpy(out, "train")
        other = np.argsort(data["energy"])
        # Bit-exact on purpose: both encodings carry the same float32 values as bytes; decoding
        # copies them (sparse: scattered into zeros), no arithmetic.
        for key in records.OUTPUT_KEYS:
            np.testing.assert_array_equal(data[key][other], reference[key][order], err_msg=f"{encoding}/{compression} {key}")
    sparse_bytes = sum(s["bytes"] for s in read_manifest(str(tmp_path / "sparse-none")).shards)
    dense_bytes = sum(s["bytes"] for s in dense_manifest["shards"])
    assert sparse_bytes < dense_bytes / 4


def test_bad_inputs_are_refused_early(tmp_path, mc_files):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        convert(ConvertConfig(inputs=[str(tmp_path / "nothing_here*.h5")], output=str(tmp_path / "o")), IN_PROCESS)
    not_h5 = tmp_path / "notes.h5"
    not_h5.write_text("hello")
    with pytest.raises(InputValidationError, match="notes.h5"):
        convert(ConvertConfig(inputs=[str(not_h5)], output=str(tmp_path / "o2")), IN_PROCESS)
    with pytest.raises(ValueError, match="test_fraction"):
        convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "o3"), test_fraction=1.5), IN_PROCESS)
    with pytest.raises(ValueError, match="encoding"):
        ConvertConfig(inputs=mc_files, output="x", encoding="png").validate()


def test_config_round_trip_and_shard_planning():
    cfg = ConvertConfig(inputs=["a.h5"], output="out", energy_range=(2.0, 500.0), encoding="sparse")
    assert ConvertConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for band in (None, (0.01, 0.03)):
        cfg = ConvertConfig(inputs=["a.h5"], output="out", sampling_fraction_range=band)
        assert ConvertConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        ConvertConfig.from_dict({**cfg.to_dict(), "shards": 3})
    # 10,000 dense events of 260 kB: 2.34 GB of train -> 19 shards of 128 MB; 0.26 GB of test -> 3,
    # raised to the default minimum of 4
    shards = plan_shards(ConvertConfig(inputs=["a"], output="o", test_fraction=0.1), 10_000, 260_252, 1.0)
    assert shards == {"train": 19, "test": 4}
    assert plan_shards(ConvertConfig(inputs=["a"], output="o", min_shards=8), 100, 3000, 1.0) == {"train": 8, "test": 8}


def test_pipeline_args_default_and_pass_through():
    local = default_pipeline_args([])
    assert local == ["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                     f"--direct_num_workers={os.cpu_count()}"]
    assert default_pipeline_args(["--runner=DirectRunner"])[1:] == local[1:]
    assert default_pipeline_args(IN_PROCESS) == IN_PROCESS
    dataflow = ["--runner=DataflowRunner", "--project=p", "--region=europe-west4", "--temp_location=gs://b/tmp",
                "--setup_file=./setup.py"]
    assert default_pipeline_args(dataflow) == dataflow
    assert default_pipeline_args(["--runner", "FlinkRunner", "--flink_master=host:8081"]) == [
        "--runner", "FlinkRunner", "--flink_master=host:8081"]


def test_progress_log_counts_reach_the_driver_whole_lines_only(tmp_path):
    """Worker side of local progress: counts from several writers add up; a line still being
    written is not read; a pickled log (as Beam ships it to workers) carries no open file."""
    import pickle

    first = transforms.ProgressCounts(str(tmp_path), transforms.PROGRESS_PREPROCESSED)
    second = pickle.loads(pickle.dumps(first))
    first.add(256)
    second.add(64)
    transforms.ProgressCounts(str(tmp_path), transforms.PROGRESS_WRITTEN).add(7)
    with open(tmp_path / "written-partial.log", "wb") as fh:
        fh.write(b"5\n12")  # the writer has not finished "123\n" yet
    assert transforms.read_progress(str(tmp_path)) == {"preprocessed": 320, "written": 12}
    assert transforms.read_progress(str(tmp_path / "gone")) == {}


def test_local_multiprocess_run_logs_job_wide_progress(tmp_path, mc_files, caplog, monkeypatch):
    """A local run with two worker processes logs, from the driver, progress lines of the whole
    job (events done, rate, ETA), and a last one that counts every event and record."""
    import logging
    import re

    from data_prep import convert as convert_module

    monkeypatch.setattr(convert_module, "PROGRESS_EVERY_S", 0.5, raising=False)
    caplog.set_level(logging.INFO, logger="data_prep.convert")
    manifest = convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "ds"), events_per_range=32),
                       ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    line = re.compile(r"BeamJob: (\d+)/(\d+) events preprocessed, (\d+)/(\d+) records written, (\d+) hashed; "
                      r"(\d+) % done, (\d+) events/s, ETA (\d+ s|unknown)$")
    found = [line.match(r.getMessage()) for r in caplog.records if r.name == "data_prep.convert"]
    found = [m for m in found if m]
    assert len(found) >= 2, "expected periodic lines while the job runs, then a last one"
    done = [int(m.group(1)) + int(m.group(3)) + int(m.group(5)) for m in found]
    assert done == sorted(done)
    last = found[-1].groups()
    records_written = sum(manifest["counts"].values())
    assert (int(last[0]), int(last[1])) == (240, 240)  # both workers' events, summed by the driver
    assert int(last[2]) == int(last[3]) == int(last[4]) == records_written
    assert last[5] == "100" and int(last[6]) > 0 and last[7] == "0 s"


# ----------------------------------------------------------------------------------------------
# Shard tasks: each worker writes its own shards (no shuffle of events)


def _sources(files):
    from data_prep.convert import _Source

    return [_Source(i, f, h5layout.inspect_file(f)) for i, f in enumerate(files)]


def test_tasks_tile_the_events_in_order_on_chunk_boundaries(mc_files):
    sources = _sources(mc_files)  # 2 files of 120 events, chunks of 32
    config = ConvertConfig(inputs=mc_files, output="o", events_per_range=40)  # rounded up to 64
    for n_tasks in (1, 2, 3, 5, 12):
        tasks = convert_module.plan_tasks(config, sources, n_tasks)
        assert len(tasks) == n_tasks
        covered = [(s, e) for task in tasks for s, _, a, b in task for e in range(a, b)]
        assert covered == [(s, e) for s in (0, 1) for e in range(120)], n_tasks  # every event once, in order
        for task in tasks:
            for source, uri_, start, stop in task:
                assert uri_ == mc_files[source] and start % 32 == 0 and (stop % 32 == 0 or stop == 120)
                assert 0 < stop - start <= 64
            # balanced: each task within one chunk of its share (a chunk at each end may move)
            assert abs(sum(b - a for _, _, a, b in task) - 240 / n_tasks) <= 2 * 32, n_tasks


@pytest.mark.parametrize("sizes, chunk, n_tasks", [
    ((10,), 4, 1),  # a last chunk of half a chunk: round(2.5) is 2
    ((40, 40), 32, 2),  # each file's last chunk under half a chunk
    ((5000,), 64, 3),  # a published 5,000-event file read in 64-event ranges
])
def test_tasks_keep_a_short_last_chunk(sizes, chunk, n_tasks):
    from data_prep.convert import _Source

    sources = [_Source(i, f"f{i}.h5", h5layout.FileInfo(uri=f"f{i}.h5", layout="variable_angle", n_events=n,
                                                        image_shape=(51, 51, 25), chunk_events=chunk, size_bytes=1))
               for i, n in enumerate(sizes)]
    tasks = convert_module.plan_tasks(ConvertConfig(inputs=["x"], output="o"), sources, n_tasks)
    covered = [(s, e) for task in tasks for s, _, a, b in task for e in range(a, b)]
    assert covered == [(s, e) for s, n in enumerate(sizes) for e in range(n)]


def _event_indices(path: str, compression: str = "none") -> list[tuple[int, int]]:
    from tensorflow.core.example import example_pb2

    out = []
    with open(path, "rb") as fh:
        for record in records.iter_tfrecord_file(fh, compression):
            feature = example_pb2.Example.FromString(record).features.feature
            out.append((feature["source_index"].int64_list.value[0], feature["event_index"].int64_list.value[0]))
    return out


def test_each_shard_holds_its_tasks_events_in_file_order_and_split_digests_match_a_direct_encoding(
        tmp_path, mc_files):
    """Shard i of each split holds the events of task i, in file order, so the files are the same
    in every run; the records digest per split is that of encoding every event directly (what
    the single-process baseline writes), whatever the shards."""
    config = ConvertConfig(inputs=mc_files, output=str(tmp_path / "ds"), encoding="sparse", min_shards=3,
                           test_fraction=0.3)
    manifest = convert(config, IN_PROCESS)
    sources = _sources(mc_files)
    tasks = convert_module.plan_tasks(config, sources, 3)
    expected = {"train": [], "test": []}
    digests = {"train": 0, "test": 0}
    for task in tasks:
        shard = {"train": [], "test": []}
        for source, path, start, stop in task:
            processed, _ = preprocess_block(h5layout.read_events(path, start, stop), PreprocessConfig())
            for i in range(len(processed)):
                split = transforms.split_of(os.path.basename(path), processed.event_index[i], 0.3, 0)
                shard[split].append((source, int(processed.event_index[i])))
                digests[split] = records.combine_digests(digests[split], records.record_digest(records.encode_event(
                    processed.ecal[i], processed.energy[i], processed.theta[i], processed.mtheta[i],
                    processed.ecal_sum[i], processed.event_index[i], source, "sparse")))
        for split in expected:
            expected[split].append(shard[split])
    assert sorted(s["name"] for s in manifest["shards"]) == sorted(
        f"{split}-{i:05d}-of-00003.tfrecord" for split in ("train", "test") for i in range(3))
    for split in ("train", "test"):
        found = [_event_indices(str(tmp_path / "ds" / f"{split}-{i:05d}-of-00003.tfrecord")) for i in range(3)]
        assert found == expected[split], split
        assert manifest["records_digest"][split] == f"{digests[split]:064x}"


def test_a_retried_task_replaces_its_own_files_and_a_failed_one_leaves_none(tmp_path, mc_files, bad_file):
    settings = {"on_bad_event": "fail", "energy_range": None, "preprocess": PreprocessConfig().to_dict(),
                "test_fraction": 0.2, "seed": 0, "split_by": "event", "encoding": "dense", "compression": "gzip",
                "staging": str(tmp_path / "staging")}
    fn = transforms._ConvertTaskFn(settings)  # pylint: disable=protected-access
    fn.setup()
    task = transforms.ShardTask(1, 2, (transforms.EventRange(0, mc_files[0], 0, 64),
                                       transforms.EventRange(0, mc_files[0], 64, 120)))
    first = list(fn.process(task))
    files = sorted(os.listdir(tmp_path / "staging"))
    assert files == ["test-00001-of-00002.tfrecord.gz", "train-00001-of-00002.tfrecord.gz"]
    again = list(fn.process(task))  # a runner retrying the bundle
    assert sorted(os.listdir(tmp_path / "staging")) == files
    shards = [e for e in again if isinstance(e, dict) and "name" in e]
    assert shards == [e for e in first if isinstance(e, dict) and "name" in e] and len(shards) == 2
    for shard in shards:
        assert shard == transforms.describe_shard(str(tmp_path / "staging" / shard["name"]), "gzip")
    assert sum(s["records"] for s in shards) > 0
    settings["staging"] = str(tmp_path / "failed")
    failing = transforms._ConvertTaskFn(settings)  # pylint: disable=protected-access
    failing.setup()
    with pytest.raises(InputValidationError, match="event 5"):
        list(failing.process(transforms.ShardTask(0, 1, (transforms.EventRange(0, bad_file, 0, 32),))))
    assert os.listdir(tmp_path / "failed") == []  # no partial shard, not even a temporary file
