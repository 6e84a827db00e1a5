"""GitHub and GitHub App routers: signatures as GitHub documents them
(https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from nango.errors import InvalidBody
from nango.server.webhooks.routers import ROUTERS, ConnectionIdentifier, IncomingRequest, IntegrationSecrets
from nango.server.webhooks.routers.base import InvalidSignature

SECRET = "It's a Secret to Everybody"
app_route = ROUTERS["githubAppWebhookRouting"]
oauth_route = ROUTERS["githubWebhookRouting"]


def github_request(
    payload: Any, *, secret: str | None = SECRET, event: str = "push", query: dict[str, str] | None = None
) -> IncomingRequest:
    body = json.dumps(payload).encode()
    headers = {"x-github-event": event, "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    if secret is not None:
        headers["x-hub-signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return IncomingRequest(
        "POST", "https://nango.example/webhook/e/k", headers, body, payload, query or {}, time.time()
    )


def test_the_documented_example_verifies() -> None:
    # GitHub's own example: secret "It's a Secret to Everybody", payload "Hello, World!"
    request = IncomingRequest(
        "POST",
        "https://nango.example/webhook/e/k",
        {"x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"},
        b"Hello, World!",
        {"installation": {"id": 1}},
        {},
        time.time(),
    )
    assert app_route(request, IntegrationSecrets(SECRET)).verified


def test_an_app_delivery_names_its_installation() -> None:
    payload = {"action": "opened", "installation": {"id": 4242}, "issue": {"number": 1}}
    result = app_route(github_request(payload, event="issues"), IntegrationSecrets(SECRET))
    assert result.verified
    assert result.status == 200
    assert result.forward
    (event,) = result.events
    assert event.identifier == ConnectionIdentifier("installation_id", "4242")
    assert event.event_type == "issues"
    assert event.payload == payload


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "sha256=" + "0" * 64,
        "sha1=" + hmac.new(SECRET.encode(), b"{}", hashlib.sha1).hexdigest(),
        "sha256=" + hmac.new(b"another secret", b'{"installation": {"id": 1}}', hashlib.sha256).hexdigest(),
    ],
)
def test_a_wrong_or_missing_signature_is_refused(signature: str | None) -> None:
    request = github_request({"installation": {"id": 1}})
    headers = dict(request.headers)
    headers.pop("x-hub-signature-256")
    if signature is not None:
        headers["x-hub-signature-256"] = signature
    forged = IncomingRequest(request.method, request.url, headers, request.body, request.payload, {}, request.now)
    with pytest.raises(InvalidSignature) as raised:
        app_route(forged, IntegrationSecrets(SECRET))
    assert raised.value.status == 401
    assert raised.value.instance_code == "invalid_signature"
    assert SECRET not in raised.value.message


def test_a_tampered_body_is_refused() -> None:
    request = github_request({"installation": {"id": 1}})
    tampered = IncomingRequest(
        request.method, request.url, request.headers, request.body + b" ", request.payload, {}, request.now
    )
    with pytest.raises(InvalidSignature):
        app_route(tampered, IntegrationSecrets(SECRET))


def test_without_a_secret_the_delivery_is_accepted_unverified() -> None:
    result = app_route(github_request({"installation": {"id": 7}}, secret=None), IntegrationSecrets(None))
    assert not result.verified
    assert result.events[0].identifier == ConnectionIdentifier("installation_id", "7")


def test_an_app_delivery_without_installation_names_no_connection() -> None:
    result = app_route(github_request({"hook": {"id": 1}}, event="ping"), IntegrationSecrets(SECRET))
    (event,) = result.events
    assert event.identifier is None
    assert not event.all_connections


def test_an_oauth_app_hook_is_routed_by_its_connection_id_query_parameter() -> None:
    routed = oauth_route(
        github_request({"ref": "refs/heads/main"}, query={"connectionId": "acme"}), IntegrationSecrets(SECRET)
    )
    assert routed.events[0].identifier == ConnectionIdentifier("connectionId", "acme")
    assert routed.events[0].event_type == "push"
    unrouted = oauth_route(github_request({"ref": "refs/heads/main"}), IntegrationSecrets(SECRET))
    assert unrouted.events[0].identifier is None


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidBody):
        app_route(github_request([1, 2]), IntegrationSecrets(SECRET))
