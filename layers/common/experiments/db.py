"""One PostgreSQL connection per process, opened on first use and kept for warm invocations.

A Lambda instance serves one request at a time, so one connection is all it needs. The promise:
`Database.run(work)` runs `work` in one transaction and either commits all of it or none of it; when the
database is unreachable, slow past the statement timeout, or drops the connection, it raises
`DatabaseUnavailable` (the API answers 503 + Retry-After). A connection found broken on reuse (the server
restarted, a proxy closed it while the instance was frozen) is replaced once, transparently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg

from experiments.config import DatabaseSettings, load_database_settings

T = TypeVar("T")

APPLICATION_NAME = "k6-experiments-ingest"
# Once per connection: a statement that hangs (a lock, a stuck server) ends with an error instead of a hung Lambda.
SET_TIMEOUTS = """
SELECT set_config('statement_timeout', %s, false), set_config('idle_in_transaction_session_timeout', %s, false)
"""


class DatabaseUnavailable(Exception):
    """The database could not be reached or did not answer in time; the request may be retried."""


class Database:
    """A lazily opened connection with the one-transaction-per-call rule (see module docstring)."""

    def __init__(self, load_settings: Callable[..., DatabaseSettings] = load_database_settings) -> None:
        self._load_settings = load_settings
        self._connection: psycopg.Connection | None = None

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work(connection)` in one transaction; retry once only if a reused connection was dead."""
        reused = self._connection is not None and not self._connection.closed
        connection = self._connect()
        commit_started = False
        try:
            with connection.transaction():
                result = work(connection)
                commit_started = True
            return result
        except psycopg.OperationalError as error:
            if not connection.broken:  # e.g. the statement timeout: the connection itself is fine
                raise DatabaseUnavailable(str(error)) from error
            self.close()
            if not reused or commit_started:  # the server is down, or the commit's fate is unknown
                raise DatabaseUnavailable(str(error)) from error
        return self.run(work)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> psycopg.Connection:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        settings = self._load_settings()
        try:
            self._connection = _open(settings)
        except psycopg.OperationalError as error:
            if not settings.from_secret:
                raise DatabaseUnavailable(str(error)) from error
            # The password may have been rotated since the secret was cached: fetch it once more.
            try:
                self._connection = _open(self._load_settings(refresh_secret=True))
            except psycopg.OperationalError as second_error:
                raise DatabaseUnavailable(str(second_error)) from second_error
        return self._connection


def _open(settings: DatabaseSettings) -> psycopg.Connection:
    """Open an autocommit connection (transactions are explicit) with short timeouts."""
    connection = psycopg.connect(
        settings.conninfo,
        autocommit=True,
        connect_timeout=settings.connect_timeout_s,
        application_name=APPLICATION_NAME,
        keepalives=1,
        keepalives_idle=30,
    )
    connection.execute(SET_TIMEOUTS, (str(settings.statement_timeout_ms), str(settings.statement_timeout_ms * 2)))
    return connection
