"""The shower Monte Carlo: physics sense (with tolerances), determinism, files in both layouts."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import h5py
import numpy as np
import pytest

from data_prep import h5layout
from data_prep.angle import measured_angle
from data_prep.errors import InputValidationError
from data_prep.mc_shower import ECAL_RAW_SCALE, ShowerParams, _gaussian_tail, simulate_showers
from data_prep.montecarlo import (
    SIDECAR_NAME,
    MonteCarloConfig,
    generate_file,
    generate_files,
    main,
    simulate_file_events,
)
from eval.features import DEFAULT_HIT_THRESHOLD_GEV, raw_threshold

PARAMS = ShowerParams()


def showers(energy_gev: float, n: int, theta_deg: float = 90.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ecal, _ = simulate_showers(
        np.full(n, float(energy_gev)), np.full(n, np.deg2rad(theta_deg)), rng, PARAMS
    )
    return ecal


def raw_sums(ecal: np.ndarray) -> np.ndarray:
    return ecal.reshape(ecal.shape[0], -1).sum(axis=1, dtype=np.float64)


# ----------------------------------------------------------------------------- physics sense


@pytest.fixture(scope="module")
def energy_scan() -> dict[float, np.ndarray]:
    """Raw sums at fixed energies, perpendicular incidence, 150 showers each."""
    return {e: raw_sums(showers(e, 150, seed=int(e))) for e in (5.0, 20.0, 80.0, 320.0)}


def test_sampling_fraction_near_002_and_flat_in_energy(energy_scan):
    fractions = {e: float(np.mean(s / ECAL_RAW_SCALE / e)) for e, s in energy_scan.items()}
    for e, f in fractions.items():
        assert f == pytest.approx(0.02, rel=0.05), (e, f)
    values = np.array(list(fractions.values()))
    assert values.max() / values.min() - 1.0 < 0.05, fractions


def test_relative_resolution_falls_like_one_over_sqrt_e(energy_scan):
    energies = np.array([5.0, 20.0, 80.0])
    rel = np.array([energy_scan[e].std() / energy_scan[e].mean() for e in energies])
    # Each factor 4 in energy halves the stochastic term; the small constant term and
    # ~8 % statistical error of a 150-event width leave the ratio between 1.5 and 2.5.
    ratios = rel[:-1] / rel[1:]
    assert np.all((ratios > 1.5) & (ratios < 2.5)), (rel, ratios)
    # Fit sigma^2 = a^2 / E + c^2: the stochastic term comes back near the configured one.
    design = np.stack([1.0 / energies, np.ones_like(energies)], axis=1)
    coef, *_ = np.linalg.lstsq(design, rel**2, rcond=None)
    a_fit = np.sqrt(max(coef[0], 0.0))
    assert a_fit == pytest.approx(PARAMS.stochastic_term, rel=0.2), (a_fit, rel)
    # And a high-energy shower is still better measured than a low one.
    assert energy_scan[320.0].std() / energy_scan[320.0].mean() < rel[1]


def test_depth_of_shower_maximum_rises_with_log_energy():
    energies = np.array([4.0, 16.0, 64.0, 256.0])
    z = np.arange(25)
    mean_depth, peak = [], []
    for e in energies:
        ecal = showers(e, 60, seed=10 + int(e))
        profile = ecal.sum(axis=(0, 1, 2))
        mean_depth.append((profile * z).sum() / profile.sum())
        peak.append(int(np.argmax(profile)))
    mean_depth = np.array(mean_depth)
    assert np.all(np.diff(mean_depth) > 0), mean_depth
    assert np.all(np.diff(peak) >= 0) and peak[-1] - peak[0] >= 3, peak
    # Gamma profile: t_max = ln(E / E_c) - 0.5, so one layer (1 X0) deeper per e-fold.
    slope = np.polyfit(np.log(energies), mean_depth, 1)[0]
    assert slope == pytest.approx(1.0 / PARAMS.layer_x0, rel=0.25), slope
    expected_peak = PARAMS.shower_max_x0(energies) / PARAMS.layer_x0
    assert np.all(np.abs(np.array(peak) - expected_peak) <= 1.5), (peak, expected_peak)


@pytest.mark.parametrize("bin_deg", [62.0, 90.0, 118.0])
def test_measured_angle_tracks_generated_angle_per_bin(bin_deg):
    rng = np.random.default_rng(int(bin_deg))
    n = 100
    theta = np.deg2rad(bin_deg) + rng.uniform(-0.1, 0.1, n)  # 3DGAN angle bins: +- 0.1 rad
    energy = rng.uniform(2.0, 500.0, n)
    ecal, _ = simulate_showers(energy, theta, rng, PARAMS)
    measured = measured_angle(ecal)
    diff_deg = np.degrees(measured.mean() - theta.mean())
    assert abs(diff_deg) < 2.0, diff_deg
    # Event by event it follows too: strong correlation inside a 11-degree wide bin.
    assert np.corrcoef(theta, measured)[0, 1] > 0.8


def test_showers_are_concentrated_around_the_axis():
    ecal = showers(100.0, 20, seed=3)
    total = raw_sums(ecal)
    core = ecal[:, 22:29, 22:29, :].reshape(20, -1).sum(axis=1)
    assert np.all(core / total > 0.85)
    # Readout: every stored cell is above threshold, and noise-only cells (far below the
    # 0.0225-unit energy of one physical spot) appear at the Gaussian-tail rate.
    nonzero = ecal[ecal > 0]
    assert nonzero.min() >= PARAMS.threshold
    noise_only = int(((ecal > 0) & (ecal < 10 * PARAMS.threshold)).sum())
    k = PARAMS.threshold / PARAMS.noise_sigma
    expected = ecal.size * 0.5 * math.erfc(k / math.sqrt(2.0))
    assert 0.5 * expected < noise_only < 1.5 * expected, (noise_only, expected)


def lateral_containment(ecal: np.ndarray, radii_cells) -> list[float]:
    """Mean fraction of each shower's energy in cells whose centre lies within each radius of
    the shower axis (the energy-weighted x-y barycentre: the axis at normal incidence)."""
    n, nx, ny, _ = ecal.shape
    xy = ecal.sum(axis=3, dtype=np.float64)
    total = xy.sum(axis=(1, 2))
    xc, yc = np.arange(nx) + 0.5, np.arange(ny) + 0.5
    bx = (xy.sum(axis=2) @ xc) / total
    by = (xy.sum(axis=1) @ yc) / total
    dist = np.hypot(xc[None, :, None] - bx[:, None, None], yc[None, None, :] - by[:, None, None])
    return [float(np.mean((xy * (dist <= r)).sum(axis=(1, 2)) / total)) for r in radii_cells]


@pytest.mark.parametrize("energy", [20.0, 200.0])
def test_lateral_containment_in_moliere_radii(energy):
    # An electromagnetic shower keeps about 90 % of its energy within one Moliere radius and
    # about 95 % within two (the previous profile held 70 % and 87 %).
    r_m = PARAMS.moliere_radius_cells
    one, two, wide = lateral_containment(showers(energy, 30, seed=40 + int(energy)), [r_m, 2 * r_m, 3.5 * r_m])
    assert 0.85 <= one <= 0.95, (energy, one)
    assert two >= 0.93, (energy, two)
    assert one < two < wide <= 1.0, (one, two, wide)


def hit_counts(ecal: np.ndarray) -> np.ndarray:
    """Cells above the evaluator's 3e-4 GeV (deposited) hit threshold, per shower."""
    threshold = raw_threshold(DEFAULT_HIT_THRESHOLD_GEV)
    return np.count_nonzero(ecal.reshape(ecal.shape[0], -1) > threshold, axis=1)


