"""Fixtures shared by every test folder: a real PostgreSQL, a fresh database per test run.

`DATABASE_URL` names the server to use (CI: 127.0.0.1:5432); without it an embedded PostgreSQL is started
from the `pgserver` wheel. Either way the run creates its own database, migrates it and drops it at the end,
so nothing left over from an earlier run matters.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from experiments.localdb import embedded_server
from experiments.migrations import apply_migrations

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = REPO_ROOT / "events"


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server's URL, connected to its maintenance database."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    server = embedded_server(tmp_path_factory.mktemp("pgdata"), delete_on_exit=True)
    yield server.get_uri()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """URL of a database created and migrated for this test run, dropped afterwards."""
    name = f"k6exp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(server_url, dbname=name)
    apply_migrations(url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database, with our tables emptied first."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE experiments, ingest.idempotency_keys")
        yield conn
