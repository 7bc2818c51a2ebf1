"""The database and AWS failing in the ways a deployment meets them: each a 503 + Retry-After by the deadline.

- A database (or network) that goes silent without closing the connection: a TCP proxy that stops forwarding.
- Secrets Manager that accepts the connection and never answers: a socket that never replies.
- A failover onto a reader: the database turned read-only (`default_transaction_read_only`), then back.
- RDS Proxy: connections through it carry no session state (nothing for the proxy to pin).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import point_aws_at
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from experiments.limits import (
    REQUEST_DEADLINE_S,
    SECRETS_CONNECT_TIMEOUT_S,
    SECRETS_MAX_ATTEMPTS,
    SECRETS_READ_TIMEOUT_S,
    SECRETS_WORST_CASE_S,
)
from support import REPO_ROOT, DatabaseRelay, SilentServer, count_rows, load_script

pytestmark = pytest.mark.integration

REPORT = {"name": "runtime-faults", "variant": "baseline", "metricsSummary": {"p50_ms": 1, "p95_ms": 2, "rps": 3}}
METRICS = len(REPORT["metricsSummary"])
TEST_DEADLINE_S = 1.5  # the tests' deadline (DB_REQUEST_DEADLINE_S); the deployed one is REQUEST_DEADLINE_S


def test_the_request_deadline_is_8_seconds_below_the_function_timeout() -> None:
    template = load_script("local_api").load_template(REPO_ROOT / "template.yaml")
    function_timeout_s = template["Globals"]["Function"]["Timeout"]
    assert REQUEST_DEADLINE_S == 8.0
    assert function_timeout_s - 1 >= REQUEST_DEADLINE_S  # a second left to log and answer the 503
    assert SECRETS_MAX_ATTEMPTS * (SECRETS_CONNECT_TIMEOUT_S + SECRETS_READ_TIMEOUT_S) == SECRETS_WORST_CASE_S
    assert SECRETS_WORST_CASE_S == 5.0
    assert SECRETS_WORST_CASE_S < REQUEST_DEADLINE_S


# --- a silent database --------------------------------------------------------------------------------------


@pytest.fixture
def proxy(database_relay: DatabaseRelay, monkeypatch: pytest.MonkeyPatch) -> DatabaseRelay:
    """The test database behind a relay that can go silent (connect through `proxy.url`), a short deadline."""
    monkeypatch.setenv("DB_REQUEST_DEADLINE_S", str(TEST_DEADLINE_S))
    return database_relay


def timed(call, *args, **kwargs):
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


def test_a_database_that_goes_silent_answers_503_by_the_deadline_and_the_connection_is_replaced(
    proxy, report_app, monkeypatch, post, db
) -> None:
    monkeypatch.setenv("DATABASE_URL", proxy.url)
    assert post(REPORT).status == 201  # warm connection through the proxy
    first_connection = report_app.database._connection

    proxy.stall()  # the statement goes out, no answer ever comes back, the socket stays open
    answer, elapsed = timed(post, REPORT, headers={"Idempotency-Key": "silent-1"})
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "2"
    assert answer.body["error"] == "database_unavailable"
    assert TEST_DEADLINE_S <= elapsed < TEST_DEADLINE_S + 1.0  # without the watchdog: forever
    assert first_connection.closed

    proxy.restore()
    assert post(REPORT, headers={"Idempotency-Key": "silent-1"}).status == 201  # a new connection
    assert report_app.database._connection is not first_connection
    assert count_rows(db) == 2 * METRICS


def test_a_database_silent_from_the_start_answers_503_by_the_deadline(proxy, report_app, monkeypatch, post, db) -> None:
    """Accepted, never answered: the connect timeout (3 s) is cut to the time left before the deadline."""
    monkeypatch.setenv("DATABASE_URL", proxy.url)
    proxy.stall()
    answer, elapsed = timed(post, REPORT)
    assert answer.status == 503
    assert elapsed < max(TEST_DEADLINE_S, 2) + 1.0  # psycopg's smallest connect timeout is 2 s
    proxy.restore()
    assert post(REPORT).status == 201
    assert count_rows(db) == METRICS


def test_a_read_that_goes_silent_answers_503_by_the_deadline(proxy, query_app, monkeypatch, get) -> None:
    monkeypatch.setenv("DATABASE_URL", proxy.url)
    assert get("/experiments", {"name": "runtime-faults"}).status == 200
    proxy.stall()
    answer, elapsed = timed(get, "/experiments", {"name": "runtime-faults"})
    assert answer.status == 503
    assert TEST_DEADLINE_S <= elapsed < TEST_DEADLINE_S + 1.0


# --- Secrets Manager that never answers ---------------------------------------------------------------------


def test_secrets_manager_that_never_answers_is_a_503_within_the_deadline(
    database_url, report_app, monkeypatch, post, db
) -> None:
    silent = SilentServer()
    point_aws_at(silent.url, monkeypatch)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DB_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf")
    monkeypatch.setenv("DB_NAME", "unused")
    try:
        answer, elapsed = timed(post, REPORT)
    finally:
        silent.close()
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "2"
    # 2 attempts of a 1.5 s read each (botocore's defaults: 60 s reads, retried, far past the 10 s timeout)
    assert SECRETS_MAX_ATTEMPTS * SECRETS_READ_TIMEOUT_S <= elapsed < REQUEST_DEADLINE_S
    assert len(silent.accepted) == SECRETS_MAX_ATTEMPTS
    assert count_rows(db) == 0


# --- a failover onto a reader -------------------------------------------------------------------------------


@pytest.fixture
def read_only_switch(database_url: str) -> Iterator:
    """Turn the test database read-only for new sessions (as a reader after a failover is), and back."""
    dbname = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as admin:

        def switch(read_only: bool) -> None:
            setting = sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                sql.Identifier(dbname), sql.SQL("on" if read_only else "off")
            )
            admin.execute(setting)
            # The handler's session ends as in a failover; its next connection gets the new setting.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = 'k6-experiments-ingest'",
                (dbname,),
            )

        yield switch
        switch(False)


def test_a_database_turned_read_only_is_a_503_and_the_next_request_after_the_failover_is_stored(
    read_only_switch, report_app, post, db
) -> None:
    assert post(REPORT).status == 201
    read_only_switch(True)
    during = post(REPORT, headers={"Idempotency-Key": "failover-1"})
    assert during.status == 503
    assert during.headers["Retry-After"] == "2"
    assert during.body["error"] == "database_unavailable"
    # Until the failover ends, each request gets a 503 on a connection of its own: the read-only one is dropped.
    read_only_connection = report_app.database._connection
    assert read_only_connection is None
    assert post(REPORT, headers={"Idempotency-Key": "failover-1"}).status == 503

    read_only_switch(False)
    assert post(REPORT, headers={"Idempotency-Key": "failover-1"}).status == 201
    assert count_rows(db) == 2 * METRICS


# --- RDS Proxy: no session state ----------------------------------------------------------------------------

SESSION_STATE = """
SELECT (SELECT count(*) FROM pg_prepared_statements),
       (SELECT array_agg(name ORDER BY name) FROM pg_settings WHERE source = 'session'),
       current_setting('application_name')
"""


def session_state(report_app) -> tuple[int, list[str] | None, str]:
    """Prepared statements, settings changed in the session, application_name: on the handler's connection."""
    return report_app.database._connection.execute(SESSION_STATE, prepare=False).fetchone()


def test_through_rds_proxy_a_connection_holds_no_session_state(database_url, report_app, monkeypatch, post, db) -> None:
    monkeypatch.setenv("DB_PROXY", "true")
    for n in range(7):  # past psycopg's prepare threshold (5), and with prepare=True on the insert
        assert post(REPORT, headers={"Idempotency-Key": f"proxy-{n}"}).status == 201
    assert session_state(report_app) == (0, None, "")
    assert count_rows(db) == 7 * METRICS


def test_a_direct_connection_keeps_its_timeouts_and_prepared_insert(database_url, report_app, post, db) -> None:
    """The same check on a direct connection finds the state the proxy mode leaves out."""
    for n in range(2):
        assert post(REPORT, headers={"Idempotency-Key": f"direct-{n}"}).status == 201
    prepared, settings, application_name = session_state(report_app)
    assert prepared >= 1
    assert {"idle_in_transaction_session_timeout", "statement_timeout"} <= set(settings)
    assert application_name == "k6-experiments-ingest"
