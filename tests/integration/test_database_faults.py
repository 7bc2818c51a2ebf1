"""When the database misbehaves the API answers 503 + Retry-After, writes nothing partial, and recovers.

The outage tests stop and start a real PostgreSQL: an embedded one of their own (from the pgserver wheel),
so they never touch the shared server named by DATABASE_URL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import private_pgdata
from psycopg.conninfo import conninfo_to_dict

from experiments.config import ConfigurationError, load_database_settings
from experiments.db import Database
from experiments.migrations import apply_migrations
from experiments.models import ExperimentReport
from experiments.store import save_report
from support import StoppableServer, count_rows

pytestmark = pytest.mark.integration

REPORT = {"name": "faults", "variant": "baseline", "metricsSummary": {"p50_ms": 1, "p95_ms": 2, "rps": 3}}
METRICS = len(REPORT["metricsSummary"])


@pytest.fixture(scope="module")
def stoppable() -> StoppableServer:
    server = StoppableServer(private_pgdata())
    apply_migrations(server.url)
    return server


@pytest.fixture
def on_stoppable(stoppable: StoppableServer, report_app, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoppableServer]:
    """Point the handler (not yet connected) at the stoppable server, emptied; make sure it is up afterwards."""
    monkeypatch.setenv("DATABASE_URL", stoppable.url)
    with psycopg.connect(stoppable.url, autocommit=True) as conn:
        conn.execute("TRUNCATE experiments, ingest.idempotency_keys")
    yield stoppable
    if not _is_up(stoppable):
        stoppable.start()


def _is_up(server: StoppableServer) -> bool:
    try:
        psycopg.connect(server.url, connect_timeout=1).close()
        return True
    except psycopg.OperationalError:
        return False


def rows_on(url: str) -> int:
    with psycopg.connect(url) as conn:
        return count_rows(conn)


def test_database_stopped_mid_run_gives_503_then_recovers(on_stoppable, post) -> None:
    key = {"Idempotency-Key": "outage-1"}
    assert post(REPORT).status == 201  # warm connection

    on_stoppable.stop()
    during = post(REPORT, headers=key)
    assert during.status == 503
    assert during.headers["Retry-After"].isdigit()
    assert during.body["error"] == "database_unavailable"
    assert "Traceback" not in json.dumps(during.body)

    on_stoppable.start()
    after = post(REPORT, headers=key)
    assert after.status == 201  # the key was not used up by the failed attempt
    assert rows_on(on_stoppable.url) == 2 * METRICS


def test_connection_killed_inside_the_transaction_leaves_nothing(on_stoppable, post) -> None:
    """The handler's INSERT waits on a lock; its backend is terminated: 503, no row, and the key stays free."""
    key = {"Idempotency-Key": "killed-1"}
    with psycopg.connect(on_stoppable.url) as locker:
        locker.execute("LOCK TABLE experiments IN ACCESS EXCLUSIVE MODE")
        answers = []
        worker = threading.Thread(target=lambda: answers.append(post(REPORT, headers=key)))
        worker.start()
        with psycopg.connect(on_stoppable.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (_wait_for_lock_waiter(admin),))
        worker.join(10)
        locker.rollback()

    assert answers[0].status == 503
    assert rows_on(on_stoppable.url) == 0
    with psycopg.connect(on_stoppable.url) as conn:
        assert conn.execute("SELECT count(*) FROM ingest.idempotency_keys").fetchone()[0] == 0
    assert post(REPORT, headers=key).status == 201


def test_statement_that_hangs_ends_at_the_statement_timeout_with_503(database_url, monkeypatch, post, db) -> None:
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", "300")
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE experiments IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        answer = post(REPORT)
        elapsed = time.monotonic() - started
        locker.rollback()
    assert answer.status == 503
    assert elapsed < 3
    assert count_rows(db) == 0


def test_stale_connection_is_replaced_transparently(report_app, post, db) -> None:
    assert post(REPORT).status == 201
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'k6-experiments-ingest'"
    )
    assert post(REPORT).status == 201
    assert count_rows(db) == 2 * METRICS


def test_unreachable_database_is_a_quick_503(monkeypatch, report_app, post) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    report_app.database.close()
    started = time.monotonic()
    answer = post(REPORT)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "2"
    assert time.monotonic() - started < 5


