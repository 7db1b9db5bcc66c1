"""The evaluator's streaming data flow: batches in, feature rows kept, showers dropped, memory bounded.

The evaluator reads the Monte Carlo and generates showers batch by batch and keeps only per-event
features (eval.features.FeatureAccumulator), with the voxel classifier's coarse cells capped. These
tests check that streaming changes no result (against features computed on whole arrays, as the
evaluator did before), that the generator's noise continues across batches, that the cap and the
blocked FPD/KPD arithmetic change nothing but memory, and that peak memory does not follow the
number of events (subprocesses on real Monte Carlo HDF5).
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from data_prep.mc_shower import ShowerParams, simulate_showers
from eval import calochallenge as cc
from eval.classifier import _openblas_thread_controls
from eval.evaluate import (
    EvalConfig,
    array_batches,
    evaluate_stream,
    floor_from_features,
    generator_function,
    hdf5_batches,
    judge,
    GeneratorInput,
    sample_features,
    split_halves,
    stream_samples,
)
from eval.discriminator_view import DiscriminatorOutputs
from eval.features import FeatureAccumulator, ShowerFeatures, compute_features
from eval.projections import project

GRID = (25, 25, 25)
REPO = Path(__file__).resolve().parents[1]


def conditions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(20.0, 200.0, n), np.radians(rng.choice([62.0, 90.0, 118.0], n) + rng.uniform(-4, 4, n))


def monte_carlo(energy: np.ndarray, theta: np.ndarray, seed: int, scale: float = 1.0) -> np.ndarray:
    return simulate_showers(energy, theta, np.random.default_rng(seed), ShowerParams(), grid=GRID)[0] * np.float32(scale)


@pytest.fixture
def few_replicas(tmp_path) -> str:
    """A thresholds file with 2 replicas: the floor's spread is not what these tests check."""
    path = tmp_path / "thresholds.yaml"
    path.write_text("version: 1\nreplicas: 2\nk_sigma: 4\nchecks:\n  sampling_fraction_mre: {}\n  kpd_x1e3: {}\n")
    return str(path)


def test_accumulated_features_equal_whole_array_features():
    energy, theta = conditions(70, 1)
    ecal = monte_carlo(energy, theta, 2)
    whole = compute_features(ecal, energy, theta, condition_angle=theta + 0.01)
    acc = FeatureAccumulator(70, coarse_limit=0)
    for start, stop in ((0, 3), (3, 40), (40, 41), (41, 70)):
        acc.add(ecal[start:stop], energy[start:stop], theta[start:stop], theta[start:stop] + 0.01)
    streamed = acc.result()
    # Profiles are stored in float32 (7 digits), counts in int32 (exact); the rest is unchanged.
    for name in ("shape_x", "shape_z", "coarse_cells"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(whole, name), rtol=1e-6, err_msg=name)
    for name in ("ecal_sum", "m1", "m2", "measured_angle", "condition_angle", "cell_hist", "cell_outside", "n_hits",
                 "max_position"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(whole, name), err_msg=name)
    assert streamed.shape_x.dtype == np.float32 and streamed.cell_hist.dtype == np.int32
    assert streamed.coarse_index is None
    with pytest.raises(ValueError, match="expected 70 events, received 41"):
        partial = FeatureAccumulator(70)
        partial.add(ecal[:41], energy[:41], theta[:41])
        partial.result()


class SumProbe:
    """Stands in for a trained discriminator: "realfake" is the shower's summed energy."""

    checkpoint = "ckpt-1"

    def outputs(self, showers: np.ndarray, energy: np.ndarray, batch_size: int = 64) -> DiscriminatorOutputs:
        total = np.asarray(showers, dtype=np.float64).sum(axis=(1, 2, 3))
        return DiscriminatorOutputs(total, np.asarray(energy, dtype=np.float64), np.asarray(energy, dtype=np.float64))


