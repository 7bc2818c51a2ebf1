"""The CI regression gate: `report_k6_result.py ... --compare-to baseline --fail-on-regression 10`.

Everything goes through the real path: the reporter runs as a process (as in CI), posts k6-shaped
`--summary-export` files written here with controlled numbers to the local API, which stores them in the
test run's PostgreSQL, and then asks GET /experiments/compare for the verdicts.

The planted change is SLOWER = +25% on every latency (and rps falls to 1/1.25 of itself, as it does in a
closed-model k6 run). What tells a regression from noise of the same size is the baseline's history:
  * TIGHT baseline runs (100 ms +-2%): a candidate 25% slower lies beyond every baseline run -> worse, exit 4;
  * NOISY baseline runs (100 ms +-25%): the same candidate lies within the runs' own spread -> exit 0.
The realistic CI use is ONE candidate run per pull request against the baseline's history, which the API
judges with its no-overlap rule; 4 candidate runs take the Mann-Whitney U path. Each test uses its own
experiment name, so tests do not see each other's runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from support import Reply, ScriptedServer, python_3_9

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "report_k6_result.py"

THRESHOLD = "10"  # percent, as a CI job would pass it
SLOWER = 1.25  # the planted regression: +25% latency
FASTER = 0.75  # an improvement of the same size
TIGHT = (0.98, 0.99, 1.00, 1.01, 1.02)  # baseline runs, 100 ms p95 +-2%
NOISY = (0.75, 0.875, 1.00, 1.125, 1.25)  # baseline runs spreading +-25% around the same median
BASE_P95_MS = 100.0
BASE_RPS = 200.0
DURATION_S = 30
LATENCY_METRICS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms", "min_ms", "max_ms")

Reporter = Callable[..., Any]


def summary_export(factor: float) -> dict[str, Any]:
    """A k6 `--summary-export` document whose latencies are `factor` x the reference run's.

    Every percentile scales with the factor and the request rate scales with its inverse (closed model:
    slower answers, fewer requests); no request fails and every check passes, so error_rate and
    checks_pass_rate never change.
    """
    p95 = BASE_P95_MS * factor
    rps = BASE_RPS / factor
    count = round(rps * DURATION_S)
    duration = {
        "avg": 0.55 * p95,
        "min": 0.1 * p95,
        "med": 0.5 * p95,
        "max": 2.0 * p95,
        "p(90)": 0.9 * p95,
        "p(95)": p95,
        "p(99)": 1.3 * p95,
    }
    return {
        "root_group": {"name": "", "path": "", "id": "d41d8cd98f00b204e9800998ecf8427e", "groups": {}, "checks": {}},
        "metrics": {
            "http_req_duration": duration,
            "http_reqs": {"count": count, "rate": rps},
            "http_req_failed": {"passes": 0, "fails": count, "value": 0},
            "checks": {"passes": count, "fails": 0, "value": 1},
            "vus_max": {"value": 10, "min": 10, "max": 10},
        },
    }


class Experiment:
    """One experiment of its own (a fresh name) on the session's local API, reported through the CLI."""

    def __init__(self, run_reporter: Reporter, local_api: Any, tmp_path: Path) -> None:
        self.name = f"gate{uuid.uuid4().hex[:10]}"
        self._run = run_reporter
        self._api = local_api
        self._dir = tmp_path
        self._files = 0

    def write_summary(self, factor: float) -> Path:
        """A new k6 summary file (each one is a distinct run: its bytes differ, so does its Idempotency-Key)."""
        self._files += 1
        path = self._dir / f"run{self._files:02d}_x{factor}.json"
        path.write_text(json.dumps(summary_export(factor), indent=2))
        return path

    def report(self, variant: str, factor: float, *options: str, env: dict[str, str] | None = None) -> Any:
        """`report_k6_result.py <file> <url> - <name> --variant <variant> [options]`, key from the environment."""
        summary = self.write_summary(factor)
        full_env = {"EXPERIMENTS_API_KEY": self._api.api_key, "GITHUB_STEP_SUMMARY": "", **(env or {})}
        return self._run(summary, self._api.url, self.name, "--variant", variant, *options, env=full_env)

    def seed(self, variant: str, factors: Sequence[float]) -> None:
        """Store one run per factor, oldest first; plain reports, no gate."""
        for factor in factors:
            done = self.report(variant, factor)
            assert done.returncode == 0, done.stdout + done.stderr

    def gate(self, variant: str, factor: float, *extra: str, env: dict[str, str] | None = None) -> Any:
        """Report one candidate run and gate it against `baseline` at THRESHOLD percent."""
        options = ("--compare-to", "baseline", "--fail-on-regression", THRESHOLD, *extra)
        return self.report(variant, factor, *options, env=env)


