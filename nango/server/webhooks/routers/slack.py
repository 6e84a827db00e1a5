"""Slack Events API, interactivity and slash commands.

Slack signs `v0:{X-Slack-Request-Timestamp}:{raw body}` with the app's signing secret (the
integration's webhook secret): `X-Slack-Signature: v0=<hex HMAC-SHA256>`. A timestamp more than five
minutes from now is refused (replay). `url_verification` is answered with its challenge and nothing
else happens. The workspace (`team_id`, or `team.id` in interactive payloads) names the connection,
stored from the OAuth answer as connection_config `team.id`.

Without a signing secret on the integration the request is accepted unverified, as Nango does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nango.errors import InvalidBody
from nango.server.webhooks.routers.base import (
    FIVE_MINUTES,
    IncomingRequest,
    IntegrationSecrets,
    InvalidSignature,
    RoutedEvent,
    RoutingResult,
    by,
    check_age,
    dig,
    hex_hmac,
    require_signature,
    same,
    text,
)


def verify(request: IncomingRequest, secrets: IntegrationSecrets) -> bool:
    if not secrets.webhook_secret:
        return False
    timestamp = require_signature(request, "x-slack-request-timestamp")
    check_age(timestamp, request.now, tolerance=FIVE_MINUTES)
    given = require_signature(request, "x-slack-signature")
    basestring = b"v0:" + timestamp.encode() + b":" + request.body
    if not same("v0=" + hex_hmac(secrets.webhook_secret, basestring), given):
        raise InvalidSignature("X-Slack-Signature does not match the request")
    return True


def _payload(request: IncomingRequest) -> Mapping[str, Any]:
    payload = request.payload
    if not isinstance(payload, Mapping):
        raise InvalidBody("the Slack request must be a JSON object or a form")
    # interactivity posts a form whose `payload` field is the JSON event
    embedded = payload.get("payload")
    if isinstance(embedded, str):
        try:
            payload = json.loads(embedded)
        except ValueError:
            raise InvalidBody("the form's payload field is not JSON") from None
        if not isinstance(payload, Mapping):
            raise InvalidBody("the form's payload field must be a JSON object")
    return payload


def route(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    verified = verify(request, secrets)
    payload = _payload(request)
    if payload.get("type") == "url_verification":
        return RoutingResult(
            events=(), verified=verified, response={"challenge": payload.get("challenge")}, forward=False
        )
    team = payload.get("team_id") or dig(payload, "team.id")
    event_type = dig(payload, "event.type") or payload.get("type") or payload.get("command")
    event = RoutedEvent(by("team.id", team), text(event_type), payload)
    return RoutingResult(events=(event,), verified=verified)
