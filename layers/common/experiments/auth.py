"""Which API key a request presents: one rule for the deployed authorizer and the local API.

A caller may send the key as `x-api-key: <key>` (what API Gateway and the reporter use) or as
`Authorization: Bearer <key>` (what the original design doc also promised). Header names are compared
case-insensitively; when both are present, `x-api-key` wins. Whether the key is *valid* is not decided here:
API Gateway checks it against the usage plan (the authorizer hands it over as `usageIdentifierKey`), and the
local API compares it with its own key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
BEARER_SCHEME = "bearer"


def presented_api_key(headers: Mapping[str, str] | None) -> str | None:
    """The key from `x-api-key`, else from `Authorization: Bearer <key>`; None when neither carries one.

    Blank values count as absent, so an empty `x-api-key` does not hide a valid bearer token. The scheme name
    is case-insensitive (RFC 9110 §11.1); anything other than a single token after `Bearer` is not a key.
    """
    if not headers:
        return None
    lowered = {name.lower(): value for name, value in headers.items() if isinstance(value, str)}
    api_key = lowered.get(API_KEY_HEADER, "").strip()
    if api_key:
        return api_key
    scheme, _, credentials = lowered.get(AUTHORIZATION_HEADER, "").strip().partition(" ")
    token = credentials.strip()
    if scheme.lower() != BEARER_SCHEME or not token or any(char.isspace() for char in token):
        return None
    return token


def caller_id(api_key_id: str | None, headers: Mapping[str, str] | None) -> str:
    """Who is calling, for scoping Idempotency-Keys: API Gateway's id of the API key (`identity.apiKeyId`),
    else the SHA-256 of the key presented (never the key itself), else `anonymous`."""
    if api_key_id:
        return api_key_id
    key = presented_api_key(headers)
    return "key-sha256:" + hashlib.sha256(key.encode()).hexdigest() if key else "anonymous"
