"""Syncs and actions through the runner, end to end: records paged from an API land in persist, track
deletes removes what the API no longer has, checkpoints persist, actions return their output, module
state is not shared between tasks, and a task's token reaches only its own connection."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from conftest import Platform

from nango.errors import Forbidden, Unauthenticated
from nango.grpckit import TaskScope, mint_task_token
from nango.jobs.client import ModelResult
from nango.oplog import PostgresLogStore
from nango.persist.client import PersistClient, RecordScope
from nango.runner.client import FunctionType
from tests.support.inprocess import TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PEOPLE = [{"id": f"p{i}", "name": f"Person {i}"} for i in range(1, 6)]


async def stored(platform: Platform, nango_id: int, model: str = "Contact") -> dict[str, dict[str, object]]:
    async with PersistClient(platform.persist, TOKEN) as persist:
        page = await persist.get_records(RecordScope(platform.environment_id, nango_id, model), limit=100)
    return {str(r["id"]): r for r in page.records()}


async def test_a_sync_pages_the_api_saves_records_and_tracks_deletes(platform: Platform) -> None:
    alice = await platform.connection("alice", PEOPLE)
    first = await platform.run(platform.task("contacts", alice, kind=FunctionType.SYNC, sync_job_id="1"))
    assert first.error is None, first.error
    assert list(first.results) == [ModelResult("Contact", added=5)]
    records = await stored(platform, alice.nango_id)
    assert {k: v["name"] for k, v in records.items()} == {p["id"]: p["name"] for p in PEOPLE}

    async with PersistClient(platform.persist, TOKEN) as persist:
        checkpoint = await persist.get_checkpoint(platform.environment_id, alice.nango_id, "sync:contacts:base")
    assert checkpoint is not None
    assert checkpoint.checkpoint == {"runs": 1}

    # the API dropped one contact and renamed another: the next job deletes and updates them
    platform.upstream.contacts[alice.api_key] = [p for p in PEOPLE if p["id"] != "p3"]
    platform.upstream.contacts[alice.api_key][0] = {"id": "p1", "name": "Renamed"}
    second = await platform.run(platform.task("contacts", alice, kind=FunctionType.SYNC, sync_job_id="2"))
    assert second.error is None, second.error
    assert list(second.results) == [ModelResult("Contact", added=0, updated=1, deleted=1)]
    records = await stored(platform, alice.nango_id)
    live = {k for k, v in records.items() if v["_nango_metadata"]["deleted_at"] is None}  # type: ignore[index]
    assert live == {"p1", "p2", "p4", "p5"}
    assert records["p1"]["name"] == "Renamed"
    async with PersistClient(platform.persist, TOKEN) as persist:
        checkpoint = await persist.get_checkpoint(platform.environment_id, alice.nango_id, "sync:contacts:base")
    assert checkpoint is not None
    assert (checkpoint.checkpoint, checkpoint.version) == ({"runs": 2}, 2)


async def test_a_syncs_log_lines_reach_its_operation(platform: Platform) -> None:
    carol = await platform.connection("carol", PEOPLE[:1])
    task = platform.task("contacts", carol, kind=FunctionType.SYNC, sync_job_id="3")
    assert (await platform.run(task)).error is None
    store = await PostgresLogStore.connect(platform.database_url, platform.logs_schema)
    try:
        async with asyncio.timeout(10):
            while True:
                lines, _ = await store.list_messages(task.activity_log_id)
                if any(line.message == "saved the contacts" for line in lines):
                    break
                await asyncio.sleep(0.1)
    finally:
        await store.close()
    mine = next(line for line in lines if line.message == "saved the contacts")
    assert mine.source == "user"
    calls = [line for line in lines if line.type == "http"]
    assert calls
    assert calls[0].request is not None
    assert calls[0].request["url"].startswith(platform.upstream.url + "/contacts")
    assert "key-carol" not in str([line.request for line in calls])


async def test_an_action_returns_its_output(platform: Platform) -> None:
    bob = await platform.connection("bob")
    done = await platform.run(platform.task("create_contact", bob, input={"name": "Ada"}))
    assert done.error is None, done.error
    assert done.output == {"id": done.output["id"], "name": "Ada"}
    assert platform.upstream.contacts[bob.api_key] == [done.output]
    assert done.telemetry.proxy_calls == 1
    assert done.telemetry.max_memory_bytes > 0


async def test_module_state_is_not_shared_between_tasks(platform: Platform) -> None:
    dana, erin = await platform.connection("dana"), await platform.connection("erin")
    first = await platform.run(platform.task("remember", dana, input={"value": "dana's secret"}))
    second = await platform.run(platform.task("remember", erin, input={"value": "erin's"}))
    again = await platform.run(platform.task("remember", dana, input={"value": "again"}))
    assert [first.output, second.output, again.output] == [{"previous": None}] * 3


async def test_a_task_token_reaches_only_its_own_connection(platform: Platform) -> None:
    frank = await platform.connection("frank", PEOPLE[:2])
    grace = await platform.connection("grace")
    assert (await platform.run(platform.task("contacts", frank, kind=FunctionType.SYNC, sync_job_id="4"))).error is None
    task_id = str(uuid.uuid4())
    token = platform.token(task_id, grace)
    async with PersistClient(platform.persist, None, task_token=token) as persist:
        with pytest.raises(Forbidden):
            await persist.get_records(RecordScope(platform.environment_id, frank.nango_id, "Contact"))
        with pytest.raises(Forbidden):
            await persist.get_checkpoint(platform.environment_id, frank.nango_id, "sync:contacts:base")
        with pytest.raises(Forbidden):
            await persist.save_records(
                RecordScope(platform.environment_id, frank.nango_id, "Contact"), [{"id": "x", "name": "y"}]
            )
        own = await persist.get_records(RecordScope(platform.environment_id, grace.nango_id, "Contact"))
        assert own.records() == []
    expired = mint_task_token(TOKEN, TaskScope(task_id, platform.environment_id, grace.nango_id, 1.0))
    async with PersistClient(platform.persist, None, task_token=expired) as persist:
        with pytest.raises(Unauthenticated):
            await persist.get_records(RecordScope(platform.environment_id, grace.nango_id, "Contact"))
    # from inside a function: grace's task cannot read frank's connection
    peeked = await platform.run(platform.task("peek", grace, input={"connection_id": "frank"}))
    assert peeked.error is not None
    assert (peeked.error.type, peeked.error.status) == ("script_error", 500)
    assert "Forbidden" in peeked.error.message
    assert "tok-" not in peeked.error.message


async def test_trigger_action_reaches_the_server(platform: Platform) -> None:
    # the server's TriggerAction answers; nothing is deployed through it here, so the action is unknown
    # (tests/compat/test_functions.py runs one action from another end to end)
    hank = await platform.connection("hank")
    done = await platform.run(platform.task("chain", hank))
    assert done.error is not None
    assert done.error.type == "script_error"
    assert "NotFound: Action not found" in done.error.message
