"""Bootstrap confidence intervals for the report: 95%, percentile method, examples resampled within each eval set.

Every number in the report is a function of per-example scores grouped by eval set: a set's mean SC or PQ,
O = √(SC·PQ) of those means, a split's Average (the mean over its sets), the paired difference of two models on the
same examples, the drop of a context score when the context is removed. One resample draws n examples with
replacement from each set independently (one draw serves both sides of a difference, so differences are paired) and
recomputes the number from scratch (O from the resampled means). `scipy.stats.bootstrap` resamples example *indices*
with a fixed seed, so a report is reproducible. The percentile method, not BCa: scores take three values and are
often all equal within a set, where BCa's acceleration is undefined.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import bootstrap

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 0
METRICS = ("SC", "PQ", "O")
METHOD = f"{CONFIDENCE:.0%} percentile bootstrap, {RESAMPLES} resamples of the examples within each set, seed {SEED}"

Interval = tuple[float, float]
Scores = tuple[Sequence[float], Sequence[float]]  # (SC per example, PQ per example) of one eval set
NO_INTERVAL: Interval = (math.nan, math.nan)


def interval(statistic: Callable[[list[np.ndarray]], np.ndarray], sizes: Sequence[int]) -> Interval:
    """The interval of `statistic(indices)`, where indices[g] holds example indices (..., sizes[g]) drawn from set g.

    `statistic` must reduce the last axis (it is called on the original indices and on batches of resamples). With
    fewer than 2 examples in some set nothing can be resampled: NaN.
    """
    if not sizes or min(sizes) < 2:
        return NO_INTERVAL
    result = bootstrap(
        tuple(np.arange(n) for n in sizes),
        lambda *indices, axis=-1: statistic(list(indices)),
        n_resamples=RESAMPLES,
        vectorized=True,
        paired=False,  # each set is resampled on its own: sets are independent samples
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def mean_interval(groups: Sequence[Sequence[float]]) -> Interval:
    """The interval of the mean over groups of each group's mean (one group: that group's mean)."""
    arrays = [np.asarray(g, dtype=float) for g in groups]
    if any(np.isnan(a).any() for a in arrays):
        return NO_INTERVAL

    def statistic(indices: list[np.ndarray]) -> np.ndarray:
        return np.mean([a[i].mean(-1) for a, i in zip(arrays, indices)], axis=0)

    return interval(statistic, [len(a) for a in arrays])


def _table4(sets: list[tuple[np.ndarray, np.ndarray]], indices: list[np.ndarray], metric: str) -> np.ndarray:
    """SC, PQ or O averaged over sets, each set's O = √(SC·PQ) of its resampled means."""
    values = []
    for (sc, pq), index in zip(sets, indices):
        sc_mean, pq_mean = sc[index].mean(-1), pq[index].mean(-1)
        values.append({"SC": sc_mean, "PQ": pq_mean, "O": np.sqrt(sc_mean * pq_mean)}[metric])
    return np.mean(values, axis=0)


def table4_intervals(sets: Sequence[Scores], versus: Sequence[Scores] | None = None) -> dict[str, Interval]:
    """Intervals of SC, PQ and O averaged over `sets` (one set: that set's numbers).

    With `versus` (another model's scores on the same examples, set by set), the intervals are of the paired
    difference `sets` − `versus`: one resample draws the same examples for both. A PQ that is undefined (NaN) anywhere
    leaves PQ and O without an interval.
    """
    a = [(np.asarray(sc, dtype=float), np.asarray(pq, dtype=float)) for sc, pq in sets]
    b = None if versus is None else [(np.asarray(sc, dtype=float), np.asarray(pq, dtype=float)) for sc, pq in versus]
    if b is not None and [len(sc) for sc, _ in a] != [len(sc) for sc, _ in b]:
        raise ValueError(
            f"a paired difference needs the same examples on both sides; set sizes differ: "
            f"{[len(sc) for sc, _ in a]} vs {[len(sc) for sc, _ in b]}"
        )
    pq_defined = not any(np.isnan(pq).any() for _, pq in a + (b or []))
    sizes = [len(sc) for sc, _ in a]
    intervals = {}
    for metric in METRICS:
        if metric != "SC" and not pq_defined:
            intervals[metric] = NO_INTERVAL
        elif b is None:
            intervals[metric] = interval(lambda idx, m=metric: _table4(a, idx, m), sizes)
        else:
            intervals[metric] = interval(lambda idx, m=metric: _table4(a, idx, m) - _table4(b, idx, m), sizes)
    return intervals


def separation(difference: float, bounds: Interval) -> int:
    """+1 when the interval of a difference lies above 0, -1 below, 0 when it contains 0 or is undefined."""
    low, high = bounds
    if math.isnan(difference) or math.isnan(low) or math.isnan(high):
        return 0
    return 1 if low > 0 else -1 if high < 0 else 0
