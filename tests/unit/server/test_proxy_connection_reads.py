"""The proxy's connection reads: calls that miss the credential cache together share one read."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from nango.server.credential_cache import CredentialCache
from nango.server.errors import UnknownConnection
from nango.server.proxy import ProxyService

KEY = (1, "github", "conn-1")


class Connections:
    """`ConnectionService`'s read path: counts reads, each held until `release` is set."""

    def __init__(self, ttl: float, *, fails: bool = False) -> None:
        self.cache = CredentialCache(ttl)
        self.reads = 0
        self.fails = fails
        self.release = asyncio.Event()

    async def get_fresh_cached(self, environment_id: int, provider_config_key: str, connection_id: str) -> Any:
        self.reads += 1
        await self.release.wait()
        if self.fails:
            raise UnknownConnection()
        return object()


def service(connections: Connections) -> ProxyService:
    return ProxyService(cast(Any, None), cast(Any, connections), cast(Any, None), cast(Any, None), max_body=1024)


async def test_concurrent_misses_share_one_read() -> None:
    connections = Connections(5.0)
    proxy = service(connections)
    calls = [asyncio.ensure_future(proxy.connection(*KEY)) for _ in range(20)]
    await asyncio.sleep(0)
    connections.release.set()
    got = await asyncio.gather(*calls)
    assert connections.reads == 1
    assert all(connection is got[0] for connection in got)
    assert proxy._loading == {}
    # the next miss reads again
    await proxy.connection(*KEY)
    assert connections.reads == 2


async def test_other_connections_read_on_their_own() -> None:
    connections = Connections(5.0)
    proxy = service(connections)
    calls = [asyncio.ensure_future(proxy.connection(1, "github", f"conn-{i}")) for i in range(3)]
    await asyncio.sleep(0)
    connections.release.set()
    await asyncio.gather(*calls)
    assert connections.reads == 3


async def test_a_failed_read_fails_every_waiter_and_is_not_kept() -> None:
    connections = Connections(5.0, fails=True)
    proxy = service(connections)
    calls = [asyncio.ensure_future(proxy.connection(*KEY)) for _ in range(5)]
    await asyncio.sleep(0)
    connections.release.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, UnknownConnection) for result in results)
    assert connections.reads == 1
    with pytest.raises(UnknownConnection):
        await proxy.connection(*KEY)
    assert connections.reads == 2


async def test_a_caller_that_leaves_does_not_cancel_the_shared_read() -> None:
    connections = Connections(5.0)
    proxy = service(connections)
    first = asyncio.ensure_future(proxy.connection(*KEY))
    second = asyncio.ensure_future(proxy.connection(*KEY))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    connections.release.set()
    assert await second is not None
    assert first.cancelled()
    assert connections.reads == 1


async def test_without_the_cache_every_call_reads() -> None:
    connections = Connections(0.0)
    proxy = service(connections)
    calls = [asyncio.ensure_future(proxy.connection(*KEY)) for _ in range(4)]
    await asyncio.sleep(0)
    connections.release.set()
    await asyncio.gather(*calls)
    assert connections.reads == 4
