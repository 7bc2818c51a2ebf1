"""The k6 → key mapping on the odd shapes real k6 files have: old versions, missing stats, no HTTP, tags."""

from __future__ import annotations

from typing import Any

import pytest

from experiments.k6summary import (
    HEADLINE_SOURCE,
    HIGHER,
    LOWER,
    direction,
    metric_key,
    parse_key,
    read_summary,
    select_metrics,
    split_series,
)
from support import HEADLINE_FIGURES


def keys_of(doc: dict[str, Any], **choice: Any) -> dict[str, float]:
    return select_metrics(read_summary(doc), **choice)


def test_k6_0_29_checks_take_their_counts_not_the_value_k6_wrote() -> None:
    doc = {"metrics": {"checks": {"passes": 29, "fails": 0, "value": 0}, "http_req_failed": {"passes": 1, "fails": 3}}}
    assert keys_of(doc) == {"error_rate": 0.25, "checks_pass_rate": 1.0}


def test_a_summary_without_p95_keeps_every_stat_it_has() -> None:
    trend = {"avg": 3.0, "min": 1.0, "med": 2.0, "max": 9.0, "p(99)": 8.0, "p(99.9)": 8.9, "count": 40}
    assert keys_of({"metrics": {"http_req_duration": trend}}) == {
        "p50_ms": 2.0,
        "p99_ms": 8.0,
        "avg_ms": 3.0,
        "min_ms": 1.0,
        "max_ms": 9.0,
        "http_req_duration:p(99.9)": 8.9,
        "http_req_duration:count": 40,
    }


def test_a_grpc_only_summary_is_reported_without_inventing_http_keys() -> None:
    doc = {
        "metrics": {
            "grpc_req_duration": {"avg": 4.0, "min": 1.0, "med": 3.5, "max": 20.0, "p(90)": 7.0, "p(95)": 9.5},
            "iterations": {"count": 120, "rate": 4.0},
            "checks": {"passes": 120, "fails": 0, "value": 1},
        }
    }
    assert keys_of(doc) == {
        "checks_pass_rate": 1.0,
        "grpc_req_duration:med": 3.5,
        "grpc_req_duration:p(90)": 7.0,
        "grpc_req_duration:p(95)": 9.5,
        "grpc_req_duration:avg": 4.0,
        "grpc_req_duration:min": 1.0,
        "grpc_req_duration:max": 20.0,
        "iterations:count": 120,
        "iterations:rate": 4.0,
    }


def test_summary_export_and_handle_summary_of_one_run_give_the_same_keys_and_values() -> None:
    export = {
        "metrics": {
            'http_req_duration{ name: "GET /x" }': {
                "med": 2.0,
                "p(50)": 2.0,
                "p(95)": 5.0,
                "thresholds": {"p(95)<9": False},
            },
            "cache_hit_rate": {"passes": 3, "fails": 1, "value": 0.75},
            "queue_depth": {"value": 4, "min": 1, "max": 9},
            "bytes_saved": {"count": 10, "rate": 2.5},
        }
    }
    handle = {
        "metrics": {
            "http_req_duration{name:GET /x}": {
                "type": "trend",
                "values": {"med": 2.0, "p(50)": 2.0, "p(95)": 5.0},
                "thresholds": {"p(95)<9": {"ok": True}},
            },
            "cache_hit_rate": {"type": "rate", "values": {"rate": 0.75, "passes": 3, "fails": 1}},
            "queue_depth": {"type": "gauge", "values": {"value": 4, "min": 1, "max": 9}},
            "bytes_saved": {"type": "counter", "values": {"count": 10, "rate": 2.5}},
        }
    }
    assert (
        keys_of(export)
        == keys_of(handle)
        == {
            "bytes_saved:count": 10,
            "bytes_saved:rate": 2.5,
            "cache_hit_rate:rate": 0.75,
            "http_req_duration{name:GET /x}:med": 2.0,
            "http_req_duration{name:GET /x}:p(95)": 5.0,
            "queue_depth:value": 4,
            "queue_depth:min": 1,
            "queue_depth:max": 9,
        }
    )
    assert (
        read_summary(export).thresholds()
        == read_summary(handle).thresholds()
        == (
            ["http_req_duration{name:GET /x}: p(95)<9"],
            [],
        )
    )


