"""Reading experiments back: filtered, newest-first pages with a keyset cursor, and variant comparisons.

Pages read `experiments` itself; comparisons read the read model in schema `ingest` (kept by triggers on
`experiments`, see db/migrations/0003_runs_read_model.sql), whose cost does not grow with the history.

Pages are ordered by ("createdAt", id) descending and the cursor is the last row's pair, so a page never
repeats or skips a row that existed when paging started, even while new reports arrive (they are newer,
so they sort before the cursor). A page also ends before it would pass `limits.MAX_PAGE_BYTES` (a report's
metadata is copied onto each of its rows, so 100 rows may be megabytes); its cursor then carries on.
Queries are composed only from the constant fragments below; every value is a bound parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from statistics import median
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from experiments.errors import InvalidCursor
from experiments.k6summary import HIGHER, direction, parse_key
from experiments.limits import MAX_PAGE_BYTES
from experiments.models import (
    ComparisonReport,
    ExperimentPage,
    ExperimentRow,
    MetricComparison,
    VariantSummary,
)
from experiments.stats import compare_runs

LIST_COLUMNS = sql.SQL('SELECT id, name, description, variant, metric, value, metadata, "createdAt" FROM experiments')
FILTERS = {
    "name": sql.SQL("name = %(name)s"),
    "variant": sql.SQL("variant = %(variant)s"),
    "metric": sql.SQL("metric = %(metric)s"),
    "created_from": sql.SQL('"createdAt" >= %(created_from)s'),
    "created_to": sql.SQL('"createdAt" < %(created_to)s'),
    # Written so the createdAt index bounds the scan; the id breaks ties between rows of one report.
    "cursor": sql.SQL('"createdAt" <= %(cursor_at)s AND ("createdAt" < %(cursor_at)s OR id < %(cursor_id)s)'),
}
NEWEST_FIRST = sql.SQL('ORDER BY "createdAt" DESC, id DESC LIMIT %(limit)s')

# The read model (db/migrations/0003_runs_read_model.sql): per metric and variant, its count and its last
# `runs` values by one index range each. Its cost follows metrics x variants x runs asked, not the history.
RECENT_RUNS = """
SELECT c.metric, c.variant, v.value, c.runs
FROM ingest.metric_counts AS c
CROSS JOIN LATERAL (
    SELECT r.value, r.created_at, r.id FROM ingest.run_values AS r
    WHERE r.name = c.name AND r.metric = c.metric AND r.variant = c.variant
    ORDER BY r.created_at DESC, r.id DESC
    LIMIT %(runs)s
) AS v
WHERE c.name = %(name)s
ORDER BY c.metric, c.variant, v.created_at DESC, v.id DESC
"""

# The globs of the latest run that said which way its own metrics should go (the reporter's
# --higher-is-better / --lower-is-better, kept in metadata.directions): one probe of a partial index.
DIRECTIONS = """
SELECT directions FROM ingest.runs
WHERE name = %(name)s AND directions IS NOT NULL
ORDER BY created_at DESC LIMIT 1
"""


@dataclass(frozen=True)
class ListFilters:
    name: str | None = None
    variant: str | None = None
    metric: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created_at), str(row_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as error:
        raise InvalidCursor("not a cursor from a previous page") from error


def list_query(filters: ListFilters, *, limit: int, cursor: str | None = None) -> tuple[sql.Composed, dict[str, Any]]:
    """The page query and its parameters (one row more than `limit`, to know whether another page follows)."""
    params: dict[str, Any] = {key: value for key, value in vars(filters).items() if value is not None}
    if cursor is not None:
        params["cursor_at"], params["cursor_id"] = decode_cursor(cursor)
    conditions = [FILTERS[key] for key in FILTERS if key in params or (key == "cursor" and cursor is not None)]
    where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    return sql.SQL(" ").join([LIST_COLUMNS, where, NEWEST_FIRST]), params | {"limit": limit + 1}


def list_experiments(
    connection: psycopg.Connection, filters: ListFilters, *, limit: int, cursor: str | None = None
) -> ExperimentPage:
    """One page of rows, newest first, and the cursor of the next page."""
    with connection.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(*list_query(filters, limit=limit, cursor=cursor)).fetchall()
    more = len(rows) > limit
    items: list[ExperimentRow] = []
    size = 0
    for row in rows[:limit]:
        item = ExperimentRow(**{**row, "value": float(row["value"]), "createdAt": iso_utc(row["createdAt"])})
        item_bytes = answer_bytes(item.model_dump(mode="json")) + 1  # and its comma
        if items and size + item_bytes > MAX_PAGE_BYTES - PAGE_ENVELOPE_BYTES:
            more = True  # the page is full in bytes before it is in rows: the cursor carries on from here
            break
        items.append(item)
        size += item_bytes
        last = row
    next_cursor = encode_cursor(last["createdAt"], last["id"]) if more and items else None
    return ExperimentPage(items=items, nextCursor=next_cursor)


# Everything of a page's answer but its items: the proxy response's fields, headers, the page's keys and cursor.
PAGE_ENVELOPE_BYTES = 4096


def answer_bytes(value: Any) -> int:
    """Bytes `value` takes in Lambda's answer: serialized as the body (compact, ASCII-escaped, as Powertools
    does), then escaped once more as the proxy response's `body` string."""
    return len(json.dumps(json.dumps(value, separators=(",", ":"))))


