"""The outbound client against a local server: the resolver checks every answer and the connection
uses exactly the checked address, redirects are followed hop by hop under the policy."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict
from yarl import URL

from nango.outbound import OutboundClient, OutboundDenied, OutboundRequest, PinningResolver, PoolSettings, server_policy
from nango.outbound.errors import TooManyRedirects
from tests.conftest import free_port


class ScriptedDns(AbstractResolver):
    """Answers each lookup with the next address of a script (a rebinding name server)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0)]

    async def close(self) -> None:
        return None


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"host": request.host})

    async def hop(request: web.Request) -> web.Response:
        left = int(request.match_info["left"])
        raise web.HTTPFound(f"/hop/{left - 1}" if left else "/hello")

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/hop/{left}", hop)
    app.router.add_get("/away", away)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_checked_address_is_the_address_connected_to(server: str) -> None:
    port = server.split(":")[1]
    policy = server_policy('{"blockLoopback": false}', None)
    # first answer: loopback (allowed here); every later lookup: a private address (refused)
    dns = ScriptedDns(["127.0.0.1", "10.0.0.7"])
    url = URL(f"http://api.rebind.test:{port}/hello")
    # no keep-alive, so that each request opens a connection of its own
    close = CIMultiDict({"Connection": "close"})
    async with OutboundClient(dns=lambda: dns) as client:
        for _ in range(2):
            response = await client.send(OutboundRequest("GET", url, headers=close), policy)
            assert response.status == 200
            response.release()
        # new connections use the checked answer for the pool's DNS TTL: they are pinned to it
        assert dns.lookups == 1
        # once the name is looked up again, the new (private) answer is refused, never connected to
        client.clear_dns_cache()
        with pytest.raises(OutboundDenied) as denied:
            await client.send(OutboundRequest("GET", url, headers=close), policy)
        assert (denied.value.reason, denied.value.host) == ("denied_dns", "api.rebind.test")


async def test_a_host_with_one_bad_address_is_refused() -> None:
    policy = server_policy(None, None)

    class Mixed(ScriptedDns):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            good, bad = await super().resolve(host, port, family), await super().resolve(host, port, family)
            return good + bad

    with pytest.raises(OutboundDenied):
        await PinningResolver(policy, Mixed(["93.184.216.34", "169.254.169.254"])).resolve("mixed.test", 80)
    assert len(await PinningResolver(policy, ScriptedDns(["93.184.216.34"])).resolve("ok.test", 80)) == 1


async def test_redirects_are_followed_and_capped(server: str) -> None:
    policy = server_policy('{"blockLoopback": false, "maxRedirects": 3}', None)
    async with OutboundClient() as client:
        response = await client.send(OutboundRequest("GET", URL(f"http://{server}/hop/2")), policy)
        assert (response.status, str(response.url).endswith("/hello")) == (200, True)
        response.release()
        with pytest.raises(TooManyRedirects):
            await client.send(OutboundRequest("GET", URL(f"http://{server}/hop/5")), policy)
        unfollowed = OutboundRequest("GET", URL(f"http://{server}/hop/5"), follow_redirects=False)
        response = await client.send(unfollowed, policy)
        assert response.status == 302
        response.release()


async def test_a_redirect_to_a_refused_address_is_not_followed(server: str) -> None:
    policy = server_policy('{"blockLoopback": false}', None)
    async with OutboundClient() as client:
        with pytest.raises(OutboundDenied) as denied:
            await client.send(OutboundRequest("GET", URL(f"http://{server}/away?to=http://169.254.169.254/")), policy)
    assert denied.value.reason == "redirect_denied"


