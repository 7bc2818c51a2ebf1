"""How the functions are told to reach the database: TLS that verifies the server, RDS Proxy recognised, no
password in any error. (The secret's own path, against moto's Secrets Manager: tests/integration.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from experiments.config import ConfigurationError, load_database_settings, tls_options

PROXY_HOST = "k6.proxy-c0abcdefghij.eu-west-1.rds.amazonaws.com"


def test_through_rds_proxy_the_server_is_verified_against_the_public_roots() -> None:
    assert tls_options({}, through_proxy=True) == {"sslmode": "verify-full", "sslrootcert": "system"}


def test_a_direct_rds_endpoint_is_verified_against_the_ca_bundle_file(tmp_path: Path) -> None:
    bundle = tmp_path / "global-bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert tls_options({"DB_CA_BUNDLE": str(bundle)}, through_proxy=False) == {
        "sslmode": "verify-full",
        "sslrootcert": str(bundle),
    }


def test_a_direct_rds_endpoint_without_a_ca_bundle_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="DB_CA_BUNDLE"):
        tls_options({}, through_proxy=False)
    with pytest.raises(ConfigurationError, match="names no file"):
        tls_options({"DB_CA_BUNDLE": "certs/no-such-bundle.pem"}, through_proxy=False)


def test_a_weaker_sslmode_is_only_what_is_asked_for() -> None:
    assert tls_options({"DB_SSLMODE": "require"}, through_proxy=True) == {"sslmode": "require"}
    assert tls_options({"DB_SSLMODE": "disable"}, through_proxy=False) == {"sslmode": "disable"}


def test_database_url_is_used_as_given() -> None:
    url = "postgresql://postgres:pw@127.0.0.1:5432/app?sslmode=disable"
    settings = load_database_settings({"DATABASE_URL": url})
    assert settings.conninfo == url
    assert not settings.through_proxy and not settings.from_secret
    assert "pw" not in repr(settings)


def test_the_proxy_is_recognised_by_its_endpoint_name_or_db_proxy() -> None:
    def through_proxy(host: str, **env: str) -> bool:
        return load_database_settings({"DATABASE_URL": f"postgresql://u@{host}/app", **env}).through_proxy

    assert through_proxy(PROXY_HOST)
    assert through_proxy("ro.endpoint.proxy-c0abcdefghij.eu-west-1.rds.amazonaws.com")
    assert not through_proxy("k6.c0abcdefghij.eu-west-1.rds.amazonaws.com")  # the instance itself
    assert not through_proxy("k6.cluster-c0abcdefghij.eu-west-1.rds.amazonaws.com")
    assert not through_proxy("127.0.0.1")
    assert through_proxy("127.0.0.1", DB_PROXY="true")
    assert not through_proxy(PROXY_HOST, DB_PROXY="false")
    assert through_proxy(PROXY_HOST, DB_PROXY="auto")


def test_no_database_named_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="DB_SECRET_ARN with DB_NAME"):
        load_database_settings({})


@pytest.mark.parametrize("url", ["postgresql://u:Pa55%zzword@h/db", "postgresql://u:Pa55%@h/db", "password='Pa55"])
def test_a_malformed_database_url_error_does_not_quote_it(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_database_settings({"DATABASE_URL": url})
    assert "Pa55" not in str(raised.value)
    assert raised.value.__suppress_context__  # psycopg's error, which quotes it, is not chained into tracebacks


def test_the_request_deadline_can_be_set_for_the_function_timeout() -> None:
    settings = load_database_settings({"DATABASE_URL": "postgresql://u@h/db", "DB_REQUEST_DEADLINE_S": "5.5"})
    assert settings.request_deadline_s == 5.5
    assert conninfo_to_dict(settings.conninfo)["dbname"] == "db"
