"""Persist killed with SIGKILL in the middle of a batch of a sync under `nango up`.

The test holds a row lock on the model's `record_counts` row, which a batch updates after writing its
records in the same transaction: persist's writer then sits inside a batch whose records are written
but not committed, and that is when persist is killed. The run fails; what it committed is a whole
number of batches, exactly the first ones in upstream order; the launcher restarts persist and the
next run leaves the cache equal to the upstream, nothing lost and nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tests.support.items import (
    FULL_LISTING_SYNC,
    ItemsApi,
    Rest,
    platform_database,
    service_process,
    start_items_platform,
    wait_restarted,
)
from tests.support.platform import Up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MODELS = """
from nango.sdk import Model


class Item(Model):
    id: str
    name: str
    value: int
    updated: int
    body: str
"""

ITEMS = FULL_LISTING_SYNC

INTEGRATION = "items-faults"
CONNECTION = "faulty-user"
API_KEY = "key-faults"
TOTAL = 8000
# nango.sdk sends batch_save in batches of this many records
BATCH = 1000


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, api: ItemsApi) -> Iterator[Up]:
    extra = {"NANGO_SHUTDOWN_GRACE_SECONDS": "2"}
    up = start_items_platform(tmp_path_factory.mktemp("faults"), api, "faults", extra)
    yield up
    assert up.stop() == 0


async def stored(db: asyncpg.Connection) -> list[tuple[str, bool]]:
    """Every stored (external id, deleted) of the model, in the order rows were committed."""
    rows = await db.fetch(
        "SELECT external_id, deleted_at IS NOT NULL FROM nango_records.records "
        "WHERE model = 'Item' ORDER BY created_at, external_id"
    )
    return [(row[0], row[1]) for row in rows]


async def counted(db: asyncpg.Connection) -> int:
    return int(
        await db.fetchval("SELECT coalesce(sum(count), 0) FROM nango_records.record_counts WHERE model = 'Item'")
    )


async def wait_writer_blocked(db: asyncpg.Connection, timeout: float = 30.0) -> None:
    """Until one of persist's connections waits for a lock (the row lock this test holds)."""
    async with asyncio.timeout(timeout):
        while not await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nango-persist' "
            "AND wait_event_type = 'Lock' AND query LIKE '%record_counts%'"
        ):
            await asyncio.sleep(0.02)


def payloads(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["id"]): {k: v for k, v in r.items() if k != "_nango_metadata"} for r in records}


async def test_persist_killed_mid_batch_leaves_whole_batches_and_the_next_run_completes(
    platform: Up, api: ItemsApi
) -> None:
    rest = Rest(platform)
    for i in range(TOTAL):
        api.put(API_KEY, f"item-{i:05d}", name=f"Item {i}", value=i, body="x" * 900)
    # pages take a while, so the run is still going when the test steps in
    api.slow[API_KEY] = 0.3
    order = list(api.view(API_KEY))
    await rest.deploy(INTEGRATION, {"models.py": MODELS, "items.py": ITEMS})

    async with platform_database(platform) as db, platform_database(platform) as blocker:
        await rest.connect(INTEGRATION, CONNECTION, API_KEY)
        async with asyncio.timeout(30):
            while await counted(db) < BATCH:
                await asyncio.sleep(0.05)
        # the next batch writes its records, then waits for this row inside its transaction
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT count FROM nango_records.record_counts WHERE model = 'Item' FOR UPDATE")
        committed_before = await counted(db)
        assert committed_before < TOTAL, "the run ended before the test could step in"
        await wait_writer_blocked(db)

        persist = service_process(platform, "persist")
        assert persist is not None
        os.kill(persist.pid, signal.SIGKILL)
        await asyncio.to_thread(persist.wait, 10)
        await holding.rollback()

        # the batch in flight is gone whole: what is stored is the first batches, in upstream order
        await wait_restarted(platform, "persist", "NANGO_PERSIST_PORT", persist.pid)
        failed = await rest.wait_run(INTEGRATION, CONNECTION, "items", timeout=30)
        assert failed["latestExecutionStatus"] == "ERROR", failed
        rows = await stored(db)
        assert len(rows) == committed_before
        assert len(rows) % BATCH == 0
        assert [external_id for external_id, _ in rows] == order[: len(rows)]
        assert not any(deleted for _, deleted in rows)
        assert await counted(db) == len(rows)

        api.slow.pop(API_KEY)
        api.put(API_KEY, "item-00001", name="Renamed", value=-1, body="y")
        api.remove(API_KEY, "item-00002")
        api.put(API_KEY, "item-new", name="New", value=0, body="z")
        await rest.trigger(INTEGRATION, CONNECTION, "items")
        recovered = await rest.wait_run(INTEGRATION, CONNECTION, "items", after=failed["finishedAt"], timeout=60)
        assert recovered["latestExecutionStatus"] == "SUCCESS", recovered

        everything = await rest.records(INTEGRATION, CONNECTION, "Item")
        ids = [str(r["id"]) for r in everything]
        assert len(ids) == len(set(ids)) == TOTAL + 1
        live = [r for r in everything if r["_nango_metadata"]["deleted_at"] is None]
        assert payloads(live) == api.view(API_KEY)
        assert [str(r["id"]) for r in everything if r["_nango_metadata"]["deleted_at"] is not None] == ["item-00002"]
        assert recovered["recordCount"] == {"Item": TOTAL + 1}
        assert await counted(db) == TOTAL + 1
