"""Benchmark 4: reads whose cost follows what is asked, not the history (the read model, issue 15).

On a table of at least a million rows, with two experiments of 300 metrics a run and two variants:
`history_1000` has 1,000 runs per variant, `history_10` has 10. Measured on a warm connection, interleaved
round by round in a shuffled order (as benchmark 1 does):

- compare:  `experiments.query.compare_variants(runs=5)` (the SQL on the read model and the verdicts of 300
            metrics) on each experiment; the history ratio is median(1,000 runs) / median(10 runs). Goal <= 1.5.
- its SQL alone (the read model's query), and the query compare ran on `experiments` before the read model,
            for contrast (fewer rounds: it ranks every row of the experiment).
- chart:    the dashboard's first chart read, GET /experiments/series for p50, p95 and rps of `history_1000`
            through the query function's handler: time and bytes.
- series:   the series read (`experiments.series.metric_series`, the three chart metrics of both variants, 600
            points) on `series_1000` and `series_10000` (1,000 and 10,000 hourly runs of those metrics): the series
            ratio is median(10,000 runs) / median(1,000 runs); and the read before the rollup (every run
            numbered, devkit.reference_queries) on both, for contrast.
- write:    what the triggers add to storing a 300-metric report (one INSERT, committed), against the same
            statement with triggers off (session_replication_role = replica; needs a superuser, else skipped).

Run alone: `.venv/bin/python bench/read_history.py [--repeat N] [--quick]` (DATABASE_URL, else 127.0.0.1:5432);
`--quick`: a few rounds and no filler rows, to check it runs (its figures are noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from ingest_path import LambdaContext, interleaved, paired_ratio, server_url, summary
from psycopg.types.json import Jsonb

from devkit.localdb import scratch_database
from devkit.reference_queries import RECENT_RUNS_OVER_EXPERIMENTS, SERIES_POINTS_OVER_ALL_RUNS

REPO_ROOT = Path(__file__).resolve().parents[1]
QUERY_APP = REPO_ROOT / "functions" / "query" / "app.py"
EVENT_TEMPLATE = REPO_ROOT / "events" / "report_201_valid.json"
GOAL = 1.5
METRICS = 300
VARIANTS = ["baseline", "candidate"]
CHART_METRICS = ["http_req_duration:med", "http_req_duration:p(95)", "http_reqs:rate"]
# 300 keys a run, as a whole k6 summary has them: the chart's three, then per-endpoint trends.
KEYS = CHART_METRICS + [f"http_req_duration{{name:GET /endpoint/{n // 6}}}:stat{n % 6}" for n in range(METRICS - 3)]

SERIES_POINTS = 600
# Runs of one experiment, every metric of every variant, one day (or `every`) apart; values vary from run to run.
INSERT_RUNS = """
INSERT INTO experiments (id, name, variant, metric, value, "createdAt")
SELECT gen_random_uuid()::text, %(name)s, v.variant, k.key, round((100 + 50 * random())::numeric, 4),
       timestamp '2023-01-01' + r * %(every)s::interval + v.n * interval '1 second'
FROM generate_series(1, %(runs)s) AS r,
     unnest(%(variants)s::text[]) WITH ORDINALITY AS v(variant, n),
     unnest(%(keys)s::text[]) AS k(key)
