"""`/proxy` against real Postgres and local upstream APIs: credentials per auth mode, URL building,
header forwarding, streaming both ways, retries and waits, the 401 refresh, the operations log."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from tests.support.oauth_server.harness import OAuthServer
from tests.support.oauth_tokens import user_tokens
from tests.support.proxy import ProxyClient, provider, proxy_server
from tests.support.upstream import OAUTH1_CONSUMER, OAUTH1_TOKEN, Upstream, start_upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def providers(up: str, oauth: str) -> dict[str, Any]:
    oauth_urls = {"authorization_url": f"{up}/authorize", "token_url": f"{up}/token"}
    return {
        "p-header": provider("API_KEY", proxy={"base_url": f"{up}/api", "headers": {"x-api-key": "${apiKey}"}}),
        "p-query": provider(
            "API_KEY", proxy={"base_url": up + "/echo/${connectionConfig.tenant}", "query": {"api_key": "${apiKey}"}}
        ),
        "p-fallback": provider(
            "API_KEY",
            proxy={
                "base_url": "http://${connectionConfig.subdomain}.invalid || " + up + "/echo/${metadata.region}",
                "headers": {"authorization": "Bearer ${apiKey}"},
            },
        ),
        "p-basic": provider("BASIC", proxy={"base_url": f"{up}/echo"}),
        "p-oauth2": provider("OAUTH2", **oauth_urls, proxy={"base_url": f"{up}/echo"}),
        "p-cc": provider("OAUTH2_CC", token_url=f"{up}/token", proxy={"base_url": f"{up}/echo"}),
        "p-none": provider("NONE", proxy={"base_url": up}),
        "p-oauth1": provider("OAUTH1", request_url=f"{up}/request", **oauth_urls, proxy={"base_url": f"{up}/signed"}),
        "p-tba": provider("TBA", proxy={"base_url": up + "/signed/${connectionConfig.accountId}"}),
        "p-retry": provider(
            "API_KEY",
            proxy={
                "base_url": up,
                "headers": {"x-api-key": "${apiKey}"},
                "retry": {"at": ["x-ratelimit-reset"], "remaining": "x-ratelimit-remaining"},
            },
        ),
        "p-retry-body": provider(
            "API_KEY",
            proxy={
                "base_url": up,
                "retry": {
                    "error_code": ["403", "5xx"],
                    "in_body": {
                        "path": "error.message",
                        "value": "/User-rate limit exceeded\\. +Retry after (.+)/",
                        "strategy": "after",
                    },
                },
            },
        ),
        "p-decompress": provider("NONE", proxy={"base_url": up, "decompress": True}),
        "p-as": provider(
            "OAUTH2",
            authorization_url=f"{oauth}/o/authorize/",
            token_url=f"{oauth}/o/token/",
            default_scopes=["read"],
            proxy={"base_url": oauth},
        ),
    }


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    async with start_upstream() as up:
        yield up


@pytest.fixture(scope="module")
async def proxy(
    database_url: str, upstream: Upstream, oauth_server: OAuthServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ProxyClient]:
    # the upstreams listen on loopback, which the default outbound policy refuses
    async with proxy_server(
        database_url,
        tmp_path_factory.mktemp("proxy"),
        providers(upstream.url, oauth_server.url),
        NANGO_OUTBOUND_URL_POLICY='{"blockLoopback": false}',
    ) as client:
        yield client


async def _api_key_connection(proxy: ProxyClient, provider_name: str = "p-header", **extra: Any) -> tuple[str, str]:
    integration = await proxy.integration(provider_name)
    credentials = {"type": "API_KEY", "apiKey": extra.pop("api_key", "sk-live-0123456789")}
    return integration, await proxy.connection(integration, credentials, **extra)


async def _open_connection(proxy: ProxyClient, provider_name: str = "p-none") -> tuple[str, str]:
    """A connection to an API that needs no credentials."""
    integration = await proxy.integration(provider_name)
    return integration, await proxy.connection(integration, {"type": "NONE"})


async def test_api_key_header_forwarded_headers_and_response_allow_list(proxy: ProxyClient) -> None:
    integration, connection = await _api_key_connection(proxy)
    answer = await proxy.proxy(
        "POST",
        "/echo/items/42?expand=owner&q=a%20b",
        integration=integration,
        connection=connection,
        headers={"Nango-Proxy-X-Custom": "custom-value", "nango-proxy-Accept": "application/json"},
        data=json.dumps({"name": "widget"}),
    )
    assert answer.status == 200
    seen = answer.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/api/echo/items/42"
    assert seen["query"] == "expand=owner&q=a%20b"
    assert seen["headers"]["x-api-key"] == "sk-live-0123456789"
    assert seen["headers"]["X-Custom"] == "custom-value"
    assert seen["headers"]["Accept"] == "application/json"
    assert json.loads(seen["body"]) == {"name": "widget"}
    # nothing of the call to us travels upstream: not our secret key, not our own headers
    sent_names = {name.lower() for name in seen["headers"]}
    assert not sent_names & {"provider-config-key", "connection-id", "nango-proxy-x-custom"}
    assert proxy.key not in json.dumps(seen["headers"])
    # the allow-list: content type, disposition, request id and rate-limit headers; no cookies or internals
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["X-Request-Id"] == "req-123"
    assert answer.headers["X-RateLimit-Remaining"] == "41"
    assert answer.headers["Content-Disposition"] == 'inline; filename="echo.json"'
    assert "Set-Cookie" not in answer.headers
    assert "X-Internal-Debug" not in answer.headers
    # the public API's CORS headers, added by the route itself since it sends the answer
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "Connection-Id" in answer.headers["Access-Control-Allow-Headers"]


async def test_query_template_connection_config_and_caller_query(proxy: ProxyClient) -> None:
    integration, connection = await _api_key_connection(
        proxy, "p-query", api_key="k&y=1", connection_config={"tenant": "acme"}
    )
    answer = await proxy.proxy("GET", "/users?page=2", integration=integration, connection=connection)
    assert answer.status == 200, answer.body
    seen = answer.json()
    assert seen["path"] == "/echo/acme/users"
    assert seen["query"] == "page=2&api_key=k%26y%3D1"


async def test_base_url_fallback_and_metadata(proxy: ProxyClient) -> None:
    integration, connection = await _api_key_connection(proxy, "p-fallback", metadata={"region": "eu"})
    answer = await proxy.proxy("GET", "/v1/things", integration=integration, connection=connection)
    assert answer.status == 200, answer.body
    assert answer.json()["path"] == "/echo/eu/v1/things"
    assert answer.json()["headers"]["Authorization"] == "Bearer sk-live-0123456789"


async def test_endpoint_that_already_carries_the_base_url(proxy: ProxyClient, upstream: Upstream) -> None:
    integration, connection = await _api_key_connection(proxy)
    answer = await proxy.proxy(
        "GET", f"/{upstream.url}/api/echo/full?x=1", integration=integration, connection=connection
    )
    assert answer.status == 200, answer.body
    assert (answer.json()["path"], answer.json()["query"]) == ("/api/echo/full", "x=1")


@pytest.mark.parametrize(
    ("provider_name", "credentials", "expected"),
    [
        (
            "p-basic",
            {"type": "BASIC", "username": "ada", "password": "s3cret"},
            "Basic " + base64.b64encode(b"ada:s3cret").decode(),
        ),
        (
            "p-basic",
            {"type": "BASIC", "username": "ada", "password": ""},
            "Basic " + base64.b64encode(b"ada:").decode(),
        ),
        ("p-oauth2", {"type": "OAUTH2", "access_token": "at-123"}, "Bearer at-123"),
        (
            "p-cc",
            {
                "type": "OAUTH2_CC",
                "token": "cc-456",
                "client_id": "c",
                "client_secret": "s",
                "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            },
            "Bearer cc-456",
        ),
        ("p-none", {"type": "NONE"}, None),
    ],
)
async def test_credentials_by_auth_mode(
    proxy: ProxyClient, provider_name: str, credentials: dict[str, Any], expected: str | None
) -> None:
    integration = await proxy.integration(provider_name)
    connection = await proxy.connection(integration, credentials)
    answer = await proxy.proxy(
        "GET", "/echo/me" if provider_name == "p-none" else "/me", integration=integration, connection=connection
    )
    assert answer.status == 200, answer.body
    assert answer.json()["headers"].get("Authorization") == expected


async def test_oauth1_signature_checked_by_oauthlib(proxy: ProxyClient) -> None:
    app = {"type": "OAUTH1", "client_id": OAUTH1_CONSUMER[0], "client_secret": OAUTH1_CONSUMER[1]}
    integration = await proxy.integration("p-oauth1", app)
    credentials = {"type": "OAUTH1", "oauth_token": OAUTH1_TOKEN[0], "oauth_token_secret": OAUTH1_TOKEN[1]}
    connection = await proxy.connection(integration, credentials)
    answer = await proxy.proxy("GET", "/statuses?count=5&q=caf%C3%A9", integration=integration, connection=connection)
    assert answer.status == 200, answer.body
    assert answer.json()["method"] == "HMAC-SHA1"
    # form fields are part of the signature
    answer = await proxy.proxy(
        "POST",
        "/statuses/update",
        integration=integration,
        connection=connection,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        data="status=hello%20world&lang=en",
    )
    assert answer.status == 200, answer.body


async def test_tba_signature_with_realm(proxy: ProxyClient) -> None:
    app = {"type": "TBA", "client_id": OAUTH1_CONSUMER[0], "client_secret": OAUTH1_CONSUMER[1]}
    integration = await proxy.integration("p-tba", app)
    credentials = {"type": "TBA", "token_id": OAUTH1_TOKEN[0], "token_secret": OAUTH1_TOKEN[1]}
    connection = await proxy.connection(integration, credentials, connection_config={"accountId": "1234567-sb1"})
    answer = await proxy.proxy("GET", "/record?id=7", integration=integration, connection=connection)
    assert answer.status == 200, answer.body
    assert (answer.json()["method"], answer.json()["realm"]) == ("HMAC-SHA256", "1234567_SB1")


async def test_upstream_errors_pass_through_with_status_and_raw_body(proxy: ProxyClient) -> None:
    integration, connection = await _open_connection(proxy)
    answer = await proxy.proxy(
        "GET", "/status/418?body=short%20and%20stout", integration=integration, connection=connection
    )
    assert (answer.status, answer.body) == (418, b"short and stout")
    assert answer.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "PROPFIND", "REPORT"])
async def test_methods_with_bodies(proxy: ProxyClient, method: str) -> None:
    integration = await proxy.integration("p-none")
    connection = await proxy.connection(integration, {"type": "NONE"})
    body = b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>'
    answer = await proxy.proxy(
        method,
        "/echo/calendars/1",
        integration=integration,
        connection=connection,
        headers={"Content-Type": "application/xml", "Nango-Proxy-Depth": "1"},
        data=body,
    )
    assert answer.status == 200, answer.body
    seen = answer.json()
    assert (seen["method"], seen["body_sha256"]) == (method, hashlib.sha256(body).hexdigest())
    assert seen["headers"]["Depth"] == "1"


async def test_multipart_upload_is_byte_exact(proxy: ProxyClient) -> None:
    integration = await proxy.integration("p-none")
    connection = await proxy.connection(integration, {"type": "NONE"})
    blob = os.urandom(3 * 1024 * 1024 + 17)
    form = aiohttp.FormData()
    form.add_field("title", "report")
    form.add_field("file", blob, filename="blob.bin", content_type="application/octet-stream")
    payload = form()
    writer = _Collect()
    await payload.write(writer)  # type: ignore[arg-type]
    raw = bytes(writer.data)
    answer = await proxy.proxy(
        "POST",
        "/echo/upload",
        integration=integration,
        connection=connection,
        headers={"Content-Type": payload.content_type},
        data=raw,
    )
    assert answer.status == 200, answer.body
    seen = answer.json()
    assert (seen["body_size"], seen["body_sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert seen["headers"]["Content-Type"] == payload.content_type


class _Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data.extend(chunk)


async def test_compressed_answers_pass_through_or_are_decompressed(proxy: ProxyClient) -> None:
    integration = await proxy.integration("p-none")
    connection = await proxy.connection(integration, {"type": "NONE"})
    raw = await proxy.proxy("GET", "/gzip", integration=integration, connection=connection)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(raw.body))["compressed"] is True
    plain = await proxy.proxy(
        "GET", "/gzip", integration=integration, connection=connection, headers={"Decompress": "true"}
    )
    assert "Content-Encoding" not in plain.headers
    assert json.loads(plain.body)["compressed"] is True
    # the provider can ask for it too
    decompressing = await proxy.integration("p-decompress")
    connection = await proxy.connection(decompressing, {"type": "NONE"})
    plain = await proxy.proxy("GET", "/gzip", integration=decompressing, connection=connection)
    assert ("Content-Encoding" not in plain.headers, json.loads(plain.body)["compressed"]) == (True, True)


async def test_429_retry_after_is_waited_out(proxy: ProxyClient, upstream: Upstream) -> None:
    integration, connection = await _open_connection(proxy)
    started = time.monotonic()
    answer = await proxy.proxy(
        "GET",
        "/rate-limited?key=ra1&after=2",
        integration=integration,
        connection=connection,
        headers={"Retries": "3"},
    )
    elapsed = time.monotonic() - started
    assert answer.status == 200, answer.body
    assert upstream.attempts["ra1"] == 2
    assert 1.9 <= elapsed < 4.5
    # without Retries the caller gets the 429 itself, with its Retry-After
    answer = await proxy.proxy("GET", "/rate-limited?key=ra2", integration=integration, connection=connection)
    assert (answer.status, answer.headers["Retry-After"]) == (429, "2")


async def test_epoch_reset_header_is_waited_out(proxy: ProxyClient, upstream: Upstream) -> None:
    integration, connection = await _api_key_connection(proxy, "p-retry")
    started = time.monotonic()
    answer = await proxy.proxy(
        "GET", "/reset-at?key=reset1&in=2", integration=integration, connection=connection, headers={"Retries": "2"}
    )
    elapsed = time.monotonic() - started
    assert answer.status == 200, answer.body
    assert upstream.attempts["reset1"] == 2
    assert 1.0 <= elapsed < 4.5


async def test_remaining_zero_and_in_body_waits(proxy: ProxyClient, upstream: Upstream) -> None:
    integration, connection = await _api_key_connection(proxy, "p-retry-body")
    started = time.monotonic()
    answer = await proxy.proxy(
        "GET", "/in-body?key=body1", integration=integration, connection=connection, headers={"Retries": "1"}
    )
    assert answer.status == 200, answer.body
    # the body said 1 s; the back-off would have been 3 s
    assert 0.9 <= time.monotonic() - started < 2.5
    integration, connection = await _api_key_connection(proxy, "p-retry")
    answer = await proxy.proxy(
        "GET", "/exhausted?key=zero1", integration=integration, connection=connection, headers={"Retries": "1"}
    )
    assert answer.status == 200, answer.body
    assert upstream.attempts["zero1"] == 2


async def test_retry_on_and_default_retryable_statuses(proxy: ProxyClient, upstream: Upstream) -> None:
    integration, connection = await _open_connection(proxy)
    answer = await proxy.proxy(
        "GET",
        "/failing?key=conflict1&code=409",
        integration=integration,
        connection=connection,
        headers={"Retries": "1", "Retry-On": "409,410"},
    )
    assert answer.status == 200, answer.body
    # 409 is not retried unless asked; 503 is
    answer = await proxy.proxy(
        "GET",
        "/failing?key=conflict2&code=409",
        integration=integration,
        connection=connection,
        headers={"Retries": "1"},
    )
    assert (answer.status, upstream.attempts["conflict2"]) == (409, 1)
    answer = await proxy.proxy(
        "POST",
        "/failing?key=down1&code=503",
        integration=integration,
        connection=connection,
        headers={"Retries": "1"},
        data=b"replayed body",
    )
    assert (answer.status, upstream.attempts["down1"]) == (200, 2)


async def test_401_refreshes_the_token_once_and_retries(proxy: ProxyClient, oauth_server: OAuthServer) -> None:
    oauth_server.create_user("proxy-user", "pw-proxy-user")
    app = oauth_server.create_app(redirect_uris=["http://127.0.0.1:9/callback"], skip_authorization=True)
    tokens = await user_tokens(oauth_server, app, "proxy-user", "pw-proxy-user")
    integration = await proxy.integration(
        "p-as", {"type": "OAUTH2", "client_id": app.client_id, "client_secret": app.client_secret}
    )
    connection = await proxy.connection(
        integration,
        {
            "type": "OAUTH2",
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        },
    )
    answer = await proxy.proxy("GET", "/api/me", integration=integration, connection=connection)
    assert (answer.status, answer.json()["username"]) == (200, "proxy-user")
    before = oauth_server.stats(app.client_id)["refresh_grants"]
    # the provider expires the token early: one forced refresh, one retry, no Retries header needed
    oauth_server.expire_access_tokens(app.client_id)
    answer = await proxy.proxy("GET", "/api/me", integration=integration, connection=connection)
    assert (answer.status, answer.json()["username"]) == (200, "proxy-user")
    assert oauth_server.stats(app.client_id)["refresh_grants"] == before + 1
    status, stored = await proxy.api("GET", f"/connections/{connection}?provider_config_key={integration}")
    assert status == 200
    assert stored["credentials"]["access_token"] != tokens["access_token"]
    # revoked: the refresh fails and the caller gets the provider's 401 as it is
    oauth_server.revoke(app.client_id)
    answer = await proxy.proxy("GET", "/api/me", integration=integration, connection=connection)
    assert answer.status == 401
    assert oauth_server.stats(app.client_id)["refresh_grants"] == before + 1


async def test_redirects_are_followed_and_headers_kept_or_dropped(proxy: ProxyClient, upstream: Upstream) -> None:
    integration = await proxy.integration("p-none")
    connection = await proxy.connection(integration, {"type": "NONE"})
    # same server, another origin (host name): Authorization leaves with the redirect only when asked
    other_origin = upstream.url.replace("127.0.0.1", "localhost")
    for forward, key in (("true", "kept"), ("false", "dropped")):
        target = quote(f"{other_origin}/after-redirect?key={key}", safe="")
        answer = await proxy.proxy(
            "POST",
            f"/redirect?to={target}",
            integration=integration,
            connection=connection,
            data=b"form",
            headers={"Forward-Headers-On-Redirect": forward, "Nango-Proxy-Authorization": "Bearer caller-token"},
        )
        assert answer.status == 200, answer.body
        # a 302 after a POST is followed with a GET, as browsers and axios do
        assert answer.json() == {"redirected": True, "method": "GET"}
    assert upstream.redirected["kept"]["Authorization"] == "Bearer caller-token"
    assert "Authorization" not in upstream.redirected["dropped"]


async def _operations(database_url: str, schema: str, connection_ids: list[str]) -> list[asyncpg.Record]:
    """The proxy operations of these connections, once the log writer has written them all (bounded)."""
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(100):
            rows = await conn.fetch(
                f"SELECT * FROM {schema}.operations WHERE type = 'proxy' AND connection_id = ANY($1::text[]) "
                "ORDER BY created_at",
                connection_ids,
            )
            if len(rows) >= len(connection_ids):
                return list(rows)
            await asyncio.sleep(0.1)
        return list(rows)
    finally:
        await conn.close()


async def test_every_call_is_an_operation_without_secrets(
    proxy: ProxyClient, upstream: Upstream, database_url: str
) -> None:
    integration, connection = await _api_key_connection(
        proxy, "p-query", api_key="sk-query-secret-987", connection_config={"tenant": "t1"}
    )
    answer = await proxy.proxy("GET", "/items?page=1", integration=integration, connection=connection)
    assert answer.status == 200
    retrying, retried_connection = await _api_key_connection(proxy, "p-retry", api_key="sk-header-secret-654")
    retried = await proxy.proxy(
        "GET",
        "/rate-limited?key=oplog1&after=1",
        integration=retrying,
        connection=retried_connection,
        headers={"Retries": "2"},
    )
    assert retried.status == 200
    first, second = await _operations(
        database_url, proxy.server.env["NANGO_LOGS_DATABASE_SCHEMA"], [connection, retried_connection]
    )
    everything = json.dumps([dict(first), dict(second)], default=str)
    for secret in ("sk-query-secret-987", "sk-header-secret-654", proxy.key):
        assert secret not in everything
    request = json.loads(first["request"])
    assert request == {"method": "GET", "url": f"{upstream.url}/echo/t1/items?page=1&api_key=[REDACTED]"}
    assert (first["state"], json.loads(first["response"])["code"]) == ("success", 200)
    assert first["ended_at"] >= first["started_at"]
    assert (first["provider_config_key"], first["provider"]) == (integration, "p-query")
    meta = json.loads(second["meta"])
    assert meta["retries"] == 1
    assert [a.get("status") for a in meta["attempts"]] == [429, 200]
    assert (meta["attempts"][0]["wait_ms"], meta["attempts"][0]["retry_reason"]) == (1000, "status_code_429")
    # the injected header is named, never shown
    assert json.loads(second["request"])["headers"]["x-api-key"] == "[REDACTED]"


async def test_activity_log_id_logs_into_the_callers_operation(proxy: ProxyClient, database_url: str) -> None:
    integration, connection = await _open_connection(proxy)
    operation_id = "0b8f5a0e-6d2c-4f1e-9a57-3c1d2e4f5a6b"
    answer = await proxy.proxy(
        "GET",
        "/echo/logged",
        integration=integration,
        connection=connection,
        headers={"Nango-Activity-Log-Id": operation_id},
    )
    assert answer.status == 200
    schema = proxy.server.env["NANGO_LOGS_DATABASE_SCHEMA"]
    conn = await asyncpg.connect(database_url)
    try:
        lines: list[asyncpg.Record] = []
        for _ in range(50):
            lines = await conn.fetch(f"SELECT * FROM {schema}.messages WHERE operation_id = $1", operation_id)
            if lines:
                break
            await asyncio.sleep(0.1)
        own = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.operations WHERE type = 'proxy' AND connection_id = $1", connection
        )
    finally:
        await conn.close()
    assert [(line["type"], json.loads(line["response"])["code"]) for line in lines] == [("http", 200)]
    assert own == 0


async def test_reimported_credentials_are_used_at_once(proxy: ProxyClient) -> None:
    integration, connection = await _api_key_connection(proxy, api_key="first-key-000")
    first = await proxy.proxy("GET", "/echo/a", integration=integration, connection=connection)
    assert first.json()["headers"]["x-api-key"] == "first-key-000"
    await proxy.connection(integration, {"type": "API_KEY", "apiKey": "second-key-111"}, connection_id=connection)
    second = await proxy.proxy("GET", "/echo/a", integration=integration, connection=connection)
    assert second.json()["headers"]["x-api-key"] == "second-key-111"
    status, _ = await proxy.api("DELETE", f"/connections/{connection}?provider_config_key={integration}")
    assert status == 200
    gone = await proxy.proxy("GET", "/echo/a", integration=integration, connection=connection)
    assert (gone.status, gone.code) == (400, "unknown_connection")


async def test_caller_leaving_mid_download_cancels_the_upstream_call(proxy: ProxyClient, upstream: Upstream) -> None:
    integration = await proxy.integration("p-none")
    connection = await proxy.connection(integration, {"type": "NONE"})
    headers = {"Authorization": f"Bearer {proxy.key}", "Provider-Config-Key": integration, "Connection-Id": connection}
    async with aiohttp.ClientSession() as http:
        response = await http.get(proxy.url + "/proxy/stream?key=leave1&chunks=400&delay=0.02", headers=headers)
        assert response.status == 200
        first = await response.content.read(65536)
        assert first
        response.close()
    for _ in range(100):
        if "leave1" in upstream.abandoned:
            break
        await asyncio.sleep(0.05)
    assert "leave1" in upstream.abandoned
    # the server is still serving, and a full download works
    async with (
        aiohttp.ClientSession() as http,
        http.get(proxy.url + "/proxy/stream?key=full1&chunks=20", headers=headers) as response,
    ):
        body = await response.read()
    assert len(body) == 20 * 65536
    assert body[65536 * 3] == 3
