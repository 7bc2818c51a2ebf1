"""Bad input at scale: generated reports, valid and broken, posted through the handler against a real PostgreSQL.

The promise under test: every request gets a 201 or a 4xx whose body names the problem (`error`, `message`,
and for a 422 `details` naming each field), never a 5xx, and a rejected request changes no row. The broken
reports are a valid one with one thing wrong: a type, a bound, a metric name, unicode the database cannot
store (lone surrogates, NUL), nesting, size (up to and past 256 KiB), an unknown field, a raw JSON literal
that is not JSON (NaN, Infinity) or a number too long to convert, a bad date, key or Content-Type.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.names import experiment_label

pytestmark = pytest.mark.integration

MAX_BODY_BYTES = 256 * 1024
FIELDS = frozenset({"name", "variant", "date", "notes", "metricsSummary", "rawFile", "metadata"})
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Case:
    """One request: its raw body, extra headers, and the field that was broken (a 422 must name it)."""

    body: str
    broken: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


# --- valid reports ------------------------------------------------------------------------------------------

# Text PostgreSQL can store: any Unicode but lone surrogates (category Cs) and NUL.
storable = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")


def is_label(text: str) -> bool:
    """Whether `text` is a valid name or variant (experiments.names)."""
    try:
        return experiment_label(text) is not None
    except ValueError:
        return False


names = st.text(storable, min_size=1, max_size=60).filter(is_label)
metric_names = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
metric_values = st.one_of(
    st.integers(-999_999, 999_999),
    st.decimals(-Decimal("999999.9999"), Decimal("999999.9999"), places=4).map(float),
    st.just(999999.9999),
)
offsets = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))])
dates = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(storable, max_size=20),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(storable, max_size=10), inner, max_size=4),
    max_leaves=12,
)
metadata_keys = st.text(storable, max_size=12).filter(lambda key: key not in {"rawFile", "ingest"})


@st.composite
def valid_reports(draw: st.DrawFn) -> dict[str, Any]:
    """A report every rule accepts (the variant given, or split from a name ending in `_<variant>`)."""
    metrics = draw(st.dictionaries(metric_names, metric_values, min_size=1, max_size=50))
    report: dict[str, Any] = {"metricsSummary": metrics}
    if draw(st.booleans()):
        report |= {"name": draw(names), "variant": draw(names)}
    else:
        head = draw(st.from_regex(r"[a-z][a-z_]{0,19}", fullmatch=True))
        report["name"] = head + "_" + draw(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True))
    if draw(st.booleans()):
        report["date"] = draw(dates).isoformat()
    if draw(st.booleans()):
        report["notes"] = draw(st.text(storable, max_size=200))
    if draw(st.booleans()):
        report["rawFile"] = draw(st.text(storable, max_size=100))
    if draw(st.booleans()):
        report["metadata"] = draw(st.dictionaries(metadata_keys, json_values, max_size=6))
    return report


def encode(report: dict[str, Any], draw: st.DrawFn) -> str:
    """JSON text, with non-ASCII characters escaped or as they are."""
    return json.dumps(report, ensure_ascii=draw(st.booleans()))


# --- broken reports: a valid one with one thing wrong -------------------------------------------------------

wrong_types = st.sampled_from([None, True, 0, 1.5, "text", [], [1, "a"], {}, {"a": 1}])
unstorable = st.sampled_from(["\x00", "\ud800", "\udfff", "\udc80x"])  # NUL and lone surrogates
unstorable_text = st.tuples(st.text(storable, max_size=10), unstorable, st.text(storable, max_size=10)).map("".join)
# Values beyond DECIMAL(10,4) are not bad: they are kept in metadata (tests/integration/test_report_handler.py).
bad_metric_values = st.one_of(
    st.integers(min_value=2**1024, max_value=2**1100),  # no float can hold it
    st.sampled_from(["1", "", True, False, None, [1], {"v": 1}]),
)
control_characters = st.characters(min_codepoint=0, max_codepoint=0x9F).filter(lambda c: c < " " or c >= "\x7f")
bad_metric_names = st.one_of(
    st.just(""),
    st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).map(lambda key: f" {key}"),
    st.tuples(st.text(storable, max_size=5), control_characters, st.text(storable, max_size=5)).map("".join),
    st.from_regex(r"[a-z][a-z0-9_]{512,530}", fullmatch=True),
    unstorable_text,
)
odd_dates = ["2025-02-30T00:00:00Z", "2025-13-01", "24:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
             "2025-01-01T00:00:00+25:00", "1e10", ""]  # fmt: skip
bad_dates = st.text(storable, max_size=30) | st.sampled_from(odd_dates)
bad_keys = (
    st.just("")
    | st.just("k" * 256)
    | st.text(storable, min_size=1, max_size=20).filter(lambda key: not key.isascii() or " " in key)
)
not_json = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 4301, "1" + "0" * 5000]
content_types = ["text/plain", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data",
                 "multipart/form-data; boundary=x", "", "application/json; charset=utf-8"]  # fmt: skip
BREAKAGES = ["type", "value", "metric name", "metric count", "unicode", "nesting", "size", "unknown field",
             "literal", "date", "text length", "idempotency key", "content type"]  # fmt: skip


def with_raw(report: dict[str, Any], where: str, placeholder: Any, raw: str, draw: st.DrawFn) -> str:
    """The report's JSON with `raw` (text that is not a JSON value Python would produce) put at `where`."""
    return encode({**report, where: placeholder}, draw).replace('"PLACEHOLDER"', raw)


