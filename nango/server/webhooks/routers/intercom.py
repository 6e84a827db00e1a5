"""Intercom webhooks (notifications).

Intercom signs the raw body with the app's client secret: `X-Hub-Signature: sha1=<hex HMAC-SHA1>`,
with no timestamp. The workspace (`app_id`) names the connection (connection_config `appId`); the
event is `topic`. Without a client secret the request is accepted unverified.
"""

from __future__ import annotations

from nango.server.webhooks.routers.base import (
    IncomingRequest,
    IntegrationSecrets,
    InvalidSignature,
    RoutingResult,
    by,
    hex_hmac,
    json_object,
    one_event,
    require_signature,
    same,
)


def route(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    verified = False
    if secrets.client_secret:
        given = require_signature(request, "x-hub-signature")
        if not same("sha1=" + hex_hmac(secrets.client_secret, request.body, "sha1"), given):
            raise InvalidSignature("X-Hub-Signature does not match the body")
        verified = True
    payload = json_object(request)
    return one_event(request, by("appId", payload.get("app_id")), payload.get("topic"), verified=verified)
