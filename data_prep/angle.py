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
when a layer barycentre coincides with the shower barycentre); both implementations here use
it, so numpy and TensorFlow agree. Layer sums run in the cells' precision (float32 cells: float32 sums over at
most X*Y cells, about 1e-7 relative, as the published code), the rest in float64.

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
    if definition == "slope":
        n, nx, ny, nz = ecal.shape
        # Summing over the leading spatial axis of an (n, X, Y*Z) view is contiguous and fast.
        angle = _slope_angle(ecal.reshape(n, nx, ny * nz).sum(axis=1).astype(np.float64)
                             .reshape(n, ny, nz))
    else:
        angle = angle_from_layer_sums(*layer_sums(ecal))
    return angle[0] if single else angle


def layer_sums(ecal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer sums the published angle needs, from (n, X, Y, Z) cells E >= 0.

    Returns:
        float64 (n, Z) arrays: layer energy sum E, sum E (x + 0.5) and sum E (y + 0.5). The
        sums run in the cells' precision over at most X*Y cells (float32: ~1e-7 relative) and
        are returned in float64.
    """
    n, nx, ny, nz = ecal.shape
    flat = ecal.reshape(n, nx, ny * nz)
    eyz = flat.sum(axis=1).reshape(n, ny, nz)  # (n, Y, Z), contiguous reduction
    xc = (np.arange(nx) + 0.5).astype(ecal.dtype)
    yc = (np.arange(ny) + 0.5).astype(ecal.dtype)
    xw = np.matmul(xc, flat).reshape(n, ny, nz).sum(axis=1)  # BLAS over x
    yw = np.einsum("nyz,y->nz", eyz, yc)
    ez = eyz.sum(axis=1)
    return ez.astype(np.float64), xw.astype(np.float64), yw.astype(np.float64)


def angle_from_layer_sums(ez: np.ndarray, xw: np.ndarray, yw: np.ndarray) -> np.ndarray:
    """The published measured angle from layer_sums' (n, Z) arrays (radians, float64).

    Everything the definition uses follows from them: the shower barycentre is
    (sum xw, sum yw, sum E (z + 0.5)) / sum E and a layer's barycentre is (xw, yw) / E.
    """
    ez, xw, yw = (np.asarray(a, dtype=np.float64) for a in (ez, xw, yw))
    zc = np.arange(ez.shape[1], dtype=np.float64) + 0.5
    w = ez.sum(axis=1)
    has = w > 0
    safe_w = np.where(has, w, 1.0)
    x_ref = xw.sum(axis=1) / safe_w
    y_ref = yw.sum(axis=1) / safe_w
    z_ref = (ez @ zc) / safe_w
    layer = ez > 0
    safe_ez = np.where(layer, ez, 1.0)
    x_mid = xw / safe_ez
    y_mid = yw / safe_ez
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
