"""Non-popup auth routes and GitHub App imports against real Postgres, with local provider APIs.

The upstream app on 127.0.0.1 plays each provider strictly: it checks the API key, Basic pair and
OAuth 1.0a TBA signature (with oauthlib) it is sent, validates client credentials, verifies JWTs
with the public key, and mints GitHub-App-like installation tokens only for a valid RS256 app JWT.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import aiohttp
import jwt
import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1.rfc5849 import signature as oauth1  # type: ignore[import-untyped]

from nango.config import load
from nango.crypto import generate_key
from nango.providers import Provider
from nango.server.app import run
from nango.server.auth.verification import CredentialVerifier
from nango.server.errors import ConnectionTestFailed
from nango.server.integrations import Integration
from nango.server.settings import ServerSettings
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WAIT = 10.0  # seconds: the bound of every single wait in this module
APP_ID = "4242"
JWT_AUDIENCE = "test-audience"
CC_CLIENTS = {"cc-client": "cc-secret", "short-client": "short-secret"}
TBA_CONSUMER = ("consumer-key", "consumer-secret")
TBA_TOKENS = {"token-id": "token-secret"}


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


APP_KEY = _rsa_key()
USER_KEY = _rsa_key()
OTHER_KEY = _rsa_key()


@dataclass
class Upstream:
    url: str
    closed_url: str
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    scopes: list[str] = field(default_factory=list)
    app_jwts: list[dict[str, Any]] = field(default_factory=list)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme == "Bearer" and token else None


def _upstream_app(state: Upstream) -> web.Application:
    async def api_me(request: web.Request) -> web.Response:
        return web.json_response({"ok": True}) if _bearer(request) == "good-key" else web.json_response({}, status=401)

    async def tenant_me(request: web.Request) -> web.Response:
        ok = request.match_info["tenant"] == "acme" and request.query.get("api_key") == "good-key"
        return web.json_response({}, status=200 if ok else 401)

    async def basic_me(request: web.Request) -> web.Response:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        pair = base64.b64decode(encoded).decode() if scheme == "Basic" else ""
        ok = pair in ("alice:s3cret", "bob:") and request.headers.get("X-Check") == "yes"
        return web.json_response({}, status=200 if ok else 403)

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        client_id, client_secret = str(form.get("client_id")), str(form.get("client_secret"))
        if form.get("grant_type") != "client_credentials" or CC_CLIENTS.get(client_id) != client_secret:
            body = {"error": "invalid_client", "error_description": "Client authentication failed"}
            return web.json_response(body, status=401)
        state.scopes.append(str(form.get("scope")))
        expires_in = 60 if client_id.startswith("short") else 3600
        return web.json_response({"access_token": f"cc-{next(state.counter)}", "expires_in": expires_in})

    async def jwt_me(request: web.Request) -> web.Response:
        public = USER_KEY.public_key()
        try:
            jwt.decode(_bearer(request) or "", public, algorithms=["RS256"], audience=JWT_AUDIENCE)
        except jwt.PyJWTError:
            return web.json_response({}, status=401)
        return web.json_response({"ok": True})

    async def tba_me(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        params = oauth1.collect_parameters(uri_query=request.query_string, headers={"Authorization": header})
        sent = dict(oauth1.collect_parameters(headers={"Authorization": header}, exclude_oauth_signature=False))
        base_string = oauth1.signature_base_string(
            request.method, oauth1.base_string_uri(str(request.url)), oauth1.normalize_parameters(params)
        )
        token_secret = TBA_TOKENS.get(sent.get("oauth_token", ""), "")
        consumer_secret = "override-secret" if sent.get("oauth_consumer_key") == "override-key" else TBA_CONSUMER[1]
        secrets_of = SimpleNamespace(client_secret=consumer_secret, resource_owner_secret=token_secret)
        expected = oauth1.sign_hmac_sha256_with_client(base_string, secrets_of)
        realm_ok = f'realm="{request.match_info["account"].replace("-", "_").upper()}"' in header
        ok = token_secret and realm_ok and sent.get("oauth_signature") == expected
        return web.json_response({}, status=200 if ok else 401)

    async def installation_token(request: web.Request) -> web.Response:
        try:
            claims = jwt.decode(_bearer(request) or "", APP_KEY.public_key(), algorithms=["RS256"])
        except jwt.PyJWTError as exc:
            return web.json_response({"message": f"A JSON web token could not be decoded: {exc}"}, status=401)
        if claims.get("iss") != APP_ID or claims["exp"] - claims["iat"] > 600 or claims["iat"] > time.time():
            return web.json_response({"message": "Invalid claims"}, status=401)
        state.app_jwts.append(claims)
        installation = request.match_info["installation"]
        if installation == "denied":
            return web.json_response({"message": "Not Found"}, status=404)
        lifetime = timedelta(seconds=60 if installation.startswith("short") else 3600)
        expires_at = (datetime.now(UTC) + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response(
            {"token": f"ghs_{next(state.counter)}", "expires_at": expires_at, "permissions": {"contents": "read"}},
            status=201,
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/me", api_me)
    app.router.add_get("/{tenant}/me", tenant_me)
    app.router.add_post("/basic/me", basic_me)
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/jwt/me", jwt_me)
    app.router.add_get("/tba/{account}/me", tba_me)
    app.router.add_post("/app/installations/{installation}/access_tokens", installation_token)
    app.router.add_get("/slow", slow)
    return app


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    port = free_port()
    state = Upstream(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{free_port()}")
    runner = web.AppRunner(_upstream_app(state))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield state
    finally:
        await runner.cleanup()


def _provider(auth_mode: str, **fields: Any) -> dict[str, Any]:
    base = {"display_name": "Test", "categories": ["dev-tools"], "docs": "https://example.com/docs"}
    return {**base, "auth_mode": auth_mode, **fields}


def providers_yaml(up: Upstream) -> str:
    api_key_proxy = {"base_url": f"{up.url}/api", "headers": {"authorization": "Bearer ${apiKey}"}}
    jwt_token = {
        "signing_key": "${credentials.privateKey}",
        "expires_in_ms": 3_600_000,
        "header": {"alg": "RS256", "typ": "JWT", "kid": "${credentials.keyId}"},
        "payload": {"aud": JWT_AUDIENCE, "iss": "${credentials.issuer}", "sub": "${subject}", "scope": "read write"},
    }
    providers = {
        "test-apikey": _provider("API_KEY", proxy={**api_key_proxy, "verification": {"endpoints": ["/me"]}}),
        "test-apikey-query": _provider(
            "API_KEY",
            proxy={
                "base_url": up.url + "/${connectionConfig.tenant}",
                "query": {"api_key": "${apiKey}"},
                "verification": {"method": "GET", "endpoints": ["/missing", "/me"]},
            },
        ),
        "test-apikey-down": _provider(
            "API_KEY",
            proxy={**api_key_proxy, "verification": {"base_url_override": up.closed_url, "endpoints": ["/me"]}},
        ),
        "test-basic": _provider(
            "BASIC",
            proxy={
                "base_url": f"{up.url}/basic",
                "verification": {"method": "POST", "endpoints": ["/me"], "headers": {"x-check": "yes"}},
            },
        ),
        "test-cc": _provider("OAUTH2_CC", token_url=f"{up.url}/oauth/token", proxy={"base_url": f"{up.url}/api"}),
        "test-jwt": _provider(
            "JWT",
            signature={"protocol": "RSA"},
            token=jwt_token,
            proxy={"base_url": f"{up.url}/jwt", "verification": {"endpoints": ["/me"]}},
        ),
        "test-jwt-short": _provider(
            "JWT",
            signature={"protocol": "HMAC", "hmac_secret_encoding": "hex"},
            token={"signing_key": "${secret}", "expires_in_ms": 60_000, "payload": {"iss": "${issuer}"}},
        ),
        "test-tba": _provider(
            "TBA",
            proxy={
                "base_url": up.url + "/tba/${connectionConfig.accountId}",
                "verification": {"endpoints": ["/me?fields=id,name"]},
            },
        ),
        "test-none": _provider("NONE", proxy={"base_url": up.url}),
        "test-app": _provider(
            "APP",
            authorization_url="${connectionConfig.appPublicLink}/installations/new",
            token_url=up.url + "/app/installations/${connectionConfig.installation_id}/access_tokens",
            proxy={"base_url": f"{up.url}/api"},
        ),
    }
    return yaml.safe_dump(providers)


@dataclass
class Server:
    url: str
    dev_key: str
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.dev_key}"}
        async with self.http.request(method, self.url + path, json=body, params=params, headers=headers) as response:
            return response.status, await response.json()

    async def flow(self, path: str, body: Any = None, *, token: str, **params: str) -> tuple[int, Any]:
        """A frontend-SDK-like POST: JSON body, session token and `params[...]` in the query."""
        query = {"connect_session_token": token, **{f"params[{k}]": v for k, v in params.items()}}
        data = None if body is None else aiohttp.JsonPayload(body)
        headers = {"Content-Type": "application/json"}
        async with self.http.post(self.url + path, data=data, params=query, headers=headers) as response:
            return response.status, await response.json()

    async def integration(self, provider: str, credentials: dict[str, Any] | None = None) -> str:
        unique_key = f"{provider}-{uuid.uuid4().hex[:8]}"
        body: dict[str, Any] = {"provider": provider, "unique_key": unique_key}
        if credentials:
            body["credentials"] = credentials
        status, answer = await self.call("POST", "/integrations", body)
        assert status < 300, answer
        return unique_key

    async def session(self, *allowed: str) -> str:
        body: dict[str, Any] = {"end_user": {"id": "user-1", "email": "ada@example.com"}}
        if allowed:
            body["allowed_integrations"] = list(allowed)
        status, answer = await self.call("POST", "/connect/sessions", body)
        assert status == 201, answer
        return str(answer["data"]["token"])

    async def connection(self, pck: str, connection_id: str, **flags: str) -> dict[str, Any]:
        status, answer = await self.call("GET", f"/connections/{connection_id}", provider_config_key=pck, **flags)
        assert status == 200, answer
        return dict(answer)

    async def connection_ids(self, pck: str) -> list[str]:
        status, answer = await self.call("GET", "/connections", integrationId=pck)
        assert status == 200, answer
        return [c["connection_id"] for c in answer["connections"]]


@pytest.fixture(scope="module")
async def server(
    database_url: str, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("auth-routes")
    providers_file = tmp / "providers.yaml"
    providers_file.write_text(providers_yaml(upstream))
    port, dev_key = free_port(), str(uuid.uuid4())
    env = {
        "NANGO_DATABASE_URL": database_url,
        "NANGO_DB_SCHEMA": f"nango_auth_{uuid.uuid4().hex[:8]}",
        "SERVER_PORT": str(port),
        "NANGO_SERVER_GRPC_PORT": str(free_port()),
        "NANGO_INTERNAL_TOKEN": "internal-token-for-tests-0123456789",
        "NANGO_ENCRYPTION_KEY": generate_key(),
        "NANGO_OUTBOUND_URL_POLICY_OAUTH": '{"blockLoopback": false}',  # token servers on 127.0.0.1
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp),
        "NANGO_SECRET_KEY_DEV": dev_key,
        "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
        "NANGO_PROVIDERS_FILE": str(providers_file),
        "FLAG_API_RATE_LIMIT_ENABLED": "false",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = load(ServerSettings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
            await _wait_healthy(http, url, task)
            yield Server(url, dev_key, http)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def _wait_healthy(http: aiohttp.ClientSession, url: str, task: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if task.done():
            task.result()
        try:
            async with http.get(url + "/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("server did not become healthy")


def _code(answer: Any) -> str:
    return str(answer["error"]["code"])


# ---- API key and Basic -------------------------------------------------------------------------


async def test_api_key_is_verified_then_stored(server: Server) -> None:
    pck = await server.integration("test-apikey")
    token = await server.session(pck)
    status, answer = await server.flow(f"/api-auth/api-key/{pck}", {"apiKey": "good-key"}, token=token)
    assert status == 200, answer
    assert set(answer) == {"providerConfigKey", "connectionId"}
    assert answer["providerConfigKey"] == pck
    connection = await server.connection(pck, answer["connectionId"])
    assert connection["credentials"] == {"type": "API_KEY", "apiKey": "good-key"}
    assert connection["end_user"]["id"] == "user-1"
    assert connection["tags"]["end_user_email"] == "ada@example.com"


async def test_refused_api_key_is_not_stored(server: Server) -> None:
    pck = await server.integration("test-apikey")
    status, answer = await server.flow(f"/api-auth/api-key/{pck}", {"apiKey": "bad-key"}, token=await server.session())
    assert (status, _code(answer)) == (400, "connection_test_failed")
    assert answer["error"]["payload"]["status"] == 401
    assert "GET /me answered 401" in answer["error"]["message"]
    assert "bad-key" not in str(answer)
    assert await server.connection_ids(pck) == []


async def test_api_key_in_query_tries_endpoints_in_order(server: Server) -> None:
    pck = await server.integration("test-apikey-query")
    token = await server.session()
    status, answer = await server.flow(f"/api-auth/api-key/{pck}", {"apiKey": "good-key"}, token=token, tenant="acme")
    assert status == 200, answer
    status, answer = await server.flow(f"/api-auth/api-key/{pck}", {"apiKey": "bad"}, token=token, tenant="acme")
    assert (status, _code(answer)) == (400, "connection_test_failed")
    assert answer["error"]["payload"]["attempts"] == [
        {"endpoint": "/missing", "status": 404},
        {"endpoint": "/me", "status": 401},
    ]
    status, answer = await server.flow(f"/api-auth/api-key/{pck}", {"apiKey": "good-key"}, token=token)
    assert (status, _code(answer)) == (400, "invalid_connection_config")
    assert answer["error"]["payload"] == {"missing": ["tenant"]}
    assert len(await server.connection_ids(pck)) == 1


async def test_unreachable_provider_fails_the_test(server: Server) -> None:
    pck = await server.integration("test-apikey-down")
    status, answer = await server.flow(f"/api-auth/api-key/{pck}", {"apiKey": "good-key"}, token=await server.session())
    assert (status, _code(answer)) == (400, "connection_test_failed")
    assert "could not be reached" in answer["error"]["message"]
    assert answer["error"]["payload"]["status"] is None
    assert await server.connection_ids(pck) == []


@pytest.mark.parametrize(("username", "password"), [("alice", "s3cret"), ("bob", "")])
async def test_basic_is_verified_then_stored(server: Server, username: str, password: str) -> None:
    pck = await server.integration("test-basic")
    body = {"username": username, "password": password}
    status, answer = await server.flow(f"/api-auth/basic/{pck}", body, token=await server.session())
    assert status == 200, answer
    connection = await server.connection(pck, answer["connectionId"])
    assert connection["credentials"] == {"type": "BASIC", "username": username, "password": password}


async def test_refused_basic_is_not_stored(server: Server) -> None:
    pck = await server.integration("test-basic")
    body = {"username": "alice", "password": "wrong"}
    status, answer = await server.flow(f"/api-auth/basic/{pck}", body, token=await server.session())
    assert (status, _code(answer)) == (400, "connection_test_failed")
    assert answer["error"]["payload"]["status"] == 403
    assert "wrong" not in str(answer)
    assert await server.connection_ids(pck) == []


async def test_verification_is_bounded_by_its_timeout(upstream: Upstream) -> None:
    provider = Provider.model_validate(
        _provider("API_KEY", proxy={"base_url": upstream.url, "verification": {"endpoints": ["/slow"]}})
    )
    now = datetime.now(UTC)
    integration = Integration(
        id=1,
        uuid=str(uuid.uuid4()),
        environment_id=1,
        unique_key="slow",
        provider="slow",
        display_name=None,
        client_id=None,
        client_secret=None,
        scopes=None,
        app_link=None,
        webhook_secret=None,
        custom=None,
        integration_config={},
        forward_webhooks=True,
        created_at=now,
        updated_at=now,
    )
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        with pytest.raises(ConnectionTestFailed) as failed:
            await CredentialVerifier(http, timeout=0.3).verify(provider, integration, {"type": "API_KEY"}, {})
    assert time.monotonic() - started < 2
    assert failed.value.payload["attempts"] == [{"endpoint": "/slow", "error": "timeout"}]


# ---- route, session and body checks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "path", "body"),
    [
        ("test-apikey", "/api-auth/basic/{pck}", {"username": "alice", "password": "s3cret"}),
        ("test-basic", "/api-auth/api-key/{pck}", {"apiKey": "good-key"}),
        ("test-apikey", "/oauth2/auth/{pck}", {"client_id": "cc-client", "client_secret": "cc-secret"}),
        ("test-basic", "/auth/jwt/{pck}", {"privateKey": "x"}),
        ("test-apikey", "/auth/tba/{pck}", {"token_id": "token-id", "token_secret": "token-secret"}),
        ("test-apikey", "/auth/unauthenticated/{pck}", None),
    ],
)
async def test_route_must_match_the_providers_auth_mode(
    server: Server, provider: str, path: str, body: dict[str, str] | None
) -> None:
    pck = await server.integration(provider)
    status, answer = await server.flow(path.format(pck=pck), body, token=await server.session())
    assert (status, _code(answer)) == (400, "invalid_auth_mode")
    assert await server.connection_ids(pck) == []


async def test_session_must_allow_the_integration(server: Server) -> None:
    pck, other = await server.integration("test-apikey"), await server.integration("test-apikey")
    token = await server.session(other)
    status, answer = await server.flow(f"/api-auth/api-key/{pck}", {"apiKey": "good-key"}, token=token)
    assert (status, _code(answer)) == (400, "integration_not_allowed")
    status, answer = await server.flow("/api-auth/api-key/no-such-integration", {"apiKey": "k"}, token=token)
    assert _code(answer) == "unknown_provider_config"
    assert await server.connection_ids(pck) == []


@pytest.mark.parametrize(
    ("provider", "path", "body"),
    [
        ("test-apikey", "/api-auth/api-key/{pck}", {}),
        ("test-apikey", "/api-auth/api-key/{pck}", {"apiKey": ""}),
        ("test-apikey", "/api-auth/api-key/{pck}", {"apiKey": "good-key", "extra": 1}),
        ("test-basic", "/api-auth/basic/{pck}", {"password": "s3cret"}),
        ("test-cc", "/oauth2/auth/{pck}", {"client_id": "cc-client"}),
        ("test-jwt", "/auth/jwt/{pck}", ["not", "an", "object"]),
        ("test-jwt", "/auth/jwt/{pck}", {"issuer": "i", "token": "forged"}),
        ("test-tba", "/auth/tba/{pck}", {"token_id": "token-id"}),
        ("test-none", "/auth/unauthenticated/{pck}", {"anything": 1}),
    ],
)
async def test_malformed_bodies(server: Server, provider: str, path: str, body: Any) -> None:
    pck = await server.integration(provider)
    status, answer = await server.flow(path.format(pck=pck), body, token=await server.session(), accountId="1")
    assert (status, _code(answer)) == (400, "invalid_body")
    assert await server.connection_ids(pck) == []


# ---- client credentials ------------------------------------------------------------------------


async def _cc_connection(server: Server, client_id: str) -> tuple[str, str]:
    credentials = {"type": "OAUTH2", "client_id": "app", "client_secret": "app-secret", "scopes": "read,write"}
    pck = await server.integration("test-cc", credentials)
    body = {"client_id": client_id, "client_secret": CC_CLIENTS[client_id]}
    status, answer = await server.flow(f"/oauth2/auth/{pck}", body, token=await server.session())
    assert status == 200, answer
    return pck, str(answer["connectionId"])


async def test_client_credentials_grant_is_stored(server: Server, upstream: Upstream) -> None:
    pck, connection_id = await _cc_connection(server, "cc-client")
    assert upstream.scopes[-1] == "read write"
    credentials = (await server.connection(pck, connection_id))["credentials"]
    assert credentials["type"] == "OAUTH2_CC"
    assert credentials["token"].startswith("cc-")
    assert (credentials["client_id"], credentials["client_secret"]) == ("cc-client", "cc-secret")
    assert credentials["raw"]["expires_in"] == 3600
    expires = datetime.fromisoformat(credentials["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    again = (await server.connection(pck, connection_id))["credentials"]
    assert again["token"] == credentials["token"]
    forced = (await server.connection(pck, connection_id, force_refresh="true"))["credentials"]
    assert forced["token"] != credentials["token"]


async def test_refused_client_credentials_are_not_stored(server: Server) -> None:
    pck = await server.integration("test-cc")
    body = {"client_id": "cc-client", "client_secret": "wrong"}
    status, answer = await server.flow(f"/oauth2/auth/{pck}", body, token=await server.session())
    assert (status, _code(answer)) == (400, "connection_test_failed")
    assert answer["error"]["payload"] == {
        "status": 401,
        "error": "invalid_client",
        "description": "Client authentication failed",
    }
    assert await server.connection_ids(pck) == []


async def test_expiring_client_credentials_are_reminted_on_read(server: Server) -> None:
    pck, connection_id = await _cc_connection(server, "short-client")
    first = (await server.connection(pck, connection_id))["credentials"]["token"]
    second = (await server.connection(pck, connection_id))["credentials"]["token"]
    assert first != second
    assert second.startswith("cc-")


# ---- JWT ---------------------------------------------------------------------------------------


def _jwt_fields(key: rsa.RSAPrivateKey) -> dict[str, str]:
    # one line, as end users paste keys into a form
    pem = _pem(key, serialization.PrivateFormat.PKCS8).replace("\n", "\\n")
    return {"type": "JWT", "privateKey": pem, "keyId": "kid-1", "issuer": "issuer-1", "subject": "subject-1"}


async def test_jwt_is_signed_verified_and_stored(server: Server) -> None:
    pck = await server.integration("test-jwt")
    fields = _jwt_fields(USER_KEY)
    status, answer = await server.flow(f"/auth/jwt/{pck}", fields, token=await server.session())
    assert status == 200, answer
    credentials = (await server.connection(pck, answer["connectionId"]))["credentials"]
    assert {k: credentials[k] for k in fields} == fields
    assert set(credentials) == {*fields, "token", "expires_at"}
    token = credentials["token"]
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
    claims = jwt.decode(token, USER_KEY.public_key(), algorithms=["RS256"], audience=JWT_AUDIENCE)
    assert (claims["iss"], claims["sub"], claims["scope"]) == ("issuer-1", "subject-1", "read write")
    assert claims["exp"] - claims["iat"] == 3600
    forced = (await server.connection(pck, answer["connectionId"], force_refresh="true"))["credentials"]
    assert forced["expires_at"] != credentials["expires_at"]
    jwt.decode(forced["token"], USER_KEY.public_key(), algorithms=["RS256"], audience=JWT_AUDIENCE)


async def test_jwt_errors(server: Server) -> None:
    pck, token = await server.integration("test-jwt"), await server.session()
    status, answer = await server.flow(f"/auth/jwt/{pck}", _jwt_fields(OTHER_KEY), token=token)
    assert (status, _code(answer)) == (400, "connection_test_failed")
    fields = {**_jwt_fields(USER_KEY), "privateKey": "not a key"}
    status, answer = await server.flow(f"/auth/jwt/{pck}", fields, token=token)
    assert (status, _code(answer)) == (400, "invalid_credentials")
    assert "not a key" not in str(answer)
    fields = {k: v for k, v in _jwt_fields(USER_KEY).items() if k != "subject"}
    status, answer = await server.flow(f"/auth/jwt/{pck}", fields, token=token)
    assert (status, _code(answer)) == (400, "invalid_body")
    assert answer["error"]["errors"][0]["path"] == ["subject"]
    assert await server.connection_ids(pck) == []


async def test_expiring_jwt_is_resigned_on_read(server: Server) -> None:
    pck = await server.integration("test-jwt-short")
    secret = secrets.token_hex(32)
    body = {"type": "JWT", "secret": secret, "issuer": "me"}
    status, answer = await server.flow(f"/auth/jwt/{pck}", body, token=await server.session())
    assert status == 200, answer
    first = (await server.connection(pck, answer["connectionId"]))["credentials"]
    second = (await server.connection(pck, answer["connectionId"]))["credentials"]
    assert second["expires_at"] != first["expires_at"]
    claims = jwt.decode(second["token"], bytes.fromhex(secret), algorithms=["HS256"])
    assert (claims["iss"], claims["exp"] - claims["iat"]) == ("me", 60)


# ---- TBA and NONE ------------------------------------------------------------------------------


async def test_tba_is_signed_verified_and_stored(server: Server) -> None:
    pck = await server.integration(
        "test-tba", {"type": "TBA", "client_id": TBA_CONSUMER[0], "client_secret": TBA_CONSUMER[1]}
    )
    token = await server.session()
    body = {"token_id": "token-id", "token_secret": "token-secret"}
    status, answer = await server.flow(f"/auth/tba/{pck}", body, token=token, accountId="1234567-sb1")
    assert status == 200, answer
    connection = await server.connection(pck, answer["connectionId"])
    assert connection["credentials"] == {"type": "TBA", "token_id": "token-id", "token_secret": "token-secret"}
    assert connection["connection_config"] == {"accountId": "1234567-sb1"}

    overridden = {**body, "oauth_client_id_override": "override-key", "oauth_client_secret_override": "override-secret"}
    status, answer = await server.flow(f"/auth/tba/{pck}", overridden, token=token, accountId="1234567")
    assert status == 200, answer
    credentials = (await server.connection(pck, answer["connectionId"]))["credentials"]
    assert credentials["config_override"] == {"client_id": "override-key", "client_secret": "override-secret"}

    wrong = {"token_id": "token-id", "token_secret": "wrong"}
    status, answer = await server.flow(f"/auth/tba/{pck}", wrong, token=token, accountId="1234567")
    assert (status, _code(answer)) == (400, "connection_test_failed")
    status, answer = await server.flow(f"/auth/tba/{pck}", body, token=token)
    assert (status, _code(answer)) == (400, "invalid_connection_config")
    assert len(await server.connection_ids(pck)) == 2


async def test_unauthenticated_connection(server: Server) -> None:
    pck = await server.integration("test-none")
    bodies: tuple[dict[str, Any] | None, ...] = (None, {})
    for body in bodies:
        status, answer = await server.flow(
            f"/auth/unauthenticated/{pck}", body, token=await server.session(), region="eu"
        )
        assert status == 200, answer
        connection = await server.connection(pck, answer["connectionId"])
        assert connection["credentials"] == {"type": "NONE"}
        assert connection["connection_config"] == {"region": "eu"}


# ---- GitHub App imports ------------------------------------------------------------------------


async def _app_integration(server: Server) -> str:
    credentials = {
        "type": "APP",
        "app_id": APP_ID,
        "app_link": "https://github.com/apps/test-app",
        "private_key": _pem(APP_KEY, serialization.PrivateFormat.TraditionalOpenSSL),
    }
    return await server.integration("test-app", credentials)


async def _import_app(server: Server, pck: str, installation_id: str) -> tuple[int, Any]:
    body = {
        "provider_config_key": pck,
        "connection_id": f"gh-{installation_id}-{uuid.uuid4().hex[:6]}",
        "credentials": {"type": "APP", "app_id": APP_ID, "installation_id": installation_id},
    }
    return await server.call("POST", "/connections", body)


async def test_app_import_mints_an_installation_token(server: Server, upstream: Upstream) -> None:
    pck = await _app_integration(server)
    status, created = await _import_app(server, pck, "123")
    assert status == 201, created
    assert upstream.app_jwts[-1]["iss"] == APP_ID
    assert created["connection_config"] == {
        "installation_id": "123",
        "app_id": APP_ID,
        "appPublicLink": "https://github.com/apps/test-app",
    }
    credentials = created["credentials"]
    assert credentials["type"] == "APP"
    assert credentials["access_token"].startswith("ghs_")
    assert credentials["raw"]["permissions"] == {"contents": "read"}
    expires = datetime.fromisoformat(credentials["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=58) < expires - datetime.now(UTC) <= timedelta(hours=1)

    connection_id = created["connection_id"]
    read = (await server.connection(pck, connection_id))["credentials"]
    assert read["access_token"] == credentials["access_token"]
    forced = (await server.connection(pck, connection_id, force_refresh="true"))["credentials"]
    assert forced["access_token"] != credentials["access_token"]

    with_jwt = (await server.connection(pck, connection_id, refresh_github_app_jwt_token="true"))["credentials"]
    assert with_jwt["access_token"] == forced["access_token"]
    claims = jwt.decode(with_jwt["jwtToken"], APP_KEY.public_key(), algorithms=["RS256"])
    assert claims["iss"] == APP_ID
    assert claims["exp"] - claims["iat"] == 600


async def test_expiring_installation_token_is_reminted_on_read(server: Server) -> None:
    pck = await _app_integration(server)
    status, created = await _import_app(server, pck, "short-1")
    assert status == 201, created
    first = (await server.connection(pck, created["connection_id"]))["credentials"]["access_token"]
    assert first != created["credentials"]["access_token"]
    second = (await server.connection(pck, created["connection_id"]))["credentials"]["access_token"]
    assert second != first


async def test_refused_installation_is_not_stored(server: Server) -> None:
    pck = await _app_integration(server)
    status, answer = await _import_app(server, pck, "denied")
    assert (status, _code(answer)) == (400, "connection_test_failed")
    assert answer["error"]["payload"]["status"] == 404
    assert await server.connection_ids(pck) == []


# ---- imports of testable credentials ----------------------------------------------------------


async def test_imports_are_tested_where_the_provider_defines_a_check(server: Server) -> None:
    """Reference §3.2: API_KEY, BASIC and TBA imports are tested against `proxy.verification`."""
    cases = [
        ("test-apikey", {"type": "API_KEY", "apiKey": "refused-by-the-provider"}, False),
        ("test-basic", {"type": "BASIC", "username": "alice", "password": "refused-by-the-provider"}, False),
        ("test-apikey", {"type": "API_KEY", "apiKey": "good-key"}, True),
    ]
    for provider, credentials, accepted in cases:
        pck = await server.integration(provider)
        status, answer = await server.call(
            "POST", "/connections", {"provider_config_key": pck, "credentials": credentials}
        )
        if accepted:
            assert status == 201, answer
            assert answer["credentials"] == credentials
        else:
            assert (status, _code(answer)) == (400, "connection_test_failed")
            assert await server.connection_ids(pck) == []


async def test_imported_tba_needs_an_account(server: Server) -> None:
    tba_client = {"type": "TBA", "client_id": TBA_CONSUMER[0], "client_secret": TBA_CONSUMER[1]}
    pck = await server.integration("test-tba", tba_client)
    credentials = {"type": "TBA", "token_id": "token-id", "token_secret": "token-secret"}
    status, answer = await server.call("POST", "/connections", {"provider_config_key": pck, "credentials": credentials})
    assert (status, _code(answer)) == (400, "invalid_body")
    body = {"provider_config_key": pck, "credentials": credentials, "connection_config": {"accountId": "42"}}
    status, answer = await server.call("POST", "/connections", body)
    assert status == 201, answer
    assert answer["connection_config"] == {"accountId": "42"}
