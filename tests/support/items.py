"""A paginated items API on 127.0.0.1 and `nango up` with a provider pointing at it, for the
end-to-end tests of syncs at scale (10k records, faults, delete reconciliation).

The API serves `GET /items?cursor=&limit=&updated_after=`: items in insertion order, a cursor that is
an offset, and an optional lower bound on each item's `updated` counter (what an incremental sync asks
for). Each API key sees its own items, so connections of one platform never share data.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import yaml
from aiohttp import web

from nango.grpckit import check_health
from tests.conftest import free_port
from tests.support.platform import Up, start_up
from tests.support.proxy import provider

PAGINATE = {
    "type": "cursor",
    "cursor_name_in_request": "cursor",
    "cursor_path_in_response": "next_cursor",
    "response_path": "data",
    "limit_name_in_request": "limit",
}


# the deployed module of the item model most of these tests sync
ITEM_MODELS = """
from nango.sdk import Model


class Item(Model):
    id: str
    name: str
    value: int
    updated: int
"""

# a sync listing every item on every run, with track_deletes (its models module defines Item)
FULL_LISTING_SYNC = """
from models import Item

from nango.sdk import sync


@sync(description="Every item, every run", frequency="every day", models=[Item], track_deletes=True)
async def items(nango):
    async for page in nango.paginate(endpoint="/items", paginate={"limit": 1000}):
        await nango.batch_save([Item(**item) for item in page], "Item")
"""


@dataclass
class ItemsApi:
    url: str = ""
    # api key -> item id -> item (dicts keep insertion order: the order pages are served in)
    items: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # pages served per api key
    pages: dict[str, int] = field(default_factory=dict)
    # seconds each page of a key waits before answering
    slow: dict[str, float] = field(default_factory=dict)
    clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def put(self, key: str, item_id: str, **fields: Any) -> dict[str, Any]:
        """Add or change an item; its `updated` counter moves past every other item's."""
        item = {"id": item_id, **fields, "updated": next(self.clock)}
        self.items.setdefault(key, {})[item_id] = item
        return item

    def remove(self, key: str, item_id: str) -> None:
        del self.items[key][item_id]

    def view(self, key: str) -> dict[str, dict[str, Any]]:
        return {item_id: dict(item) for item_id, item in self.items.get(key, {}).items()}

    def app(self) -> web.Application:
        async def list_items(request: web.Request) -> web.Response:
            key = request.headers.get("x-api-key", "")
            self.pages[key] = self.pages.get(key, 0) + 1
            await asyncio.sleep(self.slow.get(key, 0.0))
            rows = list(self.items.get(key, {}).values())
            after = request.query.get("updated_after")
            if after:
                rows = [r for r in rows if r["updated"] > int(after)]
            start, limit = int(request.query.get("cursor") or 0), int(request.query.get("limit") or 100)
            following = start + limit if start + limit < len(rows) else None
            return web.json_response({"data": rows[start : start + limit], "next_cursor": following})

        app = web.Application()
        app.router.add_get("/items", list_items)
        return app


