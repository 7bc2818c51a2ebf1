"""The API's error contract, in one place: every failure is `{"error", "message", "details"}` with its status.

400 malformed JSON, 409 idempotency conflict, 413 body over 256 KiB, 415 not JSON, 422 validation (each
offending field named), 503 + Retry-After when the database is unavailable, 500 for our own bugs (logged,
never shown). The service's exceptions live in `experiments.errors`; `ERROR_STATUSES` below is the one place
that maps them to statuses, by type, never by matching messages.

The body of a POST is checked once, before validation, by the `check_body` middleware (size, media type,
presence, one JSON object); routes with a body use `BODY_ROUTE`, which runs Powertools' validation after it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import OpenAPIRequestValidationMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from experiments.config import SERVICE_NAME
from experiments.errors import (
    ConfigurationError,
    CredentialsUnavailable,
    DatabaseReadOnly,
    DatabaseTimeout,
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidCursor,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    TooManySeries,
    UnsupportedMediaType,
)
from experiments.limits import MAX_BODY_BYTES
from experiments.models import ErrorBody, ErrorDetail, GatewayError

RETRY_AFTER_SECONDS = 2

logger = Logger(service=SERVICE_NAME, child=True)


@dataclass(frozen=True)
class ErrorKind:
    """How one exception is answered. `message` may use `{error}`; `field` names the one field at fault."""

    status: HTTPStatus
    code: str
    message: str = "{error}"
    field: str | None = None
    reason: str | None = None


UNAVAILABLE = ErrorKind(HTTPStatus.SERVICE_UNAVAILABLE, "database_unavailable", "the database is unavailable")
INTERNAL = ErrorKind(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "internal error")

# The one mapping from the service's exceptions to answers; a subclass is answered as its closest listed base.
ERROR_STATUSES: dict[type[Exception], ErrorKind] = {
    PayloadTooLarge: ErrorKind(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large"),
    UnsupportedMediaType: ErrorKind(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    RequestUnsupportedContentType: ErrorKind(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Content-Type must be application/json"
    ),
    InvalidCursor: ErrorKind(HTTPStatus.BAD_REQUEST, "invalid_parameter", "invalid cursor: {error}", "query cursor"),
    NotFound: ErrorKind(HTTPStatus.NOT_FOUND, "not_found"),
    TooManySeries: ErrorKind(HTTPStatus.UNPROCESSABLE_ENTITY, "validation_failed", field="query metric"),
    IdempotencyConflict: ErrorKind(
        HTTPStatus.CONFLICT,
        "idempotency_conflict",
        "this Idempotency-Key was already used with a different body",
        "header Idempotency-Key",
        "already used with a different body",
    ),
    DatabaseUnavailable: UNAVAILABLE,
    DatabaseTimeout: UNAVAILABLE,  # the connection is replaced; a retry may succeed
    DatabaseReadOnly: UNAVAILABLE,  # a failover: the next connection finds the new writer
    CredentialsUnavailable: UNAVAILABLE,
    ConfigurationError: INTERNAL,
}


def error_kind(error: Exception) -> ErrorKind:
    """The answer for `error`: its own entry, else its closest base class's, else a 500."""
    return next((ERROR_STATUSES[cls] for cls in type(error).__mro__ if cls in ERROR_STATUSES), INTERNAL)


def parse_json(text: str) -> Any:
    """`json.loads` for request bodies, where a number too long to convert (over 4300 digits) is malformed JSON.

    Python refuses such numbers with a plain ValueError, which the validator would let through as a 500.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError as error:
        raise json.JSONDecodeError(str(error), text, 0) from None


def media_type(content_type: str | None) -> str:
    """`Application/JSON; Charset=UTF-8` → `application/json`: media types are case-insensitive (RFC 9110)."""
    return (content_type or "application/json").split(";")[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type declares JSON (a missing one counts as JSON)."""
    kind = media_type(content_type)
    return kind == "application/json" or kind.endswith("+json")


def body_problem(*, size: int, content_type: str | None) -> ServiceError | None:
    """The 413 or 415 a body of `size` bytes declared as `content_type` gets, if any (the local API asks too)."""
    if size > MAX_BODY_BYTES:
        return PayloadTooLarge(f"the body is {size} bytes; at most {MAX_BODY_BYTES} (256 KiB) are accepted")
    if not is_json(content_type):
        return UnsupportedMediaType(f"Content-Type must be application/json, not {media_type(content_type)}")
    return None


def _invalid_body(reason: str) -> RequestValidationError:
    return RequestValidationError([{"type": "body", "loc": ("body",), "msg": reason, "input": None, "ctx": {}}])


