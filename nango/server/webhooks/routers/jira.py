"""Jira Cloud webhooks.

Only webhooks an admin registers with a secret are signed (WebSub style, `X-Hub-Signature:
sha256=<hex HMAC-SHA256 of the raw body>`); those an OAuth app registers through the REST API are
not. So: with a webhook secret on the integration the signature is required and checked; without
one the request is accepted unverified. Jira sends no signed timestamp, so no replay check.

The site names the connection: a `self` link through the API gateway
(`https://api.atlassian.com/ex/jira/<cloudId>/…`) gives connection_config `cloudId`, a site link
(`https://<site>.atlassian.net/…`) gives `baseUrl`. The event type is `webhookEvent`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from nango.errors import InvalidBody
from nango.server.webhooks.routers.base import (
    ConnectionIdentifier,
    IncomingRequest,
    IntegrationSecrets,
    InvalidSignature,
    RoutedEvent,
    RoutingResult,
    dig,
    hex_hmac,
    require_signature,
    same,
    text,
)

_GATEWAY = re.compile(r"^https://api\.atlassian\.com/ex/jira/([0-9a-fA-F-]{8,64})/")
# where a Jira event carries a link to its site, in order of preference
_SELF_LINKS = (
    "issue.self",
    "comment.self",
    "worklog.self",
    "project.self",
    "version.self",
    "sprint.self",
    "board.self",
    "user.self",
)


def verify(request: IncomingRequest, secrets: IntegrationSecrets) -> bool:
    if not secrets.webhook_secret:
        return False
    given = require_signature(request, "x-hub-signature")
    if not same("sha256=" + hex_hmac(secrets.webhook_secret, request.body), given):
        raise InvalidSignature("X-Hub-Signature does not match the body")
    return True


def site(event: Mapping[str, Any]) -> ConnectionIdentifier | None:
    for path in _SELF_LINKS:
        link = dig(event, path)
        if not isinstance(link, str):
            continue
        gateway = _GATEWAY.match(link)
        if gateway:
            return ConnectionIdentifier("cloudId", gateway.group(1))
        parts = urlsplit(link)
        if parts.scheme == "https" and parts.hostname:
            return ConnectionIdentifier("baseUrl", f"https://{parts.hostname}")
    return None


def route(request: IncomingRequest, secrets: IntegrationSecrets) -> RoutingResult:
    verified = verify(request, secrets)
    payload = request.payload
    batch = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(event, Mapping) for event in batch):
        raise InvalidBody("the Jira body must be a JSON object")
    events = tuple(RoutedEvent(site(event), text(event.get("webhookEvent")), event) for event in batch)
    return RoutingResult(events=events, verified=verified)
