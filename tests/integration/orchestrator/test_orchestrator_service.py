"""The orchestrator through its real gRPC server and OrchestratorClient, two replicas on one
Postgres schema (as in production): tasks, long-polls, expiry, retries, schedules, backpressure."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from nango.db import create_pool, migrate_url
from nango.errors import InvalidRequest
from nango.grpckit import ERROR_CODE_HEADER, TOKEN_HEADER, check_health
from nango.orchestrator.app import run
from nango.orchestrator.client import (
    GroupQueueFull,
    InvalidTransition,
    OrchestratorClient,
    ScheduleNotFound,
    ScheduleSpec,
    ScheduleState,
    Task,
    TaskGroup,
    TaskNotFound,
    TaskSpec,
    TaskState,
    TaskTimeouts,
)
from nango.orchestrator.events import TaskEvents
from nango.orchestrator.scheduler import Scheduler
from nango.orchestrator.settings import OrchestratorSettings
from nango.orchestrator.store import Store
from nangopb.orchestrator.v1 import orchestrator_pb2 as pb
from nangopb.orchestrator.v1 import orchestrator_pb2_grpc
from tests.conftest import free_port

pytestmark = pytest.mark.integration

TOKEN = "orchestrator-test-internal-token"
GROUP_CAP = 50
LONG = TaskTimeouts(timedelta(minutes=5), timedelta(minutes=5), timedelta(minutes=5))
R = TypeVar("R")


@dataclass
class Replica:
    client: OrchestratorClient
    target: str
    stop: asyncio.Event
    task: asyncio.Task[None]


async def start_replica(database_url: str, schema: str) -> Replica:
    port = free_port()
    settings = OrchestratorSettings.model_validate(
        {
            "NANGO_INTERNAL_TOKEN": TOKEN,
            "NANGO_BIND_HOST": "127.0.0.1",
            "NANGO_ORCHESTRATOR_PORT": port,
            "NANGO_SHUTDOWN_GRACE_SECONDS": 2,
            "ORCHESTRATOR_DATABASE_URL": database_url,
            "ORCHESTRATOR_DATABASE_SCHEMA": schema,
            "ORCHESTRATOR_DB_POOL_MAX": 6,
            "ORCHESTRATOR_EXPIRING_TICK_INTERVAL_MS": 100,
            "ORCHESTRATOR_SCHEDULING_TICK_INTERVAL_MS": 100,
            "ORCHESTRATOR_CLEANING_TICK_INTERVAL_MS": 200,
            "ORCHESTRATOR_TASK_CREATED_PER_GROUP_COUNT_MAX": GROUP_CAP,
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not await check_health(target, "nangopb.orchestrator.v1.OrchestratorService"):
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "orchestrator did not become healthy"
        await asyncio.sleep(0.05)
    return Replica(OrchestratorClient(target, TOKEN), target, stop, task)


@pytest.fixture(scope="module")
def schema() -> str:
    return f"nango_scheduler_test_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def replicas(database_url: str, schema: str) -> AsyncIterator[tuple[Replica, Replica]]:
    first = await start_replica(database_url, schema)
    second = await start_replica(database_url, schema)
    try:
        yield first, second
    finally:
        for replica in (first, second):
            await replica.client.close()
            replica.stop.set()
        async with asyncio.timeout(15):
            await asyncio.gather(first.task, second.task)


@pytest.fixture
def orch(replicas: tuple[Replica, Replica]) -> OrchestratorClient:
    return replicas[0].client


def new_group() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def spec(group: str, name: str = "job", **fields: Any) -> TaskSpec:
    max_concurrency = fields.pop("max_concurrency", 0)
    fields.setdefault("timeouts", LONG)
    return TaskSpec(name=name, group=TaskGroup(group, max_concurrency), **fields)


async def bounded(awaitable: Awaitable[R], seconds: float = 10) -> R:
    async with asyncio.timeout(seconds):
        return await awaitable


async def dequeue_one(client: OrchestratorClient, group: str) -> Task:
    (task,) = await client.dequeue(group, limit=1, wait=timedelta(seconds=5))
    return task


# tasks


async def test_lifecycle_with_output_long_poll_on_another_replica(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    group = new_group()
    created = await a.client.create_task(spec(group, args={"type": "action", "n": 1}, owner_key="environment:1"))
    assert created.state is TaskState.CREATED
    assert created.args == {"type": "action", "n": 1}
    assert not created.terminated

    waiting = asyncio.create_task(b.client.get_task_output(created.id, wait=timedelta(seconds=10)))
    started = await dequeue_one(a.client, group)
    assert (started.id, started.state) == (created.id, TaskState.STARTED)
    assert started.last_heartbeat_at >= created.created_at
    assert await b.client.heartbeat([started.id]) == []
    assert not waiting.done()

    finished_at = time.monotonic()
    done = await a.client.succeed(started.id, {"ok": True, "rows": [1, 2]})
    assert done.state is TaskState.SUCCEEDED
    assert done.terminated

    output = await bounded(waiting, 5)
    assert time.monotonic() - finished_at < 0.5
    assert output.state is TaskState.SUCCEEDED
    assert output.output == {"ok": True, "rows": [1, 2]}
    # a finished task answers at once
    assert (await a.client.get_task_output(created.id, wait=timedelta(seconds=10))).output == {
        "ok": True,
        "rows": [1, 2],
    }


async def test_output_long_poll_returns_the_unfinished_task_when_the_wait_ends(orch: OrchestratorClient) -> None:
    task = await orch.create_task(spec(new_group()))
    began = time.monotonic()
    seen = await orch.get_task_output(task.id, wait=timedelta(milliseconds=400))
    assert 0.35 < time.monotonic() - began < 2.5
    assert seen.state is TaskState.CREATED
    await orch.cancel(task.id)


async def test_create_with_wait_answers_once_the_task_ends_here_or_on_another_replica(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    for ender in (a, b):
        group = new_group()
        waiting = asyncio.create_task(a.client.create_task(spec(group), wait=timedelta(seconds=10)))
        started = await dequeue_one(ender.client, group)
        assert not waiting.done()
        finished_at = time.monotonic()
        await ender.client.succeed(started.id, {"output": [ender.target]})
        ended = await bounded(waiting, 5)
        assert time.monotonic() - finished_at < 0.5
        assert (ended.id, ended.state, ended.terminated) == (started.id, TaskState.SUCCEEDED, True)
        assert ended.output == {"output": [ender.target]}

    # failed, cancelled: the same, with the output each end gives
    group = new_group()
    waiting = asyncio.create_task(a.client.create_task(spec(group), wait=timedelta(seconds=10)))
    await a.client.fail((await dequeue_one(a.client, group)).id, {"error": "boom"})
    assert ((ended := await bounded(waiting, 5)).state, ended.output) == (TaskState.FAILED, {"error": "boom"})
    group = new_group()
    waiting = asyncio.create_task(a.client.create_task(spec(group), wait=timedelta(seconds=10)))
    await b.client.cancel((await dequeue_one(b.client, group)).id, "stop")
    assert ((ended := await bounded(waiting, 5)).state, ended.output) == (TaskState.CANCELLED, {"reason": "stop"})


async def test_create_with_wait_returns_the_unfinished_task_when_the_wait_ends(orch: OrchestratorClient) -> None:
    group = new_group()
    began = time.monotonic()
    task = await orch.create_task(spec(group), wait=timedelta(milliseconds=400))
    assert 0.35 < time.monotonic() - began < 2.5
    assert (task.state, task.terminated) == (TaskState.CREATED, False)
    assert [t.id for t in await orch.search_tasks(group_key=group)] == [task.id]
    # without a wait it answers at once, whatever happens to the task
    began = time.monotonic()
    assert (await orch.create_task(spec(group))).state is TaskState.CREATED
    assert time.monotonic() - began < 0.35


async def test_illegal_transitions_are_refused(orch: OrchestratorClient) -> None:
    group = new_group()
    task = await orch.create_task(spec(group))
    with pytest.raises(InvalidTransition) as refused:
        await orch.succeed(task.id, {"too": "early"})
    assert refused.value.instance_code == "invalid_task_transition"
    assert refused.value.payload == {"task_id": task.id, "state": "CREATED", "requested": "SUCCEEDED"}
    with pytest.raises(InvalidTransition):
        await orch.fail(task.id, {"error": "x"})

    started = await dequeue_one(orch, group)
    await orch.succeed(started.id, 1)
    for attempt in (orch.fail(task.id, "x"), orch.cancel(task.id, "late")):
        with pytest.raises(InvalidTransition):
            await attempt
    # a repeated success (a retry after a lost reply) answers with the first one's result
    repeated = await orch.succeed(task.id, 2)
    assert (repeated.state, repeated.output) == (TaskState.SUCCEEDED, 1)
    final = await orch.get_task_output(task.id)
    assert (final.state, final.output) == (TaskState.SUCCEEDED, 1)
    assert await orch.heartbeat([task.id]) == [task.id]

    unknown = str(uuid.uuid4())
    with pytest.raises(TaskNotFound) as missing:
        await orch.succeed(unknown, None)
    assert missing.value.instance_code == "task_not_found"
    assert await orch.heartbeat([unknown]) == [unknown]


async def test_batch_creation_keeps_order_and_dequeue_serves_oldest_first(orch: OrchestratorClient) -> None:
    group = new_group()
    created = await orch.create_tasks([spec(group, name=f"t{i}") for i in range(5)])
    assert [t.name for t in created] == [f"t{i}" for i in range(5)]
    first = await orch.dequeue(group, limit=3)
    second = await orch.dequeue(group, limit=3)
    assert [t.name for t in first + second] == [f"t{i}" for i in range(5)]
    assert await orch.dequeue(group, limit=3) == []


async def test_a_resent_idempotency_key_returns_the_first_task(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    group, key = new_group(), f"outbox:{uuid.uuid4()}"
    (first,) = await a.client.create_tasks([spec(group, name="once", idempotency_key=key)])
    # a re-send after a crash, on another replica, together with a new task
    again, other = await b.client.create_tasks(
        [spec(group, name="once", idempotency_key=key), spec(group, name="new", idempotency_key=f"{key}:2")]
    )
    assert again.id == first.id
    assert other.id != first.id
    started = await a.client.dequeue(group, limit=10)
    assert sorted(t.name for t in started) == ["new", "once"]
    # once it ran, the same key still names that task rather than a new run
    await a.client.succeed(first.id, {"ok": True})
    (after,) = await b.client.create_tasks([spec(group, name="once", idempotency_key=key)])
    assert after.id == first.id
    assert after.state.value == "SUCCEEDED"
    assert await a.client.dequeue(group, limit=10) == []


async def test_tasks_are_not_runnable_before_starts_after(orch: OrchestratorClient) -> None:
    group = new_group()
    later = datetime.now(UTC) + timedelta(seconds=1)
    task = await orch.create_task(spec(group, starts_after=later))
    assert await orch.dequeue(group, limit=1) == []
    claimed = await bounded(orch.dequeue(group, limit=1, wait=timedelta(seconds=5)), 8)
    assert [t.id for t in claimed] == [task.id]
    assert datetime.now(UTC) >= later


async def test_glob_patterns_select_groups(orch: OrchestratorClient) -> None:
    prefix = f"glob_{uuid.uuid4().hex[:8]}"
    await orch.create_tasks(
        [
            spec(f"{prefix}:sync:1", name="s1"),
            spec(f"{prefix}:action:1", name="a1"),
            spec(f"{prefix}_sync:2", name="literal-underscore"),
        ]
    )
    assert [t.name for t in await orch.dequeue(f"{prefix}:sync:*", limit=10)] == ["s1"]
    assert [t.name for t in await orch.dequeue(f"{prefix}:*", limit=10)] == ["a1"]
    # `_` in the pattern is literal, not LIKE's single-character wildcard
    assert await orch.dequeue(f"{prefix}%sync:*", limit=10) == []
    assert [t.name for t in await orch.dequeue(f"{prefix}_*", limit=10)] == ["literal-underscore"]


async def test_group_max_concurrency_holds_under_concurrent_dequeuers(replicas: tuple[Replica, Replica]) -> None:
    group = new_group()
    # more waiting tasks than one dequeue locks, so dequeuers really claim side by side
    total = 40
    await replicas[0].client.create_tasks([spec(group, name=f"c{i}", max_concurrency=2) for i in range(total)])
    running = 0
    peak = 0
    done: list[str] = []

    async def worker(client: OrchestratorClient) -> None:
        nonlocal running, peak
        while len(done) < total:
            tasks = await client.dequeue(group, limit=1, wait=timedelta(milliseconds=300))
            running += len(tasks)
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            for task in tasks:
                running -= 1
                await client.succeed(task.id)
                done.append(task.id)

    await bounded(asyncio.gather(*(worker(r.client) for r in replicas * 4)), 30)
    assert peak == 2
    assert len(set(done)) == total


async def test_dequeue_long_poll_wakes_when_another_replica_creates_a_task(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    for _ in range(3):
        group = new_group()
        waiting = asyncio.create_task(b.client.dequeue(group, limit=5, wait=timedelta(seconds=10)))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        began = time.monotonic()
        created = await a.client.create_task(spec(group))
        claimed = await bounded(waiting, 5)
        # well under the 1 s re-check: the NOTIFY woke it
        assert time.monotonic() - began < 0.5
        assert [t.id for t in claimed] == [created.id]


async def test_a_freed_slot_wakes_a_waiting_dequeuer(orch: OrchestratorClient) -> None:
    group = new_group()
    await orch.create_tasks([spec(group, name=f"s{i}", max_concurrency=1) for i in range(2)])
    first = await dequeue_one(orch, group)
    waiting = asyncio.create_task(orch.dequeue(group, limit=1, wait=timedelta(seconds=10)))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    began = time.monotonic()
    await orch.succeed(first.id)
    (second,) = await bounded(waiting, 5)
    assert time.monotonic() - began < 0.5
    assert second.name == "s1"


async def test_failures_retry_under_one_retry_key_and_its_output_is_owner_checked(orch: OrchestratorClient) -> None:
    group = new_group()
    task = await orch.create_task(spec(group, name="job", retry_max=2, owner_key="environment:7"))
    watcher = asyncio.create_task(orch.get_retry_output(task.retry_key, "environment:7", wait=timedelta(seconds=15)))

    first = await dequeue_one(orch, group)
    failed = await orch.fail(first.id, {"error": "boom 1"})
    assert failed.task.state is TaskState.FAILED
    assert failed.task.output == {"error": "boom 1"}
    assert failed.retry is not None
    assert (failed.retry.name, failed.retry.retry_count, failed.retry.retry_key) == ("job:1", 1, task.retry_key)
    assert failed.retry.state is TaskState.CREATED
    assert failed.retry.owner_key == "environment:7"

    repeated = await orch.fail(first.id, {"error": "boom 1 again"})
    assert (repeated.task.output, repeated.retry) == ({"error": "boom 1"}, failed.retry)

    second = await dequeue_one(orch, group)
    assert second.id == failed.retry.id
    again = await orch.fail(second.id, {"error": "boom 2"})
    assert again.retry is not None
    assert again.retry.name == "job:2"
    assert not watcher.done()

    third = await dequeue_one(orch, group)
    await orch.succeed(third.id, {"done": True})
    latest = await bounded(watcher, 5)
    assert (latest.id, latest.state, latest.output, latest.retry_count) == (
        third.id,
        TaskState.SUCCEEDED,
        {"done": True},
        2,
    )

    with pytest.raises(TaskNotFound):
        await orch.get_retry_output(task.retry_key, "environment:8")
    with pytest.raises(TaskNotFound):
        await orch.get_retry_output(str(uuid.uuid4()), "environment:7")


async def test_a_failure_without_retries_left_is_final(orch: OrchestratorClient) -> None:
    group = new_group()
    await orch.create_task(spec(group, retry_max=0))
    failed = await orch.fail((await dequeue_one(orch, group)).id, "nope")
    assert failed.retry is None
    assert await orch.dequeue(group, limit=1) == []


async def test_a_task_never_started_expires_and_is_retried(orch: OrchestratorClient) -> None:
    group = new_group()
    timeouts = TaskTimeouts(timedelta(milliseconds=400), timedelta(minutes=5), timedelta(minutes=5))
    task = await orch.create_task(spec(group, retry_max=1, timeouts=timeouts))
    expired = await bounded(orch.get_task_output(task.id, wait=timedelta(seconds=5)), 8)
    assert expired.state is TaskState.EXPIRED
    assert expired.output == {"reason": "createdToStartedTimeoutSecs_exceeded"}
    retry = await orch.get_retry_output(task.retry_key, "")
    assert (retry.retry_count, retry.state, retry.name) == (1, TaskState.CREATED, "job:1")


async def test_a_silent_worker_expires_by_heartbeat(orch: OrchestratorClient) -> None:
    group = new_group()
    timeouts = TaskTimeouts(timedelta(minutes=5), timedelta(minutes=5), timedelta(milliseconds=500))
    await orch.create_task(spec(group, timeouts=timeouts))
    started = await dequeue_one(orch, group)
    expired = await bounded(orch.get_task_output(started.id, wait=timedelta(seconds=5)), 8)
    assert expired.state is TaskState.EXPIRED
    assert expired.output == {"reason": "heartbeatTimeoutSecs_exceeded"}
    assert await orch.heartbeat([started.id]) == [started.id]
    with pytest.raises(InvalidTransition):
        await orch.succeed(started.id, "too late")


async def test_a_slow_task_expires_despite_heartbeats(orch: OrchestratorClient) -> None:
    group = new_group()
    timeouts = TaskTimeouts(timedelta(minutes=5), timedelta(milliseconds=1200), timedelta(milliseconds=500))
    await orch.create_task(spec(group, timeouts=timeouts))
    started = await dequeue_one(orch, group)
    stopped: list[str] = []

    async def beat() -> None:
        while not stopped:
            stopped.extend(await orch.heartbeat([started.id]))
            await asyncio.sleep(0.15)

    beating = asyncio.create_task(beat())
    expired = await bounded(orch.get_task_output(started.id, wait=timedelta(seconds=5)), 8)
    await bounded(beating, 2)
    assert expired.state is TaskState.EXPIRED
    assert expired.output == {"reason": "startedToCompletedTimeoutSecs_exceeded"}
    assert expired.last_state_transition_at - started.last_state_transition_at >= timedelta(milliseconds=1200)
    assert stopped == [started.id]


async def test_cancellation(orch: OrchestratorClient) -> None:
    group = new_group()
    waiting = await orch.create_task(spec(group, name="waiting"))
    cancelled = await orch.cancel(waiting.id, "user asked")
    assert (cancelled.state, cancelled.output) == (TaskState.CANCELLED, {"reason": "user asked"})
    assert await orch.dequeue(group, limit=5) == []

    await orch.create_task(spec(group, name="running"))
    running = await dequeue_one(orch, group)
    assert (await orch.cancel(running.id)).output == {"reason": "cancelled"}
    assert await orch.heartbeat([running.id]) == [running.id]
    with pytest.raises(InvalidTransition):
        await orch.succeed(running.id, "finished anyway")
    assert (await orch.cancel(running.id, "again")).output == {"reason": "cancelled"}


async def test_search_tasks(orch: OrchestratorClient) -> None:
    group = new_group()
    created = await orch.create_tasks([spec(group, name=f"q{i}") for i in range(4)])
    started = await dequeue_one(orch, group)
    found = await orch.search_tasks(group_key=group)
    assert [t.name for t in found] == ["q3", "q2", "q1", "q0"]
    assert [t.id for t in await orch.search_tasks(group_key=group, states=[TaskState.STARTED])] == [started.id]
    assert len(await orch.search_tasks(group_key=group, limit=2)) == 2
    by_id = await orch.search_tasks(ids=[created[1].id, created[2].id])
    assert {t.id for t in by_id} == {created[1].id, created[2].id}


async def test_backpressure_caps_waiting_tasks_per_group(orch: OrchestratorClient) -> None:
    full, other = new_group(), new_group()
    await orch.create_tasks([spec(full, name=f"b{i}") for i in range(GROUP_CAP)])
    with pytest.raises(GroupQueueFull) as refused:
        await orch.create_task(spec(full))
    assert refused.value.instance_code == "group_queue_full"
    # all or nothing: the batch's task for another group is not created either
    with pytest.raises(GroupQueueFull):
        await orch.create_tasks([spec(other), spec(full)])
    assert await orch.search_tasks(group_key=other) == []
    # a started task no longer counts against the backlog
    await orch.dequeue(full, limit=1)
    await orch.create_task(spec(full))


# schedules


def schedule_spec(name: str, group: str, frequency: timedelta, **fields: Any) -> ScheduleSpec:
    fields.setdefault("timeouts", LONG)
    return ScheduleSpec(name=name, group=TaskGroup(group), frequency=frequency, **fields)


async def wait_for_tasks(client: OrchestratorClient, schedule_id: str, count: int, seconds: float = 5) -> list[Task]:
    deadline = time.monotonic() + seconds
    while True:
        tasks = await client.search_tasks(schedule_id=schedule_id)
        if len(tasks) >= count or time.monotonic() > deadline:
            return tasks
        await asyncio.sleep(0.05)


async def test_a_schedule_runs_on_its_grid(orch: OrchestratorClient) -> None:
    group = new_group()
    starts_at = datetime.now(UTC)
    schedule = await orch.create_schedule(
        schedule_spec(f"grid:{group}", group, timedelta(seconds=1), starts_at=starts_at, args={"type": "sync"})
    )
    assert schedule.state is ScheduleState.STARTED
    assert schedule.next_execution_at == starts_at
    runs: list[Task] = []
    deadline = time.monotonic() + 2.6
    while time.monotonic() < deadline:
        for task in await orch.dequeue(group, limit=5, wait=timedelta(milliseconds=200)):
            runs.append(task)
            await orch.succeed(task.id)
    assert len(runs) == 3
    for k, run_ in enumerate(runs):
        assert run_.args == {"type": "sync"}
        assert run_.name.startswith(f"grid:{group}:")
        assert run_.schedule_id == schedule.id
        offset = run_.created_at - (starts_at + k * timedelta(seconds=1))
        assert timedelta(0) <= offset < timedelta(milliseconds=500)
    (now,) = await orch.search_schedules(names=[schedule.name])
    assert now.next_execution_at == starts_at + 3 * timedelta(seconds=1)
    assert now.last_scheduled_task_id == runs[-1].id
    assert now.last_scheduled_task_state is TaskState.SUCCEEDED
    await orch.set_schedules_state([schedule.name], ScheduleState.DELETED)


async def test_a_long_run_blocks_the_next_and_the_next_lands_on_the_grid(orch: OrchestratorClient) -> None:
    group = new_group()
    starts_at = datetime.now(UTC)
    frequency = timedelta(milliseconds=500)
    schedule = await orch.create_schedule(schedule_spec(f"long:{group}", group, frequency, starts_at=starts_at))
    first = await dequeue_one(orch, group)
    for _ in range(4):
        await asyncio.sleep(0.4)
        await orch.heartbeat([first.id])
        assert len(await orch.search_tasks(schedule_id=schedule.id)) == 1
    done = await orch.succeed(first.id)
    (after,) = await orch.search_schedules(names=[schedule.name])
    assert after.next_execution_at >= done.last_state_transition_at
    assert after.next_execution_at - done.last_state_transition_at <= frequency
    assert (after.next_execution_at - starts_at) % frequency == timedelta(0)
    second = await dequeue_one(orch, group)
    assert second.created_at >= after.next_execution_at
    await orch.succeed(second.id, next_execution_delay=timedelta(minutes=10))
    (delayed,) = await orch.search_schedules(names=[schedule.name])
    assert delayed.next_execution_at - datetime.now(UTC) > timedelta(minutes=9)
    await orch.set_schedules_state([schedule.name], ScheduleState.DELETED)


async def test_pause_start_run_and_delete(orch: OrchestratorClient) -> None:
    group = new_group()
    name = f"life:{group}"
    starts_at = datetime.now(UTC)
    schedule = await orch.create_schedule(schedule_spec(name, group, timedelta(hours=1), starts_at=starts_at))
    (first,) = await wait_for_tasks(orch, schedule.id, 1)
    assert first.state is TaskState.CREATED

    (paused,) = await orch.set_schedules_state([name], ScheduleState.PAUSED)
    assert paused.state is ScheduleState.PAUSED
    assert paused.last_scheduled_task_state is TaskState.CANCELLED
    cancelled = await orch.get_task_output(first.id)
    assert (cancelled.state, cancelled.output) == (TaskState.CANCELLED, {"reason": "schedule paused"})
    # pausing twice is harmless
    assert [s.state for s in await orch.set_schedules_state([name], ScheduleState.PAUSED)] == [ScheduleState.PAUSED]

    (started,) = await orch.set_schedules_state([name], ScheduleState.STARTED)
    assert started.state is ScheduleState.STARTED
    assert started.next_execution_at == starts_at + timedelta(hours=1)
    await asyncio.sleep(0.4)
    assert len(await orch.search_tasks(schedule_id=schedule.id)) == 1

    manual = await orch.run_schedule(name)
    assert manual.schedule_id == schedule.id
    assert manual.state is TaskState.CREATED
    assert (await orch.run_schedule(name)).id == manual.id

    (deleted,) = await orch.set_schedules_state([name], ScheduleState.DELETED)
    assert deleted.state is ScheduleState.DELETED
    assert deleted.deleted_at is not None
    assert (await orch.get_task_output(manual.id)).state is TaskState.CANCELLED
    assert await orch.search_schedules(names=[name]) == []
    assert [s.id for s in await orch.search_schedules(names=[name], state=ScheduleState.DELETED)] == [schedule.id]
    with pytest.raises(ScheduleNotFound) as missing:
        await orch.run_schedule(name)
    assert missing.value.instance_code == "schedule_not_found"
    with pytest.raises(ScheduleNotFound):
        await orch.set_schedules_state([name], ScheduleState.STARTED)

    reborn = await orch.create_schedule(schedule_spec(name, group, timedelta(hours=1), state=ScheduleState.PAUSED))
    assert reborn.id != schedule.id
    await orch.set_schedules_state([name], ScheduleState.DELETED)


async def test_frequency_change_moves_the_next_run_to_the_new_grid(orch: OrchestratorClient) -> None:
    group = new_group()
    name = f"freq:{group}"
    starts_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=90)
    created = await orch.create_schedule(
        schedule_spec(name, group, timedelta(hours=1), starts_at=starts_at, state=ScheduleState.PAUSED)
    )
    assert created.next_execution_at == starts_at
    minutely = await orch.update_schedule_frequency(name, timedelta(minutes=1))
    assert minutely.frequency == timedelta(minutes=1)
    assert minutely.next_execution_at == starts_at + timedelta(minutes=2)
    hourly = await orch.update_schedule_frequency(name, timedelta(hours=1))
    assert hourly.next_execution_at == starts_at + timedelta(hours=1)

    # replacing by name keeps the schedule and its grid
    replaced = await orch.create_schedule(
        schedule_spec(name, group, timedelta(hours=1), starts_at=starts_at, state=ScheduleState.PAUSED, args={"v": 2})
    )
    assert (replaced.id, replaced.args, replaced.next_execution_at) == (created.id, {"v": 2}, hourly.next_execution_at)
    with pytest.raises(ScheduleNotFound):
        await orch.update_schedule_frequency(f"missing:{group}", timedelta(minutes=1))
    await orch.set_schedules_state([name], ScheduleState.DELETED)


async def test_two_replicas_never_run_one_schedule_twice_at_once(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    group = new_group()
    starts_at = datetime.now(UTC)
    names = [f"dup:{group}:{i}" for i in range(20)]
    schedules = [
        await a.client.create_schedule(schedule_spec(n, group, timedelta(milliseconds=300), starts_at=starts_at))
        for n in names
    ]
    # both replicas ask to run each schedule at the same moment as their daemons tick
    pairs = await asyncio.gather(*(asyncio.gather(a.client.run_schedule(n), b.client.run_schedule(n)) for n in names))
    assert all(x.id == y.id for x, y in pairs)

    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        claimed = await (a.client if time.monotonic() % 1 < 0.5 else b.client).dequeue(group, limit=50)
        for task in claimed:
            await a.client.succeed(task.id)
        await asyncio.sleep(0.02)
    await a.client.set_schedules_state(names, ScheduleState.PAUSED)

    for schedule in schedules:
        runs = sorted(await a.client.search_tasks(schedule_id=schedule.id, limit=1000), key=lambda t: t.created_at)
        assert len(runs) >= 2
        for earlier, later in itertools.pairwise(runs):
            assert earlier.terminated
            assert later.created_at >= earlier.last_state_transition_at
    await a.client.set_schedules_state(names, ScheduleState.DELETED)


async def test_concurrent_scheduling_sweeps_create_one_task_per_due_schedule(database_url: str) -> None:
    """The sweep every replica's daemon runs, forty at once on a schema of its own, round after round."""
    schema = f"nango_scheduler_test_{uuid.uuid4().hex[:8]}"
    await migrate_url(database_url, schema, "nango.orchestrator")
    pool = await create_pool(database_url, schema=schema, application_name="orchestrator-race-test", max_size=8)
    try:
        scheduler = Scheduler(Store(pool), TaskEvents(database_url, schema), waiting_per_group_max=GROUP_CAP)
        for i in range(100):
            await scheduler.create_schedule(
                ScheduleSpec(name=f"race:{i}", group=TaskGroup("race"), frequency=timedelta(hours=1))
            )
        for _ in range(8):
            created = await bounded(asyncio.gather(*(scheduler.run_due_schedules(7) for _ in range(40))), 20)
            assert sum(created) == 100
            doubled = await pool.fetchval(
                "SELECT count(*) FROM (SELECT schedule_id FROM tasks WHERE NOT terminated "
                "GROUP BY schedule_id HAVING count(*) > 1) AS d"
            )
            assert doubled == 0
            # finish every run and make every schedule due again
            await pool.execute("UPDATE tasks SET state = 'SUCCEEDED', expires_at = NULL WHERE NOT terminated")
            await pool.execute("UPDATE schedules SET next_execution_at = now()")
    finally:
        await pool.close()


