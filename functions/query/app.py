"""GET /experiments (rows, filtered and paged) and GET /experiments/compare (variants against a baseline).

GET /dashboard serves the static page functions/query/dashboard.html (built from dashboard/index.html by
scripts/build_dashboard.py); it needs no key, the page asks for one and sends it to the two routes above.

Routes only; SQL and statistics live in `experiments.query` and `experiments.stats`.
"""

from pathlib import Path
from typing import Annotated

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import AfterValidator

from experiments.config import METRICS_NAMESPACE, SERVICE_NAME
from experiments.db import Database
from experiments.errors import NotFound
from experiments.http import error_responses, register_error_handlers, static_page
from experiments.limits import MAX_COMPARE_RUNS, MAX_THRESHOLD_PCT
from experiments.models import ComparisonReport, ExperimentPage, ReportDate, storable_text
from experiments.query import ListFilters, compare_variants, list_experiments

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE)
app = APIGatewayRestResolver(enable_validation=True)
register_error_handlers(app)
database = Database()  # connects on the first request, then stays open while the instance is warm

Text = Annotated[str | None, Query(min_length=1, max_length=200), AfterValidator(storable_text)]
DASHBOARD_HTML = Path(__file__).with_name("dashboard.html")


@app.get(
    "/experiments",
    summary="Stored rows, newest first, filtered; follow nextCursor for older pages",
    responses={200: {"description": "One page of rows, newest first"}, **error_responses(400, 422, 503)},
)
def get_experiments(
    name: Text = None,
    variant: Text = None,
    metric: Text = None,
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
    name: Annotated[str, Query(min_length=1, max_length=200), AfterValidator(storable_text)],
    baseline: Annotated[str, Query(min_length=1, max_length=100), AfterValidator(storable_text)] = "baseline",
    runs: Annotated[int, Query(ge=1, le=MAX_COMPARE_RUNS, description="How many recent runs per variant")] = 5,
    threshold: Annotated[float, Query(ge=0, le=MAX_THRESHOLD_PCT, description="Smallest change in % to call")] = 5.0,
) -> ComparisonReport:
    report = database.run(
        lambda conn: compare_variants(conn, name, baseline=baseline, runs=runs, threshold_pct=threshold)
    )
    if not report.metrics:
        raise NotFound(f"no experiment named {name!r}")
    return report


@app.get("/dashboard", include_in_schema=False)
def get_dashboard() -> Response[str]:
    return static_page(DASHBOARD_HTML)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
