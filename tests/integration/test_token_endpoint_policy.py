"""Token endpoints are outbound calls too: with the default policy a provider URL that points at
loopback (e.g. through a connection's `${connectionConfig.hostname}`) is refused before any request."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from nango.crypto import Keyring, generate_key
from tests.conftest import free_port
from tests.support.inprocess import new_schema, server_env, start_server

pytestmark = pytest.mark.integration

PROVIDERS = """
loopback-cc:
  display_name: Loopback client credentials
  categories: [dev-tools]
  docs: https://example.com/docs
  auth_mode: OAUTH2_CC
  token_url: http://127.0.0.1:{port}/token
"""


async def test_default_policy_refuses_a_loopback_token_endpoint(database_url: str, tmp_path: Path) -> None:
    hits: list[str] = []

    async def token(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"access_token": "t", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    providers = tmp_path / "providers.yaml"
    providers.write_text(PROVIDERS.format(port=port))
    schema, key = new_schema("nango_tokenpolicy"), generate_key()
    env = server_env(database_url, schema, tmp_path, NANGO_ENCRYPTION_KEY=key, NANGO_PROVIDERS_FILE=str(providers))
    del env["NANGO_OUTBOUND_URL_POLICY_OAUTH"]
    server = await start_server(env)
    try:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        row = await conn.fetchrow("SELECT uuid, secret_key_sealed FROM environments WHERE name = 'dev'")
        await conn.close()
        dev = Keyring.from_encoded(key).open_text(row["secret_key_sealed"], aad=f"environment:{row['uuid']}:secret_key")
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {dev}"}) as http:
            async with http.post(
                server.url + "/integrations", json={"provider": "loopback-cc", "unique_key": "cc"}
            ) as r:
                assert r.status == 200
            async with http.post(server.url + "/connect/sessions", json={"end_user": {"id": "u"}}) as r:
                session = (await r.json())["data"]["token"]
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.url}/oauth2/auth/cc?connect_session_token={session}",
                json={"client_id": "id", "client_secret": "secret"},
            ) as r,
        ):
            answer = await r.json()
        assert r.status == 400
        assert answer["error"]["code"] == "connection_test_failed"
        assert "secret" not in str(answer).replace("client_secret", "")
        assert hits == []
    finally:
        await server.stop()
        await runner.cleanup()
