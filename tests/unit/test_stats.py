"""The verdicts, without a database: every branch of `experiments.stats`, p-values checked against SciPy."""

from __future__ import annotations

import math

import pytest
from scipy.stats import mannwhitneyu

from experiments.k6summary import HIGHER, LOWER
from experiments.stats import compare_runs, mann_whitney_u_p_value, percent_change

BASE = [100.0, 101.0, 99.0, 102.0, 98.0]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([1, 2, 3, 4], [5, 6, 7, 8]),  # no overlap: the smallest p-value with 4 runs a side
        ([1, 3, 5, 7], [2, 4, 6, 8]),
        ([10.5, 11.2, 9.8, 10.1, 10.9], [12.0, 11.5, 12.5, 13.1, 9.9]),
        ([5, 1, 9, 3, 7, 2], [4, 8, 6, 10]),
        (list(range(20)), [x + 7.5 for x in range(20)]),  # 40 values: still exact
    ],
)
def test_exact_p_values_equal_scipys(first: list[float], second: list[float]) -> None:
    expected = mannwhitneyu(first, second, alternative="two-sided", method="exact").pvalue
    assert mann_whitney_u_p_value(first, second) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([1, 2, 2, 3], [2, 3, 3, 4]),  # ties: the normal approximation with tie and continuity correction
        ([5, 5, 5, 6, 7], [6, 7, 7, 8, 8]),
        (list(range(25)), [x + 3 for x in range(25)]),  # over 40 values, no ties: normal approximation
    ],
)
def test_approximate_p_values_equal_scipys(first: list[float], second: list[float]) -> None:
    expected = mannwhitneyu(first, second, alternative="two-sided", method="asymptotic", use_continuity=True).pvalue
    assert mann_whitney_u_p_value(first, second) == pytest.approx(expected, rel=1e-9)


def test_identical_samples_have_p_value_one() -> None:
    assert mann_whitney_u_p_value([3, 3, 3, 3], [3, 3, 3, 3]) == 1.0


@pytest.mark.parametrize(
    ("base", "other", "change"),
    [(100, 125, 25.0), (100, 75, -25.0), (0, 0, 0.0), (0, 5, math.inf), (-10, -5, 50.0)],
)
def test_percent_change(base: float, other: float, change: float) -> None:
    assert percent_change(base, other) == change


def test_no_runs_on_a_side_is_not_enough_data() -> None:
    assert compare_runs(LOWER, [], [1.0], 5).verdict == "not_enough_data"
    assert compare_runs(LOWER, [1.0], [], 5).verdict == "not_enough_data"


def test_a_change_below_the_threshold_is_no_change_without_a_test() -> None:
    result = compare_runs(LOWER, BASE, [x * 1.03 for x in BASE], 5)
    assert (result.verdict, result.method, result.p_value) == ("no_change", "none", None)


@pytest.mark.parametrize(("way", "verdict"), [(LOWER, "worse"), (HIGHER, "better"), (None, "changed")])
def test_four_runs_a_side_use_mann_whitney_u_and_the_direction(way: str | None, verdict: str) -> None:
    result = compare_runs(way, BASE, [x * 1.3 for x in BASE], 5)
    assert (result.verdict, result.method, result.change_pct) == (verdict, "mann_whitney_u", 30.0)
    assert result.p_value == pytest.approx(mannwhitneyu(BASE, [x * 1.3 for x in BASE], method="exact").pvalue)


def test_a_large_change_within_the_noise_is_no_change() -> None:
    noisy = [100, 130, 80, 120, 90]
    result = compare_runs(LOWER, noisy, [125, 85, 135, 95, 118], 5)
    assert (result.verdict, result.method) == ("no_change", "mann_whitney_u")
    assert result.p_value > 0.05


@pytest.mark.parametrize(
    ("variant", "verdict"),
    [([112.0], "worse"), ([88.0], "better"), ([120.0, 99.0], "no_change"), ([112.0, 115.0], "worse")],
)
def test_fewer_runs_need_no_overlap(variant: list[float], verdict: str) -> None:
    result = compare_runs(LOWER, [100.0, 101.0], variant, 5)
    assert (result.verdict, result.method) == (verdict, "no_overlap")


def test_a_baseline_of_zero_has_no_finite_change() -> None:
    result = compare_runs(LOWER, [0.0], [1.0], 5)
    assert (result.verdict, result.change_pct) == ("worse", None)
