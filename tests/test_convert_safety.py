"""The converter's safety rules, on real files, a real Beam job and the GCS emulator.

Overwrite removes only a previous conversion and never touches inputs; strict flags; one-line
errors with exit code 2; no empty dataset or split and no duplicated inputs published; a lock
per output; a killed run's workers end with it and its leftovers are cleaned by the next run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import apache_beam  # noqa: F401  (imported up front: the lock test times the refusal, not this import)
import h5py
import numpy as np
import pytest

from data_prep import h5layout, uri
from data_prep.beam_flags import split_pipeline_args
from data_prep.convert import ConvertConfig, convert
from data_prep.dataset import read_manifest
from data_prep.errors import UsageError
from data_prep.montecarlo import MonteCarloConfig, generate_files
from data_prep.output_lock import LOCK_NAME, OutputLock
from data_prep.preprocess import PreprocessConfig, preprocess_block
from pipelines.cli import main
from tests.gcs_emulator import gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)

IN_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mc_files(tmp_path_factory):
    """Two real Monte Carlo files of 60 events each."""
    folder = tmp_path_factory.mktemp("safety_mc")
    return generate_files(MonteCarloConfig(n_events=120, events_per_file=60, seed=11, chunk_events=16), str(folder))


@pytest.fixture(scope="module")
def degrees_file(tmp_path_factory, mc_files):
    """A copy of an MC file whose theta was written in degrees: every event is bad."""
    path = str(tmp_path_factory.mktemp("deg") / "theta_in_degrees.h5")
    shutil.copyfile(mc_files[0], path)
    with h5py.File(path, "r+") as h5:
        h5["theta"][:] = np.degrees(h5["theta"][:])
    return path


def _tree(folder) -> dict[str, str]:
    """Relative name -> sha256 of every file below a local folder or gs:// prefix."""
    base = str(folder).rstrip("/")
    return {u[len(base) + 1:]: uri.sha256(u) for u in uri.list_files(base)}


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _write_lock(output: str, **fields) -> OutputLock:
    lock = OutputLock.for_this_process(fields.pop("staging", "_staging-0123456789ab"))
    for key, value in fields.items():
        setattr(lock, key, value)
    uri.write_bytes(uri.join(output, LOCK_NAME), lock.to_bytes())
    return lock


def _only_dataset_left(output: str, manifest: dict) -> None:
    names = sorted(uri.basename(u) for u in uri.list_files(output))
    assert names == sorted([s["name"] for s in manifest["shards"]] + ["manifest.json"])


# ----------------------------------------------------------------------------------------------
# 1. --overwrite removes only what a previous conversion published; inputs are never touched


def test_output_holding_the_inputs_is_refused_with_and_without_overwrite(tmp_path, mc_files):
    folder = tmp_path / "raw"
    folder.mkdir()
    inputs = [shutil.copy(f, folder) for f in mc_files]
    before = _tree(folder)
    for extra in ([], ["--overwrite"]):
        for output in (str(folder), str(tmp_path)):  # the inputs' folder, and a folder above it
            with pytest.raises(ValueError, match="contains the input"):
                convert(ConvertConfig(inputs=[str(folder / "*.h5")], output=output, overwrite=bool(extra)), IN_PROCESS)
        with pytest.raises(ValueError, match="is the input"):
            convert(ConvertConfig(inputs=inputs, output=inputs[0], overwrite=bool(extra)), IN_PROCESS)
    assert _tree(folder) == before


def test_overwrite_refuses_foreign_files_and_leaves_everything_in_place(tmp_path, mc_files):
    out = str(tmp_path / "ds")
    first = convert(ConvertConfig(inputs=mc_files, output=out, min_shards=3), IN_PROCESS)
    os.makedirs(os.path.join(out, "notes"))
    with open(os.path.join(out, "notes", "keep.txt"), "w") as fh:
        fh.write("not a shard")
    before = _tree(out)
    with pytest.raises(FileExistsError, match=r"1 file that no caloforge conversion wrote: notes/keep\.txt"):
        convert(ConvertConfig(inputs=mc_files, output=out, overwrite=True, min_shards=1), IN_PROCESS)
    assert _tree(out) == before
    os.remove(os.path.join(out, "notes", "keep.txt"))
    # Only our files left: overwrite replaces them, and old shard names that the new dataset
    # does not reuse are gone too.
    again = convert(ConvertConfig(inputs=mc_files, output=out, overwrite=True, min_shards=1), IN_PROCESS)
    assert {s["name"] for s in first["shards"]} - {s["name"] for s in again["shards"]}
    assert sorted(uri.basename(u) for u in uri.list_files(out)) == sorted(
        [s["name"] for s in again["shards"]] + ["manifest.json"])


