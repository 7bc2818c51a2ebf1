"""Deciding whether a variant's metric really changed against the baseline, given run-to-run noise.

Load tests are noisy: one run's p95 is not a sample. So a change is called only when it is both larger than
the threshold (in percent of the baseline's median) and larger than the noise the runs themselves show:

- 4 or more runs on each side: the two-sided Mann-Whitney U test at alpha 0.05. It compares ranks, so one
  wild run (a GC pause, a noisy neighbour) cannot carry the verdict, and it assumes no distribution, which
  latency percentiles do not follow. With 4 runs a side its smallest p-value is 0.029, so it can decide.
- fewer runs on either side: too few for a test. The change counts only if the runs do not overlap at all
  (every run of the variant lies beyond every run of the baseline). With one run each this is the plain
  threshold.

Which way is good comes from `experiments.k6summary.direction` (k6's own metrics, the report's globs, the
metric's words). Where nothing says, a real change is `changed`: neither better nor worse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from statistics import median
from typing import Literal

from experiments.k6summary import HIGHER

Verdict = Literal["better", "worse", "changed", "no_change", "not_enough_data"]
Method = Literal["mann_whitney_u", "no_overlap", "none"]

ALPHA = 0.05
MIN_RUNS_FOR_TEST = 4


@dataclass(frozen=True)
class Comparison:
    change_pct: float | None
    verdict: Verdict
    method: Method
    p_value: float | None = None


def compare_runs(
    way: str | None, baseline: Sequence[float], variant: Sequence[float], threshold_pct: float
) -> Comparison:
    """The verdict on `variant` against `baseline` (each: one metric's values over recent runs).

    `way` is the metric's direction (HIGHER, LOWER, or None when unknown).
    """
    if not baseline or not variant:
        return Comparison(None, "not_enough_data", "none")
    change = percent_change(median(baseline), median(variant))
    if abs(change) < threshold_pct:
        return Comparison(_finite(change), "no_change", "none")

    if len(baseline) >= MIN_RUNS_FOR_TEST and len(variant) >= MIN_RUNS_FOR_TEST:
        p_value = mann_whitney_u_p_value(baseline, variant)
        method: Method = "mann_whitney_u"
        beyond_noise = p_value < ALPHA
    else:
        p_value = None
        method = "no_overlap"
        beyond_noise = min(variant) > max(baseline) if change > 0 else max(variant) < min(baseline)
    if not beyond_noise:
        return Comparison(_finite(change), "no_change", method, p_value)
    return Comparison(_finite(change), judge(way, change), method, p_value)


def judge(way: str | None, change: float) -> Literal["better", "worse", "changed"]:
    """Which way a real change went for a metric of direction `way` (HIGHER, LOWER, None = unknown).

    The one rule for both verdicts: a variant against the baseline, and a change point in a series over time.
    """
    if way is None:
        return "changed"
    return "better" if (change > 0) == (way == HIGHER) else "worse"


def percent_change(base: float, other: float) -> float:
    """(other - base) in percent of base; infinite when base is 0 and other is not."""
    if base == 0:
        return 0.0 if other == 0 else math.copysign(math.inf, other)
    return (other - base) / abs(base) * 100


def mann_whitney_u_p_value(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test: exact without ties, normal approximation with them."""
    n1, n2 = len(first), len(second)
    ranks = _ranks([*first, *second])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    u = min(u1, n1 * n2 - u1)
    if len(set(first) | set(second)) == n1 + n2 and n1 + n2 <= 40:
        return min(1.0, 2 * _exact_cdf(int(u), n1, n2))
    return _normal_p_value(u, n1, n2, [*first, *second])


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _exact_cdf(u: int, n1: int, n2: int) -> float:
    """P(U <= u) under the null hypothesis, counting rank arrangements."""
    total = math.comb(n1 + n2, n1)
    return sum(_arrangements(k, n1, n2) for k in range(u + 1)) / total


@cache
def _arrangements(u: int, n1: int, n2: int) -> int:
    """Number of orderings of n1 + n2 distinct values in which U equals u."""
    if u < 0 or u > n1 * n2:
        return 0
    if n1 == 0 or n2 == 0:
        return 1 if u == 0 else 0
    return _arrangements(u - n2, n1 - 1, n2) + _arrangements(u, n1, n2 - 1)


def _normal_p_value(u: float, n1: int, n2: int, pooled: Sequence[float]) -> float:
    n = n1 + n2
    ties = sum(count**3 - count for count in (pooled.count(v) for v in set(pooled)))
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(max(z, 0) / math.sqrt(2)))


def _finite(change: float) -> float | None:
    return round(change, 2) if math.isfinite(change) else None
