"""POST /experiments/k6-summary through `lambda_handler`, against a real PostgreSQL.

The body is the summary document as k6 wrote it; the rows must equal what the reporter stores from the same file.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from experiments.limits import MAX_BODY_BYTES
from support import REPO_ROOT, api_event, count_rows, load_reporter

pytestmark = pytest.mark.integration

FIXTURES = REPO_ROOT / "tests" / "fixtures"
rk = load_reporter()

# handleSummary's `data` as k6 1.1 passes it (trimmed): `values` per metric, thresholds {expr: {ok}}.
HANDLE_SUMMARY = {
    "root_group": {"name": "", "path": "", "id": "d41d8cd98f00b204e9800998ecf8427e", "groups": [], "checks": []},
    "options": {"summaryTrendStats": ["avg", "min", "med", "max", "p(90)", "p(95)"], "noColor": False},
    "state": {"isStdOutTTY": False, "isStdErrTTY": False, "testRunDurationMs": 3012.5},
    "metrics": {
        "http_req_duration": {
            "type": "trend",
            "contains": "time",
            "values": {"avg": 3.12345, "min": 1.0, "med": 2.55555, "max": 12.0, "p(90)": 4.0, "p(95)": 5.25},
            "thresholds": {"p(95)<100": {"ok": True}},
        },
        "http_req_duration{name:GET /products/:id}": {
            "type": "trend",
            "contains": "time",
            "values": {"avg": 3.0, "min": 1.0, "med": 2.5, "max": 12.0, "p(90)": 4.0, "p(95)": 5.0},
            "thresholds": {"p(95)<1": {"ok": False}},
        },
        "http_reqs": {"type": "counter", "contains": "default", "values": {"count": 300, "rate": 99.58506224066391}},
        "http_req_failed": {"type": "rate", "contains": "default", "values": {"rate": 0.01, "passes": 3, "fails": 297}},
        "http_req_waiting": {"type": "trend", "contains": "time", "values": {"avg": 2.0, "min": 0.5, "max": 9.0}},
        "cache_hits": {"type": "rate", "contains": "default", "values": {"rate": 0.75, "passes": 225, "fails": 75}},
        "vus_max": {"type": "gauge", "contains": "default", "values": {"value": 5, "min": 5, "max": 5}},
    },
}

# `--summary-export` as k6 1.1 writes it: no types, thresholds {expr: true if FAILED}.
SUMMARY_EXPORT = {
    "root_group": {"name": "", "path": "", "id": "d41d8cd98f00b204e9800998ecf8427e", "groups": {}, "checks": {}},
    "metrics": {
        "http_req_duration": {"med": 2.5, "p(90)": 4.0, "p(95)": 5.25, "avg": 3.0, "min": 1.0, "max": 12.0,
                              "thresholds": {"p(95)<1": True}},
        "http_reqs": {"count": 200, "rate": 99.5},
        "http_req_failed": {"passes": 20, "fails": 180, "value": 0.1, "thresholds": {"rate<0.5": False}},
        "checks": {"passes": 180, "fails": 20, "value": 0.9},
        "vus_max": {"value": 4, "min": 4, "max": 4},
    },
}  # fmt: skip


def k6_summary_event(
    body: Any = None, query: dict[str, Any] | None = None, *, raw_body: str | None = None, key: str | None = None
) -> dict[str, Any]:
    """An API Gateway event for POST /experiments/k6-summary (multi-value query parameters as lists)."""
    event = api_event(body, raw_body=raw_body, headers={"Idempotency-Key": key} if key else None)
    path = "/experiments/k6-summary"
    multi = {k: v if isinstance(v, list) else [v] for k, v in (query or {}).items()}
    event.update(
        resource=path,
        path=path,
        queryStringParameters={k: v[-1] for k, v in multi.items()} or None,
        multiValueQueryStringParameters=multi or None,
    )
    event["requestContext"].update(resourcePath=path, path=path)
    return event


def stored(db) -> list[tuple[str, str, str, Any, dict[str, Any]]]:
    """(name, variant, metric, value, metadata without the request's own details) of every row."""
    cursor = db.execute("SELECT name, variant, metric, value, metadata FROM experiments ORDER BY metric")
    out = []
    for name, variant, metric, value, metadata in cursor:
        metadata = {k: v for k, v in metadata.items() if k != "ingest"}
        out.append((name, variant, metric, value, metadata))
    return out


def reporter_payload(doc: dict[str, Any], path: str, name: str, variant: str, env: dict[str, str]) -> dict[str, Any]:
    """The body the reporter sends for `doc` (its own functions, no HTTP)."""
    summary = rk.parse_summary(doc, path)
    return rk.build_payload(
        name=name,
        variant=variant,
        notes=None,
        metrics=rk.clean_metrics(summary.metrics),
        raw_file=path,
        metadata=rk.build_metadata(summary, {}, None, env),
        date=summary.generated_at,
    )


@pytest.mark.parametrize(
    ("label", "doc"),
    [
        ("handle-summary", HANDLE_SUMMARY),
        ("machine-readable", json.loads((FIXTURES / "k6_machine_readable_summary.json").read_text())),
        ("summary-export", SUMMARY_EXPORT),
    ],
)
def test_rows_equal_the_reporters(label: str, doc: dict[str, Any], invoke, db) -> None:
    env = {"GITHUB_SHA": "c" * 40, "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "7"}
    payload = reporter_payload(doc, "results.json", "route_eq", "v1", env)
    assert invoke(api_event(payload)).status == 201
    by_reporter = stored(db)
    db.execute("TRUNCATE experiments, ingest.idempotency_keys")

    query = {
        "name": "route_eq",
        "variant": "v1",
        "rawFile": "results.json",
        "gitSha": "c" * 40,
        "ciRunUrl": "https://github.com/o/r/actions/runs/7",
    }
    answer = invoke(k6_summary_event(doc, query, key=str(uuid.uuid4())))
    assert answer.status == 201, answer.body
    assert stored(db) == by_reporter
    assert len(by_reporter) == len(answer.body["ids"]) > 3


def test_handle_summary_keys_metadata_and_options(invoke, db) -> None:
    query = {"name": "opts", "variant": "a", "exclude-metric": ["cache_hits"], "metric": ["http_req_waiting"]}
    answer = invoke(k6_summary_event(HANDLE_SUMMARY, query))
    assert answer.status == 201, answer.body
    assert "http_req_duration{name:GET /products/:id}:p(95)" in answer.body["ids"]
    assert "http_req_waiting:avg" in answer.body["ids"]  # --metric brings a left-out metric back
    assert "cache_hits:rate" not in answer.body["ids"]
    metadata = stored(db)[0][4]
    assert metadata["k6Summary"] == "handle-summary"
    assert metadata["vus"] == 5 and metadata["duration"] == "3.013s"
    assert metadata["thresholds"] == {
        "passed": ["http_req_duration: p(95)<100"],
        "failed": ["http_req_duration{name:GET /products/:id}: p(95)<1"],
    }


def test_same_key_same_document_is_a_replay_and_another_document_a_conflict(invoke, db) -> None:
    key = str(uuid.uuid4())
    query = {"name": "idem", "variant": "a"}
    first = invoke(k6_summary_event(HANDLE_SUMMARY, query, key=key))
    again = invoke(k6_summary_event(HANDLE_SUMMARY, query, key=key))
    assert (first.status, again.status) == (201, 200)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.body == first.body
    rows = count_rows(db)
    changed = json.loads(json.dumps(HANDLE_SUMMARY))
    changed["metrics"]["http_reqs"]["values"]["count"] = 301
    conflict = invoke(k6_summary_event(changed, query, key=key))
    assert conflict.status == 409 and conflict.body["error"] == "idempotency_conflict"
    assert count_rows(db) == rows


@pytest.mark.parametrize(
    ("body", "raw", "field"),
    [
        ({"hello": "world"}, None, "body"),
        ({"metrics": {}}, None, "body"),
        ({"metrics": {"vus_max": {"type": "gauge", "values": {"value": 1}}}}, None, "body"),  # nothing to report
        (None, "[1, 2]", "body"),
        (None, '"text"', "body"),
    ],
)
def test_not_a_k6_summary_is_a_422_and_writes_nothing(body: Any, raw: str | None, field: str, invoke, db) -> None:
    answer = invoke(k6_summary_event(body, {"name": "garbage", "variant": "a"}, raw_body=raw))
    assert answer.status == 422, answer.body
    assert answer.body["error"] == "validation_failed"
    assert field in {detail["field"] for detail in answer.body["details"]}
    assert count_rows(db) == 0


def test_malformed_json_is_a_400(invoke, db) -> None:
    answer = invoke(k6_summary_event(raw_body='{"metrics": ', query={"name": "x", "variant": "a"}))
    assert answer.status == 400 and answer.body["error"] == "malformed_json"
    assert count_rows(db) == 0


def test_query_parameters_are_validated(invoke, db) -> None:
    no_name = invoke(k6_summary_event(HANDLE_SUMMARY, {"variant": "a"}))
    assert no_name.status == 422 and "query name" in {d["field"] for d in no_name.body["details"]}
    no_variant = invoke(k6_summary_event(HANDLE_SUMMARY, {"name": "novariant"}))
    assert no_variant.status == 422 and "variant" in {d["field"] for d in no_variant.body["details"]}
    split = invoke(k6_summary_event(HANDLE_SUMMARY, {"name": "lru_cache_cached"}))
    assert split.status == 201 and (split.body["name"], split.body["variant"]) == ("lru_cache", "cached")


def test_a_body_over_the_limit_is_a_413(invoke, db) -> None:
    doc = json.loads(json.dumps(HANDLE_SUMMARY))
    doc["setup_data"] = "x" * MAX_BODY_BYTES
    answer = invoke(k6_summary_event(doc, {"name": "big", "variant": "a"}))
    assert answer.status == 413
    assert count_rows(db) == 0
