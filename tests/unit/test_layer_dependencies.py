"""The layer brings no AWS SDK of its own, and no handler loads one before it needs it.

aws-xray-sdk (Powertools' `[tracer]` extra) brought its own botocore into the layer, shadowing the Lambda
runtime's, and put response pages into X-Ray. Lambda's active tracing (template.yaml) records each invocation
without it. boto3 and botocore (the runtime's) are imported only when a secret is first fetched.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from support import REPO_ROOT

AWS_SDK = {"boto3", "botocore", "aws-xray-sdk", "s3transfer"}


def layer_requirements() -> list[Requirement]:
    lines = (REPO_ROOT / "layers" / "common" / "requirements.txt").read_text().splitlines()
    return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def test_the_layer_requires_no_aws_sdk_and_no_tracer_extra() -> None:
    requirements = layer_requirements()
    assert requirements
    assert not AWS_SDK & {requirement.name for requirement in requirements}
    assert all("tracer" not in requirement.extras for requirement in requirements)


@pytest.mark.parametrize("function", ["report", "query", "authorizer"])
def test_importing_a_handler_loads_no_aws_sdk(function: str) -> None:
    """In a fresh interpreter, as a cold start: the modules loaded by importing the handler."""
    app = str(REPO_ROOT / "functions" / function / "app.py")
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('app', {app!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {"DATABASE_URL": "postgresql://unused", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    sdk = [name for name in loaded if name.split(".")[0] in {"boto3", "botocore", "aws_xray_sdk", "s3transfer"}]
    # Powertools' user-agent hook imports the bare botocore package (1 ms); nothing more of it, nor boto3.
    assert set(sdk) <= {"botocore"}, sdk
    source = (REPO_ROOT / "functions" / function / "app.py").read_text()
    assert "Tracer" not in source
