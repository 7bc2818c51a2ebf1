"""Benchmark 1: the warm ingest path, side by side with the floor and the naive way.

Three ways to store the same 10-metric report (10 `experiments` rows; `--metrics 300`: a whole k6 summary's, which
`make bench` runs too) in the same database, measured in one
run, interleaved round by round (in a shuffled order) so that noise on a shared machine hits them alike:

- ours:  `lambda_handler` of `functions/report/app.py` (validation, idempotency, logging, metrics), warm
         connection, a new Idempotency-Key on every call;
- floor: raw psycopg on an open connection: one transaction, one multi-row INSERT, commit;
- naive: connect per request, one INSERT per row, autocommit;
- ours (DB_PROXY): the same handler in RDS Proxy mode (`DB_PROXY=true`, as the template sets it with
         `DbProxy=true`): no session state on the connection (no SET/set_config, no prepared statements), so
         the proxy can share it instead of pinning it. What that costs on the warm path is this row minus ours.

The figure that matters is median(ours) / median(floor); the goal is at most 1.3. Ours is also split into the
time inside its `Database.run` (building the statement's parameters, the round trip, the commit) and the rest
of the handler (Powertools routing and validation, logging, metrics, tracing), to show where the time goes.
Run alone: `.venv/bin/python bench/ingest_path.py [--repeat N]` (DATABASE_URL, else 127.0.0.1:5432).
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
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from devkit.localdb import scratch_database

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORT_APP = REPO_ROOT / "functions" / "report" / "app.py"
EVENT_TEMPLATE = REPO_ROOT / "events" / "report_201_valid.json"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"
GOAL = 1.3
SETTLE_ROUNDS = 20  # unrecorded rounds at the start of every block: the naive way's wake
PROXY = "ours (DB_PROXY)"  # the handler in RDS Proxy mode

REPORT: dict[str, Any] = {
    "name": "bench_ingest",
    "variant": "baseline",
    "date": "2025-11-01T12:00:00Z",
    "notes": "benchmark report",
    "metricsSummary": {
        "p50_ms": 120,
        "p90_ms": 290.5,
        "p95_ms": 350,
        "p99_ms": 512.25,
        "avg_ms": 140.2,
        "min_ms": 3.1,
        "max_ms": 900.75,
        "requests_count": 600,
        "rps": 20,
        "error_rate": 0,
    },
    "rawFile": "./results_baseline.json",
    "metadata": {"vus": 20, "duration": "30s", "productId": "123", "gitSha": "abc123", "environment": "staging"},
}
COLUMNS = 'id, name, description, variant, metric, value, metadata, "createdAt"'
ROW_PLACEHOLDERS = "(%s, %s, %s, %s, %s, %s, %s, %s)"
# The naive way's statement per row; the floor's one statement for all rows depends on their number.
NAIVE_INSERT = f"INSERT INTO experiments ({COLUMNS}) VALUES {ROW_PLACEHOLDERS}"  # noqa: S608


def floor_statement(metrics: int) -> str:
    return f"INSERT INTO experiments ({COLUMNS}) VALUES " + ", ".join([ROW_PLACEHOLDERS] * metrics)  # noqa: S608


def report_of(metrics: int) -> dict[str, Any]:
    """REPORT with `metrics` figures: its 10 headline ones, then per-endpoint trends as k6 keys them."""
    stats = ("med", "p(90)", "p(95)", "p(99)", "avg", "max")
    extra = {f"http_req_duration{{name:GET /endpoint/{n // 6}}}:{stats[n % 6]}": 1.5 + n for n in range(metrics - 10)}
    return {**REPORT, "metricsSummary": {**REPORT["metricsSummary"], **extra}}


# --- the database ---------------------------------------------------------------------------------------------


def server_url() -> tuple[str, str]:
    """The server to measure against and how it is reached: DATABASE_URL, else loopback, else embedded."""
    url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError:
        if os.environ.get("DATABASE_URL"):
            raise
        from devkit.localdb import embedded_server  # no server on loopback: measure on the embedded one

        data_dir = REPO_ROOT / ".local" / "bench-pgdata"
        url = embedded_server(data_dir, delete_on_exit=True).get_uri()
    host = conninfo_to_dict(url).get("host") or "localhost"
    return url, ("Unix socket" if host.startswith("/") else f"TCP {host}")


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM experiments").fetchone()[0]


# --- the same rows, three ways ------------------------------------------------------------------------------


def row_params(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The report's rows as the floor and the naive way insert them (same columns, same metadata shape)."""
    metadata = Jsonb({**report["metadata"], "rawFile": report["rawFile"], "ingest": {"requestId": str(uuid.uuid4())}})
    created_at = datetime.fromisoformat(report["date"]).astimezone(UTC).replace(tzinfo=None)
    return [
        (str(uuid.uuid4()), report["name"], report["notes"], report["variant"], metric, value, metadata, created_at)
        for metric, value in report["metricsSummary"].items()
    ]