@asynccontextmanager
async def items_api() -> AsyncIterator[ItemsApi]:
    api = ItemsApi()
    port = free_port()
    api.url = f"http://127.0.0.1:{port}"
    runner = web.AppRunner(api.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield api
    finally:
        await runner.cleanup()


def start_items_platform(tmp: Path, api: ItemsApi, name: str, extra_env: dict[str, str] | None = None) -> Up:
    """`nango up` whose provider `items` calls the API with the connection's API key."""
    items = provider(
        "API_KEY", proxy={"base_url": api.url, "headers": {"x-api-key": "${apiKey}"}, "paginate": PAGINATE}
    )
    providers_file = tmp / "providers.yaml"
    providers_file.write_text(yaml.safe_dump({"items": items}))
    env = {
        "NANGO_PROVIDERS_FILE": str(providers_file),
        "NANGO_OUTBOUND_URL_POLICY": '{"blockLoopback": false}',
        "DEFAULT_RATE_LIMIT_PER_MIN": "100000",
        **(extra_env or {}),
    }
    return start_up(tmp, extra_env=env, name=name).wait_ready()


@asynccontextmanager
async def platform_database(up: Up) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the embedded Postgres of `nango up` (its socket and port from postmaster.pid)."""
    lines = (up.data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()
    conn = await asyncpg.connect(host=lines[4], port=int(lines[3]), user="postgres", database="nango")
    try:
        yield conn
    finally:
        await conn.close()


def service_process(up: Up, service: str) -> psutil.Process | None:
    """The process of `python -m nango.<service>` among nango up's children (None while it restarts)."""
    for child in psutil.Process(up.process.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if f"nango.{service}" in child.cmdline():
                return child
    return None


async def wait_restarted(up: Up, service: str, port: str, old_pid: int, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            found = service_process(up, service)
            if found is not None and found.pid != old_pid and await check_health(f"127.0.0.1:{up.ports[port]}"):
                return
            await asyncio.sleep(0.1)


class ApiError(AssertionError):
    pass


@dataclass
class Rest:
    """The public REST API of a platform with its dev secret key."""

    up: Up

    async def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None, **query: Any
    ) -> tuple[int, Any]:
        sent = {"Authorization": f"Bearer {self.up.dev_key}", **(headers or {})}
        async with (
            aiohttp.ClientSession(headers=sent) as http,
            http.request(method, self.up.api + path, json=body, params=query or None) as response,
        ):
            return response.status, await response.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, **options: Any) -> Any:
        status, answer = await self.call(method, path, body, **options)
        if status >= 300:
            raise ApiError(f"{method} {path}: {status} {answer}")
        return answer

    async def deploy(self, integration: str, files: dict[str, str]) -> None:
        status, answer = await self.call("POST", "/integrations", {"provider": "items", "unique_key": integration})
        assert status in (200, 409), answer
        applied = await self.ok(
            "POST", "/functions/deploy", {"integrations": {integration: {"files": files}}, "confirm": True}
        )
        assert applied["applied"] is True, applied

    async def connect(self, integration: str, connection_id: str, api_key: str) -> None:
        body = {
            "provider_config_key": integration,
            "connection_id": connection_id,
            "credentials": {"type": "API_KEY", "apiKey": api_key},
        }
        status, answer = await self.call("POST", "/connections", body)
        assert status == 201, answer

    async def sync_status(self, integration: str, connection_id: str, sync: str) -> dict[str, Any]:
        answer = await self.ok(
            "GET", "/sync/status", syncs=sync, provider_config_key=integration, connection_id=connection_id
        )
        (status,) = answer["syncs"]
        return dict(status)

    async def trigger(self, integration: str, connection_id: str, sync: str) -> None:
        await self.ok(
            "POST",
            "/sync/trigger",
            {"syncs": [sync], "provider_config_key": integration, "connection_id": connection_id},
        )

    async def wait_run(
        self, integration: str, connection_id: str, sync: str, *, after: str | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        """The sync's status once a run that finished after `after` (a `finishedAt`) is its latest."""
        async with asyncio.timeout(timeout):
            while True:
                status = await self.sync_status(integration, connection_id, sync)
                finished = status.get("finishedAt")
                if status["status"] != "RUNNING" and finished is not None and (after is None or finished > after):
                    return status
                await asyncio.sleep(0.1)

    async def records(self, integration: str, connection_id: str, model: str, **query: Any) -> list[dict[str, Any]]:
        """Every record the query matches, paged to the end."""
        headers = {"Connection-Id": connection_id, "Provider-Config-Key": integration}
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):
            page = await self.ok(
                "GET",
                "/records",
                headers=headers,
                model=model,
                limit=10_000,
                **query,
                **({"cursor": cursor} if cursor else {}),
            )
            found += page["records"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found
        raise AssertionError("GET /records did not reach the end in 1000 pages")


__all__ = [
    "PAGINATE",
    "ApiError",
    "ItemsApi",
    "Rest",
    "items_api",
    "platform_database",
    "service_process",
    "start_items_platform",
    "wait_restarted",
]
