"""Benchmark: Monte Carlo showers per second, simulation alone and written to compressed HDF5.

Prints one line per figure and, last, the headline
`RESULT mc_showers_per_s <v> showers/s target >= 500` (the whole generate_files path, HDF5
writing and compression included, with --workers processes; 2 by default for a 2-core machine).
Exits 0 whatever the figures. Scale up with --events.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep.mc_shower import ShowerParams, simulate_showers  # noqa: E402
from data_prep.montecarlo import MonteCarloConfig, generate_files  # noqa: E402

TARGET_SHOWERS_PER_S = 500.0


def simulate_only(n_events: int, batch_size: int, seed: int) -> float:
    """Showers/s of the vectorised model alone, one process, no I/O."""
    rng = np.random.default_rng(seed)
    params = ShowerParams()
    energy = rng.uniform(2.0, 500.0, n_events)
    theta = np.deg2rad(rng.uniform(60.0, 120.0, n_events))
    simulate_showers(energy[:batch_size], theta[:batch_size], rng, params)  # warm-up
    began = time.perf_counter()
    for start in range(0, n_events, batch_size):
        simulate_showers(energy[start : start + batch_size], theta[start : start + batch_size], rng, params)
    return n_events / (time.perf_counter() - began)


def write_files(args: argparse.Namespace, workers: int, folder: str) -> tuple[float, float, float]:
    """(wall showers/s, compressed bytes per event, CPU ms per shower) of generate_files.

    CPU time (this process and its finished workers) is less sensitive than wall time to other
    jobs on a shared machine, so it is reported beside it.
    """
    config = MonteCarloConfig(
        n_events=args.events,
        events_per_file=args.events_per_file,
        layout=args.layout,
        compression=args.compression,
        workers=workers,
        seed=args.seed,
    )
    out = os.path.join(folder, f"workers{workers}")
    cpu_before = _cpu_seconds()
    began = time.perf_counter()
    paths = generate_files(config, out)
    elapsed = time.perf_counter() - began
    cpu = _cpu_seconds() - cpu_before
    size = sum(os.path.getsize(p) for p in paths)
    shutil.rmtree(out, ignore_errors=True)
    return args.events / elapsed, size / args.events, 1e3 * cpu / args.events


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000, help="showers per measurement")
    parser.add_argument("--events-per-file", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="processes for the headline figure")
    parser.add_argument("--layout", default="variable_angle", choices=["variable_angle", "fixed_angle"])
    parser.add_argument("--compression", default="gzip", choices=["gzip", "lzf", "none"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmpdir", default=None, help="where to write the files (deleted after)")
    args = parser.parse_args(argv)

    print(f"machine: {os.cpu_count()} CPUs, numpy {np.__version__}; {args.events} showers, "
          f"{args.layout}, compression {args.compression}")
    # Other jobs on a shared machine slow every figure; the load average says how much.
    print(f"load_average_1min_before {os.getloadavg()[0]:.2f}")
    rate_sim = simulate_only(min(args.events, 2000), args.batch_size, args.seed)
    print(f"simulate_only_1_process {rate_sim:.0f} showers/s")
    folder = tempfile.mkdtemp(prefix="bench_mc_", dir=args.tmpdir)
    try:
        rate_1, bytes_1, cpu_1 = write_files(args, 1, folder)
        print(f"generate_files_1_worker {rate_1:.0f} showers/s")
        print(f"generate_files_cpu_per_shower {cpu_1:.2f} ms "
              f"(so 2 idle cores could reach about {2000 / cpu_1:.0f} showers/s)")
        print(f"compressed_bytes_per_event {bytes_1:.0f} bytes "
              f"(raw float32 {4 * 51 * 51 * 25 if args.layout == 'variable_angle' else 4 * 25**3} bytes)")
        rate_n, _, _ = write_files(args, args.workers, folder)
        print(f"generate_files_{args.workers}_workers {rate_n:.0f} showers/s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"load_average_1min_after {os.getloadavg()[0]:.2f}")
    print(f"RESULT mc_showers_per_s {rate_n:.0f} showers/s target >= {TARGET_SHOWERS_PER_S:.0f}")
    return 0


if __name__ == "__main__":
    from entry import run_benchmark

    run_benchmark(main)
