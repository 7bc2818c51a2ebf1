"""POST /experiments/report through `lambda_handler`, against a real PostgreSQL: the contract of DESIGN.md."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from support import EVENTS_DIR, count_rows

pytestmark = pytest.mark.integration

REPORT = {
    "name": "lru_cache",
    "variant": "baseline",
    "date": "2025-11-01T12:00:00Z",
    "notes": "cold cache baseline",
    "metricsSummary": {"p50_ms": 120, "p95_ms": 350, "avg_ms": 140.2, "requests_count": 600, "rps": 20},
    "rawFile": "./results_baseline.json",
    "metadata": {"vus": 20, "duration": "30s", "productId": "123", "gitSha": "abc123"},
}


def rows(db) -> list[dict[str, Any]]:
    cursor = db.execute(
        'SELECT id, name, description, variant, metric, value, metadata, "createdAt" FROM experiments ORDER BY metric'
    )
    names = [column.name for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def event_file(name: str) -> dict[str, Any]:
    return json.loads((EVENTS_DIR / name).read_text())


# --- the events/ files --------------------------------------------------------------------------------------


def test_valid_event_stores_one_row_per_metric(invoke, db) -> None:
    event = event_file("report_201_valid.json")
    answer = invoke(event)

    assert answer.status == 201
    sent = json.loads(event["body"])
    assert answer.body["name"] == "lru_cache" and answer.body["variant"] == "baseline"
    assert answer.body["createdAt"] == "2025-11-01T12:00:00.000Z"
    stored = rows(db)
    assert {row["metric"]: row["value"] for row in stored} == {
        metric: Decimal(str(value)).quantize(Decimal("0.0001")) for metric, value in sent["metricsSummary"].items()
    }
    assert {row["metric"]: row["id"] for row in stored} == answer.body["ids"]
    for row in stored:
        assert (row["name"], row["variant"], row["description"]) == ("lru_cache", "baseline", "cold cache baseline")
        assert row["createdAt"].isoformat() == "2025-11-01T12:00:00"
        assert row["metadata"]["rawFile"] == "./results_baseline.json"
        assert row["metadata"]["gitSha"] == "abc123"
        assert row["metadata"]["ingest"]["idempotencyKey"] == event["headers"]["Idempotency-Key"]
        assert row["metadata"]["ingest"]["requestId"] == event["requestContext"]["requestId"]
        assert row["metadata"]["ingest"]["sourceIp"] == "203.0.113.10"


def test_event_without_variant_splits_the_name(invoke, db) -> None:
    answer = invoke(event_file("report_201_no_variant.json"))
    assert answer.status == 201
    assert {(row["name"], row["variant"]) for row in rows(db)} == {("lru_cache", "cached")}
    assert len(rows(db)) == len(answer.body["ids"]) == 5


def test_invalid_event_names_every_offending_field_and_writes_nothing(invoke, db) -> None:
    answer = invoke(event_file("report_422_invalid.json"))
    assert answer.status == 422
    assert answer.body["error"] == "validation_failed"
    fields = {detail["field"] for detail in answer.body["details"]}
    assert fields == {
        "variant",
        "date",
        "metricsSummary.p95_ms",
        "metricsSummary.rps",
        "metricsSummary. P50",
        "surprise",
    }
    assert count_rows(db) == 0


def test_replay_event_answers_200_with_the_same_body_and_writes_nothing(invoke, db) -> None:
    first = invoke(event_file("report_201_valid.json"))
    stored = count_rows(db)
    replay = invoke(event_file("report_200_replay.json"))

    assert replay.status == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.body == first.body
    assert json.dumps(replay.body) == json.dumps(first.body)  # same order of ids too
    assert count_rows(db) == stored


def test_key_reused_with_another_body_is_a_409_and_writes_nothing(invoke, db) -> None:
    invoke(event_file("report_201_valid.json"))
    stored = count_rows(db)
    answer = invoke(event_file("report_409_key_reused.json"))
    assert answer.status == 409
    assert answer.body["error"] == "idempotency_conflict"
    assert answer.body["details"][0]["field"] == "header Idempotency-Key"
    assert count_rows(db) == stored


# --- bounds, types and shapes -------------------------------------------------------------------------------


def test_largest_decimal_10_4_value_is_stored_exactly(post, db) -> None:
    answer = post({**REPORT, "metricsSummary": {"p95_ms": 999999.9999}})
    assert answer.status == 201
    assert rows(db)[0]["value"] == Decimal("999999.9999")


def test_value_past_decimal_10_4_is_kept_exactly_in_metadata_and_listed_in_the_answer(post, db) -> None:
    answer = post({**REPORT, "metricsSummary": {"p50_ms": 1, "requests_count": 2_200_000, "max_ms": 1020000.123456}})
    assert answer.status == 201
    assert set(answer.body["ids"]) == {"p50_ms"}
    assert [(item["metric"], item["value"]) for item in answer.body["notStored"]] == [
        ("requests_count", 2_200_000),
        ("max_ms", 1020000.123456),
    ]
    assert "999999.9999" in answer.body["notStored"][0]["reason"]
    [row] = rows(db)
    assert row["metadata"]["notStored"] == {"requests_count": 2_200_000, "max_ms": 1020000.123456}


def test_a_report_whose_values_all_exceed_the_column_is_a_422_naming_the_metrics(post, db) -> None:
    answer = post({**REPORT, "metricsSummary": {"requests_count": 2_200_000}})
    assert answer.status == 422
    assert [d["field"] for d in answer.body["details"]] == ["metricsSummary"]
    assert "999999.9999" in answer.body["details"][0]["reason"]
    assert count_rows(db) == 0


BAD_BODIES = {
    "nan": '{"name": "a", "variant": "b", "metricsSummary": {"p95_ms": NaN}}',
    "infinity": '{"name": "a", "variant": "b", "metricsSummary": {"p95_ms": Infinity}}',
    "control character in a key": '{"name": "a", "variant": "b", "metricsSummary": {"p95\\u0007": 1}}',
    "string": '{"name": "a", "variant": "b", "metricsSummary": {"p95_ms": "350"}}',
    "boolean": '{"name": "a", "variant": "b", "metricsSummary": {"p95_ms": true}}',
    "no metrics": '{"name": "a", "variant": "b", "metricsSummary": {}}',
    "1001 metrics": json.dumps({"name": "a", "variant": "b", "metricsSummary": {f"m{i}": i for i in range(1001)}}),
    "bad date": '{"name": "a", "variant": "b", "date": "2025-02-30T00:00:00Z", "metricsSummary": {"p95_ms": 1}}',
    "unknown field": '{"name": "a", "variant": "b", "metricsSummary": {"p95_ms": 1}, "extra": 1}',
    "no name": '{"variant": "b", "metricsSummary": {"p95_ms": 1}}',
    "name without variant": '{"name": "nounderscore", "metricsSummary": {"p95_ms": 1}}',
    "array body": "[1, 2]",
    "nul in notes": '{"name": "a", "variant": "b", "notes": "x\\u0000y", "metricsSummary": {"p95_ms": 1}}',
}


@pytest.mark.parametrize("raw_body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_invalid_reports_are_422_and_leave_the_table_unchanged(post, db, raw_body: str) -> None:
    post(REPORT)
    before = count_rows(db)
    answer = post(raw_body=raw_body)
    assert answer.status == 422, answer.body
    assert answer.body["error"] == "validation_failed"
    assert answer.body["details"] and all(d["field"] and d["reason"] for d in answer.body["details"])
    assert count_rows(db) == before


@pytest.mark.parametrize("raw_body", ['{"name": "a",', "not json", '{"a": 1}}', "[" * 5000 + "]" * 5000])
def test_malformed_json_is_a_400(post, db, raw_body: str) -> None:
    answer = post(raw_body=raw_body)
    assert answer.status == 400
    assert answer.body["error"] == "malformed_json"
    assert count_rows(db) == 0


def test_empty_body_is_a_422_naming_the_body(post, db) -> None:
    answer = post(raw_body="")
    assert answer.status == 422
    assert [d["field"] for d in answer.body["details"]] == ["body"]


def test_body_over_256_kib_is_a_413(post, db) -> None:
    body = json.dumps({**REPORT, "metadata": {"pad": ""}})
    padding = 256 * 1024 + 1 - len(body)
    answer = post(raw_body=json.dumps({**REPORT, "metadata": {"pad": "x" * padding}}))
    assert answer.status == 413
    assert answer.body["error"] == "payload_too_large"
    assert count_rows(db) == 0


def test_body_of_exactly_256_kib_is_accepted(post, db) -> None:
    body = json.dumps({**REPORT, "metadata": {"pad": ""}})
    padding = 256 * 1024 - len(body)
    answer = post(raw_body=json.dumps({**REPORT, "metadata": {"pad": "x" * padding}}))
    assert answer.status == 201


def test_invalid_body_over_256_kib_is_still_a_413(post, db) -> None:
    answer = post(raw_body="{" + " " * (256 * 1024))
    assert answer.status == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_body_not_declared_as_json_is_a_415(post, db, content_type: str) -> None:
    answer = post(REPORT, headers={"Content-Type": content_type})
    assert answer.status == 415
    assert answer.body["error"] == "unsupported_media_type"
    assert count_rows(db) == 0


def test_json_content_type_with_charset_is_accepted(post, db) -> None:
    assert post(REPORT, headers={"Content-Type": "application/json; charset=utf-8"}).status == 201


def test_sql_looking_strings_and_unicode_are_stored_verbatim(post, db) -> None:
    name = "キャッシュ'); DROP TABLE experiments; --"
    notes = "Robert'); DELETE FROM experiments WHERE ('1'='1 ✓ naïve"
    answer = post({**REPORT, "name": name, "variant": "🚀 warm", "notes": notes,
                   "metadata": {"q": "' OR 1=1 --", "emoji": "🔥"}})  # fmt: skip
    assert answer.status == 201
    stored = rows(db)
    assert {(r["name"], r["variant"], r["description"]) for r in stored} == {(name, "🚀 warm", notes)}
    assert stored[0]["metadata"]["q"] == "' OR 1=1 --"
    assert answer.body["name"] == name


def test_date_defaults_to_now(post, db) -> None:
    answer = post({k: v for k, v in REPORT.items() if k != "date"})
    assert answer.status == 201
    created = db.execute('SELECT DISTINCT "createdAt" FROM experiments').fetchall()
    assert len(created) == 1
    assert answer.body["createdAt"] == created[0][0].isoformat(timespec="milliseconds") + "Z"
    assert db.execute("SELECT now() AT TIME ZONE 'UTC' - %s < interval '1 minute'", created[0]).fetchone()[0]


# --- idempotency --------------------------------------------------------------------------------------------


def test_without_a_key_each_request_stores_anew(post, db) -> None:
    post(REPORT)
    post(REPORT)
    assert count_rows(db) == 2 * len(REPORT["metricsSummary"])


def test_same_report_in_another_key_order_is_a_replay(post, db) -> None:
    key = {"Idempotency-Key": "run-42"}
    first = post(REPORT, headers=key)
    reordered = dict(reversed(list(REPORT.items())))
    again = post(raw_body=json.dumps(reordered, indent=4), headers=key)
    assert (first.status, again.status) == (201, 200)
    assert count_rows(db) == len(REPORT["metricsSummary"])


def test_a_rejected_request_does_not_use_up_its_key(post, db) -> None:
    key = {"Idempotency-Key": "run-43"}
    assert post({**REPORT, "metricsSummary": {"p95_ms": True}}, headers=key).status == 422
    assert post(REPORT, headers=key).status == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "naïve"])
def test_malformed_idempotency_key_is_a_422_naming_the_header(post, db, key: str) -> None:
    answer = post(REPORT, headers={"Idempotency-Key": key})
    assert answer.status == 422
    assert [d["field"] for d in answer.body["details"]] == ["header idempotency-key"]
    assert count_rows(db) == 0
