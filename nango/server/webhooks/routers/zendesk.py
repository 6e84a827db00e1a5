"""Zendesk webhooks.

`X-Zendesk-Webhook-Signature` is base64 HMAC-SHA256 of `{X-Zendesk-Webhook-Signature-Timestamp}{raw
body}` with the webhook's signing secret (the integration's webhook secret; set the same secret on
every account's webhook when creating them through the API). Zendesk documents no tolerance for the
timestamp, so none is applied beyond the signature covering it.

Event-subscription webhooks carry `account_id` (connection_config `accountId`); a trigger webhook
with a body of the customer's design names no account and goes to every connection of the
integration. The event type is `type` (e.g. `zen:event-type:ticket.created`). Without a secret the
request is accepted unverified.
"""

from __future__ import annotations

from collections.abc import Mapping

from nango.server.webhooks.routers.base import (
    IncomingRequest,
    IntegrationSecrets,
    InvalidSignature,
    RoutingResult,
    base64_hmac,
    by,
    one_event,
    require_signature,
    same,
)


def verify(request: IncomingRequest, secrets: IntegrationSecrets) -> bool:
    if not secrets.webhook_secret:
        return False
    given = require_signature(request, "x-zendesk-webhook-signature")
    timestamp = require_signature(request, "x-zendesk-webhook-signature-timestamp")
    if not same(base64_hmac(secrets.webhook_secret, timestamp.encode() + request.body), given):
        raise InvalidSignature("X-Zendesk-Webhook-Signature does not match the request")
    return True


def route(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    verified = verify(request, secrets)
    payload = request.payload if isinstance(request.payload, Mapping) else {}
    account = by("accountId", payload.get("account_id"))
    return one_event(request, account, payload.get("type"), verified=verified, all_connections=account is None)
