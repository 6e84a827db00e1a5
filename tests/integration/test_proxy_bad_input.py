"""`/proxy` refuses bad input with its documented code (never a 500), and a caller that leaves
mid-transfer leaves nothing behind: the upstream call is cancelled and the server keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import free_port
from tests.support.proxy import ProxyClient, provider, proxy_server
from tests.support.upstream import Upstream, start_upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BODY_LIMIT = 1024 * 1024


@dataclass
class Setup:
    proxy: ProxyClient
    disabled: ProxyClient
    upstream: Upstream
    ids: dict[str, tuple[str, str]] = field(default_factory=dict)


def _providers(up: str, garbage: str) -> dict[str, Any]:
    return {
        "b-garbage": provider("NONE", proxy={"base_url": garbage}),
        "b-key": provider("API_KEY", proxy={"base_url": up, "query": {"api_key": "${apiKey}"}}),
        "b-header": provider("API_KEY", proxy={"base_url": up, "headers": {"x-api-key": "${apiKey}"}}),
        "b-open": provider("NONE", proxy={"base_url": up}),
        "b-tenant": provider("NONE", proxy={"base_url": up + "/${connectionConfig.tenant}"}),
        "b-closed": provider("NONE", proxy={"base_url": f"http://127.0.0.1:{free_port()}"}),
        "b-no-base": provider("NONE"),
    }


@pytest.fixture(scope="module")
async def setup(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    tmp = tmp_path_factory.mktemp("proxy-bad-input")

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    garbage = await asyncio.start_server(not_http, "127.0.0.1", 0)
    garbage_url = f"http://127.0.0.1:{garbage.sockets[0].getsockname()[1]}"
    async with garbage, start_upstream() as up:
        env = {
            "NANGO_OUTBOUND_URL_POLICY": '{"blockLoopback": false}',
            "NANGO_SERVER_PUBLIC_BODY_LIMIT": str(BODY_LIMIT),
            "NANGO_OUTBOUND_READ_TIMEOUT_MS": "1000",
        }
        async with (
            proxy_server(database_url, tmp, _providers(up.url, garbage_url), **env) as proxy,
            proxy_server(
                database_url,
                tmp,
                _providers(up.url, garbage_url),
                NANGO_OUTBOUND_URL_POLICY='{"blockLoopback": false}',
                NANGO_PROXY_BASE_URL_OVERRIDE_ENABLED="false",
            ) as off,
        ):
            state = Setup(proxy, off, up)
            keys = {"b-key": "k-1", "b-header": "k-1\r\nX-Smuggled: yes"}
            for name in ("b-key", "b-header", "b-open", "b-tenant", "b-closed", "b-no-base", "b-garbage"):
                integration = await proxy.integration(name)
                credentials = {"type": "API_KEY", "apiKey": keys[name]} if name in keys else {"type": "NONE"}
                state.ids[name] = (integration, await proxy.connection(integration, credentials))
            integration = await off.integration("b-open")
            state.ids["off"] = (integration, await off.connection(integration, {"type": "NONE"}))
            yield state


CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("no Provider-Config-Key", {"drop": "Provider-Config-Key"}, 400, "invalid_headers"),
    ("no Connection-Id", {"drop": "Connection-Id"}, 400, "invalid_headers"),
    ("malformed Connection-Id", {"headers": {"Connection-Id": "<script>"}}, 400, "invalid_headers"),
    ("no Authorization", {"drop": "Authorization"}, 401, "missing_auth_header"),
    ("unknown connection", {"headers": {"Connection-Id": "nobody"}}, 400, "unknown_connection"),
    ("unknown integration", {"headers": {"Provider-Config-Key": "nothing-here"}}, 404, "unknown_provider_config"),
    ("Retries not a number", {"headers": {"Retries": "three"}}, 400, "invalid_headers"),
    ("Retries negative", {"headers": {"Retries": "-1"}}, 400, "invalid_headers"),
    ("Retries too many", {"headers": {"Retries": "1000"}}, 400, "invalid_headers"),
    ("Retry-On malformed", {"headers": {"Retry-On": "429;503"}}, 400, "invalid_headers"),
    ("Retry-On not codes", {"headers": {"Retry-On": "often"}}, 400, "invalid_headers"),
    ("Decompress not a boolean", {"headers": {"Decompress": "yes"}}, 400, "invalid_headers"),
    (
        "Forward-Headers-On-Redirect not a boolean",
        {"headers": {"Forward-Headers-On-Redirect": "1"}},
        400,
        "invalid_headers",
    ),
    ("Base-Url-Override not a URL", {"headers": {"Base-Url-Override": "not a url"}}, 400, "invalid_headers"),
    (
        "Base-Url-Override not http",
        {"headers": {"Base-Url-Override": "ftp://files.example.com"}},
        400,
        "invalid_headers",
    ),
    ("Nango-Activity-Log-Id too long", {"headers": {"Nango-Activity-Log-Id": "x" * 300}}, 400, "invalid_headers"),
    (
        "query conflicting with the provider's",
        {"endpoint": "/echo/x?api_key=mine", "use": "b-key"},
        400,
        "invalid_query_params",
    ),
    ("base URL missing connection config", {"use": "b-tenant"}, 400, "invalid_base_url"),
    # a header that would split the request upstream is never sent
    ("credential with a line break", {"use": "b-header"}, 400, "invalid_headers"),
    ("provider without base URL", {"use": "b-no-base"}, 400, "unsupported_provider"),
    (
        "body over the limit (Content-Length)",
        {"method": "POST", "data": b"x" * (BODY_LIMIT + 1)},
        413,
        "request_too_large",
    ),
    ("body over the limit (chunked)", {"method": "POST", "chunked": BODY_LIMIT + 1}, 413, "request_too_large"),
    ("method not proxied", {"method": "TRACE"}, 405, "method_not_allowed"),
    ("upstream refuses connections", {"use": "b-closed"}, 502, "upstream_unreachable"),
    ("upstream does not speak HTTP", {"use": "b-garbage"}, 502, "upstream_unreachable"),
    ("upstream too slow", {"endpoint": "/slow?seconds=3"}, 504, "upstream_timeout"),
]


async def _chunks(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        part = min(65536, size - sent)
        sent += part
        yield b"y" * part


@pytest.mark.parametrize(("case", "request_spec", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_answers_its_code(
    setup: Setup, case: str, request_spec: dict[str, Any], status: int, code: str
) -> None:
    proxy = setup.proxy
    integration, connection = setup.ids[request_spec.get("use", "b-open")]
    headers = {"Authorization": f"Bearer {proxy.key}", "Provider-Config-Key": integration, "Connection-Id": connection}
    headers.update(request_spec.get("headers", {}))
    headers.pop(request_spec.get("drop", ""), None)
    data = request_spec.get("data")
    if "chunked" in request_spec:
        data = _chunks(request_spec["chunked"])
    method = request_spec.get("method", "GET")
    url = proxy.url + "/proxy" + request_spec.get("endpoint", "/echo/x")
    async with proxy.http.request(method, url, headers=headers, data=data) as response:
        body = await response.json()
    assert (response.status, body["error"]["code"]) == (status, code), body
    assert body["error"]["message"]


async def test_base_url_override_can_be_disabled(setup: Setup) -> None:
    integration, connection = setup.ids["off"]
    answer = await setup.disabled.proxy(
        "GET",
        "/echo/x",
        integration=integration,
        connection=connection,
        headers={"Base-Url-Override": setup.upstream.url},
    )
    assert (answer.status, answer.code) == (400, "base_url_override_disabled")
    # the SDK always sends the header, empty when unused
    answer = await setup.disabled.proxy(
        "GET", "/echo/x", integration=integration, connection=connection, headers={"Base-Url-Override": ""}
    )
    assert answer.status == 200


async def _raw_request(url: str, head: str, body: bytes) -> None:
    """Send a request line, headers and part of a body, then hang up."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.encode() + body)
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()
    del reader


