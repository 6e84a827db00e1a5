"""SQL for the jobs service's tables (schema JOBS_DATABASE_SCHEMA): sync jobs and dispatched tasks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from nango.jobs.args import TaskArgs, parse_task_args
from nango.jobs.models import FunctionFailure, ModelResult, SyncJob, SyncJobStatus, SyncJobType, TaskCompletion
from nango.jobs.results import (
    completion_from_json,
    completion_json,
    counts_from_json,
    counts_json,
    failure_from_json,
    failure_json,
)

_JOB = "id, sync_id::text, task_id::text, type, status, results, error, started_at, ended_at"
_TASK = "task_id::text, args, sync_job_id, dispatched_at, result, reported_at, settled_at IS NOT NULL AS settled"


@dataclass(frozen=True)
class DispatchedTask:
    """A task jobs took from the orchestrator, and the first result reported for it."""

    task_id: str
    args: TaskArgs
    sync_job_id: int | None
    dispatched_at: datetime
    result: TaskCompletion | None
    reported_at: datetime | None
    # every consequence of the result has been applied
    settled: bool


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _sync_job(row: asyncpg.Record) -> SyncJob:
    error = json.loads(row["error"]) if row["error"] is not None else None
    return SyncJob(
        id=row["id"],
        sync_id=row["sync_id"],
        task_id=row["task_id"],
        type=SyncJobType(row["type"]),
        status=SyncJobStatus(row["status"]),
        results=counts_from_json(json.loads(row["results"])),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        error=failure_from_json(error) if error is not None else None,
    )


def _dispatched(row: asyncpg.Record) -> DispatchedTask:
    task_id = row["task_id"]
    result = completion_from_json(task_id, json.loads(row["result"])) if row["result"] is not None else None
    return DispatchedTask(
        task_id=task_id,
        args=parse_task_args(json.loads(row["args"])),
        sync_job_id=row["sync_job_id"],
        dispatched_at=row["dispatched_at"],
        result=result,
        reported_at=row["reported_at"],
        settled=row["settled"],
    )


class JobsStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def dispatch(
        self, task_id: str, args: TaskArgs, job_type: SyncJobType | None = None
    ) -> tuple[DispatchedTask, SyncJob | None]:
        """Record a task as taken, with a RUNNING sync job when `job_type` is given; repeatable."""
        if job_type is None:
            return await self._dispatch_without_job(task_id, args), None
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO sync_jobs (sync_id, task_id, environment_id, nango_connection_id, type)
                    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id) DO NOTHING RETURNING {_JOB}""",
                args.sync_id,
                task_id,
                args.environment_id,
                args.nango_connection_id,
                job_type.value,
            ) or await conn.fetchrow(f"SELECT {_JOB} FROM sync_jobs WHERE task_id = $1", task_id)
            job = _sync_job(row)
            await conn.execute(
                """INSERT INTO dispatched_tasks (task_id, type, environment_id, nango_connection_id, args, sync_job_id)
                   VALUES ($1, $2, $3, $4, $5::jsonb, $6) ON CONFLICT (task_id) DO NOTHING""",
                task_id,
                args.kind.value,
                args.environment_id,
                args.nango_connection_id,
                _json(args.to_json()),
                job.id,
            )
            task = await conn.fetchrow(f"SELECT {_TASK} FROM dispatched_tasks WHERE task_id = $1", task_id)
        return _dispatched(task), job

    async def _dispatch_without_job(self, task_id: str, args: TaskArgs) -> DispatchedTask:
        """`dispatch` with no sync job: one statement, which returns the row it inserted or the one there."""
        row = await self.pool.fetchrow(
            f"""WITH inserted AS (
                    INSERT INTO dispatched_tasks (task_id, type, environment_id, nango_connection_id, args)
                    VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (task_id) DO NOTHING
                    RETURNING {_TASK})
                SELECT * FROM inserted
                UNION ALL
                SELECT {_TASK} FROM dispatched_tasks WHERE task_id = $1 AND NOT EXISTS (SELECT 1 FROM inserted)""",
            task_id,
            args.kind.value,
            args.environment_id,
            args.nango_connection_id,
            _json(args.to_json()),
        )
        if row is None:
            # the row was inserted by a statement that committed after this one began: read it now
            row = await self.pool.fetchrow(f"SELECT {_TASK} FROM dispatched_tasks WHERE task_id = $1", task_id)
        return _dispatched(row)

    async def record_result(self, completion: TaskCompletion) -> DispatchedTask | None:
        """Keep the first result reported for a task; returns the task with whichever result it holds
        (None when jobs never dispatched it)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""UPDATE dispatched_tasks SET result = $2::jsonb, reported_at = now()
                    WHERE task_id = $1 AND result IS NULL
                    RETURNING {_TASK}""",
                completion.task_id,
                _json(completion_json(completion)),
            )
            if row is None:
                # a result was there already (or no such task): the task as it is
                row = await conn.fetchrow(
                    f"SELECT {_TASK} FROM dispatched_tasks WHERE task_id = $1", completion.task_id
                )
        return _dispatched(row) if row is not None else None

    async def mark_settled(self, task_id: str) -> None:
        await self.pool.execute(
            "UPDATE dispatched_tasks SET settled_at = now() WHERE task_id = $1 AND settled_at IS NULL", task_id
        )

    async def unsettled(self, limit: int, *, retry_after: timedelta) -> list[DispatchedTask]:
        """Tasks still waiting for a result, and those whose result was reported more than
        `retry_after` ago but is not applied yet; the oldest first."""
        rows = await self.pool.fetch(
            f"""SELECT {_TASK} FROM dispatched_tasks
                WHERE settled_at IS NULL AND (result IS NULL OR reported_at < now() - $2::interval)
                ORDER BY dispatched_at LIMIT $1""",
            limit,
            retry_after,
        )
        return [_dispatched(r) for r in rows]

    async def settled_among(self, task_ids: Sequence[str]) -> set[str]:
        rows = await self.pool.fetch(
            """SELECT task_id::text FROM dispatched_tasks
               WHERE task_id = ANY($1::uuid[]) AND settled_at IS NOT NULL""",
            list(task_ids),
        )
        return {r["task_id"] for r in rows}

    async def finish_sync_job(
        self,
        job_id: int,
        status: SyncJobStatus,
        results: Sequence[ModelResult],
        error: FunctionFailure | None,
    ) -> SyncJob:
        """End a RUNNING job; a job already ended keeps its first ending (returned as it is)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""UPDATE sync_jobs SET status = $2, results = $3::jsonb, error = $4::jsonb, ended_at = now()
                    WHERE id = $1 AND status = 'RUNNING' RETURNING {_JOB}""",
                job_id,
                status.value,
                _json(counts_json(results)),
                _json(failure_json(error)) if error is not None else None,
            ) or await conn.fetchrow(f"SELECT {_JOB} FROM sync_jobs WHERE id = $1", job_id)
        return _sync_job(row)

    async def list_sync_jobs(self, sync_ids: Sequence[str], *, latest_only: bool, limit: int) -> list[SyncJob]:
        """Jobs of these syncs, newest first; with `latest_only` one per sync (a walk of the index each)."""
        if latest_only:
            rows = await self.pool.fetch(
                f"""SELECT j.* FROM unnest($1::uuid[]) AS s (sync_id)
                    CROSS JOIN LATERAL (
                        SELECT {_JOB} FROM sync_jobs WHERE sync_id = s.sync_id ORDER BY id DESC LIMIT 1
                    ) AS j
                    ORDER BY j.id DESC LIMIT $2""",
                list(sync_ids),
                limit,
            )
        else:
            rows = await self.pool.fetch(
                f"SELECT {_JOB} FROM sync_jobs WHERE sync_id = ANY($1::uuid[]) ORDER BY id DESC LIMIT $2",
                list(sync_ids),
                limit,
            )
        return [_sync_job(r) for r in rows]

    async def delete_old(self, *, tasks_older_than: timedelta, jobs_older_than: timedelta, limit: int) -> int:
        """Forget settled tasks and ended jobs past their age (the latest job of each sync stays)."""
        async with self.pool.acquire() as conn:
            tasks = await conn.execute(
                """DELETE FROM dispatched_tasks WHERE task_id IN (
                       SELECT task_id FROM dispatched_tasks WHERE settled_at < now() - $1::interval LIMIT $2)""",
                tasks_older_than,
                limit,
            )
            jobs = await conn.execute(
                """DELETE FROM sync_jobs WHERE id IN (
                       SELECT j.id FROM sync_jobs AS j
                       WHERE j.status <> 'RUNNING' AND j.ended_at < now() - $1::interval
                         AND EXISTS (SELECT 1 FROM sync_jobs AS n WHERE n.sync_id = j.sync_id AND n.id > j.id)
                       LIMIT $2)""",
                jobs_older_than,
                limit,
            )
        return int(tasks.split()[-1]) + int(jobs.split()[-1])


__all__ = ["DispatchedTask", "JobsStore"]
