"""What happens to connections while nobody calls the API: tokens kept fresh by the background loop,
soft-deleted connections purged, and every refresh and failure recorded in the operations log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from nango.crypto import Keyring, generate_key
from nango.oplog import PostgresLogStore
from tests.support.inprocess import InProcessServer, new_schema, server_env, start_server
from tests.support.oauth_server.harness import OAuthApp, OAuthServer
from tests.support.oauth_tokens import user_tokens

pytestmark = pytest.mark.integration

PROVIDERS = """
upkeep-as:
  display_name: Upkeep test server
  categories: [dev-tools]
  docs: https://example.com/docs
  auth_mode: OAUTH2
  authorization_url: {url}/o/authorize/
  token_url: {url}/o/token/
"""


@dataclass
class Platform:
    server: InProcessServer
    pool: asyncpg.Pool
    logs: PostgresLogStore
    dev_key: str
    environment_id: int
    app: OAuthApp


@pytest.fixture
async def platform(database_url: str, oauth_server: OAuthServer, tmp_path: Path) -> AsyncIterator[Platform]:
    providers = tmp_path / "providers.yaml"
    providers.write_text(PROVIDERS.format(url=oauth_server.url))
    schema, key = new_schema("nango_upkeep"), generate_key()
    env = server_env(
        database_url,
        schema,
        tmp_path,
        NANGO_ENCRYPTION_KEY=key,
        NANGO_PROVIDERS_FILE=str(providers),
        # the background loops run every ~1.2 s here instead of every 10 minutes
        CRON_REFRESH_CONNECTIONS_EVERY_MIN="0.02",
        CRON_DELETE_OLD_DATA_EVERY_MIN="0.02",
        CRON_DELETE_OLD_CONNECTIONS_MAX_DAYS="0",
    )
    server = await start_server(env)
    pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema})
    row = await pool.fetchrow("SELECT id, uuid, secret_key_sealed FROM environments WHERE name = 'dev'")
    dev = Keyring.from_encoded(key).open_text(row["secret_key_sealed"], aad=f"environment:{row['uuid']}:secret_key")
    logs = await PostgresLogStore.connect(database_url, f"{schema}_logs")
    oauth_server.create_user("upkeep-user", "pw-upkeep")
    app = oauth_server.create_app(redirect_uris=["http://127.0.0.1:9/callback"], skip_authorization=True)
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {dev}"}) as http,
        http.post(
            server.url + "/integrations",
            json={
                "provider": "upkeep-as",
                "unique_key": "as",
                "credentials": {"type": "OAUTH2", "client_id": app.client_id, "client_secret": app.client_secret},
            },
        ) as r,
    ):
        assert r.status == 200
    yield Platform(server, pool, logs, dev, row["id"], app)
    await logs.close()
    await pool.close()
    await server.stop()


async def _import(platform: Platform, connection_id: str, tokens: dict[str, str], expires_at: datetime) -> None:
    body = {
        "provider_config_key": "as",
        "connection_id": connection_id,
        "credentials": {
            "type": "OAUTH2",
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "expires_at": expires_at.isoformat(),
        },
    }
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {platform.dev_key}"}) as http,
        http.post(platform.server.url + "/connections", json=body) as r,
    ):
        assert r.status == 201, await r.text()


async def _until(check: object, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[operator]
            await asyncio.sleep(0.2)


async def test_expiring_tokens_are_refreshed_without_any_read(platform: Platform, oauth_server: OAuthServer) -> None:
    tokens = await user_tokens(oauth_server, platform.app, "upkeep-user", "pw-upkeep")
    await _import(platform, "quiet", tokens, datetime.now(UTC) + timedelta(minutes=5))
    before = oauth_server.stats(platform.app.client_id)["refresh_grants"]

    async def stored() -> bool:
        expires = await platform.pool.fetchval(
            "SELECT credentials_expires_at FROM connections WHERE connection_id = 'quiet'"
        )
        return bool(expires > datetime.now(UTC) + timedelta(minutes=30))

    await _until(stored)
    assert oauth_server.stats(platform.app.client_id)["refresh_grants"] == before + 1

    async def logged() -> bool:
        operations, _ = await platform.logs.search_operations(
            environment_id=platform.environment_id, types=["auth"], states=["success"], connections=["quiet"]
        )
        return any(op.action == "refresh_token" for op in operations)

    await _until(logged)


async def test_failed_background_refresh_is_logged_and_shown(platform: Platform, oauth_server: OAuthServer) -> None:
    tokens = await user_tokens(oauth_server, platform.app, "upkeep-user", "pw-upkeep")
    oauth_server.revoke(platform.app.client_id)
    await _import(platform, "revoked", tokens, datetime.now(UTC) + timedelta(minutes=5))

    async def failure_logged() -> bool:
        operations, _ = await platform.logs.search_operations(
            environment_id=platform.environment_id, types=["auth"], states=["failed"], connections=["revoked"]
        )
        return any(op.action == "refresh_token" and op.error for op in operations)

    await _until(failure_logged)
    errors = await platform.pool.fetch(
        "SELECT e.type FROM connection_errors e JOIN connections c ON c.id = e.connection_id "
        "WHERE c.connection_id = 'revoked'"
    )
    assert [r["type"] for r in errors] == ["auth"]


async def test_deleted_connections_are_purged(platform: Platform, oauth_server: OAuthServer) -> None:
    tokens = await user_tokens(oauth_server, platform.app, "upkeep-user", "pw-upkeep")
    await _import(platform, "leaving", tokens, datetime.now(UTC) + timedelta(hours=1))
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {platform.dev_key}"}) as http,
        http.delete(platform.server.url + "/connections/leaving?provider_config_key=as") as r,
    ):
        assert r.status == 200

    async def purged() -> bool:
        count = await platform.pool.fetchval("SELECT count(*) FROM connections WHERE connection_id = 'leaving'")
        return bool(count == 0)

    await _until(purged)


async def test_deleting_an_integration_deletes_its_connections(platform: Platform, oauth_server: OAuthServer) -> None:
    tokens = await user_tokens(oauth_server, platform.app, "upkeep-user", "pw-upkeep")
    await _import(platform, "owned", tokens, datetime.now(UTC) + timedelta(hours=1))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {platform.dev_key}"}) as http:
        async with http.delete(platform.server.url + "/integrations/as") as r:
            assert r.status == 200
        async with http.get(platform.server.url + "/connections?connectionId=owned") as r:
            assert (await r.json())["connections"] == []
    assert await platform.pool.fetchval("SELECT count(*) FROM connections WHERE connection_id = 'owned'") == 0
