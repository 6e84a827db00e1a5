"""What every KVStore must do. Each store's tests subclass `KVContract` and provide a `kv` fixture."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from nango.errors import InternalError, RpcStatus
from nango.kv import KVStore, LockTimeout, Subscription


def name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:8]}"


async def receive(subscription: Subscription, count: int, timeout: float = 2.0) -> list[bytes]:
    """The next `count` messages, fewer if the subscription ends; TimeoutError if they do not come."""
    received: list[bytes] = []
    async with asyncio.timeout(timeout):
        async for message in subscription:
            received.append(message)
            if len(received) == count:
                break
    return received


@pytest.mark.timeout(10)
class KVContract:
    async def test_set_then_get_returns_bytes(self, kv: KVStore) -> None:
        key = name("k")
        assert await kv.get(key) is None
        assert await kv.set(key, "héllo") is True
        assert await kv.get(key) == "héllo".encode()
        await kv.set(key, b"\x00\xff")
        assert await kv.get(key) == b"\x00\xff"

    async def test_key_expires_after_its_ttl(self, kv: KVStore) -> None:
        key, forever = name("k"), name("forever")
        await kv.set(key, "v", ttl=0.3)
        await kv.set(forever, "v")
        left = await kv.ttl(key)
        assert left is not None
        assert 0 < left <= 0.3
        assert await kv.ttl(forever) is None
        assert await kv.ttl(name("missing")) is None
        await asyncio.sleep(0.4)
        assert await kv.get(key) is None
        assert await kv.ttl(key) is None
        assert await kv.get(forever) == b"v"

    async def test_only_if_absent_keeps_the_first_value_until_it_expires(self, kv: KVStore) -> None:
        key = name("k")
        assert await kv.set(key, "first", ttl=0.3, only_if_absent=True) is True
        assert await kv.set(key, "second", only_if_absent=True) is False
        assert await kv.get(key) == b"first"
        await asyncio.sleep(0.4)
        assert await kv.set(key, "third", only_if_absent=True) is True
        assert await kv.get(key) == b"third"

    async def test_delete_counts_keys_that_existed(self, kv: KVStore) -> None:
        a, b = name("a"), name("b")
        await kv.set(a, "1")
        await kv.set(b, "2")
        assert await kv.delete(a, b, name("missing")) == 2
        assert await kv.get(a) is None
        assert await kv.delete() == 0

    async def test_incr_counts_in_a_fixed_window(self, kv: KVStore) -> None:
        key = name("window")
        assert await kv.incr(key, ttl=0.5) == 1
        await asyncio.sleep(0.2)
        assert await kv.incr(key, 4, ttl=0.5) == 5
        left = await kv.ttl(key)
        assert left is not None
        assert left <= 0.35, "a later increment must not extend the window"
        assert await kv.get(key) == b"5"
        await asyncio.sleep(0.45)
        assert await kv.incr(key, ttl=0.5) == 1, "a new window starts from zero"

    async def test_incr_is_atomic_under_concurrency(self, kv: KVStore) -> None:
        key = name("counter")
        results = await asyncio.gather(*(kv.incr(key, ttl=5) for _ in range(50)))
        assert sorted(results) == list(range(1, 51))
        assert await kv.incr(key, -50) == 0

    async def test_incr_of_a_non_integer_is_an_internal_error(self, kv: KVStore) -> None:
        key = name("text")
        await kv.set(key, "not a number")
        with pytest.raises(InternalError):
            await kv.incr(key)

    async def test_only_the_owner_releases(self, kv: KVStore) -> None:
        key = name("lock")
        assert await kv.try_acquire(key, "alice", ttl=5) is True
        assert await kv.try_acquire(key, "bob", ttl=5) is False
        assert await kv.release(key, "bob") is False
        assert await kv.try_acquire(key, "bob", ttl=5) is False, "bob's release must not free alice's lock"
        assert await kv.release(key, "alice") is True
        assert await kv.release(key, "alice") is False
        assert await kv.try_acquire(key, "bob", ttl=5) is True

    async def test_lock_excludes_concurrent_holders(self, kv: KVStore) -> None:
        key = name("lock")
        inside: list[str] = []
        overlaps: list[tuple[str, ...]] = []

        async def worker(who: str) -> None:
            async with kv.lock(key, ttl=5, wait=3):
                inside.append(who)
                if len(inside) > 1:
                    overlaps.append(tuple(inside))
                await asyncio.sleep(0.05)
                inside.remove(who)

        async with asyncio.timeout(5):
            await asyncio.gather(worker("a"), worker("b"), worker("c"))
        assert overlaps == []
        assert await kv.get(key) is None, "the last holder released on exit"

    async def test_lock_wait_times_out_with_lock_timeout(self, kv: KVStore) -> None:
        key = name("lock")
        async with kv.lock(key, ttl=5):
            started = time.monotonic()
            with pytest.raises(LockTimeout) as raised:
                async with kv.lock(key, ttl=5, wait=0.3):
                    pytest.fail("acquired a lock that is held")
            assert 0.25 <= time.monotonic() - started < 2
            with pytest.raises(LockTimeout):
                async with kv.lock(key, ttl=5):
                    pytest.fail("acquired a lock that is held")
        error = raised.value
        assert (error.instance_code, error.status, type(error).rpc_status) == ("lock_timeout", 409, RpcStatus.ABORTED)

    async def test_waiter_gets_a_lock_once_its_ttl_lapses(self, kv: KVStore) -> None:
        key = name("lock")
        assert await kv.try_acquire(key, "crashed", ttl=0.2)
        async with asyncio.timeout(3), kv.lock(key, ttl=5, wait=2) as lock:
            assert await kv.get(key) == lock.owner.encode()

    async def test_lock_exit_leaves_a_successor_alone(self, kv: KVStore) -> None:
        key = name("lock")
        async with kv.lock(key, ttl=0.1):
            await asyncio.sleep(0.25)
            assert await kv.try_acquire(key, "successor", ttl=5)
        assert await kv.get(key) == b"successor"

    async def test_every_subscriber_receives_every_message_in_order(self, kv: KVStore) -> None:
        channel = name("channel")
        async with kv.subscribe(channel) as first, kv.subscribe(channel) as second:
            assert await kv.publish(name("other"), "elsewhere") == 0
            assert await kv.publish(channel, "one") >= 1
            await kv.publish(channel, b"two")
            assert await receive(first, 2) == [b"one", b"two"]
            assert await receive(second, 2) == [b"one", b"two"]

    async def test_subscriber_that_left_receives_nothing_more(self, kv: KVStore) -> None:
        channel = name("channel")
        async with kv.subscribe(channel) as stays:
            async with kv.subscribe(channel) as leaves:
                await kv.publish(channel, "before")
                assert await receive(leaves, 1) == [b"before"]
            await kv.publish(channel, "after")
            assert await receive(stays, 2) == [b"before", b"after"]
            assert await receive(leaves, 1, timeout=0.2) == []

    async def test_close_ends_open_subscriptions(self, kv: KVStore) -> None:
        async with kv.subscribe(name("channel")) as subscription:
            await kv.ping()
            await kv.close()
            assert await receive(subscription, 1) == []
        await kv.close()
