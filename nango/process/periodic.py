"""A background loop: `tick()` at start, then every `interval`, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from datetime import timedelta

log = logging.getLogger(__name__)


class Periodic(ABC):
    """Runs `tick()` now and then every `interval` until `stop()`; a failed tick is logged and the
    loop goes on. `stop()` lets the tick under way finish."""

    name = "periodic"

    def __init__(self, interval: timedelta) -> None:
        self.interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def tick(self) -> object: ...

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=self.name)

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
                log.exception("background tick failed", extra={"daemon": self.name})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval.total_seconds()):
                    await self._stopping.wait()


__all__ = ["Periodic"]