@pytest.fixture
def experiment(run_reporter: Reporter, local_api: Any, tmp_path: Path) -> Experiment:
    return Experiment(run_reporter, local_api, tmp_path)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The gate's printed table as {metric: [baseline median (n), variant median (n), change, verdict, method]}."""
    rows = {}
    for line in stdout.splitlines():
        match = re.match(r"([a-z][a-z0-9_]*)\s{2,}(.+)$", line)
        if match and match.group(1) != "metric":
            rows[match.group(1)] = re.split(r"\s{2,}", match.group(2).strip())
    return rows


def verdicts(stdout: str) -> dict[str, str]:
    return {metric: cells[3] for metric, cells in table_rows(stdout).items()}


def methods(stdout: str) -> dict[str, str]:
    return {metric: cells[4].split()[0] for metric, cells in table_rows(stdout).items()}


# --------------------------------------------------------------------------------------------- one candidate run


def test_planted_regression_exits_4_prints_the_table_and_writes_the_step_summary(
    experiment: Experiment, tmp_path: Path
) -> None:
    experiment.seed("baseline", TIGHT)
    summary_file = tmp_path / "step_summary.md"
    summary_file.write_text("# earlier step\n")

    done = experiment.gate("candidate", SLOWER, env={"GITHUB_STEP_SUMMARY": str(summary_file)})

    assert done.returncode == 4, done.stdout + done.stderr
    print(done.stdout)  # shown with -s: the table a CI log shows
    assert done.stdout.startswith("stored: ")
    assert f"regression gate: {experiment.name}: variant 'candidate' vs baseline 'baseline'" in done.stdout
    assert "last 5 runs each, threshold 10%" in done.stdout
    rows = table_rows(done.stdout)
    assert rows["p95_ms"][:4] == ["100 (5)", "125 (1)", "+25.00%", "worse"]
    assert rows["rps"][:4] == ["200 (5)", "160 (1)", "-20.00%", "worse"]  # higher is better: fewer rps is worse
    assert {metric: verdicts(done.stdout)[metric] for metric in LATENCY_METRICS} == dict.fromkeys(
        LATENCY_METRICS, "worse"
    )
    assert verdicts(done.stdout)["error_rate"] == "no_change"
    assert methods(done.stdout)["p95_ms"] == "no_overlap"  # one candidate run: no test, no overlap
    assert re.search(r"^FAILED: .*p95_ms.* got worse than 'baseline' beyond 10% and the noise$", done.stdout, re.M)

    markdown = summary_file.read_text()
    assert markdown.startswith("# earlier step\n### :x: k6 regression gate failed\n")  # appended, not replaced
    assert "| metric | baseline median (n) | candidate median (n) | change | verdict | method |" in markdown
    assert "| p95_ms | 100 (5) | 125 (1) | +25.00% | worse | no_overlap |" in markdown
    assert "**FAILED: " in markdown


def test_noise_of_the_same_size_exits_0(experiment: Experiment) -> None:
    experiment.seed("baseline", NOISY)

    done = experiment.gate("candidate", SLOWER)

    assert done.returncode == 0, done.stdout + done.stderr
    rows = table_rows(done.stdout)
    assert rows["p95_ms"][:4] == ["100 (5)", "125 (1)", "+25.00%", "no_change"]  # same +25%, within the noise
    assert set(verdicts(done.stdout).values()) == {"no_change"}
    assert "PASSED: no metric got worse" in done.stdout
    assert "within the run-to-run noise" in done.stdout


