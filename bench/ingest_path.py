"""Benchmark 1: the warm ingest path, side by side with the floor and the naive way.

Three ways to store the same 10-metric report (10 `experiments` rows; `--metrics 300`: a whole k6 summary's, which
`make bench` runs too) in the same database, measured in one
run, interleaved round by round (in a shuffled order) so that noise on a shared machine hits them alike:

- ours:  `lambda_handler` of `functions/report/app.py` (validation, idempotency, logging, metrics), warm
         connection, a new Idempotency-Key on every call;
- floor: raw psycopg on an open connection: one transaction, one multi-row INSERT, commit;
- naive: connect per request, one INSERT per row, autocommit.

The figure that matters is median(ours) / median(floor); the goal is at most 1.3. Ours is also split into the
time inside its `Database.run` (building the statement's parameters, the round trip, the commit) and the rest
of the handler (Powertools routing and validation, logging, metrics, tracing), to show where the time goes.
With `proxy=True` (`--proxy`) the handler runs as through RDS Proxy (`DB_PROXY=true`): no session state, so the
insert is not prepared and each call parses and plans it again; `make bench` measures both.
Run alone: `.venv/bin/python bench/ingest_path.py [--repeat N] [--proxy]` (DATABASE_URL, else 127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import contextlib
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

from devkit.lambdaevents import LambdaContext, api_event, load_function
from devkit.localdb import scratch_database

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORT_APP = REPO_ROOT / "functions" / "report" / "app.py"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"
GOAL = 1.3
SETTLE_ROUNDS = 20  # unrecorded rounds at the start of every block: the naive way's wake

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


def load_report_app() -> ModuleType:
    return load_function("report")


def report_event(report: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """An API Gateway event posting `report` under `idempotency_key`."""
    return api_event(report, headers={"Idempotency-Key": idempotency_key})


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
    repeat: int = 1000,
    warmup: int = 50,
    block: int = 200,
    naive_every: int = 5,
    metrics: int = 10,
    proxy: bool = False,
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
    timings: dict[str, list[float]] = {"ours": [], "floor": [], "naive": []}
    recorded_calls: list[int] = []  # which handler calls were recorded
    with scratch_database(url, "k6exp_bench") as database, open(os.devnull, "w") as devnull:
        saved = {name: os.environ.get(name) for name in ("DATABASE_URL", "DB_PROXY")}
        os.environ["DATABASE_URL"] = database
        os.environ["DB_PROXY"] = "true" if proxy else "false"
        try:
            # The handler's logs and EMF metrics are written (as in Lambda), to /dev/null instead of a terminal.
            with contextlib.redirect_stdout(devnull), psycopg.connect(database) as floor_conn:
                app = load_report_app()
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
                events = iter([report_event(report, f"bench-{n}") for n in range(handler_calls)])

                def ours() -> None:
                    calls["ours"] += 1
                    statuses.append(app.lambda_handler(next(events), context)["statusCode"])

                def floor() -> None:
                    calls["floor"] += 1
                    floor_insert(floor_conn, report)

                def naive() -> None:
                    calls["naive"] += 1
                    naive_insert(database, report)

                try:
                    interleaved({"ours": ours, "floor": floor, "naive": naive}, 0, warmup, rng)  # connect, prepare
                    for rounds in blocks:
                        first = calls["ours"] + SETTLE_ROUNDS
                        pair = interleaved({"ours": ours, "floor": floor}, rounds, SETTLE_ROUNDS, rng)
                        recorded_calls.extend(range(first, first + rounds))
                        timings["ours"] += pair["ours"]
                        timings["floor"] += pair["floor"]
                        naive_calls = max(1, rounds // naive_every)
                        timings["naive"] += interleaved({"naive": naive}, naive_calls, 0, rng)["naive"]
                finally:
                    app.database.run = database_run
                    app.database.close()
                    log_handler.stream = log_stream
            rows = count_rows(database)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    if set(statuses) != {201} or rows != calls.total() * metrics:
        raise RuntimeError(f"benchmark did not store what it should: statuses {set(statuses)}, {rows} rows")
    database_part = [in_database[call] for call in recorded_calls]
    rest = [total - part for total, part in zip(timings["ours"], database_part, strict=True)]
    ratio = statistics.median(timings["ours"]) / statistics.median(timings["floor"])
    return {
        "benchmark": "ingest_path",
        "description": f"warm path, {metrics}-metric report, PostgreSQL over {transport}"
        + (", proxy mode (no session state, nothing prepared)" if proxy else ""),
        "repeat": repeat,
        "warmup": warmup,
        "variants": {name: summary(samples) for name, samples in timings.items()},
        "ours_split": {"in Database.run": summary(database_part), "rest of the handler": summary(rest)},
        "ratios": {
            "ours/floor": ratio,
            "ours/floor (paired)": paired_ratio(timings["ours"], timings["floor"]),
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
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--metrics", type=int, default=10, help="figures per report (10 to 1000)")
    parser.add_argument("--proxy", action="store_true", help="as through RDS Proxy (DB_PROXY=true)")
    args = parser.parse_args(argv)
    print(table(run(args.repeat, args.warmup, metrics=args.metrics, proxy=args.proxy)))


if __name__ == "__main__":
    sys.exit(main())
