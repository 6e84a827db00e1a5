"""The orchestrator's background loops. Each sweep locks rows with SKIP LOCKED, so every replica
runs all of them at once without doing any piece of work twice."""

from __future__ import annotations

import logging
from datetime import timedelta

from nango.orchestrator.scheduler import Scheduler
from nango.process.periodic import Periodic

log = logging.getLogger(__name__)

# A tick drains at most this many batches, so one busy sweep cannot starve the event loop's other work.
MAX_BATCHES_PER_TICK = 10


class ExpiringDaemon(Periodic):
    """Expires tasks past one of their three timeouts, and retries those whose policy allows."""

    name = "orchestrator-expiring"
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


class SchedulingDaemon(Periodic):
    """Creates the task of every due schedule whose previous run has finished."""

    name = "orchestrator-scheduling"
    batch = 100

    def __init__(self, scheduler: Scheduler, interval: timedelta) -> None:
        super().__init__(interval)
        self._scheduler = scheduler

    async def tick(self) -> None:
        for _ in range(MAX_BATCHES_PER_TICK):
            if await self._scheduler.run_due_schedules(self.batch) < self.batch:
                return


class CleaningDaemon(Periodic):
    """Deletes tasks terminated long ago, except the last task of each schedule."""

    name = "orchestrator-cleaning"
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