def test_hit_count_keeps_rising_with_energy_up_to_500_gev():
    # Physical spots have a fixed energy, so more energy means more cells above threshold in
    # the shower's tails; a cap on the spot count used to freeze the count near 650 above
    # ~45 GeV. Means over 30 showers (their standard errors are ~1-2 % of the steps here).
    energies = [10.0, 50.0, 100.0, 200.0, 500.0]
    means = np.array([hit_counts(showers(e, 30, seed=60 + int(e))).mean() for e in energies])
    assert np.all(np.diff(means) > 0), dict(zip(energies, means))
    assert np.all(means[1:] / means[:-1] > 1.1), dict(zip(energies, means))


def test_merged_dense_cells_match_the_all_physical_spot_model():
    # Above max_spots the dense shower core is filled with merged deposits and only the sparse
    # cells get one deposit per physical spot; a cap high enough that every spot is placed on
    # its own must give the same hit count, spectrum of the sparse cells (0.01-1 raw units,
    # most of the hits) and containment, to a few %. (Dense cells, above ~10 raw units, are
    # summed from coarser deposits, so their spectrum is only alike to ~20 %.)
    energy, n = 200.0, 20
    merged = showers(energy, n, seed=81)
    rng = np.random.default_rng(82)
    unmerged, _ = simulate_showers(
        np.full(n, energy), np.full(n, np.pi / 2), rng, dataclasses.replace(PARAMS, max_spots=10**7)
    )
    hits_merged, hits_unmerged = hit_counts(merged).mean(), hit_counts(unmerged).mean()
    assert hits_merged == pytest.approx(hits_unmerged, rel=0.04), (hits_merged, hits_unmerged)
    edges = np.logspace(-2, 0, 5)
    spectrum = [np.histogram(e[e > 0], edges)[0] / n for e in (merged, unmerged)]
    np.testing.assert_allclose(spectrum[0], spectrum[1], rtol=0.08)
    r_m = PARAMS.moliere_radius_cells
    np.testing.assert_allclose(
        lateral_containment(merged, [r_m, 2 * r_m]), lateral_containment(unmerged, [r_m, 2 * r_m]), atol=0.01
    )


