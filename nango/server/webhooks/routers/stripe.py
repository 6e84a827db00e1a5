"""Stripe webhooks.

`Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=…]`: each v1 is HMAC-SHA256 of `{t}.{raw body}`
with the endpoint's signing secret (`whsec_…`, the integration's webhook secret); one must match and
`t` must be within five minutes of now (Stripe's default tolerance), or the request is refused.

Events of a connected account carry `account` (connection_config `accountId`); an event of the
platform account itself names no account and goes to every connection of the integration. The event
type is `type`. Without a secret the request is accepted unverified.
"""

from __future__ import annotations

from nango.server.webhooks.routers.base import (
    FIVE_MINUTES,
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


def verify(request: IncomingRequest, secrets: IntegrationSecrets) -> bool:
    if not secrets.webhook_secret:
        return False
    header = require_signature(request, "stripe-signature")
    timestamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidSignature("Stripe-Signature has no timestamp or no v1 signature")
    check_age(timestamp, request.now, tolerance=FIVE_MINUTES)
    expected = hex_hmac(secrets.webhook_secret, timestamp.encode() + b"." + request.body)
    # every candidate is compared, so the time taken does not say which one matched
    if not any([same(expected, signature) for signature in signatures]):
        raise InvalidSignature("no v1 signature in Stripe-Signature matches the request")
    return True


def route(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    verified = verify(request, secrets)
    payload = json_object(request)
    account = by("accountId", payload.get("account"))
    return one_event(request, account, payload.get("type"), verified=verified, all_connections=account is None)