def test_gcs_overwrite_touches_neither_inputs_nor_foreign_objects(gcs_bucket, mc_files):
    raw = f"gs://{gcs_bucket}/raw"
    for path in mc_files:
        uri.upload_file(path, f"{raw}/{os.path.basename(path)}")
    inputs_before = _tree(raw)
    for output in (raw, f"gs://{gcs_bucket}"):
        with pytest.raises(ValueError, match="contains the input"):
            convert(ConvertConfig(inputs=[f"{raw}/*.h5"], output=output, overwrite=True), IN_PROCESS)
    assert _tree(raw) == inputs_before

    out = f"gs://{gcs_bucket}/ds"
    convert(ConvertConfig(inputs=[f"{raw}/*.h5"], output=out, min_shards=1), IN_PROCESS)
    uri.write_text(f"{out}/other/keep.txt", "someone else's")
    uri.write_text(f"gs://{gcs_bucket}/ds2/neighbour.txt", "next door")
    before = _tree(f"gs://{gcs_bucket}")
    with pytest.raises(FileExistsError, match=r"other/keep\.txt"):
        convert(ConvertConfig(inputs=[f"{raw}/*.h5"], output=out, overwrite=True), IN_PROCESS)
    assert _tree(f"gs://{gcs_bucket}") == before
    uri.delete(f"{out}/other/keep.txt")
    again = convert(ConvertConfig(inputs=[f"{raw}/*.h5"], output=out, overwrite=True, min_shards=2), IN_PROCESS)
    _only_dataset_left(out, again)
    assert uri.read_text(f"gs://{gcs_bucket}/ds2/neighbour.txt") == "next door"
    assert _tree(raw) == inputs_before


# ----------------------------------------------------------------------------------------------
# 4. Strict flags


def test_mistyped_flags_are_errors_naming_the_closest_flag(tmp_path, mc_files, capsys):
    out = tmp_path / "never"
    cases = {
        "--test-fractoin": "--test-fraction",  # typo of ours
        "--test-frac": "--test-fraction",  # a prefix: no argparse abbreviations
        "--direct_num_workrs=1": "--direct_num_workers",  # typo of a Beam flag
    }
    for flag, closest in cases.items():
        argv = ["convert", "--inputs", *mc_files, "--output", str(out), flag, *(["0.5"] if "=" not in flag else []),
                *IN_PROCESS]
        assert main(argv) == 2, flag
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("caloforge convert: error:")]
        assert len(lines) == 1 and flag.split("=")[0] in lines[0] and f"did you mean {closest}?" in lines[0], err
    assert main(["convert", "--inputs", *mc_files, "--output", str(out), "--bogus", *IN_PROCESS]) == 2
    assert "unknown flag --bogus" in capsys.readouterr().err
    assert not out.exists()


def test_beam_flags_pass_and_others_are_refused():
    dataflow = ["--runner", "DataflowRunner", "--project=p", "--region", "europe-west4", "--experiments=a",
                "--experiments", "b", "--save_main_session", "--max_num_workers=8"]
    assert split_pipeline_args(dataflow) == dataflow
    with pytest.raises(UsageError, match=r"unknown flag --max_workers \(did you mean --max_num_workers\?\)"):
        split_pipeline_args(["--max_workers=8"])
    with pytest.raises(UsageError, match="unexpected argument 'stray'"):
        split_pipeline_args(["--save_main_session", "stray"])
    with pytest.raises(UsageError, match=r"--seeds \(did you mean --seed\?\)"):
        split_pipeline_args(["--seeds", "3"], app_flags=["--seed", "--inputs"])


# ----------------------------------------------------------------------------------------------
# 5. One clear line and exit code 2 instead of a traceback


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("caloforge convert: error:")]


