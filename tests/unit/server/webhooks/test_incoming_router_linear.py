"""Linear router: webhook signatures as Linear documents them (https://linear.app/developers/webhooks)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from nango.server.webhooks.routers import ROUTERS, ConnectionIdentifier, IncomingRequest, IntegrationSecrets
from nango.server.webhooks.routers.base import InvalidSignature

route = ROUTERS["linearWebhookRouting"]
SECRET = "lin_wh_secret_0123456789"


def linear_request(payload: Any, *, secret: str = SECRET) -> IncomingRequest:
    body = json.dumps(payload).encode()
    headers = {"linear-signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(), "linear-event": "Issue"}
    return IncomingRequest("POST", "https://nango.example/webhook/e/k", headers, body, payload, {}, time.time())


def event(age_seconds: float = 0) -> dict[str, Any]:
    return {
        "action": "create",
        "type": "Issue",
        "organizationId": "org-1",
        "data": {"id": "i1"},
        "webhookTimestamp": int((time.time() - age_seconds) * 1000),
    }


def test_a_signed_event_is_routed_by_organization() -> None:
    result = route(linear_request(event()), IntegrationSecrets(SECRET))
    assert result.verified
    assert result.events[0].identifier == ConnectionIdentifier("organizationId", "org-1")
    assert result.events[0].event_type == "Issue"


def test_an_event_older_than_a_minute_is_refused_as_a_replay() -> None:
    with pytest.raises(InvalidSignature, match="timestamp"):
        route(linear_request(event(age_seconds=61)), IntegrationSecrets(SECRET))


def test_a_wrong_signature_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        route(linear_request(event(), secret="other"), IntegrationSecrets(SECRET))
