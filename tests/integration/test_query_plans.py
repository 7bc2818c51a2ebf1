"""On a table of a million rows, every read the API makes is served by an index: the Prisma schema's for the
lists, the read model's (schema ingest) for compare, the series and the metric keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest

from devkit.localdb import scratch_database
from experiments.changes import EXPERIMENT_EXISTS
from experiments.history import HISTORY
from experiments.query import DIRECTIONS, RECENT_RUNS, ListFilters, encode_cursor, list_query
from experiments.series import BUCKETS_PER_GROUP, METRIC_KEYS, SERIES_COUNTS, SERIES_DOWNSAMPLED, SERIES_POINTS

pytestmark = pytest.mark.integration

MILLION_ROWS = """
INSERT INTO experiments (id, name, variant, metric, value, "createdAt")
SELECT gen_random_uuid()::text, 'exp_' || (i % 200), 'variant_' || (i % 5), 'metric_' || (i % 10),
       (i % 100000) / 10.0, timestamp '2025-01-01' + (i || ' seconds')::interval * 31
FROM generate_series(1, 1000000) AS i
"""


@pytest.fixture(scope="module")
def million(server_url: str) -> Iterator[psycopg.Connection]:
    with scratch_database(server_url, "k6exp_plans") as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(MILLION_ROWS)
        conn.execute("ANALYZE experiments")
        conn.execute("ANALYZE ingest.run_values, ingest.metric_counts, ingest.runs, ingest.series_buckets")
        yield conn


def plan(conn: psycopg.Connection, query, params) -> str:
    return "\n".join(row[0] for row in conn.execute(psycopg.sql.SQL("EXPLAIN ") + query, params))


CURSOR = encode_cursor(datetime(2025, 6, 1), "8")
LIST_CASES = {
    "newest": (ListFilters(), None),
    "next page": (ListFilters(), CURSOR),
    "by name": (ListFilters(name="exp_7"), None),
    "by name, variant, metric": (ListFilters(name="exp_7", variant="variant_2", metric="metric_7"), None),
    "by metric, next page": (ListFilters(metric="metric_3"), CURSOR),
    "time window": (ListFilters(created_from=datetime(2025, 3, 1), created_to=datetime(2025, 3, 2)), None),
}


@pytest.mark.parametrize(("filters", "cursor"), LIST_CASES.values(), ids=LIST_CASES.keys())
def test_list_queries_use_an_index(million, filters: ListFilters, cursor: str | None) -> None:
    text = plan(million, *list_query(filters, limit=100, cursor=cursor))
    assert "Seq Scan" not in text, text
    assert "experiments_" in text and "_idx" in text, text


READ_MODEL_CASES = {
    "compare": (RECENT_RUNS, {"name": "exp_7", "runs": 5}, "run_values_series_idx"),
    "directions": (DIRECTIONS, {"name": "exp_7"}, "runs_directions_idx"),
    "series counts": (
        SERIES_COUNTS,
        {"name": "exp_7", "metrics": ["metric_7"], "variants": None, "max_variant_length": 100},
        "metric_counts",
    ),
    "series values": (
        SERIES_POINTS,
        {"name": "exp_7", "metrics": ["metric_7", "metric_7"], "variants": ["variant_2", "variant_3"], "points": 600},
        "run_values_series_idx",
    ),
    "series downsampled": (
        SERIES_DOWNSAMPLED,
        {"name": "exp_7", "metrics": ["metric_7"], "variants": ["variant_2"], "groups": 300, "most_buckets": 1200},
        "series_buckets_pkey",
    ),
    "metric keys": (METRIC_KEYS, {"name": "exp_7", "limit": 5001}, "metric_counts"),
    "history": (HISTORY, {"name": "exp_7", "variant": None, "metric": None}, "run_values_series_idx"),
    "history of one series": (
        HISTORY,
        {"name": "exp_7", "variant": "variant_2", "metric": "metric_7"},
        "run_values_series_idx",
    ),
    "changes: experiment exists": (EXPERIMENT_EXISTS, {"name": "exp_7"}, "metric_counts"),
}


@pytest.mark.parametrize(("query", "params", "index"), READ_MODEL_CASES.values(), ids=READ_MODEL_CASES.keys())
def test_read_model_queries_use_its_indexes(million, query: str, params: dict, index: str) -> None:
    """No scan of the values; the counts here are 200 rows (one metric and variant per name), read whole."""
    text = plan(million, psycopg.sql.SQL(query), params)
    assert "Seq Scan on run_values" not in text, text
    assert index in text, text
    assert "on experiments" not in text, text


def rows_read(conn: psycopg.Connection, query: str, params: dict) -> dict[str, int]:
    """Per table, the rows its scans produced or filtered out (EXPLAIN ANALYZE, every loop counted)."""
    (document,) = conn.execute(
        psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + psycopg.sql.SQL(query), params
    ).fetchone()
    read: dict[str, int] = {}

    def walk(node: dict) -> None:
        if "Relation Name" in node:
            rows = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
            read[node["Relation Name"]] = read.get(node["Relation Name"], 0) + rows
        for child in node.get("Plans", []):
            walk(child)

    walk(document[0]["Plan"])
    return read


@pytest.mark.parametrize("points", [2, 20, 100, 600, 2000])
def test_a_downsampled_series_reads_about_what_it_returns(million, points: int) -> None:
    """exp_7's series holds 5,000 runs over a year: drawn in `points`, the read takes its two ends from the
    values and at most BUCKETS_PER_GROUP buckets per pair of points from the rollup, not the runs. Below 4 buckets
    of the coarsest width (a week) per pair of points, it reads that width's buckets: one per week of the span."""
    series = {"name": "exp_7", "metrics": ["metric_7"], "variants": ["variant_2"]}
    groups = points // 2
    params = series | {"groups": groups, "most_buckets": BUCKETS_PER_GROUP * groups}
    read = rows_read(million, SERIES_DOWNSAMPLED, params)
    returned = len(million.execute(SERIES_DOWNSAMPLED, params).fetchall())
    assert read["run_values"] == 2, read
    weeks = 53
    assert read["series_buckets"] <= max(BUCKETS_PER_GROUP * groups, weeks), read
    assert returned <= points
    assert rows_read(million, SERIES_POINTS, series)["run_values"] == 5000  # what reading the runs would cost
