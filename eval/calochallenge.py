"""CaloChallenge-2022 sample comparisons: separation power, classifier AUC/JSD, FPD and KPD.

All functions take plain numpy feature tables (rows = events, columns = high-level features) so
they can compare any two samples: generated vs Monte Carlo, or Monte Carlo vs an independent Monte
Carlo sample (the noise floor every figure must be read against).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

# The classifier test lives in eval.classifier; these names are part of this module's interface.
from eval.classifier import ClassifierConfig, ClassifierResult, classifier_test, one_blas_thread, roc_auc  # noqa: F401  (re-exported entry points)


# --------------------------------------------------------------------------- separation power
def separation_power(h1: np.ndarray, h2: np.ndarray) -> float:
    """Separation power 0.5 * sum (h1 - h2)^2 / (h1 + h2) of two histograms, each unit-normalised.

    0 for identical shapes, 1 for histograms with no bin in common.

    Args:
        h1: Bin contents of the first histogram (counts or densities on the same bins as h2).
        h2: Bin contents of the second histogram.

    Returns:
        The separation power in [0, 1].

    Raises:
        ValueError: if the shapes differ, a content is negative, or a histogram is empty.
    """
    h1 = np.asarray(h1, dtype=np.float64)
    h2 = np.asarray(h2, dtype=np.float64)
    if h1.shape != h2.shape:
        raise ValueError(f"histograms must share their binning, got shapes {h1.shape} and {h2.shape}")
    for name, h in (("h1", h1), ("h2", h2)):
        if np.any(h < 0) or not np.all(np.isfinite(h)):
            raise ValueError(f"{name} has negative or non-finite bin contents")
        if h.sum() <= 0:
            raise ValueError(f"{name} is empty: cannot normalise it")
    p, q = h1 / h1.sum(), h2 / h2.sum()
    denom = p + q
    nz = denom > 0
    return float(0.5 * np.sum((p[nz] - q[nz]) ** 2 / denom[nz]))


def common_edges(a: np.ndarray, b: np.ndarray, bins: int = 40) -> np.ndarray:
    """Bin edges spanning the 0.5 to 99.5 percentiles of both samples together.

    Trimming the extreme half-percent keeps one outlier from squeezing all events into a bin;
    values outside the edges are folded into the first and last bins by ``histogram_clipped``.
    """
    both = np.concatenate([a, b])
    both = both[np.isfinite(both)]
    if both.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    lo, hi = np.percentile(both, [0.5, 99.5])
    if not hi > lo:
        lo, hi = both.min() - 0.5, both.max() + 0.5
    return np.linspace(lo, hi, bins + 1)


def histogram_clipped(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram of the finite values of x with under- and overflow folded into the edge bins."""
    x = x[np.isfinite(x)]
    return np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)[0].astype(np.float64)


def feature_separation_powers(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], bins: int = 40
) -> dict[str, float]:
    """Separation power of every feature present in both tables, on shared percentile bins."""
    out = {}
    for name in reference:
        if name not in candidate:
            continue
        a, b = reference[name], candidate[name]
        edges = common_edges(a, b, bins)
        ha, hb = histogram_clipped(a, edges), histogram_clipped(b, edges)
        out[name] = separation_power(ha, hb) if ha.sum() > 0 and hb.sum() > 0 else float("nan")
    return out


# --------------------------------------------------------------------------- FPD / KPD (jetnet)
# CaloChallenge 2022 computes FPD and KPD with jetnet (jetnet.evaluation.fpd / kpd, arXiv:2211.10295)
# on its high-level features, incident energy included. The functions below follow jetnet's
# algorithm step by step, with its defaults and its random draws (the same numpy Generator calls
# in the same order), so that on the same feature tables they give jetnet's numbers to float
# round-off. They differ only in how the arithmetic is organised: a batch drawn with replacement
# is summarised by how often it drew each event (``np.bincount``), so a batch of 50,000 draws
# from 2,000 events costs O(2,000) instead of O(50,000) and the kernel matrices of KPD are
# computed once per sample instead of once per batch. jetnet itself is not a dependency (it needs
# torch).

