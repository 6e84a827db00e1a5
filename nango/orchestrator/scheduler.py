"""The orchestrator's domain logic: tasks and their lifecycle, long-polls, schedules, and the
sweeps the daemons run. SQL lives in store.py; rules free of I/O in rules.py and states.py.

Every writer that touches a schedule and its tasks locks the schedule row before any task row,
so pausing a schedule and finishing its task cannot deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from nango.errors import Conflict, InvalidRequest
from nango.orchestrator.errors import GroupQueueFull, InvalidTransition, ScheduleNotFound, TaskNotFound
from nango.orchestrator.events import TaskEvents, TaskWatch
from nango.orchestrator.models import FailedTask, Schedule, ScheduleSpec, Task, TaskQuery, TaskSpec
from nango.orchestrator.patterns import GroupPattern
from nango.orchestrator.rules import admit, expiry_reason, next_grid_point, retry_name
from nango.orchestrator.states import RETRYABLE_TASK_STATES, ScheduleState, TaskState, schedule_transition_allowed
from nango.orchestrator.store import NewTask, Store

T = TypeVar("T")

# Long-polls are capped so a call never outlives a load balancer's idle timeout.
MAX_WAIT = timedelta(seconds=30)
# A waiting long-poll re-queries this often even without a notification: a task whose starts_after
# has just passed announces itself to nobody.
RECHECK_SECONDS = 1.0
# A dequeue locks a few more waiting tasks than it may start, so a busy limited group at the head
# of the queue does not leave the call empty-handed.
CLAIM_SCAN_MAX = 2000


class Scheduler:
    def __init__(self, store: Store, events: TaskEvents, *, waiting_per_group_max: int) -> None:
        self._store = store
        self._events = events
        self._waiting_per_group_max = waiting_per_group_max

    # immediate tasks

    async def create_tasks(self, specs: Sequence[TaskSpec]) -> list[Task]:
        """Create tasks in one transaction: all of them, or none when a group's backlog is full."""
        return await self._create([_new_task(spec) for spec in specs])

    async def create_task(self, spec: TaskSpec, wait: timedelta = timedelta(0)) -> Task:
        """Create one task; then wait up to `wait` for it to terminate, like `task_output`."""
        row = _new_task(spec)
        # watched before it exists: its end cannot slip between the insert and the wait
        with self._events.watching_task(str(row.id)) as watch:
            (task,) = await self._create([row])
            if wait <= timedelta(0):
                return task
            return await self._long_poll(watch, self._output_attempt(task.id, watch), _terminated, wait, first=task)

    async def _create(self, rows: Sequence[NewTask]) -> list[Task]:
        if not rows:
            return []
        # the common case in one statement: the backlog check and the insert together
        created = await self._store.insert_tasks_within(self._store.pool, rows, self._waiting_per_group_max)
        if created is not None:
            return created
        # a group's backlog is (or was) full: check again in a transaction, to name it
        async with self._store.transaction() as conn:
            added = Counter(row.group.key for row in rows)
            waiting = await self._store.waiting_counts(conn, list(added))
            for group_key, count in added.items():
                already = waiting.get(group_key, 0)
                if already + count > self._waiting_per_group_max:
                    raise GroupQueueFull(
                        f"group {group_key!r} has {already} waiting tasks; "
                        f"adding {count} would pass its limit of {self._waiting_per_group_max}",
                        payload={"group_key": group_key, "waiting": already, "max": self._waiting_per_group_max},
                    )
            return await self._store.insert_tasks(conn, rows)

    async def dequeue(self, group_key_pattern: str, limit: int, wait: timedelta) -> list[Task]:
        """Start up to `limit` runnable tasks of matching groups, oldest first, within each group's
        max concurrency; when there are none, wait up to `wait` for some."""
        pattern = GroupPattern(group_key_pattern)
        with self._events.watching_groups(pattern) as woken:
            return await self._long_poll(woken, lambda: self._claim(pattern, limit), bool, wait)

    async def _claim(self, pattern: GroupPattern, limit: int) -> list[Task]:
        async with self._store.transaction() as conn:
            candidates = await self._store.lock_candidates(conn, pattern.like, min(2 * limit + 10, CLAIM_SCAN_MAX))
            if not candidates:
                return []
            limited = sorted({c.group_key for c in candidates if c.max_concurrency > 0})
            running: Mapping[str, int] = {}
            if limited:
                # counted after the lock, so it includes every claim committed by another dequeuer
                await self._store.lock_groups(conn, limited)
                running = await self._store.running_counts(conn, limited)
            ids = admit(candidates, running, limit)
            return await self._store.start_tasks(conn, ids) if ids else []

    async def heartbeat(self, task_ids: Sequence[str]) -> list[str]:
        """Refresh the given tasks; returns those no longer STARTED, whose workers should stop."""
        if not task_ids:
            return []
        alive = await self._store.heartbeat(self._store.pool, task_ids)
        return [task_id for task_id in task_ids if task_id not in alive]

    async def succeed(self, task_id: str, output: Any, next_execution_delay: timedelta | None = None) -> Task:
        task, _ = await self._terminate(task_id, TaskState.SUCCEEDED, output, next_execution_delay)
        return task

    async def fail(self, task_id: str, error: Any, next_execution_delay: timedelta | None = None) -> FailedTask:
        task, retry = await self._terminate(task_id, TaskState.FAILED, error, next_execution_delay)
        return FailedTask(task, retry)

    async def cancel(self, task_id: str, reason: str) -> Task:
        task, _ = await self._terminate(task_id, TaskState.CANCELLED, {"reason": reason or "cancelled"}, None)
        return task

    async def _terminate(
        self, task_id: str, to: TaskState, output: Any, next_execution_delay: timedelta | None
    ) -> tuple[Task, Task | None]:
        with self._events.ending_here(task_id):
            # the common case, an immediate task with no retry to create, is one statement (its own transaction)
            done = await self._store.terminate(
                self._store.pool, [task_id], to, [output], unscheduled_only=True, final_only=True
            )
            if done:
                self._events.ended_here(done)
                return done[0], None
            task, retry = await self._terminate_in_transaction(task_id, to, output, next_execution_delay)
            self._events.ended_here([task])
            return task, retry

    async def _terminate_in_transaction(
        self, task_id: str, to: TaskState, output: Any, next_execution_delay: timedelta | None
    ) -> tuple[Task, Task | None]:
        async with self._store.transaction() as conn:
            # an immediate task needs no schedule lock (one whose end creates no retry was tried already)
            done = []
            if to in RETRYABLE_TASK_STATES:
                done = await self._store.terminate(conn, [task_id], to, [output], unscheduled_only=True)
            schedule = None
            if not done:
                task = await self._store.get_task(conn, task_id)
                if task is None:
                    raise TaskNotFound(f"no task {task_id}")
                if task.schedule_id is not None:
                    # schedule_id never changes, so reading it before the lock is safe
                    schedule = await self._store.lock_schedule(conn, task.schedule_id)
                    done = await self._store.terminate(conn, [task_id], to, [output])
                if not done:
                    # under the schedule lock the state may have moved since the first read
                    current = (await self._store.get_task(conn, task_id) if schedule is not None else None) or task
                    if current.state is to:
                        # a repeated call (a retry after a lost reply) gets the first call's result
                        return current, await self._store.attempt(conn, current.retry_key, current.retry_count + 1)
                    raise InvalidTransition(
                        f"task {task_id} is {current.state}; it cannot become {to}",
                        payload={"task_id": task_id, "state": current.state.value, "requested": to.value},
                    )
            schedules = {schedule.id: schedule} if schedule is not None else {}
            retries = await self._after_terminated(conn, done, schedules, next_execution_delay)
            return done[0], retries.get(task_id)

    async def _after_terminated(
        self,
        conn: Any,
        tasks: Sequence[Task],
        schedules: Mapping[str, Schedule],
        next_execution_delay: timedelta | None,
    ) -> dict[str, Task]:
        """Create the next attempt of tasks with retries left, and move their schedules on.
        `schedules` holds the locked schedules of the scheduled ones. Returns retries by task id."""
        retried = [t for t in tasks if t.state in RETRYABLE_TASK_STATES and t.retries_left]
        attempts = await self._store.insert_tasks(conn, [_retry(t) for t in retried])
        retries = {t.id: attempt for t, attempt in zip(retried, attempts, strict=True)}
        waiting_on: list[tuple[str, str]] = []
        next_runs: list[tuple[str, datetime]] = []
        for task in tasks:
            schedule = schedules.get(task.schedule_id) if task.schedule_id else None
            # a task that is not its schedule's latest run no longer steers it
            if schedule is None or schedule.last_scheduled_task_id != task.id:
                continue
            if task.id in retries:
                waiting_on.append((schedule.id, retries[task.id].id))
                continue
            finished_at = task.last_state_transition_at
            if next_execution_delay is not None:
                next_runs.append((schedule.id, finished_at + next_execution_delay))
            else:
                next_runs.append((schedule.id, next_grid_point(schedule.starts_at, schedule.frequency, finished_at)))
        await self._store.set_last_scheduled_tasks(conn, waiting_on)
        await self._store.set_next_executions(conn, next_runs)
        return retries

    async def task_output(self, task_id: str, wait: timedelta) -> Task:
        """The task; waits up to `wait` for it to terminate."""
        with self._events.watching_task(task_id) as watch:
            return await self._long_poll(watch, self._output_attempt(task_id, watch), _terminated, wait)

    def _output_attempt(self, task_id: str, watch: TaskWatch) -> Callable[[], Awaitable[Task]]:
        async def attempt() -> Task:
            # ended through this process: as committed, and a terminal state never changes
            if watch.ended is not None:
                return watch.ended
            task = await self._store.get_task(self._store.pool, task_id)
            if task is None:
                raise TaskNotFound(f"no task {task_id}")
            return task

        return attempt

    async def retry_output(self, retry_key: str, owner_key: str, wait: timedelta) -> Task:
        """The latest attempt of a retried task, if `owner_key` owns it; waits like task_output."""

        async def attempt() -> Task:
            task = await self._store.latest_attempt(self._store.pool, retry_key)
            # another owner's task is reported exactly like a missing one
            if task is None or task.owner_key != owner_key:
                raise TaskNotFound(f"no task with retry key {retry_key} for this owner")
            return task

        with self._events.watching_retry(retry_key) as woken:
            return await self._long_poll(woken, attempt, _terminated, wait)

    async def search_tasks(self, query: TaskQuery) -> list[Task]:
        return await self._store.search_tasks(self._store.pool, query)

    async def _long_poll(
        self,
        woken: asyncio.Event,
        attempt: Callable[[], Awaitable[T]],
        done: Callable[[T], bool],
        wait: timedelta,
        *,
        first: T | None = None,
    ) -> T:
        """`attempt()` until `done`, re-tried when `woken` (registered by the caller before anything was
        read) is set, and at least every RECHECK_SECONDS, for up to `wait`; `first` stands for a first
        attempt already made."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, MAX_WAIT).total_seconds()
        result = first
        while True:
            if result is None:
                woken.clear()
                result = await attempt()
            remaining = deadline - loop.time()
            if done(result) or remaining <= 0 or self._events.closing:
                return result
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, RECHECK_SECONDS)):
                    await woken.wait()
            result = None

    # schedules

    async def create_schedule(self, spec: ScheduleSpec) -> Schedule:
        """Create a schedule, or replace the live one with the same name (keeping its id, its running
        task and, when its grid is unchanged, its next run)."""
        if spec.state is ScheduleState.DELETED:
            raise InvalidRequest("a schedule cannot be created DELETED")
        async with self._store.transaction() as conn:
            now = await self._store.now(conn)
            starts_at = spec.starts_at or now
            # a concurrent creator of the same name can win the insert; then we replace its schedule
            for _ in range(2):
                existing = await self._store.lock_live_schedules(conn, [spec.name])
                if existing:
                    return await self._replace_schedule(conn, existing[0], spec, starts_at, now)
                created = await self._store.insert_schedule(conn, spec, starts_at, starts_at)
                if created is not None:
                    return (await self._store.get_schedules(conn, [created]))[0]
        raise Conflict(f"schedule {spec.name!r} changed concurrently; try again")

    async def _replace_schedule(
        self, conn: Any, old: Schedule, spec: ScheduleSpec, starts_at: datetime, now: datetime
    ) -> Schedule:
        unchanged = old.state is spec.state and old.starts_at == starts_at and old.frequency == spec.frequency
        next_run = old.next_execution_at if unchanged else next_grid_point(starts_at, spec.frequency, now)
        await self._store.replace_schedule(conn, old.id, spec, starts_at, next_run)
        if spec.state is ScheduleState.PAUSED and old.state is not ScheduleState.PAUSED:
            await self._store.cancel_active_tasks_of(conn, [old.id], {"reason": "schedule paused"})
        return (await self._store.get_schedules(conn, [old.id]))[0]

    async def set_schedules_state(self, names: Sequence[str], to: ScheduleState) -> list[Schedule]:
        """Start, pause or delete schedules by name, all or none. Pausing or deleting cancels their
        waiting or running task; starting puts the next run on the next grid point."""
        async with self._store.transaction() as conn:
            found = await self._store.lock_live_schedules(conn, names)
            by_name = {s.name: s for s in found}
            missing = sorted(set(names) - by_name.keys())
            if missing:
                raise ScheduleNotFound(f"no schedule named {', '.join(missing)}", payload={"names": missing})
            moving = [s for s in found if schedule_transition_allowed(s.state, to)]
            if moving:
                now = await self._store.now(conn)
                next_runs = [
                    next_grid_point(s.starts_at, s.frequency, now) if to is ScheduleState.STARTED else None
                    for s in moving
                ]
                await self._store.set_schedules_state(conn, [s.id for s in moving], to, next_runs)
                if to is not ScheduleState.STARTED:
                    reason = {"reason": f"schedule {to.value.lower()}"}
                    await self._store.cancel_active_tasks_of(conn, [s.id for s in moving], reason)
            return await self._store.get_schedules(conn, [by_name[name].id for name in dict.fromkeys(names)])

    async def update_schedule_frequency(self, name: str, frequency: timedelta) -> Schedule:
        async with self._store.transaction() as conn:
            schedule = await self._lock_by_name(conn, name)
            now = await self._store.now(conn)
            next_run = next_grid_point(schedule.starts_at, frequency, now)
            await self._store.set_frequency(conn, schedule.id, frequency, next_run)
            return (await self._store.get_schedules(conn, [schedule.id]))[0]

    async def run_schedule(self, name: str) -> Task:
        """Create the schedule's task now, unless its latest one is still waiting or running (returned)."""
        async with self._store.transaction() as conn:
            schedule = await self._lock_by_name(conn, name)
            if schedule.last_scheduled_task_id is not None:
                last = await self._store.get_task(conn, schedule.last_scheduled_task_id)
                if last is not None and not last.terminated:
                    return last
            now = await self._store.now(conn)
            (task,) = await self._store.insert_tasks(conn, [_scheduled_run(schedule, now)])
            await self._store.set_last_scheduled_tasks(conn, [(schedule.id, task.id)])
            return task

    async def search_schedules(self, names: Sequence[str], state: ScheduleState | None, limit: int) -> list[Schedule]:
        return await self._store.search_schedules(self._store.pool, names, state, limit)

    async def _lock_by_name(self, conn: Any, name: str) -> Schedule:
        found = await self._store.lock_live_schedules(conn, [name])
        if not found:
            raise ScheduleNotFound(f"no schedule named {name}", payload={"names": [name]})
        return found[0]

    # sweeps run by the daemons; each is safe to run in several replicas at once

    async def run_due_schedules(self, limit: int) -> int:
        """Create a task for each due schedule whose latest task has finished; returns how many."""
        async with self._store.transaction() as conn:
            due = await self._store.lock_due_schedules(conn, limit)
            if not due:
                return 0
            # a fresh snapshot: another replica may have committed a run just before we took the lock
            last_ids = [s.last_scheduled_task_id for s in due if s.last_scheduled_task_id is not None]
            busy = await self._store.active_task_ids(conn, last_ids) if last_ids else set()
            ready = [s for s in due if s.last_scheduled_task_id not in busy]
            now = await self._store.now(conn)
            tasks = await self._store.insert_tasks(conn, [_scheduled_run(s, now) for s in ready])
            await self._store.set_last_scheduled_tasks(conn, [(s.id, t.id) for s, t in zip(ready, tasks, strict=True)])
            return len(tasks)

    async def expire_due(self, limit: int) -> int:
        """Expire active tasks past a timeout (retrying those whose policy allows); returns how many."""
        async with self._store.transaction() as conn:
            unscheduled = await self._store.lock_expired_unscheduled(conn, limit)
            ended = await self._expire(conn, unscheduled, {})
        self._events.ended_here(ended)
        expired = len(ended)
        async with self._store.transaction() as conn:
            schedules = await self._store.lock_schedules_with_expired_tasks(conn, limit)
            ended = []
            if schedules:
                scheduled = await self._store.lock_expired_of_schedules(conn, [s.id for s in schedules])
                ended = await self._expire(conn, scheduled, {s.id: s for s in schedules})
        self._events.ended_here(ended)
        return expired + len(ended)

    async def _expire(self, conn: Any, tasks: Sequence[Task], schedules: Mapping[str, Schedule]) -> list[Task]:
        """The tasks expired (committed only with the caller's transaction)."""
        if not tasks:
            return []
        outputs = [{"reason": expiry_reason(t).value} for t in tasks]
        done = await self._store.terminate(conn, [t.id for t in tasks], TaskState.EXPIRED, outputs)
        await self._after_terminated(conn, done, schedules, None)
        return done

    async def clean(self, older_than: timedelta, limit: int) -> int:
        """Delete up to `limit` tasks terminated before `older_than` ago; returns how many."""
        return await self._store.delete_terminated_before(self._store.pool, older_than, limit)