"""


WRITE = """
INSERT INTO experiments (id, name, variant, metric, value, metadata, "createdAt")
SELECT m.id, 'history_writes', 'baseline', m.metric, m.value, %(metadata)s, %(created_at)s
FROM unnest(%(ids)s::text[], %(metrics)s::text[], %(values)s::numeric[]) AS m(id, metric, value)
"""


def fill(conn: psycopg.Connection, filler_rows: int) -> dict[str, float]:
    """The two experiments and `filler_rows` of others (100 metrics, 20 runs each); seconds per step."""
    seconds: dict[str, float] = {}
    for name, runs, keys, every in (
        ("history_1000", 1000, KEYS, "1 day"),
        ("history_10", 10, KEYS, "1 day"),
        ("series_1000", 1000, CHART_METRICS, "1 hour"),
        ("series_10000", 10000, CHART_METRICS, "1 hour"),
    ):
        started = time.perf_counter()
        conn.execute(INSERT_RUNS, {"name": name, "runs": runs, "variants": VARIANTS, "keys": keys, "every": every})
        seconds[f"insert {name}"] = time.perf_counter() - started
    per_experiment = 20 * len(VARIANTS) * 100
    started = time.perf_counter()
    for number in range(max(0, filler_rows) // per_experiment):
        params = {"name": f"filler_{number}", "runs": 20, "variants": VARIANTS, "keys": KEYS[:100], "every": "1 day"}
        conn.execute(INSERT_RUNS, params)
    seconds["insert filler"] = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("VACUUM ANALYZE experiments")
    conn.execute("VACUUM ANALYZE ingest.run_values, ingest.metric_counts, ingest.runs, ingest.series_buckets")
    seconds["vacuum analyze"] = time.perf_counter() - started
    return seconds


def load_query_app() -> Any:
    spec = importlib.util.spec_from_file_location("query_app", QUERY_APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chart_event() -> dict[str, Any]:
    """GET /experiments/series?name=history_1000&metric=...(three) as API Gateway passes it."""
    event = json.loads(EVENT_TEMPLATE.read_text())
    query = {"name": ["history_1000"], "metric": CHART_METRICS}
    event.update(
        resource="/experiments/series",
        path="/experiments/series",
        httpMethod="GET",
        body=None,
        queryStringParameters={key: values[-1] for key, values in query.items()},
        multiValueQueryStringParameters=query,
    )
    event["requestContext"].update(resourcePath="/experiments/series", httpMethod="GET")
    return event


def write_params() -> dict[str, Any]:
    return {
        "metadata": Jsonb({"vus": 20, "ingest": {"requestId": str(uuid.uuid4())}}),
        "created_at": datetime.now(UTC).replace(tzinfo=None),
        "ids": [str(uuid.uuid4()) for _ in KEYS],
        "metrics": KEYS,
        "values": [round(random.uniform(1, 1000), 4) for _ in KEYS],
    }


def run(repeat: int = 60, warmup: int = 5, before_repeat: int = 5, filler_rows: int = 400_000) -> dict[str, Any]:
    """Build the bench database, measure, and return the figures."""
    from experiments.query import RECENT_RUNS, compare_variants
    from experiments.series import metric_series

    url, transport = server_url()
    rng = random.Random(15)
    with scratch_database(url, "k6exp_bench_history") as database:
        with psycopg.connect(database, autocommit=True) as conn:
            setup = fill(conn, filler_rows)
            rows = conn.execute("SELECT count(*) FROM experiments").fetchone()[0]
            superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]

            def compare(name: str) -> Callable[[], object]:
                return lambda: compare_variants(conn, name, baseline="baseline", runs=5, threshold_pct=5.0)

            def query(text: str, name: str) -> Callable[[], object]:
                return lambda: conn.execute(text, {"name": name, "runs": 5}).fetchall()

            answer = compare_variants(conn, "history_1000", baseline="baseline", runs=5, threshold_pct=5.0)
            if len(answer.metrics) != METRICS or answer.metrics[0].variants[0].runs != 1000:
                raise RuntimeError("the bench experiment is not what it should be")
            timings = interleaved(
                {
                    "compare, 1,000 runs": compare("history_1000"),
                    "compare, 10 runs": compare("history_10"),
                    "its SQL, 1,000 runs": query(RECENT_RUNS, "history_1000"),
                    "its SQL, 10 runs": query(RECENT_RUNS, "history_10"),
                },
                repeat,
                warmup,
                rng,
            )
            timings |= interleaved(
                {
                    "before: SQL on experiments, 1,000 runs": query(RECENT_RUNS_OVER_EXPERIMENTS, "history_1000"),
                    "before: SQL on experiments, 10 runs": query(RECENT_RUNS_OVER_EXPERIMENTS, "history_10"),
                },
                before_repeat,
                1,
                rng,
            )

            def series(name: str) -> Callable[[], object]:
                return lambda: metric_series(conn, name, CHART_METRICS, points=SERIES_POINTS)

            def series_before(name: str) -> Callable[[], object]:
                params = {
                    "name": name,
                    "metrics": [m for m in CHART_METRICS for _ in VARIANTS],
                    "variants": VARIANTS * len(CHART_METRICS),
                    "points": SERIES_POINTS,
                }
                return lambda: conn.execute(SERIES_POINTS_OVER_ALL_RUNS, params).fetchall()

            drawn = metric_series(conn, "series_10000", CHART_METRICS, points=SERIES_POINTS)
            if [s.totalRuns for s in drawn.series] != [10000] * 6 or not all(s.downsampled for s in drawn.series):
                raise RuntimeError("the series bench experiment is not what it should be")
            series_points = sum(len(s.points) for s in drawn.series)
            timings |= interleaved(
                {"series, 10,000 runs": series("series_10000"), "series, 1,000 runs": series("series_1000")},
                repeat,
                warmup,
                rng,
            )
            timings |= interleaved(
                {
                    "before: series over all runs, 10,000 runs": series_before("series_10000"),
                    "before: series over all runs, 1,000 runs": series_before("series_1000"),
                },
                before_repeat,
                1,
                rng,
            )

            writes: dict[str, list[float]] = {}
            if superuser:

                def write(triggers: bool) -> Callable[[], object]:
                    def insert() -> None:
                        params = write_params()
                        with conn.transaction():
                            if not triggers:
                                conn.execute("SET LOCAL session_replication_role = replica")
                            conn.execute(WRITE, params)

                    return insert

                writes = interleaved(
                    {"write, triggers on": write(True), "write, triggers off": write(False)}, repeat, warmup, rng
                )

        chart = measure_chart(database, repeat, warmup)

    ratio = statistics.median(timings["compare, 1,000 runs"]) / statistics.median(timings["compare, 10 runs"])
    sql_ratio = statistics.median(timings["its SQL, 1,000 runs"]) / statistics.median(timings["its SQL, 10 runs"])
    before = timings["before: SQL on experiments, 1,000 runs"], timings["before: SQL on experiments, 10 runs"]
    ratios = {
        "history ratio (compare)": ratio,
        "history ratio (compare, paired)": paired_ratio(timings["compare, 1,000 runs"], timings["compare, 10 runs"]),
        "history ratio (its SQL)": sql_ratio,
        "history ratio (before: SQL on experiments)": statistics.median(before[0]) / statistics.median(before[1]),
    }
    ratios["series ratio (10,000 runs / 1,000)"] = statistics.median(
        timings["series, 10,000 runs"]
    ) / statistics.median(timings["series, 1,000 runs"])
    ratios["series ratio (before: over all runs)"] = statistics.median(
        timings["before: series over all runs, 10,000 runs"]
    ) / statistics.median(timings["before: series over all runs, 1,000 runs"])
    if writes:
        ratios["write: triggers on/off"] = paired_ratio(writes["write, triggers on"], writes["write, triggers off"])
    return {
        "benchmark": "read_history",
        "description": f"{rows:,} rows, {METRICS} metrics a run, {len(VARIANTS)} variants, PostgreSQL over {transport}",
        "rows": rows,
        "repeat": repeat,
        "setup_seconds": {step: round(seconds, 1) for step, seconds in setup.items()},
        "variants": {name: summary(samples) for name, samples in (timings | writes).items()},
        "chart": chart,
        "series_points": series_points,
        "ratios": ratios,
        "goal": f"history ratio (compare) <= {GOAL}",
        "meets_goal": ratio <= GOAL,
    }


def measure_chart(database: str, repeat: int, warmup: int) -> dict[str, Any]:
    """The dashboard's first chart read through the query handler: median time, body and response bytes."""
    saved_url = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = database
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            app = load_query_app()
            log_handler = app.logger.registered_handler
            log_stream, log_handler.stream = log_handler.stream, devnull
            context, responses = LambdaContext(), []
            try:
                samples = interleaved(
                    {"chart": lambda: responses.append(app.lambda_handler(chart_event(), context))},
                    repeat,
                    warmup,
                    random.Random(4),
                )["chart"]
            finally:
                app.database.close()
                log_handler.stream = log_stream
    finally:
        if saved_url is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved_url
    last = responses[-1]
    if last["statusCode"] != 200:
        raise RuntimeError(f"the chart read answered {last['statusCode']}: {last['body'][:300]}")
    body = json.loads(last["body"])
    return {
        "request": "GET /experiments/series?name=history_1000&metric=" + "&metric=".join(CHART_METRICS),
        "time": summary(samples),
        "body_bytes": len(last["body"].encode()),
        "response_bytes": len(json.dumps(last).encode()),
        "series": len(body["series"]),
        "points": sum(len(series["points"]) for series in body["series"]),
        "total_runs": sum(series["totalRuns"] for series in body["series"]),
    }


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table."""
    lines = [
        f"Benchmark 4: reads against the history: {result['description']} ({result['repeat']} rounds; ms)",
        f"  {'read':<44} {'median':>9} {'p25':>9} {'p75':>9} {'n':>4}",
    ]
    for name, figures in result["variants"].items():
        lines.append(
            f"  {name:<44} {figures['median_ms']:>9.3f} {figures['p25_ms']:>9.3f} {figures['p75_ms']:>9.3f}"
            f" {figures['n']:>4}"
        )
    for name, ratio in result["ratios"].items():
        lines.append(f"  {name:<44} {ratio:>8.2f}x")
    chart = result["chart"]
    lines.append(
        f"  first chart read ({chart['series']} series, {chart['points']} points of {chart['total_runs']} runs): "
        f"{chart['time']['median_ms']:.1f} ms, body {chart['body_bytes']:,} bytes, "
        f"Lambda response {chart['response_bytes']:,} bytes"
    )
    lines.append(f"  series read of 6 series x 10,000 runs: {result['series_points']} points returned")
    lines.append(f"  goal {result['goal']}: {'met' if result['meets_goal'] else 'NOT met'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--filler-rows", type=int, default=400_000, help="rows of other experiments")
    parser.add_argument("--quick", action="store_true", help="10 rounds, 2 of the old queries, no filler rows")
    args = parser.parse_args(argv)
    if args.quick:
        print(table(run(10, warmup=2, before_repeat=2, filler_rows=0)))
    else:
        print(table(run(args.repeat, filler_rows=args.filler_rows)))


if __name__ == "__main__":
    sys.exit(main())