def check_body(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response:
    """The body checks every POST shares, once, before validation: size (413), JSON media type (415),
    present (422) and one JSON object (422: Powertools would take the first item of an array)."""
    event = app.current_event
    body = event.body or ""
    size = len(base64.b64decode(body)) if event.is_base64_encoded else len(body.encode("utf-8", "surrogatepass"))
    content_type = event.headers.get("content-type")
    problem = body_problem(size=size, content_type=content_type)
    if problem is not None:
        raise problem
    if content_type is not None:  # Powertools' parser compares case-sensitively: hand it the lower-case form
        headers = event.raw_event.get("headers") or {}
        for name in [name for name in headers if name.lower() == "content-type"]:
            headers[name] = media_type(content_type)
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        parsed = event.json_body
    except json.JSONDecodeError:
        return next_middleware(app)  # the validator answers it as malformed JSON
    if not isinstance(parsed, dict):
        kind = "an array" if isinstance(parsed, list) else f"a JSON {type(parsed).__name__}"
        raise _invalid_body(f"must be one JSON object (one report), not {kind}")
    return next_middleware(app)


# A route with a body: `@app.post(path, **BODY_ROUTE)`. Powertools 3 runs the resolver's validation before any
# middleware, so such routes turn it off and run the same validator themselves, after the body check.
BODY_ROUTE: dict[str, Any] = {
    "enable_validation": False,
    "middlewares": [check_body, OpenAPIRequestValidationMiddleware()],
}


def error_response(
    status: HTTPStatus, error: str, message: str, details: list[ErrorDetail] | None = None, **headers: str
) -> Response:
    body = ErrorBody(error=error, message=message, details=details or [])
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump(),
        headers=headers or None,
    )


def error_responses(*statuses: int) -> dict[int, dict[str, Any]]:
    """OpenAPI `responses` entries for error statuses, all with the ErrorBody shape, plus API Gateway's 403
    for a missing or wrong key (its own `{"message"}` shape): every route that lists its errors needs the key."""
    forbidden = {"description": "No API key, or a wrong one", "content": {"application/json": {"model": GatewayError}}}
    return {403: forbidden} | {
        status: {"description": HTTPStatus(status).phrase, "content": {"application/json": {"model": ErrorBody}}}
        for status in statuses
    }


def field_name(location: tuple[Any, ...]) -> str:
    """`("body", "metricsSummary", "p95_ms")` → `metricsSummary.p95_ms`; headers and queries say so."""
    where, *path = location or ("body",)
    dotted = ".".join(str(part) for part in path if part != "[key]")
    if where == "body":
        return dotted or "body"
    return f"{where} {dotted}".strip()


def validation_details(errors: list[dict[str, Any]]) -> list[ErrorDetail]:
    details = []
    for error in errors:
        reason = error.get("msg", error.get("type", "invalid"))
        details.append(
            ErrorDetail(field=field_name(tuple(error.get("loc", ()))), reason=reason.removeprefix("Value error, "))
        )
    return details


def register_error_handlers(app: APIGatewayRestResolver) -> None:
    """Map every exception a route can raise to the error contract."""

    def writes(message: str) -> str:
        """A failed write says nothing was stored; a failed read says nothing about storing."""
        return f"{message}; nothing was stored" if app.current_event.http_method != "GET" else message

    @app.exception_handler(RequestValidationError)
    def invalid_request(error: RequestValidationError) -> Response:
        errors = list(error.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = errors[0].get("ctx") or {}
            return error_response(
                HTTPStatus.BAD_REQUEST,
                "malformed_json",
                f"the body is not valid JSON: {ctx.get('error', '')}".rstrip(": "),
            )
        details = validation_details(errors)
        fields = ", ".join(dict.fromkeys(detail.field for detail in details))
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "validation_failed", f"invalid: {fields}", details)

    @app.exception_handler(RecursionError)
    def nested_too_deeply(error: RecursionError) -> Response:
        return error_response(HTTPStatus.BAD_REQUEST, "malformed_json", "the body's JSON is nested too deeply")

    @app.exception_handler(UnicodeDecodeError)
    def not_utf8(error: UnicodeDecodeError) -> Response:
        # A binary body (API Gateway passes it base64-encoded) that is not UTF-8 cannot be JSON.
        return error_response(
            HTTPStatus.BAD_REQUEST, "malformed_json", f"the body is not valid UTF-8, so not JSON: {error.reason}"
        )

    @app.exception_handler([*ERROR_STATUSES, Exception])
    def mapped(error: Exception) -> Response:
        kind = error_kind(error)
        if kind.status == HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.exception("unexpected error")  # our bug or our deployment's: logged, never shown
            return error_response(kind.status, kind.code, writes(kind.message.format(error=error)))
        details = [ErrorDetail(field=kind.field, reason=kind.reason or str(error))] if kind.field else None
        if kind.status == HTTPStatus.SERVICE_UNAVAILABLE:
            logger.warning("database unavailable", extra={"reason": str(error)})
            message = writes(kind.message) + ", retry later"
            return error_response(kind.status, kind.code, message, details, **{"Retry-After": str(RETRY_AFTER_SECONDS)})
        return error_response(kind.status, kind.code, kind.message.format(error=error), details)


@cache
def _page_and_policy(path: Path) -> tuple[str, str]:
    """A page and its Content-Security-Policy, read once per warm instance.

    The policy allows exactly the page's own inline scripts and styles (by hash) and requests to its own
    origin: nothing injected into the page could run, and nothing can be loaded from or sent elsewhere.
    """
    html = path.read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", html, flags=re.DOTALL)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, policy


def static_page(path: Path) -> Response:
    """A self-contained HTML page (inline scripts and styles only), served with a strict policy."""
    html, policy = _page_and_policy(path)
    headers = {
        "Cache-Control": "no-store",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return Response(status_code=200, content_type="text/html; charset=utf-8", body=html, headers=headers)
