"""Group commit of incoming webhooks' outbox items: one write for the requests that arrive together,
each request released only by its own batch's commit, a bad request failing alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from nango.errors import ServiceUnavailable
from nango.server.webhooks.incoming import GroupCommit, TtlCache
from nango.server.webhooks.outbox import Delivery, TaskToCreate


def delivery(n: int) -> Delivery:
    return Delivery(environment_id=1, type="forward", body={"n": n}, urls=("https://customer.example/hooks",))


class RecordingOutbox:
    """Stands in for the outbox table: records each write; a write holding a poisoned item fails as
    Postgres fails a statement."""

    def __init__(self, delay: float = 0.01) -> None:
        self.writes: list[list[int]] = []
        self.delay = delay
        self.poisoned: set[int] = set()

    async def add(self, items: Sequence[Delivery | TaskToCreate]) -> None:
        numbers = [int(item.body["n"]) for item in items if isinstance(item, Delivery)]
        await asyncio.sleep(self.delay)
        if self.poisoned & set(numbers):
            raise asyncpg.CheckViolationError("refused")
        self.writes.append(numbers)


async def test_concurrent_requests_share_writes_and_each_waits_for_its_commit() -> None:
    outbox = RecordingOutbox()
    commit = GroupCommit(outbox)  # type: ignore[arg-type]
    await asyncio.gather(*(commit.add([delivery(n)]) for n in range(100)))
    assert sorted(n for write in outbox.writes for n in write) == list(range(100))
    # the first request is written alone; everything that arrived meanwhile goes in the next write
    assert len(outbox.writes) <= 3


async def test_a_request_is_not_released_before_its_items_are_written() -> None:
    outbox = RecordingOutbox(delay=0.05)
    commit = GroupCommit(outbox)  # type: ignore[arg-type]
    pending = asyncio.create_task(commit.add([delivery(1)]))
    await asyncio.sleep(0.01)
    assert not pending.done()
    await pending
    assert outbox.writes == [[1]]


async def test_a_refused_batch_is_written_request_by_request_so_only_the_bad_one_fails() -> None:
    outbox = RecordingOutbox()
    outbox.poisoned = {13}
    commit = GroupCommit(outbox)  # type: ignore[arg-type]
    results = await asyncio.gather(*(commit.add([delivery(n)]) for n in range(20)), return_exceptions=True)
    failed = [n for n, result in enumerate(results) if isinstance(result, Exception)]
    assert failed == [13]
    assert sorted(n for write in outbox.writes for n in write) == [n for n in range(20) if n != 13]


async def test_too_many_waiting_items_are_refused_at_once() -> None:
    outbox = RecordingOutbox(delay=0.2)
    commit = GroupCommit(outbox, max_pending=10)  # type: ignore[arg-type]
    first = asyncio.create_task(commit.add([delivery(n) for n in range(8)]))
    await asyncio.sleep(0)
    second = asyncio.create_task(commit.add([delivery(n) for n in range(8, 16)]))
    third = asyncio.create_task(commit.add([delivery(n) for n in range(16, 20)]))
    first_result, second_result, third_result = await asyncio.gather(first, second, third, return_exceptions=True)
    assert first_result is None
    assert second_result is None
    assert isinstance(third_result, ServiceUnavailable)
    assert third_result.status == 503


def test_the_lookup_cache_expires_and_can_be_switched_off() -> None:
    cache: TtlCache[str, int] = TtlCache(60)
    cache.put("a", 1)
    assert cache.get("a") == 1
    cache.drop_where(lambda key: key == "a")
    assert cache.get("a") is None
    expired: TtlCache[str, int] = TtlCache(-1)
    expired.put("a", 1)
    assert expired.get("a") is None
    off: TtlCache[str, int] = TtlCache(0)
    off.put("a", 1)
    assert off.get("a") is None


async def test_a_stale_lookup_is_served_at_once_and_refreshed_in_the_background() -> None:
    cache: TtlCache[str, int] = TtlCache(0.05, max_stale_seconds=10)
    loads: list[int] = []

    async def load() -> int:
        loads.append(1)
        await asyncio.sleep(0.01)
        return len(loads)

    assert await cache.fetch("k", load) == 1
    await asyncio.sleep(0.06)
    # stale: answered from the cache without waiting, while one refresh runs
    assert await cache.fetch("k", load) == 1
    assert await cache.fetch("k", load) == 1
    await asyncio.sleep(0.03)
    assert len(loads) == 2
    assert await cache.fetch("k", load) == 2


async def test_a_lookup_too_old_is_not_served_and_a_drop_voids_loads_under_way() -> None:
    cache: TtlCache[str, str] = TtlCache(0.01, max_stale_seconds=0.01)
    cache.put("k", "old")
    await asyncio.sleep(0.03)
    assert cache.lookup("k") is None

    started = asyncio.Event()

    async def slow_load() -> str:
        started.set()
        await asyncio.sleep(0.02)
        return "read before the change"

    pending = asyncio.create_task(cache.fetch("k", slow_load))
    await started.wait()
    cache.drop("k")
    assert await pending == "read before the change"
    assert cache.lookup("k") is None