def test_gaussian_tail_sampler_matches_the_truncated_normal():
    rng = np.random.default_rng(5)
    for k in (1.0, 4.0):
        x = _gaussian_tail(rng, k, 40000)
        assert x.min() > k
        # Mean of N(0,1) conditioned on x > k: phi(k) / Q(k).
        phi = math.exp(-k * k / 2) / math.sqrt(2 * math.pi)
        q = 0.5 * math.erfc(k / math.sqrt(2))
        assert x.mean() == pytest.approx(phi / q, rel=0.01)
        # Survival beyond k + 0.5 matches Q(k + 0.5) / Q(k).
        q2 = 0.5 * math.erfc((k + 0.5) / math.sqrt(2))
        assert np.mean(x > k + 0.5) == pytest.approx(q2 / q, rel=0.05)


def test_simulate_rejects_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="energies"):
        simulate_showers(np.array([10.0, -1.0]), np.array([1.0, 1.0]), rng, PARAMS)
    with pytest.raises(ValueError, match="angles"):
        simulate_showers(np.array([10.0]), np.array([3.5]), rng, PARAMS)


# ------------------------------------------------------------------------------ files, seeds


def small_config(**kw) -> MonteCarloConfig:
    base = dict(n_events=40, events_per_file=24, chunk_events=8, seed=7, energy_min=10.0,
                energy_max=200.0, workers=1)
    base.update(kw)
    return MonteCarloConfig(**base)


