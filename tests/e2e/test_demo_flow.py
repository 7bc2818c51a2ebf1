"""The experiment flow end to end: real k6 against the product service, the reporter, the local API, PostgreSQL.

The numbers in `experiments` must be k6's own numbers (to the column's 4 decimals), and `scripts/demo.py`
must run the original doc's whole flow and leave nothing running behind it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from support import HEADLINE_FIGURES, k6_figure

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
HALF_OF_4TH_DECIMAL = Decimal("0.00005")


def test_stored_rows_equal_k6_summary_numbers_to_4_decimals(
    k6_summary: Path,
    local_api: Any,
    run_reporter: Callable[..., subprocess.CompletedProcess[str]],
    db: psycopg.Connection,
) -> None:
    done = run_reporter(
        k6_summary,
        local_api.url,
        "lru_cache",
        "e2e run",
        "--variant",
        "baseline",
        "--metadata",
        "productId=123",
        env={"EXPERIMENTS_API_KEY": local_api.api_key},
    )

    assert done.returncode == 0, done.stdout + done.stderr + local_api.log_tail()
    rows = db.execute(
        "SELECT metric, value, name, variant, description, metadata FROM experiments ORDER BY metric"
    ).fetchall()
    stored = {metric: value for metric, value, *_ in rows}
    assert set(stored) >= set(HEADLINE_FIGURES)
    for metric, value in stored.items():
        expected = Decimal(repr(k6_figure(json.loads(k6_summary.read_text()), metric)))
        assert abs(value - expected) <= HALF_OF_4TH_DECIMAL, (metric, value, expected)
    assert {(name, variant, description) for _, _, name, variant, description, _ in rows} == {
        ("lru_cache", "baseline", "e2e run")
    }
    metadata = rows[0][5]
    assert metadata["rawFile"] == str(k6_summary)
    assert metadata["productId"] == 123
    assert metadata["vus"] == 5


def refused(url: str) -> bool:
    """True when nothing listens at `url` any more."""
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def demo_env(database_url: str, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Short runs, our test database, and results/logs in tmp_path (not the repository root)."""
    settings = {
        "DATABASE_URL": database_url,
        "VUS": "3",
        "DURATION": "2s",
        "WARM_VUS": "2",
        "WARM_DURATION": "1s",
        "DELAY_MS": "10",
        "RESULTS_DIR": str(tmp_path),
        "DEMO_LOG_DIR": str(tmp_path / "logs"),
    }
    return os.environ | settings | overrides


def test_demo_runs_the_whole_flow_and_prints_the_comparison(
    database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "demo.py")],
        cwd=REPO_ROOT,
        env=demo_env(database_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    table = out[out.index("Read back from the experiments table") :]
    assert re.search(r"^variant\s+p50_ms\s+p95_ms\s+rps$", table, re.M), table
    assert re.search(r"^baseline(\s+[\d,.]+){3}$", table, re.M), table
    assert re.search(r"^cached(\s+[\d,.]+){3}$", table, re.M), table
    assert re.search(r"^change(\s+[+-][\d,.]+%){3}$", table, re.M), table
    hit_rates = re.search(r"^cache_hit_rate\s+([\d.]+)\s+([\d.]+)\s", table, re.M)
    assert hit_rates and float(hit_rates[1]) < 0.1 and float(hit_rates[2]) > 0.9, table
    for endpoint in ("GET /products/:id", "GET /products"):
        assert re.search(rf"^p95 {re.escape(endpoint)} \(ms\)(\s+[\d,.]+){{2}}\s+-[\d,.]+%$", table, re.M), table
    run_id = re.search(r"\(run ([\w-]+)\)", out).group(1)
    rows = db.execute(
        "SELECT variant, metric, value FROM experiments WHERE name = 'lru_cache' AND metadata->>'demoRun' = %s",
        (run_id,),
    ).fetchall()
    values = {(variant, metric): value for variant, metric, value in rows}
    assert {variant for variant, _ in values} == {"baseline", "cached"}
    # The cache is the only difference between the runs, and it must show: 10 ms reads vs none.
    assert values[("cached", "p50_ms")] < values[("baseline", "p50_ms")] / 2
    assert (tmp_path / "results_baseline.json").exists() and (tmp_path / "results_cached.json").exists()
    for url in re.findall(r"on (http://127\.0\.0\.1:\d+)", out):
        assert refused(url), f"{url} still answers after the demo ended"


def test_demo_stopped_with_ctrl_c_stops_everything_it_started(database_url: str, tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "demo.py")],
        cwd=REPO_ROOT,
        env=demo_env(database_url, tmp_path, DURATION="30s"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert demo.stdout is not None
    deadline = time.monotonic() + 60
    for line in demo.stdout:  # wait until the baseline k6 run is under way
        lines.append(line)
        if line.startswith("[baseline]") or time.monotonic() > deadline:
            break
    time.sleep(1)

    demo.send_signal(signal.SIGINT)
    stdout, stderr = demo.communicate(timeout=30)

    assert demo.returncode == 130, "".join(lines) + stdout + stderr
    assert "everything it started has been stopped" in stderr
    urls = re.findall(r"on (http://127\.0\.0\.1:\d+)", "".join(lines))
    assert len(urls) == 2, lines  # the local API and the product service
    for url in urls:
        assert refused(url), f"{url} still answers after the demo was interrupted"
