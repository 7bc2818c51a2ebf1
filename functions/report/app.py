"""POST /experiments/report: validate a k6 report and store one `experiments` row per metric.

Routes only; the rules live in the `experiments` package (models: validation, store: SQL, http: errors).
"""

from http import HTTPStatus
from typing import Annotated

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from experiments.auth import caller_id
from experiments.config import METRICS_NAMESPACE, SERVICE_NAME, idempotency_key_ttl_days
from experiments.db import Database
from experiments.errors import DatabaseUnavailable
from experiments.http import BODY_ROUTE, error_responses, parse_json, register_error_handlers
from experiments.models import ExperimentReport, ReportStored
from experiments.store import PurgeSchedule, RequestSource, purge_expired_keys, save_report

logger = Logger(service=SERVICE_NAME)
tracer = Tracer()
metrics = Metrics(namespace=METRICS_NAMESPACE)
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
        "report stored", extra={"experiment": report.name, "variant": report.variant, "replayed": outcome.replayed}
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
@tracer.capture_lambda_handler(capture_response=False)  # one subsegment per request; answers stay out of traces
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
