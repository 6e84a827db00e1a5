"""Batches of one model sent without waiting for each other's answer (the SDK keeps two in flight) are
written in the order persist received them, whatever each takes to prepare or to reach the lock."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from nango.crypto import PayloadSealer, generate_key, parse_key
from nango.db import create_pool, migrate_url
from nango.persist.models import BatchContext, RecordScope
from nango.persist.records import RecordsCache
from nango.persist.store import LockedModel, RecordStore

pytestmark = pytest.mark.integration

SCHEMA = f"persist_order_it_{uuid.uuid4().hex[:8]}"


class SlowFirstStore(RecordStore):
    """A store whose first writer takes a while to reach the lock (a slow pool, a busy loop)."""

    calls = 0

    @asynccontextmanager
    async def locked(self, scope: RecordScope) -> AsyncIterator[LockedModel]:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(0.3)
        async with super().locked(scope) as model:
            yield model


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate_url(database_url, SCHEMA, "nango.persist")
    records_pool = await create_pool(database_url, schema=SCHEMA, application_name="test-persist-order")
    try:
        yield records_pool
    finally:
        await records_pool.close()


def batch(*ids: str, version: int = 1) -> bytes:
    return json.dumps([{"id": i, "version": version} for i in ids]).encode()


async def test_batches_in_flight_take_the_lock_in_the_order_received(pool: asyncpg.Pool) -> None:
    cache = RecordsCache(SlowFirstStore(pool), PayloadSealer(parse_key(generate_key())))
    scope = RecordScope(1, 801, "Ticket")
    first = asyncio.ensure_future(cache.save_json(scope, batch("a", "b"), BatchContext()))
    second = asyncio.ensure_future(cache.save_json(scope, batch("b", "c", version=2), BatchContext()))
    # another model does not wait in this line
    other = asyncio.ensure_future(cache.save_json(RecordScope(1, 801, "Other"), batch("z"), BatchContext()))
    await asyncio.wait_for(other, 0.25)
    assert not first.done()
    assert not second.done()
    results = await asyncio.gather(first, second)
    assert [r.summary.added for r in results] == [2, 1]
    assert [r.summary.updated for r in results] == [0, 1]
    rows = await pool.fetch(
        "SELECT external_id, updated_at FROM records WHERE connection_id = 801 AND model = 'Ticket'"
    )
    stamps = {row[0]: row[1] for row in rows}
    # the first batch wrote a and b, then the second rewrote b and added c
    assert stamps["a"] < stamps["b"] == stamps["c"]


async def test_a_batch_ahead_that_fails_lets_the_next_one_through(pool: asyncpg.Pool) -> None:
    cache = RecordsCache(SlowFirstStore(pool), PayloadSealer(parse_key(generate_key())))
    scope = RecordScope(1, 802, "Ticket")
    refused = asyncio.ensure_future(cache.save_json(scope, b'[{"id": "a"}, {"name": "no id"}]', BatchContext()))
    written = asyncio.ensure_future(cache.save_json(scope, batch("b"), BatchContext()))
    done = await asyncio.gather(refused, written, return_exceptions=True)
    assert isinstance(done[0], Exception)
    assert not isinstance(done[1], BaseException)
    assert done[1].summary.added == 1
