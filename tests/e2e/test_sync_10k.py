"""A deployed sync over 10,000 upstream items under `nango up`: the first run fills the cache; after
10 items change and 5 disappear upstream, the next run reports exactly 10 updated and 5 deleted, the
records API's `updated` and `deleted` filters return exactly those, and no untouched record moves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.items import FULL_LISTING_SYNC, ITEM_MODELS, ItemsApi, Rest, start_items_platform
from tests.support.platform import Up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MODELS = ITEM_MODELS
ITEMS = FULL_LISTING_SYNC

INTEGRATION = "items-10k"
CONNECTION = "big-user"
API_KEY = "key-10k"
TOTAL = 10_000


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, api: ItemsApi) -> Iterator[Up]:
    up = start_items_platform(tmp_path_factory.mktemp("sync10k"), api, "sync10k")
    yield up
    assert up.stop() == 0


def modified_at(records: list[dict[str, object]]) -> dict[str, object]:
    return {str(r["id"]): r["_nango_metadata"]["last_modified_at"] for r in records}  # type: ignore[index]


def payload(record: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in record.items() if k != "_nango_metadata"}


async def test_ten_thousand_records_then_ten_updated_and_five_deleted(platform: Up, api: ItemsApi) -> None:
    rest = Rest(platform)
    for i in range(TOTAL):
        api.put(API_KEY, f"item-{i:05d}", name=f"Item {i}", value=i)
    await rest.deploy(INTEGRATION, {"models.py": MODELS, "items.py": ITEMS})
    await rest.connect(INTEGRATION, CONNECTION, API_KEY)

    first = await rest.wait_run(INTEGRATION, CONNECTION, "items", timeout=60)
    assert first["latestExecutionStatus"] == "SUCCESS", first
    assert first["latestResult"] == {"Item": {"added": TOTAL, "updated": 0, "deleted": 0}}
    assert first["recordCount"] == {"Item": TOTAL}
    cached = await rest.records(INTEGRATION, CONNECTION, "Item")
    assert {str(r["id"]): payload(r) for r in cached} == api.view(API_KEY)
    before = modified_at(cached)

    changed = [f"item-{i:05d}" for i in range(0, TOTAL, TOTAL // 10)]
    deleted = [f"item-{i:05d}" for i in range(7, TOTAL, TOTAL // 5)]
    for item_id in changed:
        api.put(API_KEY, item_id, name=f"Renamed {item_id}", value=-1)
    for item_id in deleted:
        api.remove(API_KEY, item_id)
    await rest.trigger(INTEGRATION, CONNECTION, "items")

    second = await rest.wait_run(INTEGRATION, CONNECTION, "items", after=first["finishedAt"], timeout=60)
    assert second["latestExecutionStatus"] == "SUCCESS", second
    assert second["latestResult"] == {"Item": {"added": 0, "updated": 10, "deleted": 5}}

    updated = await rest.records(INTEGRATION, CONNECTION, "Item", filter="updated")
    assert sorted(str(r["id"]) for r in updated) == sorted(changed)
    assert all(r["_nango_metadata"]["last_action"] == "UPDATED" for r in updated)
    gone = await rest.records(INTEGRATION, CONNECTION, "Item", filter="deleted")
    assert sorted(str(r["id"]) for r in gone) == sorted(deleted)
    assert all(r["_nango_metadata"]["deleted_at"] is not None for r in gone)

    everything = await rest.records(INTEGRATION, CONNECTION, "Item")
    assert len(everything) == TOTAL
    live = {str(r["id"]): payload(r) for r in everything if r["_nango_metadata"]["deleted_at"] is None}
    assert live == api.view(API_KEY)
    after = modified_at(everything)
    untouched = set(before) - set(changed) - set(deleted)
    assert len(untouched) == TOTAL - 15
    assert {i: after[i] for i in untouched} == {i: before[i] for i in untouched}
    assert all(after[i] > before[i] for i in [*changed, *deleted])
    # the cursor pages of everything changed since the first run hold exactly those 15
    latest = max(before.values())  # type: ignore[type-var]
    moved = sorted(i for i, moment in after.items() if moment > latest)  # type: ignore[operator]
    assert moved == sorted(changed + deleted)
