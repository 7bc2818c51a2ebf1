"""Storing a validated report: one `experiments` row per metric, plus its idempotency record, atomically.

With an `Idempotency-Key`, claiming the key and inserting the rows is ONE statement: the rows are inserted
only if this request claimed the key. A second request with the same key waits on the key's unique index
until the first commits, then finds the key taken and answers from the stored response (replay) or, when
its body differs, with a conflict. So a report is stored exactly once, however often and concurrently it is
retried.

Keys belong to a caller (`experiments.auth.caller_id`): the same key from two callers is two keys. A key expires
`key_ttl_days` after its claim: the claim takes an expired key over, and `purge_expired_keys` deletes expired
keys in bounded batches (the report function runs it at most once an hour per instance, `PurgeSchedule`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from experiments.config import DEFAULT_IDEMPOTENCY_KEY_TTL_DAYS
from experiments.errors import IdempotencyConflict
from experiments.limits import COLUMN_MAX
from experiments.models import ExperimentReport, NotStored, ReportStored, to_utc_millis

NOT_STORED_REASON = f"outside the column's DECIMAL(10,4) range (±{COLUMN_MAX}); kept exactly in metadata.notStored"

INSERT_ROWS = """
INSERT INTO experiments (id, name, description, variant, metric, value, metadata, "createdAt")
SELECT m.id, %(name)s, %(description)s, %(variant)s, m.metric, m.value, %(metadata)s, %(created_at)s
FROM unnest(%(ids)s::text[], %(metrics)s::text[], %(values)s::numeric[]) AS m(id, metric, value)
"""

# An expired key is taken over (its row replaced) as if it were new; a live one is left alone.
CLAIM_KEY_AND_INSERT_ROWS = """
WITH claimed AS (
    INSERT INTO ingest.idempotency_keys AS k (caller, key, request_hash, response)
    VALUES (%(caller)s, %(key)s, %(request_hash)s, %(response)s)
    ON CONFLICT (caller, key) DO UPDATE
        SET request_hash = excluded.request_hash, response = excluded.response, created_at = now()
        WHERE k.created_at < now() - make_interval(days => %(ttl_days)s)
    RETURNING key
)
INSERT INTO experiments (id, name, description, variant, metric, value, metadata, "createdAt")
SELECT m.id, %(name)s, %(description)s, %(variant)s, m.metric, m.value, %(metadata)s, %(created_at)s
FROM unnest(%(ids)s::text[], %(metrics)s::text[], %(values)s::numeric[]) AS m(id, metric, value)
WHERE EXISTS (SELECT FROM claimed)
"""

STORED_RESPONSE = """
SELECT request_hash, response FROM ingest.idempotency_keys WHERE caller = %(caller)s AND key = %(key)s
"""

# A bounded batch, so the purge after a long pause never holds the function past its timeout; SKIP LOCKED lets
# two instances purge at once without waiting on each other.
PURGE_EXPIRED_KEYS = """
DELETE FROM ingest.idempotency_keys
WHERE (caller, key) IN (
    SELECT caller, key FROM ingest.idempotency_keys
    WHERE created_at < now() - make_interval(days => %(ttl_days)s)
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
"""
PURGE_BATCH = 1000
PURGE_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class RequestSource:
    """Where a report came from, kept in each row's metadata under `ingest`."""

    request_id: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class SaveOutcome:
    stored: ReportStored
    replayed: bool


def request_fingerprint(report: ExperimentReport) -> str:
    """Hash of the report's meaning: the same report in another key order or spacing has the same hash."""
    canonical = json.dumps(report.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def row_metadata(report: ExperimentReport, idempotency_key: str | None, source: RequestSource) -> dict[str, Any]:
    """The client's metadata plus `rawFile`, the values no row can hold (`notStored`) and the request (`ingest`)."""
    ingest = {
        "idempotencyKey": idempotency_key,
        "requestId": source.request_id,
        "sourceIp": source.source_ip,
        "userAgent": source.user_agent,
    }
    metadata: dict[str, Any] = dict(report.metadata or {})
    if report.rawFile is not None:
        metadata["rawFile"] = report.rawFile
    not_stored = report.not_stored()
    if not_stored:
        metadata["notStored"] = not_stored
    metadata["ingest"] = {key: value for key, value in ingest.items() if value is not None}
    return metadata


def save_report(
    connection: psycopg.Connection,
    report: ExperimentReport,
    *,
    idempotency_key: str | None = None,
    caller: str = "anonymous",
    key_ttl_days: int = DEFAULT_IDEMPOTENCY_KEY_TTL_DAYS,
    source: RequestSource = RequestSource(),
) -> SaveOutcome:
    """Insert the report's rows, or replay what its key already stored.

    The rows (and the key's claim) are written by the first statement alone, so this is atomic inside the
    caller's transaction and equally on an autocommit connection (`Database.run(..., single_statement=True)`),
    where that statement is its own transaction; the replay's SELECT only reads, and only after it wrote nothing.
    The insert is prepared on first use (`prepare=True`): warm invocations send only Bind/Execute.
    """
    created_at = report.date or to_utc_millis(datetime.now(UTC))
    rows = report.rows()
    ids = {metric: str(uuid.uuid4()) for metric in rows}
    stored = ReportStored(
        name=report.name,
        variant=report.variant or "",
        createdAt=created_at.isoformat(timespec="milliseconds") + "Z",
        ids=ids,
        notStored=[NotStored(metric=k, value=v, reason=NOT_STORED_REASON) for k, v in report.not_stored().items()],
    )
    params = {
        "name": report.name,
        "description": report.notes,
        "variant": report.variant,
        "metadata": Jsonb(row_metadata(report, idempotency_key, source)),
        "created_at": created_at,
        "ids": list(ids.values()),
        "metrics": list(rows),
        "values": list(rows.values()),
    }
    if idempotency_key is None:
        connection.execute(INSERT_ROWS, params, prepare=True)
        return SaveOutcome(stored=stored, replayed=False)

    request_hash = request_fingerprint(report)
    # Kept as JSON text, not JSONB, so a replay lists the ids in the order of the first answer.
    key = {"caller": caller, "key": idempotency_key}
    claim = key | {"request_hash": request_hash, "response": stored.model_dump_json(), "ttl_days": key_ttl_days}
    if connection.execute(CLAIM_KEY_AND_INSERT_ROWS, params | claim, prepare=True).rowcount > 0:
        return SaveOutcome(stored=stored, replayed=False)

    stored_hash, stored_response = connection.execute(STORED_RESPONSE, key).fetchone()
    if stored_hash != request_hash:
        raise IdempotencyConflict(idempotency_key)
    return SaveOutcome(stored=ReportStored.model_validate_json(stored_response), replayed=True)


def purge_expired_keys(connection: psycopg.Connection, *, ttl_days: int, batch: int = PURGE_BATCH) -> int:
    """Delete up to `batch` keys older than `ttl_days`; returns how many went."""
    return connection.execute(PURGE_EXPIRED_KEYS, {"ttl_days": ttl_days, "batch": batch}).rowcount


class PurgeSchedule:
    """When this instance purges expired keys next: on its first request, then at most every `interval_s`."""

    def __init__(self, interval_s: float = PURGE_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next: float | None = None

    def due(self) -> bool:
        """True (and the next purge is scheduled) when it is time to purge."""
        now = self._clock()
        if self._next is not None and now < self._next:
            return False
        self._next = now + self.interval_s
        return True
