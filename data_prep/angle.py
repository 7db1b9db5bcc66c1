"""Measured shower angle: the one definition shared by `mtheta`, the evaluator and the
discriminator's angle head (trainer.models computes the same formulas in TensorFlow).

Two definitions, both on raw cell energies E >= 0 (negative values clipped to 0) with cell
indices x, y, z (z = depth layer), cells treated as cubes in index units:

``published`` (the default; 3DGAN's analysis ``measPython`` and its discriminator's angle
Lambda, which real files' ``mtheta`` follow). Cell centres at index + 0.5.

    (x_ref, y_ref, z_ref) = energy-weighted barycentre of the whole shower
    for each layer z with energy:
        (x_mid, y_mid)    = energy-weighted barycentre of the layer
        zproj             = sqrt(max((x_mid - x_ref)^2 + (z - z_ref)^2, 1e-7))
        m                 = (y_mid - y_ref) / zproj, negated for layers with z < z_ref
        angle_z           = pi/2 - arctan(m)
    angle = sum_z (z + 0.5) angle_z / sum_z (z + 0.5)   over layers with energy
    angle = 100 (EMPTY_SHOWER_ANGLE) for a shower without energy

Each layer's angle is the polar angle, from the y axis, of the line from the shower barycentre
to the layer barycentre; deeper layers weigh more. A straight axis with direction
(sin t cos p, cos t, sin t sin p) gives t exactly. The 1e-7 floor under zproj is the one the
published TensorFlow Lambda has (Keras' epsilon; the numpy version has none and returns NaN
when a layer barycentre coincides with the shower barycentre); both are used here so numpy and
TensorFlow agree.

``slope`` (caloforge's earlier definition, kept as an alternative): the energy-weighted
least-squares slope of y against z, angle = pi/2 - arctan(cov(y, z) / var(z)); x plays no role;
pi/2 for an empty shower or one whose energy sits in one layer. It uses every cell once and has
no per-layer division, but differs from the published `mtheta` (0.026 rad RMS on real files).

The tilt is along y, as in 3DGAN, where theta is the polar angle from the beam axis (y) and
depth z is radial: an axis (0, cos theta, sin theta) gives theta under both definitions.
"""

from __future__ import annotations

import numpy as np

ANGLE_DEFINITIONS = ("published", "slope")
#: The published angle of a shower without energy: a sentinel outside (0, pi), not an angle.
EMPTY_SHOWER_ANGLE = 100.0
#: Angles above this are the empty-shower sentinel, not angles (every angle lies in [0, pi]).
VALID_ANGLE_MAX = float(np.pi) + 1.0
#: Floor under the squared transverse distance (the published Lambda's Keras epsilon).
ZPROJ_FLOOR = 1e-7


def measured_angle(ecal_raw: np.ndarray, definition: str = "published") -> np.ndarray:
    """Measure the polar angle of each shower.

    Args:
        ecal_raw: Cell energies in raw units (NOT power-transformed), shape (n, X, Y, Z) for a
            batch or (X, Y, Z) for one event; a trailing channel axis of size 1 is accepted.
        definition: "published" (3DGAN's measured angle, the default) or "slope".

    Returns:
        float64 array of shape (n,) (or a 0-d array for one event) with the angle in radians;
        EMPTY_SHOWER_ANGLE (100) for an empty shower under the published definition.

    Raises:
        ValueError: if the array is not 3-D or 4-D (after dropping a size-1 channel axis), or
            for an unknown definition.
    """
    _check_definition(definition)
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
    if ecal.dtype.kind != "f":
        ecal = ecal.astype(np.float64)
    if ecal.shape[0] and ecal.min() < 0:
        ecal = np.clip(ecal, 0.0, None)
    eyz = ecal.sum(axis=1, dtype=np.float64)  # (n, Y, Z)
    exz = ecal.sum(axis=2, dtype=np.float64) if definition == "published" else None
    angle = angle_from_projections(exz, eyz, definition)
    return angle[0] if single else angle


