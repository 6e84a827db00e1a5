"""Auth webhooks (reference §7.2) written into the outbox by every way a connection is made: the OAuth 2
popup against the strict test authorization server, OAuth 1.0a against the oauthlib provider, a GitHub App
install, every non-popup auth route and POST /connections; plus re-authorisation (`override`), a refused
authorization (`creation`, success false) and a failed refresh (`refresh`, success false).

jobs and the orchestrator are not running here (their addresses are closed ports), so what the server
wrote stays in `webhook_outbox` for the test to read: exactly what the relay hands to jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import asyncpg
import jwt
import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from nango.config import load
from nango.crypto import generate_key
from nango.server.app import run
from nango.server.settings import ServerSettings
from tests.conftest import free_port
from tests.support.fixtures import oauth_server
from tests.support.oauth1_provider import OAuth1Provider, private_pem
from tests.support.oauth_server.harness import OAuthServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

__all__ = ["oauth_server"]  # a fixture, imported so pytest finds it

WAIT = 10.0
APP_ID = "777"
APP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIMARY = "https://hooks.example.com/primary"
SECONDARY = "https://hooks.example.com/secondary"
SETTINGS_ROUTE = "/environment/webhook-settings"


@dataclass
class Upstream:
    """Token endpoints for client credentials and GitHub App installations, and an install page."""

    url: str = ""
    setup_url: str = ""


def _upstream_app(state: Upstream) -> web.Application:
    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        if (form.get("client_id"), form.get("client_secret")) != ("cc-client", "cc-secret"):
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response({"access_token": secrets.token_hex(8), "expires_in": 3600})

    async def installation_token(request: web.Request) -> web.Response:
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            jwt.decode(token, APP_KEY.public_key(), algorithms=["RS256"])
        except jwt.PyJWTError:
            return web.json_response({"message": "bad JWT"}, status=401)
        expires_at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"token": "ghs_" + secrets.token_hex(6), "expires_at": expires_at}, status=201)

    async def install_page(request: web.Request) -> web.Response:
        query = urlencode({"installation_id": "1001", "setup_action": "install", "state": request.query["state"]})
        return web.Response(status=302, headers={"Location": f"{state.setup_url}?{query}"})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_post("/app/installations/{installation}/access_tokens", installation_token)
    app.router.add_get("/apps/test/installations/new", install_page)
    return app


def _provider(auth_mode: str, **fields: Any) -> dict[str, Any]:
    base = {"display_name": "Test", "categories": ["dev-tools"], "docs": "https://example.com/docs"}
    return {**base, "auth_mode": auth_mode, **fields}


def providers_yaml(authorization_server: OAuthServer, oauth1: OAuth1Provider, up: Upstream) -> str:
    providers = {
        "test-dot": _provider(
            "OAUTH2",
            authorization_url=authorization_server.authorize_url,
            token_url=authorization_server.token_url,
            scope_separator=" ",
        ),
        "test-oauth1": _provider(
            "OAUTH1",
            request_url=oauth1.url + "/oauth/request_token",
            authorization_url=oauth1.url + "/oauth/authorize",
            token_url=oauth1.url + "/oauth/access_token",
            signature_method="HMAC-SHA1",
        ),
        "test-app": _provider(
            "APP",
            authorization_url="${connectionConfig.appPublicLink}/installations/new",
            authorization_url_skip_encode=["appPublicLink"],
            token_url=up.url + "/app/installations/${connectionConfig.installation_id}/access_tokens",
        ),
        "test-apikey": _provider("API_KEY"),
        "test-basic": _provider("BASIC"),
        "test-cc": _provider("OAUTH2_CC", token_url=up.url + "/oauth/token"),
        "test-jwt": _provider(
            "JWT",
            signature={"protocol": "HMAC", "hmac_secret_encoding": "hex"},
            token={"signing_key": "${secret}", "expires_in_ms": 3_600_000, "payload": {"iss": "${issuer}"}},
        ),
        "test-tba": _provider("TBA"),
        "test-none": _provider("NONE"),
    }
    return yaml.safe_dump(providers)


@dataclass
class Server:
    url: str
    schema: str
    keys: dict[str, str]
    pool: asyncpg.Pool

    @property
    def callback_url(self) -> str:
        return self.url + "/oauth/callback"

    async def call(self, method: str, path: str, body: Any = None, *, env: str = "dev") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.keys[env]}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session,
            session.request(method, self.url + path, json=body, headers=headers) as response,
        ):
            return response.status, await response.json()

    async def integration(self, provider: str, credentials: dict[str, Any] | None = None, *, env: str = "dev") -> str:
        key = f"{provider}-{secrets.token_hex(4)}"
        body: dict[str, Any] = {"provider": provider, "unique_key": key}
        if credentials:
            body["credentials"] = credentials
        status, answer = await self.call("POST", "/integrations", body, env=env)
        assert status in (200, 201), answer
        return key

    async def session(self, *, env: str = "dev", **extra: Any) -> str:
        body = {"end_user": {"id": "user-1", "email": "ada@example.com"}, **extra}
        status, answer = await self.call("POST", "/connect/sessions", body, env=env)
        assert status == 201, answer
        return str(answer["data"]["token"])

    async def flow(self, path: str, body: Any, *, token: str, **params: str) -> tuple[int, Any]:
        query = {"connect_session_token": token, **{f"params[{k}]": v for k, v in params.items()}}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session,
            session.post(self.url + path, json=body, params=query) as response,
        ):
            return response.status, await response.json()

    async def webhooks(self, provider_config_key: str) -> list[dict[str, Any]]:
        """The outbox's auth deliveries for one integration, oldest first."""
        rows = await self.pool.fetch("SELECT kind, environment_id, item FROM webhook_outbox ORDER BY id")
        found = []
        for row in rows:
            item = json.loads(row["item"])
            if item.get("provider_config_key") == provider_config_key:
                assert row["kind"] == "delivery"
                found.append({**item, "environment_id": row["environment_id"]})
        return found

    async def settings(self, changes: dict[str, Any], *, env: str = "dev") -> None:
        status, answer = await self.call("PATCH", SETTINGS_ROUTE, changes, env=env)
        # in force at once: this replica dropped its cached copy
        assert status == 200, answer


