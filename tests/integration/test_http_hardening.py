"""Issue 10's faults in the HTTP contract, each through `lambda_handler` against a real PostgreSQL."""

from __future__ import annotations

import hashlib
import json

import pytest

from experiments.limits import LAMBDA_RESPONSE_BYTES, MAX_PAGE_BYTES
from experiments.store import PURGE_INTERVAL_S, PurgeSchedule, purge_expired_keys
from support import NAME_CASES, LambdaContext, api_event, count_rows, get_event

pytestmark = pytest.mark.integration

REPORT = {"name": "hardening", "variant": "baseline", "metricsSummary": {"p95_ms": 350, "rps": 20}}
OTHER = {"name": "hardening", "variant": "cached", "metricsSummary": {"p95_ms": 120}}


# --- 10.1: a JSON array body ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[REPORT, OTHER], [REPORT], "report", 42, None], ids=repr)
def test_a_body_that_is_not_one_object_is_a_422_naming_the_body_and_stores_nothing(post, db, body) -> None:
    answer = post(raw_body=json.dumps(body))
    assert answer.status == 422, answer.body
    assert answer.body["error"] == "validation_failed"
    assert [d["field"] for d in answer.body["details"]] == ["body"]
    assert count_rows(db) == 0


# --- 10.6: media types are case-insensitive ------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["Application/JSON", "Application/JSON; Charset=UTF-8", "APPLICATION/JSON"])
def test_json_media_type_in_any_case_is_accepted(post, db, content_type: str) -> None:
    answer = post(REPORT, headers={"Content-Type": content_type})
    assert answer.status == 201, answer.body
    assert count_rows(db) == 2


def test_a_body_too_large_and_not_json_is_refused_for_its_size_before_anything_else(post, db) -> None:
    answer = post(raw_body="[" + " " * (256 * 1024), headers={"Content-Type": "Text/Plain"})
    assert answer.status == 413


# --- 10.11: Idempotency keys belong to a caller and expire ---------------------------------------------------


def keyed(body: dict, key: str, *, api_key_id: str | None = "caller-a", api_key: str = "key-a") -> dict:
    event = api_event(body, headers={"Idempotency-Key": key, "x-api-key": api_key})
    event["requestContext"]["identity"]["apiKeyId"] = api_key_id
    return event


def test_the_same_key_from_two_callers_stores_both_reports(invoke, db) -> None:
    first = invoke(keyed(REPORT, "run-1", api_key_id="caller-a"))
    second = invoke(keyed(OTHER, "run-1", api_key_id="caller-b"))
    assert (first.status, second.status) == (201, 201), second.body
    assert count_rows(db) == 3
    assert invoke(keyed(REPORT, "run-1", api_key_id="caller-a")).status == 200  # each caller's own replay
    assert invoke(keyed(OTHER, "run-1", api_key_id="caller-b")).status == 200


def test_without_a_key_id_the_caller_is_the_key_s_hash(invoke, db) -> None:
    assert invoke(keyed(REPORT, "run-2", api_key_id=None, api_key="key-a")).status == 201
    assert invoke(keyed(OTHER, "run-2", api_key_id=None, api_key="key-b")).status == 201
    assert invoke(keyed(OTHER, "run-2", api_key_id=None, api_key="key-b")).status == 200
    callers = [row[0] for row in db.execute("SELECT caller FROM ingest.idempotency_keys ORDER BY created_at")]
    assert callers == ["key-sha256:" + hashlib.sha256(k).hexdigest() for k in (b"key-a", b"key-b")]


def age_keys(db, days: float) -> None:
    db.execute("UPDATE ingest.idempotency_keys SET created_at = now() - make_interval(secs => %s)", (days * 86400,))


def test_a_key_is_remembered_for_30_days_by_default(invoke, db) -> None:
    assert invoke(keyed(REPORT, "run-3")).status == 201
    age_keys(db, 29.9)
    assert invoke(keyed(OTHER, "run-3")).status == 409


def test_a_key_older_than_30_days_is_free_again(invoke, db) -> None:
    assert invoke(keyed(REPORT, "run-4")).status == 201
    age_keys(db, 30.1)
    answer = invoke(keyed(OTHER, "run-4"))
    assert answer.status == 201, answer.body
    assert count_rows(db) == 3
    assert invoke(keyed(OTHER, "run-4")).status == 200  # and the new claim is what it remembers


def test_the_ttl_is_configurable_in_days(invoke, db, monkeypatch) -> None:
    monkeypatch.setenv("IDEMPOTENCY_KEY_TTL_DAYS", "2")
    assert invoke(keyed(REPORT, "run-5")).status == 201
    age_keys(db, 2.1)
    assert invoke(keyed(OTHER, "run-5")).status == 201


