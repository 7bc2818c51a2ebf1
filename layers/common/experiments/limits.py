"""The API's limits and its one rounding rule, in one place: standard library only.

The API's models (`experiments.models`) and the stdlib-only reporter (`scripts/report_k6_result.py`) both import
this module, so a limit is written once and the reporter never sends what the API would refuse.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# The `value` column is DECIMAL(10,4): at most 6 digits before the point and 4 after.
COLUMN_DECIMALS = 4
COLUMN_MAX = Decimal("999999.9999")
FOUR_PLACES = Decimal(1).scaleb(-COLUMN_DECIMALS)

MAX_BODY_BYTES = 256 * 1024
MAX_METRICS = 1000
MAX_METRIC_KEY_LENGTH = 512
MAX_NAME_LENGTH = 200
MAX_VARIANT_LENGTH = 100

# GET /experiments/compare (and the reporter's regression gate).
MAX_COMPARE_RUNS = 100
MAX_THRESHOLD_PCT = 1000.0

# Time: every request answers before the function's 10 s timeout, however the database or AWS fails.
# The database part of a request (connect, session set-up, the work) ends by this deadline with a 503 +
# Retry-After; a socket that went silent is shut down by a watchdog (experiments.db) and the connection replaced.
REQUEST_DEADLINE_S = 8.0
# Secrets Manager (experiments.config): at most 2 attempts of (1 s connect + 1.5 s read) = 5 s, inside the deadline.
SECRETS_CONNECT_TIMEOUT_S = 1.0
SECRETS_READ_TIMEOUT_S = 1.5
SECRETS_MAX_ATTEMPTS = 2
SECRETS_WORST_CASE_S = SECRETS_MAX_ATTEMPTS * (SECRETS_CONNECT_TIMEOUT_S + SECRETS_READ_TIMEOUT_S)

# GET /experiments/series (the dashboard's charts) and GET /experiments/metrics (its metric picker). A response
# stays under Lambda's 6 MB response payload: at most MAX_SERIES series and MAX_SERIES_TOTAL_POINTS points in
# all (each series gets its share when the requested `points` would pass it); a point is at most ~70 bytes of
# JSON, escaped again in the proxy response, so points take at most 3.5 MB and the series' names (request
# parameters or stored variant names) the rest. tests/integration/test_read_model.py checks the worst case.
MAX_SERIES_METRICS = 20
MAX_SERIES_VARIANTS = 20
MAX_SERIES = 100
DEFAULT_SERIES_POINTS = 600
MAX_SERIES_POINTS = 2000
MAX_SERIES_TOTAL_POINTS = 50_000
MAX_LISTED_METRICS = 5000
LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024


def column_value(value: float) -> Decimal | None:
    """`value` exactly as the column stores it (half away from zero, as PostgreSQL rounds); None if it does not fit."""
    try:
        stored = Decimal(repr(float(value))).quantize(FOUR_PLACES, rounding=ROUND_HALF_UP)
        return stored if stored.is_finite() and abs(stored) <= COLUMN_MAX else None
    except (InvalidOperation, ValueError, OverflowError):  # NaN, infinities, numbers too long to quantize
        return None


# POST /experiments/k6-summary: the reporter's options travel in the query string, which must stay well within
# what API Gateway and the local API accept (under 64 KiB even with every character percent-encoded as 4 bytes).
MAX_QUERY_NOTES_LENGTH = 1000
MAX_QUERY_TEXT_LENGTH = 256  # k6File, ciRunUrl, rawFile
MAX_QUERY_GLOBS = 8  # per glob parameter (metric, exclude-metric, higher-is-better, lower-is-better)
MAX_QUERY_GLOB_LENGTH = 80