def test_all_bad_events_give_one_line_not_a_crash(tmp_path, degrees_file, capsys):
    out = tmp_path / "deg"
    rc = main(["convert", "--inputs", degrees_file, "--output", str(out), "--on-bad-event", "skip", *IN_PROCESS])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    (line,) = _error_lines(err)
    assert "kept no events" in line and "angle_out_of_range: 60" in line and degrees_file in line
    assert not out.exists()  # nothing published, staging and lock removed, the folder too

    rc = main(["convert", "--inputs", degrees_file, "--output", str(out), *IN_PROCESS])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    (line,) = _error_lines(err)
    for part in (f"file {degrees_file}", "dataset 'theta'", "event 0", "angle_out_of_range", "--on-bad-event skip"):
        assert part in line, part


def test_verbose_anywhere_keeps_the_traceback(tmp_path, degrees_file, capsys):
    for argv in (["-v", "convert"], ["convert", "--verbose"]):
        rc = main([*argv, "--inputs", degrees_file, "--output", str(tmp_path / "v"), *IN_PROCESS])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" in err and len(_error_lines(err)) == 1


def test_preprocess_block_accepts_zero_events():
    empty = h5layout.EventBlock(np.zeros((0, 51, 51, 25), np.float32), *(np.zeros(0, np.float32) for _ in range(3)),
                                np.zeros(0, np.int64), "x.h5")
    processed, dropped = preprocess_block(empty, PreprocessConfig())
    assert len(processed) == 0 and dropped == 0 and processed.ecal.shape == (0, 51, 51, 25)


# ----------------------------------------------------------------------------------------------
# 6. No empty dataset, no empty split, no duplicated inputs


def test_empty_results_and_splits_are_refused_before_publishing(tmp_path, mc_files):
    with pytest.raises(ValueError, match="test split empty.*--allow-empty-split"):
        convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "t0"), test_fraction=0.0), IN_PROCESS)
    for allow in (False, True):
        with pytest.raises(ValueError, match="no training events"):
            convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "t1"), test_fraction=1.0,
                                  allow_empty_split=allow), IN_PROCESS)
    with pytest.raises(ValueError, match="kept no events.*dropped by the raw-sum cut"):
        convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "cut"), min_raw_sum=1e12), IN_PROCESS)
    assert not any((tmp_path / name).exists() for name in ("t0", "t1", "cut"))
    allowed = convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "ok"), test_fraction=0.0,
                                    allow_empty_split=True, min_shards=1), IN_PROCESS)
    assert allowed["counts"]["test"] == 0 and allowed["counts"]["train"] > 0


def test_split_by_file_that_leaves_a_split_empty_is_refused(tmp_path, mc_files):
    # seed 0 hashes both files of this fixture to the same side at test_fraction 0.5
    from data_prep.transforms import split_of

    sides = {split_of(os.path.basename(f), 0, 0.5, 0, by="file") for f in mc_files}
    assert len(sides) == 1
    with pytest.raises(ValueError, match=f"the {'train' if sides == {'test'} else 'test'} split would be empty"):
        convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "f"), split_by="file", test_fraction=0.5),
                IN_PROCESS)
    assert not (tmp_path / "f").exists()


def test_inputs_with_identical_content_are_refused(tmp_path, mc_files):
    twin = str(tmp_path / "renamed_copy.h5")
    shutil.copyfile(mc_files[0], twin)
    with pytest.raises(ValueError, match=f"{mc_files[0]} and {twin} have identical content"):
        convert(ConvertConfig(inputs=[*mc_files, twin], output=str(tmp_path / "dup")), IN_PROCESS)
    assert not (tmp_path / "dup").exists()


# ----------------------------------------------------------------------------------------------
# 7. Lock, stale leftovers, and workers that end with a killed driver