def angle_from_projections(exz: np.ndarray | None, eyz: np.ndarray,
                           definition: str = "published") -> np.ndarray:
    """measured_angle from the shower's two projections (what the formulas need, nothing more).

    Args:
        exz: (n, X, Z) energy summed over y (unused, may be None, for "slope").
        eyz: (n, Y, Z) energy summed over x.
        definition: "published" or "slope".

    Returns:
        float64 (n,) radians (EMPTY_SHOWER_ANGLE for empty showers under "published").
    """
    _check_definition(definition)
    eyz = np.clip(np.asarray(eyz, dtype=np.float64), 0.0, None)
    if definition == "slope":
        return _slope_angle(eyz)
    if exz is None:
        raise ValueError("the published angle needs the x-z projection (exz)")
    return _published_angle(np.clip(np.asarray(exz, dtype=np.float64), 0.0, None), eyz)


def _published_angle(exz: np.ndarray, eyz: np.ndarray) -> np.ndarray:
    nx, ny, nz = exz.shape[1], eyz.shape[1], eyz.shape[2]
    xc = np.arange(nx, dtype=np.float64) + 0.5
    yc = np.arange(ny, dtype=np.float64) + 0.5
    zc = np.arange(nz, dtype=np.float64) + 0.5
    ez = eyz.sum(axis=1)  # (n, Z) layer energies
    w = ez.sum(axis=1)
    has = w > 0
    safe_w = np.where(has, w, 1.0)
    x_ref = (exz.sum(axis=2) @ xc) / safe_w
    y_ref = (eyz.sum(axis=2) @ yc) / safe_w
    z_ref = (ez @ zc) / safe_w
    layer = ez > 0
    safe_ez = np.where(layer, ez, 1.0)
    x_mid = np.einsum("nxz,x->nz", exz, xc) / safe_ez
    y_mid = np.einsum("nyz,y->nz", eyz, yc) / safe_ez
    dz = zc[None, :] - z_ref[:, None]
    zproj = np.sqrt(np.maximum((x_mid - x_ref[:, None]) ** 2 + dz ** 2, ZPROJ_FLOOR))
    m = (y_mid - y_ref[:, None]) / zproj
    m = np.where(dz < 0, -m, m)
    weights = np.where(layer, zc[None, :], 0.0)
    total = weights.sum(axis=1)
    angle = ((np.pi / 2.0 - np.arctan(m)) * weights).sum(axis=1) / np.where(total > 0, total, 1.0)
    return np.where(has, angle, EMPTY_SHOWER_ANGLE)


def _slope_angle(eyz: np.ndarray) -> np.ndarray:
    n, ny, nz = eyz.shape
    y = np.arange(ny, dtype=np.float64)
    z = np.arange(nz, dtype=np.float64)
    w = eyz.sum(axis=(1, 2))
    ez = eyz.sum(axis=1)  # (n, Z) layer energies
    ey = eyz.sum(axis=2)  # (n, Y)
    safe_w = np.where(w > 0, w, 1.0)
    zbar = ez @ z / safe_w
    ybar = ey @ y / safe_w
    syz = (eyz @ z) @ y / safe_w  # E[y z]
    szz = ez @ (z * z) / safe_w  # E[z^2]
    cov_yz = syz - ybar * zbar
    var_z = szz - zbar * zbar
    ok = (w > 0) & (var_z > 1e-12)
    slope = np.where(ok, cov_yz / np.where(ok, var_z, 1.0), 0.0)
    return np.pi / 2.0 - np.arctan(slope)


def is_empty_shower_angle(angle: np.ndarray) -> np.ndarray:
    """True where an angle is the empty-shower sentinel rather than an angle in [0, pi]."""
    return np.asarray(angle) > VALID_ANGLE_MAX


def _check_definition(definition: str) -> None:
    if definition not in ANGLE_DEFINITIONS:
        raise ValueError(f"angle definition {definition!r} is not one of "
                         f"{', '.join(ANGLE_DEFINITIONS)}")


def pseudorapidity(theta: np.ndarray) -> np.ndarray:
    """Pseudorapidity eta = -ln(tan(theta / 2)) of polar angles in radians (0 at 90 degrees)."""
    theta = np.asarray(theta, dtype=np.float64)
    return -np.log(np.tan(theta / 2.0))
