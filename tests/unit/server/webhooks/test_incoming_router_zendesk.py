"""Zendesk router: webhook signatures as Zendesk documents them
(https://developer.zendesk.com/documentation/webhooks/verifying/)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from nango.server.webhooks.routers import ROUTERS, ConnectionIdentifier, IncomingRequest, IntegrationSecrets
from nango.server.webhooks.routers.base import InvalidSignature

route = ROUTERS["zendeskWebhookRouting"]
SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="


def zendesk_request(payload: Any, *, secret: str = SECRET, timestamp: str = "2026-11-27T10:00:00Z") -> IncomingRequest:
    body = json.dumps(payload).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()).decode()
    headers = {"x-zendesk-webhook-signature": signature, "x-zendesk-webhook-signature-timestamp": timestamp}
    return IncomingRequest("POST", "https://nango.example/webhook/e/k", headers, body, payload, {}, time.time())


def test_an_event_subscription_is_routed_by_account() -> None:
    payload = {"type": "zen:event-type:ticket.created", "account_id": 9001, "detail": {"id": "5"}}
    result = route(zendesk_request(payload), IntegrationSecrets(SECRET))
    assert result.verified
    assert result.events[0].identifier == ConnectionIdentifier("accountId", "9001")
    assert result.events[0].event_type == "zen:event-type:ticket.created"


def test_a_trigger_webhook_without_account_goes_to_every_connection() -> None:
    result = route(zendesk_request({"ticket": "1"}), IntegrationSecrets(SECRET))
    assert result.events[0].all_connections


def test_the_timestamp_is_part_of_what_is_signed() -> None:
    request = zendesk_request({"account_id": 1})
    moved = dict(request.headers, **{"x-zendesk-webhook-signature-timestamp": "2026-11-27T10:00:01Z"})
    forged = IncomingRequest("POST", request.url, moved, request.body, request.payload, {}, request.now)
    with pytest.raises(InvalidSignature):
        route(forged, IntegrationSecrets(SECRET))
