"""Benchmark: `caloforge evaluate` on 10,000 Monte Carlo events with a small-preset generator: wall time, peak RSS.

Prepared with the project's own functions (cached in --work-dir when one is given):
  * --events Monte Carlo events of 51 x 51 x 25 cells (data_prep.montecarlo), converted to
    TFRecords (data_prep.convert; all in the train split, which the evaluation reads);
  * a small-preset generator with its initial weights (trainer.models.build_generator,
    trainer.export.export_generator). No training: the evaluation does the same work whatever
    the weights (one shower generated per half-B event, the same features, metrics and
    classifiers), though an untrained generator's showers, with more cells filled and more
    obviously unlike the Monte Carlo, make the features a little slower and the classifiers'
    early stopping faster than a trained one's would.
Then `python -m eval.evaluate --max-events N --split train --no-fail` runs in a child process
(N Monte Carlo events: N/2 per half, N/2 showers generated; both classifiers, 20 noise-floor
replicas, CaloChallenge's FPD/KPD settings), whose wall time and peak resident memory (its own
getrusage maximum) are printed, with the evaluator's phases from its log.
--scaling 2000,20000 first measures the evaluator's streamed data flow at each size in a fresh
process (`probe`: the converted Monte Carlo read with the evaluator's reader, and read again as
the "generated" sample, no generator: 20,000 events in minutes) and prints how peak RSS grows
from the smallest to the largest (memory must not follow the number of events: < 20 %).
Prints `RESULT eval_wall_seconds X s target < 180` and `RESULT eval_peak_rss_mb X MB` last
(and before them `RESULT eval_rss_growth_percent` with --scaling); exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TARGET_SECONDS = 180.0
# The evaluator's own timing lines (eval.evaluate logs each phase).
PHASES = re.compile(r"eval\.evaluate: (.* in [0-9.]+ s.*)$")


def prepare(work: str, events: int, preset: str, seed: int) -> tuple[str, str]:
    """The converted Monte Carlo and the exported generator under `work`, made unless already there."""
    data = os.path.join(work, f"data-{events}")
    generator = os.path.join(work, f"generator-{preset}")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        from data_prep.convert import ConvertConfig, convert
        from data_prep.montecarlo import MonteCarloConfig, generate_files

        t0 = time.perf_counter()
        h5 = os.path.join(work, f"h5-{events}")
        # A few per cent more than needed: the converter's sanity checks drop a few showers.
        simulated = int(events * 1.05) + 20
        files = generate_files(MonteCarloConfig(n_events=simulated, events_per_file=min(simulated, 1000), seed=seed,
                                                workers=2, overwrite=True), h5)
        t1 = time.perf_counter()
        manifest = convert(ConvertConfig(inputs=files, output=data, test_fraction=0.0, allow_empty_split=True,
                                         overwrite=True), ["--runner=FnApiRunner", "--direct_running_mode=in_memory"])
        shutil.rmtree(h5, ignore_errors=True)
        print(f"prepared {manifest['counts']['train']} Monte Carlo events: simulated in {t1 - t0:.0f} s, converted in "
              f"{time.perf_counter() - t1:.0f} s", flush=True)
    if not os.path.exists(os.path.join(generator, "generator_config.json")):
        from trainer.export import export_generator
        from trainer.models import build_generator
        from trainer.presets import get_preset

        export_generator(build_generator(get_preset(preset), "float32"), preset, generator,
                         {"seed": seed, "note": "initial weights, for timing"})
    return data, generator


def run_child(data: str, generator: str, events: int, out: str, seed: int) -> dict:
    """One `eval.evaluate` run in a fresh process: wall seconds, peak RSS and the evaluator's phase lines."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--", "--data", os.path.join(data, "manifest.json"),
           "--generator-dir", generator, "--output-dir", out, "--max-events", str(events), "--split", "train",
           "--seed", str(seed), "--no-fail"]
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"evaluation of {events} events failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    phases = [m.group(1) for line in done.stderr.splitlines() if (m := PHASES.search(line))]
    metrics = json.loads(open(os.path.join(out, "metrics.json"), encoding="utf-8").read())
    return {"events": events, "wall_seconds": wall, "peak_rss_mb": child["peak_rss_mb"], "phases": phases,
            "evaluator_seconds": metrics["wall_seconds"], "counts": metrics["counts"]}


PROBE_THRESHOLDS = "version: 1\nreplicas: 2\nk_sigma: 4\nchecks:\n  sampling_fraction_mre: {}\n"


