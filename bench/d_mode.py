"""Study: the discriminator's mode during the generator update ('train', as published, or
'inference'), compared by what the trained generator produces.

For each mode (and seed) the trainer trains the same preset, from the same initial weights, on
the same Monte Carlo showers (data_prep.mc_shower, 100-200 GeV, 60-120 degrees, preprocessed as
the converter does: cells < 1e-6 zeroed, raw sum > 10 kept, x ** 0.85). The exported generator
then makes one shower per event of an independent Monte Carlo test sample (same energies and
angles), and eval.metrics.compare_physics compares the two: sampling-fraction mean relative
error over energy bins (3DGAN's best-epoch figure), shape and moment errors, measured-angle
error, empty fraction. The losses are means over the last quarter of the run (timings.jsonl).
Prints one line per mode and seed and a mean line per mode; no targets, so no RESULT lines.
The defaults (tiny preset, 150 steps, one seed) fit the 5-minute bench budget on 2 quiet cores;
docs/trainer.md's figures come from `--steps 300 --seeds 0 1` (tiny and small presets).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from entry import run_benchmark  # noqa: E402

from data_prep.angle import measured_angle  # noqa: E402
from data_prep.mc_shower import ShowerParams, simulate_showers  # noqa: E402
from eval.features import compute_features  # noqa: E402
from eval.metrics import BinningConfig, compare_physics  # noqa: E402

LOSS_KEYS = ("d_real", "d_fake", "g_bce", "g_energy", "g_angle", "g_ecal_sum")


def monte_carlo(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw showers (thresholded, raw sum > 10 kept), energies (GeV), generated angles (rad)."""
    rng = np.random.default_rng(seed)
    energy = rng.uniform(100.0, 200.0, n)
    theta = rng.uniform(np.deg2rad(60.0), np.deg2rad(120.0), n)
    ecal, _ = simulate_showers(energy, theta, rng, ShowerParams())
    ecal = np.where(ecal < 1e-6, 0.0, ecal).astype(np.float32)
    keep = ecal.reshape(n, -1).sum(axis=1) > 10.0
    return ecal[keep], energy[keep].astype(np.float32), theta[keep].astype(np.float32)


def training_arrays(ecal: np.ndarray, energy: np.ndarray, theta: np.ndarray) -> dict:
    return {"ecal": ecal ** np.float32(0.85), "energy": energy, "theta": theta,
            "mtheta": measured_angle(ecal).astype(np.float32),
            "ecal_sum": ecal.reshape(len(ecal), -1).sum(axis=1)}


def late_losses(output_dir: str, fraction: float = 0.25) -> dict[str, float]:
    """Mean of each loss over the last `fraction` of the run's calls (timings.jsonl)."""
    with open(os.path.join(output_dir, "timings.jsonl")) as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    tail = records[-max(1, int(len(records) * fraction)):]
    return {k: float(np.mean([r["losses"][k] for r in tail])) for k in LOSS_KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-events", type=int, default=2048)
    parser.add_argument("--test-events", type=int, default=800)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from trainer.config import TrainConfig
    from trainer.export import load_generator
    from trainer.inputs import in_memory_dataset_fn
    from trainer.train import train

    arrays = training_arrays(*monte_carlo(args.train_events, seed=100))
    test_ecal, test_energy, test_theta = monte_carlo(args.test_events, seed=200)
    reference = compute_features(test_ecal, test_energy, test_theta)
    binning = BinningConfig()
    print(f"preset {args.preset}, {args.steps} steps of batch {args.batch}, "
          f"{len(arrays['energy'])} training and {len(test_energy)} test Monte Carlo events")
    rows: dict[str, list[dict]] = {"train": [], "inference": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for mode in rows:
                out = os.path.join(tmp, f"{mode}_{seed}")
                result = train(TrainConfig(
                    output_dir=out, preset=args.preset, strategy="default",
                    batch_size_per_replica=args.batch, max_steps=args.steps, steps_per_call=10,
                    checkpoint_every=0, log_every=10 ** 6, seed=seed, d_mode_in_g_update=mode),
                    dataset_fn=in_memory_dataset_fn(arrays, shuffle_seed=seed))
                showers = load_generator(result.generator_dir).generate(test_energy, test_theta,
                                                                         seed=seed)
                summary = compare_physics(reference,
                                          compute_features(showers, test_energy, test_theta),
                                          binning)["summary"]
                row = {**{k: summary[k] for k in ("sampling_fraction_mre", "shape_mre",
                                                  "moment_mre", "angle_mre", "empty_fraction")},
                       **late_losses(out)}
                rows[mode].append(row)
                print(f"d_mode {mode:9s} seed {seed}: "
                      + " ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    for mode, entries in rows.items():
        means = {k: float(np.mean([e[k] for e in entries])) for k in entries[0]}
        print(f"d_mode {mode:9s} mean over {len(entries)} seeds: "
              + " ".join(f"{k} {v:.4g}" for k, v in means.items()))


if __name__ == "__main__":
    run_benchmark(main)
