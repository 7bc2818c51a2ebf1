"""The template passes the two linters `make validate` runs."""

from __future__ import annotations

import os
from pathlib import Path

from template.samhelpers import REPO_ROOT, run


def test_cfn_lint_passes(sam_venv: Path) -> None:
    done = run([sam_venv / "bin" / "cfn-lint", "template.yaml"], cwd=REPO_ROOT)
    assert done.returncode == 0, f"cfn-lint:\n{done.stdout}\n{done.stderr}"


def test_sam_validate_lint_passes(sam_venv: Path) -> None:
    done = run(
        [sam_venv / "bin" / "sam", "validate", "--lint", "--template", "template.yaml"],
        cwd=REPO_ROOT,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
    )
    assert done.returncode == 0, f"sam validate --lint:\n{done.stdout}\n{done.stderr}"
    assert "is a valid SAM Template" in done.stdout + done.stderr
