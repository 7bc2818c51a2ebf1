"""Every exception the service raises on purpose, in one module; `experiments.http` maps each to one status.

Modules raise these and never build answers; the one mapping (exception → status, code, Retry-After) is
`experiments.http.ERROR_STATUSES`, registered by `register_error_handlers`.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the service's own exceptions: each subclass has exactly one status in `experiments.http`."""


# --- the request --------------------------------------------------------------------------------------------


class PayloadTooLarge(ServiceError):
    """The request body is over `limits.MAX_BODY_BYTES`."""


class UnsupportedMediaType(ServiceError):
    """The request body is declared as something other than JSON."""


class InvalidCursor(ServiceError, ValueError):
    """The cursor was not one this API handed out."""


class NotFound(ServiceError, LookupError):
    """Nothing is stored under the name asked for."""


class TooManySeries(ServiceError, ValueError):
    """The metrics and variants asked for make more series than one response may hold."""


class IdempotencyConflict(ServiceError):
    """The Idempotency-Key was already used (by the same caller) for a different report."""


# --- the service's environment -----------------------------------------------------------------------------


class ConfigurationError(ServiceError, RuntimeError):
    """The environment names no database: a deployment mistake, not something a retry fixes."""


class CredentialsUnavailable(ServiceError, RuntimeError):
    """Secrets Manager did not hand out the database secret (unreachable, throttled, or access denied)."""


class DatabaseUnavailable(ServiceError):
    """The database could not be reached or did not answer in time; the request may be retried."""


class DatabaseTimeout(DatabaseUnavailable):
    """No answer by the request's deadline: the connection was shut down and will be replaced."""


class DatabaseReadOnly(DatabaseUnavailable):
    """The server refused a write as read-only (a failover in progress); the connection will be replaced."""
