from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nango.kv import KVStore, MemoryKV, open_kv
from nango.kv.redis_store import RedisKV
from tests.unit.kv.test_kv_contract import KVContract, name, receive


class TestMemoryKV(KVContract):
    @pytest.fixture
    async def kv(self) -> AsyncIterator[KVStore]:
        store = MemoryKV(prefix="test:")
        yield store
        await store.close()


async def test_publish_counts_local_subscribers() -> None:
    kv = MemoryKV()
    channel = name("channel")
    async with kv.subscribe(channel) as first, kv.subscribe(channel) as second:
        assert await kv.publish(channel, "hi") == 2
        assert await receive(first, 1) == await receive(second, 1) == [b"hi"]
    assert await kv.publish(channel, "nobody") == 0


async def test_expired_keys_are_swept_so_memory_stays_bounded() -> None:
    kv = MemoryKV(purge_interval=0.05)
    for i in range(1000):
        await kv.set(f"short-{i}", "x", ttl=0.01)
    await asyncio.sleep(0.06)
    await kv.set("survivor", "x")
    assert len(kv._entries) == 1


async def test_durations_must_be_positive() -> None:
    kv = MemoryKV()
    with pytest.raises(ValueError, match="ttl"):
        await kv.set("k", "v", ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        await kv.try_acquire("k", "me", ttl=-1)
    with pytest.raises(ValueError, match="wait"):
        kv.lock("k", ttl=1, wait=-1)


async def test_open_kv_picks_the_store_from_the_url() -> None:
    memory = open_kv(None, prefix="p:")
    assert isinstance(memory, MemoryKV)
    assert memory.prefix == "p:"
    assert isinstance(open_kv(""), MemoryKV)
    redis = open_kv("redis://user:pw@127.0.0.1:1/0")
    assert isinstance(redis, RedisKV)
    await redis.close()


def test_invalid_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="invalid Redis URL") as raised:
        open_kv("http://user:hunter2secret@redis.internal:6379")
    assert "hunter2secret" not in str(raised.value)
