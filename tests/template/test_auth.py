"""Which key a request presents (experiments.auth) and what the authorizer tells API Gateway about it."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from experiments.auth import presented_api_key
from support import LambdaContext, load_function

METHOD_ARN = "arn:aws:execute-api:eu-west-1:123456789012:abc123/dev/POST/experiments/report"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-api-key": "k1"}, "k1"),
        ({"X-API-Key": "k1"}, "k1"),
        ({"Authorization": "Bearer k2"}, "k2"),
        ({"authorization": "bearer k2"}, "k2"),
        ({"AUTHORIZATION": "  Bearer   k2  "}, "k2"),
        ({"x-api-key": "k1", "Authorization": "Bearer k2"}, "k1"),
        ({"x-api-key": "  ", "Authorization": "Bearer k2"}, "k2"),
    ],
)
def test_the_key_comes_from_x_api_key_else_from_the_bearer_token(headers: dict[str, str], expected: str) -> None:
    assert presented_api_key(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"x-api-key": ""},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": "Bearer two tokens"},
        {"Authorization": "Bearerk2"},
        {"x-api-key-extra": "k1"},
    ],
)
def test_no_key_is_presented_without_either_header(headers: dict[str, str] | None) -> None:
    assert presented_api_key(headers) is None


@pytest.fixture
def authorizer() -> ModuleType:
    return load_function("authorizer")


def authorizer_event(headers: dict[str, str] | None) -> dict[str, Any]:
    """A REST API REQUEST authorizer event, as API Gateway sends it."""
    return {
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "resource": "/experiments/report",
        "path": "/experiments/report",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in (headers or {}).items()},
        "queryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"stage": "dev", "requestId": "r-1", "apiId": "abc123", "httpMethod": "POST"},
    }


@pytest.mark.parametrize("headers", [{"x-api-key": "secret-key"}, {"Authorization": "Bearer secret-key"}])
def test_authorizer_hands_the_presented_key_to_api_gateway(authorizer: ModuleType, headers: dict[str, str]) -> None:
    answer = authorizer.lambda_handler(authorizer_event(headers), LambdaContext())

    assert answer["usageIdentifierKey"] == "secret-key"  # API Gateway checks it against the usage plan
    [statement] = answer["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "execute-api:Invoke"
    assert statement["Resource"] == ["arn:aws:execute-api:eu-west-1:123456789012:abc123/dev/*/*"]
    assert "secret-key" not in answer["principalId"]  # the principal shows up in access logs


def test_authorizer_denies_a_request_without_a_key(authorizer: ModuleType) -> None:
    answer = authorizer.lambda_handler(authorizer_event({"Content-Type": "application/json"}), LambdaContext())

    assert "usageIdentifierKey" not in answer
    [statement] = answer["policyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"  # -> ACCESS_DENIED, which the template answers as 403 Forbidden


def test_authorizer_denies_a_request_without_any_header(authorizer: ModuleType) -> None:
    answer = authorizer.lambda_handler(authorizer_event(None), LambdaContext())
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Deny"
