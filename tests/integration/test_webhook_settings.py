"""Webhook settings of environments: the REST routes, the internal RPC jobs reads them with, and
the signing key (sealed at rest, rotated on demand, never readable with a task token)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from nango.crypto import Keyring, generate_key
from nango.errors import NotFound, Unauthenticated
from nango.grpckit import TaskScope, mint_task_token
from nango.server.client import ServerClient
from tests.support.inprocess import TOKEN, InProcessServer, new_schema, server_env, start_server

pytestmark = pytest.mark.integration

ROUTE = "/environment/webhook-settings"
ROTATE = "/environment/webhook-signing-key/rotate"
DEFAULTS = {
    "primary_url": None,
    "secondary_url": None,
    "on_auth_creation": True,
    "on_auth_refresh_error": True,
    "on_sync_error": True,
    "on_sync_completion_always": False,
    "on_async_action_completion": True,
}


@dataclass
class Setup:
    server: InProcessServer
    pool: asyncpg.Pool
    keyring: Keyring
    keys: dict[str, str]
    environment_ids: dict[str, int]
    connection_ids: dict[str, int]


async def _call(
    setup: Setup,
    method: str,
    path: str,
    *,
    env: str = "dev",
    json: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    sent = {"Authorization": f"Bearer {setup.keys[env]}", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, setup.server.url + path, json=json, data=data, headers=sent) as response,
    ):
        return response.status, await response.json()


@pytest.fixture(scope="module")
async def setup(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    schema, key = new_schema("nango_whsettings"), generate_key()
    server = await start_server(
        server_env(database_url, schema, tmp_path_factory.mktemp("whsettings"), NANGO_ENCRYPTION_KEY=key)
    )
    pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema}, min_size=1, max_size=2)
    keyring = Keyring.from_encoded(key)
    keys, environment_ids = {}, {}
    for row in await pool.fetch("SELECT id, uuid, name, secret_key_sealed FROM environments"):
        keys[row["name"]] = keyring.open_text(row["secret_key_sealed"], aad=f"environment:{row['uuid']}:secret_key")
        environment_ids[row["name"]] = row["id"]
    setup = Setup(server, pool, keyring, keys, environment_ids, {})
    status, _ = await _call(
        setup,
        "POST",
        "/integrations",
        json={
            "provider": "github",
            "unique_key": "gh",
            "credentials": {"type": "OAUTH2", "client_id": "i", "client_secret": "s"},
        },
    )
    assert status == 200
    for name, override in (("plain", None), ("overridden", "https://override.example.com/hook")):
        body: dict[str, Any] = {
            "provider_config_key": "gh",
            "connection_id": name,
            "credentials": {"type": "OAUTH2", "access_token": f"tok-{name}"},
        }
        if override:
            body["webhook_url_override"] = override
        status, _ = await _call(setup, "POST", "/connections", json=body)
        assert status == 201
    setup.connection_ids.update(
        {r["connection_id"]: r["id"] for r in await pool.fetch("SELECT id, connection_id FROM connections")}
    )
    yield setup
    await pool.close()
    await server.stop()


@pytest.fixture
async def reset(setup: Setup) -> AsyncIterator[None]:
    """Each test starts from the defaults."""
    yield
    status, _ = await _call(setup, "PATCH", ROUTE, json=DEFAULTS)
    assert status == 200


async def test_every_environment_has_its_own_sealed_signing_key(setup: Setup) -> None:
    status, dev = await _call(setup, "GET", ROUTE)
    assert status == 200
    assert {k: v for k, v in dev.items() if k != "signing_key"} == DEFAULTS
    status, prod = await _call(setup, "GET", ROUTE, env="prod")
    assert status == 200
    assert re.fullmatch(r"[0-9a-f]{64}", dev["signing_key"])
    assert dev["signing_key"] != prod["signing_key"]
    assert dev["signing_key"] not in setup.keys.values()
    rows = await setup.pool.fetch("SELECT environment_id, signing_key_sealed FROM environment_webhook_settings")
    assert sorted(r["environment_id"] for r in rows) == sorted(setup.environment_ids.values())
    dump = "\n".join(
        r["t"] for r in await setup.pool.fetch("SELECT row_to_json(s)::text AS t FROM environment_webhook_settings s")
    )
    assert dev["signing_key"] not in dump
    assert prod["signing_key"] not in dump
    assert all(r["signing_key_sealed"].startswith(f"v1.{setup.keyring.primary_id}.") for r in rows)


@pytest.mark.usefixtures("reset")
async def test_patch_changes_only_what_it_names(setup: Setup) -> None:
    _, before = await _call(setup, "GET", ROUTE)
    status, after = await _call(
        setup,
        "PATCH",
        ROUTE,
        json={"primary_url": "https://hooks.example.com/nango", "on_sync_completion_always": True},
    )
    assert status == 200
    assert after == {**before, "primary_url": "https://hooks.example.com/nango", "on_sync_completion_always": True}
    assert (await _call(setup, "GET", ROUTE))[1] == after
    # the other environment is untouched
    assert (await _call(setup, "GET", ROUTE, env="prod"))[1]["primary_url"] is None

    status, after = await _call(
        setup, "PATCH", ROUTE, json={"secondary_url": "http://second.example.com:8080/x?y=1", "on_auth_creation": False}
    )
    assert status == 200
    assert after["primary_url"] == "https://hooks.example.com/nango"
    assert after["secondary_url"] == "http://second.example.com:8080/x?y=1"
    assert after["on_auth_creation"] is False

    # an empty string or null removes a URL
    status, after = await _call(setup, "PATCH", ROUTE, json={"primary_url": "", "secondary_url": None})
    assert status == 200
    assert (after["primary_url"], after["secondary_url"]) == (None, None)
    # an empty patch changes nothing
    status, same = await _call(setup, "PATCH", ROUTE, json={})
    assert (status, same) == (200, after)


BAD_BODIES: list[tuple[Any, str]] = [
    ({"unknown": 1}, "invalid_body"),
    ({"signing_key": "mine"}, "invalid_body"),
    ({"primary_url": "ftp://files.example.com/x"}, "invalid_body"),
    ({"primary_url": "not a url"}, "invalid_body"),
    ({"primary_url": "/relative/path"}, "invalid_body"),
    ({"primary_url": "https://"}, "invalid_body"),
    ({"primary_url": " https://example.com/x"}, "invalid_body"),
    ({"secondary_url": "https://example.com/" + "a" * 2048}, "invalid_body"),
    ({"primary_url": 42}, "invalid_body"),
    ({"primary_url": ["https://example.com"]}, "invalid_body"),
    ({"on_sync_error": "true"}, "invalid_body"),
    ({"on_sync_error": 1}, "invalid_body"),
    ({"on_sync_error": None}, "invalid_body"),
    ({"on_auth_creation": "yes"}, "invalid_body"),
    ([{"primary_url": "https://example.com"}], "invalid_body"),
    ("https://example.com", "invalid_body"),
    ({"primary_url": "http://10.1.2.3/hook"}, "webhook_url_denied"),
    ({"primary_url": "http://192.168.0.10:8080/hook"}, "webhook_url_denied"),
    ({"secondary_url": "http://127.0.0.1:3000/hook"}, "webhook_url_denied"),
    ({"secondary_url": "http://localhost/hook"}, "webhook_url_denied"),
    ({"primary_url": "http://169.254.169.254/latest/meta-data"}, "webhook_url_denied"),
    ({"primary_url": "http://metadata.google.internal/x"}, "webhook_url_denied"),
    ({"primary_url": "http://[::1]/hook"}, "webhook_url_denied"),
    ({"primary_url": "http://[::ffff:10.0.0.1]/hook"}, "webhook_url_denied"),
]


@pytest.mark.parametrize(("body", "code"), BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
async def test_patch_refuses_bad_input_and_changes_nothing(setup: Setup, body: Any, code: str) -> None:
    _, before = await _call(setup, "GET", ROUTE)
    status, answer = await _call(setup, "PATCH", ROUTE, json=body)
    assert status == 400, answer
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]
    if code == "webhook_url_denied":
        assert answer["error"]["payload"]["field"] in ("primary_url", "secondary_url")
    assert (await _call(setup, "GET", ROUTE))[1] == before


async def test_patch_transport_errors(setup: Setup) -> None:
    status, answer = await _call(
        setup, "PATCH", ROUTE, data=b'{"primary_url": "https://x.example.com"}', headers={"Content-Type": "text/plain"}
    )
    assert (status, answer["error"]["code"]) == (415, "invalid_content_type")
    status, answer = await _call(setup, "PATCH", ROUTE, data=b"{not json", headers={"Content-Type": "application/json"})
    assert (status, answer["error"]["code"]) == (400, "invalid_json")
    status, answer = await _call(setup, "GET", ROUTE + "?verbose=1")
    assert (status, answer["error"]["code"]) == (400, "invalid_query_params")
    status, answer = await _call(setup, "DELETE", ROUTE)
    assert status == 405


@pytest.mark.parametrize(
    ("method", "path"), [("GET", ROUTE), ("PATCH", ROUTE), ("POST", ROTATE)], ids=["get", "patch", "rotate"]
)
async def test_routes_need_the_secret_key(setup: Setup, method: str, path: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, setup.server.url + path, json={}) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "missing_auth_header"
        headers = {"Authorization": "Bearer 5f1a7e2c-3b4d-4e5f-8a6b-7c8d9e0f1a2b"}
        async with session.request(method, setup.server.url + path, json={}, headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unknown_account"
        headers = {"Authorization": "Bearer not-a-key"}
        async with session.request(method, setup.server.url + path, json={}, headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "invalid_secret_key_format"


async def test_rotation_replaces_the_key_at_once(setup: Setup) -> None:
    client = ServerClient(setup.server.grpc, TOKEN)
    try:
        dev_id = setup.environment_ids["dev"]
        _, before = await _call(setup, "GET", ROUTE)
        assert (await client.get_webhook_settings(dev_id)).signing_key == before["signing_key"]
        _, prod_before = await _call(setup, "GET", ROUTE, env="prod")

        status, rotated = await _call(setup, "POST", ROTATE)
        assert status == 200
        assert set(rotated) == {"signing_key"}
        assert re.fullmatch(r"[0-9a-f]{64}", rotated["signing_key"])
        assert rotated["signing_key"] != before["signing_key"]
        assert (await _call(setup, "GET", ROUTE))[1]["signing_key"] == rotated["signing_key"]
        # jobs reads the new key from the very next call: the old one signs nothing more
        assert (await client.get_webhook_settings(dev_id)).signing_key == rotated["signing_key"]
        assert (await _call(setup, "GET", ROUTE, env="prod"))[1]["signing_key"] == prod_before["signing_key"]

        status, answer = await _call(setup, "POST", ROTATE, json={"signing_key": "mine"})
        assert (status, answer["error"]["code"]) == (400, "invalid_body")
        status, answer = await _call(setup, "POST", ROTATE, data=b"x", headers={"Content-Type": "text/plain"})
        assert (status, answer["error"]["code"]) == (415, "invalid_content_type")
        assert (await _call(setup, "GET", ROUTE))[1]["signing_key"] == rotated["signing_key"]
    finally:
        await client.close()


@pytest.mark.usefixtures("reset")
async def test_rpc_answers_with_the_connection_override_applied(setup: Setup) -> None:
    dev_id = setup.environment_ids["dev"]
    urls = {"primary_url": "https://one.example.com/h", "secondary_url": "https://two.example.com/h"}
    status, rest = await _call(setup, "PATCH", ROUTE, json={**urls, "on_sync_error": False})
    assert status == 200
    client = ServerClient(setup.server.grpc, TOKEN)
    try:
        settings = await client.get_webhook_settings(dev_id)
        assert (settings.primary_url, settings.secondary_url) == (urls["primary_url"], urls["secondary_url"])
        assert settings.on_sync_error is False
        assert settings.on_auth_creation is True
        assert settings.on_sync_completion_always is False
        assert settings.on_async_action_completion is True
        assert settings.environment_name == "dev"
        assert settings.signing_key == rest["signing_key"]
        assert settings.destinations() == (urls["primary_url"], urls["secondary_url"])

        plain = await client.get_webhook_settings(dev_id, setup.connection_ids["plain"])
        assert plain.destinations() == (urls["primary_url"], urls["secondary_url"])
        overridden = await client.get_webhook_settings(dev_id, setup.connection_ids["overridden"])
        assert (overridden.primary_url, overridden.secondary_url) == ("https://override.example.com/hook", "")
        assert overridden.signing_key == rest["signing_key"]
        assert overridden.on_sync_error is False

        with pytest.raises(NotFound):
            await client.get_webhook_settings(999_999)
        with pytest.raises(NotFound):
            await client.get_webhook_settings(dev_id, 999_999)
        # a connection of another environment is not found through this one
        with pytest.raises(NotFound):
            await client.get_webhook_settings(setup.environment_ids["prod"], setup.connection_ids["plain"])
    finally:
        await client.close()


async def test_a_task_token_cannot_read_signing_keys(setup: Setup) -> None:
    dev_id = setup.environment_ids["dev"]
    scope = TaskScope("task-1", dev_id, setup.connection_ids["plain"], time.time() + 60)
    client = ServerClient(setup.server.grpc, task_token=mint_task_token(TOKEN, scope))
    try:
        with pytest.raises(Unauthenticated):
            await client.get_webhook_settings(dev_id)
        with pytest.raises(Unauthenticated):
            await client.get_webhook_settings(dev_id, setup.connection_ids["plain"])
    finally:
        await client.close()
    anonymous = ServerClient(setup.server.grpc, "wrong-token")
    try:
        with pytest.raises(Unauthenticated):
            await anonymous.get_webhook_settings(dev_id)
    finally:
        await anonymous.close()


async def test_environments_from_before_the_migration_get_a_key(setup: Setup) -> None:
    """A row lost (or never created) is created again on the next read: no environment goes without a key."""
    dev_id = setup.environment_ids["prod"]
    await setup.pool.execute("DELETE FROM environment_webhook_settings WHERE environment_id = $1", dev_id)
    await asyncio.sleep(2.1)  # past the settings cache
    status, settings = await _call(setup, "GET", ROUTE, env="prod")
    assert status == 200
    assert re.fullmatch(r"[0-9a-f]{64}", settings["signing_key"])
    assert (
        await setup.pool.fetchval("SELECT count(*) FROM environment_webhook_settings WHERE environment_id = $1", dev_id)
        == 1
    )


@pytest.mark.usefixtures("reset")
async def test_a_change_made_by_another_replica_shows_within_two_seconds(setup: Setup) -> None:
    dev_id = setup.environment_ids["dev"]
    client = ServerClient(setup.server.grpc, TOKEN)
    try:
        await client.get_webhook_settings(dev_id)  # cached here now
        # as another replica's PATCH would: straight in the table, this replica's cache untouched
        await setup.pool.execute(
            "UPDATE environment_webhook_settings SET primary_url = 'https://elsewhere.example.com' "
            "WHERE environment_id = $1",
            dev_id,
        )
        changed_at = time.monotonic()
        while (await client.get_webhook_settings(dev_id)).primary_url != "https://elsewhere.example.com":
            assert time.monotonic() - changed_at < 2.5, "the cached settings outlived 2 s"
            await asyncio.sleep(0.05)
    finally:
        await client.close()
