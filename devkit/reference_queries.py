"""The query compare ran over `experiments` before the read model (db/migrations/0003_runs_read_model.sql),
and the series read before the rollup (db/migrations/0005_series_rollup.sql).

Kept for the tests that check the read model answers as it did, and for the benchmark that shows what they cost:
the first ranks every row of the experiment, the second numbers every run of each series it downsamples.
"""

RECENT_RUNS_OVER_EXPERIMENTS = """
SELECT metric, variant, value, runs
FROM (
    SELECT metric, variant, value, "createdAt", id,
           row_number() OVER (PARTITION BY metric, variant ORDER BY "createdAt" DESC, id DESC) AS recency,
           count(*) OVER (PARTITION BY metric, variant) AS runs
    FROM experiments
    WHERE name = %(name)s
) AS ranked
WHERE recency <= %(runs)s
ORDER BY metric, variant, recency
"""

# The series read before the rollup: every run of each series numbered, cut into points / 2 buckets of
# consecutive runs, each keeping its lowest and highest run.
SERIES_POINTS_OVER_ALL_RUNS = """
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
