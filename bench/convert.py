"""Benchmark: the Beam conversion vs the best single-process converter; memory; sparse vs dense bytes.

On the same Monte Carlo events it measures:
  * single process: the best plain script we could write (`single_process_convert`): each file
    opened once, ECAL read a few whole HDF5 chunks at a time (straight past the chunk cache),
    the same preprocessing (preprocess_block), split (split_of) and encoding (records.encode_event)
    as Beam, tf.io.TFRecordWriter; its records are checked to be Beam's (same count and records
    digest per split as Beam's manifest), so both do the same work;
  * beam: data_prep.convert with the project's default local runner (FnApiRunner,
    multi_processing, --workers processes), the whole job (planning, checksums, publishing);
  * the peak RSS of the whole process tree (driver + Beam workers, sampled every 100 ms from
    /proc) at two sizes (--memory-events): it should not grow with the number of events;
  * sparse vs dense bytes per event (a Beam sparse run on --sparse-events).
The Monte Carlo files are generated once per run in a temp dir (the generation time counts in
the 5 minutes); --data-dir keeps and reuses them.
Prints one line per figure, then RESULT lines: sparse_vs_dense_bytes (target >= 4),
beam_peak_rss_growth (target < 20 %) and, last, the headline beam_vs_single_process
(target >= 1.3). Exits 0 whatever the figures. Default: 20,000 events timed, memory at 5,000
vs 20,000 (under 5 minutes on 2 cores); `--memory-events 20000 80000` for the larger pair.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))

from proctree import TreeSampler  # noqa: E402  (bench/ is on sys.path when run as a script)
from data_prep import h5layout, records  # noqa: E402
from data_prep.convert import ConvertConfig, default_pipeline_args  # noqa: E402
from data_prep.manifest import SPLITS  # noqa: E402
from data_prep.montecarlo import MonteCarloConfig, generate_files  # noqa: E402
from data_prep.preprocess import preprocess_block  # noqa: E402

TARGET_BEAM_VS_SINGLE = 1.3
TARGET_RSS_GROWTH_PCT = 20.0
TARGET_SPARSE_VS_DENSE = 4.0
# Events per h5py read, rounded up to whole chunks. Reads of whole chunks bypass HDF5's chunk
# cache (each 8 MB chunk is bigger than the default 1 MB cache) and decompress straight into the
# result; a cache big enough to hold them (e.g. rdcc_nbytes=128 MB) only adds a copy: measured
# 0.29 vs 0.15 ms/event. The cache matters for reads of a few events, which this never does.
READ_EVENTS = 256


def single_process_convert(files: list[str], out_dir: str, config: ConvertConfig) -> dict[str, int]:
    """The best single-process converter we could write; returns records written per split.

    Writes `<out_dir>/<split>.tfrecord` with the same records as data_prep.convert on `files`.
    """
    import h5py
    import tensorflow as tf

    from data_prep.transforms import split_of

    cfg = config.preprocess_config()
    writers = {split: tf.io.TFRecordWriter(os.path.join(out_dir, f"{split}.tfrecord")) for split in SPLITS}
    counts = dict.fromkeys(SPLITS, 0)
    try:
        for source_index, path in enumerate(files):
            name = os.path.basename(path)
            with h5py.File(path, "r") as h5:
                n, chunk = h5["ECAL"].shape[0], (h5["ECAL"].chunks or (READ_EVENTS,))[0]
                step = -(-READ_EVENTS // chunk) * chunk
                for start in range(0, n, step):
                    stop = min(start + step, n)
                    block = h5layout.EventBlock(
                        ecal=h5["ECAL"][start:stop].astype(np.float32, copy=False),
                        energy=h5["energy"][start:stop].astype(np.float32),
                        theta=h5["theta"][start:stop].astype(np.float32),
                        mtheta=h5["mtheta"][start:stop].astype(np.float32),
                        event_index=np.arange(start, stop, dtype=np.int64), uri=path)
                    done, _ = preprocess_block(block, cfg)
                    for i in range(len(done)):
                        split = split_of(name, done.event_index[i], config.test_fraction, config.seed, config.split_by)
                        writers[split].write(records.encode_event(
                            done.ecal[i], done.energy[i], done.theta[i], done.mtheta[i], done.ecal_sum[i],
                            done.event_index[i], source_index, config.encoding))
                        counts[split] += 1
    finally:
        for writer in writers.values():
            writer.close()
    return counts


def split_digests(out_dir: str) -> dict[str, str]:
    """The manifest's records_digest of each split file single_process_convert wrote."""
    out = {}
    for split in SPLITS:
        digest = 0
        with open(os.path.join(out_dir, f"{split}.tfrecord"), "rb") as fh:
            for record in records.iter_tfrecord_frames(fh):
                digest = records.combine_digests(digest, records.record_digest(record))
        out[split] = f"{digest:064x}"
    return out