def floor_insert(conn: psycopg.Connection, report: dict[str, Any]) -> None:
    """One transaction, one multi-row INSERT, commit (`conn` is not autocommit)."""
    statement = floor_statement(len(report["metricsSummary"]))
    conn.execute(statement, [value for row in row_params(report) for value in row])
    conn.commit()


def naive_insert(url: str, report: dict[str, Any]) -> None:
    """A connection per request, an INSERT (and so a commit) per row."""
    with psycopg.connect(url, autocommit=True) as conn:
        for row in row_params(report):
            conn.execute(NAIVE_INSERT, row)


def api_event(report: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """An API Gateway REST proxy event posting `report`, as API Gateway would send it."""
    event = json.loads(EVENT_TEMPLATE.read_text())
    event["headers"]["Idempotency-Key"] = idempotency_key
    event["multiValueHeaders"]["Idempotency-Key"] = [idempotency_key]
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    event["body"] = json.dumps(report)
    return event


class LambdaContext:
    """The few attributes of the Lambda context that Powertools reads."""

    function_name = "ReportFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:ReportFunction"
    aws_request_id = "00000000-0000-4000-8000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def load_report_app() -> ModuleType:
    """Import `functions/report/app.py` as Lambda does (by file; every handler file is app.py)."""
    spec = importlib.util.spec_from_file_location("report_app", REPORT_APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _session_state(database: Any) -> dict[str, int]:
    """Prepared statements and session-changed settings on a handler's open connection (pinning state)."""
    connection = database._connection  # a benchmark looking inside
    prepared = connection.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    changed = connection.execute("SELECT count(*) FROM pg_settings WHERE source = 'session'").fetchone()[0]
    return {"prepared_statements": prepared, "changed_settings": changed}


# --- measuring ----------------------------------------------------------------------------------------------


def interleaved(
    variants: dict[str, Callable[[], object]], rounds: int, warmup: int, rng: random.Random
) -> dict[str, list[float]]:
    """Time each variant once per round (seconds), in a new shuffled order every round; warm-up rounds unrecorded."""
    order = list(variants)
    timings: dict[str, list[float]] = {name: [] for name in order}
    for round_number in range(warmup + rounds):
        rng.shuffle(order)
        for name in order:
            started = time.perf_counter()
            variants[name]()
            elapsed = time.perf_counter() - started
            if round_number >= warmup:
                timings[name].append(elapsed)
    return timings


def summary(samples: list[float]) -> dict[str, float]:
    """Median and quartiles in milliseconds."""
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return {"median_ms": median * 1000, "p25_ms": q1 * 1000, "p75_ms": q3 * 1000, "n": len(samples)}


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios: robust to drift of the machine's speed during the run."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def run(
    repeat: int = 1000, warmup: int = 50, block: int = 200, naive_every: int = 5, metrics: int = 10
) -> dict[str, Any]:
    """Measure the three variants against a fresh bench database and return the figures.

    The run alternates blocks: `block` rounds of ours and the floor interleaved, then `block // naive_every`
    calls of the naive way. Ours and the floor are measured side by side; the naive way gets blocks of its own
    because its connection churn (a server process started and stopped per request) slows down whatever runs
    right after it on a small machine, and it is the second reference, not the subject. The first rounds of
    every ours-and-floor block (`SETTLE_ROUNDS`) are not recorded, so none starts in the naive way's wake.
    """
    url, transport = server_url()
    report = report_of(metrics)
    rng = random.Random(6)
    blocks = [min(block, repeat - done) for done in range(0, repeat, block)]
    calls: Counter[str] = Counter()
    statuses: list[int] = []
    in_database: list[float] = []  # per handler call: the time spent inside its Database.run
    timings: dict[str, list[float]] = {"ours": [], PROXY: [], "floor": [], "naive": []}
    recorded_calls: list[int] = []  # which handler calls were recorded
    with scratch_database(url, "k6exp_bench") as database, open(os.devnull, "w") as devnull:
        saved_url = os.environ.get("DATABASE_URL")
        saved_proxy = os.environ.pop("DB_PROXY", None)  # "ours" is the direct mode
        os.environ["DATABASE_URL"] = database
        try:
            # The handler's logs and EMF metrics are written (as in Lambda), to /dev/null instead of a terminal.
            with contextlib.redirect_stdout(devnull), psycopg.connect(database) as floor_conn:
                app = load_report_app()
                proxy_app = load_report_app()  # a second instance: its own connection, opened in proxy mode
                # Powertools sets a logger up once per process, on the stdout of then: point it here explicitly.
                log_handler = app.logger.registered_handler
                log_stream, log_handler.stream = log_handler.stream, devnull
                context = LambdaContext()
                database_run = app.database.run

                def timed_database_run(work: Callable[..., Any], **options: Any) -> Any:
                    """The handler's own Database.run, timed: how much of ours is spent talking to PostgreSQL."""
                    started = time.perf_counter()
                    try:
                        return database_run(work, **options)
                    finally:
                        in_database.append(time.perf_counter() - started)

                app.database.run = timed_database_run
                # Built ahead, outside the timing: one event per handler call, each with a new Idempotency-Key.
                handler_calls = warmup + repeat + len(blocks) * SETTLE_ROUNDS
                events = iter([api_event(report, f"bench-{n}") for n in range(handler_calls)])
                proxy_events = iter([api_event(report, f"bench-proxy-{n}") for n in range(handler_calls)])

                def ours() -> None:
                    calls["ours"] += 1
                    statuses.append(app.lambda_handler(next(events), context)["statusCode"])

                def ours_proxy() -> None:
                    """The handler with DB_PROXY=true around each call, whenever the code reads it."""
                    calls[PROXY] += 1
                    os.environ["DB_PROXY"] = "true"
                    try:
                        statuses.append(proxy_app.lambda_handler(next(proxy_events), context)["statusCode"])
                    finally:
                        del os.environ["DB_PROXY"]

                def floor() -> None:
                    calls["floor"] += 1
                    floor_insert(floor_conn, report)

                def naive() -> None:
                    calls["naive"] += 1
                    naive_insert(database, report)

                try:
                    side_by_side = {"ours": ours, PROXY: ours_proxy, "floor": floor}
                    interleaved({**side_by_side, "naive": naive}, 0, warmup, rng)  # connect, prepare
                    for rounds in blocks:
                        first = calls["ours"] + SETTLE_ROUNDS
                        block_timings = interleaved(side_by_side, rounds, SETTLE_ROUNDS, rng)
                        recorded_calls.extend(range(first, first + rounds))
                        for name in side_by_side:
                            timings[name] += block_timings[name]
                        naive_calls = max(1, rounds // naive_every)
                        timings["naive"] += interleaved({"naive": naive}, naive_calls, 0, rng)["naive"]
                    # Session state each connection holds: what would pin it to a database connection in RDS Proxy.
                    session_state = {
                        name: _session_state(handler.database) for name, handler in (("ours", app), (PROXY, proxy_app))
                    }
                finally:
                    app.database.run = database_run
                    app.database.close()
                    proxy_app.database.close()
                    log_handler.stream = log_stream
            rows = count_rows(database)
        finally:
            if saved_url is None:
                os.environ.pop("DATABASE_URL", None)
            else:
                os.environ["DATABASE_URL"] = saved_url
            if saved_proxy is not None:
                os.environ["DB_PROXY"] = saved_proxy

    if set(statuses) != {201} or rows != calls.total() * metrics:
        raise RuntimeError(f"benchmark did not store what it should: statuses {set(statuses)}, {rows} rows")
    database_part = [in_database[call] for call in recorded_calls]
    rest = [total - part for total, part in zip(timings["ours"], database_part, strict=True)]
    ratio = statistics.median(timings["ours"]) / statistics.median(timings["floor"])
    return {
        "benchmark": "ingest_path",
        "description": f"warm path, {metrics}-metric report, PostgreSQL over {transport}",
        "repeat": repeat,
        "warmup": warmup,
        "variants": {name: summary(samples) for name, samples in timings.items()},
        "ours_split": {"in Database.run": summary(database_part), "rest of the handler": summary(rest)},
        "session_state": session_state,
        "ratios": {
            "ours/floor": ratio,
            "ours/floor (paired)": paired_ratio(timings["ours"], timings["floor"]),
            f"{PROXY}/ours (paired)": paired_ratio(timings[PROXY], timings["ours"]),
            "naive/floor": statistics.median(timings["naive"]) / statistics.median(timings["floor"]),
        },
        "goal": f"ours/floor <= {GOAL}",
        "meets_goal": ratio <= GOAL,
    }


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table."""
    lines = [
        f"Benchmark 1: {result['description']} ({result['repeat']} rounds, interleaved; ms)",
        f"  {'variant':<28} {'median':>8} {'p25':>8} {'p75':>8}",
    ]
    rows = [(name, figures) for name, figures in result["variants"].items()]
    rows[1:1] = [(f"  ours: {part}", figures) for part, figures in result["ours_split"].items()]
    for name, figures in rows:
        lines.append(f"  {name:<28} {figures['median_ms']:>8.3f} {figures['p25_ms']:>8.3f} {figures['p75_ms']:>8.3f}")
    for name, ratio in result["ratios"].items():
        lines.append(f"  {name:<28} {ratio:>7.2f}x")
    lines.append(f"  goal {result['goal']}: {'met' if result['meets_goal'] else 'NOT met'}")
    for name, state in result.get("session_state", {}).items():
        lines.append(
            f"  {name}: {state['prepared_statements']} prepared statements, {state['changed_settings']} settings"
            " changed on its connection (RDS Proxy pins a connection with either)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--metrics", type=int, default=10, help="figures per report (10 to 1000)")
    args = parser.parse_args(argv)
    print(table(run(args.repeat, args.warmup, metrics=args.metrics)))


if __name__ == "__main__":
    sys.exit(main())
