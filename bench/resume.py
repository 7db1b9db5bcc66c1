"""Benchmark: input work to resume training at a late step, O(1) restore vs a naive replay.

A small Monte Carlo set is generated and converted with the project's own functions
(data_prep.montecarlo, data_prep.convert), then read as the trainer reads it
(data_prep.dataset.make_dataset with a seed, repeat, shuffle) at the small preset's batch:
  * fresh: build the pipeline and take its first batch (the input cost of any start);
  * restored: the same at batch --step (make_dataset(start_batch=...), what a resumed run
    does: each epoch's order is a function of (seed, epoch), so the position is computed,
    the files before it are not opened and the open ones are skipped by record header);
  * replay: the former way, the uninterrupted pipeline's first --step batches read, decoded
    and skipped (`.skip(step)`), then its next batch.
The restored batches are checked against the replay's (event energies, exactly). Also printed:
what a checkpointable tf.data iterator (the alternative) would store per save, measured on
this set and worked out for dense 51x51x25 events.
Prints one line per figure, RESULT resume_input_seconds last; exits 0 whatever the figures.
Scale with --events / --step / --batch; --encoding dense; --no-replay skips the slow half.
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

from data_prep.convert import ConvertConfig, convert  # noqa: E402
from data_prep.montecarlo import MonteCarloConfig, generate_files  # noqa: E402

TARGET_SECONDS = 10.0
DENSE_EVENT_BYTES = 51 * 51 * 25 * 4


def first_batches(ds, n: int = 3) -> tuple[float, list[list[float]]]:
    """Seconds to the first batch (building the iterator included) and n batches' energies."""
    t0 = time.perf_counter()
    it = iter(ds)
    batches = [next(it)["energy"].numpy().tolist()]
    seconds = time.perf_counter() - t0
    batches += [next(it)["energy"].numpy().tolist() for _ in range(n - 1)]
    return seconds, batches


def iterator_checkpoint_bytes(files: list[str], batch: int, seed: int, steps: int, folder: str) -> int:
    """Bytes a tf.train.Checkpoint of a plain iterator over the records takes after `steps`
    batches, with the DEFAULT_SHUFFLE_BUFFER-record running shuffle buffer such a design keeps
    (the reader's own per-window shuffles sit inside a flat_map, whose iterator TensorFlow
    refuses to serialize: the alternative would need that pipeline shape)."""
    import tensorflow as tf

    from data_prep.dataset import DEFAULT_SHUFFLE_BUFFER

    ds = tf.data.TFRecordDataset(files).shuffle(DEFAULT_SHUFFLE_BUFFER, seed=seed).repeat().batch(batch)
    it = iter(ds)
    for _ in range(steps):
        next(it)
    prefix = tf.train.Checkpoint(iterator=it).write(os.path.join(folder, "iterator"))
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
               if f.startswith(os.path.basename(prefix)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600, help="Monte Carlo events to generate and convert")
    parser.add_argument("--shards", type=int, default=12, help="shards of the converted set (> 8: two interleave groups)")
    parser.add_argument("--batch", type=int, default=16, help="batch (the small preset's CPU batch)")
    parser.add_argument("--step", type=int, default=10_000, help="step to resume at")
    parser.add_argument("--encoding", choices=("sparse", "dense"), default="sparse", help="record encoding")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-replay", action="store_true", help="skip the naive replay")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    work = tempfile.mkdtemp(prefix="caloforge-bench-resume-")
    try:
        t0 = time.perf_counter()
        files = generate_files(MonteCarloConfig(n_events=args.events, events_per_file=max(1, args.events // 4),
                                                seed=args.seed, workers=2), os.path.join(work, "h5"))
        data = os.path.join(work, "tfrecords")
        convert(ConvertConfig(inputs=files, output=data, encoding=args.encoding, test_fraction=0.0,
                              allow_empty_split=True, min_shards=args.shards), ["--runner=FnApiRunner", "--direct_running_mode=in_memory"])
        from data_prep.dataset import DEFAULT_SHUFFLE_BUFFER, make_dataset, read_manifest

        manifest = read_manifest(data)
        n_train = int(manifest.counts["train"])
        shards = [s for s in manifest.shards if s["split"] == "train"]
        record_bytes = sum(s["bytes"] for s in shards) / n_train
        print(f"set: {n_train} events in {len(shards)} shards ({manifest.encoding}, "
              f"{record_bytes / 1e3:.1f} kB/record), made in {time.perf_counter() - t0:.0f} s")
        consumed = args.step * args.batch
        print(f"resume at step {args.step}, batch {args.batch}: {consumed} records consumed = epoch "
              f"{consumed // n_train}, record {consumed % n_train}")

        def pipeline(start_batch: int = 0):
            return make_dataset(data, "train", args.batch, seed=args.seed, start_batch=start_batch)

        first_batches(pipeline())  # warm-up: imports, first graph traces, page cache
        fresh, _ = first_batches(pipeline())
        print(f"fresh start, first batch: {fresh:.2f} s")
        restored, restored_batches = first_batches(pipeline(args.step))
        print(f"restored at step {args.step}, first batch: {restored:.2f} s")
        for step in (args.step // 1000, args.step * 100):  # the same time whatever the step
            print(f"restored at step {step}, first batch: {first_batches(pipeline(step))[0]:.2f} s")
        if not args.no_replay:
            replay, replay_batches = first_batches(pipeline().skip(args.step))
            print(f"naive replay of {args.step} batches, first batch: {replay:.1f} s "
                  f"({consumed / replay:.0f} records/s re-read and decoded)")
            print(f"restore vs replay: {replay / restored:.0f} x less input work")
            print(f"restored batches equal the replay's: {'yes' if restored_batches == replay_batches else 'NO'}")
        ckpt_dir = os.path.join(work, "iterator-checkpoint")
        os.makedirs(ckpt_dir)
        from data_prep.dataset import shard_uris

        size = iterator_checkpoint_bytes(shard_uris(data, "train", manifest), args.batch, args.seed, 20, ckpt_dir)
        print(f"checkpointable-iterator alternative: {size / 1e6:.1f} MB per save and input pipeline on this set "
              f"(TensorFlow compresses it; its {DEFAULT_SHUFFLE_BUFFER}-record shuffle buffer holds "
              f"{DEFAULT_SHUFFLE_BUFFER * record_bytes / 1e6:.0f} MB; for dense events "
              f"{DEFAULT_SHUFFLE_BUFFER * DENSE_EVENT_BYTES / 1e6:.0f} MB before compression)")
        print(f"RESULT resume_input_seconds {restored:.2f} s target <= {TARGET_SECONDS:g}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    from entry import run_benchmark

    run_benchmark(main)
