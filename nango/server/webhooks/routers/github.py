"""GitHub webhooks: OAuth-app (repository / organization hooks) and GitHub App deliveries.

GitHub signs the raw body with the hook's secret: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`;
the event is `X-GitHub-Event`. GitHub sends no timestamp, so a replay cannot be told apart (a
receiver may de-duplicate by `X-GitHub-Delivery`, which is forwarded).

Without a webhook secret on the integration the delivery is accepted unverified, as Nango does.
"""

from __future__ import annotations

from nango.server.webhooks.routers.base import (
    IncomingRequest,
    IntegrationSecrets,
    InvalidSignature,
    RoutingResult,
    by,
    dig,
    hex_hmac,
    json_object,
    one_event,
    require_signature,
    same,
)


def verify(request: IncomingRequest, secrets: IntegrationSecrets) -> bool:
    """True when checked, False when there is no secret to check with; InvalidSignature otherwise."""
    if not secrets.webhook_secret:
        return False
    given = require_signature(request, "x-hub-signature-256")
    if not same("sha256=" + hex_hmac(secrets.webhook_secret, request.body), given):
        raise InvalidSignature("X-Hub-Signature-256 does not match the body")
    return True


def route_oauth_app(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    """A repository or organization hook names no connection: register it with `?connectionId=<id>`
    (the catalog lets that parameter through) to route it; without it the delivery is forwarded
    unwrapped."""
    verified = verify(request, secrets)
    json_object(request)
    identifier = by("connectionId", request.query.get("connectionId"))
    return one_event(request, identifier, request.header("x-github-event"), verified=verified)


def route_app(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    """App deliveries carry the installation; a connection stores it as `installation_id`."""
    verified = verify(request, secrets)
    payload = json_object(request)
    identifier = by("installation_id", dig(payload, "installation.id"))
    return one_event(request, identifier, request.header("x-github-event"), verified=verified)
