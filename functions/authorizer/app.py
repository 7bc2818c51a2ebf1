"""Lambda REQUEST authorizer: take the API key from `x-api-key` or `Authorization: Bearer`, let API Gateway judge it.

The API runs with `ApiKeySourceType: AUTHORIZER`, so API Gateway reads the key from this function's answer
(`usageIdentifierKey`) instead of from the `x-api-key` header, then checks it against the usage plan exactly
as it would a header key: an unknown or disabled key is a 403 `{"message": "Forbidden"}`, and throttling and
the quota apply per key. This function therefore never validates a key; it only finds it (the rule lives in
`experiments.auth`, shared with the local API). A request that presents no key at all is denied here, which
API Gateway answers with the ACCESS_DENIED gateway response, set in the template to the same 403.
"""

import hashlib

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    parse_api_gateway_arn,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from experiments.auth import presented_api_key

logger = Logger()


def principal_for(api_key: str | None) -> str:
    """A stable, non-secret name for the caller (it shows up in access logs as `$context.authorizer.principalId`)."""
    if api_key is None:
        return "anonymous"
    return "key-" + hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:12]


@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    api_key = presented_api_key(event.get("headers"))
    arn = parse_api_gateway_arn(event["methodArn"])
    response = APIGatewayAuthorizerResponse(
        principal_id=principal_for(api_key),
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        usage_identifier_key=api_key,
        partition=arn.partition,
    )
    if api_key is None:
        logger.info("no API key presented", extra={"path": event.get("path"), "method": event.get("httpMethod")})
        response.deny_all_routes()
    else:
        response.allow_all_routes()
    return response.asdict()