async def test_no_cookie_set_by_an_upstream_rides_along_on_a_later_call() -> None:
    """The client serves every connection of every customer: a Set-Cookie from one answer must never
    come back on another call, through send() or session()."""
    seen: list[str | None] = []

    async def setter(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.json_response({})
        response.set_cookie("session", "belongs-to-customer-a", path="/")
        return response

    app = web.Application()
    app.router.add_get("/set", setter)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    policy = server_policy('{"blockLoopback": false}', None)
    # a name, not an address: aiohttp's default jar keeps no cookies for bare IP addresses
    url = URL(f"http://api.cookies.test:{port}/set")
    try:
        async with OutboundClient(dns=lambda: ScriptedDns(["127.0.0.1"])) as client:
            for decompress in (False, True, False):
                response = await client.send(OutboundRequest("GET", url, decompress=decompress), policy)
                assert response.status == 200
                assert "session" in response.headers.get("Set-Cookie", "")
                response.release()
            for _ in range(2):
                async with client.session(policy).get(url) as plain:
                    assert plain.status == 200
    finally:
        await runner.cleanup()
    assert seen == [None] * 5


class RawUpstream:
    """An HTTP/1.1 server written by hand that records each request. With `one_per_connection` it
    answers one request per connection and drops the connection when the next one arrives on it (a
    keep-alive connection the upstream closed just as it was reused); with `stall` it sends part of
    an answer and stops."""

    def __init__(self, *, one_per_connection: bool = False, stall: bool = False) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        self.one_per_connection = one_per_connection
        self.stall = stall
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if self.one_per_connection and answered:
                    return
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                self.requests.append(head + (await reader.readexactly(length) if length else b""))
                if self.stall:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                    await asyncio.sleep(5)
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
                await writer.drain()
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


LOOPBACK_OK = '{"blockLoopback": false}'


async def test_send_passes_method_headers_and_body_through() -> None:
    async with RawUpstream() as up, OutboundClient() as client:
        policy = server_policy(LOOPBACK_OK, None)
        headers = CIMultiDict({"Content-Type": "application/json", "X-Api-Key": "k-123"})
        url = URL(f"http://127.0.0.1:{up.port}/v1/items?a=1")
        response = await client.send(OutboundRequest("POST", url, headers=headers, body=b'{"x":1}'), policy)
        assert response.status == 200
        assert await response.read() == b"ok"
        response.release()
    head, _, body = up.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/items?a=1 HTTP/1.1"
    sent = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    assert sent["content-type"] == "application/json"
    assert sent["x-api-key"] == "k-123"
    assert sent["content-length"] == "7"
    assert sent["host"] == f"127.0.0.1:{up.port}"
    # the raw sender asks for no encoding of its own: the caller's Accept-Encoding, if any, is what goes
    assert "accept-encoding" not in sent
    assert body == b'{"x":1}'


async def test_a_dropped_pooled_connection_is_retried_once_for_an_idempotent_method() -> None:
    async with RawUpstream(one_per_connection=True) as up, OutboundClient() as client:
        policy = server_policy(LOOPBACK_OK, None)
        url = URL(f"http://127.0.0.1:{up.port}/x")
        for _ in range(3):
            response = await client.send(OutboundRequest("GET", url), policy)
            assert await response.read() == b"ok"
            response.release()
        assert up.connections == 3
        # a POST is not sent twice: the caller sees the dropped connection
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.send(OutboundRequest("POST", url, body=b"once"), policy)


async def test_credentials_in_the_url_become_basic_auth() -> None:
    async with RawUpstream() as up, OutboundClient() as client:
        policy = server_policy(LOOPBACK_OK, None)
        response = await client.send(OutboundRequest("GET", URL(f"http://user:pw@127.0.0.1:{up.port}/x")), policy)
        response.release()
    assert b"Authorization: Basic dXNlcjpwdw==" in up.requests[0]


async def test_the_read_timeout_applies_to_a_stalled_answer() -> None:
    async with RawUpstream(stall=True) as up, OutboundClient(PoolSettings(read_timeout=0.2)) as client:
        policy = server_policy(LOOPBACK_OK, None)
        response = await client.send(OutboundRequest("GET", URL(f"http://127.0.0.1:{up.port}/x")), policy)
        with pytest.raises(TimeoutError):
            await response.read()
        response.close()
