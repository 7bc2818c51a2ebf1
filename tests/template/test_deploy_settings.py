"""The template's deploy-time settings: where the database is, how TLS is checked, what bounds a flood.

RDS-managed secrets hold only `username` and `password` (issue 11), so the database name is a parameter; TLS
verifies the server either against the RDS CA bundle shipped in the layer or against public roots (RDS Proxy);
a customer-managed KMS key gets exactly kms:Decrypt through Secrets Manager; the stage throttles every request,
valid key or not, and the functions that hold database connections have a bounded concurrency (issue 10).
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from template.samhelpers import REPO_ROOT
from template.test_template import database_functions, resources, statements, the_one

LAYER_CERTS = "/opt/python/certs/"  # layers/common/certs/ as the layer ships it (sam build: CommonLayer/python)
AL2023_ROOTS = "/etc/pki/tls/certs/ca-bundle.crt"
# The API functions; the migration function holds a connection only during a deploy (one at a time).
API_DATABASE_FUNCTIONS = {"ReportFunction": "ReportConcurrency", "QueryFunction": "QueryConcurrency"}


def variables(cfn: dict[str, Any], function: str) -> dict[str, Any]:
    return cfn["Resources"][function]["Properties"]["Environment"]["Variables"]


def condition_is_set(cfn: dict[str, Any], condition: str, parameter: str, unset: Any) -> None:
    """`condition` is true exactly when `parameter` is not `unset`."""
    assert cfn["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, unset]}]}


# --- where the database is ------------------------------------------------------------------------------------


def test_database_name_is_a_required_parameter_because_rds_managed_secrets_hold_none(cfn: dict[str, Any]) -> None:
    parameter = cfn["Parameters"]["DbName"]
    assert "Default" not in parameter  # no silent fallback to the `postgres` database
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("app") and pattern.fullmatch("prisma_backend")
    assert not pattern.fullmatch("") and not pattern.fullmatch("db; drop")
    for name in database_functions(cfn):
        assert variables(cfn, name)["DB_NAME"] == {"Ref": "DbName"}, name


def test_secret_parameter_says_what_an_rds_managed_secret_holds(cfn: dict[str, Any]) -> None:
    text = " ".join(cfn["Parameters"]["DbSecretArn"]["Description"].split())
    assert "`username` and `password`" in text and "RDS manages" in text
    assert "the format RDS uses" not in text
    assert "Required with an RDS-managed secret" in " ".join(cfn["Parameters"]["DbHost"]["Description"].split())
    port = cfn["Parameters"]["DbPort"]
    assert port["Default"] == ""  # the secret's port, else 5432
    assert re.fullmatch(port["AllowedPattern"], "6432") and not re.fullmatch(port["AllowedPattern"], "0")


def test_proxy_mode_is_a_parameter_told_by_the_endpoint_by_default(cfn: dict[str, Any]) -> None:
    parameter = cfn["Parameters"]["DbProxy"]
    assert parameter["Default"] == "auto" and sorted(parameter["AllowedValues"]) == ["auto", "false", "true"]
    for name in database_functions(cfn):
        assert variables(cfn, name)["DB_PROXY"] == {"Ref": "DbProxy"}, name


# --- TLS --------------------------------------------------------------------------------------------------------


def test_a_ca_bundle_parameter_names_a_file_in_the_layer_else_public_roots(cfn: dict[str, Any]) -> None:
    parameter = cfn["Parameters"]["DbCaBundle"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("global-bundle.pem") and pattern.fullmatch("")
    assert not pattern.fullmatch("../etc/passwd") and not pattern.fullmatch("/etc/ssl/cert.pem")
    condition_is_set(cfn, "HasCaBundle", "DbCaBundle", "")
    for name in database_functions(cfn):
        env = variables(cfn, name)
        assert env["DB_CA_BUNDLE"] == {"Fn::If": ["HasCaBundle", {"Fn::Sub": LAYER_CERTS + "${DbCaBundle}"}, ""]}
        # Public roots (libpq's sslrootcert=system) only without a bundle; tests/template/test_tls.py shows why.
        assert env["SSL_CERT_FILE"] == {"Fn::If": ["HasCaBundle", {"Ref": "AWS::NoValue"}, AL2023_ROOTS]}
    assert (REPO_ROOT / "layers" / "common" / "certs" / "README.md").is_file()  # where the bundle goes


# --- permissions ------------------------------------------------------------------------------------------------


def test_kms_decrypt_is_granted_only_when_a_key_is_named_and_only_through_secrets_manager(
    cfn: dict[str, Any],
) -> None:
    assert cfn["Parameters"]["KmsKeyArn"]["Default"] == ""
    condition_is_set(cfn, "HasKmsKey", "KmsKeyArn", "")
    granted = set()
    for name, role in resources(cfn, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            if "kms:Decrypt" not in str(policy):
                continue
            condition, document, otherwise = policy["Fn::If"]
            assert (condition, otherwise) == ("HasKmsKey", {"Ref": "AWS::NoValue"}), name
            [statement] = document["PolicyDocument"]["Statement"]
            assert statement["Effect"] == "Allow" and statement["Action"] == "kms:Decrypt"
            assert statement["Resource"] == {"Ref": "KmsKeyArn"}
            assert statement["Condition"] == {
                "StringEquals": {"kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.${AWS::URLSuffix}"}}
            }
            granted.add(name)
    assert granted == {f"{name}Role" for name in database_functions(cfn)}
    assert not any(
        "kms:" in str(statement["Action"]) for _, statement in statements(cfn) if "Condition" not in statement
    )


# --- floods -----------------------------------------------------------------------------------------------------


def test_the_stage_throttles_every_request_before_any_function_runs(cfn: dict[str, Any]) -> None:
    """Usage-plan throttling applies to valid keys only; a keyless flood would run the authorizer unbounded."""
    _, stage = the_one(cfn, "AWS::ApiGateway::Stage")
    [setting] = stage["Properties"]["MethodSettings"]
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")  # every method of every resource
    assert setting["ThrottlingRateLimit"] == {"Ref": "StageRateLimit"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "StageBurstLimit"}
    parameters = cfn["Parameters"]
    # 100 requests per second and a burst of 200 for the whole stage, above one key's 20 and 40.
    assert (parameters["StageRateLimit"]["Default"], parameters["StageBurstLimit"]["Default"]) == (100, 200)
    assert parameters["StageRateLimit"]["Default"] >= parameters["ThrottleRateLimit"]["Default"]
    assert parameters["StageBurstLimit"]["Default"] >= parameters["ThrottleBurstLimit"]["Default"]


def test_functions_holding_database_connections_have_reserved_concurrency(cfn: dict[str, Any]) -> None:
    assert set(API_DATABASE_FUNCTIONS) | {"MigrateFunction"} == database_functions(cfn)
    defaults = {}
    for name, parameter in API_DATABASE_FUNCTIONS.items():
        condition = f"Reserve{parameter}"
        condition_is_set(cfn, condition, parameter, 0)  # 0 = no reservation, for accounts that cannot reserve
        properties = cfn["Resources"][name]["Properties"]
        assert properties["ReservedConcurrentExecutions"] == {
            "Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]
        }
        defaults[name] = cfn["Parameters"][parameter]["Default"]
    # By default this stack holds at most 10 + 5 + 1 (migrations, during a deploy) = 16 database connections.
    assert defaults == {"ReportFunction": 10, "QueryFunction": 5}
    assert sum(defaults.values()) + 1 == 16
    assert "ReservedConcurrentExecutions" not in cfn["Resources"]["AuthorizerFunction"]["Properties"]
    # Reaching the reservation is an alarm: the function was throttled, API Gateway answered 500.
    throttles = {
        alarm["Properties"]["Dimensions"][0]["Value"]["Ref"]
        for alarm in resources(cfn, "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"]["MetricName"] == "Throttles"
    }
    assert throttles == set(API_DATABASE_FUNCTIONS)


# --- SnapStart, logging role ------------------------------------------------------------------------------------


def test_snapstart_is_an_option_of_the_api_functions_off_by_default(cfn: dict[str, Any]) -> None:
    assert cfn["Parameters"]["SnapStart"]["Default"] == "false"
    assert cfn["Conditions"]["UseSnapStart"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "true"]}
    for name in API_DATABASE_FUNCTIONS:
        properties = cfn["Resources"][name]["Properties"]
        assert properties["SnapStart"] == {"ApplyOn": {"Fn::If": ["UseSnapStart", "PublishedVersions", "None"]}}
        [alias] = [
            res
            for res in resources(cfn, "AWS::Lambda::Alias").values()
            if res["Properties"]["FunctionName"] == {"Ref": name}
        ]
        assert alias["Properties"]["Name"] == "live"  # SnapStart applies to published versions only


def test_prod_leaves_the_account_wide_api_gateway_logging_role_alone(cfn: dict[str, Any]) -> None:
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text(encoding="utf-8"))

    def overrides(env: str) -> dict[str, str]:
        text = config[env]["global"]["parameters"]["parameter_overrides"]
        return dict(pair.split("=", 1) for pair in text.split())

    assert overrides("prod")["CreateApiGatewayLoggingRole"] == "false"
    assert "CreateApiGatewayLoggingRole" not in overrides("default")  # dev: the template's default, "true"
    assert cfn["Parameters"]["CreateApiGatewayLoggingRole"]["Default"] == "true"
    assert "REPLACING" in cfn["Parameters"]["CreateApiGatewayLoggingRole"]["Description"]


def test_readme_documents_each_deploy_caveat() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    deploy = readme[readme.index("## Deploy to AWS") : readme.index("## Tests")]
    for needed in (
        "DbName",
        "DbProxy",
        "DbCaBundle",
        "sslrootcert=system",
        "SSL_CERT_FILE",
        "KmsKeyArn",
        "kms:Decrypt",
        "StageRateLimit",
        "ReportConcurrency",
        "max_connections",
        "SnapStart",
        "CreateApiGatewayLoggingRole",
        "UPDATE_ROLLBACK_FAILED",
        "continue-update-rollback",
        "--resources-to-skip",
    ):
        assert needed in deploy, f"README's Deploy to AWS section does not mention {needed}"


def test_pydantic_skips_its_plugin_scan_in_every_function(cfn: dict[str, Any]) -> None:
    """No pydantic plugin is used; the scan of every package's entry points would only cost cold start time."""
    for name in resources(cfn, "AWS::Lambda::Function"):
        assert variables(cfn, name)["PYDANTIC_DISABLE_PLUGINS"] == "__all__", name
