"""The popup route's other OAuth-family modes against real Postgres and local providers, walked the way the popup
walks them (redirects followed one by one): OAuth 1.0a (OAUTH1) against a provider built from oauthlib's server
endpoints (request token, authorize, access token, a protected `/me`), and GitHub App installs (APP, CUSTOM)
against a local GitHub-like API that checks the RS256 app JWT and plays the install page's redirect back.

Each flow is checked where a user notices it: the websocket outcome, the callback page, the stored credentials
(and that the provider accepts them), replayed and forged callbacks, and the provider's refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import asyncpg
import jwt
import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import SIGNATURE_PLAINTEXT, SIGNATURE_RSA  # type: ignore[import-untyped]

from nango.config import load
from nango.crypto import generate_key
from nango.server.app import run
from nango.server.settings import ServerSettings
from tests.conftest import free_port
from tests.support.oauth1_provider import Consumer, OAuth1Provider, private_pem

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WAIT = 10.0  # seconds: the bound of every single wait in this module
APP_ID = "31337"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


APP_KEY = _rsa_key()
CONSUMER_RSA_KEY = _rsa_key()


# ---------------------------------------------------------------------------------------------------------------
# The GitHub-like API: install pages that redirect back, installation tokens for a valid app JWT, user tokens
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class GitHub:
    url: str
    # set once our server is up: where the install pages send the browser back to (the app's Setup URL)
    setup_url: str = ""
    oauth_client: tuple[str, str] = ("Iv1.client0000000000", "app-oauth-secret")
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    app_jwts: list[dict[str, Any]] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)
    user_token_grants: int = 0

    def app_link(self, behaviour: str) -> str:
        return f"{self.url}/apps/{behaviour}"


# install page behaviour -> the query GitHub sends back to the Setup URL (besides the state)
INSTALL_OUTCOMES: dict[str, dict[str, str]] = {
    "installs": {"installation_id": "1001", "setup_action": "install"},
    "needs-approval": {"setup_action": "request"},
    "not-found": {"installation_id": "404", "setup_action": "install"},
    "authorizes-user": {"installation_id": "1002", "setup_action": "install", "code": ""},
    "malformed": {"installation_id": "../../user", "setup_action": "install"},
}


def _github_app(gh: GitHub) -> web.Application:
    async def install_page(request: web.Request) -> web.Response:
        outcome = dict(INSTALL_OUTCOMES[request.match_info["behaviour"]])
        if "code" in outcome:
            outcome["code"] = secrets.token_hex(10)
            gh.codes.add(outcome["code"])
        query = urlencode({**outcome, "state": request.query.get("state", "")})
        return web.Response(status=302, headers={"Location": f"{gh.setup_url}?{query}"})

    async def installation_token(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(token if scheme == "Bearer" else "", APP_KEY.public_key(), algorithms=["RS256"])
        except jwt.PyJWTError:
            return web.json_response({"message": "A JSON web token could not be decoded"}, status=401)
        if claims.get("iss") != APP_ID or claims["exp"] - claims["iat"] > 600 or claims["iat"] > time.time():
            return web.json_response({"message": "Invalid claims"}, status=401)
        gh.app_jwts.append(claims)
        if request.match_info["installation"] == "404":
            return web.json_response({"message": "Not Found"}, status=404)
        expires_at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"token": f"ghs_{next(gh.counter)}", "expires_at": expires_at, "permissions": {"contents": "read"}}
        return web.json_response(body, status=201)

    async def user_token(request: web.Request) -> web.Response:
        form = await request.post()
        code = str(form.get("code"))
        client = (str(form.get("client_id")), str(form.get("client_secret")))
        if client != gh.oauth_client or code not in gh.codes or "code_verifier" in form:
            return web.json_response({"error": "bad_verification_code", "error_description": "The code is incorrect"})
        gh.codes.discard(code)
        gh.user_token_grants += 1
        n = next(gh.counter)
        return web.json_response(
            {"access_token": f"ghu_{n}", "refresh_token": f"ghr_{n}", "expires_in": 28800, "token_type": "bearer"}
        )

    app = web.Application()
    app.router.add_get("/apps/{behaviour}/installations/new", install_page)
    app.router.add_post("/app/installations/{installation}/access_tokens", installation_token)
    app.router.add_post("/login/oauth/access_token", user_token)
    return app


@contextlib.asynccontextmanager
async def serving_app(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[OAuth1Provider]:
    async with OAuth1Provider.serving() as served:
        yield served


@pytest.fixture(scope="module")
async def github() -> AsyncIterator[GitHub]:
    gh = GitHub("")
    async with serving_app(_github_app(gh)) as url:
        gh.url = url
        yield gh


# ---------------------------------------------------------------------------------------------------------------
# Our server, in-process, with the test providers
# ---------------------------------------------------------------------------------------------------------------


def _provider(auth_mode: str, **fields: Any) -> dict[str, Any]:
    base = {"display_name": "Test", "categories": ["dev-tools"], "docs": "https://example.com/docs"}
    return {**base, "auth_mode": auth_mode, **fields}


def providers_yaml(p: OAuth1Provider, gh: GitHub) -> str:
    oauth1 = {
        "request_url": p.url + "/oauth/request_token",
        "authorization_url": p.url + "/oauth/authorize",
        "token_url": p.url + "/oauth/access_token",
        "proxy": {"base_url": p.url},
    }
    install = {
        "authorization_url": "${connectionConfig.appPublicLink}/installations/new",
        "authorization_url_skip_encode": ["appPublicLink"],
        "proxy": {"base_url": gh.url},
    }
    app_token_url = gh.url + "/app/installations/${connectionConfig.installation_id}/access_tokens"
    providers = {
        # as Trello: scopes joined by commas and `expiration=never` on the authorize URL
        "test-oauth1": _provider(
            "OAUTH1",
            **oauth1,
            signature_method="HMAC-SHA1",
            request_params={"x_auth_access_type": "read"},
            authorization_params={"expiration": "never"},
            scope_separator=",",
        ),
        "test-oauth1-plaintext": _provider(
            "OAUTH1",
            **oauth1,
            signature_method="PLAINTEXT",
            request_http_method="GET",
            token_http_method="GET",
            request_params={"x_auth_access_type": "write"},
        ),
        "test-oauth1-rsa": _provider("OAUTH1", **oauth1, signature_method="RSA-SHA1"),
        "test-oauth1-deny": _provider("OAUTH1", **{**oauth1, "authorization_url": p.url + "/oauth/deny"}),
        "test-github-app": _provider("APP", **install, token_url=app_token_url),
        "test-github-app-oauth": _provider(
            "CUSTOM", **install, token_url={"OAUTH2": gh.url + "/login/oauth/access_token", "APP": app_token_url}
        ),
    }
    return yaml.safe_dump(providers)


@dataclass
class Server:
    url: str
    schema: str
    dev_key: str

    @property
    def callback_url(self) -> str:
        return self.url + "/oauth/callback"


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


@pytest.fixture(scope="module")
async def server(
    database_url: str, provider: OAuth1Provider, github: GitHub, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("oauth1-app")
    providers_file = tmp / "providers.yaml"
    providers_file.write_text(providers_yaml(provider, github))
    port, suffix = free_port(), uuid.uuid4().hex[:8]
    info = Server(f"http://127.0.0.1:{port}", f"nango_oauth1_{suffix}", str(uuid.uuid4()))
    env = {
        "NANGO_DATABASE_URL": database_url,
        "NANGO_DB_SCHEMA": info.schema,
        "NANGO_LOGS_DATABASE_SCHEMA": f"nango_oauth1_logs_{suffix}",
        "SERVER_PORT": str(port),
        "NANGO_SERVER_GRPC_PORT": str(free_port()),
        "NANGO_SERVER_URL": info.url,
        "NANGO_PUBLIC_CONNECT_URL": "http://127.0.0.1:3009",
        "NANGO_INTERNAL_TOKEN": "internal-token-for-tests-0123456789",
        "NANGO_ENCRYPTION_KEY": generate_key(),
        "NANGO_OUTBOUND_URL_POLICY_OAUTH": '{"blockLoopback": false}',  # token servers on 127.0.0.1
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp),
        "NANGO_SECRET_KEY_DEV": info.dev_key,
        "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
        "NANGO_PROVIDERS_FILE": str(providers_file),
        # the proxy may call the local provider
        "NANGO_OUTBOUND_URL_POLICY": json.dumps({"mode": "permissive"}),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        loaded = load(ServerSettings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(loaded, stop))
    github.setup_url = info.callback_url
    try:
        await _wait_healthy(info.url, task)
        yield info
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A browser-like client: keeps cookies for 127.0.0.1 (the state cookie)."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


async def api(server: Server, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session,
        session.request(
            method, server.url + path, json=body, headers={"Authorization": f"Bearer {server.dev_key}", **headers}
        ) as response,
    ):
        return response.status, await response.json()


async def integration(server: Server, provider: str, credentials: dict[str, Any]) -> str:
    key = f"{provider}-{secrets.token_hex(4)}"
    status, answer = await api(
        server, "POST", "/integrations", {"provider": provider, "unique_key": key, "credentials": credentials}
    )
    assert status in (200, 201), answer
    return key


async def oauth1_integration(server: Server, provider: str, consumer: Consumer) -> str:
    credentials = {
        "type": "OAUTH1",
        "client_id": consumer.key,
        "client_secret": consumer.secret,
        "scopes": "read,write",
    }
    return await integration(server, provider, credentials)


def app_credentials(gh: GitHub, behaviour: str) -> dict[str, Any]:
    return {"type": "APP", "app_id": APP_ID, "app_link": gh.app_link(behaviour), "private_key": private_pem(APP_KEY)}


def custom_credentials(gh: GitHub, behaviour: str) -> dict[str, Any]:
    client_id, client_secret = gh.oauth_client
    return {**app_credentials(gh, behaviour), "type": "CUSTOM", "client_id": client_id, "client_secret": client_secret}


async def session_token(server: Server) -> str:
    status, answer = await api(server, "POST", "/connect/sessions", {"end_user": {"id": "end-user-7"}})
    assert status == 201, answer
    return str(answer["data"]["token"])


async def connect(http: aiohttp.ClientSession, server: Server, key: str, **query: str) -> aiohttp.ClientResponse:
    params = {"connect_session_token": await session_token(server), **query}
    async with http.get(f"{server.url}/oauth/connect/{key}", params=params, allow_redirects=False) as response:
        await response.read()
        return response


async def hop(http: aiohttp.ClientSession, url: str) -> str:
    """One redirect of the popup's path: where the page at `url` sends the browser."""
    async with http.get(url, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def callback(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, allow_redirects=False) as response:
        return response.status, await response.text()


async def ws_client(http: aiohttp.ClientSession, server: Server) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await http.ws_connect(server.url + "/", timeout=aiohttp.ClientWSTimeout(ws_receive=WAIT))
    ack = await ws.receive_json(timeout=WAIT)
    assert ack["message_type"] == "connection_ack"
    return ws, str(ack["ws_client_id"])


async def outcome(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message: dict[str, Any] = await ws.receive_json(timeout=WAIT)
    await ws.close()
    return message


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def error_page_shows(page: str, error_type: str) -> None:
    assert "Authorization failed" in page
    assert f'data-error-type="{error_type}"' in page


async def connection(server: Server, key: str, connection_id: str, **flags: str) -> tuple[int, Any]:
    query = urlencode({"provider_config_key": key, **flags})
    return await api(server, "GET", f"/connections/{connection_id}?{query}")


# ---------------------------------------------------------------------------------------------------------------
# OAUTH1
# ---------------------------------------------------------------------------------------------------------------


async def test_oauth1_flow_stores_token_credentials_the_provider_accepts(
    http: aiohttp.ClientSession, server: Server, provider: OAuth1Provider, database_url: str
) -> None:
    consumer = provider.consumer()
    key = await oauth1_integration(server, "test-oauth1", consumer)
    ws, ws_client_id = await ws_client(http, server)

    response = await connect(http, server, key, ws_client_id=ws_client_id)
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith(provider.url + "/oauth/authorize?oauth_token=")
    params = query_of(location)
    assert (params["scope"], params["expiration"]) == ("read,write", "never")
    # the request token was asked with request_params, and its secret is only kept sealed
    assert provider.stores.request_params[-1]["x_auth_access_type"] == "read"
    request_secret = provider.stores.request_tokens[params["oauth_token"]]["secret"]
    state = next(iter(response.cookies)).removeprefix("oauth2-")
    conn = await asyncpg.connect(database_url, server_settings={"search_path": server.schema})
    try:
        row = await conn.fetchrow(
            "SELECT auth_mode, secrets_sealed FROM oauth_sessions WHERE id = $1", uuid.UUID(state)
        )
    finally:
        await conn.close()
    assert row["auth_mode"] == "OAUTH1"
    assert row["secrets_sealed"].startswith("v1.")
    assert request_secret not in row["secrets_sealed"]

    callback_url = await hop(http, location)
    assert callback_url.startswith(f"{server.callback_url}?state={state}&")
    assert {"oauth_token", "oauth_verifier"} <= query_of(callback_url).keys()
    status, page = await callback(http, callback_url)
    assert status == 200, page
    assert 'data-status="success"' in page
    message = await outcome(ws)
    assert (message["message_type"], message["provider_config_key"], message["is_pending"]) == ("success", key, False)

    status, body = await connection(server, key, message["connection_id"])
    assert status == 200, body
    credentials = body["credentials"]
    assert credentials["type"] == "OAUTH1"
    assert credentials["raw"]["oauth_token"] == credentials["oauth_token"]
    assert credentials["raw"]["oauth_token_secret"] == credentials["oauth_token_secret"]
    assert body["end_user"]["id"] == "end-user-7"
    assert provider.stores.issued_access_tokens >= 1
    token, token_secret = credentials["oauth_token"], credentials["oauth_token_secret"]
    assert await provider.me(http, consumer, token, token_secret, "HMAC-SHA1") == 200

    # the proxy signs with the stored token credentials
    headers = {"Connection-Id": message["connection_id"], "Provider-Config-Key": key}
    status, me = await api(server, "GET", "/proxy/me", **headers)
    assert (status, me) == (200, {"screen_name": "ada"})

    # the state was used: a replay gets the error page and no second exchange
    issued = provider.stores.issued_access_tokens
    status, page = await callback(http, callback_url)
    assert status == 400
    error_page_shows(page, "invalid_state")
    assert provider.stores.issued_access_tokens == issued


@pytest.mark.parametrize(
    ("provider_name", "method"), [("test-oauth1-plaintext", SIGNATURE_PLAINTEXT), ("test-oauth1-rsa", SIGNATURE_RSA)]
)
async def test_oauth1_signature_methods(
    http: aiohttp.ClientSession, server: Server, provider: OAuth1Provider, provider_name: str, method: str
) -> None:
    consumer = provider.consumer(rsa_key=CONSUMER_RSA_KEY if method == SIGNATURE_RSA else None)
    key = await oauth1_integration(server, provider_name, consumer)
    ws, ws_client_id = await ws_client(http, server)
    response = await connect(http, server, key, ws_client_id=ws_client_id)
    assert response.status == 302, await response.text()
    status, page = await callback(http, await hop(http, response.headers["Location"]))
    assert status == 200, page
    message = await outcome(ws)
    assert message["message_type"] == "success", message
    status, body = await connection(server, key, message["connection_id"])
    assert status == 200, body
    credentials = body["credentials"]
    assert (
        await provider.me(http, consumer, credentials["oauth_token"], credentials["oauth_token_secret"], method) == 200
    )


async def test_oauth1_refusals(http: aiohttp.ClientSession, server: Server, provider: OAuth1Provider) -> None:
    # a consumer the provider does not know: the request token is refused before the popup leaves us
    consumer = provider.consumer()
    forged = Consumer(consumer.key, "not-the-secret")
    key = await oauth1_integration(server, "test-oauth1", forged)
    ws, ws_client_id = await ws_client(http, server)
    response = await connect(http, server, key, ws_client_id=ws_client_id)
    assert response.status == 400
    page = await response.text()
    error_page_shows(page, "request_token_failed")
    assert forged.secret not in page
    message = await outcome(ws)
    assert (message["message_type"], message["error_type"]) == ("error", "request_token_failed")
    assert forged.secret not in message["error_desc"]

    # the user denies at the provider (`?denied=<token>`, as Twitter answers)
    key = await oauth1_integration(server, "test-oauth1-deny", provider.consumer())
    ws, ws_client_id = await ws_client(http, server)
    response = await connect(http, server, key, ws_client_id=ws_client_id)
    status, page = await callback(http, await hop(http, response.headers["Location"]))
    assert status == 400
    error_page_shows(page, "access_denied")
    message = await outcome(ws)
    assert (message["message_type"], message["error_type"]) == ("error", "access_denied")
    assert message["connection_id"]
    status, body = await connection(server, key, message["connection_id"])
    assert (status, body["error"]["code"]) == (404, "unknown_connection"), body


async def test_oauth1_forged_callbacks(http: aiohttp.ClientSession, server: Server, provider: OAuth1Provider) -> None:
    key = await oauth1_integration(server, "test-oauth1", provider.consumer())

    # another request token than the one this flow was given: refused, and the state is spent
    response = await connect(http, server, key)
    real = query_of(await hop(http, response.headers["Location"]))
    forged = {**real, "oauth_token": secrets.token_hex(15)}
    status, page = await callback(http, f"{server.callback_url}?{urlencode(forged)}")
    assert status == 400
    error_page_shows(page, "invalid_callback")
    status, page = await callback(http, f"{server.callback_url}?{urlencode(real)}")
    assert status == 400
    error_page_shows(page, "invalid_state")

    # the right request token with a wrong verifier: the provider refuses the exchange
    issued = provider.stores.issued_access_tokens
    response = await connect(http, server, key)
    real = query_of(await hop(http, response.headers["Location"]))
    status, page = await callback(http, f"{server.callback_url}?{urlencode({**real, 'oauth_verifier': 'x' * 30})}")
    assert status == 400
    error_page_shows(page, "token_exchange_failed")
    assert provider.stores.issued_access_tokens == issued

    # no state at all, or one nobody issued
    for query in ({"oauth_token": real["oauth_token"], "oauth_verifier": "v"}, {**real, "state": str(uuid.uuid4())}):
        status, page = await callback(http, f"{server.callback_url}?{urlencode(query)}")
        assert status == 400
        error_page_shows(page, "invalid_state")


# ---------------------------------------------------------------------------------------------------------------
# APP and CUSTOM (GitHub App installs)
# ---------------------------------------------------------------------------------------------------------------


async def test_app_install_stores_an_installation_token(
    http: aiohttp.ClientSession, server: Server, github: GitHub
) -> None:
    key = await integration(server, "test-github-app", app_credentials(github, "installs"))
    ws, ws_client_id = await ws_client(http, server)

    response = await connect(http, server, key, ws_client_id=ws_client_id)
    assert response.status == 302, await response.text()
    location = response.headers["Location"]
    state = query_of(location)["state"]
    assert location == f"{github.app_link('installs')}/installations/new?state={state}"
    callback_url = await hop(http, location)
    assert query_of(callback_url) == {"installation_id": "1001", "setup_action": "install", "state": state}
    status, page = await callback(http, callback_url)
    assert status == 200, page
    message = await outcome(ws)
    assert (message["message_type"], message["is_pending"]) == ("success", False)

    status, body = await connection(server, key, message["connection_id"])
    assert status == 200, body
    credentials = body["credentials"]
    assert credentials["type"] == "APP"
    assert credentials["access_token"].startswith("ghs_")
    assert credentials["raw"]["token"] == credentials["access_token"]
    assert credentials["expires_at"]
    assert body["connection_config"] == {
        "installation_id": "1001",
        "app_id": APP_ID,
        "appPublicLink": github.app_link("installs"),
    }
    assert github.app_jwts[-1]["iss"] == APP_ID

    # the state was used
    status, page = await callback(http, callback_url)
    assert status == 400
    error_page_shows(page, "invalid_state")


async def test_app_install_awaiting_approval_is_pending(
    http: aiohttp.ClientSession, server: Server, github: GitHub
) -> None:
    key = await integration(server, "test-github-app", app_credentials(github, "needs-approval"))
    ws, ws_client_id = await ws_client(http, server)
    response = await connect(http, server, key, ws_client_id=ws_client_id)
    status, page = await callback(http, await hop(http, response.headers["Location"]))
    assert status == 200, page
    assert 'data-status="success"' in page
    message = await outcome(ws)
    assert (message["message_type"], message["provider_config_key"], message["is_pending"]) == ("success", key, True)
    # no installation yet, so nothing is stored: the end user connects again once an owner approved
    status, body = await connection(server, key, message["connection_id"])
    assert (status, body["error"]["code"]) == (404, "unknown_connection"), body


@pytest.mark.parametrize(
    ("behaviour", "error_type"), [("not-found", "connection_test_failed"), ("malformed", "invalid_callback")]
)
async def test_app_install_failures(
    http: aiohttp.ClientSession, server: Server, github: GitHub, behaviour: str, error_type: str
) -> None:
    key = await integration(server, "test-github-app", app_credentials(github, behaviour))
    ws, ws_client_id = await ws_client(http, server)
    response = await connect(http, server, key, ws_client_id=ws_client_id)
    status, page = await callback(http, await hop(http, response.headers["Location"]))
    assert status == 400
    error_page_shows(page, error_type)
    assert "PRIVATE KEY" not in page
    message = await outcome(ws)
    assert (message["message_type"], message["error_type"]) == ("error", error_type)


async def test_app_integration_without_its_app_is_refused(http: aiohttp.ClientSession, server: Server) -> None:
    key = f"test-github-app-{secrets.token_hex(4)}"
    status, answer = await api(server, "POST", "/integrations", {"provider": "test-github-app", "unique_key": key})
    assert status in (200, 201), answer
    response = await connect(http, server, key)
    assert response.status == 400
    error_page_shows(await response.text(), "invalid_provider_config")


async def test_install_done_on_github_goes_back_to_the_referer(http: aiohttp.ClientSession, server: Server) -> None:
    query = {"installation_id": "1001", "setup_action": "install"}
    for path in ("/oauth/callback", "/app-auth/connect"):
        referer = "https://github.com/organizations/acme/settings/installations"
        async with http.get(server.url + path, params=query, headers={"Referer": referer}, allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, referer)
        async with http.get(server.url + path, params=query, allow_redirects=False) as r:
            assert r.status == 200
            assert "Installation received" in await r.text()
        async with http.get(
            server.url + path, params=query, headers={"Referer": "javascript:alert(1)"}, allow_redirects=False
        ) as r:
            assert r.status == 200


async def test_app_install_with_a_forged_state(http: aiohttp.ClientSession, server: Server) -> None:
    query = {"installation_id": "1001", "setup_action": "install", "state": str(uuid.uuid4())}
    status, page = await callback(http, f"{server.url}/app-auth/connect?{urlencode(query)}")
    assert status == 400
    error_page_shows(page, "invalid_state")


async def test_custom_install_with_user_authorization(
    http: aiohttp.ClientSession, server: Server, github: GitHub
) -> None:
    key = await integration(server, "test-github-app-oauth", custom_credentials(github, "authorizes-user"))
    ws, ws_client_id = await ws_client(http, server)
    response = await connect(http, server, key, ws_client_id=ws_client_id)
    assert response.status == 302, await response.text()
    callback_url = await hop(http, response.headers["Location"])
    assert {"code", "installation_id", "setup_action", "state"} == query_of(callback_url).keys()
    grants = github.user_token_grants
    status, page = await callback(http, callback_url)
    assert status == 200, page
    message = await outcome(ws)
    assert (message["message_type"], message["is_pending"]) == ("success", False)
    assert github.user_token_grants == grants + 1

    status, body = await connection(server, key, message["connection_id"])
    assert status == 200, body
    credentials = body["credentials"]
    assert credentials["type"] == "CUSTOM"
    assert credentials["app"]["type"] == "APP"
    assert credentials["app"]["access_token"].startswith("ghs_")
    assert credentials["user"]["type"] == "OAUTH2"
    assert credentials["user"]["access_token"].startswith("ghu_")
    assert credentials["raw"]["user"]["access_token"] == credentials["user"]["access_token"]
    assert credentials["raw"]["app"]["token"] == credentials["app"]["access_token"]
    assert body["connection_config"]["installation_id"] == "1002"
    assert body["connection_config"]["app_id"] == APP_ID

    # the installation token is re-minted; the user's token is kept
    status, fresh = await connection(server, key, message["connection_id"], force_refresh="true")
    assert status == 200, fresh
    assert fresh["credentials"]["app"]["access_token"] != credentials["app"]["access_token"]
    assert fresh["credentials"]["user"] == credentials["user"]
    assert github.user_token_grants == grants + 1
