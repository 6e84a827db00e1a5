"""Shopify webhooks.

`X-Shopify-Hmac-Sha256` is base64 HMAC-SHA256 of the raw body. App webhooks are signed with the
app's client secret; webhooks created in a store's admin with the key shown there, which the
customer sets as the integration's webhook secret (it wins when set). `X-Shopify-Shop-Domain`
(`<store>.myshopify.com`) names the connection (connection_config `subdomain`); the event is
`X-Shopify-Topic`. Shopify sends no signed timestamp. Without any secret the request is accepted
unverified.
"""

from __future__ import annotations

from nango.errors import InvalidHeaders
from nango.server.webhooks.routers.base import (
    IncomingRequest,
    IntegrationSecrets,
    InvalidSignature,
    RoutingResult,
    base64_hmac,
    by,
    one_event,
    require_signature,
    required_header,
    same,
)

_SUFFIX = ".myshopify.com"


def route(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    secret = secrets.webhook_secret or secrets.client_secret
    verified = False
    if secret:
        given = require_signature(request, "x-shopify-hmac-sha256")
        if not same(base64_hmac(secret, request.body), given):
            raise InvalidSignature("X-Shopify-Hmac-Sha256 does not match the body")
        verified = True
    domain = required_header(request, "x-shopify-shop-domain").lower()
    if not domain.endswith(_SUFFIX) or len(domain) == len(_SUFFIX):
        raise InvalidHeaders("X-Shopify-Shop-Domain must be <store>.myshopify.com")
    store = domain[: -len(_SUFFIX)]
    return one_event(request, by("subdomain", store), request.header("x-shopify-topic"), verified=verified)