def test_improvement_exits_0_and_shows_better(experiment: Experiment, tmp_path: Path) -> None:
    experiment.seed("baseline", TIGHT)
    summary_file = tmp_path / "step_summary.md"

    done = experiment.gate("candidate", FASTER, env={"GITHUB_STEP_SUMMARY": str(summary_file)})

    assert done.returncode == 0, done.stdout + done.stderr
    rows = table_rows(done.stdout)
    assert rows["p95_ms"][:4] == ["100 (5)", "75 (1)", "-25.00%", "better"]
    assert rows["rps"][2:4] == ["+33.33%", "better"]
    assert re.search(r"^PASSED: no metric got worse; better: .*p95_ms", done.stdout, re.M)
    markdown = summary_file.read_text()
    assert markdown.startswith("### :white_check_mark: k6 regression gate passed\n")
    assert "| p95_ms | 100 (5) | 75 (1) | -25.00% | better | no_overlap |" in markdown


def test_variant_taken_from_the_name_like_the_api(
    run_reporter: Reporter, local_api: Any, tmp_path: Path, experiment: Experiment
) -> None:
    # The original doc's naming: "<experiment>_<variant>" and no --variant; the gate compares the same split.
    env = {"EXPERIMENTS_API_KEY": local_api.api_key, "GITHUB_STEP_SUMMARY": ""}
    for factor in TIGHT:
        seeded = run_reporter(experiment.write_summary(factor), local_api.url, f"{experiment.name}_baseline", env=env)
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr

    options = ("--compare-to", "baseline", "--fail-on-regression", THRESHOLD)
    done = run_reporter(experiment.write_summary(SLOWER), local_api.url, f"{experiment.name}_pr42", *options, env=env)

    assert done.returncode == 4, done.stdout + done.stderr
    assert f"{experiment.name}: variant 'pr42' vs baseline 'baseline'" in done.stdout
    assert verdicts(done.stdout)["p95_ms"] == "worse"


# --------------------------------------------------------------------------------------------- several candidate runs


@pytest.mark.parametrize(
    ("baseline", "candidates", "exit_code", "p95_verdict"),
    [
        (TIGHT, (1.23, 1.24, 1.26, 1.27), 4, "worse"),  # every candidate run slower than every baseline run
        (NOISY, (1.1, 1.2, 1.3, 1.4), 0, "no_change"),  # median also +25%, but the runs interleave
    ],
    ids=["regression", "noise"],
)
def test_several_candidate_runs_are_judged_by_mann_whitney_u(
    experiment: Experiment,
    baseline: tuple[float, ...],
    candidates: tuple[float, ...],
    exit_code: int,
    p95_verdict: str,
) -> None:
    experiment.seed("baseline", baseline)
    experiment.seed("candidate", candidates[:-1])

    done = experiment.gate("candidate", candidates[-1])

    assert done.returncode == exit_code, done.stdout + done.stderr
    rows = table_rows(done.stdout)
    assert rows["p95_ms"][:4] == ["100 (5)", "125 (4)", "+25.00%", p95_verdict]
    assert re.fullmatch(r"mann_whitney_u p=0\.\d{3}", rows["p95_ms"][4])


# --------------------------------------------------------------------------------------------- edges


def test_the_gate_runs_on_python_3_9(experiment: Experiment, local_api: Any, tmp_path: Path) -> None:
    python = python_3_9()
    if python is None:
        pytest.skip("no python3.9 on this machine")
    experiment.seed("baseline", TIGHT)
    summary_file = tmp_path / "step_summary.md"
    argv = [python, str(SCRIPT), str(experiment.write_summary(SLOWER)), local_api.url, "-", experiment.name]
    argv += ["--variant", "candidate", "--compare-to", "baseline", "--fail-on-regression", THRESHOLD]
    env = os.environ | {"EXPERIMENTS_API_KEY": local_api.api_key, "GITHUB_STEP_SUMMARY": str(summary_file)}

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 4, done.stdout + done.stderr
    assert verdicts(done.stdout)["p95_ms"] == "worse"
    assert "| p95_ms | 100 (5) | 125 (1) | +25.00% | worse | no_overlap |" in summary_file.read_text()


