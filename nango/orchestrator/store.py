"""SQL for the orchestrator's tables (schema ORCHESTRATOR_DATABASE_SCHEMA), and nothing else.

Every method takes the connection (or pool) to run on, so the scheduler decides what shares a
transaction. Writers that touch a schedule and its tasks lock the schedule row first.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from nango.orchestrator.models import (
    Candidate,
    Schedule,
    ScheduleSpec,
    Task,
    TaskGroup,
    TaskQuery,
    TaskTimeouts,
)
from nango.orchestrator.states import (
    RETRYABLE_TASK_STATES,
    ScheduleState,
    TaskState,
    schedule_sources,
    task_sources,
)

_TASK_FIELDS = (
    "id",
    "name",
    "payload",
    "group_key",
    "group_max_concurrency",
    "retry_max",
    "retry_count",
    "retry_key",
    "owner_key",
    "schedule_id",
    "starts_after",
    "created_to_started_timeout",
    "started_to_completed_timeout",
    "heartbeat_timeout",
    "created_at",
    "state",
    "terminated",
    "last_state_transition_at",
    "last_heartbeat_at",
    "output",
)
_TASK = ", ".join(_TASK_FIELDS)
_T_TASK = ", ".join(f"t.{f}" for f in _TASK_FIELDS)

_SCHEDULE_FIELDS = (
    "id",
    "name",
    "state",
    "starts_at",
    "frequency",
    "payload",
    "group_key",
    "group_max_concurrency",
    "retry_max",
    "created_to_started_timeout",
    "started_to_completed_timeout",
    "heartbeat_timeout",
    "created_at",
    "updated_at",
    "deleted_at",
    "next_execution_at",
    "last_scheduled_task_id",
)
# the last task's state comes from tasks itself, so it is never stale
_SCHEDULE_SELECT = (
    "SELECT "
    + ", ".join(f"s.{f}" for f in _SCHEDULE_FIELDS)
    + ", t.state AS last_task_state FROM schedules s LEFT JOIN tasks t ON t.id = s.last_scheduled_task_id"
)

_CREATED = TaskState.CREATED.value
_STARTED = TaskState.STARTED.value
_DELETED = ScheduleState.DELETED.value


@dataclass(frozen=True)
class NewTask:
    """A row to insert into tasks: a new immediate task, a retry, or a scheduled run."""

    id: uuid.UUID
    name: str
    args: Mapping[str, Any]
    group: TaskGroup
    retry_max: int
    retry_count: int
    retry_key: uuid.UUID
    owner_key: str
    schedule_id: str | None
    # None means now (the database's clock)
    starts_after: datetime | None
    timeouts: TaskTimeouts


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _task(r: Any) -> Task:
    schedule_id = r["schedule_id"]
    return Task(
        id=str(r["id"]),
        name=r["name"],
        group=TaskGroup(r["group_key"], r["group_max_concurrency"]),
        state=TaskState(r["state"]),
        args=json.loads(r["payload"]),
        retry_count=r["retry_count"],
        retry_max=r["retry_max"],
        retry_key=str(r["retry_key"]),
        owner_key=r["owner_key"],
        schedule_id=None if schedule_id is None else str(schedule_id),
        timeouts=TaskTimeouts(
            r["created_to_started_timeout"], r["started_to_completed_timeout"], r["heartbeat_timeout"]
        ),
        created_at=r["created_at"],
        starts_after=r["starts_after"],
        last_state_transition_at=r["last_state_transition_at"],
        last_heartbeat_at=r["last_heartbeat_at"],
        output=_json_or_none(r["output"]),
        terminated=r["terminated"],
    )


def _schedule(r: Any) -> Schedule:
    last_id = r["last_scheduled_task_id"]
    last_state = r["last_task_state"]
    return Schedule(
        id=str(r["id"]),
        name=r["name"],
        state=ScheduleState(r["state"]),
        starts_at=r["starts_at"],
        frequency=r["frequency"],
        group=TaskGroup(r["group_key"], r["group_max_concurrency"]),
        retry_max=r["retry_max"],
        timeouts=TaskTimeouts(
            r["created_to_started_timeout"], r["started_to_completed_timeout"], r["heartbeat_timeout"]
        ),
        args=json.loads(r["payload"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        deleted_at=r["deleted_at"],
        next_execution_at=r["next_execution_at"],
        last_scheduled_task_id=None if last_id is None else str(last_id),
        last_scheduled_task_state=None if last_state is None else TaskState(last_state),
    )


def _in_order(tasks: list[Task], ids: Sequence[str]) -> list[Task]:
    position = {task_id: i for i, task_id in enumerate(ids)}
    return sorted(tasks, key=lambda t: position[t.id])


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    async def now(self, conn: Any) -> datetime:
        value: datetime = await conn.fetchval("SELECT now()")
        return value

    # tasks

    async def insert_tasks(self, conn: Any, rows: Sequence[NewTask]) -> list[Task]:
        """Insert CREATED tasks; returned in the order given. A row whose id exists already (an
        idempotent re-send) is not inserted again: the existing task is returned in its place."""
        _, tasks = await self._insert_tasks(conn, rows, None)
        return tasks

    async def insert_tasks_within(self, conn: Any, rows: Sequence[NewTask], waiting_max: int) -> list[Task] | None:
        """Like `insert_tasks`, unless a group would then hold more than `waiting_max` waiting tasks:
        then nothing is inserted and None returned. The check and the insert are one statement, so
        this needs no transaction of its own."""
        blocked, tasks = await self._insert_tasks(conn, rows, waiting_max)
        return None if blocked else tasks

    async def _insert_tasks(
        self, conn: Any, rows: Sequence[NewTask], waiting_max: int | None
    ) -> tuple[bool, list[Task]]:
        """Whether the backlog cap held the rows back, and the tasks (in the order given) otherwise."""
        if not rows:
            return False, []
        records = await conn.fetch(
            f"""WITH v AS (
                    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
                                         $7::int[], $8::uuid[], $9::text[], $10::uuid[], $11::timestamptz[],
                                         $12::interval[], $13::interval[], $14::interval[]) WITH ORDINALITY
                         AS v(id, name, payload, group_key, max_concurrency, retry_max, retry_count, retry_key,
                              owner_key, schedule_id, starts_after, cts, stc, hb, position)),
                guard AS (
                    SELECT $16::int IS NOT NULL AND EXISTS (
                        SELECT 1 FROM (SELECT group_key, count(*) AS n FROM v GROUP BY group_key) AS a
                        WHERE a.n + (SELECT count(*) FROM tasks w WHERE w.state = $15 AND w.group_key = a.group_key)
                              > $16::int) AS blocked),
                inserted AS (
                    INSERT INTO tasks (id, name, payload, group_key, group_max_concurrency, retry_max, retry_count,
                                       retry_key, owner_key, schedule_id, starts_after, created_to_started_timeout,
                                       started_to_completed_timeout, heartbeat_timeout, state, expires_at)
                    SELECT v.id, v.name, v.payload::jsonb, v.group_key, v.max_concurrency, v.retry_max,
                           v.retry_count, v.retry_key, v.owner_key, v.schedule_id, coalesce(v.starts_after, now()),
                           v.cts, v.stc, v.hb, $15, coalesce(v.starts_after, now()) + v.cts
                    FROM v
                    WHERE NOT (SELECT blocked FROM guard)
                    ORDER BY v.position
                    ON CONFLICT (id) DO NOTHING
                    RETURNING {_TASK})
                SELECT guard.blocked, inserted.* FROM guard LEFT JOIN inserted ON true""",
            [r.id for r in rows],
            [r.name for r in rows],
            [json.dumps(r.args, separators=(",", ":")) for r in rows],
            [r.group.key for r in rows],
            [r.group.max_concurrency for r in rows],
            [r.retry_max for r in rows],
            [r.retry_count for r in rows],
            [r.retry_key for r in rows],
            [r.owner_key for r in rows],
            [r.schedule_id for r in rows],
            [r.starts_after for r in rows],
            [r.timeouts.created_to_started for r in rows],
            [r.timeouts.started_to_completed for r in rows],
            [r.timeouts.heartbeat for r in rows],
            _CREATED,
            waiting_max,
        )
        if records[0]["blocked"]:
            return True, []
        tasks = [_task(r) for r in records if r["id"] is not None]
        ids = [str(r.id) for r in rows]
        if len(tasks) < len(set(ids)):
            inserted = {t.id for t in tasks}
            existing = await conn.fetch(
                f"SELECT {_TASK} FROM tasks WHERE id = ANY($1::uuid[])", [i for i in set(ids) if i not in inserted]
            )
            tasks += [_task(r) for r in existing]
        by_id = {t.id: t for t in tasks}
        return False, [by_id[i] for i in ids]

    async def get_task(self, conn: Any, task_id: str) -> Task | None:
        record = await conn.fetchrow(f"SELECT {_TASK} FROM tasks WHERE id = $1", task_id)
        return None if record is None else _task(record)

    async def latest_attempt(self, conn: Any, retry_key: str) -> Task | None:
        record = await conn.fetchrow(
            f"SELECT {_TASK} FROM tasks WHERE retry_key = $1 ORDER BY retry_count DESC LIMIT 1", retry_key
        )
        return None if record is None else _task(record)

    async def attempt(self, conn: Any, retry_key: str, retry_count: int) -> Task | None:
        record = await conn.fetchrow(
            f"SELECT {_TASK} FROM tasks WHERE retry_key = $1 AND retry_count = $2", retry_key, retry_count
        )
        return None if record is None else _task(record)

    async def waiting_counts(self, conn: Any, group_keys: Sequence[str]) -> dict[str, int]:
        records = await conn.fetch(
            "SELECT group_key, count(*) AS n FROM tasks WHERE state = $2 AND group_key = ANY($1::text[]) "
            "GROUP BY group_key",
            list(group_keys),
            _CREATED,
        )
        return {r["group_key"]: r["n"] for r in records}

    async def lock_candidates(self, conn: Any, like: str, scan: int) -> list[Candidate]:
        """Lock up to `scan` runnable waiting tasks, oldest first, skipping rows other dequeuers hold and
        limited groups that already run as many tasks as their limit allows."""
        records = await conn.fetch(
            r"""WITH saturated AS (
                    SELECT group_key FROM tasks
                    WHERE state = $4 AND group_max_concurrency > 0 AND group_key LIKE $1 ESCAPE '\'
                    GROUP BY group_key HAVING count(*) >= max(group_max_concurrency))
                SELECT id, group_key, group_max_concurrency FROM tasks
                WHERE state = $3 AND group_key LIKE $1 ESCAPE '\' AND starts_after <= now()
                  AND group_key NOT IN (SELECT group_key FROM saturated)
                ORDER BY seq
                LIMIT $2
                FOR UPDATE SKIP LOCKED""",
            like,
            scan,
            _CREATED,
            _STARTED,
        )
        return [Candidate(str(r["id"]), r["group_key"], r["group_max_concurrency"]) for r in records]

    async def lock_groups(self, conn: Any, group_keys: Sequence[str]) -> None:
        """Serialise dequeuers of these groups until commit, so two cannot both take a group's last slot."""
        # sorted lock ids: two transactions locking overlapping groups always do so in the same order
        lock_ids = sorted({zlib.crc32(k.encode()) - 2**31 for k in group_keys})
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.task_group'), k) FROM unnest($1::int[]) AS k",
            lock_ids,
        )

    async def running_counts(self, conn: Any, group_keys: Sequence[str]) -> dict[str, int]:
        records = await conn.fetch(
            "SELECT group_key, count(*) AS n FROM tasks WHERE state = $2 AND group_key = ANY($1::text[]) "
            "GROUP BY group_key",
            list(group_keys),
            _STARTED,
        )
        return {r["group_key"]: r["n"] for r in records}

    async def start_tasks(self, conn: Any, ids: Sequence[str]) -> list[Task]:
        """CREATED -> STARTED with a fresh heartbeat; returned in the order given."""
        records = await conn.fetch(
            f"""UPDATE tasks SET state = $2, last_state_transition_at = now(), last_heartbeat_at = now(),
                       expires_at = now() + least(heartbeat_timeout, started_to_completed_timeout)
                WHERE id = ANY($1::uuid[]) AND state = ANY($3::text[])
                RETURNING {_TASK}""",
            list(ids),
            _STARTED,
            task_sources(TaskState.STARTED),
        )
        return _in_order([_task(r) for r in records], ids)

    async def heartbeat(self, conn: Any, ids: Sequence[str]) -> set[str]:
        """Refresh the heartbeat of the given tasks still STARTED; returns their ids."""
        records = await conn.fetch(
            """UPDATE tasks SET last_heartbeat_at = now(),
                       expires_at = least(now() + heartbeat_timeout,
                                          last_state_transition_at + started_to_completed_timeout)
               WHERE id = ANY($1::uuid[]) AND state = $2
               RETURNING id""",
            list(ids),
            _STARTED,
        )
        return {str(r["id"]) for r in records}

    async def terminate(
        self,
        conn: Any,
        ids: Sequence[str],
        to: TaskState,
        outputs: Sequence[Any],
        *,
        unscheduled_only: bool = False,
        final_only: bool = False,
    ) -> list[Task]:
        """Move tasks to the terminal state `to` with their outputs, each only if the transition table
        allows it from its current state (and, with `unscheduled_only`, if it has no schedule, whose
        row would have to be locked first; with `final_only`, if no retry follows it, which would have
        to be inserted in the same transaction); returns those moved."""
        conditions = "AND t.schedule_id IS NULL" if unscheduled_only else ""
        if final_only and to in RETRYABLE_TASK_STATES:
            conditions += " AND t.retry_count >= t.retry_max"
        records = await conn.fetch(
            f"""UPDATE tasks AS t SET state = $3, output = v.output::jsonb, last_state_transition_at = now(),
                       expires_at = NULL
                FROM unnest($1::uuid[], $2::text[]) AS v(id, output)
                WHERE t.id = v.id AND t.state = ANY($4::text[]) {conditions}
                RETURNING {_T_TASK}""",
            list(ids),
            [None if o is None else json.dumps(o, separators=(",", ":"), default=str) for o in outputs],
            to.value,
            task_sources(to),
        )
        return [_task(r) for r in records]

    async def lock_expired_unscheduled(self, conn: Any, limit: int) -> list[Task]:
        records = await conn.fetch(
            f"""SELECT {_TASK} FROM tasks
                WHERE expires_at <= now() AND schedule_id IS NULL
                ORDER BY expires_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED""",
            limit,
        )
        return [_task(r) for r in records]

    async def lock_schedules_with_expired_tasks(self, conn: Any, limit: int) -> list[Schedule]:
        records = await conn.fetch(
            f"""{_SCHEDULE_SELECT}
                WHERE s.id IN (SELECT schedule_id FROM tasks WHERE expires_at <= now() AND schedule_id IS NOT NULL)
                ORDER BY s.id
                LIMIT $1
                FOR UPDATE OF s SKIP LOCKED""",
            limit,
        )
        return [_schedule(r) for r in records]

    async def lock_expired_of_schedules(self, conn: Any, schedule_ids: Sequence[str]) -> list[Task]:
        records = await conn.fetch(
            f"""SELECT {_TASK} FROM tasks
                WHERE schedule_id = ANY($1::uuid[]) AND expires_at <= now()
                ORDER BY id
                FOR UPDATE""",
            list(schedule_ids),
        )
        return [_task(r) for r in records]

    async def search_tasks(self, conn: Any, query: TaskQuery) -> list[Task]:
        conditions: list[str] = []
        args: list[Any] = []
        if query.ids:
            args.append(list(query.ids))
            conditions.append(f"id = ANY(${len(args)}::uuid[])")
        if query.group_key is not None:
            args.append(query.group_key)
            conditions.append(f"group_key = ${len(args)}")
        if query.schedule_id is not None:
            args.append(query.schedule_id)
            conditions.append(f"schedule_id = ${len(args)}")
        if query.states:
            args.append([s.value for s in query.states])
            conditions.append(f"state = ANY(${len(args)}::text[])")
        args.append(query.limit)
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        records = await conn.fetch(f"SELECT {_TASK} FROM tasks {where} ORDER BY seq DESC LIMIT ${len(args)}", *args)
        return [_task(r) for r in records]

    async def delete_terminated_before(self, conn: Any, older_than: timedelta, limit: int) -> int:
        """Delete up to `limit` tasks terminated more than `older_than` ago, except any schedule's last task."""
        status: str = await conn.execute(
            """DELETE FROM tasks WHERE id IN (
                   SELECT t.id FROM tasks t
                   WHERE t.terminated AND t.last_state_transition_at < now() - $1::interval
                     AND NOT EXISTS (SELECT 1 FROM schedules s WHERE s.last_scheduled_task_id = t.id)
                   ORDER BY t.last_state_transition_at
                   LIMIT $2
                   FOR UPDATE SKIP LOCKED)""",
            older_than,
            limit,
        )
        return int(status.split()[-1])

    # schedules

    async def get_schedules(self, conn: Any, ids: Sequence[str]) -> list[Schedule]:
        """The schedules with these ids, in the order given."""
        records = await conn.fetch(f"{_SCHEDULE_SELECT} WHERE s.id = ANY($1::uuid[])", list(ids))
        position = {schedule_id: i for i, schedule_id in enumerate(ids)}
        return sorted((_schedule(r) for r in records), key=lambda s: position[s.id])

    async def lock_live_schedules(self, conn: Any, names: Sequence[str]) -> list[Schedule]:
        """Lock the schedules (not DELETED) with these names, in id order (no deadlock between batches)."""
        records = await conn.fetch(
            f"""{_SCHEDULE_SELECT} WHERE s.name = ANY($1::text[]) AND s.state <> $2
                ORDER BY s.id FOR UPDATE OF s""",
            list(names),
            _DELETED,
        )
        return [_schedule(r) for r in records]

    async def lock_schedule(self, conn: Any, schedule_id: str) -> Schedule:
        record = await conn.fetchrow(f"{_SCHEDULE_SELECT} WHERE s.id = $1 FOR UPDATE OF s", schedule_id)
        return _schedule(record)

    async def lock_due_schedules(self, conn: Any, limit: int) -> list[Schedule]:
        """Lock STARTED schedules whose next run is due and whose last task looked finished; another
        replica's locked rows are skipped. The caller re-checks the last task with a fresh snapshot."""
        records = await conn.fetch(
            f"""{_SCHEDULE_SELECT}
                WHERE s.state = $2 AND s.next_execution_at <= now()
                  AND (t.id IS NULL OR t.terminated)
                ORDER BY s.next_execution_at
                LIMIT $1
                FOR UPDATE OF s SKIP LOCKED""",
            limit,
            ScheduleState.STARTED.value,
        )
        return [_schedule(r) for r in records]

    async def active_task_ids(self, conn: Any, ids: Sequence[str]) -> set[str]:
        records = await conn.fetch("SELECT id FROM tasks WHERE id = ANY($1::uuid[]) AND NOT terminated", list(ids))
        return {str(r["id"]) for r in records}

    async def insert_schedule(
        self, conn: Any, spec: ScheduleSpec, starts_at: datetime, next_execution_at: datetime
    ) -> str | None:
        """Insert a schedule; None when a live one with this name appeared meanwhile."""
        value = await conn.fetchval(
            """INSERT INTO schedules (id, name, state, starts_at, frequency, payload, group_key,
                                      group_max_concurrency, retry_max, created_to_started_timeout,
                                      started_to_completed_timeout, heartbeat_timeout, next_execution_at)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13)
               ON CONFLICT (name) WHERE state <> 'DELETED' DO NOTHING
               RETURNING id""",
            uuid.uuid4(),
            *self._schedule_values(spec, starts_at, next_execution_at),
        )
        return None if value is None else str(value)

    async def replace_schedule(
        self, conn: Any, schedule_id: str, spec: ScheduleSpec, starts_at: datetime, next_execution_at: datetime
    ) -> None:
        await conn.execute(
            """UPDATE schedules SET name = $2, state = $3, starts_at = $4, frequency = $5, payload = $6::jsonb,
                      group_key = $7, group_max_concurrency = $8, retry_max = $9, created_to_started_timeout = $10,
                      started_to_completed_timeout = $11, heartbeat_timeout = $12, next_execution_at = $13,
                      updated_at = now()
               WHERE id = $1""",
            schedule_id,
            *self._schedule_values(spec, starts_at, next_execution_at),
        )

    @staticmethod
    def _schedule_values(spec: ScheduleSpec, starts_at: datetime, next_execution_at: datetime) -> list[Any]:
        return [
            spec.name,
            spec.state.value,
            starts_at,
            spec.frequency,
            json.dumps(spec.args, separators=(",", ":")),
            spec.group.key,
            spec.group.max_concurrency,
            spec.retry_max,
            spec.timeouts.created_to_started,
            spec.timeouts.started_to_completed,
            spec.timeouts.heartbeat,
            next_execution_at,
        ]

    async def set_schedules_state(
        self, conn: Any, ids: Sequence[str], to: ScheduleState, next_executions: Sequence[datetime | None]
    ) -> None:
        """Move schedules to `to` where the transition table allows it; a None next execution keeps the old one."""
        await conn.execute(
            """UPDATE schedules AS s SET state = $3, updated_at = now(),
                      deleted_at = CASE WHEN $3 = $5 THEN now() ELSE s.deleted_at END,
                      next_execution_at = coalesce(v.next_execution_at, s.next_execution_at)
               FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, next_execution_at)
               WHERE s.id = v.id AND s.state = ANY($4::text[])""",
            list(ids),
            list(next_executions),
            to.value,
            schedule_sources(to),
            _DELETED,
        )

    async def set_frequency(
        self, conn: Any, schedule_id: str, frequency: timedelta, next_execution_at: datetime
    ) -> None:
        await conn.execute(
            "UPDATE schedules SET frequency = $2, next_execution_at = $3, updated_at = now() WHERE id = $1",
            schedule_id,
            frequency,
            next_execution_at,
        )

    async def set_last_scheduled_tasks(self, conn: Any, pairs: Sequence[tuple[str, str]]) -> None:
        """(schedule id, task id): the task each schedule now waits on before its next run."""
        if pairs:
            await conn.execute(
                """UPDATE schedules AS s SET last_scheduled_task_id = v.task_id
                   FROM unnest($1::uuid[], $2::uuid[]) AS v(id, task_id) WHERE s.id = v.id""",
                [p[0] for p in pairs],
                [p[1] for p in pairs],
            )

    async def set_next_executions(self, conn: Any, pairs: Sequence[tuple[str, datetime]]) -> None:
        if pairs:
            await conn.execute(
                """UPDATE schedules AS s SET next_execution_at = v.next_execution_at
                   FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, next_execution_at) WHERE s.id = v.id""",
                [p[0] for p in pairs],
                [p[1] for p in pairs],
            )

    async def cancel_active_tasks_of(self, conn: Any, schedule_ids: Sequence[str], output: Any) -> int:
        status: str = await conn.execute(
            """UPDATE tasks SET state = $2, output = $3::jsonb, last_state_transition_at = now(), expires_at = NULL
               WHERE schedule_id = ANY($1::uuid[]) AND state = ANY($4::text[])""",
            list(schedule_ids),
            TaskState.CANCELLED.value,
            json.dumps(output),
            task_sources(TaskState.CANCELLED),
        )
        return int(status.split()[-1])

    async def search_schedules(
        self, conn: Any, names: Sequence[str], state: ScheduleState | None, limit: int
    ) -> list[Schedule]:
        """Schedules by name and state; without a state, the live ones (not DELETED)."""
        records = await conn.fetch(
            f"""{_SCHEDULE_SELECT}
                WHERE (cardinality($1::text[]) = 0 OR s.name = ANY($1::text[]))
                  AND (CASE WHEN $2::text IS NULL THEN s.state <> $4 ELSE s.state = $2 END)
                ORDER BY s.name, s.id
                LIMIT $3""",
            list(names),
            None if state is None else state.value,
            limit,
            _DELETED,
        )
        return [_schedule(r) for r in records]
