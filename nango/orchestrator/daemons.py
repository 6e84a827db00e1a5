"""The orchestrator's background loops. Each sweep locks rows with SKIP LOCKED, so every replica
runs all of them at once without doing any piece of work twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from datetime import timedelta

from nango.orchestrator.scheduler import Scheduler

log = logging.getLogger(__name__)

# A tick drains at most this many batches, so one busy sweep cannot starve the event loop's other work.
MAX_BATCHES_PER_TICK = 10


class Daemon(ABC):
    """Runs `tick()` every `interval` until stopped; a failed tick is logged and the loop goes on."""

    name = "daemon"

    def __init__(self, interval: timedelta) -> None:
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def tick(self) -> None: ...

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=f"orchestrator-{self.name}")

    async def stop(self) -> None:
        """Let the current tick finish, then end the loop."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("daemon tick failed", extra={"daemon": self.name})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval.total_seconds()):
                    await self._stopping.wait()


class ExpiringDaemon(Daemon):
    """Expires tasks past one of their three timeouts, and retries those whose policy allows."""

    name = "expiring"
    batch = 1000

    def __init__(self, scheduler: Scheduler, interval: timedelta) -> None:
        super().__init__(interval)
        self._scheduler = scheduler

    async def tick(self) -> None:
        for _ in range(MAX_BATCHES_PER_TICK):
            expired = await self._scheduler.expire_due(self.batch)
            if expired:
                log.info("tasks expired", extra={"count": expired})
            if expired < self.batch:
                return


class SchedulingDaemon(Daemon):
    """Creates the task of every due schedule whose previous run has finished."""

    name = "scheduling"
    batch = 100

    def __init__(self, scheduler: Scheduler, interval: timedelta) -> None:
        super().__init__(interval)
        self._scheduler = scheduler

    async def tick(self) -> None:
        for _ in range(MAX_BATCHES_PER_TICK):
            if await self._scheduler.run_due_schedules(self.batch) < self.batch:
                return


class CleaningDaemon(Daemon):
    """Deletes tasks terminated long ago, except the last task of each schedule."""

    name = "cleaning"
    batch = 1000

    def __init__(self, scheduler: Scheduler, interval: timedelta, older_than: timedelta) -> None:
        super().__init__(interval)
        self._scheduler = scheduler
        self._older_than = older_than

    async def tick(self) -> None:
        for _ in range(MAX_BATCHES_PER_TICK):
            deleted = await self._scheduler.clean(self._older_than, self.batch)
            if deleted:
                log.info("old tasks deleted", extra={"count": deleted})
            if deleted < self.batch:
                return
