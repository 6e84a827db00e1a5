"""Jira router: admin webhooks with a secret are signed WebSub-style
(https://developer.atlassian.com/cloud/jira/platform/webhooks/#secure-admin-webhooks); others are not."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from nango.server.webhooks.routers import ROUTERS, ConnectionIdentifier, IncomingRequest, IntegrationSecrets
from nango.server.webhooks.routers.base import InvalidSignature

route = ROUTERS["jiraWebhookRouting"]
SECRET = "jira-admin-webhook-secret"
CLOUD_ID = "11223344-a1b2-3b33-c444-def123456789"


def jira_request(payload: Any, *, secret: str | None = SECRET) -> IncomingRequest:
    body = json.dumps(payload).encode()
    headers = {"x-atlassian-webhook-identifier": "1"}
    if secret:
        headers["x-hub-signature"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return IncomingRequest("POST", "https://nango.example/webhook/e/k", headers, body, payload, {}, time.time())


def test_a_gateway_link_names_the_cloud_id() -> None:
    payload = {
        "webhookEvent": "jira:issue_created",
        "issue": {"self": f"https://api.atlassian.com/ex/jira/{CLOUD_ID}/rest/api/2/issue/10001"},
    }
    result = route(jira_request(payload), IntegrationSecrets(SECRET))
    assert result.verified
    assert result.events[0].identifier == ConnectionIdentifier("cloudId", CLOUD_ID)
    assert result.events[0].event_type == "jira:issue_created"


def test_a_site_link_names_the_base_url() -> None:
    payload = {
        "webhookEvent": "comment_created",
        "comment": {"self": "https://acme.atlassian.net/rest/api/2/issue/1/comment/2"},
    }
    result = route(jira_request(payload), IntegrationSecrets(SECRET))
    assert result.events[0].identifier == ConnectionIdentifier("baseUrl", "https://acme.atlassian.net")


def test_unsigned_webhooks_are_accepted_only_without_a_secret() -> None:
    payload = {"webhookEvent": "jira:issue_updated"}
    assert not route(jira_request(payload, secret=None), IntegrationSecrets(None)).verified
    with pytest.raises(InvalidSignature):
        route(jira_request(payload, secret=None), IntegrationSecrets(SECRET))
