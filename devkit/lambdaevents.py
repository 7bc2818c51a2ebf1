"""Lambda's side of a call, for tests and benchmarks: the context object, API Gateway events, a handler module.

The events are built on `events/report_201_valid.json`, the file `sam local invoke` uses, so they carry what API
Gateway sends.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

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