def run_probe(data: str, events: int, work: str) -> float:
    """Peak RSS (MB) of one streamed evaluation of `events` events with the Monte Carlo as the generated sample."""
    thresholds = os.path.join(work, "probe-thresholds.yaml")
    with open(thresholds, "w", encoding="utf-8") as f:
        f.write(PROBE_THRESHOLDS)
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", os.path.join(data, "manifest.json"), str(events), thresholds]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe at {events} events failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def probe(manifest_uri: str, events: int, thresholds: str) -> None:
    """The evaluator's streamed data flow on `events` events of a converted set, in this process.

    The Monte Carlo is read with the evaluator's own reader (eval.evaluate.dataset_batches, on
    tf.data: TensorFlow is loaded, as in every evaluation), and the "generated" showers are the
    same split read by a second reader one batch ahead (x 1.01): no generator runs, so that
    20,000 events take minutes, not an hour; a generator adds its own fixed per-batch memory.
    Two noise-floor replicas (they run one after another: their number does not change the peak).
    """
    import numpy as np

    from data_prep.dataset import read_manifest
    from eval.evaluate import EvalConfig, _manifest_power, dataset_batches, evaluate_stream

    power = _manifest_power(read_manifest(manifest_uri))
    other = dataset_batches(manifest_uri, "train", power, "mtheta")
    next(other)
    left = [np.zeros((0,), np.float32)]

    def generate(energy: np.ndarray, angle: np.ndarray) -> np.ndarray:
        parts, need = [], len(energy)
        while need:
            if not len(left[0]):
                left[0] = next(other).ecal
            parts.append(left[0][:need])
            left[0], need = left[0][len(parts[-1]):], need - len(parts[-1])
        return np.concatenate(parts) * np.float32(1.01)

    config = EvalConfig(data=manifest_uri, generator_dir="-", output_dir="-", split="train", thresholds=thresholds)
    evaluate_stream(dataset_batches(manifest_uri, "train", power, "mtheta"), events, generate, config)
    print(json.dumps({"events": events, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child(argv: list[str]) -> None:
    """Run the evaluator CLI in this process, then print its peak RSS as one JSON line."""
    from eval.evaluate import main as evaluate_main

    status = evaluate_main(argv)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({"status": status, "peak_rss_mb": peak}), flush=True)
    sys.exit(0 if status == 0 else 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="Monte Carlo events evaluated (half are generated)")
    parser.add_argument("--preset", default="small", help="generator preset (initial weights)")
    parser.add_argument("--scaling", default="", help="also evaluate these sizes, e.g. 2000,20000, and report RSS growth")
    parser.add_argument("--work-dir", default="", help="keep the prepared data and generator here (reused next time)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.scaling.replace(",", " ").split()]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work_dir or tempfile.mkdtemp(prefix="caloforge-bench-eval-")
    os.makedirs(work, exist_ok=True)
    try:
        data, generator = prepare(work, max([args.events, *sizes]), args.preset, args.seed)
        if len(sizes) >= 2:
            peaks = {}
            for events in sorted(sizes):
                peaks[events] = run_probe(data, events, work)
                print(f"memory probe, {events} Monte Carlo events (as many read again as the generated "
                      f"sample): peak RSS {peaks[events]:.0f} MB", flush=True)
            growth = 100.0 * (peaks[max(sizes)] / peaks[min(sizes)] - 1.0)
            print(f"RESULT eval_rss_growth_percent {growth:.1f} % from {min(sizes)} to {max(sizes)} events target < 20")
        run = run_child(data, generator, args.events, os.path.join(work, f"eval-{args.events}"), args.seed)
        print(f"{args.events} Monte Carlo events ({run['counts']['generated_events']} generated, {args.preset} "
              f"preset, initial weights): {run['wall_seconds']:.1f} s wall (evaluator {run['evaluator_seconds']:.1f} s "
              f"before the report), peak RSS {run['peak_rss_mb']:.0f} MB", flush=True)
        for line in run["phases"]:
            print(f"  {line}")
        print(f"RESULT eval_wall_seconds {run['wall_seconds']:.1f} s target < {TARGET_SECONDS:g}")
        print(f"RESULT eval_peak_rss_mb {run['peak_rss_mb']:.0f} MB")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        probe(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        sys.exit(0)
    from entry import run_benchmark

    run_benchmark(main)
