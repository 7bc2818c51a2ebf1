"""Change points over time: real Apache Otava in .venv-otava, real PostgreSQL, runs stored as the API stores them."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
from changepoints.otavahelpers import Run, quiet_environment

from devkit.nightly import nightly_values, store_nightly
from support import REPO_ROOT

pytestmark = pytest.mark.integration

RUNS, STEP_AT = 40, 25  # 40 nightly runs, a 15 % step from run 25 on (0-based), 3 % noise


def changes_by_variant(run: Run) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for change in run.json["changes"]:
        found.setdefault(change["variant"], []).append(change)
    return found


def test_a_15_percent_step_at_run_25_is_found_there_and_called_worse(
    history_db: psycopg.Connection, regressions: Callable[..., Run]
) -> None:
    seeds = range(5)
    for seed in seeds:  # one variant a seed: five independent series in one analysis
        values = nightly_values(120.0, RUNS, step_at=STEP_AT, step_pct=15, noise_pct=3, seed=seed)
        store_nightly(history_db, "latency", f"seed{seed}", {"p95_ms": values})

    run = regressions("latency", "--json")

    assert run.code == 0, run.stderr  # the change is 15 runs old: nothing within the last 3 runs
    found = changes_by_variant(run)
    for seed in seeds:
        at_step = [c for c in found.get(f"seed{seed}", []) if abs(c["runIndex"] - STEP_AT) <= 1]
        assert len(at_step) == 1, (seed, found.get(f"seed{seed}"))
        [change] = at_step
        assert change["verdict"] == "worse" and 10 < change["changePct"] < 20 and change["pValue"] < 0.001
        assert change["before"] < change["after"]


def test_pure_noise_has_no_change_point_in_at_least_19_of_20_seeds(
    history_db: psycopg.Connection, regressions: Callable[..., Run]
) -> None:
    for seed in range(20):
        values = nightly_values(120.0, RUNS, noise_pct=3, seed=seed)
        store_nightly(history_db, "noise", f"seed{seed}", {"p95_ms": values})

    run = regressions("noise", "--json")

    assert run.code == 0, run.stderr
    assert run.json["series"] == 20
    with_changes = set(changes_by_variant(run))
    assert len(with_changes) <= 1, run.json["changes"]


def test_a_step_up_where_higher_is_better_is_better(
    history_db: psycopg.Connection, regressions: Callable[..., Run]
) -> None:
    up = nightly_values(800.0, RUNS, step_at=STEP_AT, step_pct=15, noise_pct=3, seed=11)
    store_nightly(
        history_db,
        "throughput",
        "main",
        {"rps": up, "score_total": up, "widgets": up},  # k6's rps; a glob of the run's own; no direction at all
        metadata={"directions": {"higher": ["score_*"]}},
    )

    run = regressions("throughput", "--json")

    verdicts = {c["metric"]: c["verdict"] for c in run.json["changes"] if abs(c["runIndex"] - STEP_AT) <= 1}
    assert verdicts == {"rps": "better", "score_total": "better", "widgets": "changed"}
    assert run.code == 0


@pytest.mark.parametrize(("metric", "recent", "expected"), [("p95_ms", "3", 4), ("p95_ms", "2", 0), ("rps", "3", 0)])
def test_make_regressions_exits_4_only_on_a_worse_change_within_the_last_runs(
    history_db: psycopg.Connection, database_url: str, otava_python: Path, metric: str, recent: str, expected: int
) -> None:
    late = RUNS - 3  # the step starts 3 runs before the end
    values = nightly_values(100.0, RUNS, step_at=late, step_pct=15, noise_pct=3, seed=3)
    store_nightly(history_db, "nightly", "main", {metric: values})

    done = subprocess.run(
        ["make", "--no-print-directory", "regressions", "NAME=nightly", f"RECENT={recent}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**quiet_environment(), "DATABASE_URL": database_url},
    )  # fmt: skip

    assert done.returncode == (2 if expected else 0), done.stdout + done.stderr  # make exits 2 when a recipe fails
    assert f"{late + 1}/{RUNS}" in done.stdout  # the change is printed with its run, whatever the verdict
    if expected:
        assert "Error 4" in done.stderr and "FAIL: 1 change(s) made a metric worse" in done.stdout
    else:
        assert "OK: no change made a metric worse" in done.stdout


def test_results_replace_the_earlier_ones_and_the_route_serves_them(
    history_db: psycopg.Connection, regressions: Callable[..., Run], get: Callable[..., Any]
) -> None:
    for variant, seed in (("a", 1), ("b", 2)):
        values = nightly_values(120.0, RUNS, step_at=STEP_AT, step_pct=15, noise_pct=3, seed=seed)
        store_nightly(history_db, "stored", variant, {"p95_ms": values})

    first = regressions("stored", "--json")
    again = regressions("stored", "--json")
    only_a = regressions("stored", "--variant", "a", "--json")

    assert first.json["changes"] == again.json["changes"]
    assert {c["variant"] for c in first.json["changes"]} == {"a", "b"}
    count = history_db.execute("SELECT count(*) FROM ingest.change_points WHERE name = 'stored'").fetchone()[0]
    assert count == len(first.json["changes"])  # replaced, not added to
    assert {c["variant"] for c in only_a.json["changes"]} == {"a"}

    served = get("/experiments/changes", {"name": "stored"})
    assert served.status == 200
    without_runs = [{k: v for k, v in change.items() if k != "runs"} for change in first.json["changes"]]
    assert served.body == {"name": "stored", "changes": without_runs}  # b's results outlived the run on a alone


def test_the_printout_names_when_what_and_which_way(
    history_db: psycopg.Connection, regressions: Callable[..., Run], tmp_path: Path
) -> None:
    values = nightly_values(120.0, RUNS, step_at=STEP_AT, step_pct=15, noise_pct=3, seed=4)
    store_nightly(history_db, "printed", "main", {"p95_ms": values})
    summary = tmp_path / "summary.md"

    run = regressions("printed", env={"GITHUB_STEP_SUMMARY": str(summary)})

    [line] = [line for line in run.stdout.splitlines() if "p95_ms" in line]
    assert line.startswith("2026-01-26 02:00:00.000") and "main" in line and "26/40" in line
    assert "→" in line and "+1" in line and line.rstrip().endswith("worse")
    markdown = summary.read_text()
    assert "| `p95_ms` | 26/40 |" in markdown and "no regression within the last 3 runs" in markdown


class SlackWebhook(BaseHTTPRequestHandler):
    """An incoming webhook on 127.0.0.1 that keeps what it was sent."""

    received: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slack_webhook() -> Iterator[str]:
    SlackWebhook.received, SlackWebhook.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlackWebhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/services/T000/B000/XXXX"
    server.shutdown()


def test_slack_gets_otavas_message_when_a_webhook_is_set(
    history_db: psycopg.Connection, regressions: Callable[..., Run], slack_webhook: str
) -> None:
    values = nightly_values(100.0, RUNS, step_at=RUNS - 3, step_pct=15, noise_pct=3, seed=3)
    store_nightly(history_db, "slacked", "main", {"p95_ms": values})

    run = regressions("slacked", env={"SLACK_WEBHOOK_URL": slack_webhook})

    assert run.code == 4, run.stderr
    [message] = SlackWebhook.received
    text = json.dumps(message["blocks"])
    assert "Otava has detected change points" in text and "p95_ms" in text and ":red_circle:" in text


def test_a_failing_slack_webhook_does_not_hide_the_regression(
    history_db: psycopg.Connection, regressions: Callable[..., Run], slack_webhook: str
) -> None:
    values = nightly_values(100.0, RUNS, step_at=RUNS - 3, step_pct=15, noise_pct=3, seed=3)
    store_nightly(history_db, "slack-down", "main", {"p95_ms": values})
    SlackWebhook.status = 500

    run = regressions("slack-down", env={"SLACK_WEBHOOK_URL": slack_webhook})

    assert run.code == 4 and "Slack notification failed" in run.stderr
    assert history_db.execute("SELECT count(*) FROM ingest.change_points").fetchone()[0] == 1


def test_no_slack_message_without_a_recent_change(
    history_db: psycopg.Connection, regressions: Callable[..., Run], slack_webhook: str
) -> None:
    store_nightly(history_db, "quiet", "main", {"p95_ms": nightly_values(100.0, RUNS, noise_pct=3, seed=5)})

    assert regressions("quiet", env={"SLACK_WEBHOOK_URL": slack_webhook}).code == 0
    assert SlackWebhook.received == []


def test_an_unknown_experiment_exits_1_and_stores_nothing(
    history_db: psycopg.Connection, regressions: Callable[..., Run]
) -> None:
    run = regressions("nothing-here")
    assert run.code == 1 and "no runs stored for experiment 'nothing-here'" in run.stderr
    assert history_db.execute("SELECT count(*) FROM ingest.change_points").fetchone()[0] == 0


def test_the_demo_plants_a_regression_and_finds_it(regressions: Callable[..., Run]) -> None:
    run = regressions("--demo")
    assert run.code == 0, run.stdout + run.stderr
    assert "exits 4 on this history (make: Error 4): the nightly job fails" in run.stdout
    assert "planted regression found" in run.stdout
