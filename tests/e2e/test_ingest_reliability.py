"""Exactly once under load and through a database outage: real k6, the local API, a real PostgreSQL.

The promise: every report a client was told is stored is stored exactly once, and nothing else is written.
`k6/ingest_load_test.js` counts what the API answered (by status, and the metrics in the 201s); the tables
must hold exactly that. The outage tests stop and start an embedded PostgreSQL of their own (never the shared
server), in the middle of a k6 run and under several reporters that are retrying.

`SOAK_SECONDS=120` (`make soak`) makes each k6 run that long, with an outage every OUTAGE_EVERY_S seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from experiments.migrations import apply_migrations
from support import StoppableServer, private_pgdata

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "k6" / "ingest_load_test.js"
REPORTER = REPO_ROOT / "scripts" / "report_k6_result.py"
SOAK_SECONDS = int(os.environ.get("SOAK_SECONDS") or 0)
LOAD_SECONDS = SOAK_SECONDS or 8
FAULT_SECONDS = SOAK_SECONDS or 8
VUS = int(os.environ.get("SOAK_VUS") or 20)
OUTAGE_AFTER_S = 2.0  # the first outage starts this long into the run
OUTAGE_S = 2.0  # how long PostgreSQL stays down
OUTAGE_EVERY_S = 10.0  # in a soak, one outage per this many seconds

# Every idempotency record with the rows that carry its key: a report is whole when they are exactly its ids.
RECORDS_WITH_ROWS = """
SELECT k.key, k.response, coalesce(array_agg(e.id) FILTER (WHERE e.id IS NOT NULL), '{}')
FROM ingest.idempotency_keys k
LEFT JOIN experiments e ON e.metadata -> 'ingest' ->> 'idempotencyKey' = k.key
GROUP BY k.key, k.response
"""
REPORT_SIZES = """
SELECT count(DISTINCT n)
FROM (SELECT count(*) AS n FROM experiments GROUP BY metadata -> 'ingest' ->> 'idempotencyKey') AS per_report
"""
ROWS_WITHOUT_RECORD = """
SELECT count(*) FROM experiments e
WHERE NOT EXISTS (SELECT FROM ingest.idempotency_keys k WHERE k.key = e.metadata -> 'ingest' ->> 'idempotencyKey')
"""


def counts(summary: Path) -> dict[str, int]:
    """The scenario's counters (and http_reqs) from a `--summary-export` file."""
    metrics = json.loads(summary.read_text())["metrics"]
    return {name: int(values["count"]) for name, values in metrics.items() if "count" in values}


def whole_reports(conn: psycopg.Connection) -> tuple[int, int, list[str]]:
    """(records, sum of the ids in their stored answers, problems): a problem is a record whose rows are not
    exactly the ids it answered (a half-written or doubled report), or rows that belong to no record."""
    records, answered, problems = 0, 0, []
    for key, response, row_ids in conn.execute(RECORDS_WITH_ROWS):
        records += 1
        ids = set(json.loads(response)["ids"].values())
        answered += len(ids)
        if set(row_ids) != ids or len(row_ids) != len(ids):
            problems.append(f"{key}: answered {len(ids)} ids, {len(row_ids)} rows carry the key")
    orphans = conn.execute(ROWS_WITHOUT_RECORD).fetchone()[0]
    if orphans:
        problems.append(f"{orphans} rows belong to no idempotency record")
    return records, answered, problems


