"""How functions fail, and that the runner keeps serving after each failure: ActionError, an uncaught
exception (traceback in the operation's log), an upstream HTTP error, the memory and wall-time limits,
AbortTask, jobs saying stop, and a full runner refusing work."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import psutil
import pytest
from conftest import Connection, Platform

from nango.errors import Forbidden, InvalidRequest
from nango.jobs.client import TaskCompletion
from nango.oplog import Message, PostgresLogStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
async def ivy(platform: Platform) -> Connection:
    return await platform.connection("ivy")


async def still_serving(platform: Platform, connection: Connection) -> None:
    done = await platform.run(platform.task("remember", connection, input={"value": 1}))
    assert (done.error, done.output) == (None, {"previous": None})


async def log_lines(platform: Platform, operation_id: str, wanted: str) -> list[Message]:
    store = await PostgresLogStore.connect(platform.database_url, platform.logs_schema)
    try:
        async with asyncio.timeout(10):
            while True:
                lines, _ = await store.list_messages(operation_id)
                if any(wanted in line.message for line in lines):
                    return lines
                await asyncio.sleep(0.1)
    finally:
        await store.close()


async def test_action_error_carries_its_payload(platform: Platform, ivy: Connection) -> None:
    done = await platform.run(platform.task("refuse", ivy, input={"n": 1}))
    assert done.error is not None
    assert (done.error.type, done.error.status) == ("action_script_runtime_error", 500)
    assert done.error.payload == {"reason": "not today", "input": {"n": 1}}


async def test_an_uncaught_exception_fails_cleanly_with_its_traceback_logged(
    platform: Platform, ivy: Connection
) -> None:
    task = platform.task("crash", ivy)
    done = await platform.run(task)
    assert done.error is not None
    assert (done.error.type, done.error.status) == ("script_error", 500)
    assert done.error.message == "ZeroDivisionError: division by zero"
    lines = await log_lines(platform, task.activity_log_id, "ZeroDivisionError")
    failure = next(line for line in lines if "ZeroDivisionError" in line.message)
    assert failure.level == "error"
    assert 'actions.py", line' in failure.message
    assert "in divide" in failure.message
    assert "return a / 0" in failure.message
    assert "nango/runner" not in failure.message
    printed = [line for line in lines if line.message == "about to divide"]
    assert printed
    assert printed[0].source == "user"
    await still_serving(platform, ivy)


async def test_an_upstream_http_error_that_escapes_is_a_424(platform: Platform, ivy: Connection) -> None:
    done = await platform.run(platform.task("upstream_error", ivy))
    assert done.error is not None
    assert (done.error.type, done.error.status) == ("script_http_error", 424)
    assert done.error.upstream is not None
    assert done.error.upstream["status"] == 404
    assert done.error.upstream["body"] == {"error": "nope"}


async def test_a_function_over_its_memory_limit(platform: Platform, ivy: Connection) -> None:
    task = platform.task("hog", ivy)
    done = await platform.run(task)
    assert done.error is not None
    assert done.error.type == "script_memory_exceeded"
    assert "700 MB" in done.error.message
    await log_lines(platform, task.activity_log_id, "script_memory_exceeded")
    await still_serving(platform, ivy)


async def test_a_function_over_its_wall_time(platform: Platform, ivy: Connection) -> None:
    # the task's token expires in 1.5 s: so does its time on the runner
    task = platform.task("sleepy", ivy, input={"seconds": 30}, ttl=1.5)
    done = await platform.run(task, timeout=15)
    assert done.error is not None
    assert done.error.type == "script_timeout"
    assert done.telemetry.duration.total_seconds() < 5
    await log_lines(platform, task.activity_log_id, "script_timeout")
    await still_serving(platform, ivy)


async def test_abort_task(platform: Platform, ivy: Connection) -> None:
    task = platform.task("sleepy", ivy, input={"seconds": 30})
    waiter = await platform.start(task)
    await platform.wait_running(task.task_id)
    assert await platform.runner.abort_task(task.task_id, "the user cancelled it")
    done = await asyncio.wait_for(waiter, 10)
    assert done.error is not None
    assert (done.error.type, done.error.status) == ("script_aborted", 410)
    assert "the user cancelled it" in done.error.message
    assert not await platform.runner.abort_task(task.task_id)
    assert task.task_id not in (await platform.runner.status()).running_task_ids
    await still_serving(platform, ivy)


async def test_heartbeats_and_jobs_saying_stop(platform: Platform, ivy: Connection) -> None:
    task = platform.task("sleepy", ivy, input={"seconds": 30})
    waiter = await platform.start(task)
    await platform.wait_running(task.task_id)
    async with asyncio.timeout(5):
        while platform.jobs.heartbeats.get(task.task_id, 0) < 2:
            await asyncio.sleep(0.05)
    platform.jobs.stop.add(task.task_id)
    done: TaskCompletion = await asyncio.wait_for(waiter, 10)
    assert done.error is not None
    assert done.error.type == "script_aborted"
    assert "cancelled or expired" in done.error.message


async def test_a_full_runner_refuses_tasks(platform: Platform, ivy: Connection) -> None:
    status = await platform.runner.status()
    assert status.capacity == 4
    async with asyncio.timeout(5):
        while not platform.jobs.registrations:
            await asyncio.sleep(0.05)
    node_id, url, capacity = platform.jobs.registrations[0]
    assert (node_id, capacity) == (status.node_id, 4)
    assert url.endswith(":" + platform.runner_target.rsplit(":", 1)[1])
    sleepers = [platform.task("sleepy", ivy, input={"seconds": 30}) for _ in range(status.capacity)]
    waiters = [await platform.start(task) for task in sleepers]
    assert not await platform.runner.start_task(platform.task("remember", ivy, input={"value": 2}))
    assert set((await platform.runner.status()).running_task_ids) == {t.task_id for t in sleepers}
    for task in sleepers:
        assert await platform.runner.abort_task(task.task_id)
    finished = await asyncio.wait_for(asyncio.gather(*waiters), 15)
    assert {f.error.type for f in finished if f.error is not None} == {"script_aborted"}
    await still_serving(platform, ivy)


async def test_a_task_with_a_bad_token_is_refused(platform: Platform, ivy: Connection) -> None:
    task = platform.task("remember", ivy, input={"value": 3})
    with pytest.raises(InvalidRequest, match="task_token"):
        await platform.runner.start_task(replace(task, task_token="nt1.forged.token"))
    other = platform.task("remember", ivy, input={"value": 3})
    with pytest.raises(Forbidden):
        await platform.runner.start_task(replace(task, task_token=other.task_token))


async def test_a_missing_bundle_is_reported_not_crashed(platform: Platform, ivy: Connection) -> None:
    task = platform.task("remember", ivy, bundle=(f"bundles/{platform.environment_id}/x/{'0' * 64}.zip", "0" * 64))
    done = await platform.run(task)
    assert done.error is not None
    assert done.error.type == "script_internal_error"
    assert "no bundle" in done.error.message


async def test_the_runner_survives_its_zygote_dying(platform: Platform, ivy: Connection) -> None:
    # the runner runs in this process, so its zygote is our child (other suites' platforms have their own)
    zygotes = [p for p in psutil.Process().children() if "nango.runner.zygote" in " ".join(p.cmdline())]
    assert len(zygotes) == 1
    task = platform.task("sleepy", ivy, input={"seconds": 30})
    waiter = await platform.start(task)
    await platform.wait_running(task.task_id)
    await asyncio.sleep(0.2)
    zygotes[0].kill()
    done = await asyncio.wait_for(waiter, 10)
    assert done.error is not None
    assert done.error.type == "script_internal_error"
    # the next task starts a new zygote
    await still_serving(platform, ivy)
