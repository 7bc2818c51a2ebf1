"""CloudFormation custom resource: apply `db/migrations` at deploy time and always answer CloudFormation.

The promise: every invocation sends exactly one response to the request's `ResponseURL`, SUCCESS or FAILED with
the reason, before the Lambda timeout, so a stack never waits for an answer that is not coming.
- Create / Update: apply the pending migrations (`experiments.migrations`, the same code as
  `scripts/migrate.py`) to the database of `DB_SECRET_ARN` / `DB_HOST` (or `DATABASE_URL`). The work runs
  with a deadline derived from the invocation's remaining time; past it the answer is FAILED ("timed out").
- Delete: SUCCESS without touching the database. Migrations are forward-only and the `experiments` table
  belongs to the Prisma backend: deleting this stack must never drop data.
The SQL files are packaged next to this file: `functions/migrate/migrations` is a link to `db/migrations`,
which `sam build` copies as a real folder (and hashes, so cached builds see new migrations).

Unlike the API handlers, this module imports only the standard library at load time (plain `logging`, no
Powertools): a broken layer must still produce a FAILED response naming the import error, not an init error
that leaves CloudFormation waiting for its timeout.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
PHYSICAL_RESOURCE_ID = "experiments-db-migrations"
# Time kept back from the Lambda timeout for sending the response (with its retries).
RESPONSE_RESERVE_S = 8.0
RESPONSE_ATTEMPTS = 3
MAX_REASON_CHARS = 1500  # the whole response must stay under CloudFormation's 4096 bytes

logger = logging.getLogger("migrate")


class MigrationTimeout(Exception):
    """The migrations did not finish before the deadline; the response says FAILED instead of never coming."""


def apply_pending_migrations(budget_s: float) -> list[str]:
    """Apply pending migrations within `budget_s` seconds; return the versions applied."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            # Imported here: a broken layer (missing wheel, wrong architecture) becomes a FAILED response.
            from experiments.config import load_database_settings
            from experiments.migrations import apply_migrations

            outcome["applied"] = apply_migrations(load_database_settings().conninfo, MIGRATIONS_DIR)
        except BaseException as error:  # reported by the caller, whatever it is (even a SystemExit)
            outcome["error"] = error if isinstance(error, Exception) else RuntimeError(repr(error))

    worker = threading.Thread(target=work, name="migrations", daemon=True)
    worker.start()
    worker.join(max(budget_s, 0.0))
    if worker.is_alive():
        raise MigrationTimeout(f"migrations did not finish within {budget_s:.0f}s (database unreachable or locked?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["applied"]


def send_response(event: dict[str, Any], body: dict[str, Any], deadline: float) -> bool:
    """PUT the response to the pre-signed `ResponseURL` before `deadline` (a `time.monotonic()` value).

    Retried only when no answer came back or S3 answered 5xx (a PUT of the same object is idempotent), so
    CloudFormation reads exactly one response. Returns whether it was delivered.
    """
    data = json.dumps(body).encode("utf-8")
    for attempt in range(1, RESPONSE_ATTEMPTS + 1):
        timeout_s = min(10.0, deadline - time.monotonic())
        if timeout_s <= 0.1:
            break
        request = urllib.request.Request(  # noqa: S310 (the scheme was checked by the handler)
            event["ResponseURL"],
            data=data,
            method="PUT",
            # The URL is signed for an empty Content-Type: any other value is refused by S3.
            headers={"Content-Type": "", "Content-Length": str(len(data))},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
                logger.info("response %s sent (HTTP %s)", body["Status"], answer.status)
                return True
        except urllib.error.HTTPError as error:
            if error.code < 500:
                logger.error("response %s refused (HTTP %s)", body["Status"], error.code)
                return False
            logger.warning("response not stored (HTTP %s), attempt %d", error.code, attempt)
        except (urllib.error.URLError, OSError) as error:
            logger.warning("response not delivered (%s), attempt %d", error, attempt)
        time.sleep(min(0.5 * attempt, max(0.0, deadline - time.monotonic() - 1.0)))
    logger.error("gave up sending the response %s", body["Status"])
    return False


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    started = time.monotonic()
    level = os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO").upper()
    logging.getLogger().setLevel(level if level in logging.getLevelNamesMapping() else logging.INFO)
    remaining_s = context.get_remaining_time_in_millis() / 1000
    request_type = event.get("RequestType")
    logger.info("%s request for %s", request_type, event.get("LogicalResourceId"))
    status, reason, data = "SUCCESS", "", {}
    try:
        if request_type == "Delete":
            reason = "nothing to undo: migrations are forward-only and the data belongs to the Prisma backend"
        elif request_type in ("Create", "Update"):
            applied = apply_pending_migrations(remaining_s - RESPONSE_RESERVE_S)
            data = {"Applied": ",".join(applied) or "none"}
            reason = f"applied: {data['Applied']}"
        else:
            raise ValueError(f"unknown RequestType {request_type!r}")
    except Exception as error:
        logger.exception("migration failed")
        status = "FAILED"
        reason = f"{type(error).__name__}: {error}"[:MAX_REASON_CHARS]
        reason += f" (log stream: {getattr(context, 'log_stream_name', '?')})"
    body = {
        "Status": status,
        "Reason": reason,
        "PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_RESOURCE_ID,
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
        "NoEcho": False,
        "Data": data,
    }
    if urlsplit(str(event.get("ResponseURL", ""))).scheme not in ("https", "http"):
        logger.error("no http(s) ResponseURL: not a CloudFormation request, nobody to answer")
        return body
    # Keep half a second for Lambda itself; a tiny remaining time still gets one attempt.
    send_response(event, body, deadline=max(started + remaining_s - 0.5, time.monotonic() + 1.0))
    return body
