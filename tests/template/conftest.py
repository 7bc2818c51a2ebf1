"""Fixtures for the SAM application: the SAM CLI's venv, the template as plain CloudFormation, two real builds.

Everything runs offline (no AWS account): the template is transformed by the `samtranslator` package, and the
builds are real `sam build` runs through `make build`, whose output is then executed by a bare python3.12.
Builds are slow, so each architecture is built once per session, both at the same time.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from template.samhelpers import ARCHITECTURES, REPO_ROOT, SAM_VENV, python312_environment, run, transform


@pytest.fixture(scope="session")
def sam_venv() -> Path:
    """`.venv-sam` (aws-sam-cli, cfn-lint, aws-sam-translator), created through the Makefile when missing."""
    done = run(["make", "--no-print-directory", "install-sam"], cwd=REPO_ROOT, timeout=900)
    assert done.returncode == 0, f"make install-sam failed:\n{done.stdout}\n{done.stderr}"
    return SAM_VENV


@pytest.fixture(scope="session")
def cfn(sam_venv: Path) -> dict[str, Any]:
    """The transformed template with every parameter at its default."""
    return transform(sam_venv)


@pytest.fixture(scope="session")
def python312() -> Path:
    """The real python3.12 executable (not a pyenv shim), to run built functions in isolation."""
    done = run(["python3.12", "-c", "import sys; print(sys.executable)"], env=python312_environment(), timeout=30)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


@pytest.fixture(scope="session")
def sam_builds(sam_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`make build` once per architecture, both at once: {"x86_64": build dir, "arm64": build dir}.

    arm64 is built with no override at all (template default and samconfig.toml), x86_64 with
    `--parameter-overrides Architecture=x86_64`; each gets its own build and cache folders, uncached.
    """
    root = tmp_path_factory.mktemp("sam")
    builds: dict[str, tuple[Path, subprocess.Popen[str]]] = {}
    for architecture, override in ARCHITECTURES.items():
        build_dir = root / architecture / "build"
        sam_args = f"--cache-dir {root / architecture / 'cache'} --no-cached {override}"
        process = subprocess.Popen(
            ["make", "--no-print-directory", "build", f"BUILD_DIR={build_dir}", f"SAM_BUILD_ARGS={sam_args.strip()}"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        builds[architecture] = (build_dir, process)
    failures = []
    for architecture, (_, process) in builds.items():
        output, _ = process.communicate(timeout=900)
        if process.returncode != 0:
            failures.append(f"make build ({architecture}) exited {process.returncode}:\n{output[-6000:]}")
    assert not failures, "\n\n".join(failures)
    return {architecture: build_dir for architecture, (build_dir, _) in builds.items()}


@pytest.fixture
def scratch_database(server_url: str) -> Iterator[str]:
    """An empty database (no migrations applied) on the test server, dropped afterwards."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"k6exp_migrate_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
