"""template.yaml, transformed offline to the CloudFormation that would be deployed, keeps its promises."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from template.samhelpers import REPO_ROOT, transform

from experiments.limits import MAX_BODY_BYTES

# What the functions read (experiments.config) and the parameter that sets it.
DATABASE_VARIABLES = {
    "DB_SECRET_ARN": "DbSecretArn",
    "DB_HOST": "DbHost",
    "DB_PORT": "DbPort",
    "DB_NAME": "DbName",
    "DB_PROXY": "DbProxy",
}
# Routes that are meant to be public (the dashboard page asks for the key itself). Everything else is data.
PUBLIC_ROUTES = {("get", "/dashboard")}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "x-amazon-apigateway-any-method"}


def resources(cfn: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in cfn["Resources"].items() if res["Type"] == type_}


def the_one(cfn: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    found = resources(cfn, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.items()))


def methods(cfn: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    _, api = the_one(cfn, "AWS::ApiGateway::RestApi")
    for path, operations in api["Properties"]["Body"]["paths"].items():
        for method, operation in operations.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def unconditional(policy: dict[str, Any]) -> dict[str, Any]:
    """A role's policy, or the policy inside `{"Fn::If": [condition, policy, NoValue]}`."""
    if "Fn::If" in policy:
        _, policy, otherwise = policy["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}
    return policy


def statements(cfn: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement the stack creates inline (roles' policies and standalone policies)."""
    for name, role in resources(cfn, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in unconditional(policy)["PolicyDocument"]["Statement"]:
                yield name, statement
    for name, policy in resources(cfn, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            yield name, statement


def of_function(cfn: dict[str, Any], type_: str, function: str) -> dict[str, dict[str, Any]]:
    """The resources of `type_` (aliases, versions) that belong to one function."""
    return {
        name: res
        for name, res in resources(cfn, type_).items()
        if res["Properties"]["FunctionName"] == {"Ref": function}
    }


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def plain_ref(value: Any) -> Any:
    """SAM's `{"Fn::Sub": ["${x}", {"x": {"Ref": P}}]}` wrapping of a bare reference, unwrapped to `{"Ref": P}`."""
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], list):
        text, variables = value["Fn::Sub"]
        match = re.fullmatch(r"\$\{(\w+)\}", text)
        if match and match.group(1) in variables:
            return variables[match.group(1)]
    return value


def database_functions(cfn: dict[str, Any]) -> set[str]:
    """The functions that talk to PostgreSQL (they are the ones given the secret)."""
    found = {
        name
        for name, function in resources(cfn, "AWS::Lambda::Function").items()
        if "DB_SECRET_ARN" in function["Properties"].get("Environment", {}).get("Variables", {})
    }
    assert {"ReportFunction", "MigrateFunction"} <= found
    return found


# --- API key, authorizer, usage plan --------------------------------------------------------------------------


def security(operation: dict[str, Any]) -> set[str]:
    return {name for requirement in operation.get("security", []) for name in requirement}


def test_every_data_method_requires_an_api_key_through_the_authorizer(cfn: dict[str, Any]) -> None:
    data_routes = [(m, p, op) for m, p, op in methods(cfn) if (m, p) not in PUBLIC_ROUTES]
    assert ("post", "/experiments/report") in {(m, p) for m, p, _ in data_routes}
    for method, path, operation in data_routes:
        required = security(operation)
        assert {"api_key", "ApiKeyAuthorizer"} <= required, f"{method.upper()} {path} is not protected: {required}"


def test_only_the_dashboard_page_is_public(cfn: dict[str, Any]) -> None:
    public = {(m, p) for m, p, op in methods(cfn) if "api_key" not in security(op)}
    assert public <= PUBLIC_ROUTES


def test_api_gateway_takes_the_key_from_the_authorizer(cfn: dict[str, Any]) -> None:
    _, api = the_one(cfn, "AWS::ApiGateway::RestApi")
    assert api["Properties"]["ApiKeySourceType"] == "AUTHORIZER"
    scheme = api["Properties"]["Body"]["components"]["securitySchemes"]["ApiKeyAuthorizer"]
    authorizer = scheme["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "request"
    # No identity source (the key may be in either header) requires caching off; an identity source would
    # make API Gateway answer 401 itself, before the authorizer, when that header is missing.
    assert authorizer["authorizerResultTtlInSeconds"] == 0
    assert "identitySource" not in authorizer
    assert authorizer["authorizerUri"]["Fn::Sub"][1]["__FunctionArn__"] == {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}


def test_usage_plan_is_attached_to_the_stage_with_throttle_and_quota(cfn: dict[str, Any]) -> None:
    _, plan = the_one(cfn, "AWS::ApiGateway::UsagePlan")
    stage_name, _ = the_one(cfn, "AWS::ApiGateway::Stage")
    api_name, _ = the_one(cfn, "AWS::ApiGateway::RestApi")
    parameters = cfn["Parameters"]
    assert plan["Properties"]["ApiStages"] == [{"ApiId": {"Ref": api_name}, "Stage": {"Ref": stage_name}}]
    assert plan["Properties"]["Throttle"] == {
        "RateLimit": parameters["ThrottleRateLimit"]["Default"],
        "BurstLimit": parameters["ThrottleBurstLimit"]["Default"],
    }
    assert plan["Properties"]["Quota"] == {"Limit": parameters["QuotaPerDay"]["Default"], "Period": "DAY"}

    key_name, key = the_one(cfn, "AWS::ApiGateway::ApiKey")
    assert key["Properties"]["Enabled"] is True
    assert key["Properties"]["StageKeys"] == [{"RestApiId": {"Ref": api_name}, "StageName": {"Ref": stage_name}}]
    plan_name, _ = the_one(cfn, "AWS::ApiGateway::UsagePlan")
    _, link = the_one(cfn, "AWS::ApiGateway::UsagePlanKey")
    assert link["Properties"] == {"KeyId": {"Ref": key_name}, "KeyType": "API_KEY", "UsagePlanId": {"Ref": plan_name}}


def test_usage_plan_limits_follow_the_parameters(sam_venv: Path) -> None:
    cfn = transform(sam_venv, {"ThrottleRateLimit": "7", "ThrottleBurstLimit": "9", "QuotaPerDay": "123"})
    _, plan = the_one(cfn, "AWS::ApiGateway::UsagePlan")
    # SAM substitutes the values itself (CloudFormation hands parameters to the transform as strings).
    assert {name: float(value) for name, value in plan["Properties"]["Throttle"].items()} == {
        "RateLimit": 7.0,
        "BurstLimit": 9.0,
    }
    assert int(plan["Properties"]["Quota"]["Limit"]) == 123


@pytest.mark.parametrize("response_type", ["ACCESS_DENIED", "UNAUTHORIZED", "INVALID_API_KEY"])
def test_a_missing_or_wrong_key_is_a_403_forbidden_like_plain_api_gateway(
    cfn: dict[str, Any], response_type: str
) -> None:
    _, api = the_one(cfn, "AWS::ApiGateway::RestApi")
    response = api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"][response_type]
    assert response["statusCode"] == "403"
    assert json.loads(response["responseTemplates"]["application/json"]) == {"message": "Forbidden"}


def test_api_gateway_refuses_a_too_large_body_like_the_handler(cfn: dict[str, Any]) -> None:
    _, api = the_one(cfn, "AWS::ApiGateway::RestApi")
    response = api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]["REQUEST_TOO_LARGE"]
    body = json.loads(response["responseTemplates"]["application/json"])
    assert response["statusCode"] == "413"
    assert body["error"] == "payload_too_large" and body["details"] == []
    assert str(MAX_BODY_BYTES) in body["message"]


def test_report_route_invokes_the_report_functions_published_alias(cfn: dict[str, Any]) -> None:
    operation = {(m, p): op for m, p, op in methods(cfn)}[("post", "/experiments/report")]
    integration = operation["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws_proxy"
    # The alias points at a published version: what SnapStart snapshots (and what the API runs either way).
    assert "${ReportFunctionAliaslive}" in integration["uri"]["Fn::Sub"]
    assert cfn["Resources"]["ReportFunctionAliaslive"]["Properties"]["FunctionName"] == {"Ref": "ReportFunction"}


def test_access_logs_are_json_lines_in_their_own_log_group(cfn: dict[str, Any]) -> None:
    _, stage = the_one(cfn, "AWS::ApiGateway::Stage")
    setting = stage["Properties"]["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    # $context.error.messageString is already a quoted JSON string; every other variable sits inside quotes.
    line = setting["Format"].replace("$context.error.messageString", '"an \\"error\\""')
    record = json.loads(re.sub(r"\$context\.[A-Za-z.]+", "x", line))
    assert {"requestId", "status", "apiKeyId", "principalId", "errorMessage"} <= record.keys()
    assert cfn["Resources"]["ApiAccessLogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# --- functions, layer, permissions ----------------------------------------------------------------------------


def test_every_function_runs_python312_on_the_architecture_parameter(cfn: dict[str, Any]) -> None:
    functions = resources(cfn, "AWS::Lambda::Function")
    assert {"ReportFunction", "AuthorizerFunction", "MigrateFunction"} <= functions.keys()
    _, layer = the_one(cfn, "AWS::Lambda::LayerVersion")
    layer_name = next(name for name in cfn["Resources"] if name.startswith("CommonLayer"))
    for name, function in functions.items():
        properties = function["Properties"]
        assert properties["Runtime"] == "python3.12", name
        assert properties["Architectures"] == [{"Ref": "Architecture"}], name
        assert properties["TracingConfig"] == {"Mode": "Active"}, name
        assert {"Ref": layer_name} in properties["Layers"], name
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    architecture = cfn["Parameters"]["Architecture"]
    assert architecture["Default"] == "arm64"
    assert sorted(architecture["AllowedValues"]) == ["arm64", "x86_64"]


def test_layer_is_built_by_sam_for_the_architecture_parameter(sam_venv: Path) -> None:
    """Metadata is not part of the transform's output: read it from the SAM template itself."""
    from template.samhelpers import run

    done = run(
        [
            sam_venv / "bin" / "python",
            "-c",
            "import json,sys; from samtranslator.yaml_helper import yaml_parse; "
            "print(json.dumps(yaml_parse(open(sys.argv[1]).read())['Resources']['CommonLayer']))",
            REPO_ROOT / "template.yaml",
        ]
    )
    layer = json.loads(done.stdout)
    assert layer["Properties"]["ContentUri"] == "layers/common/"
    assert layer["Metadata"] == {"BuildMethod": "python3.12", "BuildArchitecture": {"Ref": "Architecture"}}


def test_powertools_is_configured_on_every_function(cfn: dict[str, Any]) -> None:
    for name, function in resources(cfn, "AWS::Lambda::Function").items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["POWERTOOLS_SERVICE_NAME"] == "k6-experiments", name
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "K6Experiments", name
        assert variables["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}, name


def test_no_iam_statement_allows_every_action(cfn: dict[str, Any]) -> None:
    found = list(statements(cfn))
    assert found, "no inline IAM statements at all: the secret permission is missing"
    for name, statement in found:
        for action in as_list(statement["Action"]):
            assert action != "*" and not action.endswith(":*"), f"{name} allows {action}"


def test_secret_permission_is_scoped_to_the_secret_parameter(cfn: dict[str, Any]) -> None:
    secret_statements = [
        (name, statement)
        for name, statement in statements(cfn)
        if any(str(action).startswith("secretsmanager:") for action in as_list(statement["Action"]))
    ]
    assert {name for name, _ in secret_statements} == {f"{name}Role" for name in database_functions(cfn)}
    for name, statement in secret_statements:
        assert statement["Effect"] == "Allow"
        assert as_list(statement["Action"]) == ["secretsmanager:GetSecretValue"], name
        assert [plain_ref(resource) for resource in as_list(statement["Resource"])] == [{"Ref": "DbSecretArn"}]


def test_database_functions_run_in_the_vpc_with_the_secret_and_proxy_settings(cfn: dict[str, Any]) -> None:
    for name in database_functions(cfn):
        properties = cfn["Resources"][name]["Properties"]
        assert properties["VpcConfig"] == {
            "SubnetIds": {"Ref": "SubnetIds"},
            "SecurityGroupIds": {"Ref": "SecurityGroupIds"},
        }
        variables = properties["Environment"]["Variables"]
        for variable, parameter in DATABASE_VARIABLES.items():
            assert variables[variable] == {"Ref": parameter}, (name, variable)
        assert variables["DATABASE_URL"] == ""  # declared for `sam local --env-vars` only
        role = cfn["Resources"][f"{name}Role"]["Properties"]
        assert any("AWSLambdaVPCAccessExecutionRole" in str(arn) for arn in role["ManagedPolicyArns"])
    authorizer = cfn["Resources"]["AuthorizerFunction"]["Properties"]
    assert "VpcConfig" not in authorizer and "DB_SECRET_ARN" not in authorizer["Environment"]["Variables"]


# --- migrations at deploy -------------------------------------------------------------------------------------


def test_migrations_run_as_a_custom_resource_that_cannot_hang_the_stack(cfn: dict[str, Any]) -> None:
    resource = cfn["Resources"]["DatabaseMigrations"]
    properties = resource["Properties"]
    [alias_name] = of_function(cfn, "AWS::Lambda::Alias", "MigrateFunction")
    [version_name] = of_function(cfn, "AWS::Lambda::Version", "MigrateFunction")
    assert properties["ServiceToken"] == {"Ref": alias_name}  # stable: ServiceToken cannot be updated
    # A new function version (new code or SQL) or another database changes a property -> an Update -> migrate.
    assert properties["CodeVersion"] == {"Ref": version_name}
    for parameter in ("DbSecretArn", "DbHost", "DbPort", "DbName"):
        assert properties[parameter] == {"Ref": parameter}
    timeout = cfn["Resources"]["MigrateFunction"]["Properties"]["Timeout"]
    assert timeout < properties["ServiceTimeout"] <= 900
    _, invoke_config = the_one(cfn, "AWS::Lambda::EventInvokeConfig")
    assert invoke_config["Properties"]["FunctionName"] == {"Ref": "MigrateFunction"}
    assert invoke_config["Properties"]["Qualifier"] == "live"
    assert invoke_config["Properties"]["MaximumRetryAttempts"] == 0  # one invocation, one response
    assert "DatabaseMigrations" in as_list(cfn["Resources"]["ReportFunction"].get("DependsOn", []))


# --- alarms, outputs, configuration -----------------------------------------------------------------------------


def test_alarms_watch_api_5xx_and_function_errors(cfn: dict[str, Any]) -> None:
    alarms = resources(cfn, "AWS::CloudWatch::Alarm").values()
    _, api = the_one(cfn, "AWS::ApiGateway::RestApi")
    watched = {
        (alarm["Properties"]["Namespace"], alarm["Properties"]["MetricName"]): {
            d["Name"]: d["Value"] for d in alarm["Properties"]["Dimensions"]
        }
        for alarm in alarms
    }
    assert watched[("AWS/ApiGateway", "5XXError")] == {"ApiName": api["Properties"]["Name"], "Stage": {"Ref": "Stage"}}
    lambda_errors = [
        {d["Name"]: d["Value"] for d in alarm["Properties"]["Dimensions"]}
        for alarm in alarms
        if alarm["Properties"]["MetricName"] == "Errors"
    ]
    # Every function behind the API (the authorizer included: when it fails, every request is a 500).
    api_functions = {"AuthorizerFunction"} | {
        name
        for name, function in resources(cfn, "AWS::Lambda::Function").items()
        for _, _, op in methods(cfn)
        if re.search(rf"\$\{{{name}(\.Arn|Alias\w+)\}}", str(op.get("x-amazon-apigateway-integration", {})))
    }
    assert "ReportFunction" in api_functions
    for name in api_functions:
        assert {"FunctionName": {"Ref": name}} in lambda_errors, f"no Errors alarm for {name}"


def test_outputs_give_the_endpoint_the_key_id_and_the_command_for_its_value(cfn: dict[str, Any]) -> None:
    outputs = cfn["Outputs"]
    key_name, _ = the_one(cfn, "AWS::ApiGateway::ApiKey")
    assert outputs["ApiKeyId"]["Value"] == {"Ref": key_name}
    assert outputs["ApiKeyValueCommand"]["Value"] == {
        "Fn::Sub": f"aws apigateway get-api-key --api-key ${{{key_name}}} --include-value --query value --output text"
    }
    assert outputs["ApiUrl"]["Value"] == {
        "Fn::Sub": "https://${ExperimentsApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}"
    }


def test_samconfig_has_dev_and_prod_with_the_same_build_and_deploy_settings() -> None:
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    stacks = set()
    for env in ("default", "prod"):
        stacks.add(config[env]["global"]["parameters"]["stack_name"])
        overrides = dict(
            pair.split("=", 1) for pair in config[env]["global"]["parameters"]["parameter_overrides"].split()
        )
        assert overrides["Architecture"] in {"arm64", "x86_64"}
        assert config[env]["build"]["parameters"] == {"cached": True, "parallel": True}
        deploy = config[env]["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM" and deploy["resolve_s3"] is True
    assert len(stacks) == 2


def test_local_invoke_env_file_only_sets_variables_the_template_declares(cfn: dict[str, Any]) -> None:
    """`sam local invoke --env-vars` silently ignores variables a function does not declare."""
    env_file = json.loads((REPO_ROOT / "events" / "env.json").read_text(encoding="utf-8"))
    assert "DATABASE_URL" in env_file["ReportFunction"]
    for function, variables in env_file.items():
        declared = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert set(variables) <= set(declared), f"{function}: {set(variables) - set(declared)} are not declared"
