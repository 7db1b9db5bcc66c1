"""Tests of eval.calochallenge: separation power, the DNN classifier, FPD and KPD on samples with known answers.

FPD and KPD are checked two ways: against a plain re-implementation of jetnet's algorithm written
here (every batch materialised, scipy-free matrix square root from the eigenvalues of S1 S2, the
bounded line fit by projected gradient descent), and against analytic values for Gaussian
samples (shift, scale change, correlation flip) after jetnet's max-|x| normalisation.
"""

import itertools
import math

import numpy as np
import pytest

from eval import calochallenge as cc
from eval.classifier import IsotonicCalibration, _openblas_thread_controls, auc_null_sd


def gaussian(n: int, seed: int, shift=0.0, scale=1.0, d: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[:, 1] += 0.5 * x[:, 0]  # some correlation, as between real shower features
    return x * scale + shift


def correlated(n: int, rho: float, seed: int, mean=(3.0, 2.0)) -> np.ndarray:
    """Two unit-variance features with correlation rho (shifted away from 0, as features are)."""
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(mean, [[1.0, rho], [rho, 1.0]], n)


# --------------------------------------------------------------------------- separation power, AUC
def test_separation_power_limits():
    h = np.array([1.0, 4.0, 2.0, 0.0])
    assert cc.separation_power(h, 3 * h) == pytest.approx(0.0)
    assert cc.separation_power([1, 2, 0, 0], [0, 0, 5, 1]) == pytest.approx(1.0)
    # Partial overlap lies strictly between.
    assert 0.0 < cc.separation_power([1, 1, 0], [0, 1, 1]) < 1.0
    with pytest.raises(ValueError, match="binning"):
        cc.separation_power([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        cc.separation_power([0, 0], [1, 2])


def test_feature_separation_powers_small_for_same_large_for_shifted():
    a, b, c = gaussian(3000, 1)[:, 0], gaussian(3000, 2)[:, 0], gaussian(3000, 3, shift=3.0)[:, 0]
    sp = cc.feature_separation_powers({"f": a}, {"f": b})["f"]
    sp_shift = cc.feature_separation_powers({"f": a}, {"f": c})["f"]
    assert sp < 0.02
    assert sp_shift > 0.6


def test_roc_auc_known_values():
    y = np.array([0, 0, 1, 1])
    assert cc.roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)
    assert cc.roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)
    assert cc.roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert cc.roc_auc(y, [0.1, 0.6, 0.5, 0.9]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both classes"):
        cc.roc_auc([1, 1], [0.2, 0.3])


def test_auc_null_sd_is_the_spread_of_random_scores():
    rng = np.random.default_rng(0)
    n = 200
    labels = np.r_[np.ones(n), np.zeros(n)]
    aucs = [cc.roc_auc(labels, rng.random(2 * n)) for _ in range(2000)]
    # 2000 draws: the sample sd is within ~5 % of the true one (3.2 % standard error).
    assert np.std(aucs) == pytest.approx(auc_null_sd(n, n), rel=0.08)
    assert auc_null_sd(n, n) == pytest.approx(math.sqrt((2 * n + 1) / (12.0 * n * n)))


def test_isotonic_calibration_is_monotone_clipped_and_fits_step_data():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    labels = np.array([0, 1, 0, 1, 1, 1])
    cal = IsotonicCalibration.fit(scores, labels)
    # Pool adjacent violators: (1, 0) -> 0.5, 0.5; the rest is already monotone.
    np.testing.assert_allclose(cal.predict(scores), [1e-6, 0.5, 0.5, 1 - 1e-6, 1 - 1e-6, 1 - 1e-6])
    grid = np.linspace(-1, 2, 301)
    p = cal.predict(grid)
    assert np.all(np.diff(p) >= 0) and p.min() >= 1e-6 and p.max() <= 1 - 1e-6
    # Tied scores are pooled before fitting.
    tied = IsotonicCalibration.fit(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 1]))
    assert tied.predict(np.array([0.0, 0.5, 1.0])) == pytest.approx([0.75] * 3)


