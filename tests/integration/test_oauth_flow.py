"""The OAuth 2.0 popup flow's server side against real Postgres and the strict test authorization server:
authorize redirect (PKCE, state, scope, cookie), callback (single-use state, provider errors, code exchange),
error pages (HTTP 400, escaped) and the websocket outcome. The browser-driven flow is in tests/browser."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import asyncpg
import pytest
import yaml

from nango.config import load
from nango.crypto import generate_key
from nango.providers import Provider
from nango.server.app import run
from nango.server.auth.oauth2_flow import authorization_url, code_challenge
from nango.server.settings import ServerSettings
from tests.conftest import free_port
from tests.support.fixtures import oauth_server
from tests.support.oauth_server.harness import OAuthApp, OAuthServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

__all__ = ["oauth_server"]  # a fixture, imported so pytest finds it

WAIT = 10.0  # seconds: the bound of every single wait in this module
PROVIDER = "test-dot"
TENANT_PROVIDER = "test-dot-tenant"


@dataclass
class Server:
    url: str
    schema: str
    logs_schema: str
    dev_key: str

    @property
    def callback_url(self) -> str:
        return self.url + "/oauth/callback"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/"


def providers_yaml(authorization_server: OAuthServer) -> str:
    base = {
        "display_name": "Test DOT",
        "categories": ["dev-tools"],
        "docs": "https://example.com/docs",
        "auth_mode": "OAUTH2",
        "token_url": authorization_server.token_url,
        "proxy": {"base_url": authorization_server.url},
    }
    providers = {
        PROVIDER: {**base, "authorization_url": authorization_server.authorize_url, "scope_separator": " "},
        TENANT_PROVIDER: {
            **base,
            "authorization_url": authorization_server.authorize_url + "?tenant=${connectionConfig.tenant}",
            "token_response_metadata": ["scope", "token_type"],
        },
    }
    return yaml.safe_dump(providers)


@contextlib.asynccontextmanager
async def serving(
    database_url: str, authorization_server: OAuthServer, tmp: Path, **settings: str
) -> AsyncIterator[Server]:
    """The server in-process on its own schemas, with the test providers and `settings` (environment variables)."""
    providers_file = tmp / "providers.yaml"
    providers_file.write_text(providers_yaml(authorization_server))
    port, suffix = free_port(), uuid.uuid4().hex[:8]
    info = Server(f"http://127.0.0.1:{port}", f"nango_oauth_{suffix}", f"nango_oauth_logs_{suffix}", str(uuid.uuid4()))
    env = {
        "NANGO_DATABASE_URL": database_url,
        "NANGO_DB_SCHEMA": info.schema,
        "NANGO_LOGS_DATABASE_SCHEMA": info.logs_schema,
        "SERVER_PORT": str(port),
        "NANGO_SERVER_GRPC_PORT": str(free_port()),
        "NANGO_SERVER_URL": info.url,
        "NANGO_INTERNAL_TOKEN": "internal-token-for-tests-0123456789",
        "NANGO_ENCRYPTION_KEY": generate_key(),
        "NANGO_OUTBOUND_URL_POLICY_OAUTH": '{"blockLoopback": false}',  # token servers on 127.0.0.1
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp),
        "NANGO_SECRET_KEY_DEV": info.dev_key,
        "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
        "NANGO_PROVIDERS_FILE": str(providers_file),
        **settings,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        loaded = load(ServerSettings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(loaded, stop))
    try:
        await _wait_healthy(info.url, task)
        yield info
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.fixture(scope="module")
async def server(
    database_url: str, oauth_server: OAuthServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    async with serving(database_url, oauth_server, tmp_path_factory.mktemp("oauth-flow")) as info:
        yield info


@pytest.fixture(scope="module")
async def enforcing_server(
    database_url: str, oauth_server: OAuthServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("oauth-flow-enforcing")
    async with serving(database_url, oauth_server, tmp, NANGO_OAUTH_STATE_COOKIE_ENFORCED="true") as info:
        yield info


async def _wait_healthy(url: str, task: asyncio.Task[None]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for _ in range(300):
            if task.done():
                task.result()
            try:
                async with session.get(url + "/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("server did not become healthy")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A browser-like client: keeps cookies for 127.0.0.1 (the state cookie, the authorization server's login)."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


@pytest.fixture(scope="module")
def user(oauth_server: OAuthServer) -> tuple[str, str]:
    username, password = f"user-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    oauth_server.create_user(username, password)
    return username, password


async def api(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {server.dev_key}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session,
        session.request(method, server.url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def integration(server: Server, provider: str, app: OAuthApp | None, *, scopes: str | None = "read,write") -> str:
    key = f"{provider}-{secrets.token_hex(4)}"
    body: dict[str, Any] = {"provider": provider, "unique_key": key}
    if app is not None:
        credentials = {"type": "OAUTH2", "client_id": app.client_id, "client_secret": app.client_secret}
        body["credentials"] = {**credentials, **({"scopes": scopes} if scopes else {})}
    status, answer = await api(server, "POST", "/integrations", body)
    assert status in (200, 201), answer
    return key


async def session_token(server: Server) -> str:
    status, answer = await api(server, "POST", "/connect/sessions", {"end_user": {"id": "end-user-1"}})
    assert status == 201, answer
    return str(answer["data"]["token"])


async def connect(
    http: aiohttp.ClientSession, server: Server, key: str, token: str, **query: str
) -> aiohttp.ClientResponse:
    params = {"connect_session_token": token, **query}
    async with http.get(f"{server.url}/oauth/connect/{key}", params=params, allow_redirects=False) as response:
        await response.read()
        return response


async def sign_in_and_consent(http: aiohttp.ClientSession, url: str, user: tuple[str, str], callback_url: str) -> str:
    """Drives the authorization server over HTTP (its app skips consent): the callback URL it redirects to."""
    for _ in range(8):
        async with http.get(url, allow_redirects=False) as response:
            if response.status in (301, 302, 303):
                url = urljoin(url, response.headers["Location"])
                if url.startswith(callback_url):
                    return url
                continue
            page = await response.text()
        assert 'data-oauth-as-page="login"' in page, page
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


async def callback(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, allow_redirects=False) as response:
        return response.status, await response.text()


async def ws_client(http: aiohttp.ClientSession, server: Server) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await http.ws_connect(server.ws_url, timeout=aiohttp.ClientWSTimeout(ws_receive=WAIT))
    ack = await ws.receive_json(timeout=WAIT)
    assert ack["message_type"] == "connection_ack"
    return ws, str(ack["ws_client_id"])


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def error_page_shows(page: str, error_type: str) -> None:
    assert "Authorization failed" in page
    assert f'data-error-type="{error_type}"' in page


async def test_authorize_redirect_then_callback_stores_the_connection(
    http: aiohttp.ClientSession, server: Server, oauth_server: OAuthServer, user: tuple[str, str], database_url: str
) -> None:
    app = oauth_server.create_app(name="flow", redirect_uris=[server.callback_url], skip_authorization=True)
    key = await integration(server, PROVIDER, app)
    ws, ws_client_id = await ws_client(http, server)

    response = await connect(http, server, key, await session_token(server), ws_client_id=ws_client_id)
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith(oauth_server.authorize_url + "?")
    params = query_of(location)
    state = params["state"]
    assert uuid.UUID(state)
    assert params["response_type"] == "code"
    assert params["client_id"] == app.client_id
    assert params["redirect_uri"] == server.callback_url
    assert params["scope"] == "read write"
    assert "scope=read%20write" in location
    assert params["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", params["code_challenge"])
    cookie = response.cookies[f"oauth2-{state}"]
    assert cookie.value == "1"
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["max-age"] == "3600"

    conn = await asyncpg.connect(database_url, server_settings={"search_path": server.schema})
    try:
        sealed = await conn.fetchval("SELECT secrets_sealed FROM oauth_sessions WHERE id = $1", uuid.UUID(state))
    finally:
        await conn.close()
    assert sealed.startswith("v1.")

    status, page = await callback(http, await sign_in_and_consent(http, location, user, server.callback_url))
    assert status == 200, page
    assert 'data-status="success"' in page
    message = await ws.receive_json(timeout=WAIT)
    await ws.close()
    assert message["message_type"] == "success"
    assert message["provider_config_key"] == key
    assert message["is_pending"] is False
    connection_id = message["connection_id"]

    status, connection = await api(server, "GET", f"/connections/{connection_id}?provider_config_key={key}")
    assert status == 200, connection
    credentials = connection["credentials"]
    assert credentials["type"] == "OAUTH2"
    assert credentials["expires_at"]
    assert connection["end_user"]["id"] == "end-user-1"
    assert oauth_server.stats(app.client_id)["authorization_code_grants"] == 1
    async with http.get(oauth_server.me_url, headers={"Authorization": f"Bearer {credentials['access_token']}"}) as r:
        assert r.status == 200
        assert (await r.json())["client_id"] == app.client_id

    # the state was used: a replay gets the error page and no second exchange
    status, page = await callback(http, f"{server.callback_url}?state={state}&code=replayed")
    assert status == 400
    error_page_shows(page, "invalid_state")
    assert oauth_server.stats(app.client_id)["authorization_code_grants"] == 1


@pytest.mark.parametrize("state", [str(uuid.uuid4()), "not-a-uuid", "<script>alert(1)</script>", ""])
async def test_forged_state_gets_the_error_page(http: aiohttp.ClientSession, server: Server, state: str) -> None:
    status, page = await callback(http, f"{server.callback_url}?state={state}&code=abc")
    assert status == 400
    error_page_shows(page, "invalid_state")
    assert "<script>alert" not in page


async def test_provider_error_is_passed_through_escaped(
    http: aiohttp.ClientSession, server: Server, oauth_server: OAuthServer
) -> None:
    app = oauth_server.create_app(name="denied", redirect_uris=[server.callback_url])
    key = await integration(server, PROVIDER, app)
    ws, ws_client_id = await ws_client(http, server)
    response = await connect(http, server, key, await session_token(server), ws_client_id=ws_client_id)
    state = query_of(response.headers["Location"])["state"]

    # another browser (no state cookie): only measured, the provider's answer still decides
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as other,
        other.get(
            server.callback_url,
            params={"state": state, "error": "access_denied", "error_description": "<script>alert('x')</script>"},
        ) as answer,
    ):
        status, page = answer.status, await answer.text()
        csp = answer.headers["Content-Security-Policy"]
    assert status == 400
    error_page_shows(page, "access_denied")
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "default-src 'none'" in csp
    assert "'unsafe-inline'" not in csp

    message = await ws.receive_json(timeout=WAIT)
    await ws.close()
    assert message["message_type"] == "error"
    assert message["error_type"] == "access_denied"
    assert message["provider_config_key"] == key
    assert "<script>alert('x')</script>" in message["error_desc"]
    assert oauth_server.stats(app.client_id)["authorization_code_grants"] == 0

    status, page = await callback(http, f"{server.callback_url}?state={state}&code=late")
    assert status == 400
    error_page_shows(page, "invalid_state")


async def test_missing_connection_config_is_named(
    http: aiohttp.ClientSession, server: Server, oauth_server: OAuthServer
) -> None:
    app = oauth_server.create_app(name="tenant", redirect_uris=[server.callback_url])
    key = await integration(server, TENANT_PROVIDER, app)
    ws, ws_client_id = await ws_client(http, server)
    response = await connect(http, server, key, await session_token(server), ws_client_id=ws_client_id)
    assert response.status == 400
    page = await response.text()
    error_page_shows(page, "invalid_connection_config")
    assert "tenant" in page
    message = await ws.receive_json(timeout=WAIT)
    await ws.close()
    assert (message["message_type"], message["error_type"]) == ("error", "invalid_connection_config")
    assert "tenant" in message["error_desc"]

    response = await connect(http, server, key, await session_token(server), **{"params[tenant]": "acme corp"})
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith(oauth_server.authorize_url + "?tenant=acme%20corp&response_type=code&")


async def test_authorization_params_and_scope_override(
    http: aiohttp.ClientSession, server: Server, oauth_server: OAuthServer
) -> None:
    app = oauth_server.create_app(name="params", redirect_uris=[server.callback_url])
    key = await integration(server, PROVIDER, app, scopes=None)
    query = {"authorization_params[prompt]": "consent", "authorization_params[access_type]": "offline"}
    response = await connect(http, server, key, await session_token(server), **query)
    params = query_of(response.headers["Location"])
    assert (params["prompt"], params["access_type"]) == ("consent", "offline")
    assert params["scope"] == ""


@pytest.mark.parametrize(
    ("provider", "error_type"), [("algolia", "invalid_auth_mode"), (PROVIDER, "invalid_provider_config")]
)
async def test_unusable_integrations_get_the_error_page(
    http: aiohttp.ClientSession, server: Server, provider: str, error_type: str
) -> None:
    key = await integration(server, provider, None)
    response = await connect(http, server, key, await session_token(server))
    assert response.status == 400
    error_page_shows(await response.text(), error_type)


async def test_unknown_integration_and_bad_token(http: aiohttp.ClientSession, server: Server) -> None:
    response = await connect(http, server, "no-such-integration", await session_token(server))
    assert response.status == 400
    error_page_shows(await response.text(), "unknown_provider_config")
    async with http.get(f"{server.url}/oauth/connect/x", params={"connect_session_token": "nope"}) as answer:
        assert answer.status == 401
        assert (await answer.json())["error"]["code"] == "invalid_connect_session_token_format"


async def test_websocket_path_without_upgrade_is_not_a_500(http: aiohttp.ClientSession, server: Server) -> None:
    async with http.get(server.url + "/") as response:
        assert response.status == 426
        assert (await response.json())["error"]["code"] == "upgrade_required"


async def test_websocket_closes_when_the_client_leaves(http: aiohttp.ClientSession, server: Server) -> None:
    ws, ws_client_id = await ws_client(http, server)
    await ws.close()
    other, other_id = await ws_client(http, server)
    assert other_id != ws_client_id
    await other.close()


async def failed_auth_operations(server: Server, database_url: str, key: str) -> list[str]:
    """The error types of the failed auth operations recorded for an integration (the log is written in batches)."""
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(int(WAIT / 0.1)):
            rows = await conn.fetch(
                f"""SELECT error FROM {server.logs_schema}.operations
                    WHERE type = 'auth' AND state = 'failed' AND provider_config_key = $1""",
                key,
            )
            if rows:
                return [json.loads(row["error"])["type"] for row in rows]
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return []


async def test_a_refused_code_is_a_token_exchange_failure(
    http: aiohttp.ClientSession, server: Server, oauth_server: OAuthServer, database_url: str
) -> None:
    app = oauth_server.create_app(name="bad-code", redirect_uris=[server.callback_url])
    key = await integration(server, PROVIDER, app)
    ws, ws_client_id = await ws_client(http, server)
    response = await connect(http, server, key, await session_token(server), ws_client_id=ws_client_id)
    state = query_of(response.headers["Location"])["state"]

    status, page = await callback(http, f"{server.callback_url}?state={state}&code=not-a-code")
    assert status == 400
    error_page_shows(page, "token_exchange_failed")
    assert "invalid_grant" in page
    assert app.client_secret not in page
    message = await ws.receive_json(timeout=WAIT)
    await ws.close()
    assert (message["message_type"], message["error_type"]) == ("error", "token_exchange_failed")
    assert app.client_secret not in message["error_desc"]
    assert await failed_auth_operations(server, database_url, key) == ["token_exchange_failed"]


async def test_enforced_state_cookie_refuses_another_browser(
    http: aiohttp.ClientSession, enforcing_server: Server, oauth_server: OAuthServer
) -> None:
    server = enforcing_server
    app = oauth_server.create_app(name="cookie", redirect_uris=[server.callback_url])
    key = await integration(server, PROVIDER, app)
    response = await connect(http, server, key, await session_token(server))
    state = query_of(response.headers["Location"])["state"]

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as other,
        other.get(server.callback_url, params={"state": state, "code": "abc"}) as answer,
    ):
        assert answer.status == 400
        error_page_shows(await answer.text(), "missing_state_cookie")
    # the state is spent even so: the browser that started the flow must start again
    status, page = await callback(http, f"{server.callback_url}?state={state}&code=abc")
    assert status == 400
    error_page_shows(page, "invalid_state")


def provider_with(**fields: Any) -> Provider:
    return Provider.model_validate(
        {
            "display_name": "P",
            "categories": ["other"],
            "docs": "https://example.com",
            "auth_mode": "OAUTH2",
            "authorization_url": "https://p.example/auth",
            "token_url": "https://p.example/token",
            **fields,
        }
    )


def build(provider: Provider, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "client_id": "cid",
        "redirect_uri": "https://nango.example/oauth/callback",
        "scopes": ["a", "b:c"],
        "state": "s1",
        "connection_config": {"subdomain": "acme"},
        "authorization_params": {},
        "user_scope": [],
        "verifier": "v" * 64,
        **overrides,
    }
    return authorization_url(provider, **arguments)


def test_authorize_url_rules() -> None:
    plain = build(
        provider_with(authorization_params={"prompt": "consent", "audience": "${connectionConfig.subdomain}"})
    )
    assert plain.startswith(
        "https://p.example/auth?response_type=code&client_id=cid&redirect_uri=https%3A%2F%2Fnango.example%2Foauth"
        "%2Fcallback&scope=a%20b%3Ac&state=s1&prompt=consent&audience=acme&code_challenge="
    )
    assert plain.endswith(f"code_challenge={code_challenge('v' * 64)}&code_challenge_method=S256")

    removed = build(provider_with(authorization_params={"prompt": "consent"}), authorization_params={"prompt": None})
    assert "prompt" not in removed
    no_pkce = build(provider_with(disable_pkce=True), user_scope=["chat:write", "users:read"])
    assert "code_challenge" not in no_pkce
    assert no_pkce.endswith("&user_scope=chat%3Awrite%2Cusers%3Aread")
    raw = build(provider_with(authorization_url_skip_encode=["scopes"], scope_separator=","))
    assert raw.endswith("&scope=a,b:c")
    assert raw.count("scope=") == 1
    empty = build(provider_with(authorization_url_skip_empty=True), scopes=[])
    assert "scope" not in empty
    fragment = build(provider_with(authorization_url_fragment="/login"))
    assert fragment.startswith("https://p.example/auth#/login?response_type=code&")
    replaced = build(provider_with(authorization_url_replacements={"response_type=code": "response_type=code+id"}))
    assert "response_type=code+id&" in replaced
    templated = build(provider_with(authorization_url="https://${connectionConfig.subdomain}.p.example/auth?x=1"))
    assert templated.startswith("https://acme.p.example/auth?x=1&response_type=code&")


async def test_client_override_is_used_for_the_exchange_and_the_refresh(
    http: aiohttp.ClientSession, server: Server, oauth_server: OAuthServer, user: tuple[str, str]
) -> None:
    default = oauth_server.create_app(name="default", redirect_uris=[server.callback_url], skip_authorization=True)
    own = oauth_server.create_app(name="own", redirect_uris=[server.callback_url], skip_authorization=True)
    key = await integration(server, PROVIDER, default)
    ws, ws_client_id = await ws_client(http, server)
    overrides = {
        "credentials[oauth_client_id_override]": own.client_id,
        "credentials[oauth_client_secret_override]": own.client_secret,
    }
    response = await connect(http, server, key, await session_token(server), ws_client_id=ws_client_id, **overrides)
    location = response.headers["Location"]
    assert query_of(location)["client_id"] == own.client_id

    status, page = await callback(http, await sign_in_and_consent(http, location, user, server.callback_url))
    assert status == 200, page
    message = await ws.receive_json(timeout=WAIT)
    await ws.close()
    connection_id = message["connection_id"]
    assert oauth_server.stats(own.client_id)["authorization_code_grants"] == 1

    path = f"/connections/{connection_id}?provider_config_key={key}&force_refresh=true"
    status, connection = await api(server, "GET", path)
    assert status == 200, connection
    assert connection["credentials"]["config_override"]["client_id"] == own.client_id
    assert own.client_secret not in str(connection["connection_config"])
    assert oauth_server.stats(own.client_id)["refresh_grants"] == 1
    assert oauth_server.stats(default.client_id) == {
        "authorization_code_grants": 0,
        "refresh_grants": 0,
        "client_credentials_grants": 0,
    }
