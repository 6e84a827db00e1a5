"""Applying a task's result: once per task however often it is reported, in steps that are each
repeatable, so a step that failed (or a crash between steps) is completed by trying again.

1. keep the first result reported (dispatched_tasks.result);
2. end the orchestrator task with it (SUCCEEDED with {"output"}, FAILED with {"error"});
3. end the sync job, by how the orchestrator task actually ended, and tell the server (last_sync_date);
4. publish the completion event;
5. mark the task settled and wake whoever waits for it in this process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from nango.jobs.errors import UnknownTask
from nango.jobs.events import CompletionPublisher, TaskEnded
from nango.jobs.models import SyncJobStatus, TaskCompletion
from nango.jobs.results import lost_completion, model_counts, orchestrator_output, sync_job_outcome
from nango.jobs.store import DispatchedTask, JobsStore
from nango.orchestrator.client import InvalidTransition, OrchestratorClient, Task, TaskNotFound
from nango.runner.client import FunctionType
from nango.server.client import ServerClient

log = logging.getLogger(__name__)


class Settler:
    def __init__(
        self,
        store: JobsStore,
        orchestrator: OrchestratorClient,
        server: ServerClient,
        publisher: CompletionPublisher,
    ) -> None:
        self.store = store
        self.orchestrator = orchestrator
        self.server = server
        self.publisher = publisher
        self._waiters: dict[str, asyncio.Future[None]] = {}

    def waiter(self, task_id: str) -> asyncio.Future[None]:
        """Resolved when this process settles the task, or learns that another one did."""
        return self._waiters.setdefault(task_id, asyncio.get_running_loop().create_future())

    def forget(self, task_id: str) -> None:
        self._waiters.pop(task_id, None)

    def waiting(self) -> list[str]:
        return list(self._waiters)

    def wake(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            waiter = self._waiters.pop(task_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def report(self, completion: TaskCompletion) -> None:
        """A result for a task (from its runner, or decided by jobs); only the first one counts."""
        task = await self.store.record_result(completion)
        if task is None:
            raise UnknownTask(f"jobs did not dispatch task {completion.task_id}")
        if not task.settled:
            await self.settle(task)

    async def settle_lost(self, task: DispatchedTask, ended: Task | None) -> None:
        """The orchestrator ended the task (or forgot it) and no result came: settle it as lost."""
        await self.report(lost_completion(task.task_id, ended))

    async def settle(self, task: DispatchedTask) -> None:
        """Apply the stored result of a task; every step may run again."""
        completion = task.result
        if completion is None:
            raise ValueError(f"task {task.task_id} has no result to settle")
        ended = await self._end_in_orchestrator(completion)
        sync_job = None
        if task.sync_job_id is not None:
            status, error = sync_job_outcome(completion, ended)
            sync_job = await self.store.finish_sync_job(
                task.sync_job_id, status, model_counts(completion.results), error
            )
            if task.args.kind is FunctionType.SYNC and task.args.sync_id is not None:
                await self.server.record_sync_run(
                    task.args.sync_id,
                    sync_job.id,
                    success=sync_job.status is SyncJobStatus.SUCCESS,
                    started_at=sync_job.started_at,
                )
        await self.publisher.publish(
            TaskEnded(task.task_id, task.args, completion.output, completion.error, sync_job, ended)
        )
        await self.store.mark_settled(task.task_id)
        self.wake([task.task_id])

    async def _end_in_orchestrator(self, completion: TaskCompletion) -> Task | None:
        """The task as it ended: with this result, or as the orchestrator had already ended it."""
        payload = orchestrator_output(completion)
        try:
            if completion.error is None:
                return await self.orchestrator.succeed(completion.task_id, payload)
            return (await self.orchestrator.fail(completion.task_id, payload)).task
        except (InvalidTransition, TaskNotFound):
            found = await self.orchestrator.search_tasks(ids=[completion.task_id], limit=1)
            ended = found[0] if found else None
            log.info(
                "task had already ended",
                extra={"task_id": completion.task_id, "state": ended.state.value if ended else None},
            )
            return ended


__all__ = ["Settler"]
