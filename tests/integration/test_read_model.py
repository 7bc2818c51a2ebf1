"""The read model in schema `ingest` always agrees with `experiments`, and the reads built on it.

However rows reach `experiments` (our API with replays, conflicts and rejections, concurrent writers, plain SQL
as the Prisma backend would write, updates, deletes, TRUNCATE), the triggers of migration 0003 keep
`ingest.run_values`, `ingest.metric_counts` and `ingest.runs` equal to what the rows say. The migration builds
the model for rows stored before it. Compare gives the answers the old query over `experiments` gave, and the
series route returns only what was asked, downsampled by min/max, and stays under Lambda's 6 MB.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from statistics import median
from typing import Any

import psycopg
import pytest

from devkit.localdb import scratch_database
from devkit.reference_queries import RECENT_RUNS_OVER_EXPERIMENTS
from experiments.limits import (
    LAMBDA_RESPONSE_BYTES,
    MAX_METRIC_KEY_LENGTH,
    MAX_SERIES,
    MAX_SERIES_METRICS,
    MAX_SERIES_TOTAL_POINTS,
    MAX_VARIANT_LENGTH,
)
from experiments.migrations import DEFAULT_MIGRATIONS_DIR, apply_migrations
from experiments.models import ExperimentReport
from experiments.query import compare_variants
from experiments.store import save_report
from support import PRISMA_INIT_MIGRATION, Answer, LambdaContext, decode, get_event

pytestmark = pytest.mark.integration

START = datetime(2025, 11, 1, 12, 0, 0)
KEY = "rm-key-0001-aaaaaaaaaaaaaaaa"


# --- what the model must say, computed from the rows ------------------------------------------------------


def expected_model(conn: psycopg.Connection) -> dict[str, Any]:
    """The read model as the rows of `experiments` define it (directions: the set each run may carry)."""
    values = conn.execute(
        'SELECT id, name, variant, metric, "createdAt", value FROM experiments ORDER BY id'
    ).fetchall()
    counts = conn.execute(
        "SELECT name, variant, metric, count(*) FROM experiments GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).fetchall()
    runs = conn.execute(
        """SELECT name, variant, "createdAt", count(*),
                  coalesce(jsonb_agg(DISTINCT metadata->'directions')
                           FILTER (WHERE jsonb_typeof(metadata->'directions') = 'object'), '[]')
           FROM experiments GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    ).fetchall()
    return {"values": values, "counts": counts, "runs": runs, "buckets": expected_rollup(conn)}


ROWS = 'SELECT name, metric, variant, "createdAt", value FROM experiments'


