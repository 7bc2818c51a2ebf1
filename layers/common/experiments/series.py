"""The dashboard's reads: a metric's values over time per variant, and the experiment's metric keys.

Both read the read model in schema `ingest` (db/migrations/0003_runs_read_model.sql), never `experiments`:
a series is one index range of `ingest.run_values` (only the metrics asked for, whatever else the runs hold),
and the keys and run counts come from `ingest.metric_counts` without touching a run.

A series with more runs than the chart has points is downsampled: its runs, oldest first, are cut into
`points // 2` buckets of consecutive runs, and each bucket keeps its lowest and its highest run (one if they
are the same run), in time order. Spikes and dips survive (an average would hide a single bad night), and a
flat stretch costs two points per bucket. The response stays under Lambda's 6 MB (see `experiments.limits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from experiments.errors import NotFound, TooManySeries
from experiments.k6summary import HIGHER, direction
from experiments.limits import MAX_LISTED_METRICS, MAX_SERIES, MAX_SERIES_TOTAL_POINTS, MAX_VARIANT_LENGTH
from experiments.models import MetricInfo, MetricList, MetricSeries, SeriesPoint, SeriesReport
from experiments.query import latest_directions

# The (metric, variant) series asked for, with their run counts; variants longer than the API accepts
# (possible only for rows written past the API) are left out, so every name in the answer is bounded.
SERIES_COUNTS = """
SELECT metric, variant, runs FROM ingest.metric_counts
WHERE name = %(name)s AND metric = ANY(%(metrics)s)
  AND (%(variants)s::text[] IS NULL OR variant = ANY(%(variants)s::text[]))
  AND length(variant) <= %(max_variant_length)s
"""

# Each series oldest first, downsampled in the database so only the points kept travel: one backward range
# scan of the read model's index per series, numbered; past its limit a series is cut into limit / 2 buckets of
# consecutive runs and each bucket keeps its lowest and highest run (the earliest of equals).
SERIES_POINTS = """
WITH numbered AS (
    SELECT s.n, v.created_at, v.value, v.id, v.i, v.total
    FROM unnest(%(metrics)s::text[], %(variants)s::text[]) WITH ORDINALITY AS s(metric, variant, n)
    CROSS JOIN LATERAL (
        SELECT r.created_at, r.value, r.id, row_number() OVER w - 1 AS i, count(*) OVER () AS total
        FROM ingest.run_values AS r
        WHERE r.name = %(name)s AND r.metric = s.metric AND r.variant = s.variant
        WINDOW w AS (ORDER BY r.created_at, r.id)
    ) AS v
), bucketed AS (
    SELECT n, created_at, value, id, total, total > %(points)s AS downsampled,
           CASE WHEN total > %(points)s THEN i * (%(points)s / 2) / total ELSE i END AS bucket
    FROM numbered
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY n, bucket ORDER BY value, created_at, id) AS low,
              row_number() OVER (PARTITION BY n, bucket ORDER BY value DESC, created_at, id) AS high
    FROM bucketed
)
SELECT n, to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), value::float8, total, downsampled
FROM ranked
WHERE NOT downsampled OR low = 1 OR high = 1
ORDER BY n, created_at, id
"""

METRIC_KEYS = """
SELECT DISTINCT metric FROM ingest.metric_counts WHERE name = %(name)s ORDER BY metric LIMIT %(limit)s
"""


def metric_series(
    connection: psycopg.Connection,
    name: str,
    metrics: Sequence[str],
    variants: Sequence[str] | None = None,
    *,
    points: int,
) -> SeriesReport:
    """Per requested metric (in the order asked) and variant (sorted): its runs over time, downsampled to
    at most `points` (fewer when many series share MAX_SERIES_TOTAL_POINTS). NotFound when none is stored."""
    metrics = list(dict.fromkeys(metrics))
    params = {
        "name": name,
        "metrics": metrics,
        "variants": list(dict.fromkeys(variants)) if variants else None,
        "max_variant_length": MAX_VARIANT_LENGTH,
    }
    order = {metric: position for position, metric in enumerate(metrics)}
    found = sorted(connection.execute(SERIES_COUNTS, params).fetchall(), key=lambda row: (order[row[0]], row[1]))
    if not found:
        raise NotFound(f"no metric {', '.join(map(repr, metrics))} stored for experiment {name!r}")
    if len(found) > MAX_SERIES:
        raise TooManySeries(
            f"{len(found)} series (metrics x variants) match; at most {MAX_SERIES}: ask for fewer metrics or variants"
        )
    per_series = min(points, MAX_SERIES_TOTAL_POINTS // len(found))

    kept: list[list[SeriesPoint]] = [[] for _ in found]
    runs = [row[2] for row in found]
    downsampled = [False for _ in found]
    lists = {
        "name": name,
        "metrics": [row[0] for row in found],
        "variants": [row[1] for row in found],
        "points": per_series,
    }
    for position, created_at, value, total, cut in connection.execute(SERIES_POINTS, lists):
        kept[position - 1].append(SeriesPoint(createdAt=created_at, value=value))
        runs[position - 1], downsampled[position - 1] = total, cut
    series = [
        MetricSeries(variant=variant, metric=metric, totalRuns=total, downsampled=cut, points=points_)
        for (metric, variant, _), total, cut, points_ in zip(found, runs, downsampled, kept, strict=True)
    ]
    return SeriesReport(name=name, series=series)


def experiment_metrics(connection: psycopg.Connection, name: str) -> MetricList:
    """The experiment's metric keys (sorted, at most MAX_LISTED_METRICS) and which way each should go."""
    keys = [row[0] for row in connection.execute(METRIC_KEYS, {"name": name, "limit": MAX_LISTED_METRICS + 1})]
    if not keys:
        raise NotFound(f"no experiment named {name!r}")
    higher_globs, lower_globs = latest_directions(connection, name)
    listed = []
    for key in keys[:MAX_LISTED_METRICS]:
        way = direction(key, higher_globs, lower_globs)
        listed.append(MetricInfo(metric=key, higherIsBetter=None if way is None else way == HIGHER))
    return MetricList(name=name, metrics=listed, truncated=len(keys) > MAX_LISTED_METRICS)
