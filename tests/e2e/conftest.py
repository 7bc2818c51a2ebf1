"""End-to-end fixtures: real processes on free ports, the test run's PostgreSQL, the real k6 binary.

The local API (`scripts/local_api.py`) and the demo product service run as subprocesses exactly as a person
starts them; each prints a ready line with its URL (`--port 0` lets the OS pick a free port, so there is no
race between choosing a port and binding it). Their output goes to a log file whose tail is shown when a
test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from devkit.processes import ChildServer, start_server

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
K6 = Path(sys.executable).parent / "k6"


@dataclass
class LocalApi(ChildServer):
    api_key: str = ""


def start_local_api(database_url: str, log: Path, *args: str) -> LocalApi:
    """`python scripts/local_api.py --port 0 [args]` against `database_url`, with a key made for the test."""
    api_key = secrets.token_urlsafe(16)
    env = os.environ | {"DATABASE_URL": database_url, "EXPERIMENTS_API_KEY": api_key, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, str(SCRIPTS / "local_api.py"), "--port", "0", "--access-log", *args]
    started = start_server(argv, log, "Local API on", env)
    return LocalApi(started.process, started.url, started.ready_line, started.log, api_key)


@pytest.fixture(scope="session")
def local_api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApi]:
    """The local API for the whole run, on a free port, writing to the run's migrated database."""
    api = start_local_api(database_url, tmp_path_factory.mktemp("local_api") / "local_api.log")
    yield api
    api.stop()


@pytest.fixture(scope="session")
def product_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildServer]:
    """The demo product service without cache and with a small delay: quick to load-test for a few seconds."""
    log = tmp_path_factory.mktemp("product_service") / "product_service.log"
    argv = [sys.executable, str(SCRIPTS / "product_service.py"), "--port", "0", "--delay-ms", "2", "--jitter-ms", "1"]
    service = start_server(argv, log, "Product service on", os.environ | {"PYTHONUNBUFFERED": "1"})
    yield service
    service.stop()


def _run_k6(script: Path, summary: Path, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`k6 run --summary-export=<summary> <script>` with the given environment (VUS, DURATION, URLs)."""
    argv = [str(K6), "run", "--quiet", "--no-color", f"--summary-export={summary}", str(script)]
    full_env = os.environ | {"K6_NO_USAGE_REPORT": "true"} | env
    return subprocess.run(argv, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def k6_summary(product_service: ChildServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `--summary-export` file: k6/product_read_test.js for 3 s at 5 VUs against the product service."""
    summary = tmp_path_factory.mktemp("k6") / "results_baseline.json"
    env = {"BASE_URL": product_service.url, "PRODUCT_ID": "123", "VUS": "5", "DURATION": "3s"}
    done = _run_k6(REPO_ROOT / "k6" / "product_read_test.js", summary, env)
    assert done.returncode == 0, done.stdout + done.stderr
    return summary


def _report(
    summary: Path, base_url: str, name: str, *options: str, api_key: str = "-", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the reporter the way CI does: `python scripts/report_k6_result.py <file> <url> <key> <name> ...`."""
    argv = [sys.executable, str(SCRIPTS / "report_k6_result.py"), str(summary), base_url, api_key, name, *options]
    return subprocess.run(argv, cwd=REPO_ROOT, env=os.environ | (env or {}), capture_output=True, text=True, timeout=60)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    """One HTTP request with the standard library; any status is an answer, not an exception."""
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    request = Request(url, data=data, method=method, headers=all_headers)  # noqa: S310 - http://127.0.0.1 only
    try:
        with urlopen(request, timeout=30) as response:  # noqa: S310
            status, raw, got = response.status, response.read(), response.headers
    except HTTPError as error:
        status, raw, got = error.code, error.read(), error.headers
    text = raw.decode()
    is_json = "json" in (got.get("Content-Type") or "application/json")
    return Answer(status, {k.lower(): v for k, v in got.items()}, json.loads(text) if text and is_json else text)


@pytest.fixture(scope="session")
def run_k6() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_k6(script, summary_path, env)`: the real k6 binary, its output captured."""
    return _run_k6


@pytest.fixture(scope="session")
def run_reporter() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_reporter(summary, base_url, name, *options, api_key="-", env={...})`: the reporter as a process."""
    return _report


@pytest.fixture(scope="session")
def http() -> Callable[..., Answer]:
    """`http(method, url, body=None, headers=None)` -> Answer(status, headers (lower case), body)."""
    return _http


@pytest.fixture
def local_api_on(tmp_path: Path) -> Iterator[Callable[..., LocalApi]]:
    """`local_api_on(database_url, *args)`: one more local API for this test only (stopped after it)."""
    started: list[LocalApi] = []

    def start(database_url: str, *args: str) -> LocalApi:
        api = start_local_api(database_url, tmp_path / f"local_api_{len(started)}.log", *args)
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()