def test_stale_leftovers_are_cleaned_without_overwrite_and_live_locks_respected(tmp_path, mc_files):
    out = str(tmp_path / "ds")
    # A run on this host that died while publishing: its staging folder and a half-moved shard.
    lock = _write_lock(out, pid=_dead_pid(), process_start=None,
                       publishing=["manifest.json", "train-00000-of-00009.tfrecord"])
    os.makedirs(os.path.join(out, lock.staging, ".temp-beam-1"))
    for name in (os.path.join(lock.staging, ".temp-beam-1", "part"), "train-00000-of-00009.tfrecord"):
        with open(os.path.join(out, name), "wb") as fh:
            fh.write(b"partial")
    manifest = convert(ConvertConfig(inputs=mc_files, output=out, min_shards=1), IN_PROCESS)
    _only_dataset_left(out, manifest)

    # Another host's lock: a fresh one is respected (its run may be alive) unless --overwrite...
    other = str(tmp_path / "other")
    _write_lock(other, host="elsewhere.example", pid=1)
    with pytest.raises(FileExistsError, match="another conversion.*pid 1 on host elsewhere.example"):
        convert(ConvertConfig(inputs=mc_files, output=other), IN_PROCESS)
    assert sorted(os.listdir(other)) == [LOCK_NAME]
    # ...and one older than --stale-lock-hours is taken over without it.
    _write_lock(other, host="elsewhere.example", pid=1, started_unix=time.time() - 25 * 3600)
    manifest = convert(ConvertConfig(inputs=mc_files, output=other, min_shards=1), IN_PROCESS)
    _only_dataset_left(other, manifest)


def test_gcs_lock_of_a_live_run_is_respected_and_a_dead_run_cleaned(gcs_bucket, mc_files):
    out = f"gs://{gcs_bucket}/ds"
    live = _write_lock(out)  # this test process: alive, on this host
    assert live.describe() == f"pid {os.getpid()} on host {socket.gethostname()}, started {live.started_utc}"
    uri.write_text(f"{out}/{live.staging}/train-00000-of-00001.tfrecord", "being written")
    before = _tree(out)
    with pytest.raises(FileExistsError, match=re.escape(f"another conversion ({live.describe()})")):
        convert(ConvertConfig(inputs=mc_files, output=out, overwrite=True), IN_PROCESS)
    assert _tree(out) == before
    _write_lock(out, pid=_dead_pid(), process_start=None, staging=live.staging)
    manifest = convert(ConvertConfig(inputs=mc_files, output=out, min_shards=1), IN_PROCESS)
    _only_dataset_left(out, manifest)


def test_lock_file_is_created_exclusively(tmp_path):
    target = str(tmp_path / "x" / LOCK_NAME)
    uri.create_exclusive(target, b"first")
    with pytest.raises(FileExistsError):
        uri.create_exclusive(target, b"second")
    assert uri.read_bytes(target) == b"first"
    assert os.listdir(tmp_path / "x") == [LOCK_NAME]  # no temporary file left behind


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    ppid = int(fh.read().decode().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().decode().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inspects /proc")
def test_killed_conversion_takes_its_workers_along_and_the_rerun_cleans_up(tmp_path, mc_files):
    out = str(tmp_path / "ds")
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "convert", "--inputs", *mc_files, "--output", out,
         "--direct_num_workers=2", "--events-per-range", "16"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while time.monotonic() < deadline and driver.poll() is None:
            workers = {p for p in _descendants(driver.pid) if b"sdk_worker_main" in _cmdline(p)}
            if len(workers) >= 2 and os.path.exists(os.path.join(out, LOCK_NAME)):
                break
            time.sleep(0.05)
        assert driver.poll() is None and len(workers) >= 2, "the conversion did not reach its workers"
        # A second conversion into the same output fails at once, naming the first.
        t0 = time.monotonic()
        with pytest.raises(FileExistsError, match=f"another conversion \\(pid {driver.pid} on host"):
            convert(ConvertConfig(inputs=mc_files, output=out), IN_PROCESS)
        assert time.monotonic() - t0 < 5
        everything = _descendants(driver.pid)  # the workers and the shells that started them
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_running(p) for p in everything):
            time.sleep(0.1)
        assert not [p for p in everything if _running(p)], "worker processes outlived the killed driver"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert any(n.startswith("_staging-") for n in os.listdir(out)) and LOCK_NAME in os.listdir(out)
    manifest = convert(ConvertConfig(inputs=mc_files, output=out, min_shards=1), IN_PROCESS)  # no --overwrite
    _only_dataset_left(out, manifest)
    assert read_manifest(out).to_dict() == manifest
    assert json.loads(json.dumps(manifest))["counts"]["train"] > 0
