"""Helpers for the SAM application's tests: paths, subprocess runs, the offline transform, built handlers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SAM_VENV = REPO_ROOT / ".venv-sam"
# What a user would pass for the parameters without defaults (any syntactically valid values do offline).
DEPLOY_PARAMETERS = {
    "DbSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k6-experiments-db-AbCdEf",
    "SubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
    "SecurityGroupIds": "sg-0123456789abcdef0",
}
ARCHITECTURES = {"x86_64": "--parameter-overrides Architecture=x86_64", "arm64": ""}  # arm64: the defaults
TRACE_ID = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def run(command: list[str | Path], *, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def transform(sam_venv: Path, parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """template.yaml as the CloudFormation that SAM's transform makes of it."""
    values = {**DEPLOY_PARAMETERS, **(parameters or {})}
    values["SubnetIds"] = values["SubnetIds"].split(",")
    values["SecurityGroupIds"] = values["SecurityGroupIds"].split(",")
    done = run(
        [sam_venv / "bin" / "python", HERE / "_transform.py", REPO_ROOT / "template.yaml", json.dumps(values)],
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, f"SAM transform failed:\n{done.stderr}"
    return json.loads(done.stdout)


def python312_environment() -> dict[str, str]:
    """An environment in which `python3.12` runs: as is, or with pyenv's 3.12 next to the active version."""
    env = dict(os.environ)
    if run(["python3.12", "--version"], env=env, timeout=30).returncode == 0:
        return env
    pyenv = shutil.which("pyenv")
    if pyenv:
        versions = run([pyenv, "versions", "--bare"], timeout=30).stdout.split()
        found = sorted((v for v in versions if re.fullmatch(r"3\.12\.\d+", v)), key=lambda v: int(v.split(".")[2]))
        if found:
            env["PYENV_VERSION"] = f"{run([pyenv, 'version-name'], timeout=30).stdout.strip()}:{found[-1]}"
            if run(["python3.12", "--version"], env=env, timeout=30).returncode == 0:
                return env
    pytest.fail("python3.12 (the Lambda runtime) must be on PATH: `sam build` and these tests need it")


def function_environment(cfn: dict[str, Any], logical_id: str) -> dict[str, str]:
    """The function's environment as deployed with default parameters (values needing a stack become "")."""
    parameters = cfn.get("Parameters", {})
    variables = cfn["Resources"][logical_id]["Properties"].get("Environment", {}).get("Variables", {})
    env = {}
    for name, value in variables.items():
        if isinstance(value, dict) and "Ref" in value:
            value = parameters.get(value["Ref"], {}).get("Default", "")
        env[name] = value if isinstance(value, str) else ""
    return env


def invoke_built(
    python312: Path,
    function_dir: Path,
    layer_dir: Path,
    events: list[dict[str, Any]],
    env: dict[str, str],
    *,
    timeout_s: float = 10,
) -> dict[str, Any]:
    """Run `app.lambda_handler` from a build folder in `python3.12 -I -S` (see _invoke.py) with a Lambda-like env."""
    output = function_dir.parent / f"invoke-{uuid.uuid4().hex}.json"
    request = {
        "function_dir": str(function_dir),
        "layer_dir": str(layer_dir),
        "handler": "app.lambda_handler",
        "timeout_s": timeout_s,
        "events": events,
        "output": str(output),
    }
    lambda_env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_NAME": function_dir.name,
        "LAMBDA_TASK_ROOT": str(function_dir),  # as in Lambda
        "_X_AMZN_TRACE_ID": TRACE_ID,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        **env,
    }
    done = run([python312, "-I", "-S", HERE / "_invoke.py"], input=json.dumps(request), env=lambda_env, timeout=120)
    assert done.returncode == 0, f"the built handler could not run:\n{done.stdout}\n{done.stderr}"
    report = json.loads(output.read_text(encoding="utf-8"))
    report["log"] = done.stdout + done.stderr
    return report
