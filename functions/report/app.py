"""POST /experiments/report: validate a k6 report and store one `experiments` row per metric.

Routes only; the rules live in the `experiments` package (models: validation, store: SQL, http: errors).
"""

from http import HTTPStatus
from typing import Annotated

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from experiments.config import METRICS_NAMESPACE, SERVICE_NAME
from experiments.db import Database
from experiments.http import check_body, error_responses, parse_json, register_error_handlers
from experiments.models import ExperimentReport, ReportStored
from experiments.store import RequestSource, save_report

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE)
app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=parse_json)
register_error_handlers(app)
database = Database()  # connects on the first request, then stays open while the instance is warm

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Same key + same body again → 200 replay, nothing written; different body → 409",
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
)
def post_report(
    report: Annotated[ExperimentReport, Body()], idempotency_key: IdempotencyKey = None
) -> Response[ReportStored]:
    check_body(app.current_event)
    event = app.current_event
    source = RequestSource(
        request_id=event.request_context.request_id,
        source_ip=event.request_context.identity.source_ip,
        user_agent=event.request_context.identity.user_agent,  # as API Gateway saw it
    )
    outcome = database.run(
        lambda conn: save_report(conn, report, idempotency_key=idempotency_key, source=source), single_statement=True
    )
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


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
