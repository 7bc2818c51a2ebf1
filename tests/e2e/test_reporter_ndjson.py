"""The reporter on k6's raw output: one real k6 run writes `--out json`, `--summary-export` and handleSummary's JSON.

Every figure the reporter computes from the samples must equal k6's own summary of the same run (to the column's
4 decimals), plain and gzipped; the one exception is a Counter's `rate`, whose divisor (k6's test-run duration)
is not in the file: it must agree within 1%. A cut-off last line is a warning, not a refusal.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from experiments import k6summary
from support import REPO_ROOT, load_reporter, load_script

pytestmark = pytest.mark.e2e

K6 = Path(sys.executable).parent / "k6"
SCRIPT = REPO_ROOT / "tests" / "fixtures" / "k6_whole_summary.js"
FOUR_PLACES = Decimal("0.0001")
rk = load_reporter()
k6ndjson = load_script("k6ndjson")


@pytest.fixture(scope="module")
def one_run(product_service: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind → the file k6 wrote, all from ONE run: raw samples, --summary-export, handleSummary data."""
    folder = tmp_path_factory.mktemp("ndjson")
    paths = {"raw": folder / "raw.json", "export": folder / "export.json", "handle": folder / "handle.json"}
    argv = [str(K6), "run", "--quiet", "--no-color", f"--out=json={paths['raw']}",
            f"--summary-export={paths['export']}", str(SCRIPT)]  # fmt: skip
    env = os.environ | {"K6_NO_USAGE_REPORT": "true", "BASE_URL": product_service.url}
    env["SUMMARY_JSON"] = str(paths["handle"])
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    paths["gz"] = folder / "raw.json.gz"
    paths["gz"].write_bytes(gzip.compress(paths["raw"].read_bytes()))
    return paths


def k6_figures(path: Path) -> dict[str, float]:
    """Every figure of k6's own summary file, by key."""
    _, doc = rk.load_summary_file(str(path))
    return k6summary.select_metrics(k6summary.read_summary(doc), include=["*"])


def ndjson_figures(path: Path) -> tuple[dict[str, float], list[str]]:
    reading = k6ndjson.read_ndjson(str(path), k6ndjson.Selection(include=["*"]))
    return k6summary.select_metrics(reading.summary, include=["*"]), reading.warnings


def four(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(FOUR_PLACES)


def assert_same_figures(ours: dict[str, float], k6s: dict[str, float]) -> set[str]:
    common = set(ours) & set(k6s)
    for key in sorted(common):
        metric, _, stat = k6summary.parse_key(key)
        if stat == "rate" and metric in ("http_reqs", "iterations", "bytes_saved", "data_sent", "data_received"):
            assert ours[key] == pytest.approx(k6s[key], rel=0.01), key  # Counter rate: k6's duration is not in the file
        else:
            assert four(ours[key]) == four(k6s[key]), (key, ours[key], k6s[key])
    return common


@pytest.mark.parametrize("summary", ["export", "handle"])
def test_every_figure_equals_k6s_own_summary(one_run: dict[str, Path], summary: str) -> None:
    ours, warnings = ndjson_figures(one_run["raw"])
    assert warnings == []
    k6s = k6_figures(one_run[summary])
    common = assert_same_figures(ours, k6s)
    # everything k6 summarised is there, but percentiles the script asked for beyond p(90), p(95), p(99)
    missing = {key for key in set(k6s) - common if not key.endswith("p(99.9)")}
    assert missing == set()
    for key in (
        "http_req_duration{name:GET /products/:id}:p(95)",
        "checks{scenario:checkout}:rate",
        "group_duration{group:::checkout flow}:max",
        "queue_depth:value",
        "bytes_saved:count",
        "p95_ms",
    ):
        assert key in common  # fmt: skip


def test_the_gzipped_file_gives_the_same_figures(one_run: dict[str, Path]) -> None:
    assert ndjson_figures(one_run["gz"]) == ndjson_figures(one_run["raw"])


def test_tag_submetrics_and_thresholds(one_run: dict[str, Path]) -> None:
    reading = k6ndjson.read_ndjson(str(one_run["raw"]))
    ours = k6summary.select_metrics(reading.summary)
    # per-tag submetrics k6's summary only shows with a threshold: both scenarios, both endpoints
    for key in (
        "http_req_duration{scenario:browse}:p(95)",
        "http_req_duration{name:GET /products}:p(95)",
        "iterations{scenario:checkout}:count",
        "http_req_duration{expected_response:true}:med",
    ):
        assert key in ours, key  # fmt: skip
    assert not any("{status:" in key for key in ours)  # one status only: its submetric would repeat the metric
    assert "http_req_waiting:avg" not in ours  # left out by default, as for k6's summaries
    passed, failed = reading.summary.thresholds()
    assert "cache_hit_rate: rate>=0" in passed and failed == []
    assert reading.summary.vus_max == 3


def test_a_cut_off_last_line_is_a_warning(one_run: dict[str, Path], tmp_path: Path) -> None:
    raw = one_run["raw"].read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(raw[: raw.rindex(b'{"metric":"http_req_duration"') + 40])
    ours, warnings = ndjson_figures(cut)
    assert len(warnings) == 1 and "cut short" in warnings[0]
    assert ours["http_req_duration:count"] == ndjson_figures(one_run["raw"])[0]["http_req_duration:count"] - 1
    cut_gz = tmp_path / "cut.json.gz"
    gz = one_run["gz"].read_bytes()
    cut_gz.write_bytes(gz[: len(gz) - 100])
    _, warnings = ndjson_figures(cut_gz)
    assert len(warnings) == 1 and "ends early" in warnings[0]


@pytest.mark.parametrize("kind", ["raw", "gz"])
def test_the_reporter_stores_the_raw_file_with_k6s_values(
    kind: str,
    one_run: dict[str, Path],
    local_api: Any,
    run_reporter: Callable[..., Any],
    db: psycopg.Connection,
) -> None:
    done = run_reporter(one_run[kind], local_api.url, "ndjson", "--variant", kind,
                        env={"EXPERIMENTS_API_KEY": local_api.api_key})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    stored = dict(db.execute("SELECT metric, value FROM experiments WHERE variant = %s", (kind,)).fetchall())
    k6s = k6_figures(one_run["handle"])
    checked = 0
    for key, value in stored.items():
        if key in k6s and not key.endswith(":rate") and key not in ("rps",):
            assert value == four(k6s[key]), key
            checked += 1
    assert checked > 20
    metadata = db.execute("SELECT metadata FROM experiments WHERE variant = %s LIMIT 1", (kind,)).fetchone()[0]
    assert metadata["k6Summary"] == "ndjson" and metadata["vus"] == 3