# --------------------------------------------------------------------------- classifier
def best_auc_correlation_flip(rho: float) -> float:
    """AUC of the optimal statistic x1 * x2 (the log likelihood ratio up to a monotone map)."""
    a = correlated(400_000, rho, 101, mean=(0.0, 0.0))
    b = correlated(400_000, -rho, 102, mean=(0.0, 0.0))
    labels = np.r_[np.ones(len(a)), np.zeros(len(b))]
    return cc.roc_auc(labels, np.r_[a[:, 0] * a[:, 1], b[:, 0] * b[:, 1]])


def test_classifier_is_at_chance_for_same_distribution_and_deterministic():
    same = cc.classifier_test(gaussian(2000, 1), gaussian(2000, 2), seed=0)
    assert same.n_train == 1200 and same.n_validation == 400 and same.n_test == 400
    assert abs(same.auc - 0.5) < 4 * auc_null_sd(same.n_test, same.n_test)
    assert abs(same.jsd) < 0.1
    again = cc.classifier_test(gaussian(2000, 1), gaussian(2000, 2), seed=0)
    assert again == same


@pytest.mark.parametrize(
    "case, best",
    [
        # Mean shift by 1 sigma in one feature: Phi(delta / sqrt(2)).
        ("shift", 0.5 * (1 + math.erf(1.0 / 2.0))),
        # Both features 1.5x wider (2-D, independent): P(r^2 E1 > E2) = r^2 / (1 + r^2) for exponentials.
        ("scale", 2.25 / 3.25),
        # Correlation +0.8 -> -0.8 with identical marginals: best AUC from the optimal statistic.
        ("flip", None),
    ],
)
def test_classifier_reaches_the_best_achievable_auc(case, best):
    n = 3000
    if case == "shift":
        real, gen = correlated(n, 0.0, 1), correlated(n, 0.0, 2, mean=(4.0, 2.0))
    elif case == "scale":
        real = correlated(n, 0.0, 1)
        gen = 3.0 + 1.5 * (correlated(n, 0.0, 2) - 3.0)
        gen[:, 1] = 2.0 + 1.5 * (correlated(n, 0.0, 3)[:, 1] - 2.0)
    else:
        real, gen = correlated(n, 0.8, 1), correlated(n, -0.8, 2)
        best = best_auc_correlation_flip(0.8)
        assert best == pytest.approx(0.90, abs=0.01)
    r = cc.classifier_test(real, gen, seed=0)
    sd = auc_null_sd(r.n_test, r.n_test)  # ~0.015 at 600 test events per class
    # Close to the optimum (within 3 sd of the test-split noise, plus 0.02 for imperfect training)
    # and never credibly above it.
    assert best - 3 * sd - 0.02 <= r.auc <= best + 3 * sd
    if case == "flip":
        assert r.auc >= 0.85  # a logistic regression on features and their squares gives 0.51


def test_classifier_trains_on_one_blas_thread_and_restores_the_setting():
    # numpy's OpenBLAS is found here (Linux wheel); training switches it to one thread, so the
    # result does not depend on the thread count, and puts the count back afterwards.
    get_threads, set_threads = _openblas_thread_controls()
    before = get_threads()
    try:
        results = []
        for threads in (1, 2):
            set_threads(threads)
            results.append(cc.classifier_test(gaussian(600, 1), gaussian(600, 2, shift=0.3), seed=1))
            assert get_threads() == threads
        assert results[0] == results[1]
    finally:
        set_threads(before)


def test_classifier_rejects_tiny_or_mismatched_tables():
    with pytest.raises(ValueError, match="equal widths"):
        cc.classifier_test(gaussian(50, 1, d=3), gaussian(50, 1, d=4))
    with pytest.raises(ValueError, match="train/validation/test"):
        cc.classifier_test(gaussian(50, 1), np.full((50, 6), np.nan))
    with pytest.raises(ValueError, match="train/validation/test"):
        cc.classifier_test(gaussian(12, 1), gaussian(12, 2))