@pytest.fixture(scope="module")
async def oauth1() -> AsyncIterator[OAuth1Provider]:
    async with OAuth1Provider.serving() as served:
        yield served


@contextlib.asynccontextmanager
async def _serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()
    async with _serving(_upstream_app(state)) as url:
        state.url = url
        yield state


@pytest.fixture(scope="module")
async def server(
    database_url: str,
    oauth_server: OAuthServer,
    oauth1: OAuth1Provider,
    upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("auth-webhooks")
    providers_file = tmp / "providers.yaml"
    providers_file.write_text(providers_yaml(oauth_server, oauth1, upstream))
    port, suffix = free_port(), uuid.uuid4().hex[:8]
    schema = f"nango_authwh_{suffix}"
    keys = {"dev": str(uuid.uuid4()), "prod": str(uuid.uuid4())}
    env = {
        "NANGO_DATABASE_URL": database_url,
        "NANGO_DB_SCHEMA": schema,
        "NANGO_LOGS_DATABASE_SCHEMA": f"nango_authwh_logs_{suffix}",
        "SERVER_PORT": str(port),
        "NANGO_SERVER_GRPC_PORT": str(free_port()),
        "NANGO_SERVER_URL": f"http://127.0.0.1:{port}",
        "NANGO_INTERNAL_TOKEN": "internal-token-for-tests-0123456789",
        "NANGO_ENCRYPTION_KEY": generate_key(),
        "NANGO_OUTBOUND_URL_POLICY_OAUTH": '{"blockLoopback": false}',
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp),
        "NANGO_SECRET_KEY_DEV": keys["dev"],
        "NANGO_SECRET_KEY_PROD": keys["prod"],
        "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
        "NANGO_PROVIDERS_FILE": str(providers_file),
        "FLAG_API_RATE_LIMIT_ENABLED": "false",
        # nothing listens there: the outbox keeps what the server wrote
        "JOBS_SERVICE_URL": f"127.0.0.1:{free_port()}",
        "ORCHESTRATOR_SERVICE_URL": f"127.0.0.1:{free_port()}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = load(ServerSettings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    url = f"http://127.0.0.1:{port}"
    upstream.setup_url = url + "/oauth/callback"
    pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema}, min_size=1, max_size=2)
    try:
        await _wait_healthy(url, task)
        info = Server(url, schema, keys, pool)
        await info.settings({"primary_url": PRIMARY, "secondary_url": SECONDARY})
        yield info
    finally:
        await pool.close()
        stop.set()
        await asyncio.wait_for(task, 15)


