"""The jobs service's background loops: one dequeue loop per group pattern, each with its own bounded
concurrency, and the reconciler that settles tasks whose runner vanished."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from datetime import timedelta

from nango.errors import NangoError
from nango.jobs.dispatch import Dispatcher
from nango.jobs.settings import ProcessorLoop
from nango.jobs.settle import Settler
from nango.jobs.store import JobsStore
from nango.orchestrator.client import OrchestratorClient
from nango.process.periodic import Periodic

log = logging.getLogger(__name__)

_BACKOFF_MAX = 5.0


class DequeueLoop:
    """Long-polls the orchestrator for tasks of one group pattern while it has free slots, and runs
    each task it gets until its result is settled."""

    def __init__(
        self,
        config: ProcessorLoop,
        orchestrator: OrchestratorClient,
        dispatcher: Dispatcher,
        wait: timedelta,
    ) -> None:
        self.pattern = config.group_key_pattern
        self.concurrency = config.max_concurrency
        self.orchestrator = orchestrator
        self.dispatcher = dispatcher
        self.wait = wait
        self.stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self.stopping.clear()
        self._loop_task = asyncio.create_task(self._loop(), name=f"jobs-dequeue-{self.pattern}")

    async def stop_dequeuing(self) -> None:
        """No new task; an in-flight long-poll is abandoned (a task it had just taken expires and is retried)."""
        self.stopping.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def drain(self, grace: float) -> None:
        """Let running tasks finish for `grace` seconds, then stop waiting for the rest."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)
        for job in list(self._running):
            job.cancel()
        if self._running:
            await asyncio.wait(set(self._running))

    async def _loop(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                tasks = await self.orchestrator.dequeue(self.pattern, limit=free, wait=self.wait)
            except Exception as exc:
                failures += 1
                if not isinstance(exc, NangoError):
                    log.exception("dequeue failed", extra={"pattern": self.pattern})
                elif failures == 1:
                    log.warning("dequeue failed", extra={"pattern": self.pattern, "code": exc.instance_code})
                await asyncio.sleep(min(0.2 * 2**failures, _BACKOFF_MAX))
                continue
            if failures:
                log.info("dequeue works again", extra={"pattern": self.pattern})
                failures = 0
            for task in tasks:
                job = asyncio.create_task(self.dispatcher.run(task, self.stopping), name=f"jobs-task-{task.id}")
                self._running.add(job)
                job.add_done_callback(self._finished)

    def _finished(self, job: asyncio.Task[None]) -> None:
        self._running.discard(job)
        self._slot_freed.set()
        if not job.cancelled() and job.exception() is not None:
            log.error("task handler crashed", exc_info=job.exception())


class Reconciler(Periodic):
    """Every interval: settles tasks the orchestrator ended without a result from their runner
    (expired on heartbeat, cancelled), retries results whose settling failed half-way, wakes this
    process's waiters for tasks another replica settled, and now and then forgets old history."""

    name = "jobs-reconciler"
    batch = 500
    clean_every = 600.0
    clean_limit = 1000
    # a settled task is kept this long to recognise repeated reports from its runner
    tasks_kept = timedelta(days=1)

    def __init__(
        self,
        store: JobsStore,
        settler: Settler,
        orchestrator: OrchestratorClient,
        interval: timedelta,
        jobs_kept: timedelta,
    ) -> None:
        super().__init__(interval)
        self.store = store
        self.settler = settler
        self.orchestrator = orchestrator
        self.jobs_kept = jobs_kept
        self._cleaned_at = time.monotonic()

    async def tick(self) -> int:
        """Returns how many tasks it settled."""
        settled = 0
        tasks = await self.store.unsettled(self.batch, retry_after=self.interval)
        for task in (t for t in tasks if t.result is not None):
            settled += await self._settle(task.task_id, self.settler.settle(task))
        waiting = [t for t in tasks if t.result is None]
        if waiting:
            ids = [t.task_id for t in waiting]
            found = {t.id: t for t in await self.orchestrator.search_tasks(ids=ids, limit=len(ids))}
            for task in waiting:
                ended = found.get(task.task_id)
                if ended is None or ended.terminated:
                    settled += await self._settle(task.task_id, self.settler.settle_lost(task, ended))
        local = self.settler.waiting()
        if local:
            self.settler.wake(await self.store.settled_among(local))
        if time.monotonic() - self._cleaned_at >= self.clean_every:
            self._cleaned_at = time.monotonic()
            await self.store.delete_old(
                tasks_older_than=self.tasks_kept, jobs_older_than=self.jobs_kept, limit=self.clean_limit
            )
        return settled

    async def _settle(self, task_id: str, settling: Awaitable[None]) -> int:
        try:
            await settling
        except NangoError as exc:
            log.warning("could not settle a task yet", extra={"task_id": task_id, "code": exc.instance_code})
            return 0
        return 1


class Processor:
    """The dequeue loops and the reconciler, started and stopped together."""

    def __init__(self, loops: Sequence[DequeueLoop], reconciler: Reconciler) -> None:
        self.loops = list(loops)
        self.reconciler = reconciler

    def start(self) -> None:
        self.reconciler.start()
        for loop in self.loops:
            loop.start()

    async def stop(self, grace: float) -> None:
        """Stop dequeuing, give running tasks `grace` seconds to finish, then stop the reconciler."""
        await asyncio.gather(*(loop.stop_dequeuing() for loop in self.loops))
        await asyncio.gather(*(loop.drain(grace) for loop in self.loops))
        await self.reconciler.stop()


__all__ = ["DequeueLoop", "Processor", "Reconciler"]