def _wait_for_lock_waiter(conn: psycopg.Connection, timeout: float = 10) -> int:
    """The pid of our handler's backend once it waits on a lock (`conn` must be autocommit: fresh statistics)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            """SELECT pid FROM pg_stat_activity
               WHERE application_name = 'k6-experiments-ingest' AND wait_event_type = 'Lock'"""
        ).fetchone()
        if row:
            return row[0]
        time.sleep(0.02)
    raise AssertionError("the handler never waited on the lock")


# --- concurrency --------------------------------------------------------------------------------------------


def test_two_concurrent_requests_with_one_key_store_once(database_url, monkeypatch, db) -> None:
    """The second request is provably in flight while the first holds the key uncommitted."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    report = ExperimentReport.model_validate(REPORT)
    first_claimed, release_first = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def first(conn: psycopg.Connection):
        outcome = save_report(conn, report, idempotency_key="same-key")
        first_claimed.set()
        release_first.wait(10)
        return outcome

    one, two = Database(), Database()
    t1 = threading.Thread(target=lambda: outcomes.setdefault("first", one.run(first)))
    t2 = threading.Thread(
        target=lambda: outcomes.setdefault(
            "second", two.run(lambda c: save_report(c, report, idempotency_key="same-key"))
        )
    )
    t1.start()
    first_claimed.wait(10)
    t2.start()
    _wait_for_lock_waiter(db)
    release_first.set()
    t1.join(10), t2.join(10)
    one.close(), two.close()

    assert outcomes["first"].replayed is False
    assert outcomes["second"].replayed is True
    assert outcomes["second"].stored == outcomes["first"].stored
    assert count_rows(db) == METRICS


def test_many_concurrent_retries_store_once(database_url, monkeypatch, db) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    report = ExperimentReport.model_validate(REPORT)
    barrier = threading.Barrier(8)
    results = []

    def attempt() -> None:
        database = Database()
        barrier.wait()
        results.append(database.run(lambda c: save_report(c, report, idempotency_key="stampede")))
        database.close()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)

    assert sorted(r.replayed for r in results) == [False] + [True] * 7
    assert len({json.dumps(r.stored.model_dump()) for r in results}) == 1
    assert count_rows(db) == METRICS


# --- credentials from Secrets Manager (moto's server: a real HTTP endpoint speaking its protocol) --------------


def secret_for(database_url: str, **changes: object) -> dict[str, object]:
    """The secret RDS manages for a database: username and password only, plus `changes`."""
    params = conninfo_to_dict(database_url)
    return {"username": params.get("user", "postgres"), "password": "s3cr3t-Pa55word", **changes}


def use_secret(monkeypatch: pytest.MonkeyPatch, arn: str, database_url: str) -> None:
    """The template's environment: the secret's ARN, DB_HOST and DB_NAME; no DATABASE_URL."""
    params = conninfo_to_dict(database_url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DB_SECRET_ARN", arn)
    monkeypatch.setenv("DB_HOST", params.get("host") or "127.0.0.1")
    monkeypatch.setenv("DB_PORT", str(params.get("port") or 5432))
    monkeypatch.setenv("DB_NAME", params["dbname"])
    monkeypatch.setenv("DB_SSLMODE", "prefer")  # the test server has no certificate (verify-full: test_config)


def test_an_rds_managed_secret_with_only_username_and_password_stores_into_db_name(
    secrets_manager, database_url, report_app, monkeypatch, post, db
) -> None:
    use_secret(monkeypatch, secrets_manager.create(secret_for(database_url)), database_url)
    assert post(REPORT).status == 201
    assert count_rows(db) == METRICS


def test_the_secret_is_cached_across_connections(secrets_manager, database_url, report_app, monkeypatch, post, db):
    arn = secrets_manager.create(secret_for(database_url, host="db.invalid"))  # DB_HOST wins, as for a proxy
    use_secret(monkeypatch, arn, database_url)
    assert post(REPORT).status == 201
    secrets_manager.update(arn, secret_for(database_url, username="no_such_role"))
    report_app.database.close()  # a new connection: the settings are loaded again, the secret from the cache
    assert post(REPORT).status == 201
    assert count_rows(db) == 2 * METRICS  # that the password is never logged: tests/integration/test_security.py


def test_without_db_name_nothing_goes_to_the_postgres_database(
    secrets_manager, database_url, report_app, monkeypatch, post, db
) -> None:
    use_secret(monkeypatch, secrets_manager.create(secret_for(database_url)), database_url)
    monkeypatch.delenv("DB_NAME")
    with pytest.raises(ConfigurationError, match="set DB_NAME"):  # was: the server's `postgres` database
        load_database_settings()
    answer = post(REPORT)
    assert answer.status == 500  # a deployment mistake: logged, alarmed on, not retried
    assert count_rows(db) == 0


def test_without_db_host_a_secret_without_host_is_a_configuration_error(
    secrets_manager, database_url, monkeypatch
) -> None:
    use_secret(monkeypatch, secrets_manager.create(secret_for(database_url)), database_url)
    monkeypatch.delenv("DB_HOST")
    with pytest.raises(ConfigurationError, match="set DB_HOST"):
        load_database_settings()


def test_secrets_manager_refusing_is_a_503_not_a_500(secrets_manager, report_app, database_url, monkeypatch, post, db):
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-NoSuch"  # moto answers ResourceNotFound
    use_secret(monkeypatch, arn, database_url)
    answer = post(REPORT)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "2"
    assert count_rows(db) == 0