async def test_cleaning_deletes_old_finished_tasks_but_keeps_a_schedules_last(
    orch: OrchestratorClient, database_url: str, schema: str
) -> None:
    group = new_group()
    old, recent = await orch.create_tasks([spec(group, name="old"), spec(group, name="recent")])
    for task in (old, recent):
        await orch.cancel(task.id)
    schedule = await orch.create_schedule(
        schedule_spec(f"clean:{group}", group, timedelta(hours=1), state=ScheduleState.PAUSED)
    )
    last = await orch.run_schedule(schedule.name)
    await orch.cancel(last.id)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"UPDATE {schema}.tasks SET last_state_transition_at = now() - interval '6 days' "
            "WHERE id = ANY($1::uuid[])",
            [old.id, last.id],
        )
    finally:
        await conn.close()
    deadline = time.monotonic() + 5
    while await orch.search_tasks(ids=[old.id]) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    remaining = {t.id for t in await orch.search_tasks(ids=[old.id, recent.id, last.id])}
    assert remaining == {recent.id, last.id}
    await orch.set_schedules_state([schedule.name], ScheduleState.DELETED)


# bad input


async def test_bad_input_answers_invalid_argument(replicas: tuple[Replica, Replica]) -> None:
    channel = grpc.aio.insecure_channel(replicas[0].target)
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    metadata = ((TOKEN_HEADER, TOKEN),)
    group = pb.TaskGroup(key=new_group())
    bad_requests: list[tuple[Any, Any, str]] = [
        (stub.CreateTask, pb.CreateTaskRequest(), "task is required"),
        (stub.CreateTask, pb.CreateTaskRequest(task=pb.TaskSpec(name=" ", group=group)), "task.name"),
        (stub.CreateTask, pb.CreateTaskRequest(task=pb.TaskSpec(name="x")), "task.group is required"),
        (
            stub.CreateTask,
            pb.CreateTaskRequest(task=pb.TaskSpec(name="x", group=pb.TaskGroup(key="g", max_concurrency=-1))),
            "max_concurrency",
        ),
        (stub.CreateTask, pb.CreateTaskRequest(task=pb.TaskSpec(name="x", group=group, retry_max=-1)), "retry_max"),
        (stub.CreateTask, pb.CreateTaskRequest(task=pb.TaskSpec(name="x", group=group, args_json=b"[1]")), "object"),
        (stub.CreateTask, pb.CreateTaskRequest(task=pb.TaskSpec(name="x", group=group, args_json=b"{")), "JSON"),
        (
            stub.CreateTask,
            pb.CreateTaskRequest(
                task=pb.TaskSpec(name="x", group=group, timeouts=pb.TaskTimeouts(heartbeat=Duration(seconds=-1)))
            ),
            "task.timeouts.heartbeat must be positive",
        ),
        (
            stub.CreateTask,
            pb.CreateTaskRequest(
                task=pb.TaskSpec(name="x", group=group, timeouts=pb.TaskTimeouts(heartbeat=Duration(seconds=10**11)))
            ),
            "at most 3650 days",
        ),
        (
            stub.CreateTask,
            pb.CreateTaskRequest(task=pb.TaskSpec(name="x", group=group, starts_after=Timestamp(seconds=-(10**12)))),
            "task.starts_after is not a valid timestamp",
        ),
        (stub.CreateTasks, pb.CreateTasksRequest(tasks=[pb.TaskSpec(name="x", group=group)] * 1001), "at most"),
        (stub.DequeueTasks, pb.DequeueTasksRequest(group_key_pattern="", limit=1), "group_key_pattern"),
        (stub.DequeueTasks, pb.DequeueTasksRequest(group_key_pattern="*", limit=0), "limit"),
        (stub.DequeueTasks, pb.DequeueTasksRequest(group_key_pattern="*", limit=-3), "limit"),
        (stub.DequeueTasks, pb.DequeueTasksRequest(group_key_pattern="*", limit=1001), "limit"),
        (
            stub.DequeueTasks,
            pb.DequeueTasksRequest(group_key_pattern="*", limit=1, wait=Duration(seconds=-1)),
            "wait must not be negative",
        ),
        (stub.HeartbeatTasks, pb.HeartbeatTasksRequest(task_ids=["nope"]), "task_ids[0] must be a UUID"),
        (stub.SucceedTask, pb.SucceedTaskRequest(task_id="nope"), "task_id must be a UUID"),
        (stub.SucceedTask, pb.SucceedTaskRequest(task_id=str(uuid.uuid4()), output_json=b"{"), "output_json"),
        (stub.GetRetryOutput, pb.GetRetryOutputRequest(retry_key=""), "retry_key"),
        (stub.SearchTasks, pb.SearchTasksRequest(limit=-1), "limit"),
        (stub.SearchTasks, pb.SearchTasksRequest(limit=1001), "limit"),
        (stub.SearchTasks, pb.SearchTasksRequest(states=[pb.TASK_STATE_UNSPECIFIED]), "states[0]"),
        (stub.CreateSchedule, pb.CreateScheduleRequest(schedule=pb.ScheduleSpec(name="s", group=group)), "frequency"),
        (
            stub.CreateSchedule,
            pb.CreateScheduleRequest(
                schedule=pb.ScheduleSpec(name="s", group=group, frequency=Duration(seconds=0)),
            ),
            "schedule.frequency must be positive",
        ),
        (
            stub.CreateSchedule,
            pb.CreateScheduleRequest(
                schedule=pb.ScheduleSpec(
                    name="s", group=group, frequency=Duration(seconds=60), state=pb.SCHEDULE_STATE_DELETED
                ),
            ),
            "schedule.state",
        ),
        (stub.SetSchedulesState, pb.SetSchedulesStateRequest(names=[], state=pb.SCHEDULE_STATE_PAUSED), "names"),
        (stub.SetSchedulesState, pb.SetSchedulesStateRequest(names=["s"]), "state"),
        (stub.UpdateScheduleFrequency, pb.UpdateScheduleFrequencyRequest(name="s"), "frequency is required"),
        (stub.RunSchedule, pb.RunScheduleRequest(name=""), "name"),
        (stub.SearchSchedules, pb.SearchSchedulesRequest(limit=5000), "limit"),
    ]
    try:
        for call, request, fragment in bad_requests:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call(request, metadata=metadata, timeout=5)
            assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (request, failure.value.details())
            codes = [v for k, v in failure.value.trailing_metadata() or () if k == ERROR_CODE_HEADER]
            assert codes == ["invalid_request"]
            assert fragment in (failure.value.details() or ""), (fragment, failure.value.details())
    finally:
        await channel.close()
    # through the client the same failure is the domain error
    with pytest.raises(InvalidRequest):
        await replicas[0].client.dequeue("*", limit=0)


async def test_calls_without_the_internal_token_are_refused(replicas: tuple[Replica, Replica]) -> None:
    channel = grpc.aio.insecure_channel(replicas[0].target)
    try:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SearchTasks(pb.SearchTasksRequest(), timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()
