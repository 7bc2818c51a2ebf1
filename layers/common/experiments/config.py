"""Where the database is, how to reach it safely and how long to wait for it, read from the environment on use.

Locally `DATABASE_URL` names it, used as given. In AWS `DB_SECRET_ARN` names a Secrets Manager secret with at
least `username` and `password` (an RDS-managed secret holds only those two); `DB_NAME` names the database and
`DB_HOST` the endpoint (an RDS Proxy, or the instance) unless the secret holds `dbname` / `host`. Nothing
falls back silently to the server's `postgres` database: a missing name is a `ConfigurationError`.

TLS from the secret path verifies the server (`sslmode=verify-full`): through RDS Proxy against the system's
public roots (`sslrootcert=system`), to an RDS endpoint against the CA bundle named by `DB_CA_BUNDLE` (a file
shipped in the layer, e.g. `certs/global-bundle.pem`, or an absolute path). Nothing is downloaded at run time.

Through RDS Proxy (`DB_PROXY=true`, or a `*.proxy-*.rds.amazonaws.com` host) connections carry no session
state, so the proxy never pins them (see `experiments.db`).

The password never leaves this module except inside the connection string handed to psycopg, and no error
raised here quotes that string.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from experiments.limits import (
    REQUEST_DEADLINE_S,
    SECRETS_CONNECT_TIMEOUT_S,
    SECRETS_MAX_ATTEMPTS,
    SECRETS_READ_TIMEOUT_S,
)

SECRET_MAX_AGE_SECONDS = 300
# Defaults for running outside the template (tests, the local API); the template sets both.
SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "k6-experiments")
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "K6Experiments")

# RDS Proxy endpoints: <proxy>.proxy-<id>.<region>.rds.amazonaws.com, and custom endpoints
# <endpoint>.endpoint.proxy-<id>.<region>.rds.amazonaws.com (.com.cn in China).
PROXY_HOST = re.compile(r"\.proxy-[a-z0-9]+\.[a-z0-9-]+\.rds\.amazonaws\.com(\.cn)?$", re.IGNORECASE)
# The directory that holds the `experiments` package: /opt/python in Lambda, layers/common here.
LAYER_ROOT = Path(__file__).resolve().parents[1]


class ConfigurationError(RuntimeError):
    """The environment or the secret does not say where the database is: a deployment mistake, not retried."""


class CredentialsUnavailable(RuntimeError):
    """Secrets Manager did not hand out the database secret (unreachable, slow, throttled, or access denied)."""


@dataclass(frozen=True)
class DatabaseSettings:
    conninfo: str
    connect_timeout_s: int = 3
    statement_timeout_ms: int = 5000
    request_deadline_s: float = REQUEST_DEADLINE_S
    from_secret: bool = False
    through_proxy: bool = False

    def __repr__(self) -> str:  # the conninfo may hold a password: never print it
        timeouts = f"{self.connect_timeout_s}s/{self.statement_timeout_ms}ms/{self.request_deadline_s}s"
        return f"DatabaseSettings(from_secret={self.from_secret}, proxy={self.through_proxy}, timeouts={timeouts})"


def load_database_settings(
    environ: Mapping[str, str] = os.environ, *, refresh_secret: bool = False
) -> DatabaseSettings:
    """Settings from `DATABASE_URL`, or from the secret `DB_SECRET_ARN` (`refresh_secret` bypasses the cache)."""
    limits: dict[str, Any] = {
        "connect_timeout_s": int(environ.get("DB_CONNECT_TIMEOUT", "3")),
        "statement_timeout_ms": int(environ.get("DB_STATEMENT_TIMEOUT_MS", "5000")),
        "request_deadline_s": float(environ.get("DB_REQUEST_DEADLINE_S", REQUEST_DEADLINE_S)),
    }
    if environ.get("DATABASE_URL"):
        url = environ["DATABASE_URL"]
        try:
            host = conninfo_to_dict(url).get("host")
        except ProgrammingError:
            # psycopg's message quotes the offending part, which may be the password (bad percent-encoding).
            raise ConfigurationError(
                "DATABASE_URL is not a valid connection string (not shown: it may hold a password)"
            ) from None
        return DatabaseSettings(conninfo=url, through_proxy=_through_proxy(environ, host), **limits)
    if environ.get("DB_SECRET_ARN"):
        secret = _fetch_secret(environ["DB_SECRET_ARN"], refresh=refresh_secret)
        host = environ.get("DB_HOST") or secret.get("host")
        dbname = environ.get("DB_NAME") or secret.get("dbname")
        missing = [name for name, value in (("DB_HOST", host), ("DB_NAME", dbname)) if not value]
        if missing:
            raise ConfigurationError(f"set {' and '.join(missing)}: the secret does not hold them")
        through_proxy = _through_proxy(environ, str(host))
        conninfo = make_conninfo(
            host=str(host),
            port=str(environ.get("DB_PORT") or secret.get("port") or 5432),
            user=secret["username"],
            password=secret["password"],
            dbname=str(dbname),
            **tls_options(environ, through_proxy),
        )
        return DatabaseSettings(conninfo=conninfo, from_secret=True, through_proxy=through_proxy, **limits)
    raise ConfigurationError("set DATABASE_URL, or DB_SECRET_ARN with DB_NAME (and DB_HOST unless the secret has it)")


def tls_options(environ: Mapping[str, str], through_proxy: bool) -> dict[str, str]:
    """`sslmode` (default verify-full) and the roots to verify against: public ones for the proxy, RDS's CA else."""
    sslmode = environ.get("DB_SSLMODE", "verify-full")
    if sslmode not in ("verify-ca", "verify-full"):
        return {"sslmode": sslmode}
    if through_proxy:  # RDS Proxy's certificates chain to public roots (Amazon Trust Services)
        return {"sslmode": sslmode, "sslrootcert": environ.get("DB_CA_BUNDLE") or "system"}
    if not environ.get("DB_CA_BUNDLE"):
        raise ConfigurationError(
            f"sslmode={sslmode} to an RDS endpoint needs DB_CA_BUNDLE: the RDS CA bundle, a file in the layer"
        )
    bundle = LAYER_ROOT / environ["DB_CA_BUNDLE"]  # an absolute path stays as it is
    if not bundle.is_file():
        raise ConfigurationError(f"DB_CA_BUNDLE names no file: {bundle}")
    return {"sslmode": sslmode, "sslrootcert": str(bundle)}