def _cpu_self_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _input_files(data_dir: str, need: int, events_per_file: int, seed: int) -> list[str]:
    """Sorted HDF5 files in data_dir holding at least `need` events, generated if missing."""
    files = sorted(os.path.join(data_dir, f) for f in os.listdir(data_dir) if f.endswith(".h5")) \
        if os.path.isdir(data_dir) else []
    if sum(h5layout.inspect_file(f).n_events for f in files) < need:
        t0 = time.perf_counter()
        files = generate_files(MonteCarloConfig(n_events=need, events_per_file=events_per_file, seed=seed,
                                                workers=2, overwrite=True), data_dir)
        print(f"generated {need} Monte Carlo events in {len(files)} files in {time.perf_counter() - t0:.1f} s",
              flush=True)
    return files


def _first_events(files: list[str], n: int) -> list[str]:
    """The first files (in order) that hold at least n events."""
    out, total = [], 0
    for f in files:
        if total >= n:
            break
        out.append(f)
        total += h5layout.inspect_file(f).n_events
    return out


def _beam(files: list[str], out: str, encoding: str, workers: int) -> dict:
    """One Beam conversion through the command line, in a fresh process as a user runs it (so
    this script's TensorFlow is not in its memory): manifest, seconds of the convert() call,
    peak RSS and CPU of the process tree (driver + workers). Its last progress line is shown."""
    command = [sys.executable, "-m", "data_prep.convert", "--inputs", *files, "--output", out,
               "--encoding", encoding, *default_pipeline_args([f"--direct_num_workers={workers}"])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    with open(os.path.join(os.path.dirname(out), "beam.log"), "w+") as log:
        cpu0 = _cpu_children_s()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        with TreeSampler(interval_s=0.1, root=process.pid) as tree:
            process.wait()
        cpu = _cpu_children_s() - cpu0  # driver and workers, start-up included
        log.seek(0)
        lines = log.read().splitlines()
    if process.returncode != 0:
        raise RuntimeError(f"beam conversion failed ({process.returncode}): " + "\n".join(lines[-20:]))
    with open(os.path.join(out, "manifest.json")) as fh:
        manifest = json.load(fh)
    seconds = manifest["run"]["total_seconds"]
    n_read, n = manifest["events_read"], sum(manifest["counts"].values())
    size = sum(s["bytes"] for s in manifest["shards"])
    busy = ", ".join(f"{k} {v['busy_s']:.1f}" for k, v in manifest["run"]["stages"].items())
    progress = [line for line in lines if "% done" in line]
    print(f"beam {encoding} {n_read} events ({n} records): {seconds:.1f} s ({n_read / seconds:.0f} events/s, whole "
          f"convert() call), {size / n / 1e3:.1f} kB/record; process tree peak RSS {tree.peak_rss_bytes / 1e6:.0f} MB "
          f"(driver alone {tree.root_peak_rss_bytes / 1e6:.0f} MB), "
          f"CPU {cpu:.1f} s ({1e3 * cpu / n_read:.2f} ms/event); stage busy s: {busy}", flush=True)
    if progress:
        print(f"  last progress line: {progress[-1].split(': ', 1)[-1]}")
    return {"manifest": manifest, "seconds": seconds, "peak_rss": tree.peak_rss_bytes, "bytes_per_record": size / n,
            "cpu_s": cpu}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events of the timed comparison")
    parser.add_argument("--memory-events", type=int, nargs=2, default=[5000, 20000], metavar=("SMALL", "LARGE"),
                        help="the two sizes whose peak RSS is compared (e.g. 20000 80000)")
    parser.add_argument("--sparse-events", type=int, default=2000, help="events of the sparse run (bytes/event)")
    parser.add_argument("--events-per-file", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="Beam worker processes")
    parser.add_argument("--data-dir", default="", help="reuse (or keep) the generated HDF5 files here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    t_start = time.perf_counter()
    work = tempfile.mkdtemp(prefix="caloforge-bench-convert-")
    try:
        print(f"cpus {os.cpu_count()}; beam workers {args.workers}; load average {os.getloadavg()[0]:.1f}")
        need = max(args.events, args.sparse_events, *args.memory_events)
        all_files = _input_files(args.data_dir or os.path.join(work, "h5"), need, args.events_per_file, args.seed)
        files = _first_events(all_files, args.events)
        n_events = sum(h5layout.inspect_file(f).n_events for f in files)
        import tensorflow as tf  # noqa: F401  (import cost kept out of the timing)
        import data_prep.transforms  # noqa: F401  (imports apache_beam for split_of, ditto)

        single_dir = os.path.join(work, "single")
        os.makedirs(single_dir)
        cpu0, t0 = _cpu_self_s(), time.perf_counter()
        counts = single_process_convert(files, single_dir, ConvertConfig(inputs=files, output=""))
        single_s, single_cpu = time.perf_counter() - t0, _cpu_self_s() - cpu0
        print(f"single process: {n_events} events ({sum(counts.values())} records) in {single_s:.1f} s "
              f"({n_events / single_s:.0f} events/s), CPU {single_cpu:.1f} s ({1e3 * single_cpu / n_events:.2f} "
              f"ms/event)", flush=True)
        digests = split_digests(single_dir)
        shutil.rmtree(single_dir)

        runs = {}
        for size in sorted({args.events, *args.memory_events}):
            runs[size] = _beam(_first_events(all_files, size), os.path.join(work, f"dense-{size}"), "dense",
                               args.workers)
            shutil.rmtree(os.path.join(work, f"dense-{size}"))
        beam = runs[args.events]["manifest"]
        same = beam["counts"] == counts and beam["records_digest"] == digests
        print(f"same records as Beam (count and records digest per split): {'yes' if same else 'NO'}"
              + ("" if same else f" (beam {beam['counts']} {beam['records_digest']}, single {counts} {digests})"))
        sparse = _beam(_first_events(all_files, args.sparse_events), os.path.join(work, "sparse"), "sparse",
                       args.workers)

        small, large = (runs[n]["peak_rss"] for n in args.memory_events)
        growth = 100.0 * (large / small - 1.0)
        ratio = single_s / runs[args.events]["seconds"]
        print(f"peak RSS of the process tree: {small / 1e6:.0f} MB at {args.memory_events[0]} events, "
              f"{large / 1e6:.0f} MB at {args.memory_events[1]} events")
        print(f"CPU per event, beam (driver + workers, start-up included) / single process: "
              f"{runs[args.events]['cpu_s'] / single_cpu:.2f}; wall time single process / beam: {ratio:.2f}")
        print(f"whole benchmark {time.perf_counter() - t_start:.0f} s; load average {os.getloadavg()[0]:.1f}")
        print(f"RESULT sparse_vs_dense_bytes {runs[args.events]['bytes_per_record'] / sparse['bytes_per_record']:.1f}"
              f" x target >= {TARGET_SPARSE_VS_DENSE}")
        print(f"RESULT beam_peak_rss_growth_{args.memory_events[0]}_to_{args.memory_events[1]} {growth:.1f} % "
              f"target < {TARGET_RSS_GROWTH_PCT:g}")
        print(f"RESULT beam_vs_single_process {ratio:.2f} x target >= {TARGET_BEAM_VS_SINGLE}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    from entry import run_benchmark

    run_benchmark(main)
