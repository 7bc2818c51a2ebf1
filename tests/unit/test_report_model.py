"""The report's field rules, without I/O: what is accepted, what is refused and which field is named."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from experiments.models import ExperimentReport

VALID = {"name": "lru_cache", "variant": "baseline", "metricsSummary": {"p50_ms": 120, "rps": 20.5}}


def report(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def rejected_fields(body: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        ExperimentReport.model_validate(body)
    return {".".join(str(p) for p in error["loc"] if p != "[key]") for error in caught.value.errors()}


def test_variant_is_split_from_the_name_at_its_last_underscore() -> None:
    parsed = ExperimentReport.model_validate({"name": "lru_cache_baseline", "metricsSummary": {"p50_ms": 1}})
    assert (parsed.name, parsed.variant) == ("lru_cache", "baseline")


def test_explicit_variant_keeps_the_name_whole() -> None:
    parsed = ExperimentReport.model_validate(report(name="lru_cache_baseline", variant="cached"))
    assert (parsed.name, parsed.variant) == ("lru_cache_baseline", "cached")


@pytest.mark.parametrize("name", ["lru", "lru_", "_baseline", " _x"])
def test_name_without_a_variant_suffix_needs_a_variant(name: str) -> None:
    # " _x" starts with whitespace, which no name may (experiments.names); the others need a variant.
    expected = {"name"} if name != name.strip() else {"variant"}
    assert rejected_fields({"name": name, "metricsSummary": {"p50_ms": 1}}) == expected


def test_values_are_kept_exactly_to_four_decimals() -> None:
    parsed = ExperimentReport.model_validate(report(metricsSummary={"a": 140.2, "b": 0.00005, "c": 7, "d": 0}))
    assert parsed.rows() == {
        "a": Decimal("140.2000"),
        "b": Decimal("0.0001"),
        "c": Decimal("7.0000"),
        "d": Decimal("0.0000"),
    }


def test_largest_storable_value_is_accepted() -> None:
    parsed = ExperimentReport.model_validate(
        report(metricsSummary={"p95_ms": 999999.9999, "gauge:value": -999999.9999})
    )
    assert parsed.rows() == {"p95_ms": Decimal("999999.9999"), "gauge:value": Decimal("-999999.9999")}
    assert parsed.not_stored() == {}


@pytest.mark.parametrize("value", [1000000, 999999.99995, 1e300, -1000000])
def test_values_past_decimal_10_4_are_kept_aside_exactly(value: Any) -> None:
    parsed = ExperimentReport.model_validate(report(metricsSummary={"p50_ms": 1, "requests_count": value}))
    assert parsed.rows() == {"p50_ms": Decimal("1.0000")}
    assert parsed.not_stored() == {"requests_count": float(value)}


def test_a_report_with_no_value_that_fits_a_row_is_refused() -> None:
    assert rejected_fields(report(metricsSummary={"requests_count": 2_200_000})) == {"metricsSummary"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400, "12", True, False, None, [1]])
def test_values_must_be_finite_numbers(value: Any) -> None:
    assert rejected_fields(report(metricsSummary={"p95_ms": value})) == {"metricsSummary.p95_ms"}


@pytest.mark.parametrize("key", ["", " p95", "p95 ", "a" * 513, "tab\there", "nl\n", "del\x7f", "c1\x85", "nul\x00"])
def test_metric_keys_refuse_control_characters_blanks_and_overlong(key: str) -> None:
    assert rejected_fields(report(metricsSummary={key: 1})) == {f"metricsSummary.{key}"}


@pytest.mark.parametrize(
    "key",
    ["p95_ms", "cache_hit_rate", "http_req_duration{name:GET /products/:id}:p(99.9)", "é:rate", "a" * 512, "P95"],
)
def test_metric_keys_of_the_convention_are_accepted(key: str) -> None:
    ExperimentReport.model_validate(report(metricsSummary={key: 1}))


@pytest.mark.parametrize("count", [0, 1001])
def test_one_to_a_thousand_metrics(count: int) -> None:
    assert rejected_fields(report(metricsSummary={f"m{i}": i for i in range(count)})) == {"metricsSummary"}


def test_a_thousand_metrics_are_accepted() -> None:
    parsed = ExperimentReport.model_validate(report(metricsSummary={f"m{i}": i for i in range(1000)}))
    assert len(parsed.metricsSummary) == 1000


@pytest.mark.parametrize(
    "directions", [[], {"up": ["x"]}, {"higher": "x"}, {"higher": [1]}, {"lower": [""]}, {"higher": ["x"] * 101}]
)
def test_metadata_directions_must_be_lists_of_globs(directions: Any) -> None:
    assert rejected_fields(report(metadata={"directions": directions})) == {"metadata"}


@pytest.mark.parametrize("date", ["yesterday", "2025-13-01T00:00:00Z", "2025-02-30", "", 1762000800, ["2025-11-01"]])
def test_bad_dates_are_refused(date: Any) -> None:
    assert rejected_fields(report(date=date)) == {"date"}


def test_dates_become_utc_without_zone_to_the_millisecond() -> None:
    parsed = ExperimentReport.model_validate(report(date="2025-11-01T14:00:00.123456+02:00"))
    assert parsed.date == datetime(2025, 11, 1, 12, 0, 0, 123000)


def test_unknown_top_level_fields_are_refused() -> None:
    assert rejected_fields(report(surprise=1, metrics={})) == {"surprise", "metrics"}


@pytest.mark.parametrize("field", ["name", "variant", "notes", "rawFile"])
@pytest.mark.parametrize("text", ["bad\x00byte", "lone \ud800 surrogate"])
def test_text_postgres_cannot_store_is_refused(field: str, text: str) -> None:
    assert rejected_fields(report(**{field: text})) == {field}


@pytest.mark.parametrize(
    "metadata",
    [
        {"a": {"b": ["\x00"]}},
        {"k\x00": 1},
        {"rawFile": "x"},
        {"ingest": {}},
        {"notStored": {}},
        {"deep": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]},
        [],
    ],
)
def test_metadata_must_be_storable_json_object(metadata: Any) -> None:
    assert rejected_fields(report(metadata=metadata)) == {"metadata"}


def test_unicode_and_sql_looking_text_is_accepted_verbatim() -> None:
    name = "キャッシュ'; DROP TABLE experiments;--"
    parsed = ExperimentReport.model_validate(report(name=name, variant="🚀", notes='naïve \\ "quoted"'))
    assert (parsed.name, parsed.variant, parsed.notes) == (name, "🚀", 'naïve \\ "quoted"')


@pytest.mark.parametrize("field", ["name", "variant"])
def test_names_must_not_be_blank_or_too_long(field: str) -> None:
    assert rejected_fields(report(**{field: "   "})) == {field}
    assert rejected_fields(report(**{field: "x" * 201})) == {field}
