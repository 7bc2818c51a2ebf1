"""POST /experiments/report and POST /experiments/k6-summary: store one `experiments` row per metric of a k6 run.

/experiments/report takes the reporter's body; /experiments/k6-summary takes the summary document exactly as k6
wrote it (handleSummary data, --summary-export or machine-readable), maps it with `experiments.k6summary` (the
reporter's mapping) and stores it the same way, with the same Idempotency-Key, statuses and limits.

Routes only; the rules live in the `experiments` package (models: validation, store: SQL, http: errors).
"""

from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import JsonValue, StringConstraints, ValidationError

from experiments.auth import caller_id
from experiments.config import METRICS_NAMESPACE, SERVICE_NAME, idempotency_key_ttl_days
from experiments.db import Database
from experiments.errors import DatabaseUnavailable
from experiments.http import BODY_ROUTE, error_responses, parse_json, register_error_handlers
from experiments.k6ingest import IngestOptions, report_body
from experiments.k6summary import SummaryError
from experiments.limits import (
    MAX_QUERY_GLOB_LENGTH,
    MAX_QUERY_GLOBS,
    MAX_QUERY_NOTES_LENGTH,
    MAX_QUERY_TEXT_LENGTH,
)
from experiments.models import ExperimentReport, ReportStored
from experiments.params import Name, OptionalVariant
from experiments.store import PurgeSchedule, RequestSource, purge_expired_keys, save_report

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE)
# No X-Ray SDK (it would bring its own botocore into the layer): Lambda's active tracing records each invocation.
app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=parse_json)
register_error_handlers(app)
database = Database()  # connects on the first request, then stays open while the instance is warm
purge_schedule = PurgeSchedule()  # expired Idempotency-Keys go on the first request, then at most hourly

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Same key + same body again → 200 replay, nothing written; different body → 409. "
        "Keys belong to the API key that sent them and expire after IDEMPOTENCY_KEY_TTL_DAYS (30)",
    ),
]


@app.post(
    "/experiments/report",
    summary="Store a k6 run's metrics, one experiments row per metric",
    responses={
        201: {"description": "Stored", "content": {"application/json": {"model": ReportStored}}},
        200: {
            "description": "Replay of an earlier request with this Idempotency-Key; nothing written",
            "content": {"application/json": {"model": ReportStored}},
        },
        **error_responses(400, 409, 413, 415, 422, 503),
    },
    **BODY_ROUTE,  # size, media type and one JSON object checked once, before validation
)
def post_report(
    report: Annotated[ExperimentReport, Body()], idempotency_key: IdempotencyKey = None
) -> Response[ReportStored]:
    return store(report, idempotency_key, route="report")


Glob = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_GLOB_LENGTH)]
QueryText = Annotated[str, StringConstraints(max_length=MAX_QUERY_TEXT_LENGTH)]


def globs(alias: str, description: str) -> Any:
    """A repeatable glob query parameter (`?metric=a&metric=b`)."""
    return Query(alias=alias, max_length=MAX_QUERY_GLOBS, description=description)


