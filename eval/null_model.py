"""What a perfect generator would score: metrics between independent Monte Carlo samples of the test size.

A generator as good as the Monte Carlo produces showers distributed like a Monte Carlo sample
with the same conditions. So the spread of a metric between two independent Monte Carlo samples
of the evaluation's sizes is the statistical allowance of that metric. The evaluator has two
such samples, halves A and B of the test split; since A and B are drawn alike, pooling them and
re-drawing two halves of the same sizes gives further pairs with the same joint distribution
(the permutation null), each showing the metric's value for a perfect generator. Their mean and
standard deviation make the verdict's thresholds (eval/verdict.py).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from eval.features import ShowerFeatures

LOG = logging.getLogger(__name__)

CompareFn = Callable[[ShowerFeatures, ShowerFeatures], dict[str, float]]


def resplit_replicas(
    reference: ShowerFeatures, independent: ShowerFeatures, compare: CompareFn, replicas: int, seed: int
) -> list[dict[str, float]]:
    """``compare`` on ``replicas`` random re-drawings of (reference, independent) from their union.

    Args:
        reference: Monte Carlo half A.
        independent: Monte Carlo half B.
        compare: ``compare(a, b) -> flat metrics`` (the evaluator's comparison without the
            classifiers, whose null is known analytically).
        replicas: Number of re-drawings.
        seed: Seed of the re-drawings (its own stream, independent of the A/B split).

    Returns:
        One flat metric dict per replica.
    """
    pooled = ShowerFeatures.concatenate([reference, independent])
    n_ref = reference.n_events
    rng = np.random.default_rng([seed, 0x6E756C6C])  # "null": a stream of its own
    out = []
    started = last_log = time.monotonic()
    for r in range(replicas):
        perm = rng.permutation(pooled.n_events)
        a = pooled.subset(np.sort(perm[:n_ref]))
        b = pooled.subset(np.sort(perm[n_ref:]))
        out.append(compare(a, b))
        now = time.monotonic()
        if now - last_log > 10 and r + 1 < replicas:
            last_log = now
            rate = (r + 1) / (now - started)
            LOG.info("noise-floor replicas: %d/%d, %.2f/s, ETA %.0f s", r + 1, replicas, rate, (replicas - r - 1) / rate)
    return out