def test_report_data_streamed_in_batches_equal_whole_arrays(few_replicas):
    """Average images, overflow counts and discriminator subsamples, streamed 7 events at a time,
    equal what whole arrays give, for each of two generators."""
    energy, theta = conditions(100, 7)
    ecal = monte_carlo(energy, theta, 8)
    config = EvalConfig(data="-", generator_dir="-", output_dir="-", seed=2, thresholds=few_replicas,
                        discriminator_events=9)
    a, b = split_halves(100, 2)
    made = [monte_carlo(energy[b], theta[b], 9 + i, scale=1.0 + 0.1 * i) for i in range(2)]

    def served(showers):
        start = 0

        def generate(e, _t):
            nonlocal start
            start += len(e)
            return showers[start - len(e) : start]

        return generate

    gens = [GeneratorInput(f"g{i}", served(m), SumProbe()) for i, m in enumerate(made)]
    s = stream_samples(array_batches(ecal, energy, theta, batch=7), 100, config, gens)
    for got, want in ((s.reference_projections, project(ecal, a)), (s.independent_projections, project(ecal, b)),
                      *((s.generated_projections[i], project(made[i])) for i in range(2))):
        assert got.n_events == want.n_events
        np.testing.assert_allclose(got.xy, want.xy, rtol=1e-9)
        np.testing.assert_allclose(got.yz, want.yz, rtol=1e-9)
    np.testing.assert_array_equal(s.reference.cell_outside, compute_features(ecal[a], energy[a], theta[a]).cell_outside)
    np.testing.assert_array_equal(s.generated[1].cell_outside,
                                  compute_features(made[1], energy[b], theta[b]).cell_outside)
    # The subsample: 9 seeded positions in each half, in half order, through each generator's probe.
    sub_a = np.sort(np.random.default_rng(2).permutation(a.size)[:9])
    sub_b = np.sort(np.random.default_rng(3).permutation(b.size)[:9])
    for i in range(2):
        d = s.discriminator[i]
        np.testing.assert_array_equal(d["reference"].energy_true, energy[a][sub_a])
        np.testing.assert_array_equal(d["independent"].energy_true, energy[b][sub_b])
        np.testing.assert_allclose(d["generated"].realfake, made[i][sub_b].sum(axis=(1, 2, 3), dtype=np.float64),
                                   rtol=1e-9)
        np.testing.assert_allclose(d["independent"].realfake, ecal[b][sub_b].sum(axis=(1, 2, 3), dtype=np.float64),
                                   rtol=1e-9)


def test_coarse_cells_kept_for_a_capped_subset_that_follows_subset_and_concatenate():
    energy, theta = conditions(60, 3)
    ecal = monte_carlo(energy, theta, 4)
    whole = compute_features(ecal, energy, theta)
    acc = FeatureAccumulator(60, coarse_limit=25, seed=[7, 1])
    for start in range(0, 60, 16):
        acc.add(ecal[start : start + 16], energy[start : start + 16], theta[start : start + 16])
    f = acc.result()
    assert f.coarse_cells.shape == (25, whole.coarse_cells.shape[1]) and f.coarse_index.size == 25
    np.testing.assert_allclose(f.coarse_cells, whole.coarse_cells[f.coarse_index], rtol=1e-6)
    table = f.voxel_table()
    assert table.shape == (25, 2 + whole.coarse_cells.shape[1])
    np.testing.assert_allclose(table, whole.voxel_table()[f.coarse_index], rtol=1e-6)
    # A subset keeps the coarse rows of the selected events that had them, re-indexed.
    pick = np.arange(0, 60, 3)
    sub = f.subset(pick)
    kept = np.isin(pick, f.coarse_index)
    np.testing.assert_array_equal(sub.coarse_index, np.flatnonzero(kept))
    np.testing.assert_allclose(sub.coarse_cells, whole.coarse_cells[pick[kept]], rtol=1e-6)
    # Joining a capped sample with a complete one offsets the indices.
    joined = ShowerFeatures.concatenate([sub, whole.subset(np.arange(5))])
    np.testing.assert_array_equal(joined.coarse_index, np.concatenate([np.flatnonzero(kept), sub.n_events + np.arange(5)]))
    np.testing.assert_allclose(joined.voxel_table()[-5:], whole.voxel_table()[:5], rtol=1e-6)
    assert f.without_coarse().coarse_cells is None and f.without_coarse().n_events == 60


