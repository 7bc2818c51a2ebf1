"""The reporter's HTTP behaviour against a stand-in for the API: a real stdlib HTTP server on 127.0.0.1.

The stand-in is the network edge only; the reporter runs unchanged (in-process through `main(argv)`, and once
as a real `python scripts/report_k6_result.py` process). Retries use `--backoff-base 0.01` so they take
milliseconds; the Retry-After test really waits the second the server asks for.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import Reply, ScriptedServer, load_reporter, python_3_9, summary_export_doc

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "report_k6_result.py"
SECRET = "s3cr3t-key-that-must-never-be-printed"
FAST = ["--backoff-base", "0.01"]


rk = load_reporter()


@pytest.fixture
def api() -> Iterator[ScriptedServer]:
    """The reports API, standing in: POSTs answered 201 unless a test scripts otherwise."""
    with ScriptedServer(POST=[Reply(201, {"name": "x", "variant": "y", "ids": {}})]) as stub:
        yield stub


@pytest.fixture(autouse=True)
def _no_proxy_no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Talk to 127.0.0.1 directly whatever proxy the machine has; start without a key in the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv("EXPERIMENTS_API_KEY", raising=False)


@pytest.fixture
def summary_file(tmp_path: Path) -> Path:
    """A small `--summary-export` file in k6 1.1's shape."""
    doc = summary_export_doc()
    path = tmp_path / "results_baseline.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = rk.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


CREATED = Reply(
    201,
    {
        "name": "lru_cache",
        "variant": "baseline",
        "createdAt": "2025-11-01T12:00:00.000Z",
        "ids": {"p50_ms": "8d1f0f5e-0000-4000-8000-000000000001", "p95_ms": "8d1f0f5e-0000-4000-8000-000000000002"},
    },
)


# ------------------------------------------------------------------------------ success


def test_created_exits_0_and_prints_what_was_stored(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answer("POST", CREATED)
    code, out, err = run(
        [str(summary_file), api.url + "/dev/", SECRET, "lru_cache", "cold cache", "--variant", "baseline"], capsys
    )

    assert code == 0, err
    assert "stored: name=lru_cache variant=baseline metrics=2" in out
    assert "8d1f0f5e-0000-4000-8000-000000000001" in out
    assert "replayed" not in out
    [request] = api.requests
    assert request.path == "/dev/experiments/report"
    assert request.headers["x-api-key"] == SECRET
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == rk.idempotency_key(summary_file.read_bytes(), "lru_cache", "baseline")
    payload = json.loads(request.body)
    assert set(payload) == {"name", "variant", "notes", "metricsSummary", "rawFile", "metadata"}
    assert payload["metricsSummary"]["p95_ms"] == 5.25
    assert payload["metricsSummary"]["requests_count"] == 200


def test_replay_exits_0_and_says_replayed(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answer("POST", Reply(200, CREATED.body, {"Idempotent-Replayed": "true"}))
    code, out, _ = run([str(summary_file), api.url, SECRET, "lru_cache_baseline"], capsys)
    assert code == 0
    assert out.startswith("replayed")
    assert "name=lru_cache variant=baseline" in out


def test_reporting_the_same_file_twice_sends_the_same_key_and_the_same_bytes(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What lets the API answer a re-run CI job with a replay (same key, same body) instead of a 409.
    api.answer("POST", CREATED)
    argv = [str(summary_file), api.url, SECRET, "lru_cache", "--variant", "baseline"]
    assert run(argv, capsys)[0] == 0
    time.sleep(0.002)
    assert run(argv, capsys)[0] == 0
    first, second = api.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.body == second.body


# ------------------------------------------------------------------------------ rejections: never retried


def test_validation_error_exits_2_prints_the_servers_message_and_is_not_retried(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answer(
        "POST",
        Reply(
            422,
            {
                "error": "validation_error",
                "message": "the report is invalid",
                "details": [{"field": "metricsSummary.p95_ms", "reason": "must be <= 999999.9999"}],
            },
        ),
    )
    code, out, err = run([str(summary_file), api.url, SECRET, "lru_cache_baseline", *FAST], capsys)
    assert code == 2
    assert out == ""
    assert "HTTP 422 validation_error: the report is invalid" in err
    assert "metricsSummary.p95_ms: must be <= 999999.9999" in err
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, {"message": "Forbidden"}, "HTTP 403 Forbidden"),
        (409, {"error": "idempotency_conflict", "message": "key reused with another body"}, "idempotency_conflict"),
        (400, {"error": "malformed_json", "message": "bad"}, "malformed_json"),
        (302, None, "HTTP 302"),
    ],
)
def test_4xx_and_redirects_are_not_retried(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str], status: int, body: Any, expected: str
) -> None:
    api.answer("POST", Reply(status, body, {"Location": "http://127.0.0.1:9/elsewhere"} if status == 302 else {}))
    code, _, err = run([str(summary_file), api.url, SECRET, "lru_cache_baseline", *FAST], capsys)
    assert code == 2
    assert expected in err
    assert len(api.requests) == 1


# ------------------------------------------------------------------------------ retries


