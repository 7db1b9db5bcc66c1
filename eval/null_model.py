"""What a perfect generator would score: metrics between independent Monte Carlo samples of the test size.

A generator as good as the Monte Carlo produces showers distributed like a Monte Carlo sample
with the same conditions. The evaluator gives the generator exactly the conditions (energy,
angle) of Monte Carlo half B and compares its showers with half A, so every evaluation carries
the same condition imbalance between A and B: the finite-sample difference of their energy and
angle distributions. It is not noise to average over but a fixed part of every comparison
(the FPD and KPD read the conditions as features; every binned 3DGAN check sees them through
its bins). The null must therefore hold the two condition sets fixed and re-draw only the
showers: the law of a metric between A and a fresh sample made for B's conditions.

The replicas get it from A and B alone, as a stratified permutation: the pooled events are cut
into strata of STRATUM_EVENTS events with nearly the same conditions (``condition_strata``, a
k-d tree on the ranks of the conditions), and a replica re-deals the events of each stratum
between the halves at random, keeping how many of them each half has. Each half thus keeps its
condition set up to the spread inside a stratum, while its showers are re-drawn. Measured at
2,000 events per side (docs/eval.md), the replicas' means and spreads come close to those of
fresh Monte Carlo pairs made for the fixed conditions of A and B (the spread of the skewed
cell_spectrum_sep_power excepted, which comes out too small); their mean and standard
deviation make the verdict's thresholds (eval/verdict.py).

Strata are small because the condition imbalance lives at fine scales too (larger strata
re-draw part of it: the KPD null mean falls from about 0.7 with 4 events a stratum to 0.41 with 64).
The price: a stratum's events are only re-dealt among themselves, so a replica varies a
linear statistic by (1 - 1 / STRATUM_EVENTS) of the true variance.

Re-drawing two halves from the whole union at random (the previous null) re-draws the condition
imbalance as well: at 2,000 events per side its KPD mean was 0.23 x1e3, while pairs with the
fixed conditions of A and B sit near 0.67, and independent Monte Carlo samples failed the KPD
check.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from eval.features import ShowerFeatures

LOG = logging.getLogger(__name__)

#: Events per stratum of the null's re-dealing (see the module docstring for the choice).
STRATUM_EVENTS = 4

CompareFn = Callable[[ShowerFeatures, ShowerFeatures], dict[str, float]]


def condition_matrix(features: ShowerFeatures) -> np.ndarray:
    """The conditions an event is generated for, one row per event: log10 E, the condition angle, theta.

    theta is the angle the 3DGAN checks bin on; it equals the condition angle unless the
    generator is conditioned on the measured angle, so both are kept.
    """
    return np.stack(
        [np.log10(np.asarray(features.energy, dtype=np.float64)),
         np.asarray(features.condition_angle, dtype=np.float64),
         np.asarray(features.theta, dtype=np.float64)],
        axis=1,
    )


def condition_strata(conditions: np.ndarray, stratum_events: int = STRATUM_EVENTS) -> np.ndarray:
    """Stratum of each event (n,): leaves of a k-d tree over the conditions (n, k), <= stratum_events each.

    Each column is replaced by its mid-ranks (scale-free: log-energy and radians weigh alike),
    then the set is halved recursively along the column with the widest rank range (at a whole
    number of strata), so a stratum holds events close in every condition.
    """
    points = np.asarray(conditions, dtype=np.float64).reshape(len(conditions), -1)
    # Mid-ranks: tied values (discrete angles, a fixed-angle sample) share one rank, so a tie
    # never separates events by their position in the arrays, i.e. by half.
    ranks = np.empty_like(points)
    for k in range(points.shape[1]):
        ordered = np.sort(points[:, k])
        ranks[:, k] = (np.searchsorted(ordered, points[:, k], "left") + np.searchsorted(ordered, points[:, k], "right")) / 2
    # A median that falls inside a run of ties must not cut it by array position (half A's
    # events first): ties are ordered by the other conditions, then by a fixed random key.
    tie_break = np.random.default_rng(0x7469).random(len(points))
    labels = np.empty(len(points), dtype=np.int64)
    stack = [np.arange(len(points))]
    leaf = 0
    while stack:
        idx = stack.pop()
        if len(idx) <= stratum_events:
            labels[idx] = leaf
            leaf += 1
            continue
        r = ranks[idx]
        axis = int(np.argmax(r.max(axis=0) - r.min(axis=0)))
        others = [r[:, k] for k in range(r.shape[1]) if k != axis]
        by_axis = idx[np.lexsort((tie_break[idx], *others, r[:, axis]))]
        # Cut at a whole number of strata, so that every stratum but one has stratum_events events.
        cut = stratum_events * (-(-len(idx) // stratum_events) // 2)
        stack.extend((by_axis[cut:], by_axis[:cut]))
    return labels


def stratified_redeal(in_a: np.ndarray, strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """New half-A membership (n,) bool: each stratum's events re-dealt at random, as many to A as before."""
    order = np.lexsort((rng.random(len(strata)), strata))
    stratum = strata[order]
    rank_in_stratum = np.arange(len(order)) - np.searchsorted(stratum, stratum, side="left")
    count_a = np.bincount(strata, weights=in_a.astype(np.float64), minlength=int(strata.max()) + 1).astype(np.int64)
    members = np.zeros(len(strata), dtype=bool)
    members[order] = rank_in_stratum < count_a[stratum]
    return members


def resplit_replicas(
    reference: ShowerFeatures, independent: ShowerFeatures, compare: CompareFn, replicas: int, seed: int
) -> list[dict[str, float]]:
    """``compare`` on ``replicas`` re-drawings of (reference, independent) that keep both condition sets.

    Args:
        reference: Monte Carlo half A.
        independent: Monte Carlo half B.
        compare: ``compare(a, b) -> flat metrics`` (the evaluator's comparison without the
            classifiers, whose null is known analytically).
        replicas: Number of re-drawings.
        seed: Seed of the re-drawings (its own stream, independent of the A/B split).

    Returns:
        One flat metric dict per replica. Each replica re-deals the events of every condition
        stratum (``condition_strata``) between the halves; the halves keep their sizes.
    """
    pooled = ShowerFeatures.concatenate([reference, independent])
    n_ref = reference.n_events
    in_a = np.arange(pooled.n_events) < n_ref
    strata = condition_strata(condition_matrix(pooled))
    rng = np.random.default_rng([seed, 0x6E756C6C])  # "null": a stream of its own
    out = []
    started = last_log = time.monotonic()
    for r in range(replicas):
        members = stratified_redeal(in_a, strata, rng)
        out.append(compare(pooled.subset(np.flatnonzero(members)), pooled.subset(np.flatnonzero(~members))))
        now = time.monotonic()
        if now - last_log > 10 and r + 1 < replicas:
            last_log = now
            rate = (r + 1) / (now - started)
            LOG.info("noise-floor replicas: %d/%d, %.2f/s, ETA %.0f s", r + 1, replicas, rate, (replicas - r - 1) / rate)
    return out
