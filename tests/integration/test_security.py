"""Secrets stay out of the logs, and SQL never carries a value in its text.

- The API key (header `x-api-key` or `Authorization: Bearer`, and API Gateway's `identity.apiKey`) and the
  database password (from DATABASE_URL or from Secrets Manager) never appear in what the functions log, at
  DEBUG level, on the success path and on every failure path we can provoke for real.
- Every SQL statement of `store`, `migrations` and `db` is a module constant, and the values travel beside it
  as bound parameters: checked on the source (what it proves and what not is said there), and on the server,
  which shows the insert it received with `$n` placeholders while the report's SQL-looking strings are
  stored verbatim.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from experiments import db as db_module
from experiments import migrations, store
from support import REPO_ROOT, LambdaContext, api_event, count_rows, load_function

pytestmark = pytest.mark.integration

API_KEY = "k6exp-SECRET-api-key-7f3a9c"
PASSWORD = "k6exp-SECRET-db-password-Zq81"
REPORT = {"name": "security", "variant": "baseline", "metricsSummary": {"p50_ms": 1, "p95_ms": 2}}


def keyed_event(body: Any = REPORT, *, raw_body: str | None = None, **headers: str) -> dict[str, Any]:
    """An event carrying the API key where API Gateway puts it: the header and `identity.apiKey`."""
    event = api_event(body, raw_body=raw_body, headers={"x-api-key": API_KEY, **headers})
    event["requestContext"]["identity"]["apiKey"] = API_KEY
    return event


@contextlib.contextmanager
def captured_logs(function: ModuleType) -> Iterator[io.StringIO]:
    """Everything `function` logs, at DEBUG, formatted as its Powertools logger formats it, in one buffer.

    The logger's own handler is pointed at the buffer (Powertools configures a logger once per process, so its
    stream is whatever stdout was then, often an earlier test's capture); a second handler on the root logger
    catches loggers without a handler of their own (experiments.http's child logger when no service is named).
    """
    sink = io.StringIO()
    logger = function.logger
    handler = logger.registered_handler
    previous_stream, previous_level = handler.stream, logger.log_level
    handler.stream = sink  # not setStream(): it flushes the old stream, which may be closed by now
    logger.setLevel("DEBUG")
    catch_all = logging.StreamHandler(sink)
    catch_all.setFormatter(logger.registered_formatter)
    logging.root.addHandler(catch_all)
    try:
        yield sink
    finally:
        logging.root.removeHandler(catch_all)
        logger.setLevel(previous_level)
        handler.stream = previous_stream


# --- the API key --------------------------------------------------------------------------------------------


def test_the_api_key_never_appears_in_the_report_functions_logs(capsys, monkeypatch, invoke, report_app, db) -> None:
    key = {"Idempotency-Key": f"sec-{uuid.uuid4()}"}
    with captured_logs(report_app) as logs:
        answers = [
            invoke(keyed_event(**key)),  # 201
            invoke(keyed_event(**key)),  # 200 replay
            invoke(keyed_event({**REPORT, "notes": "other"}, **key)),  # 409
            invoke(keyed_event({**REPORT, "metricsSummary": {"p95_ms": True}})),  # 422
            invoke(keyed_event(raw_body='{"name": ')),  # 400
            invoke(keyed_event(**{"Content-Type": "text/plain"})),  # 415
            invoke(keyed_event(raw_body="x" * (256 * 1024 + 1))),  # 413
            invoke(keyed_event(Authorization=f"Bearer {API_KEY}")),  # 201, the key in both headers
        ]
        monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
        report_app.database.close()
        answers.append(invoke(keyed_event()))  # 503: the database is unreachable

    assert [a.status for a in answers] == [201, 200, 409, 422, 400, 415, 413, 201, 503]
    logged, printed = logs.getvalue(), capsys.readouterr()
    assert '"message":"report stored"' in logged and "database unavailable" in logged  # the logs were captured
    assert '"correlation_id"' in logged  # as Powertools formats it, with the request's context
    assert API_KEY not in logged + printed.out + printed.err
    assert all(API_KEY not in json.dumps([a.headers, a.body]) for a in answers)


def test_the_api_key_never_appears_in_the_authorizers_logs(capsys) -> None:
    authorizer = load_function("authorizer")
    arn = "arn:aws:execute-api:eu-west-1:123456789012:abc123/dev/POST/experiments/report"
    with captured_logs(authorizer) as logs:
        for headers in ({"x-api-key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}, {}):
            event = {"type": "REQUEST", "methodArn": arn, "headers": headers}
            answer = authorizer.lambda_handler(event, LambdaContext())
            assert answer.get("usageIdentifierKey") == (API_KEY if headers else None)

    logged, printed = logs.getvalue(), capsys.readouterr()
    assert "no API key presented" in logged  # the logs were captured
    assert API_KEY not in logged + printed.out + printed.err


def test_no_function_is_configured_to_log_whole_events() -> None:
    """Powertools' event logging would write the `x-api-key` header into the logs."""
    template = (REPO_ROOT / "template.yaml").read_text()
    assert "POWERTOOLS_LOGGER_LOG_EVENT" not in template
    for app in (REPO_ROOT / "functions").glob("*/app.py"):
        assert "log_event=True" not in app.read_text(), app


# --- the database password ----------------------------------------------------------------------------------


def test_the_database_password_from_database_url_never_appears_in_logs(
    capsys, database_url, monkeypatch, post, report_app, db
) -> None:
    """Trust authentication ignores the password, so the same URL works and, pointed elsewhere, fails."""
    with_password = make_conninfo(database_url, password=PASSWORD)
    answers = []
    with captured_logs(report_app) as logs:
        for url in (
            with_password,  # 201
            make_conninfo(with_password, host="127.0.0.1", port="1"),  # 503: nothing listens there
            make_conninfo(with_password, dbname="k6exp_no_such_database"),  # 503: refused by the server
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/x?no_such_option=1",  # a broken URL: our bug, 500
        ):
            monkeypatch.setenv("DATABASE_URL", url)
            report_app.database.close()  # the next request connects with the URL of now
            answers.append(post(REPORT))

    assert [a.status for a in answers] == [201, 503, 503, 500]
    logged, printed = logs.getvalue(), capsys.readouterr()
    assert "database unavailable" in logged and "unexpected error" in logged  # the logs were captured
    assert PASSWORD not in logged + printed.out + printed.err
    assert all(PASSWORD not in json.dumps([a.headers, a.body]) for a in answers)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://postgres:{PASSWORD}%zz@127.0.0.1:5432/x",  # bad percent-encoding: psycopg quotes the token
        f"postgresql://postgres:{PASSWORD}%@127.0.0.1:5432/x",
        f"host=127.0.0.1 password='{PASSWORD} dbname=x",  # an unterminated quote
    ],
    ids=["bad-escape", "lone-percent", "unterminated-quote"],
)
def test_a_malformed_database_url_never_logs_or_answers_the_password(
    url, capsys, monkeypatch, post, report_app
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    report_app.database.close()
    with captured_logs(report_app) as logs:
        answer = post(REPORT)

    assert answer.status == 500  # a deployment mistake, said in the log: "DATABASE_URL is not a valid ..."
    logged, printed = logs.getvalue(), capsys.readouterr()
    assert "DATABASE_URL is not a valid connection string" in logged  # the logs were captured
    assert PASSWORD not in logged + printed.out + printed.err
    assert PASSWORD not in json.dumps([answer.headers, answer.body])


def test_the_database_password_from_secrets_manager_never_appears_in_logs(
    capsys, secrets_manager, database_url, monkeypatch, post, report_app, db
) -> None:
    params = conninfo_to_dict(database_url)
    arn = secrets_manager.create({"username": params.get("user", "postgres"), "password": PASSWORD})
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DB_SECRET_ARN", arn)
    monkeypatch.setenv("DB_HOST", params.get("host") or "127.0.0.1")
    monkeypatch.setenv("DB_PORT", str(params.get("port") or 5432))
    monkeypatch.setenv("DB_NAME", params["dbname"])
    monkeypatch.setenv("DB_SSLMODE", "prefer")

    with captured_logs(report_app) as logs:
        answers = [post(REPORT)]  # 201
        monkeypatch.setenv("DB_NAME", "k6exp_no_such_database")  # refused, and again with the secret fetched anew
        report_app.database.close()
        answers.append(post(REPORT))  # 503

    assert [a.status for a in answers] == [201, 503]
    logged, printed = logs.getvalue(), capsys.readouterr()
    assert "report stored" in logged and "database unavailable" in logged  # the logs were captured
    assert PASSWORD not in logged + printed.out + printed.err
    assert all(PASSWORD not in json.dumps([a.headers, a.body]) for a in answers)


# --- SQL: constants with bound parameters -------------------------------------------------------------------

PLACEHOLDER = re.compile(r"%(\(\w+\))?[sbt]")
MIGRATION_FILE_TEXT = "path.read_text"  # migrations.py runs the files of db/migrations: fixed text, no input


def module_constants(module: ModuleType) -> dict[str, str]:
    """The module's top-level `NAME = "text"` assignments (each name assigned exactly once)."""
    tree = ast.parse(inspect.getsource(module))
    assigned: dict[str, list[ast.expr]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
    return {
        name: values[0].value
        for name, values in assigned.items()
        if len(values) == 1 and isinstance(values[0], ast.Constant) and isinstance(values[0].value, str)
    }


def execute_calls(module: ModuleType) -> list[ast.Call]:
    tree = ast.parse(inspect.getsource(module))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "execute"
    ]


@pytest.mark.parametrize("module", [store, migrations, db_module], ids=lambda module: module.__name__)
def test_every_statement_is_a_module_constant_with_bound_parameters(module: ModuleType) -> None:
    """What this proves: each `execute` gets a string constant fixed at import (never an f-string, `%`, `+`
    or `.format` of anything), whose only `%` are psycopg placeholders, and whose values come as a separate
    argument. What it cannot prove: that psycopg sends them apart (the next test shows it on the server)."""
    constants = module_constants(module)
    calls = execute_calls(module)
    assert calls, f"no execute() in {module.__name__}"
    for call in calls:
        statement = call.args[0]
        where = f"{module.__name__} line {call.lineno}"
        if ast.unparse(statement).startswith(MIGRATION_FILE_TEXT) and module is migrations:
            continue
        assert isinstance(statement, ast.Name) and statement.id in constants, f"{where}: not a constant"
        text = constants[statement.id]
        assert "{" not in text and "}" not in text, f"{where}: format fields in {statement.id}"
        assert "%" not in PLACEHOLDER.sub("", text.replace("%%", "")), f"{where}: a % that is not a placeholder"
        if PLACEHOLDER.search(text):
            assert len(call.args) > 1 or call.keywords, f"{where}: placeholders without parameters"


INJECTIONS = {
    "name": "x'); DROP TABLE experiments; --",
    "variant": "' OR '1'='1",
    "notes": "Robert'); DELETE FROM ingest.idempotency_keys; --",
    "rawFile": "$$; TRUNCATE experiments; $$",
    "metadata": {"'; SELECT pg_sleep(10); --": "\\'; COPY experiments TO '/tmp/x'; --", "q": "%(name)s %s $1"},
}


def test_the_server_gets_placeholders_and_the_values_are_stored_verbatim(database_url, invoke, db) -> None:
    """While the insert waits on a lock, the server shows the statement it was sent: `$n`, not the values."""
    key = "';DROP/**/TABLE/**/experiments;--"
    event = api_event({**REPORT, **INJECTIONS}, headers={"Idempotency-Key": key, "User-Agent": key})
    event["requestContext"]["identity"]["userAgent"] = key
    answers: list[Any] = []
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE experiments IN ACCESS EXCLUSIVE MODE")
        worker = threading.Thread(target=lambda: answers.append(invoke(event)))
        worker.start()
        received = _statement_waiting_on_a_lock(db)
        locker.rollback()
    worker.join(10)

    assert answers[0].status == 201, answers[0].body
    assert re.sub(r"\$\d+", "%s", " ".join(received.split())) == " ".join(
        PLACEHOLDER.sub("%s", store.CLAIM_KEY_AND_INSERT_ROWS).split()
    )
    for value in [key, *(v for v in INJECTIONS.values() if isinstance(v, str))]:
        assert value not in received
    stored = db.execute("SELECT name, variant, description, metadata FROM experiments").fetchall()
    assert len(stored) == count_rows(db) == 2
    for name, variant, description, metadata in stored:
        assert (name, variant, description) == (INJECTIONS["name"], INJECTIONS["variant"], INJECTIONS["notes"])
        assert metadata["rawFile"] == INJECTIONS["rawFile"]
        assert {k: metadata[k] for k in INJECTIONS["metadata"]} == INJECTIONS["metadata"]
        assert metadata["ingest"]["idempotencyKey"] == key and metadata["ingest"]["userAgent"] == key
    assert db.execute("SELECT key FROM ingest.idempotency_keys").fetchall() == [(key,)]


def _statement_waiting_on_a_lock(conn: psycopg.Connection, timeout: float = 10) -> str:
    """The text of the statement our handler's backend waits with (`conn` is autocommit: fresh statistics)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            """SELECT query FROM pg_stat_activity
               WHERE application_name = %s AND wait_event_type = 'Lock'""",
            (db_module.APPLICATION_NAME,),
        ).fetchone()
        if row:
            return row[0]
        time.sleep(0.02)
    raise AssertionError("the handler never waited on the lock")