def test_values_beyond_the_column_are_still_figures_of_the_run() -> None:
    doc = {"metrics": {"http_reqs": {"count": 2_200_000, "rate": 7333.3}, "iteration_duration": {"max": 1_020_000.5}}}
    assert keys_of(doc) == {"requests_count": 2_200_000, "rps": 7333.3, "iteration_duration:max": 1_020_000.5}


def test_the_default_leaves_out_the_timing_breakdown_unless_asked_or_thresholded() -> None:
    doc = {
        "metrics": {
            "http_req_waiting": {"med": 1.0},
            "http_req_blocked": {"med": 0.1, "thresholds": {"p(95)<1": False}},
            "vus": {"value": 2, "min": 1, "max": 2},
        }
    }
    assert keys_of(doc) == {"http_req_blocked:med": 0.1}
    assert keys_of(doc, include=["http_req_waiting"]) == {"http_req_blocked:med": 0.1, "http_req_waiting:med": 1.0}
    assert set(keys_of(doc, include=["*"], exclude=["*:m*"])) == {"vus:value"}


@pytest.mark.parametrize(
    ("metric", "tags", "stat"),
    [
        ("http_req_duration", (), "p(95)"),
        ("http_req_duration", (("name", "GET /products/:id"),), "p(95)"),
        ("http_req_duration", (("expected_response", "true"), ("scenario", "checkout")), "p(99.9)"),
        ("http_req_failed", (("status", ">=500"),), "rate"),
        ("odd", (("k,1", "a,b%c}:d"), ("tab", "x\ty")), "count"),
        ("http_reqs", (), "count"),
    ],
)
def test_keys_are_reversible(metric: str, tags: tuple[tuple[str, str], ...], stat: str) -> None:
    key = metric_key(metric, tags, stat)
    assert parse_key(key) == (metric, tags, stat)
    assert not any(ord(char) < 32 for char in key)


def test_submetric_names_are_read_the_way_k6_reads_them() -> None:
    assert split_series("http_req_duration{ scenario: \"b\", name:'GET /x' }") == (
        "http_req_duration",
        (("name", "GET /x"), ("scenario", "b")),
    )


@pytest.mark.parametrize(
    ("key", "way"),
    [
        ("p95_ms", LOWER),
        ("rps", HIGHER),
        ("error_rate", LOWER),
        ("checks_pass_rate", HIGHER),
        ("http_req_duration{name:GET /x}:p(95)", LOWER),
        ("http_req_failed{status:>=500}:rate", LOWER),
        ("iterations:rate", HIGHER),
        ("browser_web_vital_lcp:p(75)", LOWER),
        ("cache_hit_rate:rate", HIGHER),
        ("booking_success_rate:rate", HIGHER),
        ("translation_duration_ms:p(95)", LOWER),
        ("rate_limited_responses:count", None),
        ("http_req_duration:count", None),
        ("vus_max:max", None),
        ("cache_hit_rate", HIGHER),
        ("legacy_latency", LOWER),
    ],
)
def test_direction_of_k6_and_custom_metrics(key: str, way: str | None) -> None:
    assert direction(key) == way


def test_the_reports_own_globs_decide_before_any_rule() -> None:
    assert direction("rate_limited_responses:count", lower=["rate_limited_*"]) == LOWER
    assert direction("with_cache_duration:p(95)", higher=["with_cache_duration"]) == HIGHER


def test_the_tests_table_of_headline_figures_equals_the_mapping() -> None:
    """tests/support.HEADLINE_FIGURES states the README's contract; the mapping must say the same."""
    assert HEADLINE_SOURCE == HEADLINE_FIGURES
