"""GET /experiments and GET /experiments/compare through the query function, against a real PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import psycopg
import pytest

from experiments.models import ExperimentReport
from experiments.store import save_report

pytestmark = pytest.mark.integration

START = datetime(2025, 11, 1, 12, 0, 0)


def store(
    db: psycopg.Connection,
    name: str,
    variant: str,
    metrics: dict[str, float],
    at: datetime,
    metadata: dict | None = None,
) -> None:
    """Store one run as the API would (same code path), at a given time."""
    report = ExperimentReport.model_validate(
        {
            "name": name,
            "variant": variant,
            "date": at.isoformat() + "Z",
            "metricsSummary": metrics,
            "metadata": metadata,
        }
    )
    with db.transaction():
        save_report(db, report)


def all_pages(get, query: dict[str, str], between_pages=lambda: None) -> list[dict]:
    items, cursor = [], None
    while True:
        answer = get("/experiments", {**query, **({"cursor": cursor} if cursor else {})})
        assert answer.status == 200, answer.body
        items += answer.body["items"]
        cursor = answer.body["nextCursor"]
        if cursor is None:
            return items
        between_pages()


# --- GET /experiments ---------------------------------------------------------------------------------------


@pytest.fixture
def seeded(db) -> psycopg.Connection:
    for i, (name, variant) in enumerate(itertools.product(["cache", "pool"], ["baseline", "cached"])):
        for run in range(3):
            store(db, name, variant, {"p50_ms": 10 + run, "p95_ms": 20 + run, "rps": 100 + i}, START + timedelta(
                minutes=10 * run + i))  # fmt: skip
    return db


def test_lists_newest_first(get, seeded) -> None:
    items = get("/experiments").body["items"]
    assert len(items) == 4 * 3 * 3
    keys = [(item["createdAt"], item["id"]) for item in items]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"name": "cache"}, 18),
        ({"name": "cache", "variant": "cached"}, 9),
        ({"name": "pool", "variant": "baseline", "metric": "rps"}, 3),
        ({"metric": "p95_ms"}, 12),
        ({"from": "2025-11-01T12:10:00Z"}, 4 * 2 * 3),
        ({"from": "2025-11-01T12:10:00Z", "to": "2025-11-01T12:20:00Z"}, 4 * 3),
        ({"name": "nothing"}, 0),
    ],
)
def test_filters(get, seeded, query: dict[str, str], expected: int) -> None:
    items = get("/experiments", query).body["items"]
    assert len(items) == expected
    for item in items:
        for key in ("name", "variant", "metric"):
            if key in query:
                assert item[key] == query[key]
        if "from" in query:
            assert item["createdAt"] >= query["from"].replace("Z", ".000Z")
        if "to" in query:
            assert item["createdAt"] < query["to"].replace("Z", ".000Z")


def test_rows_come_back_with_their_values_and_metadata(get, seeded) -> None:
    item = get("/experiments", {"name": "pool", "variant": "cached", "metric": "rps"}).body["items"][0]
    assert item["value"] == 103.0
    assert item["createdAt"] == "2025-11-01T12:23:00.000Z"
    assert item["metadata"] == {"ingest": {}}


def test_limit_defaults_to_100(get, db) -> None:
    for run in range(30):
        store(db, "many", "baseline", {f"m{i}": i for i in range(5)}, START + timedelta(seconds=run))
    page = get("/experiments").body
    assert len(page["items"]) == 100
    assert page["nextCursor"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "query limit"),
        ({"limit": "1001"}, "query limit"),
        ({"limit": "ten"}, "query limit"),
        ({"from": "yesterday"}, "query from"),
        ({"to": "2025-02-30"}, "query to"),
        ({"name": ""}, "query name"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(get, query: dict[str, str], field: str) -> None:
    answer = get("/experiments", query)
    assert answer.status == 422
    assert [d["field"] for d in answer.body["details"]] == [field]


@pytest.mark.parametrize("cursor", ["garbage", "WzEsMl0", "bm90IGpzb24"])
def test_bad_cursor_is_400_naming_the_cursor(get, cursor: str) -> None:
    answer = get("/experiments", {"cursor": cursor})
    assert answer.status == 400
    assert answer.body["details"][0]["field"] == "query cursor"


def test_pages_have_no_gaps_or_repeats_while_rows_are_inserted(get, db) -> None:
    for run in range(40):  # many rows share a createdAt: one report's metrics
        store(db, "paging", "baseline", {"a": run, "b": run, "c": run}, START + timedelta(seconds=run // 2))
    existing = {row[0] for row in db.execute("SELECT id FROM experiments")}
    newer = itertools.count()

    def insert_during_paging() -> None:
        store(db, "paging", "baseline", {"a": 1, "b": 2}, datetime(2030, 1, 1) + timedelta(seconds=next(newer)))
        store(db, "other", "baseline", {"a": 1}, START + timedelta(seconds=5))  # older than some pages

    ids = [item["id"] for item in all_pages(get, {"name": "paging", "limit": "7"}, insert_during_paging)]
    assert len(ids) == len(set(ids))
    assert existing <= set(ids)


# --- GET /experiments/compare -------------------------------------------------------------------------------


def runs(db, name: str, variant: str, values_by_metric: dict[str, list[float]], offset: int = 0) -> None:
    """Store len(values) runs; run k gets the k-th value of every metric (oldest first)."""
    count = len(next(iter(values_by_metric.values())))
    for k in range(count):
        at = START + timedelta(minutes=offset + k)
        store(db, name, variant, {metric: values[k] for metric, values in values_by_metric.items()}, at)


def verdicts(answer) -> dict[tuple[str, str], str | None]:
    return {(m["metric"], v["variant"]): v["verdict"] for m in answer.body["metrics"] for v in m["variants"]}


def test_compare_summarises_each_metric_and_variant(get, db) -> None:
    runs(db, "lru", "baseline", {"p95_ms": [300, 320, 310, 305, 315, 999]})  # the oldest (999) is outside runs=5
    runs(db, "lru", "cached", {"p95_ms": [40, 42, 41, 39, 43]}, offset=100)

    answer = get("/experiments/compare", {"name": "lru"})
    assert answer.status == 200
    (metric,) = answer.body["metrics"]
    baseline, cached = metric["variants"]
    assert (baseline["variant"], baseline["runs"], baseline["latest"]) == ("baseline", 6, 999.0)
    assert baseline["median"] == 315.0  # median of the 5 most recent: 320, 310, 305, 315, 999
    assert (cached["variant"], cached["runs"], cached["latest"], cached["median"]) == ("cached", 5, 43.0, 41.0)
    assert cached["changePct"] == round((41 - 315) / 315 * 100, 2)
    assert (cached["verdict"], cached["method"]) == ("better", "mann_whitney_u")
    assert cached["pValue"] < 0.05
    assert baseline["verdict"] is None


def test_direction_of_each_metric(get, db) -> None:
    """Every metric moves up by 50% in the candidate: good for throughput and pass rates, bad for the rest."""
    base = {"p50_ms": 10, "p95_ms": 20, "p99_ms": 30, "avg_ms": 12, "error_rate": 0.02, "rps": 100,
            "requests_count": 1000, "checks_pass_rate": 0.6}  # fmt: skip
    runs(db, "dir", "baseline", {m: [v * f for f in (1, 1.01, 0.99, 1.02, 0.98)] for m, v in base.items()})
    runs(db, "dir", "candidate", {m: [v * 1.5 * f for f in (1, 1.01, 0.99, 1.02, 0.98)] for m, v in base.items()})

    found = verdicts(get("/experiments/compare", {"name": "dir"}))
    higher_better = {"rps", "requests_count", "checks_pass_rate"}
    for metric in base:
        assert found[metric, "candidate"] == ("better" if metric in higher_better else "worse"), metric


def test_custom_metrics_are_judged_by_their_names_and_the_reports_own_directions(get, db) -> None:
    """Everything goes up by 50%: a hit rate is better, a duration worse, a count of unknown meaning only changed,
    until a run says (metadata.directions, the reporter's --lower-is-better) that it should go down."""
    base = {"cache_hit_rate:rate": 0.5, "with_cache_duration:p(95)": 20, "rate_limited_responses:count": 10}
    factors = (1, 1.01, 0.99, 1.02, 0.98)
    runs(db, "custom", "baseline", {m: [v * f for f in factors] for m, v in base.items()})
    runs(db, "custom", "candidate", {m: [v * 1.5 * f for f in factors] for m, v in base.items()}, offset=10)

    answer = get("/experiments/compare", {"name": "custom"})
    assert verdicts(answer) == {
        ("cache_hit_rate:rate", "baseline"): None,
        ("cache_hit_rate:rate", "candidate"): "better",
        ("with_cache_duration:p(95)", "baseline"): None,
        ("with_cache_duration:p(95)", "candidate"): "worse",
        ("rate_limited_responses:count", "baseline"): None,
        ("rate_limited_responses:count", "candidate"): "changed",
    }
    directions = {m["metric"]: m["higherIsBetter"] for m in answer.body["metrics"]}
    assert directions["rate_limited_responses:count"] is None

    store(db, "custom", "candidate", {"rate_limited_responses:count": 15}, START + timedelta(minutes=30),
          {"directions": {"lower": ["rate_limited_*"]}})  # fmt: skip
    assert verdicts(get("/experiments/compare", {"name": "custom"}))["rate_limited_responses:count", "candidate"] == (
        "worse"
    )


def test_noise_is_not_a_change(get, db) -> None:
    noisy = [100, 130, 80, 120, 90]
    runs(db, "noise", "baseline", {"p95_ms": noisy})
    runs(db, "noise", "candidate", {"p95_ms": [125, 85, 135, 95, 118]}, offset=10)  # median +18%, same spread
    answer = get("/experiments/compare", {"name": "noise", "threshold": "5"})
    candidate = answer.body["metrics"][0]["variants"][1]
    assert candidate["changePct"] == 18.0
    assert (candidate["verdict"], candidate["method"]) == ("no_change", "mann_whitney_u")


def test_change_below_threshold_is_no_change(get, db) -> None:
    runs(db, "small", "baseline", {"p95_ms": [100, 101, 100, 101, 100]})
    runs(db, "small", "candidate", {"p95_ms": [104, 104, 104, 104, 104]}, offset=10)
    assert verdicts(get("/experiments/compare", {"name": "small", "threshold": "5"}))["p95_ms", "candidate"] == (
        "no_change"
    )
    assert verdicts(get("/experiments/compare", {"name": "small", "threshold": "2"}))["p95_ms", "candidate"] == (
        "worse"
    )


def test_single_runs_fall_back_to_the_threshold(get, db) -> None:
    runs(db, "single", "baseline", {"p95_ms": [100], "rps": [50]})
    runs(db, "single", "candidate", {"p95_ms": [112], "rps": [52]}, offset=10)
    answer = get("/experiments/compare", {"name": "single", "threshold": "10"})
    assert verdicts(answer)["p95_ms", "candidate"] == "worse"
    assert verdicts(answer)["rps", "candidate"] == "no_change"


def test_few_runs_that_overlap_are_no_change(get, db) -> None:
    runs(db, "few", "baseline", {"p95_ms": [80, 100, 125]})
    runs(db, "few", "candidate", {"p95_ms": [120]}, offset=10)
    answer = get("/experiments/compare", {"name": "few", "threshold": "10"})
    candidate = answer.body["metrics"][0]["variants"][1]
    assert (candidate["verdict"], candidate["method"]) == ("no_change", "no_overlap")


def test_missing_baseline_is_not_enough_data(get, db) -> None:
    runs(db, "orphan", "candidate", {"p95_ms": [100, 101]})
    runs(db, "orphan", "baseline", {"rps": [10]}, offset=10)
    found = verdicts(get("/experiments/compare", {"name": "orphan"}))
    assert found["p95_ms", "candidate"] == "not_enough_data"


def test_baseline_can_be_any_variant(get, db) -> None:
    runs(db, "pick", "v1", {"p95_ms": [100]})
    runs(db, "pick", "v2", {"p95_ms": [200]}, offset=10)
    assert verdicts(get("/experiments/compare", {"name": "pick", "baseline": "v2"}))["p95_ms", "v1"] == "better"


def test_unknown_experiment_is_404(get, db) -> None:
    answer = get("/experiments/compare", {"name": "never-stored"})
    assert answer.status == 404
    assert answer.body["error"] == "not_found"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "query name"),
        ({"name": "x", "runs": "0"}, "query runs"),
        ({"name": "x", "threshold": "-1"}, "query threshold"),
    ],
)
def test_compare_bad_parameters_are_422(get, query: dict[str, str], field: str) -> None:
    answer = get("/experiments/compare", query)
    assert answer.status == 422
    assert [d["field"] for d in answer.body["details"]] == [field]


