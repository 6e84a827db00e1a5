"""Intercom router: notifications signed with the app's client secret
(https://developers.intercom.com/docs/webhooks/setting-up-webhooks#signed-notifications)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from nango.server.webhooks.routers import ROUTERS, ConnectionIdentifier, IncomingRequest, IntegrationSecrets
from nango.server.webhooks.routers.base import InvalidSignature

route = ROUTERS["intercomWebhookRouting"]
CLIENT_SECRET = "intercom-client-secret"


def intercom_request(payload: Any, *, secret: str = CLIENT_SECRET) -> IncomingRequest:
    body = json.dumps(payload).encode()
    headers = {"x-hub-signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()}
    return IncomingRequest("POST", "https://nango.example/webhook/e/k", headers, body, payload, {}, time.time())


def test_a_notification_is_routed_by_app_id() -> None:
    payload = {"type": "notification_event", "app_id": "abc123", "topic": "conversation.user.created", "data": {}}
    result = route(intercom_request(payload), IntegrationSecrets(None, CLIENT_SECRET))
    assert result.verified
    assert result.events[0].identifier == ConnectionIdentifier("appId", "abc123")
    assert result.events[0].event_type == "conversation.user.created"


def test_a_signature_with_another_secret_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        route(intercom_request({"app_id": "a"}, secret="x"), IntegrationSecrets(None, CLIENT_SECRET))