async def test_caller_leaving_mid_upload_cancels_the_upstream_call(setup: Setup) -> None:
    proxy = setup.proxy
    integration, connection = setup.ids["b-open"]
    head = (
        "POST /proxy/echo/upload?key=upload-left HTTP/1.1\r\n"
        f"Host: {proxy.url.removeprefix('http://')}\r\n"
        f"Authorization: Bearer {proxy.key}\r\nProvider-Config-Key: {integration}\r\nConnection-Id: {connection}\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"z" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8))
    await _raw_request(proxy.url, head, body)
    for _ in range(100):
        if "upload-left" in setup.upstream.abandoned:
            break
        await asyncio.sleep(0.05)
    assert "upload-left" in setup.upstream.abandoned
    answer = await proxy.proxy("GET", "/echo/after", integration=integration, connection=connection)
    assert answer.status == 200


async def test_caller_leaving_during_a_retry_wait_stops_the_call(setup: Setup) -> None:
    proxy = setup.proxy
    integration, connection = setup.ids["b-open"]
    head = (
        "GET /proxy/rate-limited?key=left-waiting&after=3 HTTP/1.1\r\n"
        f"Host: {proxy.url.removeprefix('http://')}\r\n"
        f"Authorization: Bearer {proxy.key}\r\nProvider-Config-Key: {integration}\r\nConnection-Id: {connection}\r\n"
        "Retries: 3\r\n\r\n"
    )
    await _raw_request(proxy.url, head, b"")
    await asyncio.sleep(4)
    # the first attempt was made; the caller was gone before the wait ended, so no second one
    assert setup.upstream.attempts["left-waiting"] == 1
