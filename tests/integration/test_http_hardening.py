"""Issue 10's faults in the HTTP contract, each through `lambda_handler` against a real PostgreSQL."""

from __future__ import annotations

import json

import pytest

from support import count_rows

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