def _terminated(task: Task) -> bool:
    return task.terminated


# the namespace of ids derived from idempotency keys
_IDEMPOTENT_IDS = uuid.UUID("6f1c2d4e-8a3b-5c7d-9e0f-1a2b3c4d5e6f")


def _new_task(spec: TaskSpec) -> NewTask:
    # the id is known before the insert, so a caller can watch the task before it exists
    return NewTask(
        id=uuid.uuid5(_IDEMPOTENT_IDS, spec.idempotency_key) if spec.idempotency_key else uuid.uuid4(),
        name=spec.name,
        args=spec.args,
        group=spec.group,
        retry_max=spec.retry_max,
        retry_count=0,
        retry_key=uuid.uuid4(),
        owner_key=spec.owner_key,
        schedule_id=None,
        starts_after=spec.starts_after,
        timeouts=spec.timeouts,
    )


def _retry(task: Task) -> NewTask:
    return NewTask(
        id=uuid.uuid4(),
        name=retry_name(task),
        args=task.args,
        group=task.group,
        retry_max=task.retry_max,
        retry_count=task.retry_count + 1,
        retry_key=uuid.UUID(task.retry_key),
        owner_key=task.owner_key,
        schedule_id=task.schedule_id,
        starts_after=None,
        timeouts=task.timeouts,
    )


def _scheduled_run(schedule: Schedule, now: datetime) -> NewTask:
    return NewTask(
        id=uuid.uuid4(),
        name=f"{schedule.name}:{now.isoformat()}",
        args=schedule.args,
        group=schedule.group,
        retry_max=schedule.retry_max,
        retry_count=0,
        retry_key=uuid.uuid4(),
        owner_key="",
        schedule_id=schedule.id,
        starts_after=None,
        timeouts=schedule.timeouts,
    )
