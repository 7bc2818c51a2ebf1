"""The local API as API Gateway: real HTTP into `scripts/local_api.py`, the real handler, a real PostgreSQL.

What API Gateway decides before the Lambda runs (the key, unknown routes) must look exactly as it does in
AWS, and what the Lambda stores must be stored once, also when the database drops out and the reporter
retries, and under a k6 load of 20 VUs.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from experiments.limits import column_value
from support import DatabaseRelay, count_rows

pytestmark = pytest.mark.e2e

REPORT = {
    "name": "e2e_local_api",
    "variant": "baseline",
    "metricsSummary": {"p50_ms": 12.5, "p95_ms": 30.25, "rps": 100},
}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no key"),
        pytest.param({"x-api-key": "not-the-key"}, id="wrong x-api-key"),
        pytest.param({"Authorization": "Bearer not-the-key"}, id="wrong bearer"),
        pytest.param({"x-api-key": ""}, id="empty x-api-key"),
    ],
)
def test_missing_or_wrong_key_is_forbidden_like_api_gateway_and_writes_nothing(
    local_api: Any, db: psycopg.Connection, http: Callable[..., Any], headers: dict[str, str]
) -> None:
    answer = http("POST", f"{local_api.url}/experiments/report", REPORT, headers)

    assert (answer.status, answer.body) == (403, {"message": "Forbidden"})
    assert answer.headers["x-amzn-errortype"] == "ForbiddenException"
    assert count_rows(db) == 0


def test_key_in_another_scheme_than_bearer_is_forbidden(
    local_api: Any, db: psycopg.Connection, http: Callable[..., Any]
) -> None:
    answer = http(
        "POST", f"{local_api.url}/experiments/report", REPORT, {"Authorization": f"Basic {local_api.api_key}"}
    )

    assert answer.status == 403
    assert count_rows(db) == 0


@pytest.mark.parametrize("header", ["x-api-key", "X-API-Key", "Authorization"])
def test_right_key_as_x_api_key_or_bearer_stores_the_report(
    local_api: Any, db: psycopg.Connection, http: Callable[..., Any], header: str
) -> None:
    value = f"Bearer {local_api.api_key}" if header == "Authorization" else local_api.api_key

    answer = http("POST", f"{local_api.url}/experiments/report", REPORT, {header: value})

    assert answer.status == 201, answer.body
    assert set(answer.body["ids"]) == set(REPORT["metricsSummary"])
    rows = db.execute("SELECT metric, value FROM experiments WHERE name = 'e2e_local_api'").fetchall()
    assert {metric: float(value) for metric, value in rows} == REPORT["metricsSummary"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/experiments/nope"), ("GET", "/experiments/report"), ("POST", "/"), ("DELETE", "/products/1")],
)
def test_unknown_route_answers_missing_authentication_token(
    local_api: Any, db: psycopg.Connection, http: Callable[..., Any], method: str, path: str
) -> None:
    answer = http(method, f"{local_api.url}{path}", REPORT, {"x-api-key": local_api.api_key})

    assert (answer.status, answer.body) == (403, {"message": "Missing Authentication Token"})
    assert count_rows(db) == 0


def test_handler_errors_come_back_with_the_handlers_status_and_body(
    local_api: Any, db: psycopg.Connection, http: Callable[..., Any]
) -> None:
    answer = http("POST", f"{local_api.url}/experiments/report", {"name": "x"}, {"x-api-key": local_api.api_key})

    assert answer.status == 422
    assert answer.body["error"] == "validation_failed"
    assert answer.headers["content-type"].startswith("application/json")
    assert count_rows(db) == 0


# ------------------------------------------------------------------------------------------- event shape

ECHO_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: test}
Globals:
  Function:
    Runtime: python3.12
    MemorySize: 512
    Timeout: 7
    Environment:
      Variables:
        ECHO_GREETING: hello
        ECHO_SECRET_ARN: !Ref Secret
Resources:
  EchoApi:
    Type: AWS::Serverless::Api
    Properties:
      StageName: !Ref Stage
      Auth: {ApiKeyRequired: true}
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.handler
      Events:
        Item:
          Type: Api
          Properties: {RestApiId: !Ref EchoApi, Path: "/items/{id}", Method: post}
        Anything:
          Type: Api
          Properties: {RestApiId: !Ref EchoApi, Path: "/files/{proxy+}", Method: any, Auth: {ApiKeyRequired: false}}
"""

