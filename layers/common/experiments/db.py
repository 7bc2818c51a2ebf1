"""One PostgreSQL connection per process, opened on first use and kept for warm invocations.

A Lambda instance serves one request at a time, so one connection is all it needs. The promise:
`Database.run(work)` runs `work` in one transaction and either commits all of it or none of it; when the
database is unreachable, slow past the statement timeout, drops the connection, turns read-only (a failover
onto a reader) or stops answering altogether, it raises `DatabaseUnavailable` (the API answers 503 +
Retry-After) and a connection that cannot serve again is replaced. A connection found broken on reuse (the
server restarted, a proxy closed it while the instance was frozen) is replaced once, transparently, but only
when nothing of the work can have been committed, so no work is ever committed twice.

Every call ends by its deadline (`REQUEST_DEADLINE_S`, below the function's timeout): psycopg cannot cancel a
read from a server that went silent without closing the connection, and `statement_timeout` is enforced by
that same silent server, so a watchdog thread shuts the socket down when the deadline passes. The blocked read
then fails at once and the connection is dropped.

`Database.run(work, single_statement=True)` is for work whose change is ONE statement (the report's claim and
rows are): that statement is its own transaction on the autocommit connection, so no BEGIN and COMMIT are sent
and the work costs one round trip instead of three.

Through RDS Proxy (`DatabaseSettings.through_proxy`) a connection carries no session state, since the proxy
pins a client to one database connection for as long as it holds any: no `set_config`, no `application_name`
startup option, no named prepared statements. The deadline bounds each call; a server-side statement timeout
belongs on the database role (`ALTER ROLE ... SET statement_timeout`), which is no session state.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import pq

from experiments.config import CredentialsUnavailable, DatabaseSettings, load_database_settings
from experiments.limits import REQUEST_DEADLINE_S, SECRETS_WORST_CASE_S

T = TypeVar("T")

APPLICATION_NAME = "k6-experiments-ingest"
# Once per direct connection: a statement that hangs (a lock, a stuck server) ends with an error.
SET_TIMEOUTS = """
SELECT set_config('statement_timeout', %s, false), set_config('idle_in_transaction_session_timeout', %s, false)
"""
# The server's answer when it ended the session before running the statement (terminated by an administrator,
# a fast shutdown, or idle too long): the statement did not run, so running it again cannot store it twice.
SESSION_ENDED = frozenset({"57P01", "57P05"})  # admin_shutdown, idle_session_timeout
READ_ONLY = "25006"  # read_only_sql_transaction: connected to a reader, e.g. after an RDS or Aurora failover


class DatabaseUnavailable(Exception):
    """The database could not be reached or did not answer in time; the request may be retried."""


class DatabaseTimeout(DatabaseUnavailable):
    """No answer by the request's deadline: the connection was shut down and will be replaced."""


class DatabaseReadOnly(DatabaseUnavailable):
    """The server refused a write as read-only (a failover in progress); the connection will be replaced."""


