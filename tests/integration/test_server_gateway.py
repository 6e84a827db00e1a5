"""The server process in-process against real Postgres: public API authentication, the error
envelope, environment bootstrap and the internal gRPC API."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from nango.config import load
from nango.crypto import Keyring, generate_key
from nango.server.app import run
from nango.server.client import ServerClient
from nango.server.environments import EnvironmentService
from nango.server.gateway.http import json_body, json_response
from nango.server.gateway.middleware import error_envelope
from nango.server.settings import ServerSettings
from nango.server.store import EnvironmentStore
from tests.conftest import free_port

pytestmark = pytest.mark.integration

TOKEN = "internal-token-for-tests-0123456789"


@dataclass
class Server:
    url: str
    grpc: str
    schema: str
    dev_key: str
    encryption_key: str
    start: Callable[[dict[str, str]], asyncio.Task[None]]


@pytest.fixture
async def server(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    schema = f"nango_gw_{uuid.uuid4().hex[:8]}"
    port, grpc_port = free_port(), free_port()
    dev_key, encryption_key = str(uuid.uuid4()), generate_key()
    base = {
        "NANGO_DATABASE_URL": database_url,
        "NANGO_DB_SCHEMA": schema,
        "SERVER_PORT": str(port),
        "NANGO_SERVER_GRPC_PORT": str(grpc_port),
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_ENCRYPTION_KEY": encryption_key,
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp_path),
        "NANGO_SECRET_KEY_DEV": dev_key,
        "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
    }
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(overrides: dict[str, str]) -> asyncio.Task[None]:
        for key, value in {**base, **overrides}.items():
            monkeypatch.setenv(key, value)
        stop = asyncio.Event()
        task = asyncio.create_task(run(load(ServerSettings), stop))
        stops.append((stop, task))
        return task

    async def stop_all() -> None:
        for stop, task in stops:
            stop.set()
            await asyncio.wait_for(task, 15)
        stops.clear()

    info = Server(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", schema, dev_key, encryption_key, start)
    start({})
    await _wait_healthy(info.url)
    yield info
    await stop_all()


async def _wait_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url + "/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("server did not become healthy")


async def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers) as response:
        return response.status, await response.json()


async def test_open_routes_need_no_key(server: Server) -> None:
    assert await _get(server.url + "/health") == (200, {"result": "ok"})
    assert await _get(server.url + "/ready") == (200, {"result": "ok"})


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_auth_header"),
        ("Bearer", "malformed_auth_header"),
        ("Basic dXNlcjpwYXNz", "malformed_auth_header"),
        ("Bearer not-a-uuid", "invalid_secret_key_format"),
        (f"Bearer {uuid.uuid4()}", "unknown_account"),
    ],
)
async def test_api_authentication_failures(server: Server, authorization: str | None, code: str) -> None:
    headers = {"Authorization": authorization} if authorization else None
    status, body = await _get(server.url + "/environment-variables", headers)
    assert status == 401
    assert body["error"]["code"] == code  # type: ignore[index]


async def test_unknown_routes_and_methods_use_the_envelope(server: Server) -> None:
    status, body = await _get(server.url + "/no/such/route")
    assert (status, body["error"]["code"]) == (404, "not_found")  # type: ignore[index]
    status, body = await _get(server.url + "/environment-variables", method="DELETE")
    assert (status, body["error"]["code"]) == (405, "method_not_allowed")  # type: ignore[index]


async def test_cors_preflight(server: Server) -> None:
    headers = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
    async with aiohttp.ClientSession() as session, session.options(server.url + "/connections", headers=headers) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "Connection-Id" in r.headers["Access-Control-Allow-Headers"]


async def test_environment_variables_are_sealed_and_scoped(server: Server, database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, server_settings={"search_path": server.schema})
    try:
        environments = EnvironmentService(EnvironmentStore(pool), Keyring.from_encoded(server.encryption_key))
        keys = {e.environment.name: e for e in await environments.list_with_keys()}
        await environments.replace_variables(
            keys["dev"].environment.id, [("API_BASE", "https://x"), ("TOKEN", "s3cr3t-v4lue")]
        )
        raw = await pool.fetch("SELECT value_sealed FROM environment_variables")
        assert len(raw) == 2
        assert all("s3cr3t" not in r["value_sealed"] for r in raw)
    finally:
        await pool.close()
    status, body = await _get(server.url + "/environment-variables", {"Authorization": f"Bearer {server.dev_key}"})
    assert status == 200
    assert body == [{"name": "API_BASE", "value": "https://x"}, {"name": "TOKEN", "value": "s3cr3t-v4lue"}]
    prod_key = keys["prod"].secret_key
    assert await _get(server.url + "/environment-variables", {"Authorization": f"Bearer {prod_key}"}) == (200, [])


async def test_internal_api_lists_environments_with_provisioned_key(server: Server) -> None:
    client = ServerClient(server.grpc, TOKEN)
    try:
        environments = {e.name: e for e in await client.list_environments()}
    finally:
        await client.close()
    assert set(environments) == {"dev", "prod"}
    assert environments["dev"].secret_key == server.dev_key
    uuid.UUID(environments["prod"].secret_key, version=4)


async def test_restart_keeps_environments_and_applies_a_new_provisioned_key(server: Server) -> None:
    client = ServerClient(server.grpc, TOKEN)
    try:
        before = {e.name: e for e in await client.list_environments()}
    finally:
        await client.close()
    new_key = str(uuid.uuid4())
    # a second replica on the same database with a rotated NANGO_SECRET_KEY_DEV
    other_port, other_grpc = free_port(), free_port()
    server.start(
        {"NANGO_SECRET_KEY_DEV": new_key, "SERVER_PORT": str(other_port), "NANGO_SERVER_GRPC_PORT": str(other_grpc)}
    )
    other = f"http://127.0.0.1:{other_port}"
    await _wait_healthy(other)
    client = ServerClient(f"127.0.0.1:{other_grpc}", TOKEN)
    try:
        after = {e.name: e for e in await client.list_environments()}
    finally:
        await client.close()
    assert after["dev"].uuid == before["dev"].uuid
    assert after["dev"].secret_key == new_key
    assert after["prod"].secret_key == before["prod"].secret_key
    status, _ = await _get(other + "/environment-variables", {"Authorization": f"Bearer {new_key}"})
    assert status == 200
    status, body = await _get(other + "/environment-variables", {"Authorization": f"Bearer {server.dev_key}"})
    assert (status, body["error"]["code"]) == (401, "unknown_account")  # type: ignore[index]


async def _echo(request: web.Request) -> web.Response:
    return json_response({"got": await json_body(request)})


@pytest.fixture
async def json_app() -> AsyncIterator[str]:
    app = web.Application(middlewares=[error_envelope], client_max_size=1024)
    app.router.add_post("/echo", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/echo"
    await runner.cleanup()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"a": 1}', "application/json", 200, None),
        (b'{"a": ', "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (b"a=1", "application/x-www-form-urlencoded", 415, "invalid_content_type"),
        (b'{"a": "' + b"x" * 2048 + b'"}', "application/json", 413, "request_too_large"),
    ],
)
async def test_json_bodies(json_app: str, body: bytes, content_type: str, status: int, code: str | None) -> None:
    headers = {"Content-Type": content_type}
    async with aiohttp.ClientSession() as session, session.post(json_app, data=body, headers=headers) as response:
        assert response.status == status
        payload = await response.json()
    if code is None:
        assert payload == {"got": {"a": 1}}
    else:
        assert payload["error"]["code"] == code


async def test_rate_limit_per_account(server: Server) -> None:
    port, grpc_port = free_port(), free_port()
    server.start(
        {"SERVER_PORT": str(port), "NANGO_SERVER_GRPC_PORT": str(grpc_port), "DEFAULT_RATE_LIMIT_PER_MIN": "3"}
    )
    limited = f"http://127.0.0.1:{port}"
    await _wait_healthy(limited)
    headers = {"Authorization": f"Bearer {server.dev_key}"}
    if 60 - time.time() % 60 < 2:  # stay inside one fixed window
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    async with aiohttp.ClientSession() as session:
        seen = []
        for _ in range(4):
            async with session.get(limited + "/environment-variables", headers=headers) as response:
                seen.append((response.status, response.headers.get("X-RateLimit-Remaining"), await response.json()))
                retry_after = response.headers.get("Retry-After")
        assert [s[:2] for s in seen[:3]] == [(200, "2"), (200, "1"), (200, "0")]
        status, remaining, body = seen[3]
        assert (status, remaining) == (429, "0")
        assert body["error"]["code"] == "too_many_request"
        assert body["error"]["path"] == "/environment-variables"
        assert retry_after is not None
        assert 1 <= int(retry_after) <= 60
        async with session.get(limited + "/health") as health:
            assert health.status == 200
