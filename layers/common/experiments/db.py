"""One PostgreSQL connection per process, opened on first use and kept for warm invocations.

A Lambda instance serves one request at a time, so one connection is all it needs. The promise:
`Database.run(work)` runs `work` in one transaction and either commits all of it or none of it; when the
database is unreachable, slow past the statement timeout, or drops the connection, it raises
`DatabaseUnavailable` (the API answers 503 + Retry-After). A connection found broken on reuse (the server
restarted, a proxy closed it while the instance was frozen) is replaced once, transparently, but only when
nothing of the work can have been committed, so no work is ever committed twice.

`Database.run(work, single_statement=True)` is for work whose change is ONE statement (the report's claim and
rows are): that statement is its own transaction on the autocommit connection, so no BEGIN and COMMIT are sent
and the work costs one round trip instead of three.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import pq

from experiments.config import DatabaseSettings, load_database_settings
from experiments.errors import CredentialsUnavailable, DatabaseUnavailable

T = TypeVar("T")

APPLICATION_NAME = "k6-experiments-ingest"
# Once per connection: a statement that hangs (a lock, a stuck server) ends with an error instead of a hung Lambda.
SET_TIMEOUTS = """
SELECT set_config('statement_timeout', %s, false), set_config('idle_in_transaction_session_timeout', %s, false)
"""
# The server's answer when it ended the session before running the statement (terminated by an administrator,
# a fast shutdown, or idle too long): the statement did not run, so running it again cannot store it twice.
SESSION_ENDED = frozenset({"57P01", "57P05"})  # admin_shutdown, idle_session_timeout


class Database:
    """A lazily opened connection with the one-transaction-per-call rule (see module docstring)."""

    def __init__(self, load_settings: Callable[..., DatabaseSettings] = load_database_settings) -> None:
        self._load_settings = load_settings
        self._connection: psycopg.Connection | None = None

    def run(self, work: Callable[[psycopg.Connection], T], *, single_statement: bool = False) -> T:
        """Run `work(connection)` in one transaction (see the module docstring); retry once on a dead connection.

        With `single_statement`, no BEGIN/COMMIT are sent: each statement is its own transaction, so `work` must
        make its whole change with its first statement and may only read after it, and only if that changed
        nothing (as `store.save_report` does); then running it again after a refused statement stores nothing twice.
        """
        connection, reused = self._connect()
        commit_sent = False
        try:
            if single_statement:
                return work(connection)
            with connection.transaction():
                result = work(connection)
                commit_sent = True
            return result
        except psycopg.OperationalError as error:
            if not connection.broken:  # e.g. the statement timeout: the connection itself is fine
                raise DatabaseUnavailable(str(error)) from error
            self.close()
            # Retry only what cannot have been committed: a transaction whose COMMIT was not sent, or a
            # statement the server refused because it had ended the session before running it.
            nothing_committed = error.sqlstate in SESSION_ENDED if single_statement else not commit_sent
            if not reused or not nothing_committed:  # the server is down, or the commit's fate is unknown
                raise DatabaseUnavailable(str(error)) from error
        return self.run(work, single_statement=single_statement)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> tuple[psycopg.Connection, bool]:
        """The kept connection if the server has not closed it meanwhile (then `True`), else a new one."""
        if self._connection is not None and not self._connection.closed:
            if _still_open(self._connection):
                return self._connection, True
            self.close()  # closed while the instance was frozen: replaced before anything is sent
        try:
            settings = self._load_settings()
            try:
                self._connection = _open(settings)
            except psycopg.OperationalError:
                if not settings.from_secret:
                    raise
                # The password may have been rotated since the secret was cached: fetch it once more.
                self._connection = _open(self._load_settings(refresh_secret=True))
        except (psycopg.OperationalError, CredentialsUnavailable) as error:
            raise DatabaseUnavailable(str(error)) from error
        return self._connection, False


def _still_open(connection: psycopg.Connection) -> bool:
    """Whether the server has not hung up on a kept connection: a non-blocking read, no round trip."""
    try:
        connection.pgconn.consume_input()
    except psycopg.OperationalError:
        return False
    return connection.pgconn.status == pq.ConnStatus.OK


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
