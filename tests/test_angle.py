"""The measured-angle definition on showers whose axis is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.angle import measured_angle, pseudorapidity


def line_shower(theta_deg: float, shape=(51, 51, 25), x=25, y0=25.0, z_range=(3, 20)) -> np.ndarray:
    """Deposits along y = y0 + (z - z0) cot(theta), split between neighbouring y cells linearly
    so that each layer's barycentre lies exactly on the line."""
    ecal = np.zeros(shape, np.float32)
    cot = 1.0 / np.tan(np.deg2rad(theta_deg))
    z0 = (z_range[0] + z_range[1]) / 2.0
    for z in range(*z_range):
        yc = y0 + (z - z0) * cot
        lo = int(np.floor(yc))
        frac = yc - lo
        energy = 1.0 + 0.1 * z  # uneven layer energies must not matter for a straight line
        ecal[x, lo, z] += energy * (1 - frac)
        ecal[x, lo + 1, z] += energy * frac
    return ecal


@pytest.mark.parametrize("theta_deg", [60.0, 75.0, 90.0, 104.0, 120.0])
def test_straight_axis_gives_its_angle(theta_deg):
    got = measured_angle(line_shower(theta_deg))
    assert np.degrees(got) == pytest.approx(theta_deg, abs=1e-6)


def test_batch_shapes_channel_axis_and_symmetry():
    batch = np.stack([line_shower(65.0), line_shower(115.0, x=3)])
    got = measured_angle(batch)
    assert got.shape == (2,)
    np.testing.assert_allclose(np.degrees(got), [65.0, 115.0], atol=1e-6)
    np.testing.assert_allclose(measured_angle(batch[..., None]), got)
    # Mirroring y turns theta into pi - theta.
    np.testing.assert_allclose(measured_angle(batch[:, :, ::-1, :]), np.pi - got, atol=1e-9)


def test_symmetric_spread_does_not_bias_the_slope():
    ecal = line_shower(70.0)
    # Symmetric lateral spread in x and in y around the axis at every layer.
    spread = ecal + 0.3 * np.roll(ecal, 1, axis=0) + 0.3 * np.roll(ecal, -1, axis=0)
    spread = spread + 0.2 * np.roll(spread, 2, axis=1) + 0.2 * np.roll(spread, -2, axis=1)
    assert np.degrees(measured_angle(spread)) == pytest.approx(70.0, abs=1e-6)


def test_degenerate_events_return_perpendicular():
    empty = np.zeros((51, 51, 25), np.float32)
    one_layer = np.zeros((51, 51, 25), np.float32)
    one_layer[10:20, 5:40, 7] = 1.0
    negative = -np.ones((51, 51, 25), np.float32)  # clipped to 0: no energy
    got = measured_angle(np.stack([empty, one_layer, negative]))
    np.testing.assert_allclose(got, np.pi / 2)
    assert np.all(np.isfinite(got))


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match="shape"):
        measured_angle(np.zeros((51, 25)))


def test_pseudorapidity_zero_at_ninety_degrees_and_odd():
    eta = pseudorapidity(np.deg2rad([60.0, 90.0, 120.0]))
    assert eta[1] == pytest.approx(0.0, abs=1e-12)
    assert eta[0] == pytest.approx(-eta[2]) and eta[0] > 0
