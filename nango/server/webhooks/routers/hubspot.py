"""HubSpot webhooks (app subscriptions): a JSON array of events, each for one HubSpot account.

HubSpot signs with the app's client secret. v3 (preferred, sent with every request):
`X-HubSpot-Signature-v3 = base64(HMAC-SHA256(secret, method + uri + body + timestamp))` with
`X-HubSpot-Request-Timestamp` in milliseconds, refused when more than five minutes old. Older
requests carry only `X-HubSpot-Signature` (`X-HubSpot-Signature-Version` v1: hex SHA-256 of
secret + body; v2: of secret + method + uri + body), which have no timestamp and so no replay check.

Each event is routed on its own by `portalId` (connection_config `portalId`); its type is
`subscriptionType`. Without a client secret the request is accepted unverified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from urllib.parse import unquote

from nango.errors import InvalidBody
from nango.server.webhooks.routers.base import (
    FIVE_MINUTES,
    IncomingRequest,
    IntegrationSecrets,
    InvalidSignature,
    RoutedEvent,
    RoutingResult,
    base64_hmac,
    by,
    check_age,
    require_signature,
    same,
    text,
)

# HubSpot decodes these in the URI before it signs (v3)
_DECODED = ("%3A", "%2F", "%3F", "%40", "%21", "%24", "%27", "%28", "%29", "%2A", "%2C", "%3B")


def _v3_uri(url: str) -> str:
    for encoded in _DECODED:
        url = url.replace(encoded, unquote(encoded)).replace(encoded.lower(), unquote(encoded))
    return url


def verify(request: IncomingRequest, secrets: IntegrationSecrets) -> bool:
    secret = secrets.client_secret
    if not secret:
        return False
    v3 = request.header("x-hubspot-signature-v3")
    if v3:
        timestamp = require_signature(request, "x-hubspot-request-timestamp")
        check_age(timestamp, request.now, tolerance=FIVE_MINUTES, unit=0.001)
        message = (request.method + _v3_uri(request.url)).encode() + request.body + timestamp.encode()
        if not same(base64_hmac(secret, message), v3):
            raise InvalidSignature("X-HubSpot-Signature-v3 does not match the request")
        return True
    given = require_signature(request, "x-hubspot-signature")
    version = (request.header("x-hubspot-signature-version") or "v1").lower()
    if version == "v1":
        source = secret.encode() + request.body
    elif version == "v2":
        source = (secret + request.method + request.url).encode() + request.body
    else:
        raise InvalidSignature(f"unsupported X-HubSpot-Signature-Version {version[:8]}")
    if not same(hashlib.sha256(source).hexdigest(), given.lower()):
        raise InvalidSignature("X-HubSpot-Signature does not match the request")
    return True


def route(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    verified = verify(request, secrets)
    payload = request.payload
    batch = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(event, Mapping) for event in batch):
        raise InvalidBody("the HubSpot body must be an array of event objects")
    events = tuple(
        RoutedEvent(by("portalId", event.get("portalId")), text(event.get("subscriptionType")), event)
        for event in batch
    )
    return RoutingResult(events=events, verified=verified)
