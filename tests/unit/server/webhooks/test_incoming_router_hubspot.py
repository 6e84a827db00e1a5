"""HubSpot router: request validation as HubSpot documents it
(https://developers.hubspot.com/docs/api/webhooks/validating-requests)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from nango.errors import InvalidBody
from nango.server.webhooks.routers import ROUTERS, ConnectionIdentifier, IncomingRequest, IntegrationSecrets
from nango.server.webhooks.routers.base import InvalidSignature

route = ROUTERS["hubspotWebhookRouting"]
CLIENT_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
URL = "https://nango.example/webhook/0b7c/hubspot?x=1"


def v3_request(events: Any, *, age_seconds: float = 0, url: str = URL) -> IncomingRequest:
    body = json.dumps(events).encode()
    timestamp = str(int((time.time() - age_seconds) * 1000))
    source = f"POST{url}".encode() + body + timestamp.encode()
    signature = base64.b64encode(hmac.new(CLIENT_SECRET.encode(), source, hashlib.sha256).digest()).decode()
    headers = {
        "x-hubspot-signature-v3": signature,
        "x-hubspot-request-timestamp": timestamp,
        "x-hubspot-signature": "ignored when v3 is present",
        "x-hubspot-signature-version": "v1",
    }
    return IncomingRequest("POST", url, headers, body, events, {}, time.time())


def test_the_documented_v1_example_verifies_and_each_event_is_routed_by_portal() -> None:
    body = (
        b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
        b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",'
        b'"changeFlag":"NEW","appId":54321}]'
    )
    headers = {
        "x-hubspot-signature": "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de",
        "x-hubspot-signature-version": "v1",
    }
    request = IncomingRequest("POST", URL, headers, body, json.loads(body), {}, time.time())
    result = route(request, IntegrationSecrets(None, CLIENT_SECRET))
    assert result.verified
    (event,) = result.events
    assert event.identifier == ConnectionIdentifier("portalId", "62515")
    assert event.event_type == "contact.creation"


def test_v3_routes_each_event_of_the_batch_to_its_portal() -> None:
    events = [
        {"portalId": 1, "subscriptionType": "contact.creation", "objectId": 10},
        {"portalId": 2, "subscriptionType": "deal.propertyChange", "objectId": 20},
    ]
    result = route(v3_request(events), IntegrationSecrets(None, CLIENT_SECRET))
    assert result.verified
    assert [(e.identifier, e.event_type, e.payload) for e in result.events] == [
        (ConnectionIdentifier("portalId", "1"), "contact.creation", events[0]),
        (ConnectionIdentifier("portalId", "2"), "deal.propertyChange", events[1]),
    ]


def test_v3_signs_the_uri_with_reserved_characters_decoded() -> None:
    encoded = "https://nango.example/webhook/0b7c/hubspot?next=a%3Ab"
    request = v3_request([{"portalId": 1}], url="https://nango.example/webhook/0b7c/hubspot?next=a:b")
    as_called = IncomingRequest(
        request.method, encoded, request.headers, request.body, request.payload, {}, request.now
    )
    assert route(as_called, IntegrationSecrets(None, CLIENT_SECRET)).verified


@pytest.mark.parametrize("age", [301, 24 * 3600])
def test_a_replayed_v3_request_is_refused(age: float) -> None:
    with pytest.raises(InvalidSignature, match="timestamp"):
        route(v3_request([{"portalId": 1}], age_seconds=age), IntegrationSecrets(None, CLIENT_SECRET))


def test_a_v3_signature_made_with_another_secret_is_refused() -> None:
    request = v3_request([{"portalId": 1}])
    with pytest.raises(InvalidSignature):
        route(request, IntegrationSecrets(None, "another-client-secret"))


def test_a_v2_signature_covers_method_and_uri() -> None:
    body = b'[{"portalId":5}]'
    signature = hashlib.sha256(CLIENT_SECRET.encode() + b"POST" + URL.encode() + body).hexdigest()
    headers = {"x-hubspot-signature": signature, "x-hubspot-signature-version": "v2"}
    request = IncomingRequest("POST", URL, headers, body, json.loads(body), {}, time.time())
    assert route(request, IntegrationSecrets(None, CLIENT_SECRET)).verified
    elsewhere = IncomingRequest("POST", URL + "&y=2", headers, body, json.loads(body), {}, time.time())
    with pytest.raises(InvalidSignature):
        route(elsewhere, IntegrationSecrets(None, CLIENT_SECRET))


def test_a_body_of_something_else_than_events_is_refused() -> None:
    with pytest.raises(InvalidBody):
        route(v3_request([1, 2]), IntegrationSecrets(None, CLIENT_SECRET))
