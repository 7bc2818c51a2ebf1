"""docs/openapi.json is the document Powertools generates from the handlers today (CI fails on drift)."""

from __future__ import annotations

import json
import subprocess
import sys

from support import REPO_ROOT


def test_committed_openapi_document_matches_the_code() -> None:
    check = subprocess.run(
        [sys.executable, "scripts/openapi.py", "--check"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr


def test_document_covers_every_route_and_error() -> None:
    document = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    report = document["paths"]["/experiments/report"]["post"]
    assert {"200", "201", "400", "409", "413", "415", "422", "503"} <= report["responses"].keys()
    assert {"/experiments", "/experiments/compare"} <= document["paths"].keys()
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "in": "header",
        "name": "x-api-key",
        "type": "apiKey",
    }
