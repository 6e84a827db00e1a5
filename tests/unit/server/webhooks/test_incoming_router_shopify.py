"""Shopify router: `X-Shopify-Hmac-Sha256` as Shopify documents it
(https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from nango.errors import InvalidHeaders
from nango.server.webhooks.routers import ROUTERS, ConnectionIdentifier, IncomingRequest, IntegrationSecrets
from nango.server.webhooks.routers.base import InvalidSignature

route = ROUTERS["shopifyWebhookRouting"]
CLIENT_SECRET = "shpss_0123456789"


def shopify_request(
    payload: Any, *, secret: str = CLIENT_SECRET, shop: str = "acme-store.myshopify.com"
) -> IncomingRequest:
    body = json.dumps(payload).encode()
    headers = {
        "x-shopify-hmac-sha256": base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode(),
        "x-shopify-topic": "orders/create",
        "x-shopify-shop-domain": shop,
    }
    return IncomingRequest("POST", "https://nango.example/webhook/e/k", headers, body, payload, {}, time.time())


def test_an_app_webhook_signed_with_the_client_secret_is_routed_by_store() -> None:
    result = route(shopify_request({"id": 1}), IntegrationSecrets(None, CLIENT_SECRET))
    assert result.verified
    assert result.events[0].identifier == ConnectionIdentifier("subdomain", "acme-store")
    assert result.events[0].event_type == "orders/create"


def test_the_webhook_secret_wins_over_the_client_secret() -> None:
    request = shopify_request({"id": 1}, secret="admin-created-key")
    assert route(request, IntegrationSecrets("admin-created-key", CLIENT_SECRET)).verified
    with pytest.raises(InvalidSignature):
        route(request, IntegrationSecrets(None, CLIENT_SECRET))


@pytest.mark.parametrize("shop", ["", "acme.example.com", ".myshopify.com"])
def test_a_missing_or_foreign_shop_domain_is_refused(shop: str) -> None:
    with pytest.raises(InvalidHeaders):
        route(shopify_request({"id": 1}, shop=shop), IntegrationSecrets(None, CLIENT_SECRET))
