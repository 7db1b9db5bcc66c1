"""Tests of eval.features: moments with known answers, units of the hit threshold, chunking, errors."""

import numpy as np
import pytest

from data_prep.angle import measured_angle
from eval.features import (
    CELL_SPECTRUM_EDGES,
    ECAL_TO_DEPOSIT,
    compute_features,
    raw_threshold,
)


def hand_built() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Event 0: 2.0 raw at (1,0,0) and 6.0 raw at (3,2,2). Event 1: only cells near the hit threshold.
    Event 2: empty."""
    ecal = np.zeros((3, 5, 4, 3), dtype=np.float32)
    ecal[0, 1, 0, 0] = 2.0
    ecal[0, 3, 2, 2] = 6.0
    ecal[1, 0, 0, 0] = 0.010  # below 0.015 raw (3e-4 GeV deposited)
    ecal[1, 4, 3, 2] = 0.020  # above
    ecal[1, 2, 2, 1] = 0.016  # above
    return ecal, np.array([10.0, 1.0, 5.0], dtype=np.float32), np.full(3, np.pi / 2, dtype=np.float32)


def test_threshold_maps_deposited_gev_to_raw_units():
    assert raw_threshold(3e-4) == pytest.approx(0.015)
    assert raw_threshold(1.0) == pytest.approx(1.0 / ECAL_TO_DEPOSIT)
    with pytest.raises(ValueError, match="threshold_gev"):
        raw_threshold(-1.0)


def test_moments_sums_and_hits_of_hand_built_showers():
    f = compute_features(*hand_built())
    assert f.ecal_sum[0] == pytest.approx(8.0)
    assert f.sampling_fraction[0] == pytest.approx(8.0 / 50.0 / 10.0)
    # M1 = sum i S(i) / E with integer indices; M2 = sum (i - M1)^2 S(i) / E.
    np.testing.assert_allclose(f.m1[0], [2.5, 1.5, 1.5])
    np.testing.assert_allclose(f.m2[0], [0.75, 0.75, 0.75])
    np.testing.assert_array_equal(f.max_position[0], [3, 2, 2])
    np.testing.assert_allclose(f.shape_x[0], [0, 2, 0, 6, 0])
    np.testing.assert_allclose(f.shape_z[0], [2, 0, 6])
    assert f.n_hits.tolist() == [2, 2, 0]
    assert f.empty.tolist() == [False, False, True]
    assert np.all(np.isnan(f.m1[2])) and np.all(np.isnan(f.m2[2]))
    # An empty shower has no angle: NaN, not the published sentinel 100 (which would pull means).
    assert np.isnan(f.measured_angle[2]) and np.all(np.isfinite(f.measured_angle[:2]))
    # Cell spectrum: every positive cell counted once, in the bin holding its energy.
    assert f.cell_hist.sum(axis=1).tolist() == [2, 3, 0]
    assert f.cell_hist[0, np.searchsorted(CELL_SPECTRUM_EDGES, 6.0, side="right") - 1] == 1


def test_threshold_is_configurable_in_deposited_gev():
    f = compute_features(*hand_built(), hit_threshold_gev=0.018 * ECAL_TO_DEPOSIT)
    assert f.n_hits.tolist() == [2, 1, 0]


def test_chunking_gives_the_same_features_and_angle_matches_data_prep():
    rng = np.random.default_rng(3)
    ecal = rng.exponential(0.05, size=(7, 6, 8, 5)).astype(np.float32)
    energy = rng.uniform(10, 100, 7).astype(np.float32)
    theta = rng.uniform(1.1, 2.0, 7).astype(np.float32)
    a = compute_features(ecal, energy, theta, chunk_size=2)
    b = compute_features(ecal, energy, theta, chunk_size=256)
    # Not bit-exact: another chunk shape can change NumPy's iteration order in the multi-axis
    # sums and the BLAS kernel of the angle's matrix products. Everything accumulates in float64,
    # so 1e-12 (thousands of float64 ulps, far below the float32 inputs' resolution) is ample.
    for name in ("ecal_sum", "m1", "m2", "shape_y", "n_hits", "max_position", "cell_hist", "measured_angle", "coarse_cells"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(a.measured_angle, measured_angle(ecal), rtol=1e-6)
    # A trailing channel axis of 1 is accepted.
    c = compute_features(ecal[..., None], energy, theta)
    np.testing.assert_allclose(c.ecal_sum, a.ecal_sum)


def test_high_level_table_and_subset():
    f = compute_features(*hand_built())
    table = f.high_level_table()
    assert {"sampling_fraction", "m1_x", "width_z", "measured_angle", "log_n_hits"} <= set(table)
    assert all(v.shape == (3,) for v in table.values())
    assert table["width_x"][0] == pytest.approx(np.sqrt(0.75))
    assert np.all(np.isfinite([v[0] for v in table.values()]))
    sub = f.subset(np.array([True, False, True]))
    assert sub.n_events == 2 and sub.empty.tolist() == [False, True]


def test_coarse_cells_conditions_and_joining():
    ecal, energy, theta = hand_built()  # 5 x 4 x 3 cells: every axis has fewer cells than groups
    f = compute_features(ecal, energy, theta)
    # Fewer cells than COARSE_GROUPS along every axis: one group per cell, so nothing is merged.
    assert f.coarse_cells.shape == (3, 5 * 4 * 3)
    np.testing.assert_allclose(f.coarse_cells, ecal.reshape(3, -1))
    np.testing.assert_array_equal(f.condition_angle, f.theta)  # default: the generated angle
    big = np.random.default_rng(0).random((2, 51, 51, 25)).astype(np.float32)
    g = compute_features(big, np.array([50.0, 100.0]), np.full(2, 1.2), condition_angle=np.array([1.1, 1.3]))
    assert g.coarse_cells.shape == (2, 10 * 10 * 5)  # COARSE_GROUPS
    np.testing.assert_allclose(g.coarse_cells.sum(axis=1), big.sum(axis=(1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(g.coarse_cells[:, 0], big[:, :6, :6, :5].sum(axis=(1, 2, 3)), rtol=1e-6)
    table = g.conditioned_table()
    assert list(table)[:2] == ["log10_energy", "condition_angle"]
    np.testing.assert_allclose(table["log10_energy"], [np.log10(50.0), 2.0])
    np.testing.assert_allclose(table["condition_angle"], [1.1, 1.3])
    voxels = g.voxel_table()
    assert voxels.shape == (2, 502)
    np.testing.assert_allclose(voxels[:, 2:], g.coarse_cells / np.array([[50.0], [100.0]]))
    joined = type(f).concatenate([f.subset(np.array([0])), f.subset(np.array([1, 2]))])
    np.testing.assert_array_equal(joined.coarse_cells, f.coarse_cells)
    np.testing.assert_array_equal(joined.m1, f.m1)
    with pytest.raises(ValueError, match="different hit thresholds"):
        type(f).concatenate([f, compute_features(ecal, energy, theta, hit_threshold_gev=1e-3)])


def test_bad_inputs_name_the_problem():
    ecal, energy, theta = hand_built()
    bad = energy.copy()
    bad[1] = 0.0
    with pytest.raises(ValueError, match="event index 1"):
        compute_features(ecal, bad, theta)
    with pytest.raises(ValueError, match="theta must have shape"):
        compute_features(ecal, energy, theta[:2])
    with pytest.raises(ValueError, match=r"\(n, X, Y, Z\)"):
        compute_features(ecal[0], energy, theta)
