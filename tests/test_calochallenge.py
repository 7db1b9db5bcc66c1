"""Tests of eval.calochallenge: separation power, AUC, classifier, FPD and KPD on samples with known answers."""

import math

import numpy as np
import pytest

from eval import calochallenge as cc


def gaussian(n: int, seed: int, shift: float = 0.0, scale: float = 1.0, d: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[:, 1] += 0.5 * x[:, 0]  # some correlation, as between real shower features
    return x * scale + shift


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


def test_classifier_chance_for_same_distribution_and_near_one_for_different():
    same = cc.classifier_test(gaussian(1500, 1), gaussian(1500, 2), seed=0)
    assert 0.44 < same.auc < 0.56
    assert abs(same.jsd) < 0.05
    assert same.bce == pytest.approx(math.log(2), abs=0.04)
    shifted = cc.classifier_test(gaussian(1500, 1), gaussian(1500, 3, shift=1.5), seed=0)
    assert shifted.auc > 0.97 and shifted.jsd > 0.6
    # A pure width change (same means) is caught through the squared features.
    wider = cc.classifier_test(gaussian(1500, 1), gaussian(1500, 4, scale=1.6), seed=0)
    assert wider.auc > 0.75
    # Deterministic for a seed.
    again = cc.classifier_test(gaussian(1500, 1), gaussian(1500, 2), seed=0)
    assert again == same


def test_classifier_rejects_tiny_or_mismatched_tables():
    with pytest.raises(ValueError, match="equal widths"):
        cc.classifier_test(gaussian(50, 1, d=3), gaussian(50, 1, d=4))
    with pytest.raises(ValueError, match=">= 10 finite events"):
        cc.classifier_test(gaussian(50, 1), np.full((50, 6), np.nan))


def test_frechet_distance_matches_gaussian_formula():
    x = gaussian(20000, 1, d=3)
    assert cc.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    y = gaussian(20000, 2, shift=np.array([1.0, 0.0, 2.0]), d=3)
    # Same covariance: FD -> |mu_x - mu_y|^2 = 5.
    assert cc.frechet_distance(x, y) == pytest.approx(5.0, abs=0.1)


def test_fpd_grows_with_shift_and_is_small_for_same_distribution():
    ref = gaussian(2000, 1)
    values = [cc.fpd(ref, gaussian(2000, 10 + i, shift=s), seed=0) for i, s in enumerate((0.0, 0.3, 1.0))]
    assert abs(values[0].value_x1e3) < 30
    assert values[0].value < values[1].value < values[2].value
    # Features are normalised by the reference's std (1 here): shifting all 6 by 1 gives FD ~ 6.
    assert values[2].value == pytest.approx(6.0, rel=0.1)
    assert values[2].value_x1e3 == pytest.approx(values[2].value * 1e3)


def test_kpd_zero_for_same_distribution_large_for_shifted():
    ref = gaussian(2000, 1)
    same = cc.kpd(ref, gaussian(2000, 2), seed=0, batch_size=500)
    shifted = cc.kpd(ref, gaussian(2000, 3, shift=0.5), seed=0, batch_size=500)
    assert abs(same.value) < 4 * same.error + 1e-3
    assert shifted.value > 8 * max(shifted.error, same.error)
    assert shifted.value > 50 * abs(same.value)


def test_mmd_unbiased_has_zero_expectation():
    vals = [cc.mmd2_unbiased(gaussian(200, 2 * i), gaussian(200, 2 * i + 1)) for i in range(30)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))
