"""Stripe router: `Stripe-Signature` as Stripe documents it
(https://docs.stripe.com/webhooks#verify-manually)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from nango.server.webhooks.routers import ROUTERS, ConnectionIdentifier, IncomingRequest, IntegrationSecrets
from nango.server.webhooks.routers.base import InvalidSignature

route = ROUTERS["stripeWebhookRouting"]
SECRET = "whsec_test_0123456789abcdef"


def stripe_request(
    payload: Any, *, age_seconds: float = 0, secret: str = SECRET, extra_v1: str = ""
) -> IncomingRequest:
    body = json.dumps(payload).encode()
    t = int(time.time() - age_seconds)
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    header = (
        f"t={t},v1={v1}"
        + (f",v1={extra_v1}" if extra_v1 else "")
        + ",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    )
    return IncomingRequest(
        "POST", "https://nango.example/webhook/e/k", {"stripe-signature": header}, body, payload, {}, time.time()
    )


def test_a_connected_account_event_is_routed_by_account() -> None:
    payload = {"id": "evt_1", "type": "invoice.paid", "account": "acct_123", "data": {"object": {}}}
    result = route(stripe_request(payload, extra_v1="0" * 64), IntegrationSecrets(SECRET))
    assert result.verified
    (event,) = result.events
    assert event.identifier == ConnectionIdentifier("accountId", "acct_123")
    assert not event.all_connections
    assert event.event_type == "invoice.paid"


def test_a_platform_event_goes_to_every_connection() -> None:
    result = route(stripe_request({"id": "evt_2", "type": "charge.succeeded"}), IntegrationSecrets(SECRET))
    assert result.events[0].identifier is None
    assert result.events[0].all_connections


def test_a_replayed_event_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="timestamp"):
        route(stripe_request({"type": "x"}, age_seconds=301), IntegrationSecrets(SECRET))


@pytest.mark.parametrize("header", ["", "t=1", "v1=abc", "garbage"])
def test_a_malformed_header_is_refused(header: str) -> None:
    request = stripe_request({"type": "x"})
    bad = IncomingRequest(
        "POST", request.url, {"stripe-signature": header}, request.body, request.payload, {}, request.now
    )
    with pytest.raises(InvalidSignature):
        route(bad, IntegrationSecrets(SECRET))


def test_a_signature_with_another_secret_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        route(stripe_request({"type": "x"}, secret="whsec_other"), IntegrationSecrets(SECRET))
