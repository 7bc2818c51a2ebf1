"""The TCP relay of `make sam-local` carries real PostgreSQL sessions (containers reach the server through it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from support import load_script

pytestmark = pytest.mark.integration
sam_local = load_script("sam_local")


def relay_to(database_url: str):
    """A relay on 127.0.0.1 to the test server (TCP, or the embedded server's Unix socket folder)."""
    server = conninfo_to_dict(database_url)
    return sam_local.TcpRelay("127.0.0.1", str(server.get("host") or "127.0.0.1"), int(server.get("port") or 5432))


def test_sessions_through_the_relay_reach_the_same_database(database_url: str) -> None:
    with relay_to(database_url) as relay:
        through = make_conninfo(database_url, host="127.0.0.1", port=relay.port)

        def session(n: int) -> tuple[str, int]:
            with psycopg.connect(through, connect_timeout=10) as conn:
                return conn.execute("SELECT current_database(), %s::int", [n]).fetchone()

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(session, range(8)))
    assert results == [(conninfo_to_dict(database_url)["dbname"], n) for n in range(8)]


def test_nothing_listens_once_the_relay_is_closed(database_url: str) -> None:
    with relay_to(database_url) as relay:
        port = relay.port
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(make_conninfo(database_url, host="127.0.0.1", port=port), connect_timeout=3)
