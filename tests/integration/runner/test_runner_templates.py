"""Templates: a bundle version is imported once, in a template process, and each task runs in its own
worker forked from it. Tasks still share no state, what the import printed still reaches each task's
log, a bundle whose import starts a thread or leaves a socket or file open is imported by each task
instead, and a template that dies is made again."""

from __future__ import annotations

import asyncio

import psutil
import pytest
from conftest import Connection, Platform

from nango.jobs.client import TaskCompletion
from nango.oplog import PostgresLogStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PROBE = """
import os
import socket
import threading
import time

from nango.sdk import action

print("importing the probe")
IMPORTED_BY = os.getpid()
SEEN = []
{setup}


@action(description="Says which process imported it and what earlier tasks left in its module")
async def probe(nango, input):
    SEEN.append(input["value"])
    return {{"imported_by": IMPORTED_BY, "pid": os.getpid(), "seen": list(SEEN)}}
"""


@pytest.fixture(scope="module")
async def kim(platform: Platform) -> Connection:
    return await platform.connection("kim")


async def probe(platform: Platform, connection: Connection, bundle: tuple[str, str], value: str) -> TaskCompletion:
    done = await platform.run(platform.task("probe", connection, input={"value": value}, bundle=bundle))
    assert done.error is None, done.error
    return done


async def printed(platform: Platform, operation_id: str) -> list[str]:
    store = await PostgresLogStore.connect(platform.database_url, platform.logs_schema)
    try:
        async with asyncio.timeout(10):
            while True:
                lines, _ = await store.list_messages(operation_id)
                if lines:
                    return [line.message for line in lines]
                await asyncio.sleep(0.1)
    finally:
        await store.close()


async def test_tasks_forked_from_one_template_share_no_state(platform: Platform, kim: Connection) -> None:
    bundle = await platform.put_bundle({"probe.py": PROBE.format(setup="")})
    runs = [await probe(platform, kim, bundle, value) for value in ("first", "second", "third")]
    outputs = [run.output for run in runs]
    assert [output["seen"] for output in outputs] == [["first"], ["second"], ["third"]]
    # imported once, in a process that is none of the tasks'
    assert len({output["imported_by"] for output in outputs}) == 1
    assert outputs[0]["imported_by"] not in {output["pid"] for output in outputs}
    assert len({output["pid"] for output in outputs}) == 3
    task = platform.task("probe", kim, input={"value": "logged"}, bundle=bundle)
    await platform.run(task)
    assert "importing the probe" in await printed(platform, task.activity_log_id)


@pytest.mark.parametrize(
    "setup",
    [
        "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()",
        "CONNECTION = socket.socket()",
        "LOG = open(__file__)",
    ],
    ids=["thread", "socket", "file"],
)
async def test_a_bundle_whose_import_leaves_something_a_fork_would_share_is_imported_by_each_task(
    platform: Platform, kim: Connection, setup: str
) -> None:
    bundle = await platform.put_bundle({"probe.py": PROBE.format(setup=setup)})
    outputs = [(await probe(platform, kim, bundle, value)).output for value in ("first", "second")]
    assert [output["seen"] for output in outputs] == [["first"], ["second"]]
    assert all(output["imported_by"] == output["pid"] for output in outputs)


async def test_a_template_that_dies_is_made_again(platform: Platform, kim: Connection) -> None:
    bundle = await platform.put_bundle({"probe.py": PROBE.format(setup="") + "\n# dies\n"})
    before = (await probe(platform, kim, bundle, "before")).output
    template = psutil.Process(before["imported_by"])
    template.kill()
    template.wait(10)
    after = (await probe(platform, kim, bundle, "after")).output
    assert after["seen"] == ["after"]
    assert after["imported_by"] not in {before["imported_by"], after["pid"]}
    again = (await probe(platform, kim, bundle, "again")).output
    assert again["imported_by"] == after["imported_by"]


NAP = """

@action(description="Sleeps, then says which process ran it")
async def nap(nango, input):
    await asyncio.sleep(input["seconds"])
    return {"pid": os.getpid()}
"""


async def test_a_result_is_reported_before_its_worker_is_reaped(platform: Platform, kim: Connection) -> None:
    bundle = await platform.put_bundle({"probe.py": "import asyncio\n" + PROBE.format(setup="") + NAP})
    first = (await probe(platform, kim, bundle, "first")).output
    template = psutil.Process(first["imported_by"])
    task = platform.task("nap", kim, input={"seconds": 0.5}, bundle=bundle)
    waiter = await platform.start(task)
    # its worker forked (the first task's may still be exiting)
    async with asyncio.timeout(10):
        while not [p for p in template.children() if p.pid != first["pid"]]:
            await asyncio.sleep(0.01)
    # stopped, the template can neither reap the worker nor tell the runner that it exited
    template.suspend()
    try:
        done = await asyncio.wait_for(waiter, 5)
        assert done.error is None, done.error
        assert done.telemetry.max_memory_bytes > 0
        assert task.task_id not in (await platform.runner.status()).running_task_ids
    finally:
        template.resume()
    # once the template runs again, the next task is forked from it as before
    assert (await probe(platform, kim, bundle, "after")).output["imported_by"] == template.pid
