"""Benchmark: the Beam conversion vs a naive single-process converter, and sparse vs dense bytes.

On the same Monte Carlo events (>= 5,000 by default) it times:
  * naive: h5py reading one event at a time, numpy preprocessing, one tf.train.Example per
    event written with tf.io.TFRecordWriter (dense float32 bytes: the same records as Beam);
  * blocked: the same single process reading whole HDF5 chunks (what a careful script does);
  * beam: data_prep.convert with the local multi-process runner (dense, then sparse).
Prints one line per figure, then RESULT lines: sparse_vs_dense_bytes (target >= 4) and, last,
the headline beam_vs_naive (target >= 1.5). Exits 0 whatever the figures.
Scale with --events; reuse generated files with --data-dir.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep import h5layout, records  # noqa: E402
from data_prep.convert import ConvertConfig, convert  # noqa: E402
from data_prep.montecarlo import MonteCarloConfig, generate_files  # noqa: E402
from data_prep.preprocess import PreprocessConfig, preprocess_block  # noqa: E402

TARGET_BEAM_VS_NAIVE = 1.5
TARGET_SPARSE_VS_DENSE = 4.0


def naive_convert(files: list[str], out_path: str, per_event: bool) -> int:
    """Single-process conversion; returns the number of records written.

    Args:
        files: HDF5 files.
        out_path: One TFRecord file.
        per_event: Read ECAL one event at a time (naive) instead of one HDF5 chunk at a time.
    """
    import h5py
    import tensorflow as tf

    cfg = PreprocessConfig()
    n = 0
    with tf.io.TFRecordWriter(out_path) as writer:
        for index, path in enumerate(files):
            info = h5layout.inspect_file(path)
            step = 1 if per_event else info.chunk_events
            with h5py.File(path, "r") as h5:
                for start in range(0, info.n_events, step):
                    stop = min(start + step, info.n_events)
                    block = h5layout.EventBlock(
                        ecal=h5["ECAL"][start:stop].astype(np.float32),
                        energy=h5["energy"][start:stop].astype(np.float32),
                        theta=h5["theta"][start:stop].astype(np.float32),
                        mtheta=h5["mtheta"][start:stop].astype(np.float32),
                        event_index=np.arange(start, stop, dtype=np.int64),
                        uri=path,
                    )
                    processed, _ = preprocess_block(block, cfg)
                    for i in range(len(processed)):
                        writer.write(records.encode_event(
                            processed.ecal[i], processed.energy[i], processed.theta[i], processed.mtheta[i],
                            processed.ecal_sum[i], processed.event_index[i], index, records.ENCODING_DENSE))
                        n += 1
    return n


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="Monte Carlo events to convert (>= 5,000)")
    parser.add_argument("--events-per-file", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Beam worker processes")
    parser.add_argument("--data-dir", default="", help="reuse (or keep) the generated HDF5 files here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    work = tempfile.mkdtemp(prefix="caloforge-bench-convert-")
    try:
        data_dir = args.data_dir or os.path.join(work, "h5")
        files = sorted(os.path.join(data_dir, f) for f in os.listdir(data_dir) if f.endswith(".h5")) \
            if os.path.isdir(data_dir) else []
        if sum(h5layout.inspect_file(f).n_events for f in files) < args.events:
            t0 = time.perf_counter()
            files = generate_files(MonteCarloConfig(n_events=args.events, events_per_file=args.events_per_file,
                                                    seed=args.seed, workers=2, overwrite=True), data_dir)
            print(f"generated {args.events} Monte Carlo events in {len(files)} files in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
        n_events = sum(h5layout.inspect_file(f).n_events for f in files)
        print(f"events {n_events} in {len(files)} files; beam workers {args.workers}; cpus {os.cpu_count()}")

        import tensorflow as tf  # noqa: F401  (import cost kept out of the naive timing)

        t0 = time.perf_counter()
        n_naive = naive_convert(files, os.path.join(work, "naive.tfrecord"), per_event=True)
        naive_s = time.perf_counter() - t0
        print(f"naive per-event converter: {n_naive} records in {naive_s:.1f} s ({n_naive / naive_s:.0f} events/s)")

        t0 = time.perf_counter()
        n_blocked = naive_convert(files, os.path.join(work, "blocked.tfrecord"), per_event=False)
        blocked_s = time.perf_counter() - t0
        print(f"single-process chunked converter: {n_blocked} records in {blocked_s:.1f} s "
              f"({n_blocked / blocked_s:.0f} events/s)")

        beam_args = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                     f"--direct_num_workers={args.workers}"]
        results = {}
        for encoding in ("dense", "sparse"):
            t0 = time.perf_counter()
            manifest = convert(ConvertConfig(inputs=files, output=os.path.join(work, encoding), encoding=encoding),
                               beam_args)
            seconds = time.perf_counter() - t0
            n = sum(manifest["counts"].values())
            size = sum(s["bytes"] for s in manifest["shards"])
            results[encoding] = (seconds, n, size)
            print(f"beam {encoding}: {n} records in {seconds:.1f} s ({n / seconds:.0f} events/s, whole job incl. "
                  f"planning, checksums and publishing), {size / n / 1e3:.1f} kB/event")
        if results["dense"][1] != n_naive:
            print(f"WARNING: beam wrote {results['dense'][1]} records, naive {n_naive}")
        sparse_ratio = (results["dense"][2] / results["dense"][1]) / (results["sparse"][2] / results["sparse"][1])
        beam_vs_naive = naive_s / results["dense"][0]
        print(f"beam dense vs single-process chunked: {blocked_s / results['dense'][0]:.2f} x")
        print(f"RESULT sparse_vs_dense_bytes {sparse_ratio:.1f} x target >= {TARGET_SPARSE_VS_DENSE}")
        print(f"RESULT beam_vs_naive {beam_vs_naive:.2f} x target >= {TARGET_BEAM_VS_NAIVE}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    from entry import run_benchmark

    run_benchmark(main)
