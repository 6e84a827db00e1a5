"""Slack router: request signing as Slack documents it (https://api.slack.com/authentication/verifying-requests-from-slack)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from nango.server.webhooks.routers import ROUTERS, ConnectionIdentifier, IncomingRequest, IntegrationSecrets
from nango.server.webhooks.routers.base import InvalidSignature

route = ROUTERS["slackWebhookRouting"]
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def slack_request(
    body: bytes, payload: Any, *, timestamp: float | None = None, secret: str = SECRET
) -> IncomingRequest:
    ts = str(int(time.time() if timestamp is None else timestamp))
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"x-slack-request-timestamp": ts, "x-slack-signature": signature}
    return IncomingRequest("POST", "https://nango.example/webhook/e/k", headers, body, payload, {}, time.time())


def json_request(payload: Any, **kwargs: Any) -> IncomingRequest:
    return slack_request(json.dumps(payload).encode(), payload, **kwargs)


def test_the_documented_example_verifies() -> None:
    # Slack's own example (a slash command), checked at the time it was signed
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
        b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
        b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "x-slack-request-timestamp": "1531420618",
        "x-slack-signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    request = IncomingRequest("POST", "https://nango.example/webhook/e/k", headers, body, form, {}, 1531420618 + 10)
    result = route(request, IntegrationSecrets(SECRET))
    assert result.verified
    assert result.events[0].identifier == ConnectionIdentifier("team.id", "T1DC2JH3J")
    assert result.events[0].event_type == "/webhook-collect"


def test_url_verification_is_answered_with_the_challenge_and_nothing_else() -> None:
    payload = {
        "token": "t",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    result = route(json_request(payload), IntegrationSecrets(SECRET))
    assert result.response == {"challenge": payload["challenge"]}
    assert result.events == ()
    assert not result.forward


def test_an_event_callback_is_routed_by_team() -> None:
    payload = {"type": "event_callback", "team_id": "T123", "event": {"type": "message", "text": "hi"}}
    result = route(json_request(payload), IntegrationSecrets(SECRET))
    (event,) = result.events
    assert event.identifier == ConnectionIdentifier("team.id", "T123")
    assert event.event_type == "message"


def test_an_interactive_payload_is_read_from_the_form() -> None:
    inner = {"type": "block_actions", "team": {"id": "T9", "domain": "x"}, "actions": []}
    body = urlencode({"payload": json.dumps(inner)}).encode()
    result = route(slack_request(body, dict(parse_qsl(body.decode()))), IntegrationSecrets(SECRET))
    assert result.events[0].identifier == ConnectionIdentifier("team.id", "T9")
    assert result.events[0].event_type == "block_actions"


@pytest.mark.parametrize("age", [301, -301, 3600])
def test_an_old_or_future_timestamp_is_refused_as_a_replay(age: int) -> None:
    request = json_request({"type": "event_callback", "team_id": "T1"}, timestamp=time.time() - age)
    with pytest.raises(InvalidSignature, match="timestamp"):
        route(request, IntegrationSecrets(SECRET))


def test_a_wrong_secret_is_refused() -> None:
    request = json_request({"type": "event_callback", "team_id": "T1"}, secret="not the signing secret")
    with pytest.raises(InvalidSignature):
        route(request, IntegrationSecrets(SECRET))


def test_without_a_signing_secret_the_request_is_accepted_unverified() -> None:
    payload = {"type": "event_callback", "team_id": "T1", "event": {"type": "app_mention"}}
    request = IncomingRequest("POST", "u", {}, json.dumps(payload).encode(), payload, {}, time.time())
    result = route(request, IntegrationSecrets(None))
    assert not result.verified
    assert result.events[0].event_type == "app_mention"
