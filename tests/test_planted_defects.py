"""Planted defects: showers with one known flaw must FAIL the verdict, an independent Monte Carlo sample must PASS.

Each defect is built from the embedded Monte Carlo (data_prep.mc_shower) by changing a shower
parameter or transforming Monte Carlo showers, and judged at 2,000 events per side against the
Monte Carlo noise floor exactly as `caloforge evaluate` judges a generator (eval.evaluate.judge).
The noise floor (with its 20 re-drawn replicas) is measured once for the module.

The assertions name physics, not numbers: which kind of check must catch which flaw. Each flaw
must be caught by at least one of the 3DGAN analysis checks (sampling fraction, resolution,
shapes, moments, angle, selection metric), not only by the classifier, FPD or KPD.
"""

import dataclasses

import numpy as np
import pytest

from data_prep.mc_shower import ShowerParams, simulate_showers
from eval.evaluate import EvalConfig, judge, monte_carlo_floor
from eval.features import compute_features

GRID = (25, 25, 25)  # every metric is grid-agnostic; 25^3 keeps the suite fast
# Fewer, larger energy spots per shower: 5x faster to simulate; the energy resolution does not
# depend on it (mc_shower moves the Poisson term into a gain above the cap).
PARAMS = ShowerParams(max_spots=400)
EVENTS_PER_SIDE = 2000
SEED = 11
THREE_DGAN_CHECKS = {"sampling_fraction_mre", "resolution_mre", "shape_mre", "moment_mre", "angle_mre", "selection_metric"}


def simulate(energy, theta, seed, params=PARAMS):
    return simulate_showers(energy, theta, np.random.default_rng(seed), params, grid=GRID)[0]


def mean_shower(energy, theta, seed, copies=4):
    """Mode collapse: each shower is the average of several showers with its conditions (no fluctuations left)."""
    return sum(simulate(energy, theta, seed + 1000 * k) for k in range(copies)) / np.float32(copies)


def energy_independent(energy, theta, seed):
    """Wrong energy dependence: every shower made at 110 GeV, then scaled to its energy (right sum, wrong shape)."""
    return simulate(np.full_like(energy, 110.0), theta, seed) * (energy / np.float32(110.0))[:, None, None, None]


# name -> (showers for the given conditions, 3DGAN checks of which at least one must fail)
DEFECTS = {
    "energy_scale_1.03": (lambda e, t, s: simulate(e, t, s) * np.float32(1.03), {"sampling_fraction_mre"}),
    "energy_scale_1.05": (lambda e, t, s: simulate(e, t, s) * np.float32(1.05), {"sampling_fraction_mre"}),
    "depth_plus_1_x0": (
        lambda e, t, s: simulate(e, t, s, dataclasses.replace(PARAMS, tmax_offset=PARAMS.tmax_offset + 1.0)),
        {"moment_mre", "shape_mre"},
    ),
    "resolution_x2": (
        lambda e, t, s: simulate(e, t, s, dataclasses.replace(
            PARAMS, stochastic_term=2 * PARAMS.stochastic_term, constant_term=2 * PARAMS.constant_term)),
        {"resolution_mre"},
    ),
    "mode_collapse_to_mean_shower": (mean_shower, {"resolution_mre"}),
    "angle_ignored": (lambda e, t, s: simulate(e, np.full_like(t, np.pi / 2), s), {"angle_mre"}),
    "wrong_energy_dependence": (energy_independent, {"moment_mre", "resolution_mre"}),
}


@pytest.fixture(scope="module")
def floor():
    rng = np.random.default_rng(SEED)
    n = 2 * EVENTS_PER_SIDE
    energy = rng.uniform(20.0, 200.0, n).astype(np.float32)
    theta = np.radians(rng.choice([62.0, 90.0, 118.0], n) + rng.uniform(-4.0, 4.0, n)).astype(np.float32)
    config = EvalConfig(data="-", generator_dir="-", output_dir="-", seed=SEED)
    return config, monte_carlo_floor(simulate(energy, theta, SEED + 1), energy, theta, config)


def judged(floor, make):
    config, mc = floor
    b = mc.independent  # the generator's conditions: half B's energies and angles
    showers = make(b.energy.astype(np.float32), b.theta.astype(np.float32), SEED + 7)
    result = judge(mc, compute_features(showers, b.energy, b.theta, condition_angle=b.condition_angle), config)
    assert result["counts"]["reference_events"] == result["counts"]["generated_events"] == EVENTS_PER_SIDE
    return result["verdict"]


def test_independent_monte_carlo_passes(floor):
    verdict = judged(floor, simulate)
    assert verdict["passed"], [c for c in verdict["checks"] if not c["passed"]]
    assert len(verdict["checks"]) == 13


@pytest.mark.parametrize("name", list(DEFECTS))
def test_planted_defect_fails(floor, name):
    make, physics_checks = DEFECTS[name]
    verdict = judged(floor, make)
    assert not verdict["passed"]
    failed = set(verdict["failed"])
    assert failed & physics_checks, (name, sorted(failed))
    assert failed & THREE_DGAN_CHECKS, (name, sorted(failed))