def insert_keys(db, *ages_days: float) -> None:
    for index, age in enumerate(ages_days):
        db.execute(
            """INSERT INTO ingest.idempotency_keys (caller, key, request_hash, response, created_at)
               VALUES ('c', %s, 'h', '{}', now() - make_interval(secs => %s))""",
            (f"old-{index}", age * 86400),
        )


def test_the_report_function_purges_expired_keys_itself(invoke, db) -> None:
    insert_keys(db, 31, 45, 400, 29)
    assert invoke(api_event(REPORT)).status == 201  # the instance's first request purges
    left = db.execute("SELECT key FROM ingest.idempotency_keys ORDER BY key").fetchall()
    assert left == [("old-3",)]


def test_a_purge_deletes_a_bounded_batch(db) -> None:
    insert_keys(db, 31, 32, 33)
    assert purge_expired_keys(db, ttl_days=30, batch=2) == 2
    assert purge_expired_keys(db, ttl_days=30, batch=2) == 1
    assert purge_expired_keys(db, ttl_days=30, batch=2) == 0


def test_an_instance_purges_on_its_first_request_then_at_most_hourly() -> None:
    now = [1000.0]
    schedule = PurgeSchedule(clock=lambda: now[0])
    assert schedule.due()
    now[0] += 3599
    assert not schedule.due()
    now[0] += 1
    assert schedule.due()
    assert PURGE_INTERVAL_S == 3600


# --- 10.7 (second half): a failed read says nothing about storing ---------------------------------------------


def test_a_read_with_the_database_down_is_a_503_that_says_nothing_about_storing(get, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")  # nothing listens on port 9
    answer = get("/experiments", {"name": "x"})
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "2"
    assert "stored" not in answer.body["message"] and "written" not in answer.body["message"]


def test_a_read_that_fails_on_our_side_is_a_500_that_says_nothing_about_storing(get, monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)
    answer = get("/experiments/compare", {"name": "x"})
    assert answer.status == 500
    assert answer.body == {"error": "internal_error", "message": "internal error", "details": []}


def test_a_write_that_fails_still_says_nothing_was_stored(post, db, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    answer = post(REPORT)
    assert answer.status == 503
    assert "nothing was stored" in answer.body["message"]


# --- 10.2: a page stays below Lambda's 6 MB response limit ---------------------------------------------------


def test_pages_of_a_large_metadata_report_stay_under_5_000_000_bytes_and_the_cursor_carries_on(
    post, db, query_app
) -> None:
    """Like the issue's 213 KB report with 50 metrics: its metadata (100,000 quotes, 200 KB as a body) is copied
    onto each of its 50 rows and takes 400 KB per row in Lambda's answer, 20 MB for one page of limit 1000."""
    metrics = {f"m{i:02}": i for i in range(50)}
    report = {"name": "big", "variant": "v", "metricsSummary": metrics, "metadata": {"blob": '"' * 100_000}}
    assert post(report).status == 201
    sizes, ids, cursor = [], [], None
    while True:
        query = {"name": "big", "limit": "1000"} | ({"cursor": cursor} if cursor else {})
        response = query_app.lambda_handler(get_event("/experiments", query), LambdaContext())
        assert response["statusCode"] == 200
        sizes.append(len(json.dumps(response).encode()))
        page = json.loads(response["body"])
        ids += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    print(f"pages: {len(sizes)}, largest {max(sizes):,} bytes (limit {MAX_PAGE_BYTES:,})")
    assert MAX_PAGE_BYTES == 5_000_000 < LAMBDA_RESPONSE_BYTES
    assert max(sizes) <= 5_000_000
    assert len(sizes) > 1
    assert len(ids) == len(set(ids)) == 50


# --- 10.8: one rule for names and variants, in the store and the queries (and the reporter: tests/unit) --------


@pytest.mark.parametrize(("text", "stored"), NAME_CASES.values(), ids=NAME_CASES.keys())
def test_names_are_stored_and_found_by_one_rule(post, get, db, text: str, stored: str | None) -> None:
    answer = post({**REPORT, "name": text, "variant": text})
    listed = get("/experiments", {"name": text, "variant": text})
    compared = get("/experiments/compare", {"name": text, "baseline": text})
    if stored is None:
        assert answer.status == 422
        assert [d["field"] for d in answer.body["details"]] == ["name", "variant"]
        assert count_rows(db) == 0
        assert listed.status == compared.status == 422
        assert [d["field"] for d in listed.body["details"]] == ["query name", "query variant"]
        assert [d["field"] for d in compared.body["details"]] == ["query name", "query baseline"]
    else:
        assert answer.status == 201, answer.body
        assert db.execute("SELECT DISTINCT name, variant FROM experiments").fetchall() == [(stored, stored)]
        assert [(i["name"], i["variant"]) for i in listed.body["items"]] == [(stored, stored)] * 2
        assert compared.status == 200 and compared.body["name"] == stored