@st.composite
def broken_reports(draw: st.DrawFn) -> Case:
    report = draw(valid_reports())
    report.setdefault("variant", "v")
    metrics = report["metricsSummary"]
    breakage = draw(st.sampled_from(BREAKAGES))

    if breakage == "type":
        name = draw(st.sampled_from(sorted(FIELDS)))
        return Case(encode({**report, name: draw(wrong_types)}, draw), name)
    if breakage == "value":
        metric = draw(st.sampled_from(sorted(metrics)))
        metrics[metric] = draw(bad_metric_values)
        return Case(encode(report, draw), f"metricsSummary.{metric}")
    if breakage == "metric name":
        metrics[draw(bad_metric_names)] = 1
        return Case(encode(report, draw), "metricsSummary")
    if breakage == "metric count":
        count = draw(st.sampled_from([0, 1001, 1002]))
        return Case(encode({**report, "metricsSummary": {f"m{i}": i for i in range(count)}}, draw), "metricsSummary")
    if breakage == "unicode":
        where = draw(st.sampled_from(["name", "variant", "notes", "rawFile", "date", "metadata", "metadata key"]))
        text = draw(unstorable_text)
        if where.startswith("metadata"):
            report["metadata"] = {"k": {text: 1}} if where == "metadata key" else {"k": {"deeper": [text]}}
            where = "metadata"
        else:
            report[where] = text
        return Case(encode(report, draw), where)
    if breakage == "nesting":
        depth = draw(st.integers(17, 3000))
        opening, closing = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        nested = opening * depth + "1" + closing * depth
        return Case(with_raw(report, "metadata", {"deep": "PLACEHOLDER"}, nested, draw), "metadata")
    if breakage == "size":
        pad = draw(st.sampled_from(["x", "é", "🔥"]))  # 1, 2 and 4 bytes: the limit is in bytes, not characters
        target = draw(st.integers(MAX_BODY_BYTES - 8, MAX_BODY_BYTES + 8) | st.integers(100_000, 400_000))
        room = target - len(json.dumps({**report, "metadata": {"pad": ""}}, ensure_ascii=False).encode())
        padded = {**report, "metadata": {"pad": pad * max(0, room // len(pad.encode()))}}
        return Case(json.dumps(padded, ensure_ascii=False), None)
    if breakage == "unknown field":
        name = draw(st.text(storable, min_size=1, max_size=20).filter(lambda key: key not in FIELDS))
        return Case(encode({**report, name: draw(json_leaves)}, draw), name)
    if breakage == "literal":
        where = draw(st.sampled_from(["metricsSummary", "metadata"]))
        placeholder = {"p95_ms": "PLACEHOLDER"} if where == "metricsSummary" else {"x": ["PLACEHOLDER"]}
        return Case(with_raw(report, where, placeholder, draw(st.sampled_from(not_json)), draw), where)
    if breakage == "date":
        return Case(encode({**report, "date": draw(bad_dates)}, draw), "date")
    if breakage == "text length":
        where, limit = draw(st.sampled_from([("name", 200), ("variant", 100), ("notes", 10_000), ("rawFile", 1024)]))
        return Case(encode({**report, where: "a" * draw(st.integers(limit - 2, limit + 50))}, draw), where)
    if breakage == "idempotency key":
        return Case(encode(report, draw), "header Idempotency-Key", {"Idempotency-Key": draw(bad_keys)})
    return Case(encode(report, draw), None, {"Content-Type": draw(st.sampled_from(content_types))})


# --- the properties -----------------------------------------------------------------------------------------


def table_sizes(db: psycopg.Connection) -> tuple[int, int]:
    """Rows in experiments and in the idempotency records."""
    sizes = "SELECT (SELECT count(*) FROM experiments), (SELECT count(*) FROM ingest.idempotency_keys)"
    return db.execute(sizes).fetchone()


def assert_names_the_problem(answer: Any, case: Case) -> None:
    """A 4xx with a body of the error contract that says what is wrong (and, for a 422, where)."""
    assert 400 <= answer.status < 500, (answer.status, answer.body)
    assert isinstance(answer.body, dict), answer.body
    assert isinstance(answer.body.get("error"), str) and answer.body["error"], answer.body
    assert isinstance(answer.body.get("message"), str) and answer.body["message"], answer.body
    if answer.status == 422:
        details = answer.body.get("details")
        assert details, answer.body
        assert all(isinstance(d.get("field"), str) and d["field"] and d.get("reason") for d in details), details
        if case.broken is not None:
            assert any(d["field"].lower().startswith(case.broken.lower()) for d in details), (case.broken, details)


@settings(FUZZ, max_examples=100)
@given(report=valid_reports(), with_key=st.booleans(), ascii_only=st.booleans())
def test_generated_valid_reports_are_stored_with_one_row_per_metric(
    post, db, report: dict[str, Any], with_key: bool, ascii_only: bool
) -> None:
    before = table_sizes(db)
    headers = {"Idempotency-Key": f"fuzz-{uuid.uuid4()}"} if with_key else {}
    answer = post(raw_body=json.dumps(report, ensure_ascii=ascii_only), headers=headers)
    assert answer.status == 201, answer.body
    assert sorted(answer.body["ids"]) == sorted(report["metricsSummary"])
    assert table_sizes(db) == (before[0] + len(report["metricsSummary"]), before[1] + with_key)


@settings(FUZZ, max_examples=400)
@given(case=broken_reports(), with_key=st.booleans())
def test_broken_reports_get_a_4xx_naming_the_problem_and_change_nothing(post, db, case: Case, with_key: bool) -> None:
    before = table_sizes(db)
    headers = {"Idempotency-Key": f"fuzz-{uuid.uuid4()}"} if with_key else {}
    answer = post(raw_body=case.body, headers=headers | case.headers)

    assert answer.status < 500, answer.body
    if len(case.body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        assert (answer.status, answer.body["error"]) == (413, "payload_too_large")
    if answer.status == 201:  # the breakage happened to be harmless (e.g. notes set to null): stored whole
        assert table_sizes(db)[0] == before[0] + len(answer.body["ids"])
        return
    assert_names_the_problem(answer, case)
    assert table_sizes(db) == before
