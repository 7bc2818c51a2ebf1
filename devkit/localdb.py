"""The database for local mode: `DATABASE_URL` when set, else an embedded PostgreSQL from the `pgserver` wheel.

Used by scripts and tests only (never in Lambda); `pgserver` is a dev dependency, imported on demand.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from experiments.migrations import apply_migrations

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / ".local" / "pgdata"


def embedded_server(data_dir: Path, *, delete_on_exit: bool = False):  # -> pgserver.PostgresServer
    """Start (or join) the embedded PostgreSQL in `data_dir`; it stops when the last process using it exits."""
    import pgserver  # dev dependency: only local mode needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(data_dir, cleanup_mode="delete" if delete_on_exit else "stop")


def database_url(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """`DATABASE_URL` if set, else the URL of the embedded PostgreSQL under `data_dir` (started if needed)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return embedded_server(data_dir).get_uri()


@contextmanager
def scratch_database(server_url: str, prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """A database created on the server `server_url` (migrated unless told not to), dropped afterwards.

    Tests and benchmarks each work in their own, so nothing left over from another run matters.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    try:
        if migrate:
            apply_migrations(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
