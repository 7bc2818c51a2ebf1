"""The nightly workflow's change-point step, run as GitHub would run it, fails on a planted regression."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
import yaml
from changepoints.otavahelpers import quiet_environment

from devkit.nightly import nightly_values, store_nightly
from support import REPO_ROOT

pytestmark = pytest.mark.integration

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "k6-nightly.yml"


def regressions_step() -> str:
    [job] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"].values()
    [step] = [step for step in job["steps"] if step.get("name") == "Change points over time (Apache Otava)"]
    return step["run"]


@pytest.mark.parametrize(("step_pct", "fails"), [(15, True), (0, False)])
def test_the_nightly_job_fails_on_a_planted_regression_and_writes_its_summary(
    history_db: psycopg.Connection, database_url: str, otava_python: Path, tmp_path: Path, step_pct: int, fails: bool
) -> None:
    values = nightly_values(120.0, 30, step_at=27, step_pct=step_pct, noise_pct=3, seed=7)
    store_nightly(
        history_db,
        "lru_cache_nightly",
        "nightly",
        {"p95_ms": values, "rps": nightly_values(850, 30, noise_pct=3, seed=8)},
    )
    summary = tmp_path / "summary.md"
    env = {**quiet_environment(), "DATABASE_URL": database_url, "EXPERIMENT": "lru_cache_nightly",
           "VARIANT": "nightly", "RECENT": "3", "GITHUB_STEP_SUMMARY": str(summary)}  # fmt: skip

    done = subprocess.run(
        ["bash", "-c", regressions_step()], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip

    assert (done.returncode != 0) == fails, done.stdout + done.stderr
    markdown = summary.read_text()
    assert ("regression within the last 3 runs" in markdown) and (("no regression" in markdown) != fails)
    if fails:
        assert "| nightly | `p95_ms` | 28/30 |" in markdown and "worse ⚠" in markdown
