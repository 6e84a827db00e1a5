"""The auto-pruning daemon on real Postgres: payloads of records not modified for the configured age
are emptied, the rest stay, counts follow, and two replicas never work on the same model at once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from nango.crypto import PayloadSealer, generate_key, parse_key
from nango.db import create_pool, migrate_url
from nango.persist.daemons import PruningDaemon
from nango.persist.models import BatchContext, RecordQuery, RecordScope
from nango.persist.records import RecordsCache, parse_record_batch
from nango.persist.store import RecordStore

pytestmark = pytest.mark.integration

SCHEMA = f"persist_pruning_it_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate_url(database_url, SCHEMA, "nango.persist")
    records_pool = await create_pool(database_url, schema=SCHEMA, application_name="test-persist-pruning")
    try:
        yield records_pool
    finally:
        await records_pool.close()


@pytest.fixture(scope="module")
def cache(pool: asyncpg.Pool) -> RecordsCache:
    return RecordsCache(RecordStore(pool), PayloadSealer(parse_key(generate_key())))


async def save(cache: RecordsCache, scope: RecordScope, ids: range) -> None:
    batch = json.dumps([{"id": f"r-{i}", "body": "x" * 200} for i in ids]).encode()
    await cache.save(scope, parse_record_batch(batch), BatchContext())


async def age(pool: asyncpg.Pool, scope: RecordScope, ids: range, days: int) -> None:
    await pool.execute(
        "UPDATE records SET updated_at = updated_at - make_interval(days => $4), "
        "created_at = created_at - make_interval(days => $4) "
        "WHERE connection_id = $1 AND model = $2 AND external_id = ANY($3::text[])",
        scope.connection_id,
        scope.model,
        [f"r-{i}" for i in ids],
        days,
    )


async def test_old_payloads_are_pruned_and_recent_ones_kept(pool: asyncpg.Pool, cache: RecordsCache) -> None:
    scope = RecordScope(1, 501, "Ticket")
    await save(cache, scope, range(30))
    await age(pool, scope, range(25), days=40)
    size_before = (await cache.counts(1, [501], []))[0].size_bytes
    daemon = PruningDaemon(cache, older_than=timedelta(days=30), interval=timedelta(seconds=60), limit=10)

    # 25 old records, 10 per model and tick: the model stays due until it is done
    assert [await daemon.tick() for _ in range(4)] == [10, 10, 5, 0]

    page = json.loads((await cache.page(scope, RecordQuery(limit=100))).records_json)
    pruned = {r["id"] for r in page if r["_nango_metadata"]["pruned_at"] is not None}
    assert pruned == {f"r-{i}" for i in range(25)}
    assert all(set(r) == {"id", "_nango_metadata"} for r in page if r["id"] in pruned)
    assert all(r["body"] == "x" * 200 for r in page if r["id"] not in pruned)
    assert (await cache.counts(1, [501], []))[0].size_bytes < size_before / 4


async def test_two_replicas_do_not_prune_the_same_model_at_once(pool: asyncpg.Pool, cache: RecordsCache) -> None:
    scopes = [RecordScope(1, 600 + i, "Deal") for i in range(6)]
    for scope in scopes:
        await save(cache, scope, range(5))
        await age(pool, scope, range(5), days=40)
    replicas = [
        PruningDaemon(cache, older_than=timedelta(days=30), interval=timedelta(seconds=60), limit=100) for _ in range(2)
    ]

    async with asyncio.timeout(30):
        counts = await asyncio.gather(*(replica.tick() for replica in replicas))

    assert sum(counts) == 30
    left = await pool.fetchval(
        "SELECT count(*) FROM records WHERE connection_id = ANY($1::bigint[]) AND pruned_at IS NULL",
        [s.connection_id for s in scopes],
    )
    assert left == 0


async def test_the_daemon_starts_and_stops(cache: RecordsCache) -> None:
    scope = RecordScope(1, 701, "Note")
    await save(cache, scope, range(3))
    daemon = PruningDaemon(cache, older_than=timedelta(days=30), interval=timedelta(milliseconds=50), limit=10)
    daemon.start()
    await asyncio.sleep(0.2)
    async with asyncio.timeout(10):
        await daemon.stop()
    page = json.loads((await cache.page(scope, RecordQuery(limit=10))).records_json)
    assert all(r["_nango_metadata"]["pruned_at"] is None for r in page)
