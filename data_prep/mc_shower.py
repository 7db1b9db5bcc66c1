"""Vectorised parametric electromagnetic-shower model: deposits energy spots into an ECAL grid.

The model (all lengths in cell units; cells are treated as cubes, as the 3DGAN angle
measurement does, so that the measured angle is comparable to the generated one):

* Visible energy. raw_sum = E * sampling_fraction * ECAL_RAW_SCALE * g, where g carries the
  sampling fluctuations: relative variance a^2 / E + c^2 (stochastic term a, constant c).
* Spots. The visible energy is split into N ~ Poisson(E / a^2) equal spots, so Poisson
  statistics alone give the a / sqrt(E) term (as real sampling does). Above max_spots the
  count is fixed at max_spots and the a^2 / E variance goes into a per-event gain instead, so
  the resolution does not depend on max_spots (which only sets image granularity and speed).
* Longitudinal. Depth t (in radiation lengths X0, along the axis) of each spot is drawn from
  Gamma(alpha, rate b), alpha = 1 + b * t_max, with t_max = ln(E / E_c) + c_e (electron,
  c_e = -0.5) fluctuating shower to shower by a log-normal factor: the maximum moves deeper
  with ln(E).
* Lateral. Radial distance from the axis, in Moliere radii, from a two-component (core + tail)
  profile f(r) ~ 2 r R^2 / (r^2 + R^2)^2 per component (sampled exactly by inverse CDF,
  r = R sqrt(u / (1 - u))); both radii widen and the tail weight grows with depth t / t_max.
* Tilt. The axis has direction (0, cos theta, sin theta) in (x, y, z): a spot at axis depth t
  sits in layer z = t sin(theta) / layer_x0 with axis offset y = (t - t_c) cos(theta) / layer_x0,
  and its lateral offset is laid in the layer plane, stretched along y by 1 / sin(theta) (the
  footprint of an inclined disc). Lateral offsets have zero mean at every depth, so the
  energy-weighted slope dy/dz is cot(theta) on average and angle.measured_angle tracks theta.
  The axis passes the grid centre at the event's mean depth t_c (plus a sub-cell jitter), as
  centred 3DGAN images do.
* Readout. Gaussian noise (noise_sigma) on every cell, then cells below `threshold` are zeroed.
  Only noise above threshold survives, so the noise-only cells are sampled directly: their
  number is Binomial(empty cells, P(noise > threshold)) and their values come from the
  Gaussian tail (exact rejection sampling with an exponential proposal). This costs a few
  numbers per event instead of 65,025 Gaussian draws.
* Leakage. Spots beyond the last layer (or outside the grid) are lost from ECAL; in the
  fixed-angle layout those behind the ECAL are binned into the HCAL grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Raw ECAL units: the published files store deposits x 50, so that raw sum ~ E in GeV.
ECAL_RAW_SCALE = 50.0


@dataclass(frozen=True)
class ShowerParams:
    """Physics parameters of the shower model (see the module docstring for their role).

    Attributes:
        sampling_fraction: Visible / primary energy (~0.02 for the 3DGAN calorimeter).
        stochastic_term: a in sigma_E / E = a / sqrt(E [GeV]) (+) c.
        constant_term: c in the resolution.
        critical_energy_gev: E_c of the absorber (tungsten ~ 0.008 GeV).
        tmax_offset: c_e in t_max = ln(E / E_c) + c_e (-0.5 for electrons, +0.5 for photons).
        gamma_rate: b of the Gamma longitudinal profile, per X0.
        tmax_spread: Log-normal sigma of t_max from shower to shower.
        layer_x0: Radiation lengths per ECAL layer (and per cell pitch, cells being cubes).
        moliere_radius_cells: Moliere radius in cells.
        core_radius: Core radius in Moliere radii at the front (R_C = core_radius + core_growth * tau).
        core_growth: Growth of the core radius per unit tau = t / t_max.
        tail_radius: Tail radius in Moliere radii at the front.
        tail_growth: Growth of the tail radius per unit tau.
        core_fraction: Core weight at the front; falls by core_fraction_slope per unit tau.
        core_fraction_slope: See core_fraction.
        noise_sigma: Cell noise, raw ECAL units.
        threshold: Cells below this (raw units) are zeroed after noise.
        max_spots: Cap on spots per shower (image granularity vs speed).
    """

    sampling_fraction: float = 0.02
    stochastic_term: float = 0.15
    constant_term: float = 0.005
    critical_energy_gev: float = 0.008
    tmax_offset: float = -0.5
    gamma_rate: float = 0.5
    tmax_spread: float = 0.08
    layer_x0: float = 1.0
    moliere_radius_cells: float = 1.8
    core_radius: float = 0.12
    core_growth: float = 0.15
    tail_radius: float = 0.6
    tail_growth: float = 0.5
    core_fraction: float = 0.9
    core_fraction_slope: float = 0.25
    noise_sigma: float = 1e-4
    threshold: float = 4e-4
    max_spots: int = 2000

    def validate(self) -> None:
        """Raise ValueError naming the first parameter outside its physical range."""
        positive = (
            "sampling_fraction", "stochastic_term", "critical_energy_gev", "gamma_rate",
            "layer_x0", "moliere_radius_cells", "core_radius", "tail_radius",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"shower parameter {name} must be > 0, got {value!r}")
        for name in ("constant_term", "tmax_spread", "core_growth", "tail_growth",
                     "core_fraction_slope", "noise_sigma", "threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"shower parameter {name} must be >= 0, got {value!r}")
        if not 0 < self.core_fraction <= 1:
            raise ValueError(f"shower parameter core_fraction must be in (0, 1], got {self.core_fraction!r}")
        if int(self.max_spots) < 1:
            raise ValueError(f"shower parameter max_spots must be >= 1, got {self.max_spots!r}")

    def shower_max_x0(self, energy_gev: np.ndarray) -> np.ndarray:
        """Mean depth of the shower maximum along the axis, in X0 (before fluctuations)."""
        e = np.asarray(energy_gev, dtype=np.float64)
        return np.maximum(np.log(e / self.critical_energy_gev) + self.tmax_offset, 0.5)


def _gaussian_tail(rng: np.random.Generator, k: float, n: int) -> np.ndarray:
    """n draws of a standard normal conditioned on x > k (k > 0), by exact rejection sampling.

    Proposal x = k + Exp(rate k'), k' = (k + sqrt(k^2 + 4)) / 2, acceptance exp(-(x - k')^2 / 2)
    (Robert, 1995): efficient for every k > 0.
    """
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    lam = (k + math.sqrt(k * k + 4.0)) / 2.0
    filled = 0
    while filled < n:
        m = int((n - filled) * 1.3) + 8
        x = k + rng.exponential(1.0 / lam, size=m)
        keep = x[rng.random(m) < np.exp(-0.5 * (x - lam) ** 2)]
        take = min(len(keep), n - filled)
        out[filled : filled + take] = keep[:take]
        filled += take
    return out


def _upper_tail_probability(k: float) -> float:
    """P(N(0,1) > k)."""
    return 0.5 * math.erfc(k / math.sqrt(2.0))


def simulate_showers(
    energy_gev: np.ndarray,
    theta_rad: np.ndarray,
    rng: np.random.Generator,
    params: ShowerParams,
    grid: tuple[int, int, int] = (51, 51, 25),
    hcal_grid: tuple[int, int, int] | None = None,
    hcal_cell: int = 5,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Simulate a batch of electron showers into ECAL (and optionally HCAL) cell energies.

    Args:
        energy_gev: (n,) primary energies, GeV (> 0).
        theta_rad: (n,) polar angles, radians, in (0, pi).
        rng: Random generator; the output is a pure function of its state and the inputs.
        params: Shower model parameters.
        grid: ECAL cells (x, y, z).
        hcal_grid: HCAL cells (x, y, z) to fill with the energy leaking behind the ECAL, or None.
        hcal_cell: ECAL cells per HCAL cell transversely (HCAL layers are one X0 deep here).
        out: Optional float32 (n, *grid) array to fill (avoids a copy when writing into a
            larger block); it is zeroed first.

    Returns:
        (ecal float32 (n, *grid) in raw units, hcal float32 (n, *hcal_grid) or None).
    """
    energy = np.asarray(energy_gev, dtype=np.float64).reshape(-1)
    theta = np.asarray(theta_rad, dtype=np.float64).reshape(-1)
    n = energy.shape[0]
    if theta.shape[0] != n:
        raise ValueError(f"simulate_showers: {n} energies but {theta.shape[0]} angles")
    if n == 0:
        empty_hcal = None if hcal_grid is None else np.zeros((0, *hcal_grid), np.float32)
        return np.zeros((0, *grid), np.float32), empty_hcal
    if not (np.all(np.isfinite(energy)) and np.all(energy > 0)):
        raise ValueError(f"simulate_showers: energies must be finite and > 0, got min {energy.min()!r}")
    if not (np.all(theta > 0) and np.all(theta < np.pi)):
        raise ValueError("simulate_showers: angles must lie in (0, pi) radians")
    p = params
    nx, ny, nz = grid
    ncell = nx * ny * nz

    # --- per-event quantities -----------------------------------------------------------
    a2 = p.stochastic_term**2
    poisson_spots = energy / a2
    capped = poisson_spots > p.max_spots
    # Below the cap, a Poisson count of equal spots gives exactly the a / sqrt(E) term, as the
    # sampling of a real calorimeter does; above it the count is fixed and that variance moves
    # into a per-event gain, so the resolution never depends on max_spots.
    mean_spots = np.where(capped, float(p.max_spots), poisson_spots)
    n_spots = np.where(capped, int(p.max_spots), rng.poisson(poisson_spots))
    n_spots = np.maximum(n_spots, 1)
    gain_var = np.where(capped, a2 / energy, 0.0) + p.constant_term**2
    gain = np.maximum(1.0 + np.sqrt(gain_var) * rng.standard_normal(n), 0.05)
    raw_total = energy * p.sampling_fraction * ECAL_RAW_SCALE * gain
    # Spot energy from the *expected* count, so that the Poisson count carries the fluctuation.
    spot_energy = raw_total / mean_spots

    tmax = p.shower_max_x0(energy) * np.exp(p.tmax_spread * rng.standard_normal(n))
    alpha = 1.0 + p.gamma_rate * tmax
    t_centre = alpha / p.gamma_rate  # mean depth along the axis, X0
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    jitter = rng.uniform(-0.5, 0.5, size=(n, 2))

    # --- per-spot sampling (flat arrays over the whole batch) ----------------------------
    ev = np.repeat(np.arange(n), n_spots)
    total = ev.shape[0]
    t = rng.standard_gamma(alpha[ev]) / p.gamma_rate  # depth along the axis, X0
    tau = t / tmax[ev]
    core = rng.random(total) < np.clip(p.core_fraction - p.core_fraction_slope * tau, 0.05, 1.0)
    radius = np.where(
        core, p.core_radius + p.core_growth * tau, p.tail_radius + p.tail_growth * tau
    ) * p.moliere_radius_cells
    u = rng.random(total) * 0.9995
    r = radius * np.sqrt(u / (1.0 - u))
    phi = rng.random(total) * (2.0 * np.pi)
    t_cells = t / p.layer_x0
    x = (nx / 2.0 + jitter[ev, 0]) + r * np.cos(phi)
    y = (
        (ny / 2.0 + jitter[ev, 1])
        + (t_cells - t_centre[ev] / p.layer_x0) * cos_t[ev]
        + r * np.sin(phi) / sin_t[ev]
    )
    z = t_cells * sin_t[ev]
    ix = np.floor(x).astype(np.int64)
    iy = np.floor(y).astype(np.int64)
    iz = np.floor(z).astype(np.int64)
    w = spot_energy[ev]

    inside_xy = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    in_ecal = inside_xy & (iz < nz)
    flat = ((ev * nx + ix) * ny + iy) * nz + iz
    # Sum spots per hit cell on the (few thousand) hit cells only: a dense float64 grid per
    # batch would cost more memory traffic than the whole simulation.
    hit, inverse = np.unique(flat[in_ecal], return_inverse=True)
    hit_energy = np.bincount(inverse, weights=w[in_ecal], minlength=hit.shape[0])

    hcal = None
    if hcal_grid is not None:
        hx_n, hy_n, hz_n = hcal_grid
        behind = iz >= nz
        hx = np.floor((x[behind] - nx / 2.0) / hcal_cell + hx_n / 2.0).astype(np.int64)
        hy = np.floor((y[behind] - ny / 2.0) / hcal_cell + hy_n / 2.0).astype(np.int64)
        hz = iz[behind] - nz
        ok = (hx >= 0) & (hx < hx_n) & (hy >= 0) & (hy < hy_n) & (hz < hz_n)
        hflat = ((ev[behind][ok] * hx_n + hx[ok]) * hy_n + hy[ok]) * hz_n + hz[ok]
        hcal = np.bincount(hflat, weights=w[behind][ok], minlength=n * hx_n * hy_n * hz_n)
        hcal = hcal.astype(np.float32).reshape(n, *hcal_grid)

    # --- readout: noise on hit cells, noise-only hits above threshold, threshold ---------
    if out is None:
        out = np.zeros((n, *grid), dtype=np.float32)
    elif out.shape != (n, *grid) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"simulate_showers: out must be a C-contiguous float32 array of shape {(n, *grid)}, "
            f"got {out.dtype} {out.shape}"
        )
    else:
        out[...] = 0.0
    ecal = out.reshape(-1)
    if p.noise_sigma > 0:
        hit_energy += p.noise_sigma * rng.standard_normal(hit.shape[0])
    hit_energy[hit_energy < p.threshold] = 0.0
    ecal[hit] = hit_energy
    if p.noise_sigma > 0 and p.threshold > 0:
        k = p.threshold / p.noise_sigma
        n_noise = int(rng.binomial(n * ncell - hit.shape[0], _upper_tail_probability(k)))
        if n_noise:
            cells = rng.integers(0, n * ncell, size=n_noise)
            if hit.shape[0]:  # keep only cells without signal (hit is sorted)
                nearest = hit[np.searchsorted(hit, cells).clip(max=hit.shape[0] - 1)]
                cells = cells[nearest != cells]
            ecal[cells] = (p.noise_sigma * _gaussian_tail(rng, k, cells.shape[0])).astype(np.float32)
    return out, hcal
