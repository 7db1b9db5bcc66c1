"""The measured-angle definitions on showers whose axis is known exactly, and the published
formula against a plain per-layer reading of it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data_prep.angle import (EMPTY_SHOWER_ANGLE, angle_from_layer_sums, is_empty_shower_angle,
                             layer_sums, measured_angle, pseudorapidity)


# float32 cells are summed in float32 (over at most X*Y cells per layer, as the published numpy
# code does): a straight axis is read to 1.5e-5 degrees (measured); exact in float64.
TOL_DEG = 1e-4


def line_shower(theta_deg: float, shape=(51, 51, 25), x=25, y0=25.0, z_range=(3, 20),
                phi_deg: float = 90.0) -> np.ndarray:
    """Deposits along a straight axis with direction (sin t cos p, cos t, sin t sin p), split
    between neighbouring x and y cells bilinearly so that each layer's barycentre lies exactly
    on the axis. phi = 90 degrees keeps the axis in the y-z plane."""
    ecal = np.zeros(shape, np.float32)
    t, p = np.deg2rad(theta_deg), np.deg2rad(phi_deg)
    direction = np.array([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)])
    z0 = (z_range[0] + z_range[1]) / 2.0
    for z in range(*z_range):
        s = (z - z0) / direction[2]
        xc, yc = x + s * direction[0], y0 + s * direction[1]
        energy = 1.0 + 0.1 * z  # uneven layer energies must not matter for a straight line
        xl, yl = int(np.floor(xc)), int(np.floor(yc))
        fx, fy = xc - xl, yc - yl
        for dx, wx in ((0, 1 - fx), (1, fx)):
            for dy, wy in ((0, 1 - fy), (1, fy)):
                ecal[xl + dx, yl + dy, z] += energy * wx * wy
    return ecal


def per_layer_reference(event: np.ndarray) -> float:
    """The published measured angle read literally, one layer at a time (independent of the
    vectorised code): barycentre reference, per-layer polar angle, mean weighted by z + 0.5."""
    e = np.clip(event.astype(np.float64), 0, None)
    total = e.sum()
    if total == 0:
        return EMPTY_SHOWER_ANGLE
    ix, iy, iz = (np.arange(n) + 0.5 for n in e.shape)
    ref = [(e.sum(axis=(1, 2)) * ix).sum() / total, (e.sum(axis=(0, 2)) * iy).sum() / total,
           (e.sum(axis=(0, 1)) * iz).sum() / total]
    num = den = 0.0
    for k, zc in enumerate(iz):
        layer = e[:, :, k]
        if layer.sum() == 0:
            continue
        x_mid = (layer.sum(axis=1) * ix).sum() / layer.sum()
        y_mid = (layer.sum(axis=0) * iy).sum() / layer.sum()
        zproj = math.sqrt(max((x_mid - ref[0]) ** 2 + (zc - ref[2]) ** 2, 1e-7))
        m = (y_mid - ref[1]) / zproj * (-1 if zc < ref[2] else 1)
        num += zc * (math.pi / 2 - math.atan(m))
        den += zc
    return num / den


@pytest.mark.parametrize("definition", ["published", "slope"])
@pytest.mark.parametrize("theta_deg", [60.0, 75.0, 90.0, 104.0, 120.0])
def test_straight_axis_in_the_yz_plane_gives_its_angle(theta_deg, definition):
    got = measured_angle(line_shower(theta_deg), definition)
    assert np.degrees(got) == pytest.approx(theta_deg, abs=TOL_DEG)


@pytest.mark.parametrize("theta_deg,phi_deg", [(62.0, 60.0), (90.0, 45.0), (118.0, 120.0), (75.0, 100.0)])
def test_published_angle_is_the_polar_angle_of_a_tilted_3d_axis(theta_deg, phi_deg):
    ecal = line_shower(theta_deg, phi_deg=phi_deg, z_range=(4, 18))
    assert np.degrees(measured_angle(ecal)) == pytest.approx(theta_deg, abs=TOL_DEG)
    # The slope ignores x, so it reads dy/dz = cot(t) / sin(p) instead.
    t, p = np.deg2rad(theta_deg), np.deg2rad(phi_deg)
    expected_slope = np.pi / 2 - np.arctan(1 / np.tan(t) / np.sin(p))
    assert measured_angle(ecal, "slope") == pytest.approx(expected_slope, abs=np.radians(TOL_DEG))


def test_published_angle_matches_the_per_layer_reading_on_irregular_showers():
    rng = np.random.default_rng(5)
    ecal = (rng.exponential(1.0, (6, 11, 13, 9)) * (rng.random((6, 11, 13, 9)) < 0.2)).astype(np.float32)
    ecal[0, :, :, 4] = 0.0  # an empty layer inside the shower
    ecal[1, :, :, :3] = 0.0
    expected = [per_layer_reference(e) for e in ecal]
    # float64 cells: the same arithmetic up to summation order.
    np.testing.assert_allclose(measured_angle(ecal.astype(np.float64)), expected, rtol=0, atol=1e-12)
    # float32 cells are summed in float32 (over at most X*Y cells a layer): 1e-6 rad allowed.
    got = measured_angle(ecal)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.ptp(got) > 0.05


def test_batch_shapes_channel_axis_projections_and_symmetry():
    batch = np.stack([line_shower(65.0), line_shower(115.0, x=3)])
    got = measured_angle(batch)
    assert got.shape == (2,)
    np.testing.assert_allclose(np.degrees(got), [65.0, 115.0], atol=TOL_DEG)
    np.testing.assert_allclose(measured_angle(batch[..., None]), got)
    np.testing.assert_allclose(angle_from_layer_sums(*layer_sums(batch)), got)
    # Mirroring y turns theta into pi - theta.
    np.testing.assert_allclose(measured_angle(batch[:, :, ::-1, :]), np.pi - got, atol=np.radians(TOL_DEG))
    assert measured_angle(batch[0]).shape == ()


@pytest.mark.parametrize("definition", ["published", "slope"])
def test_symmetric_spread_does_not_bias_the_angle(definition):
    ecal = line_shower(70.0)
    # Symmetric lateral spread in x and in y around the axis at every layer.
    spread = ecal + 0.3 * np.roll(ecal, 1, axis=0) + 0.3 * np.roll(ecal, -1, axis=0)
    spread = spread + 0.2 * np.roll(spread, 2, axis=1) + 0.2 * np.roll(spread, -2, axis=1)
    assert np.degrees(measured_angle(spread, definition)) == pytest.approx(70.0, abs=TOL_DEG)


def test_degenerate_events():
    empty = np.zeros((51, 51, 25), np.float32)
    one_layer = np.zeros((51, 51, 25), np.float32)
    one_layer[10:20, 5:40, 7] = 1.0
    negative = -np.ones((51, 51, 25), np.float32)  # clipped to 0: no energy
    batch = np.stack([empty, one_layer, negative])
    published = measured_angle(batch)
    # The published sentinel for a shower without energy; one layer has no direction: pi/2.
    np.testing.assert_allclose(published, [EMPTY_SHOWER_ANGLE, np.pi / 2, EMPTY_SHOWER_ANGLE])
    np.testing.assert_array_equal(is_empty_shower_angle(published), [True, False, True])
    np.testing.assert_allclose(measured_angle(batch, "slope"), np.pi / 2)


def test_rejects_wrong_rank_and_unknown_definitions():
    with pytest.raises(ValueError, match="shape"):
        measured_angle(np.zeros((51, 25)))
    with pytest.raises(ValueError, match="'barycentre' is not one of published, slope"):
        measured_angle(np.zeros((2, 5, 5, 5)), "barycentre")


def test_pseudorapidity_zero_at_ninety_degrees_and_odd():
    eta = pseudorapidity(np.deg2rad([60.0, 90.0, 120.0]))
    assert eta[1] == pytest.approx(0.0, abs=1e-12)
    assert eta[0] == pytest.approx(-eta[2]) and eta[0] > 0