def test_streaming_gives_the_whole_array_evaluation(few_replicas):
    """Batches of 7 events, halves and generated showers aligned, give the metrics of whole arrays."""
    energy, theta = conditions(240, 5)
    ecal = monte_carlo(energy, theta, 6)
    config = EvalConfig(data="-", generator_dir="-", output_dir="-", seed=4, thresholds=few_replicas)
    a, b = split_halves(240, 4)
    generated = monte_carlo(energy[b], theta[b], 8, scale=1.04)
    # What the evaluator computed before streaming: features of whole arrays.
    whole = {"reference": compute_features(ecal[a], energy[a], theta[a]),
             "independent": compute_features(ecal[b], energy[b], theta[b]),
             "generated": compute_features(generated, energy[b], theta[b])}
    before = judge(floor_from_features(whole["reference"], whole["independent"], config, 240), whole["generated"], config)

    calls = []

    def generate(e: np.ndarray, t: np.ndarray) -> np.ndarray:
        start = sum(calls)
        calls.append(len(e))
        np.testing.assert_array_equal(e, energy[b][start : start + len(e)])  # half B's conditions, in order
        return generated[start : start + len(e)]

    after, feats = evaluate_stream(array_batches(ecal, energy, theta, batch=7), 240, generate, config)
    assert len(calls) > 10 and sum(calls) == 120
    np.testing.assert_array_equal(feats["generated"].energy, whole["generated"].energy)
    for key in ("generated", "noise_floor"):
        for name, value in before[key]["flat"].items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(after[key]["flat"][name]), name
            else:
                # float32 profiles move the depth fractions (hence FPD, KPD, classifiers) by ~1e-7.
                assert after[key]["flat"][name] == pytest.approx(value, rel=1e-4, abs=1e-9), (key, name)
    assert after["verdict"]["passed"] == before["verdict"]["passed"]


def test_voxel_classifier_reads_at_most_the_capped_events(few_replicas):
    energy, theta = conditions(200, 9)
    ecal = monte_carlo(energy, theta, 10)
    config = EvalConfig(data="-", generator_dir="-", output_dir="-", thresholds=few_replicas,
                        classifier_voxel_max_events=40)
    feats = sample_features(array_batches(ecal, energy, theta), 200, config, lambda e, t: monte_carlo(e, t, 12))
    assert {f.coarse_cells.shape[0] for f in feats.values()} == {40}
    result = judge(floor_from_features(feats["reference"], feats["independent"], config, 200), feats["generated"], config)
    flat = result["generated"]["flat"]
    assert flat["classifier_voxel_n_test"] == 40 - int(40 * 0.6) - int(40 * 0.2)
    assert flat["classifier_n_test"] == 100 - 60 - 20  # the high-level classifier reads every event
    with pytest.raises(ValueError, match="classifier_voxel_max_events"):
        EvalConfig(data="-", generator_dir="-", output_dir="-", classifier_voxel_max_events=-1)


def test_a_stream_that_ends_early_or_a_wrong_generator_is_refused():
    energy, theta = conditions(60, 2)
    ecal = monte_carlo(energy, theta, 3)
    config = EvalConfig(data="-", generator_dir="-", output_dir="-")
    with pytest.raises(ValueError, match="ended after 60 events, 80 expected"):
        sample_features(array_batches(ecal, energy, theta), 80, config)
    with pytest.raises(ValueError, match="expected"):
        sample_features(array_batches(ecal, energy, theta), 60, config, lambda e, t: np.zeros((len(e), 5, 5, 5)))


def test_blocked_fpd_and_kpd_arithmetic_and_thread_count_change_nothing(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2600, 5)) + 3.0
    y = rng.standard_normal((2500, 5)) * 1.1 + 3.0
    args = {"min_samples": 3000, "max_samples": 6000, "num_batches": 3, "num_points": 4}
    blocked = cc.fpd(x, y, **args)
    monkeypatch.setattr(cc, "ROW_BLOCK", 10**6)  # every event in one slice, as before the slices
    assert cc.fpd(x, y, **args) == pytest.approx(blocked, rel=1e-10)
    xs, ys = cc.normalise_features(x[:700], y[:600])
    cx, cy = (c.astype(np.float64) for c in cc.kpd_draws(700, 600, 4, 900, 42))
    for form in ((xs, None, cx, None), (xs, ys, cx, cy)):
        assert cc._kernel_quadratic_forms(*form, block=128) == pytest.approx(
            cc._kernel_quadratic_forms(*form, block=10**6), rel=1e-12)
    # FPD and KPD run on one OpenBLAS thread: the same values whatever the thread count.
    get_threads, set_threads = _openblas_thread_controls()
    before = get_threads()
    try:
        values = []
        for threads in (1, 2):
            set_threads(threads)
            values.append((cc.fpd(x, y, **args), cc.kpd(x, y, num_batches=3, batch_size=3000)))
            assert get_threads() == threads
        assert values[0] == values[1]
    finally:
        set_threads(before)


