"""The outbound client against a local server: the resolver checks every answer and the connection
uses exactly the checked address, redirects are followed hop by hop under the policy."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict
from yarl import URL

from nango.outbound import OutboundClient, OutboundDenied, OutboundRequest, PinningResolver, server_policy
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
        client.session(policy).connector.clear_dns_cache()  # type: ignore[union-attr]
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
