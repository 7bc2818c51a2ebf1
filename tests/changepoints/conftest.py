"""Fixtures for the change-point tests: Apache Otava's own venv (.venv-otava) and a runner for regressions.py.

Otava never enters .venv (or the Lambda layer): the tests create .venv-otava through the Makefile when missing,
as tests/template does for .venv-sam, and run `scripts/regressions.py` in it as a subprocess.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from changepoints.otavahelpers import OTAVA_PYTHON, Run, quiet_environment

from support import REPO_ROOT


@pytest.fixture(scope="session")
def otava_python() -> Path:
    """.venv-otava's interpreter, the venv created through `make install-otava` when missing."""
    done = subprocess.run(
        ["make", "--no-print-directory", "install-otava"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"make install-otava failed:\n{done.stdout}\n{done.stderr}"
    return OTAVA_PYTHON


@pytest.fixture
def history_db(db: psycopg.Connection) -> psycopg.Connection:
    """The test database with no runs and no stored change points."""
    db.execute("TRUNCATE ingest.change_points")
    return db


@pytest.fixture
def regressions(otava_python: Path, database_url: str) -> Callable[..., Run]:
    """Run `scripts/regressions.py ARGS...` in .venv-otava against the test database."""

    def call(*args: str, env: dict[str, str] | None = None) -> Run:
        done = subprocess.run(
            [str(otava_python), str(REPO_ROOT / "scripts" / "regressions.py"), *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
            env={**quiet_environment(), "DATABASE_URL": database_url, **(env or {})},
        )  # fmt: skip
        return Run(done.returncode, done.stdout, done.stderr)

    return call
