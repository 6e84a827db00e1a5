"""The proxy through `@nangohq/node`'s `proxy`, `get`, `post`, `put`, `patch` and `delete`, against
local upstream APIs (reached with `baseUrlOverride`): credentials per auth mode, forwarded headers,
the upstream's status and body passed through, retries."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.compat.conftest import Sdk, SdkError
from tests.support.upstream import OAUTH1_CONSUMER, OAUTH1_TOKEN, Upstream, start_upstream

pytestmark = [pytest.mark.compat, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    async with start_upstream() as up:
        yield up


async def _connection(
    sdk: Sdk, provider: str, credentials: dict[str, Any], app: dict[str, Any] | None = None, **extra: Any
) -> tuple[str, str]:
    unique_key = f"{provider}-{uuid.uuid4().hex[:8]}"
    integration: dict[str, Any] = {"provider": provider, "unique_key": unique_key}
    if app:
        integration["credentials"] = app
    await sdk("createIntegration", integration)
    connection_id = f"user-{uuid.uuid4().hex[:6]}"
    body = {"provider_config_key": unique_key, "connection_id": connection_id, "credentials": credentials, **extra}
    await sdk("_importConnection", body)
    return unique_key, connection_id


def _config(upstream: Upstream, key: str, connection_id: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "providerConfigKey": key,
        "connectionId": connection_id,
        "endpoint": endpoint,
        "baseUrlOverride": upstream.url,
        **extra,
    }


async def test_api_key_headers_from_the_provider_and_the_caller(sdk: Sdk, upstream: Upstream) -> None:
    # algolia: x-algolia-api-key from the credentials, x-algolia-application-id from the connection config
    key, connection = await _connection(
        sdk, "algolia", {"type": "API_KEY", "apiKey": "algolia-secret"}, connection_config={"applicationId": "APP1"}
    )
    answer = await sdk(
        "get",
        _config(upstream, key, connection, "/echo/1/indexes", params={"page": "2"}, headers={"X-Trace": "t-1"}),
    )
    assert answer["status"] == 200
    seen = answer["data"]
    assert seen["path"] == "/echo/1/indexes"
    assert seen["query"] == "page=2"
    assert seen["headers"]["x-algolia-api-key"] == "algolia-secret"
    assert seen["headers"]["x-algolia-application-id"] == "APP1"
    assert seen["headers"]["X-Trace"] == "t-1"
    assert answer["headers"]["x-request-id"] == "req-123"
    assert "set-cookie" not in answer["headers"]


@pytest.mark.parametrize(
    ("provider", "credentials", "expected"),
    [
        (
            "amplitude",
            {"type": "BASIC", "username": "u", "password": "p"},
            "Basic " + base64.b64encode(b"u:p").decode(),
        ),
        ("airtable", {"type": "OAUTH2", "access_token": "oauth-token-1"}, "Bearer oauth-token-1"),
        ("hacker-news", {"type": "NONE"}, None),
    ],
)
async def test_credentials_by_auth_mode(
    sdk: Sdk, upstream: Upstream, provider: str, credentials: dict[str, Any], expected: str | None
) -> None:
    key, connection = await _connection(sdk, provider, credentials)
    answer = await sdk("get", _config(upstream, key, connection, "/echo/me"))
    assert answer["data"]["headers"].get("Authorization") == expected


async def test_oauth1_requests_are_signed(sdk: Sdk, upstream: Upstream) -> None:
    app = {"type": "OAUTH1", "client_id": OAUTH1_CONSUMER[0], "client_secret": OAUTH1_CONSUMER[1]}
    credentials = {"type": "OAUTH1", "oauth_token": OAUTH1_TOKEN[0], "oauth_token_secret": OAUTH1_TOKEN[1]}
    key, connection = await _connection(sdk, "trello", credentials, app)
    answer = await sdk("get", _config(upstream, key, connection, "/signed/1/members/me", params={"fields": "id"}))
    assert answer["data"] == {"ok": True, "method": "HMAC-SHA1", "realm": None}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
async def test_write_methods_send_their_json_body(sdk: Sdk, upstream: Upstream, method: str) -> None:
    key, connection = await _connection(sdk, "hacker-news", {"type": "NONE"})
    answer = await sdk(method, _config(upstream, key, connection, "/echo/items/9", data={"title": "hello"}))
    seen = answer["data"]
    assert (seen["method"], seen["body"]) == (method.upper(), '{"title":"hello"}')
    assert seen["headers"]["Content-Type"].startswith("application/json")


async def test_webdav_methods_through_proxy(sdk: Sdk, upstream: Upstream) -> None:
    key, connection = await _connection(sdk, "hacker-news", {"type": "NONE"})
    body = '<?xml version="1.0"?><d:propfind xmlns:d="DAV:"/>'
    for method in ("PROPFIND", "REPORT"):
        answer = await sdk(
            "proxy",
            _config(
                upstream,
                key,
                connection,
                "/echo/dav",
                method=method,
                data=body,
                headers={"Content-Type": "application/xml", "Depth": "1"},
            ),
        )
        assert (answer["data"]["method"], answer["data"]["body"]) == (method, body)
        assert answer["data"]["headers"]["Depth"] == "1"


async def test_upstream_status_and_raw_body_pass_through(sdk: Sdk, upstream: Upstream) -> None:
    key, connection = await _connection(sdk, "hacker-news", {"type": "NONE"})
    with pytest.raises(SdkError) as failed:
        await sdk("get", _config(upstream, key, connection, "/status/404", params={"body": "no such item"}))
    assert (failed.value.status, failed.value.data) == (404, "no such item")


async def test_retries_wait_out_a_429(sdk: Sdk, upstream: Upstream) -> None:
    key, connection = await _connection(sdk, "hacker-news", {"type": "NONE"})
    started = time.monotonic()
    answer = await sdk(
        "get", _config(upstream, key, connection, "/rate-limited", params={"key": "compat-429"}, retries=3)
    )
    assert answer["status"] == 200
    assert 1.9 <= time.monotonic() - started < 5
    assert upstream.attempts["compat-429"] == 2


async def test_an_epoch_reset_header_is_waited_out(sdk: Sdk, upstream: Upstream) -> None:
    # github's catalog entry: retry on 429 at the time `x-ratelimit-reset` names (epoch seconds)
    key, connection = await _connection(sdk, "github", {"type": "OAUTH2", "access_token": "gho_123"})
    started = time.monotonic()
    answer = await sdk(
        "get", _config(upstream, key, connection, "/reset-at", params={"key": "compat-reset", "in": "2"}, retries=3)
    )
    assert answer["status"] == 200
    assert 1.0 <= time.monotonic() - started < 5
    assert upstream.attempts["compat-reset"] == 2


async def test_nango_side_errors_use_the_envelope(sdk: Sdk, upstream: Upstream) -> None:
    key, _ = await _connection(sdk, "hacker-news", {"type": "NONE"})
    with pytest.raises(SdkError) as unknown:
        await sdk("get", _config(upstream, key, "nobody", "/echo/x"))
    assert (unknown.value.status, unknown.value.code) == (400, "unknown_connection")