def test_without_a_baseline_history_it_is_not_enough_data_and_passes(experiment: Experiment) -> None:
    experiment.seed("main", TIGHT)  # a baseline under another name than the one the gate asks for

    done = experiment.gate("candidate", SLOWER)

    assert done.returncode == 0, done.stdout + done.stderr
    assert set(verdicts(done.stdout).values()) == {"not_enough_data"}
    assert "not enough data: no run of baseline 'baseline' is stored" in done.stdout


def test_compare_to_without_fail_on_regression_prints_but_does_not_fail(experiment: Experiment) -> None:
    experiment.seed("baseline", TIGHT)

    done = experiment.report("candidate", SLOWER, "--compare-to", "baseline", "--runs", "3")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "last 3 runs each, threshold 5%" in done.stdout  # the API's default threshold
    assert verdicts(done.stdout)["p95_ms"] == "worse"
    assert "(not failing: no --fail-on-regression)" in done.stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--fail-on-regression", "10"), "--fail-on-regression requires --compare-to BASELINE"),
        (("--runs", "3"), "--runs requires --compare-to BASELINE"),
        (("--compare-to", "baseline", "--fail-on-regression", "-1"), "--fail-on-regression must be a percentage"),
        (("--compare-to", "baseline", "--fail-on-regression", "nan"), "--fail-on-regression must be a percentage"),
        (("--compare-to", "baseline", "--fail-on-regression", "ten"), "invalid float value: 'ten'"),
        (("--compare-to", "baseline", "--runs", "0"), "--runs must be from 1 to 100"),
        (("--compare-to", " ", "--fail-on-regression", "10"), "--compare-to must not be blank"),
    ],
    ids=["no-compare-to", "runs-without-compare-to", "negative", "nan", "not-a-number", "zero-runs", "empty-baseline"],
)
def test_bad_gate_options_exit_1_and_send_nothing(
    experiment: Experiment, database_url: str, options: tuple[str, ...], message: str
) -> None:
    done = experiment.report("candidate", SLOWER, *options)

    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr
    assert done.stdout == ""
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT count(*) FROM experiments WHERE name = %s", (experiment.name,)).fetchone()
    assert stored == (0,)


def test_replaying_the_same_file_gates_again(experiment: Experiment, run_reporter: Reporter, local_api: Any) -> None:
    # A re-run CI job reports the same file: the API answers it as a replay, and the gate still decides.
    experiment.seed("baseline", TIGHT)
    candidate = experiment.write_summary(SLOWER)
    options = ("--variant", "candidate", "--compare-to", "baseline", "--fail-on-regression", THRESHOLD)
    env = {"EXPERIMENTS_API_KEY": local_api.api_key, "GITHUB_STEP_SUMMARY": ""}

    first = run_reporter(candidate, local_api.url, experiment.name, *options, env=env)
    again = run_reporter(candidate, local_api.url, experiment.name, *options, env=env)

    assert (first.returncode, again.returncode) == (4, 4), again.stdout + again.stderr
    assert again.stdout.startswith("replayed (already stored, nothing new written)")
    assert table_rows(again.stdout)["p95_ms"][:4] == ["100 (5)", "125 (1)", "+25.00%", "worse"]  # still one run


# --------------------------------------------------------------------------------------------- the GET's retry rules


@pytest.fixture
def scripted_api() -> Iterator[ScriptedServer]:
    """A stand-in API under a stage path, like API Gateway's: reports are stored (201); GETs as each test says."""
    created = Reply(201, {"name": "lru_cache", "variant": "candidate", "ids": {}})
    with ScriptedServer(path_prefix="/dev", POST=[created]) as api:
        yield api


