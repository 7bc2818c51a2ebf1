"""GET /experiments/changes and the change-point store, against a real PostgreSQL (no Otava needed here)."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from devkit.nightly import store_nightly
from experiments.changes import make_change, replace_changes, worse_within

pytestmark = pytest.mark.integration

NIGHTS = [datetime(2026, 1, 1, 2) + timedelta(days=night) for night in range(10)]


@pytest.fixture
def changes_db(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("TRUNCATE ingest.change_points")
    store_nightly(db, "nightly", "main", {"p95_ms": [100.0] * 10, "rps": [500.0] * 10})
    return db


def change(metric: str, at: int, before: float, after: float, variant: str = "main"):
    return make_change(
        variant, metric, run_index=at, times=NIGHTS, before=before, after=after, p_value=1e-6, directions={}
    )


def test_verdict_follows_the_metrics_direction() -> None:
    assert change("p95_ms", 5, 100, 115).verdict == "worse"
    assert change("rps", 5, 500, 575).verdict == "better"
    assert change("my_counter", 5, 1, 2).verdict == "changed"
    custom = make_change(
        "main", "my_score", run_index=5, times=NIGHTS, before=1, after=2, p_value=0.0, directions={"higher": ["my_*"]}
    )
    assert custom.verdict == "better"


def test_worse_within_counts_the_last_runs_of_the_series() -> None:
    late, early = change("p95_ms", 8, 100, 115), change("p95_ms", 3, 100, 115)
    assert worse_within([late, early], 2) == [late]
    assert worse_within([late, early], 1) == []
    assert worse_within([change("rps", 9, 500, 400), change("rps", 9, 500, 600)], 1) == [change("rps", 9, 500, 400)]


def test_route_serves_the_stored_changes_oldest_first(get, changes_db) -> None:
    replace_changes(changes_db, "nightly", [change("rps", 7, 500, 575), change("p95_ms", 4, 100.0, 115.5)])

    answer = get("/experiments/changes", {"name": "nightly"})

    assert answer.status == 200, answer.body
    assert answer.body == {
        "name": "nightly",
        "changes": [
            {"variant": "main", "metric": "p95_ms", "createdAt": "2026-01-05T02:00:00.000Z", "runIndex": 4,
             "before": 100.0, "after": 115.5, "changePct": 15.5, "pValue": 1e-6, "verdict": "worse"},
            {"variant": "main", "metric": "rps", "createdAt": "2026-01-08T02:00:00.000Z", "runIndex": 7,
             "before": 500.0, "after": 575.0, "changePct": 15.0, "pValue": 1e-6, "verdict": "better"},
        ],
    }  # fmt: skip


def test_a_new_analysis_replaces_only_its_scope(get, changes_db) -> None:
    replace_changes(changes_db, "nightly", [change("p95_ms", 4, 100, 115), change("rps", 7, 500, 575)])
    replace_changes(changes_db, "nightly", [change("p95_ms", 6, 100, 90)], metric="p95_ms")

    changes = get("/experiments/changes", {"name": "nightly"}).body["changes"]
    assert [(c["metric"], c["runIndex"], c["verdict"]) for c in changes] == [
        ("p95_ms", 6, "better"),
        ("rps", 7, "better"),
    ]

    replace_changes(changes_db, "nightly", [])
    assert get("/experiments/changes", {"name": "nightly"}).body == {"name": "nightly", "changes": []}


def test_a_failed_replacement_keeps_the_earlier_results(changes_db) -> None:
    replace_changes(changes_db, "nightly", [change("p95_ms", 4, 100, 115)])
    broken = change("rps", 7, 500, 575)
    object.__setattr__(broken, "verdict", "not-a-verdict")  # the table's CHECK refuses it, after the DELETE ran

    with pytest.raises(psycopg.errors.CheckViolation):
        replace_changes(changes_db, "nightly", [change("p95_ms", 6, 100, 90), broken])

    rows = changes_db.execute("SELECT metric, run_index FROM ingest.change_points").fetchall()
    assert rows == [("p95_ms", 4)]


def test_unknown_experiment_is_404_and_the_name_is_required(get, changes_db) -> None:
    missing = get("/experiments/changes", {"name": "nope"})
    assert missing.status == 404 and missing.body["error"] == "not_found"
    assert get("/experiments/changes").status == 422