JETNET_FPD_MIN_SAMPLES = 20_000
JETNET_FPD_MAX_SAMPLES = 50_000
JETNET_FPD_NUM_BATCHES = 20
JETNET_FPD_NUM_POINTS = 10
JETNET_KPD_NUM_BATCHES = 10
JETNET_KPD_BATCH_SIZE = 5_000
JETNET_SEED = 42
# jetnet's KPD error is half the spread between these percentiles of the batch values
# (scipy.stats.iqr(vals, rng=(16.275, 83.725)) / 2): the +-1 sigma quantiles of a Gaussian.
KPD_ERROR_PERCENTILES = (16.275, 83.725)


class DistanceResult(NamedTuple):
    """FPD or KPD as jetnet returns it: ``(value, error)``, in normalised-feature units.

    Attributes:
        value: FPD: intercept of the 1/N fit; KPD: median of the batch MMD^2 values.
        error: FPD: standard error of the intercept from the fit; KPD: half the 16-84 % spread
            of the batch values. Both describe the resampling of the two given samples, not the
            spread between independent samples of the same size (the verdict gets that from
            Monte Carlo replicas).
    """

    value: float
    error: float

    @property
    def value_x1e3(self) -> float:
        """The value x 1e3, the unit of the CaloChallenge tables."""
        return self.value * 1e3

    @property
    def error_x1e3(self) -> float:
        return self.error * 1e3

    def to_dict(self) -> dict:
        return {"value": self.value, "error": self.error, "value_x1e3": self.value_x1e3, "error_x1e3": self.error_x1e3}


def _finite_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"feature tables must be 2-D (events, features), got shape {x.shape}")
    return x[np.all(np.isfinite(x), axis=1)]


def _checked_pair(real: np.ndarray, generated: np.ndarray, need: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite rows of both tables; ValueError naming ``what`` if widths differ or too few rows remain.

    jetnet would propagate NaN into the result; rows with a non-finite feature (e.g. the moments
    of an empty shower) are dropped here instead, and the empty fraction is judged on its own.
    """
    real, generated = _finite_rows(real), _finite_rows(generated)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"{what}: feature tables must have equal widths, got {real.shape[1]} and {generated.shape[1]}")
    if min(len(real), len(generated)) < need:
        raise ValueError(f"{what} needs at least {need} finite events per sample, got {len(real)} and {len(generated)}")
    return real, generated


def feature_scale(real: np.ndarray) -> np.ndarray:
    """jetnet's normaliser: the real sample's per-feature max |x| (1 where a feature is all zero)."""
    maxes = np.max(np.abs(real), axis=0)
    return np.where(maxes == 0, 1.0, maxes)


def normalise_features(real: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide both tables by the *real* sample's per-feature max |x|, without centring (jetnet).

    Using the real sample's scale for both keeps it fixed whatever the generator does; not
    centring is jetnet's choice and part of what makes the numbers comparable with the
    CaloChallenge tables (the Frechet distance does not depend on a common shift, the polynomial
    kernel does).
    """
    real, generated = _finite_rows(real), _finite_rows(generated)
    scale = feature_scale(real)
    return real / scale, generated / scale


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of symmetric positive semi-definite matrices (one, or a stack along axis 0)."""
    vals, vecs = np.linalg.eigh((a + np.swapaxes(a, -1, -2)) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))[..., None, :]) @ np.swapaxes(vecs, -1, -2)


def frechet_from_moments(mu_x: np.ndarray, s_x: np.ndarray, mu_y: np.ndarray, s_y: np.ndarray) -> np.ndarray:
    """Frechet distance ``|mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2))`` of two Gaussians.

    Tr (S_x S_y)^(1/2) is computed as the trace of the symmetric (S_x^(1/2) S_y S_x^(1/2))^(1/2),
    which has the same eigenvalues and needs only eigen-decompositions (no scipy.linalg.sqrtm).
    Means (..., d) and covariances (..., d, d) may carry leading batch axes: one distance per
    pair, computed together.
    """
    s_x, s_y = np.asarray(s_x, dtype=np.float64), np.asarray(s_y, dtype=np.float64)
    if s_x.ndim < 2:
        s_x, s_y = s_x.reshape(1, 1), s_y.reshape(1, 1)
    root_x = _sqrtm_psd(s_x)
    middle = root_x @ s_y @ root_x
    eig = np.linalg.eigvalsh((middle + np.swapaxes(middle, -1, -2)) / 2.0)
    tr_covmean = np.sum(np.sqrt(np.clip(eig, 0.0, None)), axis=-1)
    diff = np.atleast_1d(mu_x) - np.atleast_1d(mu_y)
    trace = np.trace(s_x, axis1=-2, axis2=-1) + np.trace(s_y, axis1=-2, axis2=-1)
    return np.sum(diff * diff, axis=-1) + trace - 2.0 * tr_covmean


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two samples (rows = events)."""
    return float(frechet_from_moments(x.mean(axis=0), np.cov(x, rowvar=False), y.mean(axis=0), np.cov(y, rowvar=False)))


