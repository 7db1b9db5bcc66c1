"""Benchmark: tf.data input events/s from the converted TFRecords (dense, sparse) vs an h5py generator.

The generator is the usual pre-conversion approach: h5py reads each file one HDF5 chunk at a
time, numpy applies the same preprocessing, and events are yielded one by one into
tf.data.Dataset.from_generator, batched and prefetched. The TFRecord side is
data_prep.dataset.make_dataset (shuffling, repeat, per-replica batch, parallel decode).
Both deliver the same dict of tensors; nothing consumes them but the timing loop.
Prints one line per figure and RESULT lines (sparse first, then the dense headline, both
target >= 3 x the generator). Exits 0 whatever the figures. Scale with --events / --batches.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep import h5layout  # noqa: E402
from data_prep.convert import ConvertConfig, convert  # noqa: E402
from data_prep.montecarlo import MonteCarloConfig, generate_files  # noqa: E402
from data_prep.preprocess import PreprocessConfig, preprocess_block  # noqa: E402

TARGET_VS_GENERATOR = 3.0


def h5_generator_dataset(files: list[str], batch: int):
    """tf.data from a Python generator over the HDF5 files (chunked reads, numpy preprocessing)."""
    import tensorflow as tf

    cfg = PreprocessConfig()
    shape = h5layout.inspect_file(files[0]).image_shape

    def events():
        while True:
            for path in files:
                info = h5layout.inspect_file(path)
                for start, stop in h5layout.plan_ranges(info):
                    processed, _ = preprocess_block(h5layout.read_events(path, start, stop), cfg)
                    for i in range(len(processed)):
                        yield {"ecal": processed.ecal[i], "energy": processed.energy[i], "theta": processed.theta[i],
                               "mtheta": processed.mtheta[i], "ecal_sum": processed.ecal_sum[i]}

    scalar = tf.TensorSpec((), tf.float32)
    signature = {"ecal": tf.TensorSpec(tuple(shape), tf.float32), "energy": scalar, "theta": scalar,
                 "mtheta": scalar, "ecal_sum": scalar}
    ds = tf.data.Dataset.from_generator(events, output_signature=signature)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def events_per_s(ds, batches: int, batch: int, warmup: int = 3) -> float:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    total = 0.0
    for _ in range(batches):
        b = next(it)
        total += float(b["energy"][0])  # materialise the batch on the host
    return batches * batch / (time.perf_counter() - t0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="Monte Carlo events to generate and convert")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    work = tempfile.mkdtemp(prefix="caloforge-bench-input-")
    try:
        files = generate_files(MonteCarloConfig(n_events=args.events, events_per_file=500, seed=args.seed, workers=2),
                               os.path.join(work, "h5"))
        from data_prep.dataset import make_dataset

        local = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
        figures = {}
        generator_rate = events_per_s(h5_generator_dataset(files, args.batch), args.batches, args.batch)
        print(f"h5py generator via from_generator: {generator_rate:.0f} events/s (batch {args.batch})")
        for encoding in ("sparse", "dense"):
            out = os.path.join(work, encoding)
            convert(ConvertConfig(inputs=files, output=out, encoding=encoding, test_fraction=0.0,
                                  allow_empty_split=True), local)
            rate = events_per_s(make_dataset(out, "train", args.batch, seed=args.seed), args.batches, args.batch)
            figures[encoding] = rate
            print(f"tf.data {encoding} TFRecords: {rate:.0f} events/s (batch {args.batch})")
        for encoding in ("sparse", "dense"):
            print(f"RESULT input_{encoding}_vs_generator {figures[encoding] / generator_rate:.1f} x "
                  f"target >= {TARGET_VS_GENERATOR}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    from entry import run_benchmark

    run_benchmark(main)
