"""The migrate custom resource answers CloudFormation exactly once, whatever happens.

The built MigrateFunction (x86_64 build: its packaged `migrations/` folder and the layer, nothing else) runs in
a bare python3.12; a local HTTP server on 127.0.0.1 stands in for the pre-signed S3 ResponseURL and records
every request it gets.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from template.samhelpers import function_environment, invoke_built

from experiments.migrations import DEFAULT_MIGRATIONS_DIR, migration_files
from support import Recorded, Reply, ScriptedServer

UNREACHABLE_DATABASE = "postgresql://postgres@127.0.0.1:1/nothing_listens_here?connect_timeout=2"


class ResponseUrl(ScriptedServer):
    """The pre-signed S3 URL CloudFormation gives a custom resource: PUTs answered 200 and recorded."""

    def __init__(self) -> None:
        super().__init__(PUT=[Reply(200)])

    def presigned(self) -> str:
        return f"{self.url}/cloudformation-responses/{uuid.uuid4().hex}?X-Amz-Signature=abc"


@pytest.fixture
def response_url() -> Iterator[ResponseUrl]:
    with ResponseUrl() as server:
        yield server


@pytest.fixture
def silent_database() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word: a database that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/hangs"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def cfn_event(request_type: str, response_url: str, physical_id: str | None = None) -> dict[str, Any]:
    """A custom resource request as CloudFormation sends it to the function."""
    properties = {"ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:migrate:live", "CodeVersion": "3"}
    event = {
        "RequestType": request_type,
        "ServiceToken": properties["ServiceToken"],
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/k6-experiments-test/0d2a7e70-aaaa",
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "DatabaseMigrations",
        "ResourceType": "Custom::DatabaseMigrations",
        "ResourceProperties": properties,
    }
    if physical_id is not None:
        event["PhysicalResourceId"] = physical_id
    if request_type == "Update":
        event["OldResourceProperties"] = {**properties, "CodeVersion": "2"}
    return event


@pytest.fixture
def migrate(sam_builds: dict[str, Path], python312: Path, cfn: dict[str, Any], response_url: ResponseUrl) -> Any:
    """Run the built MigrateFunction on one request; return (what the server received, the invocation report)."""
    build = sam_builds["x86_64"]

    def call(
        event: dict[str, Any], database_url: str, *, timeout_s: float = 30, layer: Path | None = None
    ) -> tuple[list[Recorded], dict[str, Any]]:
        env = {**function_environment(cfn, "MigrateFunction"), "DATABASE_URL": database_url}
        before = len(response_url.received("PUT"))
        report = invoke_built(
            python312, build / "MigrateFunction", layer or build / "CommonLayer", [event], env, timeout_s=timeout_s
        )
        [outcome] = report["results"]
        assert "result" in outcome, f"the handler raised: {outcome.get('traceback')}\n{report['log']}"
        return response_url.received("PUT")[before:], report

    return call


def assert_one_response(received: list[Recorded], event: dict[str, Any], status: str) -> dict[str, Any]:
    assert len(received) == 1, f"expected exactly one response, got {len(received)}: {received}"
    [response] = received
    assert response.method == "PUT"
    assert response.headers.get("content-type") == ""  # what the pre-signed S3 URL is signed for
    body = response.json()
    assert body["Status"] == status, body
    for echoed in ("StackId", "RequestId", "LogicalResourceId"):
        assert body[echoed] == event[echoed]
    assert body["PhysicalResourceId"]
    assert len(json.dumps(body).encode()) < 4096
    return body


def create(migrate: Any, response_url: ResponseUrl, database: str) -> dict[str, Any]:
    """A successful Create (the stack's first deploy); returns the response CloudFormation got."""
    event = cfn_event("Create", response_url.presigned())
    received, _ = migrate(event, database)
    return assert_one_response(received, event, "SUCCESS")


def tables(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()
    return {row[0] for row in rows}


@pytest.mark.integration
def test_create_applies_the_packaged_migrations_and_answers_success_once(
    migrate: Any, response_url: ResponseUrl, scratch_database: str
) -> None:
    event = cfn_event("Create", response_url.presigned())

    received, _ = migrate(event, scratch_database)

    body = assert_one_response(received, event, "SUCCESS")
    # Every file of db/migrations, in order (the built function packages that folder).
    assert body["Data"] == {"Applied": ",".join(path.stem for path in migration_files(DEFAULT_MIGRATIONS_DIR))}
    assert {"public.experiments", "ingest.idempotency_keys", "ingest.schema_migrations"} <= tables(scratch_database)


@pytest.mark.integration
def test_update_answers_success_once_and_keeps_the_physical_id(
    migrate: Any, response_url: ResponseUrl, scratch_database: str
) -> None:
    created = create(migrate, response_url, scratch_database)
    event = cfn_event("Update", response_url.presigned(), physical_id=created["PhysicalResourceId"])

    received, _ = migrate(event, scratch_database)

    body = assert_one_response(received, event, "SUCCESS")
    assert body["Data"] == {"Applied": "none"}  # already applied: nothing runs twice
    assert body["PhysicalResourceId"] == created["PhysicalResourceId"]  # same id: no replacement, no Delete


@pytest.mark.integration
def test_delete_answers_success_once_and_leaves_the_data_alone(
    migrate: Any, response_url: ResponseUrl, scratch_database: str
) -> None:
    create(migrate, response_url, scratch_database)
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO experiments (id, name, variant, metric, value) VALUES ('keep-me', 'n', 'v', 'p95_ms', 1)"
        )
    event = cfn_event("Delete", response_url.presigned(), physical_id="experiments-db-migrations")

    received, _ = migrate(event, scratch_database)

    assert_one_response(received, event, "SUCCESS")
    with psycopg.connect(scratch_database) as conn:
        assert conn.execute("SELECT id FROM experiments").fetchall() == [("keep-me",)]


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_an_unreachable_database_answers_failed_once_with_the_reason(
    migrate: Any, response_url: ResponseUrl, request_type: str
) -> None:
    physical_id = None if request_type == "Create" else "experiments-db-migrations"
    event = cfn_event(request_type, response_url.presigned(), physical_id=physical_id)

    received, _ = migrate(event, UNREACHABLE_DATABASE)

    body = assert_one_response(received, event, "FAILED")
    assert "OperationalError" in body["Reason"] and "127.0.0.1" in body["Reason"]
    # Even a failed Create names a physical id: CloudFormation sends the rollback's Delete for it.
    assert body["PhysicalResourceId"] == "experiments-db-migrations"


def test_delete_succeeds_without_touching_an_unreachable_database(migrate: Any, response_url: ResponseUrl) -> None:
    event = cfn_event("Delete", response_url.presigned(), physical_id="experiments-db-migrations")

    received, _ = migrate(event, UNREACHABLE_DATABASE)

    assert_one_response(received, event, "SUCCESS")


def test_a_hanging_database_answers_failed_before_the_lambda_timeout(
    migrate: Any, response_url: ResponseUrl, silent_database: str
) -> None:
    event = cfn_event("Create", response_url.presigned())
    timeout_s = 11.0  # leaves 3 s for the migration, the rest is the reserve for answering
    started = time.monotonic()

    received, _ = migrate(event, silent_database, timeout_s=timeout_s)

    elapsed = time.monotonic() - started
    body = assert_one_response(received, event, "FAILED")
    assert "MigrationTimeout" in body["Reason"]
    assert elapsed < timeout_s, f"answered after {elapsed:.1f}s, past the {timeout_s}s Lambda timeout"


def test_a_broken_layer_still_answers_failed(migrate: Any, response_url: ResponseUrl, tmp_path: Path) -> None:
    event = cfn_event("Create", response_url.presigned())
    (tmp_path / "python").mkdir()

    received, _ = migrate(event, UNREACHABLE_DATABASE, layer=tmp_path)  # a layer with nothing in it

    body = assert_one_response(received, event, "FAILED")
    assert "ModuleNotFoundError" in body["Reason"] and "experiments" in body["Reason"]