def _through_proxy(environ: Mapping[str, str], host: str | None) -> bool:
    """`DB_PROXY` true or false when set so; otherwise (unset, empty, `auto`) told by the endpoint's name."""
    flag = environ.get("DB_PROXY", "").strip().lower()
    if flag in ("1", "true", "yes"):
        return True
    if flag in ("0", "false", "no"):
        return False
    return bool(host and PROXY_HOST.search(host))


@cache
def secrets_provider() -> Any:
    """One Powertools Secrets Manager provider per process (its cache lives as long), with short timeouts.

    botocore's defaults (60 s connect and read timeouts, retried) would run past the function's timeout when
    Secrets Manager accepts the connection and never answers; these bound a fetch to about
    SECRETS_MAX_ATTEMPTS * (connect + read) seconds. boto3 and botocore are the Lambda runtime's: imported
    only here, on the first fetch.
    """
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from botocore.config import Config

    config = Config(
        connect_timeout=SECRETS_CONNECT_TIMEOUT_S,
        read_timeout=SECRETS_READ_TIMEOUT_S,
        retries={"total_max_attempts": SECRETS_MAX_ATTEMPTS, "mode": "standard"},
    )
    return SecretsProvider(boto_config=config)


def _fetch_secret(arn: str, *, refresh: bool) -> Mapping[str, Any]:
    """The secret as a mapping with `username` and `password` (key names in errors, never values)."""
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

    try:
        secret = secrets_provider().get(arn, transform="json", max_age=SECRET_MAX_AGE_SECONDS, force_fetch=refresh)
    except GetParameterError as error:
        raise CredentialsUnavailable(str(error)) from error
    except TransformParameterError:
        raise ConfigurationError(f"the secret {arn} is not a JSON object") from None
    if not isinstance(secret, Mapping) or not all(secret.get(key) for key in ("username", "password")):
        raise ConfigurationError(f"the secret {arn} must hold username and password")
    return secret