def expected_rollup(conn: psycopg.Connection, rows: str = ROWS) -> list[tuple]:
    """The series rollup (migration 0005) as the rows of `experiments` (or `rows`) define it, in Python: per
    series, width and bucket of "createdAt", the count and the lowest and highest value (the earliest of equals)."""
    widths = [width for (width,) in conn.execute("SELECT width FROM ingest.series_levels ORDER BY width")]
    assert widths, "the rollup has levels"
    buckets: dict[tuple, list[tuple[Decimal, datetime]]] = {}
    for name, metric, variant, at, value in conn.execute(rows):
        seconds = (at - datetime(1970, 1, 1)) // timedelta(seconds=1)
        for width in widths:
            buckets.setdefault((name, metric, variant, width, seconds // width), []).append((value, at))
    rows = []
    for key, values in sorted(buckets.items()):
        low = min(values)
        high = min(values, key=lambda pair: (-pair[0], pair[1]))
        rows.append((*key, len(values), *low, *high))
    return rows


def assert_model_agrees(conn: psycopg.Connection) -> None:
    expected = expected_model(conn)
    assert conn.execute("SELECT * FROM ingest.run_values ORDER BY id").fetchall() == expected["values"]
    assert conn.execute("SELECT * FROM ingest.metric_counts ORDER BY 1, 2, 3").fetchall() == expected["counts"]
    assert conn.execute("SELECT * FROM ingest.series_buckets ORDER BY 1, 2, 3, 4, 5").fetchall() == expected["buckets"]
    stored = conn.execute("SELECT * FROM ingest.runs ORDER BY 1, 2, 3").fetchall()
    assert [row[:4] for row in stored] == [row[:4] for row in expected["runs"]]
    for (*_, directions), (*_, allowed) in zip(stored, expected["runs"], strict=True):
        assert (directions is None) if not allowed else (directions in allowed)


def report(name: str, variant: str, metrics: dict[str, float], at: datetime, **extra: Any) -> dict[str, Any]:
    return {"name": name, "variant": variant, "date": at.isoformat() + "Z", "metricsSummary": metrics, **extra}


def store(conn: psycopg.Connection, body: dict[str, Any], key: str | None = None) -> None:
    """Store a report with the API's own code, in a transaction as the handler does."""
    with conn.transaction():
        save_report(conn, ExperimentReport.model_validate(body), idempotency_key=key)


# --- the model agrees with the rows -------------------------------------------------------------------------


def test_reports_replays_conflicts_and_rejections(post, db) -> None:
    body = report("api", "baseline", {"p95_ms": 310, "rps": 100}, START)
    assert post(body, headers={"Idempotency-Key": KEY}).status == 201
    assert post(body, headers={"Idempotency-Key": KEY}).status == 200  # replay: nothing new
    other = report("api", "baseline", {"p95_ms": 999}, START)
    assert post(other, headers={"Idempotency-Key": KEY}).status == 409  # conflict: nothing new
    assert post({"name": "api", "metricsSummary": {"p95_ms": "fast"}}).status == 422  # rejected
    assert post(report("api", "cached", {"p95_ms": 1e9}, START)).status == 422  # no value fits the column
    assert post(report("api", "cached", {"p95_ms": 40, "big": 1e9}, START)).status == 201  # big: in metadata
    directions = {"directions": {"lower": ["p95_*"], "higher": []}}
    assert (
        post(report("api", "cached", {"p95_ms": 41}, START + timedelta(minutes=1), metadata=directions)).status == 201
    )

    assert_model_agrees(db)
    assert db.execute("SELECT count(*) FROM ingest.run_values").fetchone()[0] == 4
    assert db.execute("SELECT directions FROM ingest.runs WHERE directions IS NOT NULL").fetchall() == [
        ({"lower": ["p95_*"], "higher": []},)
    ]


def test_concurrent_writers_of_one_experiment(database_url: str, db) -> None:
    """Eight writers, each its own connection, storing into the same experiment, variants and metrics, some at
    the same instant (one run of two reports) and some retrying the same key: no deadlock, no drift."""
    errors: list[BaseException] = []
    metrics = [f"m{i}" for i in range(40)]

    def writer(number: int) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                for k in range(15):
                    at = START + timedelta(seconds=k + (number % 2))
                    variant = ("baseline", "cached")[k % 2]
                    body = report("busy", variant, {m: number * 100 + k for m in random.sample(metrics, 30)}, at)
                    key = f"busy-{k}-{number // 2}"  # writers 2n and 2n+1 race for each key
                    try:
                        store(conn, body, key)
                    except Exception as error:  # the loser of a key with another body: a conflict
                        if type(error).__name__ != "IdempotencyConflict":
                            raise
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_model_agrees(db)
    assert db.execute("SELECT count(*) FROM ingest.run_values").fetchone()[0] == 4 * 15 * 30


def test_rows_written_with_plain_sql_as_prisma_would(db) -> None:
    """Prisma's create (one row, createdAt by default), createMany, update, updateMany, delete, deleteMany."""
    db.execute("INSERT INTO experiments (id, name, variant, metric, value) VALUES ('p1', 'prisma', 'a', 'x', 1.5)")
    db.execute(
        """INSERT INTO experiments (id, name, variant, metric, value, metadata, "createdAt") VALUES
           ('p2', 'prisma', 'a', 'x', 2, '{"directions": {"higher": ["x"]}}', '2025-01-01'),
           ('p3', 'prisma', 'a', 'y', 3, '{"directions": {"higher": ["x"]}}', '2025-01-01'),
           ('p4', 'prisma', 'b', 'x', 4, NULL, '2025-01-01'),
           ('p5', 'prisma', 'b', 'x', 5, NULL, '2025-01-01')"""  # two rows of one metric in one run
    )
    assert_model_agrees(db)
    with db.transaction():  # one row at a time into one run, as a loop of create() calls would
        for i in range(5):
            db.execute(
                """INSERT INTO experiments (id, name, variant, metric, value, "createdAt")
                   VALUES (%s, 'prisma', 'c', %s, %s, '2025-02-01')""",
                (f"loop{i}", f"k{i}", i),
            )
    assert_model_agrees(db)
    db.execute("UPDATE experiments SET value = value + 1 WHERE id = 'p1'")
    db.execute("UPDATE experiments SET variant = 'b2', \"createdAt\" = '2025-03-01' WHERE id = 'p4'")
    db.execute("UPDATE experiments SET metadata = NULL WHERE id = 'p2'")  # the run keeps p3's directions
    db.execute("UPDATE experiments SET id = 'p5-renamed', metric = 'z' WHERE id = 'p5'")
    assert_model_agrees(db)
    db.execute("DELETE FROM experiments WHERE id IN ('p3', 'loop0')")
    assert_model_agrees(db)
    assert db.execute("SELECT count(*) FROM ingest.runs WHERE directions IS NOT NULL").fetchone()[0] == 0
    db.execute("DELETE FROM experiments WHERE name = 'prisma' AND variant = 'c'")
    assert_model_agrees(db)
    with db.transaction():  # a rolled back write leaves no trace in the model either
        db.execute("INSERT INTO experiments (id, name, variant, metric, value) VALUES ('gone', 'prisma', 'a', 'x', 1)")
        db.execute("DELETE FROM experiments WHERE id = 'p1'")
        raise psycopg.Rollback()
    assert_model_agrees(db)
    db.execute("TRUNCATE experiments")
    assert_model_agrees(db)
    assert db.execute("SELECT count(*) FROM ingest.runs").fetchone()[0] == 0


def test_a_role_that_cannot_write_schema_ingest_still_stores_rows(db, database_url: str) -> None:
    """The Prisma backend may connect as a role with rights on `experiments` only: the triggers still run."""
    role = f"prisma_{uuid.uuid4().hex[:8]}"
    db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        db.execute(f"GRANT INSERT, UPDATE, DELETE, SELECT ON experiments TO {role}")
        with psycopg.connect(database_url, user=role, autocommit=True) as conn:
            conn.execute("INSERT INTO experiments (id, name, variant, metric, value) VALUES ('r', 'n', 'v', 'm', 1)")
            conn.execute("UPDATE experiments SET value = 2")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM ingest.runs")
        assert_model_agrees(db)
    finally:
        db.execute("DELETE FROM experiments")
        db.execute(f"DROP OWNED BY {role}")
        db.execute(f"DROP ROLE {role}")


# --- the migration builds the model for rows already stored ------------------------------------------------


def test_migration_builds_the_model_of_stored_rows(server_url: str, tmp_path: Path) -> None:
    first_only = tmp_path / "migrations"
    first_only.mkdir()
    shutil.copy(DEFAULT_MIGRATIONS_DIR / "0001_experiments.sql", first_only)
    with scratch_database(server_url, "k6exp_readmodel", migrate=False) as url:
        assert apply_migrations(url, first_only) == ["0001_experiments"]
        with psycopg.connect(url, autocommit=True) as conn:
            for k in range(12):  # rows through the API's code, before the read model existed
                variant = ("baseline", "cached")[k % 2]
                store(conn, report("old", variant, {"p95_ms": 300 - k, "rps": 100 + k}, START + timedelta(hours=k)))
            conn.execute(
                """INSERT INTO experiments (id, name, variant, metric, value, metadata, "createdAt")
                   SELECT 'sql' || i, 'old', 'sql', 'p95_ms', i, '{"directions": {"lower": ["p95_ms"]}}',
                          timestamp '2025-12-01' + i * interval '1 day'
                   FROM generate_series(1, 30) AS i"""
            )

        applied = apply_migrations(url)
        assert "0003_runs_read_model" in applied
        with psycopg.connect(url, autocommit=True) as conn:
            assert_model_agrees(conn)
            assert conn.execute("SELECT count(*) FROM ingest.run_values").fetchone()[0] == 24 + 30
            assert conn.execute("SELECT runs FROM ingest.metric_counts WHERE variant = 'sql'").fetchone()[0] == 30
            report_ = compare_variants(conn, "old", baseline="baseline", runs=5, threshold_pct=5)
            assert reference_compare(conn, "old", 5) == as_tuples(report_)
            conn.execute(
                "INSERT INTO experiments (id, name, variant, metric, value) VALUES ('new', 'old', 'x', 'y', 1)"
            )
            assert_model_agrees(conn)


def test_the_rollup_migration_builds_it_for_rows_stored_before(server_url: str, tmp_path: Path) -> None:
    """0005 on a database whose read model (0003) already holds rows: the rollup of every stored row."""
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(DEFAULT_MIGRATIONS_DIR.glob("*.sql")):
        if path.name < "0005":
            shutil.copy(path, before)
    with scratch_database(server_url, "k6exp_rollup", migrate=False) as url:
        apply_migrations(url, before)
        with psycopg.connect(url, autocommit=True) as conn:
            store(conn, report("old", "baseline", {"p95_ms": 300, "rps": 100}, START))
            insert_series(conn, "old", ["a", "b"], ["p95_ms"], 500, value_sql="mod(i * 37, 101)")
        assert apply_migrations(url) == ["0005_series_rollup"]
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM ingest.series_buckets").fetchone()[0] > 1000
            assert_model_agrees(conn)
            conn.execute("DELETE FROM experiments WHERE value > 50")
            assert_model_agrees(conn)


def test_the_rollup_follows_direct_sql_on_run_values(db) -> None:
    """Writes to ingest.run_values past 0003's triggers (a repair by hand) still leave the rollup its summary."""
    insert_series(db, "direct", ["a"], ["x", "y"], 300, value_sql="mod(i * 13, 29)")
    of_values = "SELECT name, metric, variant, created_at, value FROM ingest.run_values"
    db.execute(
        "UPDATE ingest.run_values SET created_at = created_at + interval '5 hours', value = value + 7 "
        "WHERE name = 'direct' AND value < 10"
    )
    assert db.execute("SELECT * FROM ingest.series_buckets ORDER BY 1, 2, 3, 4, 5").fetchall() == expected_rollup(
        db, of_values
    )
    db.execute("DELETE FROM ingest.run_values WHERE name = 'direct' AND metric = 'y' AND value > 20")
    assert db.execute("SELECT * FROM ingest.series_buckets ORDER BY 1, 2, 3, 4, 5").fetchall() == expected_rollup(
        db, of_values
    )
    db.execute("SELECT ingest.rebuild_read_model()")
    assert_model_agrees(db)


# --- compare reads the model and answers as before -----------------------------------------------------------


def reference_compare(conn: psycopg.Connection, name: str, runs: int) -> list[tuple]:
    """(metric, variant, runs, latest, median) per metric and variant, from the rows themselves."""
    found: dict[tuple[str, str], tuple[int, list[float]]] = {}
    for metric, variant, value, count in conn.execute(RECENT_RUNS_OVER_EXPERIMENTS, {"name": name, "runs": runs}):
        found.setdefault((metric, variant), (count, []))[1].append(float(Decimal(value)))
    return sorted((m, v, n, values[0], median(values)) for (m, v), (n, values) in found.items())


def as_tuples(report_) -> list[tuple]:
    return sorted((m.metric, v.variant, v.runs, v.latest, v.median) for m in report_.metrics for v in m.variants)


def test_compare_answers_as_the_query_over_the_rows_did(db) -> None:
    """Runs with differing metric sets, runs sharing an instant, metrics that stopped being reported."""
    rng = random.Random(15)
    for _ in range(60):
        variant = rng.choice(["baseline", "cached", "pool"])
        keys = rng.sample(["p50", "p95", "rps", "errors", "rare"], rng.randint(1, 5))
        at = START + timedelta(minutes=rng.randint(0, 30))  # many runs share an instant
        store(db, report("mixed", variant, {key: rng.randint(1, 500) for key in keys}, at))
    store(db, report("mixed", "baseline", {"only_once": 1}, START - timedelta(days=1)))
    for runs in (1, 3, 5, 100):
        answer = compare_variants(db, "mixed", baseline="baseline", runs=runs, threshold_pct=5)
        assert as_tuples(answer) == reference_compare(db, "mixed", runs)


def test_compare_uses_the_read_model_only(get, db) -> None:
    """Rows the model does not know (triggers off for this session) are invisible to compare: it reads the model."""
    store(db, report("only", "baseline", {"p95_ms": 1}, START))
    with db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")  # triggers do not fire
        db.execute(
            "INSERT INTO experiments (id, name, variant, metric, value) VALUES ('hid', 'only', 'x', 'p95_ms', 2)"
        )
    answer = get("/experiments/compare", {"name": "only"})
    assert [v["variant"] for v in answer.body["metrics"][0]["variants"]] == ["baseline"]
    db.execute("DELETE FROM experiments WHERE id = 'hid'")


# --- GET /experiments/series and /experiments/metrics ---------------------------------------------------------


def get_multi(query_app, path: str, query: dict[str, list[str]]) -> Answer:
    """GET with repeated query parameters, as API Gateway passes them."""
    event = get_event(path, {key: values[-1] for key, values in query.items()})
    event["multiValueQueryStringParameters"] = query
    return decode(query_app.lambda_handler(event, LambdaContext()))


def insert_series(db, name: str, variants: list[str], metrics: list[str], runs: int, value_sql: str = "i") -> None:
    db.execute(
        f"""INSERT INTO experiments (id, name, variant, metric, value, "createdAt")
            SELECT gen_random_uuid()::text, %(name)s, v, m, {value_sql}, timestamp '2025-01-01' + i * interval '1 hour'
            FROM generate_series(1, %(runs)s) AS i, unnest(%(variants)s::text[]) AS v, unnest(%(metrics)s::text[]) AS m
        """,  # value_sql: a constant of this file
        {"name": name, "variants": variants, "metrics": metrics, "runs": runs},
    )


def test_series_returns_only_the_metrics_asked_for_oldest_first(query_app, db) -> None:
    insert_series(db, "chart", ["baseline", "cached"], ["p50", "p95", "rps", "other"], 10)
    answer = get_multi(query_app, "/experiments/series", {"name": ["chart"], "metric": ["rps", "p95"]})
    assert answer.status == 200, answer.body
    assert [(s["metric"], s["variant"]) for s in answer.body["series"]] == [
        ("rps", "baseline"), ("rps", "cached"), ("p95", "baseline"), ("p95", "cached"),
    ]  # fmt: skip
    first = answer.body["series"][0]
    assert (first["totalRuns"], first["downsampled"], len(first["points"])) == (10, False, 10)
    assert first["points"][0] == {"createdAt": "2025-01-01T01:00:00.000Z", "value": 1.0}
    assert [p["value"] for p in first["points"]] == [float(i) for i in range(1, 11)]

    only_cached = get_multi(
        query_app, "/experiments/series", {"name": ["chart"], "metric": ["p50"], "variant": ["cached"]}
    )
    assert [(s["metric"], s["variant"]) for s in only_cached.body["series"]] == [("p50", "cached")]


def test_series_downsamples_to_min_and_max_per_bucket(query_app, db) -> None:
    """1,000 runs into 100 points: 50 buckets of 20 runs, each keeping its lowest and highest run; a single
    spike survives."""
    spiky = "CASE WHEN i = 777 THEN 9999 ELSE 100 + mod(i, 7) END"
    insert_series(db, "long", ["baseline"], ["p95"], 1000, value_sql=spiky)
    answer = get_multi(query_app, "/experiments/series", {"name": ["long"], "metric": ["p95"], "points": ["100"]})
    (series,) = answer.body["series"]
    assert (series["totalRuns"], series["downsampled"]) == (1000, True)
    points = series["points"]
    assert len(points) == 100
    assert [p["createdAt"] for p in points] == sorted(p["createdAt"] for p in points)
    assert max(p["value"] for p in points) == 9999.0
    assert min(p["value"] for p in points) == 100.0
    stored = [
        float(v) for (v,) in db.execute("SELECT value FROM experiments WHERE name = 'long' ORDER BY \"createdAt\"")
    ]
    for bucket in range(50):
        runs = stored[bucket * 20 : (bucket + 1) * 20]
        kept = [p["value"] for p in points[bucket * 2 : bucket * 2 + 2]]
        assert sorted(kept) == sorted([min(runs), max(runs)])


def reference_downsample(db, name: str, metric: str, variant: str, points: int) -> list[tuple[str, float]]:
    """The rule of experiments.series, in Python over the rows: the finest width whose buckets over the series'
    span are at most 4 * (points // 2), the span cut into points // 2 equal stretches of buckets, each keeping
    its lowest and highest run (the earliest of equals)."""
    runs = db.execute(
        'SELECT "createdAt", value FROM experiments WHERE name = %s AND metric = %s AND variant = %s',
        (name, metric, variant),
    ).fetchall()
    widths = [width for (width,) in db.execute("SELECT width FROM ingest.series_levels ORDER BY width")]
    groups = points // 2

    def bucket(at: datetime, width: int) -> int:
        return ((at - datetime(1970, 1, 1)) // timedelta(seconds=1)) // width

    first, last = min(at for at, _ in runs), max(at for at, _ in runs)
    fitting = [w for w in widths if bucket(last, w) - bucket(first, w) + 1 <= 4 * groups]
    width = fitting[0] if fitting else widths[-1]
    span = bucket(last, width) - bucket(first, width) + 1
    stretches: dict[int, list[tuple[Decimal, datetime]]] = {}
    for at, value in runs:
        stretches.setdefault((bucket(at, width) - bucket(first, width)) * groups // span, []).append((value, at))
    kept = set()
    for values in stretches.values():
        kept.add(min(values))
        kept.add(min(values, key=lambda pair: (-pair[0], pair[1])))
    return [
        (at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z", float(value))
        for value, at in sorted(kept, key=lambda pair: (pair[1], pair[0]))
    ]


@pytest.mark.parametrize("points", [2, 7, 100, 600])
def test_series_downsampled_from_the_rollup_keeps_each_stretchs_lowest_and_highest(query_app, db, points) -> None:
    """Irregular times (bursts minutes apart, gaps of weeks), random values and ties: the points are exactly
    the rule's, never more than asked, and the series' lowest and highest runs are among them."""
    rng = random.Random(points)
    at, rows = START, []
    for i in range(1500):
        at += rng.choice(
            [
                timedelta(minutes=rng.randint(0, 30)),
                timedelta(hours=rng.randint(1, 30)),
                timedelta(days=rng.randint(5, 40)) if rng.random() < 0.01 else timedelta(0),
            ]
        )
        rows.append((f"ds{i}", "ds", "baseline", "p95", rng.choice([1, 2, 3, rng.randint(0, 10**5)]), at))
    with db.cursor() as cursor:
        cursor.executemany(
            'INSERT INTO experiments (id, name, variant, metric, value, "createdAt") VALUES (%s, %s, %s, %s, %s, %s)',
            rows,
        )
    query = {"name": ["ds"], "metric": ["p95"], "points": [str(points)]}
    (series,) = get_multi(query_app, "/experiments/series", query).body["series"]
    assert (series["totalRuns"], series["downsampled"]) == (1500, True)
    got = [(p["createdAt"], p["value"]) for p in series["points"]]
    assert got == reference_downsample(db, "ds", "p95", "baseline", points)
    assert len(got) <= points
    values = [value for _, value in got]
    assert (min(values), max(values)) == (float(min(r[4] for r in rows)), float(max(r[4] for r in rows)))


def test_series_and_metrics_errors(query_app, db, get) -> None:
    insert_series(db, "err", ["baseline"], ["p95"], 3)
    assert get_multi(query_app, "/experiments/series", {"name": ["err"], "metric": ["nope"]}).status == 404
    assert get_multi(query_app, "/experiments/series", {"name": ["none"], "metric": ["p95"]}).status == 404
    missing = get_multi(query_app, "/experiments/series", {"name": ["err"]})
    assert missing.status == 422 and missing.body["details"][0]["field"] == "query metric"
    too_many = get_multi(
        query_app, "/experiments/series", {"name": ["err"], "metric": [f"m{i}" for i in range(MAX_SERIES_METRICS + 1)]}
    )
    assert too_many.status == 422
    for points in ("1", "2001", "x"):
        bad = get_multi(query_app, "/experiments/series", {"name": ["err"], "metric": ["p95"], "points": [points]})
        assert bad.status == 422 and bad.body["details"][0]["field"] == "query points"
    assert get("/experiments/metrics", {"name": "none"}).status == 404
    assert get("/experiments/metrics", {}).status == 422


def test_too_many_series_is_a_422(query_app, db) -> None:
    variants = [f"v{i}" for i in range(MAX_SERIES // 2 + 1)]
    insert_series(db, "wide", variants, ["a", "b"], 1)
    answer = get_multi(query_app, "/experiments/series", {"name": ["wide"], "metric": ["a", "b"]})
    assert answer.status == 422 and "series" in answer.body["message"]
    assert get_multi(query_app, "/experiments/series", {"name": ["wide"], "metric": ["a"]}).status == 200


def test_the_largest_series_answer_stays_under_lambdas_6_mb(query_app, db, monkeypatch) -> None:
    """MAX_SERIES series of the longest names that escape the most, every point at its widest value: the whole
    proxy response (the body JSON inside the event JSON) stays under 6 MB, and the points share the budget."""
    monkeypatch.setenv("DB_REQUEST_DEADLINE_S", "60")  # this checks bytes, not time; a loaded machine is slow
    metric_count = MAX_SERIES_METRICS
    variant_count = MAX_SERIES // metric_count
    char = '"'  # escaped in the body, escaped again in the response envelope
    metrics = [f"{i:02d}" + char * (MAX_METRIC_KEY_LENGTH - 2) for i in range(metric_count)]
    variants = [f"{i:02d}" + "\u00e9" * (MAX_VARIANT_LENGTH - 2) for i in range(variant_count)]
    per_series = MAX_SERIES_TOTAL_POINTS // (metric_count * variant_count)
    insert_series(db, "huge", variants, metrics, per_series + 2, value_sql="-999999.9999 + mod(i, 2) * 0.0002")
    event = get_event("/experiments/series", {"name": "huge"})
    event["multiValueQueryStringParameters"] = {"name": ["huge"], "metric": metrics, "points": ["2000"]}
    event["queryStringParameters"] = {"name": "huge", "metric": metrics[-1], "points": "2000"}
    response = query_app.lambda_handler(event, LambdaContext())
    assert response["statusCode"] == 200, response["body"][:500]
    body = json.loads(response["body"])
    assert len(body["series"]) == metric_count * variant_count
    assert sum(len(s["points"]) for s in body["series"]) <= MAX_SERIES_TOTAL_POINTS
    assert all(s["downsampled"] for s in body["series"])
    assert len(json.dumps(response).encode()) < LAMBDA_RESPONSE_BYTES


def test_metrics_lists_the_keys_with_their_directions(get, db) -> None:
    store(db, report("keys", "baseline", {"http_req_duration:p(95)": 1, "cache_hit_rate:rate": 1, "x": 1}, START))
    store(db, report("keys", "cached", {"only_here": 1}, START, metadata={"directions": {"higher": ["x"]}}))
    answer = get("/experiments/metrics", {"name": "keys"})
    assert answer.status == 200
    assert answer.body == {
        "name": "keys",
        "metrics": [
            {"metric": "cache_hit_rate:rate", "higherIsBetter": True},
            {"metric": "http_req_duration:p(95)", "higherIsBetter": False},
            {"metric": "only_here", "higherIsBetter": None},
            {"metric": "x", "higherIsBetter": True},
        ],
        "truncated": False,
    }


def test_directions_written_past_the_api_that_are_not_globs_count_as_none(get, db) -> None:
    db.execute(
        """INSERT INTO experiments (id, name, variant, metric, value, metadata) VALUES
           ('odd', 'odd', 'baseline', 'x', 1, '{"directions": {"higher": 5, "lower": ["x", 7]}}')"""
    )
    assert get("/experiments/metrics", {"name": "odd"}).body["metrics"] == [{"metric": "x", "higherIsBetter": False}]
    assert get("/experiments/compare", {"name": "odd"}).body["metrics"][0]["higherIsBetter"] is False


def test_rebuild_repairs_the_model_after_the_table_was_made_again(db) -> None:
    """`prisma migrate reset` drops and creates the table (our triggers go with it); a restore may bypass them:
    `SELECT ingest.rebuild_read_model()` puts the triggers back and rebuilds the model from the rows."""
    store(db, report("reset", "baseline", {"p95_ms": 1}, START))
    prisma_ddl = PRISMA_INIT_MIGRATION.read_text()
    try:
        db.execute("DROP TABLE experiments")
        db.execute(prisma_ddl)
        db.execute("INSERT INTO experiments (id, name, variant, metric, value) VALUES ('after', 'reset', 'v', 'x', 2)")
        with db.transaction():
            db.execute("SET LOCAL session_replication_role = replica")  # a restore with triggers disabled
            db.execute(
                "INSERT INTO experiments (id, name, variant, metric, value) VALUES ('quiet', 'reset', 'v', 'y', 3)"
            )
        assert db.execute("SELECT count(*) FROM ingest.run_values WHERE id IN ('after', 'quiet')").fetchone()[0] == 0

        db.execute("SELECT ingest.rebuild_read_model()")
        assert_model_agrees(db)
        db.execute("INSERT INTO experiments (id, name, variant, metric, value) VALUES ('later', 'reset', 'v', 'x', 4)")
        db.execute("DELETE FROM experiments WHERE id = 'after'")
        assert_model_agrees(db)
        assert db.execute("SELECT runs FROM ingest.metric_counts WHERE name = 'reset' AND metric = 'x'").fetchone() == (
            1,
        )
    finally:
        db.execute("SELECT ingest.rebuild_read_model()")  # the triggers stay for the tests after this one