ECHO_HANDLER = """
import json, os

def handler(event, context):
    seen = {
        "event": event,
        "context": {
            "function_name": context.function_name,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "aws_request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
        "env": {k: os.environ.get(k) for k in ("ECHO_GREETING", "ECHO_SECRET_ARN")},
    }
    return {
        "statusCode": 207,
        "headers": {"Content-Type": "application/json", "X-Single": "one"},
        "multiValueHeaders": {"X-Multi": ["a", "b"]},
        "body": json.dumps(seen),
        "isBase64Encoded": False,
    }
"""


@pytest.fixture
def echo_api(tmp_path: Path, database_url: str, local_api_on: Callable[..., Any]) -> Any:
    """A local API over a template of our own whose function answers with the event it received."""
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "app.py").write_text(ECHO_HANDLER)
    (tmp_path / "template.yaml").write_text(ECHO_TEMPLATE)
    return local_api_on(database_url, "--template", str(tmp_path / "template.yaml"))


def raw_request(url: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, Any, Any]:
    """A request with repeated headers (urllib merges them), answered as (status, headers, JSON body)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest(method, path)
    for name, value in headers:
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    return response.status, response.headers, payload


def test_event_and_context_have_api_gateway_rest_proxy_shape(echo_api: Any) -> None:
    headers = [("x-api-key", echo_api.api_key), ("X-Tag", "a"), ("X-Tag", "b"), ("Content-Type", "text/plain")]

    status, got, seen = raw_request(echo_api.url, "POST", "/items/42?q=1&q=2&empty=", headers, b"plain text")

    assert status == 207
    assert got["X-Single"] == "one"
    assert got.get_all("X-Multi") == ["a", "b"]
    event = seen["event"]
    assert event["resource"] == "/items/{id}"
    assert (event["path"], event["httpMethod"]) == ("/items/42", "POST")
    assert event["pathParameters"] == {"id": "42"}
    assert event["queryStringParameters"] == {"q": "2", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"q": ["1", "2"], "empty": [""]}
    assert event["headers"]["X-Tag"] == "b"
    assert event["multiValueHeaders"]["X-Tag"] == ["a", "b"]
    assert (event["body"], event["isBase64Encoded"]) == ("plain text", False)
    context = event["requestContext"]
    assert uuid.UUID(context["requestId"])
    assert (context["stage"], context["path"], context["resourcePath"]) == ("test", "/test/items/42", "/items/{id}")
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["apiKey"] == echo_api.api_key
    lambda_context = seen["context"]
    assert lambda_context["function_name"] == "EchoFunction"
    assert lambda_context["memory_limit_in_mb"] == 512
    assert lambda_context["invoked_function_arn"].endswith(":function:EchoFunction")
    assert lambda_context["aws_request_id"] == context["requestId"]
    assert 0 < lambda_context["remaining_ms"] <= 7000
    assert seen["env"] == {"ECHO_GREETING": "hello", "ECHO_SECRET_ARN": None}  # a !Ref to a resource has no value


def test_greedy_path_without_key_requirement_and_binary_body(echo_api: Any) -> None:
    body = bytes(range(256))

    status, _, seen = raw_request(echo_api.url, "PUT", "/files/a/b%20c.bin", [], body)

    assert status == 207
    event = seen["event"]
    assert event["resource"] == "/files/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b c.bin"}
    assert event["queryStringParameters"] is None
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body
    assert event["requestContext"]["identity"]["apiKey"] is None


# ------------------------------------------------------------------------------------------- 503 + retry


def test_reporter_retry_after_503_stores_the_report_exactly_once(
    database_relay: DatabaseRelay,
    local_api_on: Callable[..., Any],
    run_reporter: Callable[..., subprocess.CompletedProcess[str]],
    k6_summary: Path,
    http: Callable[..., Any],
    db: psycopg.Connection,
) -> None:
    api = local_api_on(database_relay.url)
    key = {"EXPERIMENTS_API_KEY": api.api_key}
    dry = run_reporter(k6_summary, api.url, "e2e_retry", "--variant", "baseline", "--dry-run", env=key)
    values_sent = json.loads(dry.stdout)["metricsSummary"].values()
    rows_sent = sum(column_value(value) is not None for value in values_sent)  # the others go to metadata
    warm = http("POST", f"{api.url}/experiments/report", REPORT, {"x-api-key": api.api_key})
    assert warm.status == 201, warm.body  # the handler now holds a connection through the proxy

    # The database drops the handler's connection and refuses it for half a second: the first attempt gets a
    # 503 with Retry-After, the reporter waits that long and its second attempt is stored.
    database_relay.cut(restore_after_first_refusal_s=0.5)
    done = run_reporter(k6_summary, api.url, "e2e_retry", "--variant", "baseline", env=key)

    assert done.returncode == 0, done.stdout + done.stderr + api.log_tail()
    assert database_relay.refused >= 1
    assert "HTTP 503" in done.stderr
    statuses = [
        line.split('"')[2].split()[0] for line in api.log.read_text().splitlines() if "POST /experiments" in line
    ]
    assert statuses == ["201", "503", "201"], api.log_tail()
    assert count_rows(db) == len(REPORT["metricsSummary"]) + rows_sent  # the warm-up's rows + one report
    assert db.execute("SELECT count(*) FROM ingest.idempotency_keys").fetchone()[0] == 1


def test_reporting_the_same_file_again_is_replayed_not_stored_twice(
    local_api: Any,
    run_reporter: Callable[..., subprocess.CompletedProcess[str]],
    k6_summary: Path,
    db: psycopg.Connection,
) -> None:
    """A CI step that is re-run sends the same file again: same Idempotency-Key, so it must be the same body."""
    key = {"EXPERIMENTS_API_KEY": local_api.api_key}
    first = run_reporter(k6_summary, local_api.url, "e2e_rerun", "--variant", "baseline", env=key)
    assert first.returncode == 0, first.stderr
    stored = count_rows(db)

    again = run_reporter(k6_summary, local_api.url, "e2e_rerun", "--variant", "baseline", env=key)

    assert again.returncode == 0, again.stderr
    assert "replayed" in again.stdout
    assert count_rows(db) == stored


# ------------------------------------------------------------------------------------------- load

LOAD_SCRIPT = """
import http from 'k6/http';
import { check } from 'k6';