class Database:
    """A lazily opened connection with the one-transaction-per-call rule (see module docstring)."""

    def __init__(self, load_settings: Callable[..., DatabaseSettings] = load_database_settings) -> None:
        self._load_settings = load_settings
        self._connection: psycopg.Connection | None = None
        self._settings: DatabaseSettings | None = None

    def run(self, work: Callable[[psycopg.Connection], T], *, single_statement: bool = False) -> T:
        """Run `work(connection)` in one transaction (see the module docstring); retry once on a dead connection.

        With `single_statement`, no BEGIN/COMMIT are sent: each statement is its own transaction, so `work` must
        make its whole change with its first statement and may only read after it, and only if that changed
        nothing (as `store.save_report` does); then running it again after a refused statement stores nothing twice.
        """
        return self._run(work, single_statement, time.monotonic())

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _run(self, work: Callable[[psycopg.Connection], T], single_statement: bool, started: float) -> T:
        connection, reused = self._connect(started)
        deadline = started + self._deadline_s()
        commit_sent = False
        watch = WATCHDOG.arm(connection, deadline)
        try:
            if not reused:
                self._prepare_session(connection)
            if single_statement:
                result = work(connection)
            else:
                with connection.transaction():
                    result = work(connection)
                    commit_sent = True
        except psycopg.Error as error:
            if WATCHDOG.disarm(watch):
                self.close()
                raise DatabaseTimeout(f"no answer within the {self._deadline_s():g} s deadline") from error
            if error.sqlstate == READ_ONLY:
                self.close()  # a new connection reaches the new writer once the failover's DNS change is done
                raise DatabaseReadOnly("the database is read-only (failover?)") from error
            if not isinstance(error, psycopg.OperationalError):
                raise
            if not connection.broken:  # e.g. the statement timeout: the connection itself is fine
                raise DatabaseUnavailable(str(error)) from error
            self.close()
            # Retry only what cannot have been committed: a transaction whose COMMIT was not sent, or a
            # statement the server refused because it had ended the session before running it.
            nothing_committed = error.sqlstate in SESSION_ENDED if single_statement else not commit_sent
            if not reused or not nothing_committed:  # the server is down, or the commit's fate is unknown
                raise DatabaseUnavailable(str(error)) from error
        except BaseException:
            if WATCHDOG.disarm(watch):
                self.close()
            raise
        else:
            if WATCHDOG.disarm(watch):  # the deadline passed just as the work finished: the socket is shut
                self.close()
            return result
        return self._run(work, single_statement, started)

    def _deadline_s(self) -> float:
        return self._settings.request_deadline_s if self._settings else REQUEST_DEADLINE_S

    def _connect(self, started: float) -> tuple[psycopg.Connection, bool]:
        """The kept connection if the server has not closed it meanwhile (then `True`), else a new one, opened
        within what is left of the deadline of the request `started` then."""
        if self._connection is not None and not self._connection.closed:
            if _still_open(self._connection):
                return self._connection, True
            self.close()  # closed while the instance was frozen: replaced before anything is sent
        try:
            settings = self._load_settings()
            deadline = started + settings.request_deadline_s
            try:
                connection = _open(settings, deadline)
            except psycopg.OperationalError:
                if not settings.from_secret or deadline - time.monotonic() < SECRETS_WORST_CASE_S + 1:
                    raise  # (no time left for a slow Secrets Manager and a connect: the next request retries)
                # The password may have been rotated since the secret was cached: fetch it once more.
                settings = self._load_settings(refresh_secret=True)
                connection = _open(settings, deadline)
        except (psycopg.OperationalError, CredentialsUnavailable) as error:
            raise DatabaseUnavailable(str(error)) from error
        self._connection, self._settings = connection, settings
        return connection, False

    def _prepare_session(self, connection: psycopg.Connection) -> None:
        """Server-side timeouts on a direct connection; through the proxy, nothing (it would pin the session)."""
        settings = self._settings
        if settings is not None and not settings.through_proxy:
            timeouts = (str(settings.statement_timeout_ms), str(settings.statement_timeout_ms * 2))
            connection.execute(SET_TIMEOUTS, timeouts)


def _still_open(connection: psycopg.Connection) -> bool:
    """Whether the server has not hung up on a kept connection: a non-blocking read, no round trip."""
    try:
        connection.pgconn.consume_input()
    except psycopg.OperationalError:
        return False
    return connection.pgconn.status == pq.ConnStatus.OK


def _open(settings: DatabaseSettings, deadline: float) -> psycopg.Connection:
    """Open an autocommit connection (transactions are explicit), within the connect timeout and the deadline."""
    remaining_s = deadline - time.monotonic()
    if remaining_s <= 0:
        raise psycopg.OperationalError("the request's deadline passed before connecting")
    options: dict[str, object] = {"keepalives": 1, "keepalives_idle": 30}
    if settings.through_proxy:
        options["prepare_threshold"] = None  # named prepared statements pin the proxy's connection
    else:
        options["application_name"] = APPLICATION_NAME
    return psycopg.connect(
        settings.conninfo,
        autocommit=True,
        connect_timeout=max(1, min(settings.connect_timeout_s, math.ceil(remaining_s))),
        **options,
    )


class Watchdog:
    """Shuts a connection's socket down once its deadline passes: one thread for every `Database` of the process.

    Arming wakes the thread only when it sleeps past the new deadline (never while a warm instance serves
    request after request: it sleeps until the earliest deadline, then rechecks), so a request costs two
    uncontended lock round trips.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._watches: set[_Watch] = set()
        self._wakes_at = math.inf
        self._thread: threading.Thread | None = None

    def arm(self, connection: psycopg.Connection, deadline: float) -> _Watch:
        watch = _Watch(connection, deadline)
        with self._condition:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-deadline", daemon=True)
                self._thread.start()
            elif deadline < self._wakes_at:
                self._condition.notify()
        return watch

    def disarm(self, watch: _Watch) -> bool:
        """Stop watching; whether the deadline had passed and the socket was shut down."""
        with self._condition:
            self._watches.discard(watch)
            return watch.fired

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                for watch in [w for w in self._watches if w.deadline <= now]:
                    self._watches.discard(watch)
                    watch.fired = True
                    _shut_down(watch.connection)
                self._wakes_at = min((w.deadline for w in self._watches), default=math.inf)
                self._condition.wait(None if self._wakes_at == math.inf else self._wakes_at - now)


class _Watch:
    __slots__ = ("connection", "deadline", "fired")

    def __init__(self, connection: psycopg.Connection, deadline: float) -> None:
        self.connection, self.deadline, self.fired = connection, deadline, False


WATCHDOG = Watchdog()


def _shut_down(connection: psycopg.Connection) -> None:
    """End the connection's socket under a blocked reader or writer: its wait returns and libpq reports EOF."""
    try:
        duplicate = socket.socket(fileno=os.dup(connection.pgconn.socket))
    except (OSError, psycopg.Error):  # already closed
        return
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()
