"""The whole k6 summary of a real multi-scenario run, stored: custom metrics, submetrics, groups, both shapes.

One real k6 run of tests/fixtures/k6_whole_summary.js writes `--summary-export` and handleSummary's JSON of the
same run. Each is reported through the local API as its own variant; every stored value must equal the figure k6
wrote (to the column's 4 decimals), and the two shapes must give the same keys and values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from support import k6_figure

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "k6_whole_summary.js"
HALF_OF_4TH_DECIMAL = Decimal("0.00005")
EXPECTED_KEYS = {
    "with_cache_duration:p(99.9)",
    "with_cache_duration{scenario:browse}:p(95)",
    "cache_hit_rate:rate",
    "bytes_saved:count",
    "bytes_saved:rate",
    "queue_depth:value",
    "queue_depth:max",
    "http_req_duration{name:GET /products/:id}:p(95)",
    "http_req_duration{scenario:checkout}:p(99)",
    "http_req_failed{scenario:browse}:rate",
    "checks{scenario:checkout}:rate",
    "group_duration{group:::checkout flow}:max",
    "iteration_duration:med",
    "p95_ms",
    "rps",
}


@pytest.fixture(scope="module")
def both_shapes(product_service: Any, run_k6: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """shape → path of the file k6 wrote, from ONE run."""
    folder = tmp_path_factory.mktemp("whole")
    export, handle = folder / "export.json", folder / "handle.json"
    done = run_k6(SCRIPT, export, {"BASE_URL": product_service.url, "SUMMARY_JSON": str(handle)})
    assert done.returncode == 0, done.stdout + done.stderr
    return {"summary-export": export, "handle-summary": handle}


def test_every_figure_of_both_shapes_is_stored_equal_to_k6s_own(
    both_shapes: dict[str, Path],
    local_api: Any,
    run_reporter: Callable[..., Any],
    db: psycopg.Connection,
) -> None:
    stored: dict[str, dict[str, Decimal]] = {}
    for shape, path in both_shapes.items():
        done = run_reporter(
            path, local_api.url, "whole", "--variant", shape, env={"EXPERIMENTS_API_KEY": local_api.api_key}
        )
        assert done.returncode == 0, done.stdout + done.stderr
        rows = db.execute("SELECT metric, value FROM experiments WHERE variant = %s", (shape,)).fetchall()
        stored[shape] = dict(rows)
        doc = json.loads(path.read_text())
        for key, value in stored[shape].items():
            expected = Decimal(repr(float(k6_figure(doc, key))))
            assert abs(value - expected) <= HALF_OF_4TH_DECIMAL, (shape, key, value, expected)

    assert set(stored["summary-export"]) >= EXPECTED_KEYS
    assert stored["summary-export"] == stored["handle-summary"]
