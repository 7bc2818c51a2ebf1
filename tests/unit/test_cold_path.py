"""What the report function loads before its first request: nothing that request does not use (issue 11).

Cold start is mostly imports (`make bench` prints the breakdown). The X-Ray SDK, botocore and boto3 (Secrets
Manager is reached only when `DB_SECRET_ARN` is set, on the first connect) and the read side's modules
(queries, statistics, series, change points) are not needed to store a report, so a fresh interpreter that imports
the handler must not have loaded them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# A name covers the module and everything under it; "botocore." only what is under it: Powertools imports the
# bare `botocore` package (its __init__, under a millisecond) to hook its user agent in, no client or session.
AWS_SDK = ["aws_xray_sdk", "botocore.", "boto3"]
NOT_ON_THE_COLD_PATH = {
    "report": [*AWS_SDK, "experiments.query", "experiments.stats", "experiments.series", "experiments.changes"],
    "query": AWS_SDK,
    "authorizer": [*AWS_SDK, "psycopg", "pydantic"],
}
LOADED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
print(json.dumps(sorted(sys.modules)))
"""


def modules_loaded_by(function: str) -> set[str]:
    """Every module a fresh interpreter holds after importing `functions/<function>/app.py`."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED, str(REPO_ROOT / "functions" / function / "app.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("function", sorted(NOT_ON_THE_COLD_PATH))
def test_importing_the_handler_loads_nothing_its_first_request_does_not_need(function: str) -> None:
    loaded = modules_loaded_by(function)
    assert f"experiments.{'auth' if function == 'authorizer' else 'config'}" in loaded  # the check sees our code
    unneeded = {
        name
        for name in loaded
        for package in NOT_ON_THE_COLD_PATH[function]
        if name == package or name.startswith(package.removesuffix(".") + ".")
    }
    assert unneeded == set(), f"functions/{function}/app.py loads {sorted(unneeded)} at import"
