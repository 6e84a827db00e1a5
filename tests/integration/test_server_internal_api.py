"""The server's internal gRPC API, as jobs and running functions use it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest

from nango.crypto import Keyring, generate_key
from nango.errors import Forbidden, Unauthenticated
from nango.grpckit import TaskScope, mint_task_token
from nango.server.client import ServerClient
from nango.server.errors import UnknownConnection, UnknownProviderConfig
from tests.support.inprocess import TOKEN, InProcessServer, new_schema, server_env, start_server

pytestmark = pytest.mark.integration


@dataclass
class Setup:
    server: InProcessServer
    environment_id: int
    ids: dict[str, int]


@pytest.fixture(scope="module")
async def setup(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    schema, key = new_schema("nango_internal"), generate_key()
    server = await start_server(
        server_env(database_url, schema, tmp_path_factory.mktemp("internal"), NANGO_ENCRYPTION_KEY=key)
    )
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    row = await conn.fetchrow("SELECT id, uuid, secret_key_sealed FROM environments WHERE name = 'dev'")
    dev = Keyring.from_encoded(key).open_text(row["secret_key_sealed"], aad=f"environment:{row['uuid']}:secret_key")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {dev}"}) as http:
        body = {
            "provider": "github",
            "unique_key": "gh",
            "credentials": {"type": "OAUTH2", "client_id": "i", "client_secret": "s"},
        }
        async with http.post(server.url + "/integrations", json=body) as r:
            assert r.status == 200
        for name in ("alice", "bob"):
            body = {
                "provider_config_key": "gh",
                "connection_id": name,
                "metadata": {"team": name},
                "credentials": {"type": "OAUTH2", "access_token": f"tok-{name}"},
            }
            async with http.post(server.url + "/connections", json=body) as r:
                assert r.status == 201
    ids = {r["connection_id"]: r["id"] for r in await conn.fetch("SELECT id, connection_id FROM connections")}
    await conn.close()
    yield Setup(server, row["id"], ids)
    await server.stop()


async def test_connection_with_credentials_and_metadata(setup: Setup) -> None:
    client = ServerClient(setup.server.grpc, TOKEN)
    try:
        alice = await client.get_connection(setup.environment_id, "gh", "alice")
        assert (alice.provider, alice.auth_mode) == ("github", "OAUTH2")
        assert alice.credentials["access_token"] == "tok-alice"
        assert alice.metadata == {"team": "alice"}
        merged = await client.set_connection_metadata(setup.environment_id, "gh", "alice", {"n": 1}, merge=True)
        assert merged == {"team": "alice", "n": 1}
        replaced = await client.set_connection_metadata(setup.environment_id, "gh", "alice", {"n": 2}, merge=False)
        assert replaced == {"n": 2}
        integration = await client.get_integration(setup.environment_id, "gh", include_credentials=True)
        assert integration.credentials == {"client_id": "i", "client_secret": "s", "scopes": None}
        assert (await client.get_integration(setup.environment_id, "gh")).credentials is None
        with pytest.raises(UnknownConnection):
            await client.get_connection(setup.environment_id, "gh", "nobody")
        with pytest.raises(UnknownProviderConfig):
            await client.get_connection(setup.environment_id, "nope", "alice")
    finally:
        await client.close()


async def test_task_token_reaches_only_its_connection(setup: Setup) -> None:
    scope = TaskScope("task-1", setup.environment_id, setup.ids["alice"], time.time() + 60)
    client = ServerClient(setup.server.grpc, task_token=mint_task_token(TOKEN, scope))
    try:
        assert (await client.get_connection(setup.environment_id, "gh", "alice")).credentials[
            "access_token"
        ] == "tok-alice"
        with pytest.raises(Forbidden):
            await client.get_connection(setup.environment_id, "gh", "bob")
        with pytest.raises(Forbidden):
            await client.set_connection_metadata(setup.environment_id, "gh", "bob", {"x": 1}, merge=True)
        with pytest.raises(Forbidden):
            await client.environment_variables(setup.environment_id + 1)
        with pytest.raises(Unauthenticated):
            await client.list_environments()
    finally:
        await client.close()