def test_variable_angle_files_round_trip(tmp_path):
    config = small_config()
    paths = generate_files(config, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [
        "mc_variable_angle_00000.h5", "mc_variable_angle_00001.h5"
    ]
    infos = [h5layout.inspect_file(p) for p in paths]
    assert [i.n_events for i in infos] == [24, 16]
    assert all(i.layout == "variable_angle" and i.chunk_events == 8 for i in infos)
    block = h5layout.read_events(paths[1], 0, 16)
    assert h5layout.find_bad_events(block, paths[1], energy_range=(10.0, 200.0)) == []
    assert np.all((block.theta >= np.deg2rad(60)) & (block.theta <= np.deg2rad(120)))
    with h5py.File(paths[1], "r") as h5:
        assert h5["mtheta"].dtype == np.float64 and h5["ECAL"].compression == "gzip"
        np.testing.assert_allclose(h5["sum"][:], raw_sums(block.ecal), rtol=1e-5)
        np.testing.assert_allclose(h5["mtheta"][:], measured_angle(block.ecal), rtol=1e-6)
        assert json.loads(h5.attrs["config_json"]) == config.to_dict()
        assert h5.attrs["file_index"] == 1 and "numpy" in json.loads(h5.attrs["versions_json"])
    sidecar = json.loads((tmp_path / SIDECAR_NAME).read_text())
    assert sidecar["config"] == config.to_dict()
    assert [f["n_events"] for f in sidecar["files"]] == [24, 16]
    assert sidecar["files"][0]["size_bytes"] == os.path.getsize(paths[0])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    # Raw sums ~ primary energy in GeV (the published files' units).
    ratio = raw_sums(block.ecal) / block.energy
    assert 0.85 < ratio.mean() < 1.05


def test_fixed_angle_files_round_trip(tmp_path):
    config = small_config(layout="fixed_angle", n_events=16, events_per_file=16,
                          energy_min=300.0, energy_max=500.0)
    (path,) = generate_files(config, str(tmp_path))
    assert os.path.basename(path).startswith("EleEscan_")
    info = h5layout.inspect_file(path)
    assert (info.layout, info.image_shape, info.energy_key) == ("fixed_angle", (25, 25, 25), "target")
    block = h5layout.read_events(path, 0, 16)
    np.testing.assert_allclose(block.theta, np.pi / 2)
    assert np.all((block.energy >= 300) & (block.energy <= 500))
    with h5py.File(path, "r") as h5:
        hcal = h5["HCAL"][:]
        assert h5["target"].shape == (16, 5)
    # Energy leaking behind the 25 layers shows up in the HCAL, and the total is closer to 0.02.
    assert hcal.sum() > 0
    ecal_f = raw_sums(block.ecal) / ECAL_RAW_SCALE / block.energy
    total_f = (raw_sums(block.ecal) + hcal.reshape(16, -1).sum(axis=1)) / ECAL_RAW_SCALE / block.energy
    assert total_f.mean() > ecal_f.mean()
    assert measured_angle(block.ecal).mean() == pytest.approx(np.pi / 2, abs=np.deg2rad(1.0))


def test_deterministic_per_seed_and_per_file(tmp_path):
    config = small_config(n_events=20, events_per_file=10)
    a = simulate_file_events(config, 1, 10)
    b = simulate_file_events(config, 1, 10)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    other_file = simulate_file_events(config, 0, 10)
    assert not np.array_equal(a["ECAL"], other_file["ECAL"])
    other_seed = simulate_file_events(small_config(n_events=20, events_per_file=10, seed=8), 1, 10)
    assert not np.array_equal(a["energy"], other_seed["energy"])
    # File 1 written alone (as a parallel worker would) holds exactly those events.
    entry = generate_file(config, str(tmp_path), 1)
    with h5py.File(entry["path"], "r") as h5:
        np.testing.assert_array_equal(h5["ECAL"][:], a["ECAL"])
        np.testing.assert_array_equal(h5["mtheta"][:], a["mtheta"])


def test_parallel_workers_write_the_same_bytes_of_data(tmp_path):
    config = small_config(n_events=24, events_per_file=12, energy_min=2.0, energy_max=20.0)
    serial = generate_files(config, str(tmp_path / "serial"))
    parallel = generate_files(MonteCarloConfig.from_dict({**config.to_dict(), "workers": 2}),
                              str(tmp_path / "parallel"))
    # Bit-exact on purpose: a worker only changes which process simulates a file; each file is
    # the same NumPy work on the same shapes (its own seed, the same batch_size) on this machine.
    for s, p in zip(serial, parallel):
        with h5py.File(s, "r") as hs, h5py.File(p, "r") as hp:
            for key in hs:
                np.testing.assert_array_equal(hs[key][:], hp[key][:])


def test_refuses_to_overwrite_unless_asked(tmp_path):
    config = small_config(n_events=4, events_per_file=4)
    generate_files(config, str(tmp_path))
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_files(config, str(tmp_path))
    generate_files(MonteCarloConfig.from_dict({**config.to_dict(), "overwrite": True}), str(tmp_path))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="energy_min=600"):
        MonteCarloConfig(energy_min=600.0, energy_max=500.0)
    with pytest.raises(ValueError, match="layout.*'cubic'"):
        MonteCarloConfig(layout="cubic")
    with pytest.raises(ValueError, match="n_events"):
        MonteCarloConfig(n_events=0)
    with pytest.raises(ValueError, match="workers must be an integer >= 0, got -1"):
        MonteCarloConfig(workers=-1)
    with pytest.raises(ValueError, match="moliere_radius_cells"):
        MonteCarloConfig(moliere_radius_cells=-1.0)
    with pytest.raises(ValueError, match="unknown keys"):
        MonteCarloConfig.from_dict({"n_event": 3})
    config = small_config()
    assert MonteCarloConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cli_flags_map_onto_config_fields(tmp_path, capsys):
    paths = main([
        "--output-dir", str(tmp_path), "--n-events", "6", "--events-per-file", "3",
        "--layout", "fixed_angle", "--energy-min", "50", "--energy-max", "60", "--seed", "3",
        "--compression", "lzf", "--stochastic-term", "0.2",
    ])
    assert len(paths) == 2 and capsys.readouterr().out.split() == paths
    with h5py.File(paths[0], "r") as h5:
        stored = json.loads(h5.attrs["config_json"])
        assert h5["ECAL"].compression == "lzf"
    assert (stored["layout"], stored["seed"], stored["stochastic_term"]) == ("fixed_angle", 3, 0.2)
    block = h5layout.read_events(paths[1], 0, 3)
    assert np.all((block.energy >= 50) & (block.energy <= 60))


def test_truncated_monte_carlo_file_is_rejected(tmp_path):
    (path,) = generate_files(small_config(n_events=8, events_per_file=8), str(tmp_path))
    data = open(path, "rb").read()
    bad = tmp_path / "cut.h5"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputValidationError, match="truncated") as info:
        h5layout.read_events(str(bad), 0, 8)
    assert info.value.uri == str(bad)
