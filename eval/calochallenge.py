"""CaloChallenge-2022-style sample comparisons: separation power, classifier AUC/JSD, FPD and KPD.

All functions take plain numpy feature tables (rows = events, columns = high-level features) so
they can compare any two samples: generated vs Monte Carlo, or Monte Carlo vs an independent Monte
Carlo sample (the noise floor every figure must be read against).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

LN2 = math.log(2.0)


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


# --------------------------------------------------------------------------- classifier
@dataclass
class ClassifierResult:
    """Held-out performance of a real-vs-generated classifier.

    Attributes:
        auc: Area under the ROC curve on the held-out half (0.5 = indistinguishable).
        bce: Mean binary cross-entropy on the held-out half, in nats.
        jsd: (ln 2 - bce) / ln 2, an estimate of the Jensen-Shannon divergence in bits; ~0 when
            the samples cannot be told apart (it can be slightly negative from overfitting).
        n_train: Events per class used for training.
        n_test: Events per class used for testing.
    """

    auc: float
    bce: float
    jsd: float
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return asdict(self)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve from the Mann-Whitney rank statistic, ties counted as one half."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty_like(scores)
    # Average ranks over ties so a constant classifier scores exactly 0.5.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _quadratic_expand(x: np.ndarray) -> np.ndarray:
    """Append the squared (standardised) features so a linear model also sees width changes.

    Squares only, not all pairwise products: with d ~ 16 features the full quadratic set has
    ~150 weights and overfits the few hundred events a CPU evaluation uses (held-out BCE above
    ln 2 for identical samples); squares keep 2 d weights.
    """
    return np.concatenate([x, x * x], axis=1)


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method (IRLS): deterministic, no tuning."""
    xb = np.concatenate([np.ones((x.shape[0], 1)), x], axis=1)
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2 * x.shape[0])
    reg[0] = 0.0  # do not shrink the bias
    for _ in range(max_iter):
        z = np.clip(xb @ w, -30, 30)
        p = 1.0 / (1.0 + np.exp(-z))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(xb.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def classifier_test(
    real: np.ndarray,
    generated: np.ndarray,
    seed: int = 0,
    test_fraction: float = 0.5,
    l2: float = 1e-2,
    quadratic: bool = True,
) -> ClassifierResult:
    """Train a logistic-regression classifier (features and their squares) to tell real from generated.

    Both classes are cut to the same size so that chance-level BCE is ln 2. Features are
    standardised with the training half's statistics. The model is deliberately simple and
    deterministic (Newton's method from zero weights, a seeded split), so two runs on the same
    data and machine agree exactly (another CPU's BLAS kernels may move the last bits).

    Args:
        real: Feature table of real events, (n, d); rows with non-finite values are dropped.
        generated: Feature table of generated events, (m, d).
        seed: Seed of the subsampling and train/test split.
        test_fraction: Fraction of each class held out for the AUC/BCE.
        l2: L2 penalty per event.
        quadratic: Include the squared features.

    Returns:
        ClassifierResult with AUC, BCE and JSD on the held-out events.

    Raises:
        ValueError: if feature dimensions differ or fewer than 10 events per class remain.
    """
    real = np.asarray(real, dtype=np.float64)
    generated = np.asarray(generated, dtype=np.float64)
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature tables must be 2-D with equal widths, got {real.shape} and {generated.shape}")
    real = real[np.all(np.isfinite(real), axis=1)]
    generated = generated[np.all(np.isfinite(generated), axis=1)]
    n = min(len(real), len(generated))
    if n < 10:
        raise ValueError(f"classifier_test needs >= 10 finite events per class, got {len(real)} and {len(generated)}")
    rng = np.random.default_rng(seed)
    real = real[rng.permutation(len(real))[:n]]
    generated = generated[rng.permutation(len(generated))[:n]]
    n_test = max(1, int(round(n * test_fraction)))
    n_train = n - n_test
    x_train = np.concatenate([real[:n_train], generated[:n_train]])
    y_train = np.concatenate([np.ones(n_train), np.zeros(n_train)])
    x_test = np.concatenate([real[n_train:], generated[n_train:]])
    y_test = np.concatenate([np.ones(n_test), np.zeros(n_test)])
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    if quadratic:
        x_train, x_test = _quadratic_expand(x_train), _quadratic_expand(x_test)
    w = _fit_logistic(x_train, y_train, l2)
    z = np.concatenate([np.ones((len(x_test), 1)), x_test], axis=1) @ w
    p = np.clip(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))), 1e-7, 1 - 1e-7)
    bce = float(-np.mean(y_test * np.log(p) + (1 - y_test) * np.log(1 - p)))
    return ClassifierResult(
        auc=roc_auc(y_test, z), bce=bce, jsd=(LN2 - bce) / LN2, n_train=n_train, n_test=n_test
    )


# --------------------------------------------------------------------------- FPD / KPD
@dataclass
class DistanceResult:
    """A distance between two samples with its uncertainty, both also given x 1e3 as published.

    Attributes:
        value: The distance in normalised-feature units.
        error: Its statistical uncertainty (fit error for FPD, standard error of batches for KPD).
        value_x1e3: value * 1e3, the unit CaloChallenge tables use.
        error_x1e3: error * 1e3.
    """

    value: float
    error: float
    value_x1e3: float
    error_x1e3: float

    @classmethod
    def of(cls, value: float, error: float) -> "DistanceResult":
        return cls(float(value), float(error), float(value) * 1e3, float(error) * 1e3)

    def to_dict(self) -> dict:
        return asdict(self)