# --------------------------------------------------------------------------- FPD / KPD: jetnet's algorithm
def ref_frechet(x: np.ndarray, y: np.ndarray) -> float:
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # Tr (S1 S2)^(1/2) = sum of square roots of the (real, >= 0) eigenvalues of S1 S2.
    tr = np.sum(np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)))
    diff = x.mean(axis=0) - y.mean(axis=0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr)


def ref_bounded_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept >= 0 and slope >= 0 by projected gradient descent, and curve_fit's intercept error."""
    scale = x.std()
    design = np.stack([np.ones_like(x), x / scale], axis=1)
    hess, grad0 = design.T @ design, design.T @ y
    step = 1.0 / np.linalg.eigvalsh(hess).max()
    p = np.zeros(2)
    for _ in range(100_000):
        p = np.maximum(p - step * (hess @ p - grad0), 0.0)
    a, b = p[0], p[1] / scale
    raw = np.stack([np.ones_like(x), x], axis=1)
    sse = np.sum((y - a - b * x) ** 2)
    return a, math.sqrt(np.linalg.inv(raw.T @ raw)[0, 0] * sse / (len(x) - 2))


def ref_fpd(real, gen, min_samples, max_samples, num_batches, num_points, seed=42):
    scale = np.max(np.abs(real), axis=0)
    x, y = real / scale, gen / scale
    sizes = (1 / np.linspace(1 / min_samples, 1 / max_samples, num_points)).astype("int32")
    rng = np.random.default_rng(seed)
    means = []
    for size in sizes:
        vals = []
        for _ in range(num_batches):
            bx = x[rng.choice(len(x), size=size)]
            by = y[rng.choice(len(y), size=size)]
            vals.append(ref_frechet(bx, by))
        means.append(np.mean(vals))
    return ref_bounded_line(1 / sizes, np.array(means))


def ref_kpd(real, gen, num_batches, batch_size, seed=42):
    scale = np.max(np.abs(real), axis=0)
    x, y = real / scale, gen / scale
    vals = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + i * 1000)
        bx = x[rng.choice(len(x), size=batch_size)]
        by = y[rng.choice(len(y), size=batch_size)]
        vals.append(cc.mmd2_unbiased(bx, by))
    lo, hi = np.percentile(vals, [16.275, 83.725])
    return float(np.median(vals)), float(hi - lo) / 2


@pytest.mark.parametrize("shift", [0.0, 0.2])
def test_fpd_and_kpd_equal_a_plain_reimplementation_of_jetnets_algorithm(shift):
    real = gaussian(1500, 1, shift=3.0)
    gen = gaussian(1300, 2, shift=3.0 + shift, scale=1.1)
    f = cc.fpd(real, gen, min_samples=1000, max_samples=4000, num_batches=6, num_points=5)
    f_ref = ref_fpd(real, gen, 1000, 4000, 6, 5)
    # The same random draws and the same formulas in another arrangement: equal to round-off
    # (projected gradient descent converges to ~1e-12 here).
    assert f.value == pytest.approx(f_ref[0], rel=1e-7, abs=1e-12)
    assert f.error == pytest.approx(f_ref[1], rel=1e-6)
    k = cc.kpd(real, gen, num_batches=5, batch_size=800)
    k_ref = ref_kpd(real, gen, 5, 800)
    assert k.value == pytest.approx(k_ref[0], rel=1e-8, abs=1e-14)
    assert k.error == pytest.approx(k_ref[1], rel=1e-8, abs=1e-14)
    assert (k.value_x1e3, f.error_x1e3) == pytest.approx((k.value * 1e3, f.error * 1e3))
    value, error = f  # jetnet's return convention: (value, error)
    assert (value, error) == (f.value, f.error)


