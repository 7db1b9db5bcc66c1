"""Measured shower angle: the energy-weighted slope of the shower axis across ECAL layers.

Definition (the one contract shared by the Monte Carlo `mtheta`, the evaluator and the
discriminator's angle head, which must compute the same formula in TensorFlow):

With cell indices x, y, z (z = depth layer) and cell energies E >= 0 (negative values clipped
to 0), take energy-weighted means over all cells of the event:

    W      = sum E
    zbar   = sum E z / W,                 ybar = sum E y / W
    cov_yz = sum E (y - ybar)(z - zbar) / W
    var_z  = sum E (z - zbar)^2 / W
    m      = cov_yz / var_z               (dy/dz in cell units; 0 when W == 0 or var_z == 0)
    angle  = pi/2 - arctan(m)             (radians, in (0, pi))

This is the weighted least-squares slope of the per-layer y barycentres against the layer
index, weighted by layer energy (sum_z E_z ybar_z = sum E y), so it uses every cell once and
has no per-layer division by a possibly empty layer. The tilt is along y, matching the 3DGAN
convention where theta is the polar angle from the beam axis (y) and depth z is radial:
an axis with direction (0, cos theta, sin theta) has dy/dz = cot(theta), so the formula
returns theta for a perfectly measured axis. Cells are treated as cubes in index units, as
in the published 3DGAN angle measurement. Events with no energy, or all energy in one layer,
have no measurable slope and return pi/2 (perpendicular incidence), which keeps a loss that
uses the angle finite.
"""

from __future__ import annotations

import numpy as np


def measured_angle(ecal_raw: np.ndarray) -> np.ndarray:
    """Measure the polar angle of each shower from its energy-weighted axis slope.

    Args:
        ecal_raw: Cell energies in raw units (NOT power-transformed), shape (n, X, Y, Z) for a
            batch or (X, Y, Z) for one event; a trailing channel axis of size 1 is accepted.

    Returns:
        float64 array of shape (n,) (or a 0-d array for one event) with the angle in radians.

    Raises:
        ValueError: if the array is not 3-D or 4-D (after dropping a size-1 channel axis).
    """
    ecal = np.asarray(ecal_raw)
    if ecal.ndim == 5 and ecal.shape[-1] == 1:
        ecal = ecal[..., 0]
    single = ecal.ndim == 3
    if single:
        ecal = ecal[None]
    if ecal.ndim != 4:
        raise ValueError(
            f"measured_angle expects (n, X, Y, Z) or (X, Y, Z) cell energies, got shape {ecal.shape}"
        )
    n, nx, ny, nz = ecal.shape
    if ecal.dtype.kind != "f":
        ecal = ecal.astype(np.float64)
    if n and ecal.min() < 0:
        ecal = np.clip(ecal, 0.0, None)
    # Project onto the y-z plane first (x plays no role in the slope); summing over the leading
    # spatial axis of a (n, X, Y*Z) view keeps the reduction contiguous and fast.
    eyz = ecal.reshape(n, nx, ny * nz).sum(axis=1).astype(np.float64).reshape(n, ny, nz)
    y = np.arange(ny, dtype=np.float64)
    z = np.arange(nz, dtype=np.float64)
    w = eyz.sum(axis=(1, 2))
    ez = eyz.sum(axis=1)  # (n, Z) layer energies
    ey = eyz.sum(axis=2)  # (n, Y)
    safe_w = np.where(w > 0, w, 1.0)
    zbar = ez @ z / safe_w
    ybar = ey @ y / safe_w
    eyz_z = eyz @ z  # (n, Y): sum_z E(y, z) z
    syz = eyz_z @ y / safe_w  # E[y z]
    szz = ez @ (z * z) / safe_w  # E[z^2]
    cov_yz = syz - ybar * zbar
    var_z = szz - zbar * zbar
    ok = (w > 0) & (var_z > 1e-12)
    slope = np.where(ok, cov_yz / np.where(ok, var_z, 1.0), 0.0)
    angle = np.pi / 2.0 - np.arctan(slope)
    return angle[0] if single else angle


def pseudorapidity(theta: np.ndarray) -> np.ndarray:
    """Pseudorapidity eta = -ln(tan(theta / 2)) of polar angles in radians (0 at 90 degrees)."""
    theta = np.asarray(theta, dtype=np.float64)
    return -np.log(np.tan(theta / 2.0))