async def _wait_healthy(url: str, task: asyncio.Task[None]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if task.done():
                task.result()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError("server did not become healthy")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


@pytest.fixture(scope="module")
def user(oauth_server: OAuthServer) -> tuple[str, str]:
    username, password = f"user-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    oauth_server.create_user(username, password)
    return username, password


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


async def _popup(http: aiohttp.ClientSession, server: Server, key: str, token: str, **query: str) -> str:
    """Start the popup flow: where it sends the browser."""
    params = {"connect_session_token": token, **query}
    async with http.get(f"{server.url}/oauth/connect/{key}", params=params, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def _sign_in(http: aiohttp.ClientSession, url: str, user: tuple[str, str], callback_url: str) -> str:
    """Drive the authorization server's login (its app skips consent) until it redirects to the callback."""
    for _ in range(8):
        async with http.get(url, allow_redirects=False) as response:
            if response.status in (301, 302, 303):
                url = urljoin(url, response.headers["Location"])
                if url.startswith(callback_url):
                    return url
                continue
            page = await response.text()
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        follow = re.search(r'name="next" value="([^"]*)"', page)
        assert csrf is not None
        assert follow is not None
        form = {
            "csrfmiddlewaretoken": csrf.group(1),
            "username": user[0],
            "password": user[1],
            "next": html.unescape(follow.group(1)),
        }
        async with http.post(url, data=form, allow_redirects=False, headers={"Referer": url}) as response:
            assert response.status == 302, await response.text()
            url = urljoin(url, response.headers["Location"])
    raise AssertionError("the authorization server never redirected to the callback")


async def _callback(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url, allow_redirects=False) as response:
        await response.read()
        return response.status


SESSION_TAGS = {"end_user_id": "user-1", "end_user_email": "ada@example.com"}
SESSION_END_USER = {"endUserId": "user-1", "endUserEmail": "ada@example.com", "tags": {}}


def _expected(key: str, connection_id: str, provider: str, auth_mode: str, **extra: Any) -> dict[str, Any]:
    return {
        "from": "nango",
        "type": "auth",
        "operation": "creation",
        "connectionId": connection_id,
        "providerConfigKey": key,
        "authMode": auth_mode,
        "provider": provider,
        "environment": "dev",
        "success": True,
        "tags": SESSION_TAGS,
        "endUser": SESSION_END_USER,
        **extra,
    }


def _only(items: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(items) == 1, items
    return items[0]


async def test_oauth2_popup_creation_then_reconnect_override(
    http: aiohttp.ClientSession, server: Server, oauth_server: OAuthServer, user: tuple[str, str]
) -> None:
    app = oauth_server.create_app(name="wh", redirect_uris=[server.callback_url], skip_authorization=True)
    key = await server.integration(
        "test-dot", {"type": "OAUTH2", "client_id": app.client_id, "client_secret": app.client_secret, "scopes": "read"}
    )
    location = await _popup(http, server, key, await server.session())
    assert await _callback(http, await _sign_in(http, location, user, server.callback_url)) == 200
    # written with the connection: there the moment the callback answered
    created = _only(await server.webhooks(key))
    connection_id = created["connection_id"]
    assert created["type"] == "auth"
    assert created["urls"] == [PRIMARY, SECONDARY]
    assert created["headers"] == {}
    assert uuid.UUID(created["event_id"])
    assert created["environment_id"] == await server.pool.fetchval("SELECT id FROM environments WHERE name = 'dev'")
    assert created["body"] == _expected(key, connection_id, "test-dot", "OAUTH2")

    # the end user re-authorises the same connection: `override`, with no toggle of its own
    await server.settings({"on_auth_creation": False})
    try:
        status, answer = await server.call(
            "POST",
            "/connect/sessions/reconnect",
            {"connection_id": connection_id, "integration_id": key, "end_user": {"id": "user-1"}},
        )
        assert status == 201, answer
        location = await _popup(http, server, key, answer["data"]["token"])
        assert await _callback(http, await _sign_in(http, location, user, server.callback_url)) == 200
    finally:
        await server.settings({"on_auth_creation": True})
    items = await server.webhooks(key)
    assert len(items) == 2
    override = items[1]["body"]
    assert (override["operation"], override["success"], override["connectionId"]) == ("override", True, connection_id)
    assert items[1]["event_id"] != created["event_id"]


async def test_refused_authorization_sends_a_failed_creation(
    http: aiohttp.ClientSession, server: Server, oauth_server: OAuthServer
) -> None:
    app = oauth_server.create_app(name="wh-denied", redirect_uris=[server.callback_url])
    key = await server.integration(
        "test-dot", {"type": "OAUTH2", "client_id": app.client_id, "client_secret": app.client_secret, "scopes": "read"}
    )
    location = await _popup(
        http, server, key, await server.session(webhook_url_override="https://override.example.com/session")
    )
    state = _query(location)["state"]
    query = {"state": state, "error": "access_denied", "error_description": "The user said no"}
    assert await _callback(http, f"{server.callback_url}?{urlencode(query)}") == 400
    failed = _only(await server.webhooks(key))
    assert failed["urls"] == ["https://override.example.com/session"]
    body = failed["body"]
    assert body["operation"] == "creation"
    assert body["success"] is False
    assert body["error"]["type"] == "access_denied"
    assert "The user said no" in body["error"]["description"]
    assert (body["authMode"], body["provider"], body["environment"]) == ("OAUTH2", "test-dot", "dev")
    assert body["endUser"] == SESSION_END_USER
    assert body["tags"] == SESSION_TAGS

    # a code the authorization server does not know: the exchange fails
    location = await _popup(http, server, key, await server.session())
    state = _query(location)["state"]
    assert await _callback(http, f"{server.callback_url}?state={state}&code=forged") == 400
    items = await server.webhooks(key)
    assert len(items) == 2
    assert items[1]["body"]["success"] is False
    assert items[1]["body"]["error"]["type"] == "token_exchange_failed"
    assert items[1]["urls"] == [PRIMARY, SECONDARY]
    assert (
        await server.pool.fetchval(
            "SELECT count(*) FROM connections c JOIN integrations i ON i.id = c.integration_id WHERE i.unique_key = $1",
            key,
        )
        == 0
    )

    # creation toggled off: neither successes nor failures are announced
    await server.settings({"on_auth_creation": False})
    try:
        location = await _popup(http, server, key, await server.session())
        state = _query(location)["state"]
        assert await _callback(http, f"{server.callback_url}?state={state}&error=access_denied") == 400
    finally:
        await server.settings({"on_auth_creation": True})
    assert len(await server.webhooks(key)) == 2


async def test_oauth1_and_app_install_popups(
    http: aiohttp.ClientSession, server: Server, oauth1: OAuth1Provider, upstream: Upstream
) -> None:
    consumer = oauth1.consumer()
    key = await server.integration(
        "test-oauth1", {"type": "OAUTH1", "client_id": consumer.key, "client_secret": consumer.secret}
    )
    for credentials in (
        None,
        {"type": "APP", "app_id": APP_ID, "app_link": upstream.url + "/apps/test", "private_key": private_pem(APP_KEY)},
    ):
        if credentials is not None:
            key = await server.integration("test-app", credentials)
        location = await _popup(http, server, key, await server.session())
        # the provider's authorize (OAuth 1.0a) or install (GitHub App) page sends the browser back
        async with http.get(location, allow_redirects=False) as response:
            assert response.status == 302
            callback_url = response.headers["Location"]
        assert await _callback(http, callback_url) == 200
        body = _only(await server.webhooks(key))["body"]
        provider, auth_mode = ("test-app", "APP") if credentials else ("test-oauth1", "OAUTH1")
        assert body == _expected(key, body["connectionId"], provider, auth_mode)


async def test_every_direct_auth_route(server: Server) -> None:
    flows: list[tuple[str, str, Any, dict[str, str], str]] = [
        ("test-apikey", "/api-auth/api-key/{pck}", {"apiKey": "k-" + secrets.token_hex(4)}, {}, "API_KEY"),
        ("test-basic", "/api-auth/basic/{pck}", {"username": "u", "password": "p"}, {}, "BASIC"),
        ("test-cc", "/oauth2/auth/{pck}", {"client_id": "cc-client", "client_secret": "cc-secret"}, {}, "OAUTH2_CC"),
        ("test-jwt", "/auth/jwt/{pck}", {"secret": secrets.token_hex(32), "issuer": "me"}, {}, "JWT"),
        ("test-tba", "/auth/tba/{pck}", {"token_id": "t", "token_secret": "s"}, {"accountId": "123"}, "TBA"),
        ("test-none", "/auth/unauthenticated/{pck}", None, {}, "NONE"),
    ]
    for provider, path, body, params, auth_mode in flows:
        key = await server.integration(provider)
        status, answer = await server.flow(path.format(pck=key), body, token=await server.session(), **params)
        assert status == 200, (provider, answer)
        delivery = _only(await server.webhooks(key))
        assert delivery["body"] == _expected(key, answer["connectionId"], provider, auth_mode), provider
        assert delivery["urls"] == [PRIMARY, SECONDARY]


async def test_imports_and_their_webhook_url_override(server: Server, upstream: Upstream) -> None:
    key = await server.integration("test-dot", {"type": "OAUTH2", "client_id": "c", "client_secret": "s"})
    status, answer = await server.call(
        "POST",
        "/connections",
        {
            "provider_config_key": key,
            "connection_id": "imported",
            "webhook_url_override": "https://override.example.com/conn",
            "tags": {"team": "blue"},
            "end_user": {"id": "eu-9", "email": "eu@example.com", "tags": {"plan": "pro"}},
            "credentials": {"type": "OAUTH2", "access_token": "tok"},
        },
    )
    assert status == 201, answer
    delivery = _only(await server.webhooks(key))
    assert delivery["urls"] == ["https://override.example.com/conn"]
    body = delivery["body"]
    assert (body["operation"], body["authMode"], body["connectionId"]) == ("creation", "OAUTH2", "imported")
    assert body["tags"]["team"] == "blue"
    assert body["endUser"]["endUserId"] == "eu-9"
    assert body["endUser"]["endUserEmail"] == "eu@example.com"
    assert body["endUser"]["tags"] == {"plan": "pro"}

    # imported again: an override, still to the connection's own URL
    status, _ = await server.call(
        "POST",
        "/connections",
        {
            "provider_config_key": key,
            "connection_id": "imported",
            "credentials": {"type": "OAUTH2", "access_token": "t2"},
        },
    )
    assert status == 201
    items = await server.webhooks(key)
    assert [i["body"]["operation"] for i in items] == ["creation", "override"]
    assert items[1]["urls"] == ["https://override.example.com/conn"]

    app_key = await server.integration(
        "test-app",
        {"type": "APP", "app_id": APP_ID, "app_link": upstream.url + "/apps/test", "private_key": private_pem(APP_KEY)},
    )
    status, answer = await server.call(
        "POST",
        "/connections",
        {"provider_config_key": app_key, "credentials": {"type": "APP", "app_id": APP_ID, "installation_id": "55"}},
    )
    assert status == 201, answer
    body = _only(await server.webhooks(app_key))["body"]
    assert (body["authMode"], body["operation"], body["success"]) == ("APP", "creation", True)
    assert "endUser" not in body
    assert "tags" not in body


async def test_no_url_no_webhook_unless_the_session_names_one(server: Server) -> None:
    """prod has no webhook URL: nothing is written, except to a connect session's own URL."""
    key = await server.integration("test-none", env="prod")
    status, answer = await server.flow(f"/auth/unauthenticated/{key}", None, token=await server.session(env="prod"))
    assert status == 200, answer
    assert await server.webhooks(key) == []

    token = await server.session(env="prod", webhook_url_override="https://override.example.com/prod")
    status, answer = await server.flow(f"/auth/unauthenticated/{key}", None, token=token)
    assert status == 200, answer
    delivery = _only(await server.webhooks(key))
    assert delivery["urls"] == ["https://override.example.com/prod"]
    assert delivery["body"]["environment"] == "prod"
    assert delivery["body"]["connectionId"] == answer["connectionId"]


async def test_failed_refresh_sends_a_refresh_error(server: Server, oauth_server: OAuthServer) -> None:
    app = oauth_server.create_app(name="wh-refresh", redirect_uris=[server.callback_url])
    key = await server.integration(
        "test-dot", {"type": "OAUTH2", "client_id": app.client_id, "client_secret": app.client_secret, "scopes": "read"}
    )
    expired = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for connection_id in ("stale", "quiet"):
        status, answer = await server.call(
            "POST",
            "/connections",
            {
                "provider_config_key": key,
                "connection_id": connection_id,
                "credentials": {
                    "type": "OAUTH2",
                    "access_token": "old",
                    "refresh_token": "unknown-to-the-server",
                    "expires_at": expired,
                },
            },
        )
        assert status == 201, answer
    status, answer = await server.call("GET", f"/connections/stale?provider_config_key={key}")
    assert status >= 400, answer
    items = await server.webhooks(key)
    assert [i["body"]["operation"] for i in items] == ["creation", "creation", "refresh"]
    refresh = items[2]["body"]
    assert refresh["success"] is False
    assert refresh["connectionId"] == "stale"
    assert refresh["error"]["type"] == "invalid_grant"
    assert refresh["error"]["description"]
    assert (refresh["authMode"], refresh["provider"], refresh["environment"]) == ("OAUTH2", "test-dot", "dev")
    assert items[2]["urls"] == [PRIMARY, SECONDARY]
    # the refresh error was recorded with it, in the same transaction
    errors = await server.pool.fetchval(
        """SELECT count(*) FROM connection_errors e JOIN connections c ON c.id = e.connection_id
           WHERE c.connection_id = 'stale'"""
    )
    assert errors == 1

    await server.settings({"on_auth_refresh_error": False})
    try:
        status, _ = await server.call("GET", f"/connections/quiet?provider_config_key={key}")
        assert status >= 400
    finally:
        await server.settings({"on_auth_refresh_error": True})
    assert len(await server.webhooks(key)) == 3