COMPARISON = {
    "name": "lru_cache",
    "baseline": "baseline",
    "runs": 5,
    "thresholdPct": 10.0,
    "metrics": [
        {
            "metric": "p95_ms",
            "higherIsBetter": False,
            "variants": [
                {"variant": "baseline", "runs": 9, "latest": 101, "median": 100, "changePct": None,
                 "verdict": None, "method": None, "pValue": None},
                {"variant": "candidate", "runs": 1, "latest": 125, "median": 125, "changePct": 25.0,
                 "verdict": "worse", "method": "no_overlap", "pValue": None},
            ],
        }
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("replies", "exit_code", "gets"),
    [
        ([(503, {"error": "unavailable"}), (429, {"error": "slow_down"}), (200, COMPARISON)], 4, 3),
        ([(503, {"error": "unavailable"})], 3, 3),
        ([(404, {"error": "not_found", "message": "no experiment named 'lru_cache'"})], 2, 1),
        ([(403, {"message": "Forbidden"})], 2, 1),
    ],
    ids=["503-429-then-200", "always-503", "404-not-retried", "403-not-retried"],
)
def test_the_comparison_is_fetched_with_the_reports_retry_rules(
    scripted_api: ScriptedServer,
    run_reporter: Reporter,
    tmp_path: Path,
    replies: list[tuple[int, Any]],
    exit_code: int,
    gets: int,
) -> None:
    scripted_api.answer("GET", *(Reply(status, body) for status, body in replies))
    summary = tmp_path / "results.json"
    summary.write_text(json.dumps(summary_export(SLOWER)))
    options = ("--compare-to", "baseline", "--fail-on-regression", "10", "--retries", "2", "--backoff-base", "0")
    env = {"EXPERIMENTS_API_KEY": "k", "NO_PROXY": "*", "no_proxy": "*", "GITHUB_STEP_SUMMARY": ""}

    done = run_reporter(summary, scripted_api.url, "lru_cache_candidate", *options, env=env)

    assert done.returncode == exit_code, done.stdout + done.stderr
    assert len(scripted_api.received("GET")) == gets
    assert (
        scripted_api.received("GET")[0].path
        == "/dev/experiments/compare?name=lru_cache&baseline=baseline&runs=5&threshold=10.0"
    )


def test_a_custom_metric_that_got_worse_fails_the_gate_and_one_of_unknown_direction_only_changed(
    experiment: Experiment,
) -> None:
    """k6 scripts' own metrics: `with_cache_duration` is a duration (lower is better, by its name);
    `rate_limited_responses` says nothing, so its change is shown as `changed` and never fails the gate."""

    def write(factor: float) -> Path:
        doc = summary_export(1.0)
        doc["metrics"]["with_cache_duration"] = {"med": 40.0 * factor, "p(95)": 50.0 * factor, "max": 90.0 * factor}
        doc["metrics"]["rate_limited_responses"] = {"count": 10 * factor, "rate": 1.0 * factor}
        path = experiment.write_summary(factor)
        path.write_text(json.dumps(doc))
        return path

    env = {"EXPERIMENTS_API_KEY": experiment._api.api_key, "GITHUB_STEP_SUMMARY": ""}
    for factor in TIGHT:
        seeded = experiment._run(write(factor), experiment._api.url, experiment.name, "--variant", "baseline", env=env)
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr

    options = ("--variant", "candidate", "--compare-to", "baseline", "--fail-on-regression", THRESHOLD)
    done = experiment._run(write(SLOWER), experiment._api.url, experiment.name, *options, env=env)

    assert done.returncode == 4, done.stdout + done.stderr
    lines = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    assert lines["with_cache_duration:p(95)"].split()[-2:] == ["worse", "no_overlap"]
    assert lines["rate_limited_responses:count"].split()[-2:] == ["changed", "no_overlap"]
    assert re.search(r"^FAILED: .*with_cache_duration:p\(95\)", done.stdout, re.M)
    assert "rate_limited_responses:count" not in re.search(r"^FAILED: .*$", done.stdout, re.M).group()
    assert re.search(r"^changed, direction unknown \(not judged\): .*rate_limited_responses:count", done.stdout, re.M)
