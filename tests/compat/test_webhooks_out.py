"""Outgoing webhooks through `@nangohq/node`: a sync's first run and an async action finish under
`nango up`, jobs delivers their webhooks to a customer's receiver on 127.0.0.1, and the SDK's
`verifyIncomingWebhookRequest(rawBody, headers)` (and the deprecated `verifyWebhookSignature`) accept
them with the environment's signing key, and refuse a tampered body or another key."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.compat.conftest import FUNCTIONS_PROVIDER, Sdk
from tests.conftest import free_port
from tests.support.platform import BIN, Up

pytestmark = [pytest.mark.compat, pytest.mark.timeout(180)]

KEY = "compat-webhooks"
CONNECTION = "webhook-user"
WAIT = 90.0

MODELS = """
from nango.sdk import Model


class Item(Model):
    id: str
    name: str
"""

ITEMS = """
from models import Item

from nango.sdk import sync


@sync(description="Items", frequency="every hour", models=[Item])
async def items(nango):
    await nango.batch_save([Item(id="1", name="one"), Item(id="2", name="two")], "Item")
"""

PING = """
from nango.sdk import action


@action(description="Echo")
async def ping(nango, input):
    return {"pong": input}
"""


@dataclass
class Webhook:
    raw: str
    headers: dict[str, str]

    @property
    def body(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.raw)
        return payload


@dataclass
class Receiver:
    url: str = ""
    got: list[Webhook] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append(Webhook((await request.read()).decode(), dict(request.headers)))
        return web.json_response({"ok": True})

    async def wait(self, match: Callable[[dict[str, Any]], bool]) -> Webhook:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for webhook in self.got:
                if match(webhook.body):
                    return webhook
            await asyncio.sleep(0.25)
        raise AssertionError(f"no such webhook within {WAIT}s; got {[w.body for w in self.got]}")


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    port = free_port()
    found.url = f"http://127.0.0.1:{port}/nango-webhooks"
    app = web.Application()
    app.router.add_post("/nango-webhooks", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield found
    await runner.cleanup()


@pytest.fixture(scope="module")
async def signing_key(sdk: Sdk, receiver: Receiver) -> AsyncIterator[str]:
    """The environment sends its webhooks to the receiver while this module runs."""
    changes = {"primary_url": receiver.url, "on_async_action_completion": True, "on_sync_completion_always": False}
    settings = await sdk("_webhookSettings", changes)
    assert settings["primary_url"] == receiver.url
    yield str(settings["signing_key"])
    await sdk("_webhookSettings", {"primary_url": None})


def deploy(platform: Up, root: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NANGO_")}
    environ.update({"NANGO_SECRET_KEY_DEV": platform.dev_key, "NANGO_HOSTPORT": platform.api})
    return subprocess.run(
        [str(BIN / "nango"), "deploy", str(root), "--auto-confirm"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def verified(sdk: Sdk, webhook: Webhook, key: str) -> None:
    """The SDK accepts the webhook as it arrived, and nothing else."""
    assert await sdk("_verifyIncomingWebhookRequest", webhook.raw, webhook.headers, key) is True
    tampered = webhook.raw.replace('"from":"nango"', '"from":"evil"')
    assert tampered != webhook.raw
    assert await sdk("_verifyIncomingWebhookRequest", tampered, webhook.headers, key) is False
    assert await sdk("_verifyIncomingWebhookRequest", webhook.raw, webhook.headers, key + "0") is False
    signature = webhook.headers["X-Nango-Signature"]
    assert await sdk("_verifyWebhookSignature", signature, webhook.body, key) is True


async def test_sync_and_async_action_webhooks_pass_the_sdks_verification(
    platform: Up, sdk: Sdk, receiver: Receiver, signing_key: str, tmp_path: Path
) -> None:
    await sdk("createIntegration", {"provider": FUNCTIONS_PROVIDER, "unique_key": KEY})
    (tmp_path / KEY).mkdir()
    for name, text in {"models.py": MODELS, "items.py": ITEMS, "ping.py": PING}.items():
        (tmp_path / KEY / name).write_text(text)
    done = await asyncio.to_thread(deploy, platform, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    connection = {
        "provider_config_key": KEY,
        "connection_id": CONNECTION,
        "credentials": {"type": "API_KEY", "apiKey": "webhook-key"},
    }
    await sdk("_importConnection", connection)

    # the sync's first run saved two items: one webhook for its model
    synced = await receiver.wait(lambda b: b.get("type") == "sync" and b.get("connectionId") == CONNECTION)
    body = synced.body
    assert {k: body[k] for k in ("from", "providerConfigKey", "syncName", "syncVariant", "model", "success")} == {
        "from": "nango",
        "providerConfigKey": KEY,
        "syncName": "items",
        "syncVariant": "base",
        "model": "Item",
        "success": True,
    }
    assert body["syncType"] == "INITIAL"
    assert body["responseResults"] == {"added": 2, "updated": 0, "deleted": 0}
    assert body["modifiedAfter"] == body["queryTimeStamp"]
    assert synced.raw == json.dumps(body, sort_keys=True, separators=(",", ":"))
    await verified(sdk, synced, signing_key)
    records = await sdk("listRecords", {"providerConfigKey": KEY, "connectionId": CONNECTION, "model": "Item"})
    assert sorted(r["id"] for r in records["records"]) == ["1", "2"]

    started = await sdk("triggerActionAsync", KEY, CONNECTION, "ping", {"n": 1})
    told = await receiver.wait(lambda b: b.get("type") == "async_action" and b["payload"]["id"] == started["id"])
    assert told.body == {
        "type": "async_action",
        "from": "nango",
        "connectionId": CONNECTION,
        "providerConfigKey": KEY,
        "payload": {"id": started["id"], "statusUrl": started["statusUrl"]},
    }
    await verified(sdk, told, signing_key)
    assert await sdk("getAsyncActionResult", {"statusUrl": told.body["payload"]["statusUrl"]}) == {"pong": {"n": 1}}

    # every webhook this module's receiver got carries the same signature scheme and a delivery id
    for webhook in receiver.got:
        assert webhook.headers["Content-Type"] == "application/json"
        assert webhook.headers["X-Nango-Delivery-Id"]
        assert await sdk("_verifyIncomingWebhookRequest", webhook.raw, webhook.headers, signing_key) is True
