"""Helpers for tests: Lambda context, API Gateway events, loading a function's handler."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = REPO_ROOT / "events"


class LambdaContext:
    """The few attributes of the Lambda context that Powertools reads."""

    function_name = "ReportFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:ReportFunction"
    aws_request_id = "00000000-0000-4000-8000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def load_function(name: str) -> ModuleType:
    """Import `functions/<name>/app.py` as its own module, as Lambda would (every handler file is app.py)."""
    spec = importlib.util.spec_from_file_location(f"{name}_app", REPO_ROOT / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def api_event(
    body: Any = None,
    *,
    raw_body: str | None = None,
    headers: dict[str, str] | None = None,
    drop_headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An API Gateway REST proxy event for POST /experiments/report, built on `events/report_201_valid.json`."""
    event = json.loads((EVENTS_DIR / "report_201_valid.json").read_text())
    merged = {k: v for k, v in event["headers"].items() if k.lower() not in {"idempotency-key", *drop_headers}}
    merged.update(headers or {})
    event["headers"] = merged
    event["multiValueHeaders"] = {k: [v] for k, v in merged.items()}
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["body"] = raw_body if raw_body is not None else json.dumps(body)
    return event


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def load_script(name: str) -> ModuleType:
    """`scripts/<name>.py` as a module (scripts/ is not a package), loaded once per test run."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_reporter() -> ModuleType:
    """The reporter CLI, `scripts/report_k6_result.py`, as a module."""
    return load_script("report_k6_result")


def private_pgdata() -> Path:
    """A data folder for an embedded PostgreSQL that no other test run prunes (pytest's tmp folders get pruned)."""
    return Path(tempfile.mkdtemp(prefix="k6exp-pgdata-"))


class StoppableServer:
    """An embedded PostgreSQL a test owns, so it can be stopped and started like a real outage."""

    def __init__(self, pgdata: Path) -> None:
        from devkit.localdb import embedded_server

        self.pgdata = pgdata
        self.url = embedded_server(pgdata, delete_on_exit=True).get_uri()
        self.socket_dir = parse_qs(urlparse(self.url).query)["host"][0]
        self.run_as = "pgserver" if os.geteuid() == 0 else None  # pgserver runs PostgreSQL as this user under root

    def stop(self) -> None:
        import pgserver

        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.run_as)

    def start(self) -> None:
        import pgserver

        options = ["-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log")]
        pgserver.pg_ctl(["-w", *options, "start"], pgdata=self.pgdata, user=self.run_as)

    def is_up(self) -> bool:
        try:
            psycopg.connect(self.url, connect_timeout=1).close()
            return True
        except psycopg.OperationalError:
            return False


def count_rows(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM experiments").fetchone()[0]


def get_event(path: str, query: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST proxy event for a GET (query values are strings, as API Gateway gives them)."""
    event = json.loads((EVENTS_DIR / "report_201_valid.json").read_text())
    merged = {"Accept": "application/json", "x-api-key": "local-dev-key-please-change", **(headers or {})}
    event.update(
        resource=path,
        path=path,
        httpMethod="GET",
        headers=merged,
        multiValueHeaders={k: [v] for k, v in merged.items()},
        queryStringParameters=query or None,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
        body=None,
    )
    event["requestContext"].update(resourcePath=path, httpMethod="GET", requestId=str(uuid.uuid4()))
    return event


def decode(response: dict[str, Any]) -> Answer:
    """A handler's response as status, headers and parsed JSON body."""
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    body = response.get("body")
    is_json = headers.get("Content-Type", "").startswith("application/json")
    return Answer(response["statusCode"], headers, json.loads(body) if body and is_json else body)


class FakeSecretsManager(BaseHTTPRequestHandler):
    """Secrets Manager's JSON protocol at its HTTP edge (boto3 reaches it via AWS_ENDPOINT_URL_SECRETS_MANAGER).

    Answers GetSecretValue with `secret`, or with a 500 while `failing` is set; records each call's target.
    """

    secret: ClassVar[dict[str, object]] = {}
    failing: ClassVar[bool] = False
    calls: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(self.headers["X-Amz-Target"])
        if self.failing:
            status, answer = 500, {"__type": "InternalServiceError", "message": "try again"}
        else:
            secret_string = json.dumps(self.secret)
            status, answer = (
                200,
                {"ARN": request["SecretId"], "Name": "db", "VersionId": "v1", "SecretString": secret_string},
            )
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


# Names and variants (experiments.names): input → what is stored (NFC), or None when refused. One table for the
# rule itself, the API's reports and query parameters, and the reporter (issue 10, item 8).
NAME_CASES: dict[str, tuple[str, str | None]] = {
    "plain": ("checkout", "checkout"),
    "inner spaces": ("lru cache", "lru cache"),
    "NFC café": ("caf\u00e9", "caf\u00e9"),
    "NFD café is stored as NFC": ("cafe\u0301", "caf\u00e9"),
    "Hangul jamo (NFD) is stored composed": ("\u1100\u1161", "\uac00"),
    "emoji": ("\U0001f680", "\U0001f680"),
    "trailing space": ("trail ", None),
    "leading space": (" trail", None),
    "trailing no-break space": ("trail\u00a0", None),
    "only an ideographic space": ("\u3000", None),
    "blank": ("   ", None),
    "tab inside": ("a\tb", None),
    "newline inside": ("a\nb", None),
    "NUL": ("a\x00b", None),
    "zero-width space": ("trail\u200b", None),
    "byte order mark": ("\ufefftrail", None),
    "right-to-left mark": ("a\u200fb", None),
    "line separator": ("a\u2028b", None),
    "paragraph separator": ("a\u2029b", None),
}
