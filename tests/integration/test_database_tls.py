"""TLS to the database verifies who answers (`sslmode=verify-full` by default from the secret path).

The server side is a TLS front (tests/support.py `TlsProxy`) on the test PostgreSQL with a certificate for
`localhost` signed by a test CA, as RDS's are signed by the RDS CA: the handler stores through it when
`DB_CA_BUNDLE` names that CA and the host matches, and refuses an impostor (another CA, another name).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from support import TlsProxy, count_rows, database_address, make_certificates

pytestmark = pytest.mark.integration

REPORT = {"name": "tls", "variant": "baseline", "metricsSummary": {"p50_ms": 1, "p95_ms": 2}}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"), host="localhost")


@pytest.fixture
def tls_database(
    certificates, secrets_manager, database_url, report_app, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TlsProxy]:
    """The handler reaches the test database through TLS, with an RDS-managed secret and the template's variables."""
    params = conninfo_to_dict(database_url)
    proxy = TlsProxy(database_address(database_url), certificates["cert"], certificates["key"])
    arn = secrets_manager.create({"username": params.get("user", "postgres"), "password": "unused-by-trust"})
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DB_SSLMODE", raising=False)  # the default: verify-full
    monkeypatch.setenv("DB_SECRET_ARN", arn)
    monkeypatch.setenv("DB_HOST", "localhost")
    monkeypatch.setenv("DB_PORT", str(proxy.port))
    monkeypatch.setenv("DB_NAME", params["dbname"])
    monkeypatch.setenv("DB_CA_BUNDLE", str(certificates["ca"]))
    yield proxy
    proxy.close()


def test_a_server_with_a_certificate_from_the_ca_bundle_is_trusted(tls_database, report_app, post, db) -> None:
    assert post(REPORT).status == 201
    assert report_app.database._connection.pgconn.ssl_in_use
    assert count_rows(db) == len(REPORT["metricsSummary"])


def test_a_server_whose_certificate_another_ca_signed_is_refused(
    tls_database, certificates, monkeypatch, post, db
) -> None:
    monkeypatch.setenv("DB_CA_BUNDLE", str(certificates["other_ca"]))
    answer = post(REPORT)
    assert answer.status == 503
    assert tls_database.handshakes_failed >= 1
    assert count_rows(db) == 0


def test_a_server_whose_certificate_names_another_host_is_refused(tls_database, monkeypatch, post, db) -> None:
    monkeypatch.setenv("DB_HOST", "127.0.0.1")  # the certificate is for localhost only
    assert post(REPORT).status == 503
    assert count_rows(db) == 0


def test_through_the_proxy_only_public_roots_are_trusted(tls_database, monkeypatch, post, db) -> None:
    """sslrootcert=system: a certificate from a private CA (not RDS Proxy's public chain) is refused."""
    monkeypatch.setenv("DB_PROXY", "true")
    monkeypatch.delenv("DB_CA_BUNDLE")
    assert post(REPORT).status == 503
    assert count_rows(db) == 0


def test_sslmode_require_accepts_any_certificate_which_is_why_it_is_not_the_default(
    tls_database, certificates, monkeypatch, post, db
) -> None:
    monkeypatch.setenv("DB_SSLMODE", "require")  # what the functions used before
    monkeypatch.setenv("DB_CA_BUNDLE", str(certificates["other_ca"]))
    assert post(REPORT).status == 201
