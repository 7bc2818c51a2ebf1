"""The dashboard's reads: a metric's values over time per variant, and the experiment's metric keys.

Both read the read model in schema `ingest` (db/migrations/0003_runs_read_model.sql), never `experiments`:
a series is one index range of `ingest.run_values` (only the metrics asked for, whatever else the runs hold),
and the keys and run counts come from `ingest.metric_counts` without touching a run.

A series with more runs than the chart has points is downsampled from the rollup `ingest.series_buckets`
(db/migrations/0005_series_rollup.sql), which keeps each series' lowest and highest run per time bucket at
widths of 1 hour, 6 hours, 1 day and 1 week. The read takes the series' first and last time (two index
probes), picks the finest width at which that span is at most `BUCKETS_PER_GROUP * (points // 2)` buckets
(else the coarsest), cuts the span into `points // 2` equal stretches of time, and keeps each stretch's lowest
and highest run (one if they are the same point), in time order. So it reads at most about twice as many rows
as it returns (or one a week of the span, if more), however many runs are stored. Spikes and dips survive (an
average would hide a single bad night), a flat stretch costs two points, and a stretch without runs costs
none. The response stays under Lambda's 6 MB (see `experiments.limits`).
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

# A level is read when the series' time span covers at most this many of its buckets per point pair kept.
BUCKETS_PER_GROUP = 4

# Each series that fits (no more runs than points) whole, oldest first: one range of the read model's index.
SERIES_POINTS = """
SELECT s.n, to_char(v.created_at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), v.value::float8
FROM unnest(%(metrics)s::text[], %(variants)s::text[]) WITH ORDINALITY AS s(metric, variant, n)
CROSS JOIN LATERAL (
    SELECT r.created_at, r.value, r.id FROM ingest.run_values AS r
    WHERE r.name = %(name)s AND r.metric = s.metric AND r.variant = s.variant
) AS v
ORDER BY s.n, v.created_at, v.id
"""

# Each longer series downsampled from the rollup: its first and last time (two probes of the read model's
# index), the finest level whose buckets over that span are at most %(most_buckets)s (else the coarsest), that
# level's buckets in the span (one range of the rollup's key), cut into %(groups)s equal stretches of time,
# each keeping its lowest and its highest point (the earliest of equals).
SERIES_DOWNSAMPLED = """
WITH span AS (
    SELECT s.n, s.metric, s.variant, w.width, w.first_bucket, w.buckets
    FROM unnest(%(metrics)s::text[], %(variants)s::text[]) WITH ORDINALITY AS s(metric, variant, n)
    CROSS JOIN LATERAL (
        SELECT r.created_at FROM ingest.run_values AS r
        WHERE r.name = %(name)s AND r.metric = s.metric AND r.variant = s.variant
        ORDER BY r.created_at LIMIT 1
    ) AS f(first_at)
    CROSS JOIN LATERAL (
        SELECT r.created_at FROM ingest.run_values AS r
        WHERE r.name = %(name)s AND r.metric = s.metric AND r.variant = s.variant
        ORDER BY r.created_at DESC LIMIT 1
    ) AS l(last_at)
    CROSS JOIN LATERAL (
        SELECT e.width, ingest.series_bucket(f.first_at, e.width) AS first_bucket,
               ingest.series_bucket(l.last_at, e.width) - ingest.series_bucket(f.first_at, e.width) + 1 AS buckets
        FROM ingest.series_levels AS e
        ORDER BY ingest.series_bucket(l.last_at, e.width) - ingest.series_bucket(f.first_at, e.width) + 1
                 > %(most_buckets)s,
                 CASE WHEN ingest.series_bucket(l.last_at, e.width) - ingest.series_bucket(f.first_at, e.width) + 1
                           <= %(most_buckets)s THEN e.width ELSE -e.width END
        LIMIT 1
    ) AS w
), grouped AS (
    SELECT span.n, (b.bucket - span.first_bucket) * %(groups)s / span.buckets AS g,
           b.min_at, b.min_value, b.max_at, b.max_value
    FROM span CROSS JOIN LATERAL (
        SELECT * FROM ingest.series_buckets AS k
        WHERE k.name = %(name)s AND k.metric = span.metric AND k.variant = span.variant AND k.width = span.width
          AND k.bucket BETWEEN span.first_bucket AND span.first_bucket + span.buckets - 1
    ) AS b
), kept AS (
    (SELECT DISTINCT ON (n, g) n, g, min_at AS at, min_value AS value FROM grouped ORDER BY n, g, min_value, min_at)
    UNION
    (SELECT DISTINCT ON (n, g) n, g, max_at, max_value FROM grouped ORDER BY n, g, max_value DESC, max_at)
)
SELECT n, to_char(at, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), value::float8 FROM kept ORDER BY n, at, value
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
    whole = [position for position, row in enumerate(found) if row[2] <= per_series]
    cut = [position for position, row in enumerate(found) if row[2] > per_series]
    groups = per_series // 2
    for positions, query, extra in (
        (whole, SERIES_POINTS, {}),
        (cut, SERIES_DOWNSAMPLED, {"groups": groups, "most_buckets": BUCKETS_PER_GROUP * groups}),
    ):
        if not positions:
            continue
        lists = {
            "name": name,
            "metrics": [found[p][0] for p in positions],
            "variants": [found[p][1] for p in positions],
            **extra,
        }
        for number, created_at, value in connection.execute(query, lists):
            kept[positions[number - 1]].append(SeriesPoint(createdAt=created_at, value=value))
    series = [
        MetricSeries(variant=variant, metric=metric, totalRuns=total, downsampled=total > per_series, points=points_)
        for (metric, variant, total), points_ in zip(found, kept, strict=True)
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
