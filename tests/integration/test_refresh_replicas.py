"""Token refresh against a real, strict OAuth 2 server (django-oauth-toolkit: refresh tokens rotate),
with two server processes on one Postgres and one Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from nango.crypto import Keyring, generate_key
from tests.conftest import free_port
from tests.support.inprocess import TOKEN, new_schema
from tests.support.oauth_server.harness import OAuthApp, OAuthServer
from tests.support.oauth_tokens import user_tokens

pytestmark = pytest.mark.integration

PROVIDERS = """
test-as:
  display_name: Test authorization server
  categories: [dev-tools]
  docs: https://example.com/docs
  auth_mode: OAUTH2
  authorization_url: {url}/o/authorize/
  token_url: {url}/o/token/
  default_scopes: [read]
  proxy:
    base_url: {url}
"""


@pytest.fixture
def app(oauth_server: OAuthServer) -> OAuthApp:
    oauth_server.create_user("refresh-user", "pw-refresh-user")
    return oauth_server.create_app(redirect_uris=["http://127.0.0.1:9/callback"], skip_authorization=True)


@pytest.fixture
def replicas(
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    oauth_server: OAuthServer,
    tmp_path: Path,
) -> Iterator[tuple[list[str], str, str]]:
    providers = tmp_path / "providers.yaml"
    providers.write_text(PROVIDERS.format(url=oauth_server.url))
    schema, key = new_schema("nango_refresh"), generate_key()
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NANGO_")},
        "NANGO_DATABASE_URL": database_url,
        "NANGO_DB_SCHEMA": schema,
        "NANGO_LOGS_DATABASE_SCHEMA": f"{schema}_logs",
        "NANGO_REDIS_URL": redis_url,
        "NANGO_REDIS_KEY_PREFIX": f"{redis_prefix}{schema}:",
        "NANGO_ENCRYPTION_KEY": key,
        "NANGO_OUTBOUND_URL_POLICY_OAUTH": '{"blockLoopback": false}',  # the test token server is on 127.0.0.1
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_PROVIDERS_FILE": str(providers),
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp_path),
        "DEFAULT_RATE_LIMIT_PER_MIN": "100000",
        "LOG_LEVEL": "warning",
    }
    processes, urls = [], []
    for _ in range(2):
        port = free_port()
        env = {**base, "SERVER_PORT": str(port), "NANGO_SERVER_GRPC_PORT": str(free_port())}
        processes.append(subprocess.Popen([sys.executable, "-m", "nango.server"], env=env, stdout=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        yield urls, schema, key
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)


async def _healthy(url: str) -> None:
    async with asyncio.timeout(60), aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


@pytest.fixture
async def dev_key(replicas: tuple[list[str], str, str], database_url: str) -> str:
    urls, schema, key = replicas
    for url in urls:
        await _healthy(url)
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    row = await conn.fetchrow("SELECT uuid, secret_key_sealed FROM environments WHERE name = 'dev'")
    await conn.close()
    return Keyring.from_encoded(key).open_text(row["secret_key_sealed"], aad=f"environment:{row['uuid']}:secret_key")


async def _request(http: aiohttp.ClientSession, method: str, url: str, body: object = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with http.request(method, url, json=body) as response:
        return response.status, await response.json()


async def test_concurrent_reads_on_two_replicas_refresh_once(
    replicas: tuple[list[str], str, str],
    dev_key: str,
    oauth_server: OAuthServer,
    app: OAuthApp,
) -> None:
    urls, _, _ = replicas
    tokens = await user_tokens(oauth_server, app, "refresh-user", "pw-refresh-user")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {dev_key}"}) as http:
        status, _ = await _request(
            http,
            "POST",
            urls[0] + "/integrations",
            {
                "provider": "test-as",
                "unique_key": "as",
                "credentials": {"type": "OAUTH2", "client_id": app.client_id, "client_secret": app.client_secret},
            },
        )
        assert status == 200
        expired = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        status, created = await _request(
            http,
            "POST",
            urls[0] + "/connections",
            {
                "provider_config_key": "as",
                "connection_id": "alice",
                "credentials": {
                    "type": "OAUTH2",
                    "access_token": tokens["access_token"],
                    "refresh_token": tokens["refresh_token"],
                    "expires_at": expired,
                },
            },
        )
        assert status == 201, created
        before = oauth_server.stats(app.client_id)["refresh_grants"]

        reads = [_request(http, "GET", f"{urls[i % 2]}/connections/alice?provider_config_key=as") for i in range(50)]
        answers = await asyncio.gather(*reads)
        assert [status for status, _ in answers] == [200] * 50
        access_tokens = {body["credentials"]["access_token"] for _, body in answers}
        assert len(access_tokens) == 1
        assert tokens["access_token"] not in access_tokens
        assert oauth_server.stats(app.client_id)["refresh_grants"] == before + 1

        # the refreshed token works at the provider
        async with (
            aiohttp.ClientSession() as plain,
            plain.get(oauth_server.me_url, headers={"Authorization": f"Bearer {access_tokens.pop()}"}) as me,
        ):
            assert (me.status, (await me.json())["username"]) == (200, "refresh-user")

        # forced refresh uses the rotated refresh token
        status, forced = await _request(
            http, "GET", f"{urls[1]}/connections/alice?provider_config_key=as&force_refresh=true"
        )
        assert status == 200
        assert oauth_server.stats(app.client_id)["refresh_grants"] == before + 2

        # revoked at the provider: a forced refresh fails and the connection shows an auth error
        oauth_server.revoke(app.client_id)
        status, failed = await _request(
            http, "GET", f"{urls[0]}/connections/alice?provider_config_key=as&force_refresh=true"
        )
        assert (status, failed["error"]["code"]) == (400, "invalid_credentials")
        assert failed["error"]["payload"]["error"]["type"] == "invalid_grant"
        status, listed = await _request(http, "GET", urls[1] + "/connections?connectionId=alice")
        assert status == 200
        assert [e["type"] for e in listed["connections"][0]["errors"]] == ["auth"]
        assert forced["credentials"]["access_token"] != failed.get("credentials")

        # an expired token whose refresh fails: the first read says why, the next ones back off for 30 s
        status, _ = await _request(
            http,
            "POST",
            urls[0] + "/connections",
            {
                "provider_config_key": "as",
                "connection_id": "bob",
                "credentials": {
                    "type": "OAUTH2",
                    "access_token": "revoked",
                    "refresh_token": tokens["refresh_token"],
                    "expires_at": expired,
                },
            },
        )
        assert status == 201
        status, first = await _request(http, "GET", f"{urls[0]}/connections/bob?provider_config_key=as")
        assert (status, first["error"]["code"]) == (400, "invalid_credentials")
        for url in urls:
            status, again = await _request(http, "GET", f"{url}/connections/bob?provider_config_key=as")
            assert (status, again["error"]["code"]) == (424, "connection_refresh_backoff")