def compare_variants(
    connection: psycopg.Connection, name: str, *, baseline: str, runs: int, threshold_pct: float
) -> ComparisonReport:
    """Per metric and variant: runs, latest value, median of the last `runs`, and the verdict vs `baseline`."""
    recent: dict[str, dict[str, list[float]]] = {}
    totals: dict[tuple[str, str], int] = {}
    for metric, variant, value, count in connection.execute(RECENT_RUNS, {"name": name, "runs": runs}):
        recent.setdefault(metric, {}).setdefault(variant, []).append(float(Decimal(value)))
        totals[metric, variant] = count

    higher_globs, lower_globs = latest_directions(connection, name) if recent else ((), ())

    metrics = []
    for metric, by_variant in recent.items():
        way = direction(metric, higher_globs, lower_globs)
        baseline_values = by_variant.get(baseline, [])
        summaries = []
        for variant, values in sorted(by_variant.items(), key=lambda item: (item[0] != baseline, item[0])):
            is_baseline = variant == baseline
            comparison = None if is_baseline else compare_runs(way, baseline_values, values, threshold_pct)
            summaries.append(
                VariantSummary(
                    variant=variant,
                    runs=totals[metric, variant],
                    latest=values[0],
                    median=median(values),
                    changePct=comparison.change_pct if comparison else None,
                    verdict=comparison.verdict if comparison else None,
                    method=comparison.method if comparison else None,
                    pValue=comparison.p_value if comparison else None,
                )
            )
        higher = None if way is None else way == HIGHER
        k6_metric, tags, stat = parse_key(metric)
        metrics.append(
            MetricComparison(
                metric=metric, k6Metric=k6_metric, tags=dict(tags), stat=stat, higherIsBetter=higher, variants=summaries
            )
        )
    return ComparisonReport(name=name, baseline=baseline, runs=runs, thresholdPct=threshold_pct, metrics=metrics)


def latest_directions(connection: psycopg.Connection, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (higher, lower) globs of the experiment's latest run that gave directions, else empty."""
    row = connection.execute(DIRECTIONS, {"name": name}).fetchone()
    return (_globs(row[0], "higher"), _globs(row[0], "lower")) if row else ((), ())


def _globs(directions: dict[str, Any], way: str) -> tuple[str, ...]:
    """The string globs of `directions[way]`. Our reports are checked on the way in, but the Prisma backend
    may write any JSON into metadata, so anything but a list of strings counts as no globs."""
    globs = directions.get(way)
    return tuple(glob for glob in globs if isinstance(glob, str)) if isinstance(globs, list) else ()


def iso_utc(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"