def test_fpd_defaults_are_jetnets():
    import inspect

    params = inspect.signature(cc.fpd).parameters
    assert {k: params[k].default for k in ("min_samples", "max_samples", "num_batches", "num_points", "seed")} == {
        "min_samples": 20_000, "max_samples": 50_000, "num_batches": 20, "num_points": 10, "seed": 42}
    params = inspect.signature(cc.kpd).parameters
    assert {k: params[k].default for k in ("num_batches", "batch_size", "seed")} == {
        "num_batches": 10, "batch_size": 5_000, "seed": 42}
    # Evenly spaced in 1/N and truncated to int32 as jetnet does (1/(1/50000) rounds to 49999.99...).
    np.testing.assert_array_equal(cc.fpd_batch_sizes(20_000, 50_000, 10)[[0, -1]], [20_000, 49_999])


def test_bounded_line_fit_known_answers():
    x = np.linspace(1e-4, 5e-4, 10)
    a, b, err = cc.fit_line_nonnegative(x, 2.0 + 300.0 * x)
    assert (a, b, err) == pytest.approx((2.0, 300.0, 0.0), abs=1e-9)
    # A negative intercept is not allowed: the line goes through the origin instead.
    a, b, _ = cc.fit_line_nonnegative(x, -0.01 + 300.0 * x)
    assert a == 0.0 and b == pytest.approx(np.sum(x * (-0.01 + 300 * x)) / np.sum(x * x))
    # A falling trend has slope 0 and the mean as intercept.
    a, b, _ = cc.fit_line_nonnegative(x, 1.0 - 100.0 * x)
    assert b == 0.0 and a == pytest.approx(np.mean(1.0 - 100.0 * x))


def test_fpd_is_never_negative_for_samples_of_one_distribution():
    # The unbounded 1/N intercept used before went negative in about half of such comparisons.
    values = [cc.fpd(gaussian(600, 2 * s), gaussian(600, 2 * s + 1), min_samples=600, max_samples=3000, num_batches=5)
              for s in range(6)]
    assert all(v.value >= 0 for v in values)
    assert all(v.value_x1e3 < 30 for v in values)


# --------------------------------------------------------------------------- FPD / KPD: analytic values
def gaussian_moment_1d(k: int, mu: float, sd: float) -> float:
    return [1.0, mu, mu**2 + sd**2, mu**3 + 3 * mu * sd**2, mu**4 + 6 * mu**2 * sd**2 + 3 * sd**4][k]


def analytic_mmd2(moments_p, moments_q, d: int) -> float:
    """MMD^2 with k = (x.y/d + 1)^4 = sum_alpha C(4,|a|) |a|!/a! d^-|a| x^a y^a, from the moments E[x^a]."""
    total = 0.0
    for alpha in itertools.product(range(5), repeat=d):
        k = sum(alpha)
        if k > 4:
            continue
        coeff = math.comb(4, k) * math.factorial(k) / math.prod(math.factorial(a) for a in alpha) / d**k
        total += coeff * (moments_p(alpha) - moments_q(alpha)) ** 2
    return total


def independent_moments(mu, sd):
    return lambda alpha: math.prod(gaussian_moment_1d(a, m, s) for a, m, s in zip(alpha, mu, sd))


def bivariate_moments(mu, sd, rho):
    """E[x1^a x2^b] of a bivariate Gaussian, by expanding around the mean (Isserlis for the centred part)."""
    v1, v2, c = sd[0] ** 2, sd[1] ** 2, rho * sd[0] * sd[1]
    central = {(0, 0): 1, (2, 0): v1, (0, 2): v2, (1, 1): c, (4, 0): 3 * v1**2, (0, 4): 3 * v2**2,
               (3, 1): 3 * v1 * c, (1, 3): 3 * v2 * c, (2, 2): v1 * v2 + 2 * c**2}

    def moment(alpha):
        a, b = alpha
        return sum(
            math.comb(a, i) * math.comb(b, j) * mu[0] ** (a - i) * mu[1] ** (b - j) * central.get((i, j), 0.0)
            for i in range(a + 1) for j in range(b + 1)
        )

    return moment


