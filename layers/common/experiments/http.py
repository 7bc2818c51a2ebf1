"""The API's error contract, in one place: every failure is `{"error", "message", "details"}` with its status.

400 malformed JSON, 409 idempotency conflict, 413 body over 256 KiB, 415 not JSON, 422 validation (each
offending field named), 503 + Retry-After when the database is unavailable, 500 for our own bugs (logged,
never shown). Domain exceptions are mapped here by type, never by matching messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from experiments.config import SERVICE_NAME
from experiments.db import DatabaseUnavailable
from experiments.errors import InvalidCursor, NotFound, TooManySeries  # not the read side's modules
from experiments.models import ErrorBody, ErrorDetail, GatewayError
from experiments.store import IdempotencyConflict

MAX_BODY_BYTES = 256 * 1024
RETRY_AFTER_SECONDS = 2

logger = Logger(service=SERVICE_NAME, child=True)


class PayloadTooLarge(Exception):
    """The request body is over MAX_BODY_BYTES."""


class UnsupportedMediaType(Exception):
    """The request body is declared as something other than JSON."""


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


def check_body(event: APIGatewayProxyEvent) -> None:
    """Refuse bodies over the size limit or not declared as JSON (a missing Content-Type counts as JSON)."""
    body = event.body or ""
    size = len(base64.b64decode(body)) if event.is_base64_encoded else len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {size} bytes; at most {MAX_BODY_BYTES} (256 KiB) are accepted")
    content_type = (event.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {content_type}")


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

    @app.exception_handler(RequestValidationError)
    def invalid_request(error: RequestValidationError) -> Response:
        problem = _body_problem(app.current_event)
        if problem is not None:
            return problem
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

    @app.exception_handler(RequestUnsupportedContentType)
    def unsupported_content_type(error: RequestUnsupportedContentType) -> Response:
        return _body_problem(app.current_event) or error_response(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Content-Type must be application/json"
        )

    @app.exception_handler([PayloadTooLarge, UnsupportedMediaType])
    def body_refused(error: PayloadTooLarge | UnsupportedMediaType) -> Response:
        return _body_refused(error)

    @app.exception_handler(InvalidCursor)
    def bad_cursor(error: InvalidCursor) -> Response:
        return error_response(
            HTTPStatus.BAD_REQUEST, "invalid_parameter", f"invalid cursor: {error}",
            [ErrorDetail(field="query cursor", reason=str(error))],
        )  # fmt: skip

    @app.exception_handler(TooManySeries)
    def too_many_series(error: TooManySeries) -> Response:
        return error_response(
            HTTPStatus.UNPROCESSABLE_ENTITY, "validation_failed", str(error),
            [ErrorDetail(field="query metric", reason=str(error))],
        )  # fmt: skip

    @app.exception_handler(NotFound)
    def not_found(error: NotFound) -> Response:
        return error_response(HTTPStatus.NOT_FOUND, "not_found", str(error))

    @app.exception_handler(RecursionError)
    def nested_too_deeply(error: RecursionError) -> Response:
        return error_response(HTTPStatus.BAD_REQUEST, "malformed_json", "the body's JSON is nested too deeply")

    @app.exception_handler(UnicodeDecodeError)
    def not_utf8(error: UnicodeDecodeError) -> Response:
        # A binary body (API Gateway passes it base64-encoded) that is not UTF-8 cannot be JSON.
        return _body_problem(app.current_event) or error_response(
            HTTPStatus.BAD_REQUEST, "malformed_json", f"the body is not valid UTF-8, so not JSON: {error.reason}"
        )

    @app.exception_handler(IdempotencyConflict)
    def key_reused(error: IdempotencyConflict) -> Response:
        return error_response(
            HTTPStatus.CONFLICT,
            "idempotency_conflict",
            "this Idempotency-Key was already used with a different body",
            [ErrorDetail(field="header Idempotency-Key", reason="already used with a different body")],
        )

    @app.exception_handler(DatabaseUnavailable)
    def database_unavailable(error: DatabaseUnavailable) -> Response:
        logger.warning("database unavailable", extra={"reason": str(error)})
        return error_response(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; nothing was written, retry later",
            **{"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(Exception)
    def unexpected(error: Exception) -> Response:
        # The validator can fail on a body it should never have parsed (multipart/form-data without a
        # boundary raises ValueError): a body refused for its type or size is a 415 or 413, not our bug.
        problem = _body_problem(app.current_event)
        if problem is not None:
            return problem
        logger.exception("unexpected error")
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "internal error; nothing was stored")


def _body_refused(error: PayloadTooLarge | UnsupportedMediaType) -> Response:
    if isinstance(error, PayloadTooLarge):
        return error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large", str(error))
    return error_response(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", str(error))


def _body_problem(event: APIGatewayProxyEvent) -> Response | None:
    """A 413 or 415 takes precedence over whatever the validator found in such a body."""
    try:
        check_body(event)
    except (PayloadTooLarge, UnsupportedMediaType) as error:
        return _body_refused(error)
    return None


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
