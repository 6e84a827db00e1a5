"""Linear webhooks.

Linear signs the raw body with the webhook's signing secret (the integration's webhook secret):
`Linear-Signature: <hex HMAC-SHA256>`; the body's `webhookTimestamp` (ms) must be within a minute of
now, as Linear recommends, or the request is refused as a replay. The workspace (`organizationId`)
names the connection (connection_config `organizationId`); the event type is `type` (Issue,
Comment, …). Without a secret the request is accepted unverified.
"""

from __future__ import annotations

from nango.server.webhooks.routers.base import (
    IncomingRequest,
    IntegrationSecrets,
    InvalidSignature,
    RoutingResult,
    by,
    check_age,
    hex_hmac,
    json_object,
    one_event,
    require_signature,
    same,
)

TOLERANCE_SECONDS = 60.0


def route(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    verified = False
    if secrets.webhook_secret:
        given = require_signature(request, "linear-signature")
        if not same(hex_hmac(secrets.webhook_secret, request.body), given.lower()):
            raise InvalidSignature("Linear-Signature does not match the body")
        verified = True
    payload = json_object(request)
    if verified:
        check_age(payload.get("webhookTimestamp"), request.now, tolerance=TOLERANCE_SECONDS, unit=0.001)
    return one_event(
        request, by("organizationId", payload.get("organizationId")), payload.get("type"), verified=verified
    )