def analytic_case(name: str, n: int, seed: int):
    """(real, generated, analytic FD, analytic MMD^2) after normalising by the real sample's max |x|."""
    rng = np.random.default_rng(seed)
    mu, sd = np.array([3.0, 2.0]), np.array([1.0, 0.5])
    if name == "flip":  # correlation +0.8 -> -0.8, same marginals
        real = rng.multivariate_normal(mu, [[1.0, 0.4], [0.4, 0.25]], n)
        gen = rng.multivariate_normal(mu, [[1.0, -0.4], [-0.4, 0.25]], n)
    else:
        mu_g, sd_g = (mu + [0.5, 0.0], sd) if name == "shift" else (mu, 1.5 * sd)
        real = mu + sd * rng.standard_normal((n, 2))
        gen = mu_g + sd_g * rng.standard_normal((n, 2))
    m = np.max(np.abs(real), axis=0)  # jetnet's normaliser, from the real sample
    mu_n, sd_n = mu / m, sd / m
    if name == "flip":
        s1 = np.array([[sd_n[0] ** 2, 0.8 * sd_n[0] * sd_n[1]], [0.8 * sd_n[0] * sd_n[1], sd_n[1] ** 2]])
        s2 = s1 * [[1, -1], [-1, 1]]
        # 2 x 2: Tr sqrt(S1 S2) = sqrt(Tr(S1 S2) + 2 sqrt(det(S1 S2))).
        fd = np.trace(s1) + np.trace(s2) - 2 * math.sqrt(np.trace(s1 @ s2) + 2 * abs(np.linalg.det(s1)))
        mmd = analytic_mmd2(bivariate_moments(mu_n, sd_n, 0.8), bivariate_moments(mu_n, sd_n, -0.8), 2)
    else:
        mug_n, sdg_n = mu_g / m, sd_g / m
        fd = float(np.sum((mu_n - mug_n) ** 2) + np.sum((sd_n - sdg_n) ** 2))  # diagonal covariances
        mmd = analytic_mmd2(independent_moments(mu_n, sd_n), independent_moments(mug_n, sdg_n), 2)
    return real, gen, fd, mmd


@pytest.mark.parametrize("name", ["shift", "scale", "flip"])
def test_fpd_and_kpd_match_analytic_values_after_max_abs_normalisation(name):
    # FPD: 50,000 events per sample leave ~2.5 % statistical spread (measured over seeds).
    real, gen, fd, _ = analytic_case(name, 50_000, 7)
    assert cc.fpd(real, gen).value == pytest.approx(fd, rel=0.10)
    # KPD costs n^2: 6,000 events per sample leave a spread of ~4 % (shift) and ~10 % (scale,
    # flip) around the analytic value. Standardising by the standard deviation instead of the
    # max |x|, or a kernel without the 1/d, would move these values by factors of 10 or more.
    real, gen, _, mmd = analytic_case(name, 6_000, 8)
    assert cc.kpd(real, gen, batch_size=6_000).value == pytest.approx(mmd, rel=0.2 if name == "shift" else 0.4)


def test_frechet_distance_matches_gaussian_formula():
    x = gaussian(20000, 1, d=3)
    assert cc.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    y = gaussian(20000, 2, shift=np.array([1.0, 0.0, 2.0]), d=3)
    # Same covariance: FD -> |mu_x - mu_y|^2 = 5.
    assert cc.frechet_distance(x, y) == pytest.approx(5.0, abs=0.1)


def test_mmd_unbiased_has_zero_expectation():
    vals = [cc.mmd2_unbiased(gaussian(200, 2 * i), gaussian(200, 2 * i + 1)) for i in range(30)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))


def test_fpd_kpd_reject_mismatched_or_empty_tables():
    with pytest.raises(ValueError, match="equal widths"):
        cc.fpd(gaussian(50, 1, d=3), gaussian(50, 1, d=4))
    with pytest.raises(ValueError, match="at least 2 finite events"):
        cc.kpd(gaussian(50, 1), np.full((50, 6), np.nan))
