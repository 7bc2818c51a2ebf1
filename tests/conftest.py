"""Fixtures shared by every test folder: a real PostgreSQL, a fresh database per test run.

`DATABASE_URL` names the server to use (CI: 127.0.0.1:5432); without it an embedded PostgreSQL is started
from the `pgserver` wheel. Either way the run creates its own database, migrates it and drops it at the end,
so nothing left over from an earlier run matters.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.base import DEFAULT_PROVIDERS
from changepoints.otavahelpers import OTAVA_PYTHON, Run, quiet_environment

from devkit.localdb import embedded_server, scratch_database
from experiments.config import secrets_provider
from support import (
    REPO_ROOT,
    Answer,
    DatabaseRelay,
    LambdaContext,
    SecretsManager,
    api_event,
    decode,
    get_event,
    load_function,
    private_pgdata,
)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server's URL, connected to its maintenance database."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    yield embedded_server(private_pgdata(), delete_on_exit=True).get_uri()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """URL of a database created and migrated for this test run, dropped afterwards."""
    with scratch_database(server_url, "k6exp_test") as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database, with our tables emptied first."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE experiments, ingest.idempotency_keys")
        yield conn


@pytest.fixture
def database_relay(database_url: str) -> Iterator[DatabaseRelay]:
    """The test database behind a relay the test can stall or cut (connect through `database_relay.url`)."""
    relay = DatabaseRelay(database_url)
    yield relay
    relay.close()


def function_on_test_database(name: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """`functions/<name>/app.py`, freshly imported, talking to the test database; its connection closed after."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    module = load_function(name)
    yield module
    module.database.close()


@pytest.fixture
def report_app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The report function's module, talking to the test database (a fresh connection per test)."""
    yield from function_on_test_database("report", database_url, monkeypatch)


@pytest.fixture
def invoke(report_app: ModuleType) -> Callable[[dict[str, Any]], Answer]:
    """Call `lambda_handler` with an event and decode its answer."""

    def call(event: dict[str, Any]) -> Answer:
        return decode(report_app.lambda_handler(event, LambdaContext()))

    return call


@pytest.fixture
def query_app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The query function's module, talking to the test database."""
    yield from function_on_test_database("query", database_url, monkeypatch)


@pytest.fixture
def get(query_app: ModuleType) -> Callable[..., Answer]:
    """GET a path through the query function: `get("/experiments", {"name": "x"})`."""

    def call(path: str, query: dict[str, str] | None = None) -> Answer:
        return decode(query_app.lambda_handler(get_event(path, query), LambdaContext()))

    return call


@pytest.fixture
def post(invoke: Callable[[dict[str, Any]], Answer]) -> Callable[..., Answer]:
    """POST a report body (or a raw body) through the handler: `post(body, headers={...})`."""

    def call(body: Any = None, **kwargs: Any) -> Answer:
        return invoke(api_event(body, **kwargs))

    return call


def forget_secrets() -> None:
    """Drop cached secrets and Secrets Manager clients: a client keeps the endpoint of the test that made it."""
    parameters.clear_caches()
    DEFAULT_PROVIDERS.clear()
    secrets_provider.cache_clear()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server on 127.0.0.1: Secrets Manager's JSON protocol over real HTTP, one per test run."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def point_aws_at(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send the functions' Secrets Manager calls to `endpoint`, with test credentials and a region."""
    forget_secrets()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def secrets_manager(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretsManager]:
    """Secrets Manager (moto's server) that boto3, through Powertools parameters, talks to."""
    point_aws_at(moto_endpoint, monkeypatch)
    yield SecretsManager(moto_endpoint)
    forget_secrets()


# --------------------------------------------------------------------------------------------- Apache Otava
# Otava never enters .venv (or the Lambda layer): .venv-otava is created through the Makefile when missing, as
# tests/template does for .venv-sam, and `scripts/regressions.py` runs in it as a subprocess.


@pytest.fixture(scope="session")
def otava_python() -> Path:
    """.venv-otava's interpreter, the venv created through `make install-otava` when missing."""
    done = subprocess.run(
        ["make", "--no-print-directory", "install-otava"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"make install-otava failed:\n{done.stdout}\n{done.stderr}"
    return OTAVA_PYTHON


@pytest.fixture
def regressions(otava_python: Path, database_url: str) -> Callable[..., Run]:
    """Run `scripts/regressions.py ARGS...` in .venv-otava against the test database."""

    def call(*args: str, env: dict[str, str] | None = None) -> Run:
        done = subprocess.run(
            [str(otava_python), str(REPO_ROOT / "scripts" / "regressions.py"), *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
            env={**quiet_environment(), "DATABASE_URL": database_url, **(env or {})},
        )  # fmt: skip
        return Run(done.returncode, done.stdout, done.stderr)

    return call
