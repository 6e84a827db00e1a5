"""The runner's background loop: announcing itself to jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nango.errors import NangoError, NotImplementedYet
from nango.jobs.client import JobsClient

log = logging.getLogger(__name__)

# re-announced this often, so a restarted jobs learns about this runner again
REGISTER_EVERY = 60.0
RETRY_AFTER = 5.0


class Registration:
    """Calls RegisterRunner at start and every minute; retries every few seconds until jobs answers."""

    def __init__(self, jobs: JobsClient, node_id: str, url: str, capacity: int) -> None:
        self.jobs = jobs
        self.node_id = node_id
        self.url = url
        self.capacity = capacity
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="runner-registration")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _loop(self) -> None:
        failing = False
        while not self._stopping.is_set():
            wait = REGISTER_EVERY
            try:
                await self.jobs.register_runner(self.node_id, self.url, self.capacity)
                if failing:
                    log.info("registered with jobs", extra={"node_id": self.node_id})
                failing = False
            except NotImplementedYet:
                if not failing:
                    log.info("jobs does not register runners yet", extra={"node_id": self.node_id})
                failing = True
            except NangoError as exc:
                if not failing:
                    log.warning("could not register with jobs", extra={"code": exc.instance_code})
                failing, wait = True, RETRY_AFTER
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stopping.wait()


__all__ = ["Registration"]