def _finite_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[np.all(np.isfinite(x), axis=1)]


def normalise_features(real: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise both tables with the *real* sample's mean and standard deviation.

    Using the reference statistics for both keeps the scale fixed whatever the generator does.
    """
    real, generated = _finite_rows(real), _finite_rows(generated)
    mu, sd = real.mean(axis=0), real.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (real - mu) / sd, (generated - mu) / sd


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two samples (rows = events).

    ``|mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2))``; the trace of the matrix square root
    is computed as that of the symmetric ``(S_x^(1/2) S_y S_x^(1/2))^(1/2)``, which needs only
    eigen-decompositions (no scipy) and stays real.
    """
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    s_x = np.atleast_2d(np.cov(x, rowvar=False))
    s_y = np.atleast_2d(np.cov(y, rowvar=False))
    root_x = _sqrtm_psd(s_x)
    middle = root_x @ s_y @ root_x
    vals = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    tr_covmean = float(np.sum(np.sqrt(np.clip(vals, 0.0, None))))
    return float(np.sum((mu_x - mu_y) ** 2) + np.trace(s_x) + np.trace(s_y) - 2.0 * tr_covmean)


def fpd(
    real: np.ndarray,
    generated: np.ndarray,
    seed: int = 0,
    min_samples: int | None = None,
    n_points: int = 5,
    n_repeats: int = 4,
) -> DistanceResult:
    """Frechet physics distance extrapolated to infinite sample size.

    The Frechet distance of finite samples is biased upwards roughly like a + b / N. It is
    measured at ``n_points`` sample sizes from ``min_samples`` to the largest available (averaged
    over ``n_repeats`` random subsamples each) and fitted linearly in 1/N; the intercept at
    1/N = 0 is the result and the fit's standard error its uncertainty.

    Args:
        real: Real feature table (n, d).
        generated: Generated feature table (m, d).
        seed: Seed of the subsampling.
        min_samples: Smallest sample size of the fit (default: half the largest).
        n_points: Number of sample sizes in the fit.
        n_repeats: Subsamples averaged per size.

    Returns:
        DistanceResult (value, error, and both x 1e3).

    Raises:
        ValueError: if fewer than 2 * d + 2 finite events remain in either sample.
    """
    x, y = normalise_features(real, generated)
    d = x.shape[1]
    n_max = min(len(x), len(y))
    if n_max < 2 * d + 2:
        raise ValueError(f"fpd needs at least {2 * d + 2} finite events per sample for {d} features, got {n_max}")
    n_min = min_samples if min_samples is not None else max(d + 2, n_max // 2)
    n_min = int(min(max(n_min, d + 2), n_max))
    sizes = np.unique(np.linspace(n_min, n_max, n_points).astype(int))
    rng = np.random.default_rng(seed)
    means = []
    for size in sizes:
        vals = [
            frechet_distance(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
            for _ in range(n_repeats)
        ]
        means.append(np.mean(vals))
    inv = 1.0 / sizes.astype(np.float64)
    means = np.asarray(means)
    if len(sizes) < 3:
        return DistanceResult.of(means[-1], float(np.std(means)) if len(means) > 1 else 0.0)
    coeffs, cov = np.polyfit(inv, means, 1, cov=True)
    return DistanceResult.of(coeffs[1], math.sqrt(max(cov[1, 1], 0.0)))


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


def kpd(
    real: np.ndarray,
    generated: np.ndarray,
    seed: int = 0,
    batch_size: int = 1000,
    n_batches: int = 10,
    degree: int = 4,
) -> DistanceResult:
    """Kernel physics distance: unbiased MMD^2 (polynomial kernel) averaged over random batches.

    Args:
        real: Real feature table (n, d).
        generated: Generated feature table (m, d).
        seed: Seed of the batch draws.
        batch_size: Events per sample in each batch (capped at half of each sample).
        n_batches: Number of batches; the error is their spread over sqrt(disjoint batches).
        degree: Polynomial kernel degree (4 as in CaloChallenge).

    Returns:
        DistanceResult with the mean MMD^2 and its standard error.

    Raises:
        ValueError: if fewer than 4 finite events remain in a sample.
    """
    x, y = normalise_features(real, generated)
    # At most half of each sample per batch, so that batches differ and their spread is an error.
    size = min(batch_size, len(x) // 2, len(y) // 2)
    if size < 4:
        raise ValueError(f"kpd needs at least 8 finite events per sample, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    vals = np.array(
        [
            mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)], degree)
            for _ in range(n_batches)
        ]
    )
    # The batches overlap (each holds up to half of every sample), so they are not independent:
    # dividing their spread by sqrt(n_batches) would understate the error. Divide instead by the
    # square root of the number of disjoint batches the samples could hold.
    independent = max(1, min(len(x), len(y)) // size)
    err = float(vals.std(ddof=1) / math.sqrt(min(independent, len(vals)))) if len(vals) > 1 else 0.0
    return DistanceResult.of(vals.mean(), err)


def table_to_matrix(table: dict[str, np.ndarray], names: list[str] | None = None) -> np.ndarray:
    """Stack the named columns of a feature table into an (n, d) matrix (all columns by default)."""
    names = list(table) if names is None else names
    return np.stack([np.asarray(table[k], dtype=np.float64) for k in names], axis=1)
