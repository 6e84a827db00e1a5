"""An incoming GitHub webhook in `nango up`: signed as GitHub signs it, routed to its connection, and
run as the subscribed sync's `on_webhook` handler, whose saved record the customer then reads from
`GET /records`. A delivery with a bad signature runs nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.platform import Up, start_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

HOOK_SECRET = "repository-hook-secret"
MODELS = """
from nango.sdk import Model


class Issue(Model):
    id: str
    title: str
"""

ISSUES = """
from models import Issue

from nango.sdk import sync


@sync(description="Issues", frequency="every day", models=[Issue], webhook_subscriptions=["issues"])
async def issues(nango):
    pass


@issues.on_webhook
async def on_issue(nango, payload):
    issue = payload["issue"]
    await nango.batch_save([Issue(id=str(issue["number"]), title=issue["title"])], "Issue")
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = start_up(tmp_path_factory.mktemp("webhooks-e2e"), name="webhooks").wait_ready()
    yield up
    assert up.stop() == 0


async def call(up: Up, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    sent = {"Authorization": f"Bearer {up.dev_key}", **(headers or {})}
    async with aiohttp.ClientSession() as http, http.request(method, up.api + path, json=body, headers=sent) as r:
        return r.status, await r.json(content_type=None)


async def deliver(up: Up, path: str, payload: Any, secret: str) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }
    async with aiohttp.ClientSession() as http, http.post(up.api + path, data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_a_github_webhook_runs_the_sync_webhook_handler(platform: Up) -> None:
    credentials = {"type": "OAUTH2", "client_id": "id", "client_secret": "secret", "webhook_secret": HOOK_SECRET}
    status, answer = await call(
        platform, "POST", "/integrations", {"provider": "github", "unique_key": "gh", "credentials": credentials}
    )
    assert status == 200, answer
    payload = {"integrations": {"gh": {"files": {"models.py": MODELS, "issues.py": ISSUES}}}, "confirm": True}
    status, answer = await call(platform, "POST", "/functions/deploy", payload)
    assert (status, answer.get("applied")) == (200, True), answer
    for connection_id in ("acme", "other"):
        connection = {
            "provider_config_key": "gh",
            "connection_id": connection_id,
            "credentials": {"type": "OAUTH2", "access_token": f"gho_{connection_id}"},
        }
        status, answer = await call(platform, "POST", "/connections", connection)
        assert status == 201, answer
    status, answer = await call(platform, "GET", "/integrations/gh?include=webhook")
    assert status == 200, answer
    hook_path = answer["data"]["webhook_url"].split("://", 1)[1].split("/", 1)[1]

    event = {"action": "opened", "issue": {"number": 42, "title": "It breaks"}, "repository": {"full_name": "a/b"}}
    status, answer = await deliver(platform, f"/{hook_path}?connectionId=other", event, "not the secret")
    assert status == 401, answer
    status, answer = await deliver(platform, f"/{hook_path}?connectionId=acme", event, HOOK_SECRET)
    assert (status, answer) == (200, {"status": "success"})

    async def records(connection_id: str) -> list[dict[str, Any]]:
        headers = {"Connection-Id": connection_id, "Provider-Config-Key": "gh"}
        status, answer = await call(platform, "GET", "/records?model=Issue", headers=headers)
        assert status == 200, answer
        return list(answer["records"])

    async with asyncio.timeout(60):
        while not (found := await records("acme")):
            await asyncio.sleep(0.2)
    assert [(r["id"], r["title"]) for r in found] == [("42", "It breaks")]
    assert await records("other") == []
