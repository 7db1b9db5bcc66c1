"""Vectorised parametric electromagnetic-shower model: deposits energy spots into an ECAL grid.

The model (all lengths in cell units; cells are treated as cubes, as the 3DGAN angle
measurement does, so that the measured angle is comparable to the generated one):

* Visible energy. raw_sum = E * sampling_fraction * ECAL_RAW_SCALE * g, where g carries the
  sampling fluctuations: relative variance a^2 / E + c^2 (stochastic term a, constant c).
* Spots. The visible energy comes in N ~ Poisson(E / a^2) physical spots of a fixed energy
  (sampling_fraction * 50 * a^2 = 0.0225 raw units, above the evaluator's 0.015 hit
  threshold), so Poisson statistics alone give the a / sqrt(E) term, as real sampling does,
  and the number of cells hit keeps growing with E: more spots reach further into the
  lateral and longitudinal tails. Spots are grouped in depth samples (one depth and one
  lateral component per sample). Up to max_spots a sample is one spot. Above, there are
  max_spots samples of k = floor(m + U) spots each (m = N / max_spots); the a^2 / E variance
  the fixed count lacks goes into a per-event gain, so the resolution does not depend on
  max_spots.
* Merging. Inside the radius where the shower is dense (about DENSE_SAMPLES_PER_CELL samples
  per cell or more, from the model's own density at the sample's depth) a sample's spots
  are merged into one deposit; outside it each spot is placed on its own. Each spot's radial
  quantile is drawn on its side of the split, so the mean profile is exact; the cost grows
  with the sparse cells rather than with E (a 500 GeV shower has 22,000 spots but 2,000
  samples and about 6,000 deposits; 100 GeV about 2,800).
* Longitudinal. Depth t (in radiation lengths X0, along the axis) of each sample is drawn from
  Gamma(alpha, rate b), alpha = 1 + b * t_max, with t_max = ln(E / E_c) + c_e (electron,
  c_e = -0.5) fluctuating shower to shower by a log-normal factor: the maximum moves deeper
  with ln(E).
* Lateral. Radial distance from the axis, in Moliere radii, from the two-component (core +
  tail) profile of Grindhammer and Peters, f(r) = p 2 r R_C^2 / (r^2 + R_C^2)^2
  + (1 - p) 2 r R_T^2 / (r^2 + R_T^2)^2, sampled exactly by inverse CDF per component
  (r = R sqrt(u / (1 - u))). Their depth dependence is linearised in tau = t / t_max:
  R_C = core_radius + core_growth tau, R_T = tail_radius + tail_growth tau and
  p = core_fraction - core_fraction_slope tau, so the shower widens with depth. Defaults
  put 90 % of the energy within 1 R_M and 97 % within 2 R_M (docs/data_prep_montecarlo.md).
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
* Leakage. Deposits beyond the last layer (or outside the grid) are lost from ECAL; in the
  fixed-angle layout those behind the ECAL are binned into the HCAL grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Raw ECAL units: the published files store deposits x 50, so that raw sum ~ E in GeV.
ECAL_RAW_SCALE = 50.0
#: Above max_spots, spots are merged where a shower component alone puts at least this many
#: depth samples into a cell (such cells are hit whatever the granularity); elsewhere every
#: physical spot is placed on its own. Larger is closer to the unmerged model and slower.
DENSE_SAMPLES_PER_CELL = 2.0


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
        max_spots: Depth samples per shower above which a sample carries several physical
            spots, merged where the shower is dense (speed vs granularity of dense cells and
            of depths; the resolution does not depend on it).
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
    # Lateral defaults: Grindhammer-Peters values for tungsten linearised in tau (R_C ~ 0.04 +
    # 0.09 tau, R_T ~ 0.7, p ~ 0.9 near the maximum falling behind it), tuned so that the
    # binned showers hold 90 % of their energy within 1 R_M and 97 % within 2 R_M.
    core_radius: float = 0.05
    core_growth: float = 0.1
    tail_radius: float = 0.55
    tail_growth: float = 0.1
    core_fraction: float = 0.92
    core_fraction_slope: float = 0.1
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


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, sorted (np.unique's result, by a plain sort)."""
    ordered = np.sort(keys)
    first = np.ones(ordered.shape[0], dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


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
    if out is None:
        out = np.zeros((n, *grid), dtype=np.float32)
    elif out.shape != (n, *grid) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"simulate_showers: out must be a C-contiguous float32 array of shape {(n, *grid)}, "
            f"got {out.dtype} {out.shape}"
        )
    else:
        out[...] = 0.0

    # --- per-event quantities -----------------------------------------------------------
    a2 = p.stochastic_term**2
    # Physical spots carry a fixed visible energy each and number N ~ Poisson(E / a^2), so
    # Poisson statistics alone give the a / sqrt(E) term (as the sampling of a real
    # calorimeter does) and the number of hit cells keeps growing with E. Up to max_spots,
    # each depth sample (below: "sample") is one physical spot. Above, max_spots samples
    # carry k = floor(m + U) spots each (m = N / max_spots, mean exactly m), so the spot
    # total is N up to a small rounding variance, and the rest of the a^2 / E variance goes
    # into a per-event gain: the resolution does not depend on max_spots.
    physical_mean = energy / a2
    capped = physical_mean > p.max_spots
    n_samples = np.where(capped, int(p.max_spots), rng.poisson(physical_mean))
    n_samples = np.maximum(n_samples, 1)
    per_sample = np.where(capped, physical_mean / p.max_spots, 1.0)
    frac = per_sample - np.floor(per_sample)
    rounding_var = n_samples * frac * (1.0 - frac) / physical_mean**2
    gain_var = np.where(capped, np.maximum(1.0 / physical_mean - rounding_var, 0.0), 0.0)
    gain = np.maximum(1.0 + np.sqrt(gain_var + p.constant_term**2) * rng.standard_normal(n), 0.05)
    # Visible energy of one physical spot, raw units: sampling_fraction x 50 x a^2 x gain.
    spot_energy = p.sampling_fraction * ECAL_RAW_SCALE * a2 * gain

    tmax = p.shower_max_x0(energy) * np.exp(p.tmax_spread * rng.standard_normal(n))
    alpha = 1.0 + p.gamma_rate * tmax
    t_centre = alpha / p.gamma_rate  # mean depth along the axis, X0
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    jitter = rng.uniform(-0.5, 0.5, size=(n, 2))
    # log of the Gamma(alpha, b) normalisation, for the depth density below
    log_norm = alpha * math.log(p.gamma_rate) - np.array([math.lgamma(a) for a in alpha])

    # --- depth samples: depth, component, radius, spots (flat arrays over the batch) -----
    sample_ev = np.repeat(np.arange(n), n_samples)
    n_s = sample_ev.shape[0]
    t_s = rng.standard_gamma(alpha[sample_ev]) / p.gamma_rate  # depth along the axis, X0
    tau = t_s / tmax[sample_ev]
    core_weight = np.clip(p.core_fraction - p.core_fraction_slope * tau, 0.05, 1.0)
    core = rng.random(n_s) < core_weight
    core_r = (p.core_radius + p.core_growth * tau) * p.moliere_radius_cells
    tail_r = (p.tail_radius + p.tail_growth * tau) * p.moliere_radius_cells
    radius_s = np.where(core, core_r, tail_r)
    m_s = per_sample[sample_ev]
    spots = np.floor(m_s + rng.random(n_s))  # physical spots of each sample

    # --- split each sample's spots where the shower stops being dense --------------------
    # Inside a radius where cells receive many samples anyway, a sample's spots are merged
    # into one deposit; outside, each physical spot is placed on its own, which is what
    # makes sparse cells (lateral and longitudinal tails) hit at the physical rate. The
    # split depends only on the sample's depth (not on where its spots land), and each
    # spot's radial quantile u is drawn uniformly on its side of the split (the count per
    # side has the right mean), so the mean profile is exactly the model's whatever the
    # split. Dense = at least DENSE_SAMPLES_PER_CELL samples per cell one layer thick: a
    # component of weight w and radius R puts n(r) = N g(t) x0 w R^2 / (pi (r^2 + R^2)^2)
    # physical spots per cell at radius r (g the depth density), so n(r) >= K m holds up to
    # r*^2 = sqrt(B) R - R^2, B = N g(t) x0 w / (pi K m); the shower is dense inside the
    # larger of the two components' r*, at quantile u* = r*^2 / (r*^2 + R^2) of the sample's.
    log_density = (
        log_norm[sample_ev] + (alpha[sample_ev] - 1.0) * np.log(np.maximum(t_s, 1e-12))
        - p.gamma_rate * t_s
    )
    b_scale = (
        physical_mean[sample_ev] * p.layer_x0 * np.exp(log_density)
        / (math.pi * DENSE_SAMPLES_PER_CELL * m_s)
    )
    dense_r2 = np.maximum(
        np.sqrt(b_scale * core_weight) * core_r - core_r**2,
        np.sqrt(b_scale * (1.0 - core_weight)) * tail_r - tail_r**2,
    )
    dense_r2 = np.maximum(dense_r2, 0.0)
    u_split = dense_r2 / (dense_r2 + radius_s**2)
    k_out = np.floor(spots * (1.0 - u_split) + rng.random(n_s))
    k_in = spots - k_out

    # --- sample geometry: axis point and layer of each sample -----------------------------
    t_cells = t_s / p.layer_x0
    sample_sin = sin_t[sample_ev]
    iz_s = np.floor(t_cells * sample_sin).astype(np.int64)
    if hcal_grid is None:  # nothing behind the ECAL is recorded: skip those samples
        k_in[iz_s >= nz] = 0.0
        k_out[iz_s >= nz] = 0.0
    f32 = np.float32
    cx_s = (nx / 2.0 + jitter[sample_ev, 0]).astype(f32)
    cy_s = (
        ny / 2.0 + jitter[sample_ev, 1] + (t_cells - t_centre[sample_ev] / p.layer_x0) * cos_t[sample_ev]
    ).astype(f32)
    rx_s = radius_s.astype(f32)
    ry_s = (radius_s / sample_sin).astype(f32)  # the inclined disc's footprint along y
    base_s = sample_ev * ncell + iz_s  # flat index of (event, 0, 0, layer)
    sample_energy = spot_energy[sample_ev]

    # --- deposits: one per sample inside the split, one per spot outside ----------------
    inner = np.flatnonzero(k_in > 0)
    outer = np.repeat(np.arange(n_s), k_out.astype(np.int64))
    dep = np.concatenate([inner, outer])
    n_inner = inner.shape[0]
    units = np.ones(dep.shape[0])  # physical spots per deposit
    units[:n_inner] = k_in[inner]
    us = u_split[dep].astype(f32)
    u = rng.random(dep.shape[0], dtype=f32)
    u[:n_inner] *= us[:n_inner]
    u[n_inner:] = us[n_inner:] + (1.0 - us[n_inner:]) * u[n_inner:]
    u *= f32(0.9995)  # cut the far tail at r = 45 R (outside the grid but for the narrowest core)
    q = np.sqrt(u / (1.0 - u))  # r / R, inverse CDF of 2 r R^2 / (r^2 + R^2)^2
    phi = rng.random(dep.shape[0], dtype=f32) * f32(2.0 * np.pi)
    x = cx_s[dep] + rx_s[dep] * q * np.cos(phi)
    y = cy_s[dep] + ry_s[dep] * q * np.sin(phi)
    ix = np.floor(x).astype(np.int64)
    iy = np.floor(y).astype(np.int64)
    iz = iz_s[dep]

    inside_xy = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    in_ecal = inside_xy & (iz < nz)
    flat = base_s[dep[in_ecal]] + (ix[in_ecal] * ny + iy[in_ecal]) * nz
    deposit_energy = units * sample_energy[dep]
    # Sum deposits straight into the (zeroed) output: an unbuffered add costs a few ns per
    # deposit, several times less than np.unique with an inverse index; the hit cells come
    # from a plain sort of the indices (scanning the whole grid would touch every page, and
    # np.unique is about 20x slower than np.sort on these keys with numpy 2.4).
    ecal = out.reshape(-1)
    np.add.at(ecal, flat, deposit_energy[in_ecal].astype(np.float32))
    hit = _sorted_unique(flat)

    hcal = None
    if hcal_grid is not None:
        hx_n, hy_n, hz_n = hcal_grid
        behind = iz >= nz
        hx = np.floor((x[behind] - nx / 2.0) / hcal_cell + hx_n / 2.0).astype(np.int64)
        hy = np.floor((y[behind] - ny / 2.0) / hcal_cell + hy_n / 2.0).astype(np.int64)
        hz = iz[behind] - nz
        ok = (hx >= 0) & (hx < hx_n) & (hy >= 0) & (hy < hy_n) & (hz < hz_n)
        h_ev = sample_ev[dep[behind][ok]]
        hflat = ((h_ev * hx_n + hx[ok]) * hy_n + hy[ok]) * hz_n + hz[ok]
        hcal = np.bincount(hflat, weights=deposit_energy[behind][ok], minlength=n * hx_n * hy_n * hz_n)
        hcal = hcal.astype(np.float32).reshape(n, *hcal_grid)

    # --- readout: noise on hit cells, noise-only hits above threshold, threshold ---------
    hit_energy = ecal[hit].astype(np.float64)
    if p.noise_sigma > 0:
        hit_energy += p.noise_sigma * rng.standard_normal(hit.shape[0])
    hit_energy[hit_energy < p.threshold] = 0.0
    ecal[hit] = hit_energy
    if p.noise_sigma > 0 and p.threshold > 0:
        k_sigma = p.threshold / p.noise_sigma
        n_noise = int(rng.binomial(n * ncell - hit.shape[0], _upper_tail_probability(k_sigma)))
        if n_noise:
            cells = rng.integers(0, n * ncell, size=n_noise)
            if hit.shape[0]:  # keep only cells without signal (hit is sorted)
                nearest = hit[np.searchsorted(hit, cells).clip(max=hit.shape[0] - 1)]
                cells = cells[nearest != cells]
            ecal[cells] = (p.noise_sigma * _gaussian_tail(rng, k_sigma, cells.shape[0])).astype(np.float32)
    return out, hcal
