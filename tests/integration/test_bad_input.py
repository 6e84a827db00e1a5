"""Malformed, oversized, wrongly typed and hostile requests to the auth routes: each gets its
documented 4xx code, none a 500, and nothing already stored changes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from nango.crypto import Keyring, generate_key
from tests.support.inprocess import InProcessServer, new_schema, server_env, start_server

pytestmark = pytest.mark.integration


@dataclass
class Platform:
    server: InProcessServer
    pool: asyncpg.Pool
    dev_key: str
    prod_key: str
    session_token: str
    other_env_session: str


@pytest.fixture(scope="module")
async def platform(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    schema, key = new_schema("nango_bad"), generate_key()
    server = await start_server(
        server_env(database_url, schema, tmp_path_factory.mktemp("bad"), NANGO_ENCRYPTION_KEY=key)
    )
    pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema})
    keyring = Keyring.from_encoded(key)
    keys = {
        r["name"]: keyring.open_text(r["secret_key_sealed"], aad=f"environment:{r['uuid']}:secret_key")
        for r in await pool.fetch("SELECT name, uuid, secret_key_sealed FROM environments")
    }
    async with aiohttp.ClientSession() as http:

        async def call(key: str, method: str, path: str, body: Any) -> Any:
            async with http.request(
                method, server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}
            ) as r:
                assert r.status < 300, await r.text()
                return await r.json()

        await call(keys["dev"], "POST", "/integrations", {"provider": "github", "unique_key": "gh"})
        await call(keys["dev"], "POST", "/integrations", {"provider": "resend", "unique_key": "sg"})
        await call(
            keys["dev"],
            "POST",
            "/connections",
            {"provider_config_key": "sg", "connection_id": "c1", "credentials": {"type": "API_KEY", "apiKey": "k"}},
        )
        session = await call(keys["dev"], "POST", "/connect/sessions", {"end_user": {"id": "u1"}})
        other = await call(keys["prod"], "POST", "/connect/sessions", {"end_user": {"id": "u2"}})
    yield Platform(server, pool, keys["dev"], keys["prod"], session["data"]["token"], other["data"]["token"])
    await pool.close()
    await server.stop()


DEV = "DEV"
PROD = "PROD"
SESSION = "SESSION"
OTHER_SESSION = "OTHER_SESSION"

# (method, path, auth, body or raw bytes, extra headers, expected status, expected code)
CASES: list[tuple[str, str, str | None, Any, dict[str, str], int, str]] = [
    ("GET", "/integrations", None, None, {}, 401, "missing_auth_header"),
    ("GET", "/integrations", "Token abc", None, {}, 401, "malformed_auth_header"),
    ("GET", "/integrations", "Bearer 123", None, {}, 401, "invalid_secret_key_format"),
    ("GET", "/integrations", f"Bearer {uuid.uuid4()}", None, {}, 401, "unknown_account"),
    ("GET", "/connections", SESSION, None, {}, 401, "invalid_secret_key_format"),
    ("POST", "/integrations", DEV, b'{"provider": "github",', {}, 400, "invalid_json"),
    (
        "POST",
        "/integrations",
        DEV,
        b"provider=github",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "invalid_content_type",
    ),
    ("POST", "/integrations", DEV, [], {}, 400, "invalid_body"),
    ("POST", "/integrations", DEV, {"provider": 42, "unique_key": "x"}, {}, 400, "invalid_body"),
    ("POST", "/integrations", DEV, {"provider": "github", "unique_key": "bad/key"}, {}, 400, "invalid_body"),
    ("POST", "/integrations", DEV, {"provider": "github", "unique_key": "x" * 256}, {}, 400, "invalid_body"),
    ("POST", "/integrations", DEV, {"provider": "github", "unique_key": "gh"}, {}, 409, "conflict"),
    ("POST", "/integrations", DEV, {"provider": "github", "unique_key": "n", "extra": True}, {}, 400, "invalid_body"),
    (
        "POST",
        "/integrations",
        DEV,
        {"provider": "github", "unique_key": "n", "credentials": {"type": "OAUTH2"}},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/integrations",
        DEV,
        {
            "provider": "github-app",
            "unique_key": "n",
            "credentials": {"type": "APP", "app_id": "1", "app_link": "x", "private_key": "not a pem"},
        },
        {},
        400,
        "invalid_body",
    ),
    ("PATCH", "/integrations/gh", DEV, {}, {}, 400, "invalid_body"),
    ("PATCH", "/integrations/gh", DEV, {"unique_key": "sg"}, {}, 409, "conflict"),
    ("GET", "/integrations/nope", DEV, None, {}, 404, "unknown_provider_config"),
    ("GET", "/integrations/gh?include=secrets", DEV, None, {}, 400, "invalid_query_params"),
    ("GET", "/integrations/gh?surprise=1", DEV, None, {}, 400, "invalid_query_params"),
    ("DELETE", "/integrations/nope", DEV, None, {}, 404, "unknown_provider_config"),
    ("GET", "/integrations/gh", PROD, None, {}, 404, "unknown_provider_config"),
    ("GET", "/connections?limit=0", DEV, None, {}, 400, "invalid_query_params"),
    ("GET", "/connections?limit=abc", DEV, None, {}, 400, "invalid_query_params"),
    ("GET", "/connections?page=-1", DEV, None, {}, 400, "invalid_query_params"),
    ("GET", "/connections?hack=1", DEV, None, {}, 400, "invalid_query_params"),
    ("GET", "/connections/c1", DEV, None, {}, 400, "invalid_query_params"),
    ("GET", "/connections/c1?provider_config_key=sg&force_refresh=yes", DEV, None, {}, 400, "invalid_query_params"),
    ("GET", "/connections/c1?provider_config_key=nope", DEV, None, {}, 404, "unknown_provider_config"),
    ("GET", "/connections/nope?provider_config_key=sg", DEV, None, {}, 404, "unknown_connection"),
    ("GET", "/connections/c1?provider_config_key=sg", PROD, None, {}, 404, "unknown_provider_config"),
    (
        "POST",
        "/connections",
        DEV,
        {"provider_config_key": "sg", "credentials": {"type": "BASIC", "username": "u"}},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connections",
        DEV,
        {"provider_config_key": "sg", "credentials": {"type": "API_KEY", "apiKey": ""}},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connections",
        DEV,
        {"provider_config_key": "sg", "credentials": {"type": "SPACESHIP"}},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connections",
        DEV,
        {"provider_config_key": "nope", "credentials": {"type": "NONE"}},
        {},
        404,
        "unknown_provider_config",
    ),
    (
        "POST",
        "/connections",
        DEV,
        {"provider_config_key": "sg", "connection_id": "bad\nid", "credentials": {"type": "API_KEY", "apiKey": "k"}},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connections",
        DEV,
        {"provider_config_key": "sg", "tags": {"1bad": "x"}, "credentials": {"type": "API_KEY", "apiKey": "k"}},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connections",
        DEV,
        {
            "provider_config_key": "sg",
            "tags": {f"k{i}": "v" for i in range(11)},
            "credentials": {"type": "API_KEY", "apiKey": "k"},
        },
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connections",
        DEV,
        {
            "provider_config_key": "sg",
            "tags": {"end_user_email": "not-an-email"},
            "credentials": {"type": "API_KEY", "apiKey": "k"},
        },
        {},
        400,
        "invalid_body",
    ),
    ("PATCH", "/connections/c1?provider_config_key=sg", DEV, {}, {}, 400, "invalid_body"),
    (
        "PATCH",
        "/connections/c1?provider_config_key=sg",
        DEV,
        {"webhook_url_override": "ftp://x"},
        {},
        400,
        "invalid_body",
    ),
    (
        "PATCH",
        "/connections/c1?provider_config_key=sg",
        DEV,
        {"webhook_url_override": "http://169.254.169.254/latest/meta-data"},
        {},
        400,
        "webhook_url_denied",
    ),
    (
        "POST",
        "/connections",
        DEV,
        {
            "provider_config_key": "sg",
            "webhook_url_override": "http://127.0.0.1:9/hook",
            "credentials": {"type": "API_KEY", "apiKey": "k"},
        },
        {},
        400,
        "webhook_url_denied",
    ),
    ("DELETE", "/connections/nope?provider_config_key=sg", DEV, None, {}, 400, "unknown_connection"),
    (
        "POST",
        "/connections/metadata",
        DEV,
        {"provider_config_key": "sg", "connection_id": "c1"},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connections/metadata",
        DEV,
        {"provider_config_key": "sg", "connection_id": [], "metadata": {}},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connections/metadata",
        DEV,
        {"provider_config_key": "sg", "connection_id": "nope", "metadata": {}},
        {},
        404,
        "unknown_connection",
    ),
    ("POST", "/connect/sessions", DEV, {}, {}, 400, "invalid_body"),
    ("POST", "/connect/sessions", DEV, {"end_user": {"id": ""}}, {}, 400, "invalid_body"),
    ("POST", "/connect/sessions", DEV, {"end_user": {"id": "u", "email": "nope"}}, {}, 400, "invalid_body"),
    (
        "POST",
        "/connect/sessions",
        DEV,
        {"end_user": {"id": "u"}, "allowed_integrations": ["nope"]},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connect/sessions",
        DEV,
        {"end_user": {"id": "u"}, "webhook_url_override": "javascript:alert(1)"},
        {},
        400,
        "invalid_body",
    ),
    (
        "POST",
        "/connect/sessions",
        DEV,
        {"end_user": {"id": "u"}, "webhook_url_override": "http://10.1.2.3/hook"},
        {},
        400,
        "webhook_url_denied",
    ),
    (
        "POST",
        "/connect/sessions/reconnect",
        DEV,
        {"connection_id": "nope", "integration_id": "sg"},
        {},
        400,
        "unknown_connection",
    ),
    ("GET", "/connect/session", DEV, None, {}, 401, "invalid_connect_session_token_format"),
    (
        "GET",
        "/connect/session",
        "Bearer nango_connect_session_" + "0" * 64,
        None,
        {},
        401,
        "unknown_connect_session_token",
    ),
    (
        "GET",
        "/connect/session",
        "Bearer nango_connect_session_<script>",
        None,
        {},
        401,
        "invalid_connect_session_token_format",
    ),
    (
        "POST",
        "/connect/telemetry",
        None,
        {"token": "x", "event": "open", "timestamp": "2026-01-01T00:00:00Z"},
        {},
        401,
        "invalid_connect_session_token_format",
    ),
    ("POST", "/connect/telemetry", None, {"token": "x", "event": "boom", "timestamp": "now"}, {}, 400, "invalid_body"),
    ("GET", "/providers/nope", DEV, None, {}, 404, "unknown_provider"),
    ("GET", "/providers?search=(a+)+$", DEV, None, {}, 200, ""),
    ("GET", "/providers?other=1", DEV, None, {}, 400, "invalid_query_params"),
    ("GET", "/images/template-logos/..%2f..%2fetc.svg", None, None, {}, 404, "unknown_provider"),
    ("PUT", "/integrations", DEV, {}, {}, 405, "method_not_allowed"),
    ("GET", "/no/such/route", DEV, None, {}, 404, "not_found"),
]


def _auth(platform: Platform, auth: str | None) -> dict[str, str]:
    tokens = {DEV: platform.dev_key, PROD: platform.prod_key, SESSION: platform.session_token}
    if auth is None:
        return {}
    if auth == OTHER_SESSION:
        return {"Authorization": f"Bearer {platform.other_env_session}"}
    if auth in tokens:
        return {"Authorization": f"Bearer {tokens[auth]}"}
    return {"Authorization": auth}


async def _snapshot(pool: asyncpg.Pool) -> dict[str, list[str]]:
    tables = ["integrations", "connections", "end_users", "connect_sessions", "environments", "environment_variables"]
    return {t: sorted(r["x"] for r in await pool.fetch(f"SELECT row_to_json(t)::text AS x FROM {t} t")) for t in tables}


async def test_every_bad_request_gets_its_code_and_changes_nothing(platform: Platform) -> None:
    before = await _snapshot(platform.pool)
    failures = []
    async with aiohttp.ClientSession() as http:
        for method, path, auth, body, headers, status, code in CASES:
            kwargs: dict[str, Any] = {"headers": {**_auth(platform, auth), **headers}}
            if isinstance(body, bytes):
                kwargs["data"] = body
                kwargs["headers"].setdefault("Content-Type", "application/json")
            elif body is not None:
                kwargs["json"] = body
            async with http.request(method, platform.server.url + path, **kwargs) as response:
                payload = await response.json(content_type=None)
                got_code = payload["error"]["code"] if isinstance(payload, dict) and "error" in payload else ""
                if response.status != status or got_code != code:
                    failures.append(f"{method} {path}: {response.status} {got_code!r}, expected {status} {code!r}")
                assert response.status != 500
    assert not failures, "\n".join(failures)
    after = await _snapshot(platform.pool)
    # reading refreshes last_access_at of the session and last_fetched_at: compare what identifies data
    for table in ("integrations", "connections", "end_users", "environments", "environment_variables"):
        assert len(after[table]) == len(before[table]), table
    assert after["integrations"] == before["integrations"]


async def test_oversized_body_is_refused_at_the_limit(platform: Platform) -> None:
    body = b'{"provider": "github", "unique_key": "' + b"x" * (80 * 1024 * 1024) + b'"}'
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            platform.server.url + "/integrations",
            data=body,
            headers={**_auth(platform, DEV), "Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "request_too_large"


async def test_a_session_token_of_another_environment_sees_nothing_here(platform: Platform) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(platform.server.url + "/integrations", headers=_auth(platform, OTHER_SESSION)) as response,
    ):
        assert response.status == 200
        assert (await response.json())["data"] == []
