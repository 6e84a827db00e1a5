"""`reconcile_deletes` under `nango up`: an incremental sync cannot see deletions; its reconcile pass
lists the ids, marks what disappeared upstream as deleted, writes nothing else (no record moves, the
checkpoint and last_sync_date stay), and its schedule follows the sync's (pause, start, removal)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest

from nango.orchestrator.client import OrchestratorClient, Schedule, ScheduleState, TaskState
from tests.support.items import ITEM_MODELS, ItemsApi, Rest, start_items_platform
from tests.support.platform import Up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MODELS = ITEM_MODELS

ITEMS = """
from models import Item

from nango.sdk import sync


@sync(description="Items changed since the last run", frequency="every day", models=[Item],
      reconcile_deletes="every day")
async def items(nango):
    since = int((await nango.get_checkpoint() or {}).get("since", 0))
    newest = since
    async for page in nango.paginate(endpoint="/items", params={"updated_after": since}, paginate={"limit": 20}):
        if nango.is_reconcile:
            # the pass needs ids only: an author skips whatever detail fetches the records would need
            await nango.batch_save([{"id": item["id"]} for item in page], "Item")
        else:
            await nango.batch_save([Item(**item) for item in page], "Item")
        newest = max([newest, *(item["updated"] for item in page)])
    await nango.save_checkpoint({"since": newest})
"""

INTEGRATION = "items-reconcile"
CONNECTION = "reconciled-user"
API_KEY = "key-reconcile"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, api: ItemsApi) -> Iterator[Up]:
    up = start_items_platform(tmp_path_factory.mktemp("reconcile"), api, "reconcile")
    yield up
    assert up.stop() == 0


@pytest.fixture(scope="module")
async def orchestrator(platform: Up) -> AsyncIterator[OrchestratorClient]:
    token = platform.internal_token
    async with OrchestratorClient(f"127.0.0.1:{platform.ports['NANGO_ORCHESTRATOR_PORT']}", token) as client:
        yield client


async def schedules(orchestrator: OrchestratorClient, state: ScheduleState | None = None) -> dict[str, Schedule]:
    """The item sync's schedules of this platform by kind: "sync" and "reconcile"."""
    found = await orchestrator.search_schedules(state=state, limit=1000)
    mine = [s for s in found if s.args.get("connection_id") == CONNECTION and s.args.get("function") == "items"]
    return {("reconcile" if s.args.get("reconcile") else "sync"): s for s in mine}


def payloads(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["id"]): {k: v for k, v in r.items() if k != "_nango_metadata"} for r in records}


def moments(records: list[dict[str, Any]]) -> dict[str, str]:
    return {str(r["id"]): r["_nango_metadata"]["last_modified_at"] for r in records}