export const options = {
  vus: 20,
  duration: '5s',
  thresholds: { http_req_failed: ['rate==0'], checks: ['rate==1'] },
};

export default function () {
  const body = JSON.stringify({
    name: 'e2e_load',
    variant: `vu${__VU}`,
    metricsSummary: { p50_ms: 1.5, p95_ms: 2.25, rps: __ITER },
    metadata: { vu: __VU, iteration: __ITER },
  });
  const res = http.post(`${__ENV.API_URL}/experiments/report`, body, {
    headers: {
      'Content-Type': 'application/json',
      'x-api-key': __ENV.API_KEY,
      'Idempotency-Key': `load-${__VU}-${__ITER}`,
    },
  });
  check(res, { 'stored (201)': (r) => r.status === 201 });
}
"""


def test_k6_load_of_20_vus_posting_reports_has_no_errors(
    local_api: Any, db: psycopg.Connection, run_k6: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    script, summary = tmp_path / "post_reports.js", tmp_path / "summary.json"
    script.write_text(LOAD_SCRIPT)

    done = run_k6(script, summary, {"API_URL": local_api.url, "API_KEY": local_api.api_key})

    assert done.returncode == 0, done.stdout + done.stderr + local_api.log_tail()
    metrics = json.loads(summary.read_text())["metrics"]
    requests = metrics["http_reqs"]["count"]
    assert requests > 100  # a real load, not a handful of requests
    assert metrics["http_req_failed"]["passes"] == 0  # `passes` of http_req_failed count FAILED requests
    assert metrics["checks"]["fails"] == 0
    assert count_rows(db) == 3 * requests
    assert db.execute("SELECT count(*) FROM ingest.idempotency_keys").fetchone()[0] == requests


def test_serves_the_openapi_document_and_swagger_ui_without_a_key(local_api: Any, http: Callable[..., Any]) -> None:
    document = http("GET", f"{local_api.url}/openapi.json")
    assert document.status == 200
    assert "/experiments/report" in document.body["paths"]
    swagger = http("GET", f"{local_api.url}/swagger")
    assert swagger.status == 200
    assert "SwaggerUIBundle" in swagger.body
