"""X-Ray records invocations, never what they answer (issue 10, item 12), and costs nothing on the cold path.

Lambda's active tracing (`Tracing: Active`) records every invocation without any SDK in the function. Powertools'
Tracer would add the X-Ray SDK (with botocore: about a third of the cold start, issue 11) and, by default, put
each handler's return value in the trace: for the query function, whole pages of rows with source IPs and user
agents. So no function uses it, and nothing turns response capture on.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from template.samhelpers import REPO_ROOT
from template.test_template import resources

HANDLER_CODE = sorted(
    [*REPO_ROOT.glob("functions/*/app.py"), *REPO_ROOT.glob("layers/common/experiments/*.py")],
    key=lambda path: str(path),
)


def tracing_imports(path: Path) -> list[str]:
    """Every import of the X-Ray SDK or of Powertools' Tracer in a module, as `module[:name]`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "aws_xray_sdk"]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] == "aws_xray_sdk" or node.module.startswith("aws_lambda_powertools.tracing"):
                found.append(node.module)
            elif node.module.split(".")[0] == "aws_lambda_powertools":
                found += [f"{node.module}:{alias.name}" for alias in node.names if alias.name == "Tracer"]
    return found


@pytest.mark.parametrize("path", HANDLER_CODE, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_no_function_uses_the_xray_sdk_or_powertools_tracer(path: Path) -> None:
    assert tracing_imports(path) == [], f"{path.relative_to(REPO_ROOT)} imports tracing code"


def test_the_check_sees_a_tracer_import(tmp_path: Path) -> None:
    """The check above can fail: it finds each way of importing the tracer."""
    module = tmp_path / "app.py"
    module.write_text(
        "from aws_lambda_powertools import Logger, Tracer\n"
        "import aws_xray_sdk.core\n"
        "from aws_lambda_powertools.tracing import tracer\n"
    )
    assert tracing_imports(module) == [
        "aws_lambda_powertools:Tracer",
        "aws_xray_sdk.core",
        "aws_lambda_powertools.tracing",
    ]


def test_lambda_active_tracing_stays_on_without_response_capture(cfn: dict[str, Any]) -> None:
    functions = resources(cfn, "AWS::Lambda::Function")
    assert {"ReportFunction", "QueryFunction", "AuthorizerFunction", "MigrateFunction"} <= functions.keys()
    for name, function in functions.items():
        properties = function["Properties"]
        assert properties["TracingConfig"] == {"Mode": "Active"}, name
        tracer_settings = {k: v for k, v in properties["Environment"]["Variables"].items() if "TRACE" in k}
        assert tracer_settings == {}, f"{name} configures a tracer: {tracer_settings}"