def fpd_batch_sizes(min_samples: int, max_samples: int, num_points: int) -> np.ndarray:
    """jetnet's batch sizes: ``num_points`` sizes evenly spaced in 1/N, truncated to int32."""
    return (1 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype("int32")


def fit_line_nonnegative(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line ``y = a + b x`` with a >= 0 and b >= 0, and the standard error of a.

    This is what jetnet gets from ``scipy.optimize.curve_fit(linear, x, y, bounds=([0, 0],
    [inf, inf]))``, solved exactly instead of iteratively: the minimum of a convex quadratic over
    the quadrant lies at the unconstrained minimum of the interior or of one of its faces, so
    the best feasible candidate among those four is the solution. The error is curve_fit's:
    sqrt of [(J^T J)^-1]_00 * SSE / (M - 2) with J = [1, x], evaluated at the bounded solution.

    Returns:
        (intercept, slope, intercept_error).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = x.size
    candidates = []
    design = np.stack([np.ones_like(x), x], axis=1)
    free = np.linalg.lstsq(design, y, rcond=None)[0]
    candidates.append((float(free[0]), float(free[1])))
    candidates.append((0.0, float(x @ y / (x @ x)) if x @ x > 0 else 0.0))  # intercept fixed at 0
    candidates.append((float(y.mean()), 0.0))  # slope fixed at 0
    candidates.append((0.0, 0.0))
    feasible = [(a, b) for a, b in candidates if a >= 0 and b >= 0]
    a, b = min(feasible, key=lambda ab: float(np.sum((y - ab[0] - ab[1] * x) ** 2)))
    if m <= 2:
        return a, b, float("inf")
    sse = float(np.sum((y - a - b * x) ** 2))
    cov = np.linalg.pinv(design.T @ design) * sse / (m - 2)
    return a, b, math.sqrt(max(float(cov[0, 0]), 0.0))


def _draw_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """One jetnet batch (``rng.choice(n, size=size)``, with replacement) as counts per event."""
    return np.bincount(rng.choice(n, size=size), minlength=n)


def _count_type(largest_batch: int) -> type:
    """The smallest unsigned integer type that holds any count of a batch of this size (counts are exact)."""
    return np.uint16 if largest_batch <= np.iinfo(np.uint16).max else np.uint32


# Events per slice when the per-event arrays (counts, second moments) are processed in slices:
# it bounds their float64 temporaries (a few MB) whatever the sample size.
ROW_BLOCK = 2048


def fpd(
    real: np.ndarray,
    generated: np.ndarray,
    min_samples: int = JETNET_FPD_MIN_SAMPLES,
    max_samples: int = JETNET_FPD_MAX_SAMPLES,
    num_batches: int = JETNET_FPD_NUM_BATCHES,
    num_points: int = JETNET_FPD_NUM_POINTS,
    normalise: bool = True,
    seed: int = JETNET_SEED,
) -> DistanceResult:
    """Frechet physics distance as jetnet (and through it CaloChallenge) computes it.

    Both tables are divided by the real sample's per-feature max |x|. For each of ``num_points``
    batch sizes N evenly spaced in 1/N between ``min_samples`` and ``max_samples``, the Frechet
    distance of ``num_batches`` pairs of batches drawn with replacement is averaged; a line in
    1/N with intercept and slope bounded at 0 is fitted, and its intercept (the distance at
    infinite N) and the intercept's fit error are returned. Batches may be larger than the
    samples: then the intercept measures the two samples as they are, finite-sample bias
    included (which the Monte Carlo noise floor shows).

    Args:
        real: Real feature table (n, d); rows with a non-finite value are dropped.
        generated: Generated feature table (m, d).
        min_samples, max_samples, num_batches, num_points, normalise, seed: jetnet's parameters
            and defaults (CaloChallenge's evaluation passes ``min_samples=10000``).

    Returns:
        DistanceResult ``(value, error)``; ``value_x1e3`` is the unit of the published tables.

    Raises:
        ValueError: on unequal widths, fewer than 2 finite events, or bad sizes.
    """
    x, y = _checked_pair(real, generated, 2, "fpd")
    if not (1 < min_samples <= max_samples) or num_points < 1 or num_batches < 1:
        raise ValueError(
            f"fpd needs 1 < min_samples <= max_samples and num_points, num_batches >= 1; got "
            f"{min_samples}, {max_samples}, {num_points}, {num_batches}"
        )
    scale = feature_scale(x) if normalise else np.ones(x.shape[1])
    batches = fpd_batch_sizes(min_samples, max_samples, num_points)
    draws = fpd_draws(len(x), len(y), min_samples, max_samples, num_points, num_batches, seed)
    # One BLAS thread, as the classifier (eval/classifier.py): these products are small and
    # many, and two contended threads made FPD plus KPD 3x slower on a busy 2-core machine
    # (15 s instead of 4.8 s at 5,000 events per side, measured).
    with one_blas_thread():
        return fpd_from_draws(x, y, scale, batches, draws)


@functools.lru_cache(maxsize=4)
def fpd_draws(
    n_x: int, n_y: int, min_samples: int, max_samples: int, num_points: int, num_batches: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """jetnet's FPD batches as counts: (n_x, P * B) and (n_y, P * B), in jetnet's draw order.

    They depend only on the sample sizes, the settings and the seed, so they are drawn once and
    reused by every comparison of equal sizes (the Monte Carlo replicas); read-only.
    """
    batches = fpd_batch_sizes(min_samples, max_samples, num_points)
    rng = np.random.default_rng(seed)
    # Stored as small integers (2 bytes per event and batch, not 8): the draws are cached.
    dtype = _count_type(int(batches.max()))
    cx = np.empty((n_x, len(batches) * num_batches), dtype=dtype)
    cy = np.empty((n_y, len(batches) * num_batches), dtype=dtype)
    k = 0
    for size in batches:
        for _ in range(num_batches):
            cx[:, k] = _draw_counts(rng, n_x, int(size))
            cy[:, k] = _draw_counts(rng, n_y, int(size))
            k += 1
    cx.setflags(write=False)
    cy.setflags(write=False)
    return cx, cy


def _weighted_moments(x: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means (K, d) and covariances (K, d, d) of K batches given as event counts (n, K).

    Summed over slices of ``ROW_BLOCK`` events, so the float64 counts and the per-event outer
    products (d^2 values an event) exist for one slice at a time.
    """
    d = x.shape[1]
    total = np.zeros(counts.shape[1])
    first = np.zeros((counts.shape[1], d))
    second = np.zeros((counts.shape[1], d * d))
    for start in range(0, len(x), ROW_BLOCK):
        c = counts[start : start + ROW_BLOCK].astype(np.float64)
        rows = x[start : start + ROW_BLOCK]
        total += c.sum(axis=0)
        first += c.T @ rows
        second += c.T @ (rows[:, :, None] * rows[:, None, :]).reshape(len(rows), -1)
    mu = first / total[:, None]
    second = second.reshape(len(total), d, d)
    cov = (second - total[:, None, None] * mu[:, :, None] * mu[:, None, :]) / (total - 1.0)[:, None, None]
    return mu, cov


def fpd_from_draws(
    x: np.ndarray, y: np.ndarray, scale: np.ndarray, batches: np.ndarray, draws: tuple[np.ndarray, np.ndarray]
) -> DistanceResult:
    """The FPD of unnormalised tables x, y with the per-feature ``scale`` and precomputed draws."""
    # Centre on the real sample's mean before forming second moments: the covariance does not
    # change, and the subtraction of mu mu^T loses no digits to a large common offset.
    centre = x.mean(axis=0)
    xs, ys = (x - centre) / scale, (y - centre) / scale
    mu_x, cov_x = _weighted_moments(xs, draws[0])
    mu_y, cov_y = _weighted_moments(ys, draws[1])
    num_batches = draws[0].shape[1] // len(batches)
    values = frechet_from_moments(mu_x, cov_x, mu_y, cov_y)
    means = values.reshape(len(batches), num_batches).mean(axis=1)
    intercept, _, error = fit_line_nonnegative(1 / batches, means)
    return DistanceResult(intercept, error)


def _poly_kernel(a: np.ndarray, b: np.ndarray, degree: int) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 4) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(a, b) = (a . b / d + 1)^degree.

    Diagonal terms are left out of the within-sample sums, so the expectation is exactly 0 when
    both samples come from the same distribution (individual values scatter around 0).
    """
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x, degree), _poly_kernel(y, y, degree), _poly_kernel(x, y, degree)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


@functools.lru_cache(maxsize=4)
def kpd_draws(n_x: int, n_y: int, num_batches: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """jetnet's KPD batches as counts (n_x, B) and (n_y, B): batch i from default_rng(seed + 1000 i); read-only."""
    dtype = _count_type(batch_size)
    cx = np.empty((n_x, num_batches), dtype=dtype)
    cy = np.empty((n_y, num_batches), dtype=dtype)
    for i in range(num_batches):
        rng = np.random.default_rng(seed + i * 1000)
        cx[:, i] = _draw_counts(rng, n_x, batch_size)
        cy[:, i] = _draw_counts(rng, n_y, batch_size)
    cx.setflags(write=False)
    cy.setflags(write=False)
    return cx, cy


def _kernel_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a.b/d + 1)^4 for every pair of rows, computed in place."""
    k = a @ b.T
    k /= a.shape[1]
    k += 1.0
    np.square(k, out=k)
    np.square(k, out=k)
    return k


def _kernel_quadratic_forms(
    a: np.ndarray, b: np.ndarray | None, ca: np.ndarray, cb: np.ndarray | None, block: int = 1024
) -> np.ndarray:
    """c_a[:, k]^T K(a, b) c_b[:, k] for every batch k, with K = (a.b/d + 1)^4, in blocks.

    Blocks bound the memory to block x block kernel values whatever the sample size. With
    ``b`` None the form is c_a^T K(a, a) c_a, and only the blocks on and above the diagonal are
    computed (K is symmetric), which saves a third of KPD's time.
    """
    out = np.zeros(ca.shape[1])
    starts = range(0, len(a), block)
    if b is None:
        for i in starts:
            for j in starts:
                if j < i:
                    continue
                k = _kernel_block(a[i : i + block], a[j : j + block])
                form = np.einsum("ik,ik->k", ca[i : i + block], k @ ca[j : j + block])
                out += form if i == j else 2.0 * form
        return out
    for i in starts:
        for j in range(0, len(b), block):
            k = _kernel_block(a[i : i + block], b[j : j + block])
            out += np.einsum("ik,ik->k", ca[i : i + block], k @ cb[j : j + block])
    return out


def kpd_from_draws(x: np.ndarray, y: np.ndarray, draws: tuple[np.ndarray, np.ndarray]) -> DistanceResult:
    """KPD of already normalised tables x, y over batches given as counts (jetnet's estimator).

    jetnet evaluates the unbiased estimator on each drawn batch as an array, so an event drawn
    twice counts as two different events: the within-sample sum is sum_ij c_i c_j k_ij minus
    the diagonal sum_i c_i k_ii. The same is computed here from the counts.
    """
    cx, cy = (np.asarray(c, dtype=np.float64) for c in draws)  # (n, B): B is small (jetnet: 10)
    n = cx.sum(axis=0)
    m = cy.sum(axis=0)
    d = x.shape[1]
    diag_x = (np.einsum("ij,ij->i", x, x) / d + 1.0) ** 4
    diag_y = (np.einsum("ij,ij->i", y, y) / d + 1.0) ** 4
    sxx = (_kernel_quadratic_forms(x, None, cx, None) - diag_x @ cx) / (n * (n - 1))
    syy = (_kernel_quadratic_forms(y, None, cy, None) - diag_y @ cy) / (m * (m - 1))
    sxy = _kernel_quadratic_forms(x, y, cx, cy) / (n * m)
    values = sxx + syy - 2.0 * sxy
    lo, hi = np.percentile(values, KPD_ERROR_PERCENTILES)
    return DistanceResult(float(np.median(values)), float(hi - lo) / 2.0)


def kpd(
    real: np.ndarray,
    generated: np.ndarray,
    num_batches: int = JETNET_KPD_NUM_BATCHES,
    batch_size: int = JETNET_KPD_BATCH_SIZE,
    normalise: bool = True,
    seed: int = JETNET_SEED,
) -> DistanceResult:
    """Kernel physics distance as jetnet (and through it CaloChallenge) computes it.

    Both tables are divided by the real sample's per-feature max |x|. Each of ``num_batches``
    batches draws ``batch_size`` events with replacement from each sample (batch i from
    ``default_rng(seed + 1000 i)``) and evaluates the unbiased MMD^2 with the kernel
    ``(x.y/d + 1)^4``; the result is the median over batches and half the spread between
    their 16.275 and 83.725 percentiles.

    Args:
        real: Real feature table (n, d); rows with a non-finite value are dropped.
        generated: Generated feature table (m, d).
        num_batches, batch_size, normalise, seed: jetnet's parameters and defaults
            (CaloChallenge's evaluation passes ``batch_size=10000``).

    Returns:
        DistanceResult ``(median, error)``; ``value_x1e3`` is the unit of the published tables.

    Raises:
        ValueError: on unequal widths, fewer than 2 finite events, or bad sizes.
    """
    x, y = _checked_pair(real, generated, 2, "kpd")
    if num_batches < 1 or batch_size < 2:
        raise ValueError(f"kpd needs num_batches >= 1 and batch_size >= 2, got {num_batches} and {batch_size}")
    if normalise:
        x, y = normalise_features(x, y)
    with one_blas_thread():  # see fpd
        return kpd_from_draws(x, y, kpd_draws(len(x), len(y), num_batches, batch_size, seed))


def table_to_matrix(table: dict[str, np.ndarray], names: list[str] | None = None) -> np.ndarray:
    """Stack the named columns of a feature table into an (n, d) matrix (all columns by default)."""
    names = list(table) if names is None else names
    return np.stack([np.asarray(table[k], dtype=np.float64) for k in names], axis=1)