def test_generator_noise_continues_across_batches(tmp_path):
    """Generated batch by batch, each event gets the noise row one call for all events would give."""
    from trainer.export import export_generator, load_generator
    from trainer.models import build_generator
    from trainer.presets import get_preset

    export_generator(build_generator(get_preset("tiny"), "float32"), "tiny", str(tmp_path / "g"), {"seed": 0})
    bundle = load_generator(str(tmp_path / "g"))
    energy, theta = conditions(10, 1)
    whole = bundle.generate(energy, theta, seed=3, batch_size=4)
    generate = generator_function(bundle, seed=3, batch_size=4)
    parts = np.concatenate([generate(energy[a:b], theta[a:b]) for a, b in ((0, 3), (3, 7), (7, 10))])
    tolerance = 1e-5 * float(np.abs(whole).max())  # other batch shapes: float32 rounding (trainer/export.py)
    np.testing.assert_allclose(parts, whole, rtol=0, atol=tolerance)
    # A fresh stream per call would repeat the first noise rows (what the test guards against).
    assert np.abs(bundle.generate(energy[3:7], theta[3:7], seed=3, batch_size=4) - whole[3:7]).max() > 100 * tolerance


@pytest.fixture(scope="module")
def mc_file(tmp_path_factory) -> str:
    """A real Monte Carlo HDF5 file (data_prep.montecarlo, 51 x 51 x 25 cells)."""
    from data_prep.montecarlo import MonteCarloConfig, generate_files

    folder = tmp_path_factory.mktemp("mc")
    return generate_files(MonteCarloConfig(n_events=160, events_per_file=160, energy_min=10.0, energy_max=300.0,
                                           seed=5, workers=1), str(folder))[0]


def test_hdf5_batches_read_the_file_in_order(mc_file):
    from data_prep.h5layout import read_events

    batches = list(hdf5_batches([mc_file], angle_key="theta", batch=50))
    assert [len(b.energy) for b in batches] == [50, 50, 50, 10]
    whole = read_events(mc_file, 0, 160)
    np.testing.assert_array_equal(np.concatenate([b.ecal for b in batches]), whole.ecal)
    np.testing.assert_array_equal(np.concatenate([b.condition_angle for b in batches]), whole.theta)
    assert next(hdf5_batches([mc_file])).condition_angle.tolist() == whole.mtheta[:64].tolist()


# Peak RSS of one evaluation in a fresh process: the Monte Carlo file read over and over to make
# n events, and the Monte Carlo (read from another position, x1.01) as the "generated" sample.
PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from eval.evaluate import EvalConfig, evaluate_stream, hdf5_batches
    path, n, thresholds = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def cycled(skip=0):
        while True:
            for batch in hdf5_batches([path], batch=32):
                if skip:
                    skip -= 1
                    continue
                yield batch

    class Showers:
        def __init__(self, stream):
            self.stream, self.left = stream, np.zeros((0, 51, 51, 25), np.float32)
        def __call__(self, energy, angle):
            parts, need = [], len(energy)
            while need:
                if not len(self.left):
                    self.left = next(self.stream).ecal
                parts.append(self.left[:need])
                self.left, need = self.left[len(parts[-1]):], need - len(parts[-1])
            return np.concatenate(parts) * np.float32(1.01)

    config = EvalConfig(data="-", generator_dir="-", output_dir="-", thresholds=thresholds)
    results, feats = evaluate_stream(cycled(), n, Showers(cycled(skip=2)), config)
    assert feats["generated"].n_events == n // 2
    print(json.dumps({"events": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def peak_rss_mb(mc_file: str, events: int, thresholds: str) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE, mc_file, str(events), thresholds], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def test_peak_memory_does_not_follow_the_number_of_events(mc_file, few_replicas):
    """1,000 and 4,000 Monte Carlo events (full evaluation, classifiers included): peak RSS within 20 %.

    Holding the showers, as the evaluator did, costs 260 kB per Monte Carlo event and as much per
    generated shower: +1.2 GB from 1,000 to 4,000 events. Streamed, what grows is a feature row
    (about 1 kB) per event and the voxel classifier's input up to its cap. 2,000 against 20,000
    events takes minutes on two cores, so it is bench/eval.py's (docs/eval.md has the figures).
    """
    small = peak_rss_mb(mc_file, 1000, few_replicas)
    large = peak_rss_mb(mc_file, 4000, few_replicas)
    assert large < 1.2 * small, (small, large)
    assert (large - small) * 1024 / 3000 < 20.0, (small, large)  # kB per event, against 520 held before
