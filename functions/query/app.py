"""GET /experiments (rows, filtered and paged), GET /experiments/compare (variants against a baseline),
GET /experiments/series (metrics over time, for charts), GET /experiments/metrics (an experiment's keys) and
GET /experiments/changes (the change points `make regressions` stored for an experiment).

GET /dashboard serves the static page functions/query/dashboard.html (built from dashboard/index.html by
scripts/build_dashboard.py); it needs no key, the page asks for one and sends it to the two routes above.

Routes only; SQL and statistics live in `experiments.query`, `experiments.stats` and `experiments.changes`.
"""

from pathlib import Path
from typing import Annotated

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import AfterValidator, StringConstraints

from experiments.changes import stored_changes
from experiments.config import METRICS_NAMESPACE, SERVICE_NAME
from experiments.db import Database
from experiments.errors import NotFound
from experiments.http import error_responses, register_error_handlers, static_page
from experiments.limits import (
    DEFAULT_SERIES_POINTS,
    MAX_COMPARE_RUNS,
    MAX_METRIC_KEY_LENGTH,
    MAX_SERIES_METRICS,
    MAX_SERIES_POINTS,
    MAX_SERIES_VARIANTS,
    MAX_THRESHOLD_PCT,
    MAX_VARIANT_LENGTH,
)
from experiments.models import (
    ChangesReport,
    ComparisonReport,
    ExperimentPage,
    MetricList,
    ReportDate,
    SeriesReport,
    storable_text,
)
from experiments.names import experiment_label
from experiments.params import Name, OptionalName, OptionalVariant, Variant
from experiments.query import ListFilters, compare_variants, list_experiments
from experiments.series import experiment_metrics, metric_series

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE)
# No X-Ray SDK (it would bring its own botocore into the layer): Lambda's active tracing records each invocation.
app = APIGatewayRestResolver(enable_validation=True)
register_error_handlers(app)
database = Database()  # connects on the first request, then stays open while the instance is warm

OptionalMetricKey = Annotated[
    str | None, Query(min_length=1, max_length=MAX_METRIC_KEY_LENGTH), AfterValidator(storable_text)
]
MetricKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_METRIC_KEY_LENGTH), AfterValidator(storable_text)
]
VariantName = Annotated[str, StringConstraints(max_length=MAX_VARIANT_LENGTH), AfterValidator(experiment_label)]
DASHBOARD_HTML = Path(__file__).with_name("dashboard.html")


@app.get(
    "/experiments",
    summary="Stored rows, newest first, filtered; follow nextCursor for older pages",
    responses={200: {"description": "One page of rows, newest first"}, **error_responses(400, 422, 503)},
)
def get_experiments(
    name: OptionalName = None,
    variant: OptionalVariant = None,
    metric: OptionalMetricKey = None,
    created_from: Annotated[ReportDate | None, Query(alias="from", description="ISO 8601, inclusive")] = None,
    created_to: Annotated[ReportDate | None, Query(alias="to", description="ISO 8601, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, description="nextCursor of the previous page")] = None,
) -> ExperimentPage:
    filters = ListFilters(name, variant, metric, created_from, created_to)
    return database.run(lambda conn: list_experiments(conn, filters, limit=limit, cursor=cursor))


@app.get(
    "/experiments/compare",
    summary="Per metric and variant: runs, latest, median of recent runs, change and verdict vs the baseline",
    responses={200: {"description": "The comparison"}, **error_responses(404, 422, 503)},
)
def get_comparison(
    name: Name,
    baseline: Variant = "baseline",
    runs: Annotated[int, Query(ge=1, le=MAX_COMPARE_RUNS, description="How many recent runs per variant")] = 5,
    threshold: Annotated[float, Query(ge=0, le=MAX_THRESHOLD_PCT, description="Smallest change in % to call")] = 5.0,
) -> ComparisonReport:
    report = database.run(
        lambda conn: compare_variants(conn, name, baseline=baseline, runs=runs, threshold_pct=threshold)
    )
    if not report.metrics:
        raise NotFound(f"no experiment named {name!r}")
    return report


@app.get(
    "/experiments/series",
    summary="Metrics over time per variant (only those asked for), downsampled to at most `points` per series",
    responses={200: {"description": "One series per metric and variant"}, **error_responses(404, 422, 503)},
)
def get_series(
    name: Name,
    metric: Annotated[
        list[MetricKey],
        Query(min_length=1, max_length=MAX_SERIES_METRICS, description="A metric key; repeat for more"),
    ],
    variant: Annotated[
        list[VariantName] | None,
        Query(max_length=MAX_SERIES_VARIANTS, description="A variant; repeat for more (default: every variant)"),
    ] = None,
    points: Annotated[
        int,
        Query(ge=2, le=MAX_SERIES_POINTS, description="Most points per series; more runs are downsampled (min/max)"),
    ] = DEFAULT_SERIES_POINTS,
) -> SeriesReport:
    return database.run(lambda conn: metric_series(conn, name, metric, variant, points=points))


@app.get(
    "/experiments/metrics",
    summary="The experiment's metric keys and which way each should go",
    responses={200: {"description": "The keys, sorted"}, **error_responses(404, 422, 503)},
)
def get_metrics(name: Name) -> MetricList:
    return database.run(lambda conn: experiment_metrics(conn, name))


@app.get(
    "/experiments/changes",
    summary="Change points in each variant's metrics over time (Apache Otava, stored by make regressions)",
    responses={200: {"description": "The stored change points, oldest first"}, **error_responses(404, 422, 503)},
)
def get_changes(name: Name) -> ChangesReport:
    return database.run(lambda conn: stored_changes(conn, name))


@app.get("/dashboard", include_in_schema=False)
def get_dashboard() -> Response[str]:
    return static_page(DASHBOARD_HTML)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