# --- rows the Prisma backend may write (issue 10 item 7) -----------------------------------------------------

# `metadata` is Prisma's `Json?`: any JSON value, or SQL NULL. Our own reports only ever store objects.
FOREIGN_METADATA = ["[1, 2]", '"x"', "3", "true", "null", None, '{"directions": {"higher": 3, "lower": "p9*"}}']


def test_any_json_metadata_is_read_back(get, db) -> None:
    for i, metadata in enumerate(FOREIGN_METADATA):
        db.execute(
            """INSERT INTO experiments (id, name, variant, metric, value, metadata, "createdAt")
               VALUES (%s, 'foreign', 'baseline', 'p95_ms', 100, %s::jsonb, %s)""",
            (f"row-{i}", metadata, START + timedelta(minutes=i)),
        )
    answer = get("/experiments", {"name": "foreign"})
    assert answer.status == 200, answer.body
    by_id = {item["id"]: item["metadata"] for item in answer.body["items"]}
    assert by_id == {
        "row-0": [1, 2],
        "row-1": "x",
        "row-2": 3,
        "row-3": True,
        "row-4": None,
        "row-5": None,
        "row-6": {"directions": {"higher": 3, "lower": "p9*"}},
    }


def test_compare_ignores_directions_that_are_not_lists_of_globs(get, db) -> None:
    runs(db, "odd", "baseline", {"p95_ms": [100, 100, 100]})
    runs(db, "odd", "cached", {"p95_ms": [50, 50, 50]}, offset=10)
    db.execute(
        """UPDATE experiments SET metadata = '{"directions": {"higher": 3, "lower": ["p9*", 7]}}'::jsonb
           WHERE name = 'odd'"""
    )
    answer = get("/experiments/compare", {"name": "odd"})
    assert answer.status == 200, answer.body
    assert verdicts(answer)["p95_ms", "cached"] == "better"
    for path, query in [
        ("/experiments/metrics", {"name": "odd"}),
        ("/experiments/series", {"name": "odd", "metric": "p95_ms"}),
    ]:
        assert get(path, query).status == 200, path
