"""Where the database is and how long to wait for it, read from the environment on first use.

Locally `DATABASE_URL` names it. In AWS `DB_SECRET_ARN` names a Secrets Manager secret with
host/port/username/password/dbname (fetched and cached through Powertools parameters); `DB_HOST`, when set,
replaces the secret's host, e.g. with an RDS Proxy endpoint. The password never leaves this module except
inside the connection string handed to psycopg.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from psycopg.conninfo import make_conninfo

from experiments.errors import ConfigurationError, CredentialsUnavailable

SECRET_MAX_AGE_SECONDS = 300
# How long an Idempotency-Key is remembered (IDEMPOTENCY_KEY_TTL_DAYS): a retry comes within minutes, a reuse of
# the same key for another run after this long is a new report.
DEFAULT_IDEMPOTENCY_KEY_TTL_DAYS = 30
# Defaults for running outside the template (tests, the local API); the template sets both.
SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "k6-experiments")
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "K6Experiments")


@dataclass(frozen=True)
class DatabaseSettings:
    conninfo: str
    connect_timeout_s: int = 3
    statement_timeout_ms: int = 5000
    from_secret: bool = False

    def __repr__(self) -> str:  # the conninfo may hold a password: never print it
        timeouts = f"{self.connect_timeout_s}s/{self.statement_timeout_ms}ms"
        return f"DatabaseSettings(from_secret={self.from_secret}, timeouts={timeouts})"


def idempotency_key_ttl_days(environ: Mapping[str, str] = os.environ) -> int:
    """Days an Idempotency-Key is kept: `IDEMPOTENCY_KEY_TTL_DAYS`, a whole number of at least 1 (default 30)."""
    raw = environ.get("IDEMPOTENCY_KEY_TTL_DAYS") or str(DEFAULT_IDEMPOTENCY_KEY_TTL_DAYS)
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if days < 1:
        raise ConfigurationError(f"IDEMPOTENCY_KEY_TTL_DAYS must be a whole number of days, at least 1, not {raw!r}")
    return days


def load_database_settings(
    environ: Mapping[str, str] = os.environ, *, refresh_secret: bool = False
) -> DatabaseSettings:
    """Settings from `DATABASE_URL`, or from the secret `DB_SECRET_ARN` (`refresh_secret` bypasses the cache)."""
    timeouts = {
        "connect_timeout_s": int(environ.get("DB_CONNECT_TIMEOUT", "3")),
        "statement_timeout_ms": int(environ.get("DB_STATEMENT_TIMEOUT_MS", "5000")),
    }
    if environ.get("DATABASE_URL"):
        return DatabaseSettings(conninfo=environ["DATABASE_URL"], **timeouts)
    if environ.get("DB_SECRET_ARN"):
        from aws_lambda_powertools.utilities import parameters  # loads boto3: only in AWS

        try:
            secret = parameters.get_secret(
                environ["DB_SECRET_ARN"], transform="json", max_age=SECRET_MAX_AGE_SECONDS, force_fetch=refresh_secret
            )
        except parameters.exceptions.GetParameterError as error:
            raise CredentialsUnavailable(str(error)) from error
        conninfo = make_conninfo(
            host=environ.get("DB_HOST") or secret["host"],
            port=str(secret.get("port", 5432)),
            user=secret["username"],
            password=secret["password"],
            dbname=environ.get("DB_NAME") or secret.get("dbname", "postgres"),
            sslmode=environ.get("DB_SSLMODE", "require"),
        )
        return DatabaseSettings(conninfo=conninfo, from_secret=True, **timeouts)
    raise ConfigurationError("set DATABASE_URL, or DB_SECRET_ARN (with DB_HOST for an RDS Proxy)")
