"""k6/lib/experiments.js in a real k6 run against the local API: a script that stores its own run.

- The run is stored once even when the module retries: a proxy in front of the API loses the first answer
  after the API stored the run (the connection is cut), the module retries with the same Idempotency-Key and
  the API answers 200, a replay.
- What is stored equals what the reporter stores from the same run's handleSummary data (one mapping).
- A wrong key, or no API at all, is reported on stderr and the test's exit code stays 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devkit.processes import ChildServer
from support import REPO_ROOT

pytestmark = pytest.mark.e2e

K6 = Path(sys.executable).parent / "k6"
SCRIPT = REPO_ROOT / "tests" / "fixtures" / "k6_module_report.js"


class LoseFirstAnswer:
    """A TCP proxy in front of the API that loses the first answer: the first request reaches the API, which
    stores the run, then the connection is cut before the client reads a byte of the answer. Later
    connections pass through. (A real failure mode: a load balancer or network dropping a connection.)"""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.lost: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            threading.Thread(target=self._serve, args=(client, first), daemon=True).start()

    def _serve(self, client: socket.socket, lose: bool) -> None:
        upstream = socket.create_connection(self.upstream)
        forward = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
        forward.start()
        if lose:
            self.lost.append(_read_answer(upstream))  # the API's answer: it has stored the run by now
            for sock in (client, upstream):
                _close(sock)
            return
        _pump(upstream, client)

    def close(self) -> None:
        _close(self.listener)


def _read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (headers and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def lossy_api(local_api: Any) -> Iterator[LoseFirstAnswer]:
    host, port = local_api.url.split("//", 1)[1].split(":")
    proxy = LoseFirstAnswer((host, int(port.rstrip("/"))))
    yield proxy
    proxy.close()


def run_module(
    api_url: str, api_key: str, product: ChildServer, name: str, variant: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`k6 run tests/fixtures/k6_module_report.js`: the module reports the run from handleSummary."""
    full_env = (
        os.environ
        | {
            "K6_NO_USAGE_REPORT": "true",
            "BASE_URL": product.url,
            "NAME": name,
            "VARIANT": variant,
            "EXPERIMENTS_API_URL": api_url,
            "EXPERIMENTS_API_KEY": api_key,
        }
        | env
    )
    argv = [str(K6), "run", "--quiet", "--no-color", str(SCRIPT)]
    return subprocess.run(argv, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=120)


def rows(db: psycopg.Connection, name: str, variant: str) -> dict[str, Any]:
    found = db.execute(
        "SELECT metric, value FROM experiments WHERE name = %s AND variant = %s", (name, variant)
    ).fetchall()
    metrics = [metric for metric, _ in found]
    assert len(metrics) == len(set(metrics)), "a metric stored twice"
    return dict(found)


def test_stored_once_when_the_first_answer_is_lost(
    lossy_api: LoseFirstAnswer,
    local_api: Any,
    product_service: ChildServer,
    run_reporter: Callable[..., Any],
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    data = tmp_path / "handle_summary.json"
    done = run_module(
        lossy_api.url, local_api.api_key, product_service, "k6_module", "direct", SUMMARY_JSON=str(data),
        BACKOFF_BASE="0.05",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"201 Created" in lossy_api.lost[0]  # the first attempt was stored, its answer lost
    assert "attempt 1/5 failed" in done.stderr
    assert "replayed (already stored, nothing new written)" in done.stderr
    assert lossy_api.connections == 2
    stored = rows(db, "k6_module", "direct")
    first_answer = json.loads(lossy_api.lost[0].split(b"\r\n\r\n", 1)[1])
    assert set(stored) == set(first_answer["ids"])
    assert "http_req_duration{name:GET /products/:id}:p(95)" in stored and "p95_ms" in stored
    # the text summary is on stdout, the caller's own output file is written
    assert "http_req_duration" in done.stdout and "checks" in done.stdout
    assert json.loads(data.read_text())["metrics"]["http_reqs"]["values"]["count"] == 20

    # One mapping: the reporter stores the same keys and values from the same handleSummary data.
    reported = run_reporter(data, local_api.url, "k6_module", "--variant", "reporter",
                            env={"EXPERIMENTS_API_KEY": local_api.api_key})  # fmt: skip
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert rows(db, "k6_module", "reporter") == stored


def test_a_wrong_key_is_reported_on_stderr_and_the_exit_code_is_unchanged(
    local_api: Any, product_service: ChildServer, db: psycopg.Connection
) -> None:
    wrong_key = "wrong-key-" + "x" * 20
    done = run_module(local_api.url, wrong_key, product_service, "k6_module", "wrong_key")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the run was NOT stored: rejected by the API: HTTP 403" in done.stderr
    assert "attempt" not in done.stderr  # a 4xx is final: no retry
    assert wrong_key not in done.stdout + done.stderr
    assert rows(db, "k6_module", "wrong_key") == {}
    assert "http_req_duration" in done.stdout  # the usual end-of-test output is still there


def test_no_api_is_reported_after_the_retries_and_fail_on_error_marks_the_test_failed(
    product_service: ChildServer,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        closed_url = f"http://127.0.0.1:{reserved.getsockname()[1]}"
    done = run_module(
        closed_url, "any-key", product_service, "k6_module", "no_api", RETRIES="2", BACKOFF_BASE="0.01",
        FAIL_ON_ERROR="1",
    )  # fmt: skip
    assert "attempt 2/3 failed" in done.stderr
    assert "the run was NOT stored: API unreachable" in done.stderr
    assert "test marked as failed" in done.stderr  # exec.test.fail(); k6 1.1 keeps its exit code (see the module)
    assert done.returncode in (0, 110), done.stderr
