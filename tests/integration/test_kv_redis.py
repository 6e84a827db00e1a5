"""The KV contract against real Redis, and what only Redis gives: state shared between replicas."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from nango.errors import ServiceUnavailable
from nango.kv import KVStore, LockTimeout, open_kv
from nango.kv.redis_store import RedisKV
from tests.conftest import free_port, wait_for_port
from tests.unit.kv.test_kv_contract import KVContract, name, receive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]


@pytest.fixture
async def kv_prefix(redis_url: str, redis_prefix: str) -> AsyncIterator[str]:
    """A prefix of this test's own; its keys are removed afterwards (a shared Redis keeps no litter)."""
    prefix = f"{redis_prefix}kv-{uuid.uuid4().hex[:8]}:"
    yield prefix
    raw = redis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in raw.scan_iter(match=prefix + "*")]
        if keys:
            await raw.delete(*keys)
    finally:
        await raw.aclose()


@pytest.fixture
async def replicas(redis_url: str, kv_prefix: str) -> AsyncIterator[tuple[KVStore, KVStore]]:
    """Two stores on one Redis, as two replicas of a service would have."""
    first, second = open_kv(redis_url, prefix=kv_prefix), open_kv(redis_url, prefix=kv_prefix)
    yield first, second
    await first.close()
    await second.close()


class TestRedisKV(KVContract):
    @pytest.fixture
    async def kv(self, redis_url: str, kv_prefix: str) -> AsyncIterator[KVStore]:
        store = open_kv(redis_url, prefix=kv_prefix)
        assert isinstance(store, RedisKV)
        yield store
        await store.close()


async def test_keys_and_channels_live_under_the_prefix(redis_url: str, kv_prefix: str) -> None:
    kv = open_kv(redis_url, prefix=kv_prefix)
    raw = redis.Redis.from_url(redis_url)
    try:
        await kv.set("k", "v")
        assert await raw.get(kv_prefix + "k") == b"v"
        async with kv.subscribe("news") as subscription:
            assert await raw.publish(kv_prefix + "news", "hello") == 1
            assert await receive(subscription, 1) == [b"hello"]
    finally:
        await raw.aclose()
        await kv.close()


async def test_lock_held_by_one_replica_blocks_the_other(replicas: tuple[KVStore, KVStore]) -> None:
    first, second = replicas
    key = name("lock")
    async with first.lock(key, ttl=5):
        with pytest.raises(LockTimeout):
            async with second.lock(key, ttl=5, wait=0.2):
                pytest.fail("two replicas held one lock")
        waiter = asyncio.create_task(second.lock(key, ttl=5, wait=3).__aenter__())
        await asyncio.sleep(0.1)
        assert not waiter.done()
    async with asyncio.timeout(3):
        lock = await waiter
    assert await first.get(key) == lock.owner.encode()


async def test_message_published_by_one_replica_reaches_the_other(replicas: tuple[KVStore, KVStore]) -> None:
    first, second = replicas
    channel = name("channel")
    async with second.subscribe(channel) as theirs, first.subscribe(channel) as ours:
        assert await first.publish(channel, "to all") == 2, "one receiving connection per replica"
        assert await receive(theirs, 1) == [b"to all"]
        assert await receive(ours, 1) == [b"to all"]


async def test_subscriptions_share_one_connection(redis_url: str, kv_prefix: str) -> None:
    kv = open_kv(redis_url, prefix=kv_prefix)
    try:
        async with kv.subscribe("a") as a, kv.subscribe("b") as b, kv.subscribe("b") as b2:
            assert await kv.publish("a", "1") == 1
            assert await kv.publish("b", "2") == 1
            assert await receive(a, 1) == [b"1"]
            assert await receive(b, 1) == await receive(b2, 1) == [b"2"]
    finally:
        await kv.close()


async def test_subscription_survives_a_dropped_connection(redis_url: str, kv_prefix: str) -> None:
    client_name = f"nango-test-{uuid.uuid4().hex[:8]}"
    kv = open_kv(f"{redis_url}{'&' if '?' in redis_url else '?'}client_name={client_name}", prefix=kv_prefix)
    raw = redis.Redis.from_url(redis_url)
    try:
        async with kv.subscribe("events") as subscription:
            subscribers = [c for c in await raw.client_list() if c["name"] == client_name and c["sub"] != "0"]
            assert len(subscribers) == 1
            await raw.client_kill_filter(_id=subscribers[0]["id"])
            # Messages sent while it reconnects are lost (pub/sub is at-most-once); keep sending until one lands.
            async with asyncio.timeout(5):
                while await kv.publish("events", "after the drop") == 0:
                    await asyncio.sleep(0.05)
            assert (await receive(subscription, 1))[0] == b"after the drop"
    finally:
        await raw.aclose()
        await kv.close()


async def test_subscription_raises_service_unavailable_when_redis_goes_away(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server to start a Redis of its own to stop")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kv = open_kv(f"redis://127.0.0.1:{port}/0", prefix="doomed:")
    try:
        wait_for_port("127.0.0.1", port)
        async with kv.subscribe("events") as subscription:
            await kv.publish("events", "before")
            assert await receive(subscription, 1) == [b"before"]
            server.terminate()
            server.wait(5)
            with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{port}"):
                await receive(subscription, 1, timeout=5)
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(5)
        await kv.close()


async def test_unreachable_redis_is_service_unavailable_without_the_password() -> None:
    password = "pa55-w0rd-never-shown"
    kv = open_kv(f"redis://nango:{password}@127.0.0.1:{free_port()}/0", prefix="unreachable:")
    try:
        for attempt in (kv.ping(), kv.get("k"), kv.publish("c", "m"), kv.subscribe("c").__aenter__()):
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as raised:
                await attempt
            assert time.monotonic() - started < 5
            text = "".join(traceback.format_exception(raised.value))
            assert password not in text
            assert "127.0.0.1" in raised.value.message
    finally:
        await kv.close()