@app.post(
    "/experiments/k6-summary",
    summary="Store a k6 run from its summary document as k6 wrote it (handleSummary data or --summary-export)",
    description="The body is k6's own JSON: handleSummary's `data`, a `--summary-export` file or a machine-readable "
    "summary (k6 1.5+). It is mapped to metric keys by the reporter's own mapping (README: metric keys), then stored "
    "as POST /experiments/report stores a report: same Idempotency-Key rules, statuses and limits. The query "
    "parameters are the reporter's options.",
    responses={
        201: {"description": "Stored", "content": {"application/json": {"model": ReportStored}}},
        200: {
            "description": "Replay of an earlier request with this Idempotency-Key; nothing written",
            "content": {"application/json": {"model": ReportStored}},
        },
        **error_responses(400, 409, 413, 415, 422, 503),
    },
    **BODY_ROUTE,  # size, media type and one JSON object checked once, before validation
)
def post_k6_summary(
    summary: Annotated[dict[str, JsonValue], Body(description="The k6 summary document, unchanged")],
    name: Name,
    variant: OptionalVariant = None,
    notes: Annotated[str | None, Query(max_length=MAX_QUERY_NOTES_LENGTH)] = None,
    metric: Annotated[list[Glob] | None, globs("metric", "Also report these (the reporter's --metric)")] = None,
    exclude_metric: Annotated[list[Glob] | None, globs("exclude-metric", "Do not report these")] = None,
    higher_is_better: Annotated[list[Glob] | None, globs("higher-is-better", "Your metrics that should go up")] = None,
    lower_is_better: Annotated[list[Glob] | None, globs("lower-is-better", "Your metrics that should go down")] = None,
    k6_file: Annotated[QueryText | None, Query(alias="k6File", description="The k6 script's path")] = None,
    git_sha: Annotated[str | None, Query(alias="gitSha", max_length=64)] = None,
    ci_run_url: Annotated[QueryText | None, Query(alias="ciRunUrl")] = None,
    raw_file: Annotated[QueryText | None, Query(alias="rawFile")] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[ReportStored]:
    options = IngestOptions(
        notes=notes,
        include=metric or [],
        exclude=exclude_metric or [],
        higher=higher_is_better or [],
        lower=lower_is_better or [],
        k6_file=k6_file,
        git_sha=git_sha,
        ci_run_url=ci_run_url,
        raw_file=raw_file,
    )
    try:
        report = ExperimentReport.model_validate(report_body(summary, name, variant, options))
    except SummaryError as error:
        problem = {"loc": ("body",), "msg": f"not stored: {error}", "type": "k6_summary"}
        raise RequestValidationError([problem]) from None
    except ValidationError as error:  # e.g. a key over the length limit, or no variant to be found
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None
    return store(report, idempotency_key, route="k6-summary")


def store(report: ExperimentReport, idempotency_key: str | None, route: str) -> Response[ReportStored]:
    """Save a validated report (or replay its key's answer): the one way both routes store a run."""
    event = app.current_event
    source = RequestSource(
        request_id=event.request_context.request_id,
        source_ip=event.request_context.identity.source_ip,
        user_agent=event.request_context.identity.user_agent,  # as API Gateway saw it
    )
    caller = caller_id(event.request_context.identity.api_key_id, event.headers)
    ttl_days = idempotency_key_ttl_days()
    outcome = database.run(
        lambda conn: save_report(
            conn, report, idempotency_key=idempotency_key, caller=caller, key_ttl_days=ttl_days, source=source
        ),
        single_statement=True,
    )
    if purge_schedule.due():
        purge_expired(ttl_days)
    if outcome.replayed:
        metrics.add_metric(name="ReportsReplayed", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="ReportsStored", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="MetricRowsStored", unit=MetricUnit.Count, value=len(outcome.stored.ids))
    logger.info(
        "report stored",
        extra={"experiment": report.name, "variant": report.variant, "replayed": outcome.replayed, "route": route},
    )
    return Response(
        status_code=HTTPStatus.OK if outcome.replayed else HTTPStatus.CREATED,
        content_type=content_types.APPLICATION_JSON,
        body=outcome.stored.model_dump(),
        headers={"Idempotent-Replayed": "true"} if outcome.replayed else None,
    )


def purge_expired(ttl_days: int) -> None:
    """Delete a batch of expired Idempotency-Keys; a failure is logged and waits for the next turn."""
    try:
        purged = database.run(lambda conn: purge_expired_keys(conn, ttl_days=ttl_days), single_statement=True)
    except DatabaseUnavailable as error:
        logger.warning("expired idempotency keys not purged", extra={"reason": str(error)})
        return
    if purged:
        logger.info("expired idempotency keys purged", extra={"purged": purged})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