def rows(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM experiments").fetchone()[0]


def k6_env(api: Any, seconds: int, **extra: str) -> dict[str, str]:
    return {"API_URL": api.url, "API_KEY": api.api_key, "VUS": str(VUS), "DURATION": f"{seconds}s", **extra}


# ------------------------------------------------------------------------------------------- under load


def test_k6_ingest_load_stores_each_201_once_and_replays_write_nothing(
    local_api: Any, db: psycopg.Connection, run_k6: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    summary = tmp_path / "summary.json"

    done = run_k6(SCRIPT, summary, k6_env(local_api, LOAD_SECONDS, REPEAT_EVERY="4"), timeout=LOAD_SECONDS + 60)

    assert done.returncode == 0, done.stdout + done.stderr + local_api.log_tail()  # thresholds: no 5xx, no 4xx
    got = counts(summary)
    assert got["status_201"] > 100 and got["status_200"] > 20  # a real load, with real repeats
    assert got["status_5xx"] == got["status_other"] == 0
    assert got["status_200"] == got["replays_ok"]  # every 200 was a repeat answered with its first answer
    # Nothing lost, nothing doubled: one row per metric of each 201 (so the 200s wrote nothing) and one
    # idempotency record per 201.
    assert rows(db) == got["metrics_in_201"]
    records, answered, problems = whole_reports(db)
    assert records == got["status_201"]
    assert answered == got["metrics_in_201"]
    assert problems == []
    assert db.execute(REPORT_SIZES).fetchone()[0] == 12  # reports of 1 to 12 metrics all went through


# ------------------------------------------------------------------------------------------- faults


@pytest.fixture(scope="module")
def stoppable() -> Iterator[StoppableServer]:
    """An embedded PostgreSQL of this module's own, migrated: the tests stop and start it."""
    server = StoppableServer(private_pgdata())
    apply_migrations(server.url)
    yield server
    if not server.is_up():
        server.start()  # so pgserver's clean-up at exit finds it running


@pytest.fixture
def outage_db(stoppable: StoppableServer) -> Iterator[psycopg.Connection]:
    """The stoppable server, up and emptied; a connection for checking afterwards (opened when asked)."""
    if not stoppable.is_up():
        stoppable.start()
    with psycopg.connect(stoppable.url, autocommit=True) as conn:
        conn.execute("TRUNCATE experiments, ingest.idempotency_keys")
    yield stoppable
    if not stoppable.is_up():
        stoppable.start()


def outages(seconds: float) -> list[float]:
    """When to stop the server, in seconds into a run of `seconds`: the first after OUTAGE_AFTER_S, then one
    every OUTAGE_EVERY_S, each ending well before the run does."""
    starts, at = [], OUTAGE_AFTER_S
    while at + OUTAGE_S + 2 <= seconds or not starts:
        starts.append(at)
        at += OUTAGE_EVERY_S
    return starts


def test_database_outage_mid_k6_run_gives_503s_and_leaves_every_report_whole(
    outage_db: StoppableServer,
    local_api_on: Callable[..., Any],
    run_k6: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    api = local_api_on(outage_db.url)
    summary = tmp_path / "summary.json"
    # Like the reporter, k6 re-sends a report answered 5xx with the same key and bytes after Retry-After.
    env = k6_env(api, FAULT_SECONDS, REPEAT_EVERY="4", ALLOW_5XX="1", RETRIES="10", MAX_RETRY_WAIT_S="2")
    finished: list[subprocess.CompletedProcess[str]] = []
    k6 = threading.Thread(target=lambda: finished.append(run_k6(SCRIPT, summary, env, timeout=FAULT_SECONDS + 90)))

    started = time.monotonic()
    k6.start()
    for stop_at in outages(FAULT_SECONDS):
        time.sleep(max(0.0, started + stop_at - time.monotonic()))
        outage_db.stop()
        time.sleep(OUTAGE_S)
        outage_db.start()
    k6.join(FAULT_SECONDS + 120)

    assert finished, "k6 did not finish"
    done = finished[0]
    assert done.returncode == 0, done.stdout + done.stderr + api.log_tail()  # no 4xx, no bad replay, none lost
    got = counts(summary)
    assert got["status_5xx"] >= 1  # the outage was seen ...
    assert got["status_503_retry_after"] == got["status_5xx"]  # ... and every 5xx was a 503 with Retry-After
    assert got["status_201"] > 50  # and the load went on around it
    assert got["reports_unacked"] == 0
    with psycopg.connect(outage_db.url, autocommit=True) as conn:
        records, answered, problems = whole_reports(conn)
        stored_rows = rows(conn)
    assert problems == []  # no report half-written, none doubled, no stray rows
    assert stored_rows == answered
    # Every new report was acknowledged (201, or a 200 replay when an answer was lost in the outage) and is
    # stored once; nothing else is.
    assert records == got["reports_acked"]
    assert stored_rows == got["metrics_acked"]
    assert got["metrics_in_201"] <= stored_rows


def reporter_argv(summary: Path, base_url: str, name: str) -> list[str]:
    """The reporter as CI runs it, with a retry window (Retry-After is 2 s) longer than the outage."""
    return [sys.executable, str(REPORTER), str(summary), base_url, "-", name, "--variant", "outage", "--retries", "8"]


def last_verdict(output: str) -> str:
    """The reporter's line that says what happened to the report: `stored: ...` or `replayed (...): ...`."""
    return [line for line in output.splitlines() if line.startswith(("stored:", "replayed"))][-1]


def test_reporters_retrying_through_an_outage_store_each_report_exactly_once(
    outage_db: StoppableServer, local_api_on: Callable[..., Any], k6_summary: Path, tmp_path: Path
) -> None:
    api = local_api_on(outage_db.url)
    env = os.environ | {"EXPERIMENTS_API_KEY": api.api_key}
    names = [f"e2e_outage_r{i}" for i in range(4)]
    launches = [*names, names[0]]  # the first report twice: two CI jobs re-running the same step

    outage_db.stop()
    reporters = []
    for i, name in enumerate(launches):
        out = (tmp_path / f"reporter_{i}.out").open("w+")
        process = subprocess.Popen(
            reporter_argv(k6_summary, api.url, name), cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        reporters.append((name, process, out))
    time.sleep(OUTAGE_S)  # every reporter is answered 503 and waits its Retry-After
    outage_db.start()
    outputs = []
    for name, process, out in reporters:
        code = process.wait(timeout=60)
        out.seek(0)
        text = out.read()
        out.close()
        assert code == 0, text + api.log_tail()  # stored, or replayed: never "unreachable"
        assert "HTTP 503" in text  # it did meet the outage
        outputs.append((name, text))

    with psycopg.connect(outage_db.url, autocommit=True) as conn:
        records, answered, problems = whole_reports(conn)
        assert problems == []
        assert rows(conn) == answered
        assert records == len(names)  # one record per report, the duplicate launch included
        for name, text in outputs:
            said = set(re.findall(r"^\s+\S.*\s([0-9a-f-]{36})$", text, re.MULTILINE))
            stored = {row[0] for row in conn.execute("SELECT id FROM experiments WHERE name = %s", (name,))}
            assert said and said == stored, f"{name}: the reporter was told {said}, the table holds {stored}"
    verdicts = sorted(text.split(":")[0] for name, text in outputs for text in [last_verdict(text)] if name == names[0])
    assert verdicts == ["replayed (already stored, nothing new written)", "stored"]  # one wrote, one replayed
