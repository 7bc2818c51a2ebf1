"""The API against its own OpenAPI document: schemathesis generates requests for every operation from the
document the local API serves (`/openapi.json`, i.e. docs/openapi.json) and checks each answer.

Checks: never a 5xx; every status, content type, header and body as documented; schema-invalid requests
rejected with a 4xx; requests without the key refused; and a request answered 4xx writes nothing. Two of
schemathesis's checks are left out because the API is meant to answer otherwise:
- `positive_data_acceptance` (every schema-valid request is a 2xx): the API's rules go beyond what JSON Schema
  can say (a blank name, a name without `_<variant>` and no variant, a cursor from no previous page), and
  their documented answer is a 4xx that names the problem;
- `unsupported_method` (405 for a method the document does not list): API Gateway answers an unrouted method
  with 403 `Missing Authentication Token`, and so does the local API.

The key is sent with every request and schemathesis does not generate it as a parameter of its own, so its
`ignored_auth` check (the same request without the key must be refused) is what tests the key.
`SCHEMATHESIS_MAX_EXAMPLES` sets the examples per operation (default 40).
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance, unsupported_method

from support import count_rows

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = REPO_ROOT / "docs" / "openapi.json"
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES") or 40)
NOT_APPLICABLE = [positive_data_acceptance, unsupported_method]

# The committed document, which is what the local API serves at /openapi.json (checked below). Loaded at
# collection: schemathesis's lazy `from_fixture` uses a pytest internal (`Function._nodeid`) that pytest 9 no
# longer has, so the local API's URL and key are given per call instead.
schema = schemathesis.openapi.from_path(DOCUMENT)
schema.config.update(request_timeout=30)
schema.config.generation.update(
    max_examples=MAX_EXAMPLES,
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    with_security_parameters=False,
    deterministic=True,
)


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection to the run's database for counting rows around each request (module-scoped: hypothesis
    runs many examples through one call of the test)."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@schema.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, local_api: Any, conn: psycopg.Connection
) -> None:
    rows_before = count_rows(conn)

    response = case.call_and_validate(
        base_url=local_api.url, headers={"x-api-key": local_api.api_key}, excluded_checks=NOT_APPLICABLE
    )

    if response.status_code >= 400:
        assert count_rows(conn) == rows_before, f"{case.method} {case.path} answered {response.status_code} but wrote"


def test_the_local_api_serves_the_document_under_test(local_api: Any, http: Callable[..., Any]) -> None:
    served = http("GET", f"{local_api.url}/openapi.json")

    assert served.status == 200
    assert served.body == json.loads(DOCUMENT.read_text())


# ------------------------------------------------------------------ what schemathesis found (each was a 500)


def post_raw(api: Any, body: bytes, content_type: str) -> tuple[int, Any]:
    """POST these exact bytes to /experiments/report with the key; returns (status, JSON body)."""
    host, port = api.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"x-api-key": api.api_key, "Content-Type": content_type, "Content-Length": str(len(body))}
    connection.request("POST", "/experiments/report", body, headers)
    response = connection.getresponse()
    answer = response.status, json.loads(response.read())
    connection.close()
    return answer


def test_multipart_body_without_boundary_is_415(local_api: Any, conn: psycopg.Connection) -> None:
    status, body = post_raw(local_api, b'{"name": "a_b", "metricsSummary": {"x": 1}}', "multipart/form-data")

    assert (status, body["error"]) == (415, "unsupported_media_type")


def test_body_that_is_not_utf8_is_400_malformed_json(local_api: Any, conn: psycopg.Connection) -> None:
    rows_before = count_rows(conn)

    status, body = post_raw(local_api, b'{"name": "a\xff_b", "metricsSummary": {"x": 1}}', "application/json")

    assert (status, body["error"]) == (400, "malformed_json")
    assert count_rows(conn) == rows_before


@pytest.mark.parametrize("date", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"])
def test_date_outside_years_1_to_9999_in_utc_is_422(local_api: Any, http: Callable[..., Any], date: str) -> None:
    report = {"name": "st_dates", "variant": "edge", "metricsSummary": {"x": 1}, "date": date}
    key = {"x-api-key": local_api.api_key}

    stored = http("POST", f"{local_api.url}/experiments/report", report, key)
    listed = http("GET", f"{local_api.url}/experiments?from={quote(date)}", None, key)

    assert (stored.status, stored.body["details"][0]["field"]) == (422, "date")
    assert (listed.status, listed.body["details"][0]["field"]) == (422, "query from")
