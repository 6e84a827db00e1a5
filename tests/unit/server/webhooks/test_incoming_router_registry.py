"""The router registry and the checks routers share."""

from __future__ import annotations

import time

import pytest

from nango.errors import NangoError
from nango.providers import load_catalog
from nango.server.webhooks.incoming import forwardable_headers
from nango.server.webhooks.routers import ROUTERS, IncomingRequest, IntegrationSecrets, router_for
from nango.server.webhooks.routers.base import InvalidSignature, check_age, text


def test_every_provider_of_the_brief_has_a_router_in_the_catalog() -> None:
    catalog = load_catalog(None)
    for provider in (
        "github",
        "github-app",
        "slack",
        "hubspot",
        "linear",
        "jira",
        "stripe",
        "shopify",
        "zendesk",
        "intercom",
    ):
        entry = catalog.get(provider)
        assert entry is not None, provider
        assert router_for(entry.webhook_routing_script) is not None, provider


def test_a_provider_without_the_field_or_with_an_unknown_router_has_none() -> None:
    assert router_for(None) is None
    assert router_for("salesforceWebhookRouting") is None
    assert set(ROUTERS) >= {"githubAppWebhookRouting", "slackWebhookRouting", "hubspotWebhookRouting"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(123, "123"), (12.0, "12"), (" a ", "a"), ("", None), (None, None), (True, None), ({}, None)],
)
def test_identifiers_are_rendered_as_text(value: object, expected: str | None) -> None:
    assert text(value) == expected


def test_timestamps_are_checked_both_ways() -> None:
    check_age("1000", 1000 + 299, tolerance=300)
    check_age(1_000_000, 1000 - 299, tolerance=300, unit=0.001)
    for bad in ("1000", None, "soon"):
        with pytest.raises(InvalidSignature):
            check_age(bad, 2000, tolerance=300)


def test_forwarded_headers_drop_transport_auth_and_our_own() -> None:
    headers = {
        "host": "h",
        "authorization": "Bearer x",
        "content-type": "application/json",
        "content-length": "2",
        "cookie": "c",
        "user-agent": "GitHub-Hookshot/1",
        "sec-fetch-mode": "cors",
        "proxy-authorization": "p",
        "x-nango-hmac-sha256": "forged",
        "transfer-encoding": "chunked",
        "x-github-event": "push",
        "x-hub-signature-256": "sha256=abc",
    }
    assert forwardable_headers(headers) == {"x-github-event": "push", "x-hub-signature-256": "sha256=abc"}


ODD_PAYLOADS: list[object] = [
    None,
    [],
    [None],
    "text",
    3,
    {},
    {"installation": [1]},
    {"installation": {"id": {"deep": 1}}},
    {"team": [1], "team_id": {"x": 1}, "event": "not an object", "payload": "{not json"},
    {"payload": "[1, 2]"},
    {"issue": {"self": 42}, "webhookEvent": ["x"]},
    {"issue": {"self": "ftp://elsewhere"}},
    {"account": {"id": 1}, "type": 7, "account_id": [1]},
    {"app_id": None, "topic": {"a": 1}},
    {"organizationId": True, "type": None, "webhookTimestamp": "soon"},
    [{"portalId": {"a": 1}, "subscriptionType": []}, {"portalId": 1.5}],
]


@pytest.mark.parametrize("name", sorted(ROUTERS))
@pytest.mark.parametrize("payload", ODD_PAYLOADS, ids=range(len(ODD_PAYLOADS)))
@pytest.mark.parametrize("secrets", [IntegrationSecrets(None), IntegrationSecrets("s", "c")], ids=["none", "secret"])
def test_a_router_answers_odd_input_with_a_result_or_a_4xx(
    name: str, payload: object, secrets: IntegrationSecrets
) -> None:
    headers = {
        "x-shopify-shop-domain": "store.myshopify.com",
        "x-hub-signature-256": "sha256=00",
        "stripe-signature": "t=1,v1=00",
        "x-slack-request-timestamp": "nope",
    }
    request = IncomingRequest("POST", "https://n.example/webhook/e/k", headers, b"{}", payload, {}, time.time())
    status = 200
    try:
        result = ROUTERS[name](request, secrets)
    except NangoError as exc:
        status = exc.status
    else:
        assert all(e.identifier is None or e.identifier.value for e in result.events)
    assert status == 200 or 400 <= status < 500