def test_503_with_retry_after_then_201_sends_the_same_report_twice(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answer(
        "POST", Reply(503, {"error": "database_unavailable", "message": "try later"}, {"Retry-After": "1"}), CREATED
    )
    started = time.monotonic()
    code, out, err = run([str(summary_file), api.url, SECRET, "lru_cache_baseline", *FAST], capsys)
    elapsed = time.monotonic() - started

    assert code == 0, err
    assert "stored" in out
    assert len(api.requests) == 2
    first, second = api.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.body == second.body
    assert elapsed >= 0.95  # Retry-After: 1 is honoured, not the 10 ms backoff
    assert "HTTP 503 database_unavailable: try later" in err


@pytest.mark.parametrize("status", [429, 500, 502])
def test_429_and_5xx_are_retried(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    api.answer("POST", Reply(status, {"error": "busy"}), Reply(status, {"error": "busy"}), CREATED)
    code, _, err = run([str(summary_file), api.url, SECRET, "lru_cache_baseline", *FAST], capsys)
    assert code == 0, err
    assert len(api.requests) == 3


def test_always_503_exits_3_after_the_retries(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answer("POST", Reply(503, {"error": "database_unavailable", "message": "down"}))
    code, out, err = run([str(summary_file), api.url, SECRET, "lru_cache_baseline", "--retries", "2", *FAST], capsys)
    assert code == 3
    assert out == ""
    assert len(api.requests) == 3
    assert "after 3 attempt(s): HTTP 503 database_unavailable: down" in err


def test_connection_refused_exits_3(summary_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = run(
        [str(summary_file), f"http://127.0.0.1:{port}", SECRET, "lru_cache_baseline", "--retries", "1", *FAST], capsys
    )
    assert code == 3
    assert "unreachable" in err and "after 2 attempt(s)" in err


def test_a_timed_out_attempt_is_retried(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answer("POST", Reply(201, CREATED.body, delay_s=2.0), CREATED)
    code, _, err = run([str(summary_file), api.url, SECRET, "lru_cache_baseline", "--timeout", "0.3", *FAST], capsys)
    assert code == 0, err
    assert len(api.requests) == 2
    assert "timed out" in err


# ------------------------------------------------------------------------------ the key


@pytest.mark.parametrize("key_arg", ["-", ""])
@pytest.mark.parametrize("reply", [CREATED, Reply(422, {"error": "validation_error", "message": "no"})])
def test_key_from_environment_is_sent_and_never_printed(
    api: ScriptedServer,
    summary_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key_arg: str,
    reply: Reply,
) -> None:
    monkeypatch.setenv("EXPERIMENTS_API_KEY", SECRET)
    api.answer("POST", reply)
    code, out, err = run([str(summary_file), api.url, key_arg, "lru_cache_baseline"], capsys)
    assert code in (0, 2)
    assert api.requests[0].headers["x-api-key"] == SECRET
    assert SECRET not in out + err


def test_missing_key_is_a_usage_error_and_nothing_is_sent(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([str(summary_file), api.url, "-", "lru_cache_baseline"], capsys)
    assert code == 1 and out == ""
    assert "EXPERIMENTS_API_KEY" in err
    assert api.requests == []


# ------------------------------------------------------------------------------ nothing sent


def test_dry_run_prints_the_payload_and_sends_nothing(
    api: ScriptedServer, summary_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([str(summary_file), api.url, SECRET, "lru_cache_baseline", "--dry-run"], capsys)
    assert code == 0
    assert json.loads(out)["metricsSummary"]["p95_ms"] == 5.25
    assert "nothing sent" in err
    assert SECRET not in out + err
    assert api.requests == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "not found"),
        ("<html>", "is not JSON"),
        ('{"metrics": {}}', "has no metric to report"),
        ('{"metrics": {"http_reqs": {"unit": "none"}}}', "has no metric to report"),
    ],
    ids=["missing", "not-json", "no-metrics", "metrics-without-numbers"],
)
def test_broken_file_exits_1_and_sends_nothing(
    api: ScriptedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run([str(path), api.url, SECRET, "lru_cache_baseline"], capsys)
    assert code == 1 and out == ""
    assert expected in err and len(err.strip().splitlines()) == 1
    assert api.requests == []


# ------------------------------------------------------------------------------ as a real process


def _script_run(python: str, summary_file: Path, api: ScriptedServer) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "NO_PROXY": "*", "EXPERIMENTS_API_KEY": SECRET}
    return subprocess.run(
        [python, str(SCRIPT), str(summary_file), api.url, "-", "lru_cache", "--variant", "baseline"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_script_runs_as_a_process_with_the_documented_exit_codes(api: ScriptedServer, summary_file: Path) -> None:
    api.answer("POST", CREATED)
    assert _script_run(sys.executable, summary_file, api).returncode == 0
    api.answer("POST", Reply(422, {"error": "validation_error", "message": "no"}))
    assert _script_run(sys.executable, summary_file, api).returncode == 2


def test_script_runs_on_python_3_9(api: ScriptedServer, summary_file: Path) -> None:
    python = python_3_9()
    if python is None:
        pytest.skip("no python3.9 on this machine")
    api.answer("POST", CREATED)
    done = _script_run(python, summary_file, api)
    assert done.returncode == 0, done.stderr
    assert len(api.requests) == 1