async def test_a_reconcile_pass_deletes_what_an_incremental_sync_cannot_see(
    platform: Up, api: ItemsApi, orchestrator: OrchestratorClient
) -> None:
    rest = Rest(platform)
    for i in range(50):
        api.put(API_KEY, f"item-{i:02d}", name=f"Item {i}", value=i)
    await rest.deploy(INTEGRATION, {"models.py": MODELS, "items.py": ITEMS})
    await rest.connect(INTEGRATION, CONNECTION, API_KEY)
    first = await rest.wait_run(INTEGRATION, CONNECTION, "items", timeout=60)
    assert first["latestResult"] == {"Item": {"added": 50, "updated": 0, "deleted": 0}}, first

    found = await schedules(orchestrator, ScheduleState.STARTED)
    reconcile = found["reconcile"]
    assert reconcile.frequency == timedelta(days=1)
    # the first pass comes one interval after the sync starts, not with its first run
    assert reconcile.next_execution_at - found["sync"].starts_at > timedelta(hours=23)
    assert reconcile.args["sync_id"] == found["sync"].args["sync_id"]

    # upstream: 3 deleted (an incremental listing never shows them), 2 changed
    gone = ["item-03", "item-17", "item-42"]
    for item_id in gone:
        api.remove(API_KEY, item_id)
    for item_id in ("item-05", "item-06"):
        api.put(API_KEY, item_id, name="Changed", value=-1)
    await rest.trigger(INTEGRATION, CONNECTION, "items")
    second = await rest.wait_run(INTEGRATION, CONNECTION, "items", after=first["finishedAt"], timeout=60)
    assert second["latestResult"] == {"Item": {"added": 0, "updated": 2, "deleted": 0}}, second
    assert await rest.records(INTEGRATION, CONNECTION, "Item", filter="deleted") == []
    before = await rest.records(INTEGRATION, CONNECTION, "Item")

    task = await orchestrator.run_schedule(reconcile.name)
    assert task.args["reconcile"] is True
    ended = await orchestrator.get_task_output(task.id, wait=timedelta(seconds=30))
    assert ended.state is TaskState.SUCCEEDED, ended.output

    deleted = await rest.records(INTEGRATION, CONNECTION, "Item", filter="deleted")
    assert sorted(str(r["id"]) for r in deleted) == gone
    after = await rest.records(INTEGRATION, CONNECTION, "Item")
    live = [r for r in after if r["_nango_metadata"]["deleted_at"] is None]
    assert payloads(live) == api.view(API_KEY)
    # no record the pass saw was written: payloads (ids only were saved) and cursors did not move
    kept = {i: m for i, m in moments(before).items() if i not in gone}
    assert {i: m for i, m in moments(after).items() if i not in gone} == kept
    # a pass is not a sync run: status, checkpoint and last_sync_date are the incremental run's
    status = await rest.sync_status(INTEGRATION, CONNECTION, "items")
    assert (status["finishedAt"], status["latestResult"]) == (second["finishedAt"], second["latestResult"])
    assert status["checkpoint"] == second["checkpoint"]

    # the next incremental run goes on from its own checkpoint
    api.put(API_KEY, "item-07", name="Later", value=7)
    await rest.trigger(INTEGRATION, CONNECTION, "items")
    third = await rest.wait_run(INTEGRATION, CONNECTION, "items", after=second["finishedAt"], timeout=60)
    assert third["latestResult"] == {"Item": {"added": 0, "updated": 1, "deleted": 0}}, third
    final = await rest.records(INTEGRATION, CONNECTION, "Item")
    assert payloads([r for r in final if r["_nango_metadata"]["deleted_at"] is None]) == api.view(API_KEY)


async def test_the_reconcile_schedule_follows_the_sync(platform: Up, orchestrator: OrchestratorClient) -> None:
    rest = Rest(platform)
    body = {"syncs": ["items"], "provider_config_key": INTEGRATION, "connection_id": CONNECTION}
    await rest.ok("POST", "/sync/pause", body)
    assert {k: s.state for k, s in (await schedules(orchestrator)).items()} == {
        "sync": ScheduleState.PAUSED,
        "reconcile": ScheduleState.PAUSED,
    }
    await rest.ok("POST", "/sync/start", body)
    assert {k: s.state for k, s in (await schedules(orchestrator)).items()} == {
        "sync": ScheduleState.STARTED,
        "reconcile": ScheduleState.STARTED,
    }
    # deployed without reconcile_deletes: the reconcile schedule goes, the sync stays
    await rest.deploy(
        INTEGRATION, {"models.py": MODELS, "items.py": ITEMS.replace(',\n      reconcile_deletes="every day"', "")}
    )
    assert set(await schedules(orchestrator, ScheduleState.STARTED)) == {"sync"}
    await rest.deploy(INTEGRATION, {"models.py": MODELS, "items.py": ITEMS.replace('"every day")', '"every 12h")')})
    assert (await schedules(orchestrator, ScheduleState.STARTED))["reconcile"].frequency == timedelta(hours=12)
    status, answer = await rest.call("DELETE", f"/connections/{CONNECTION}?provider_config_key={INTEGRATION}")
    assert status == 200, answer
    assert await schedules(orchestrator, ScheduleState.STARTED) == {}
