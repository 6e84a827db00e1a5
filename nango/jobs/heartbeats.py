"""Relaying heartbeats to the orchestrator: those arriving within a short window share one call."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from nango.orchestrator.client import OrchestratorClient

# the most task ids the orchestrator takes in one HeartbeatTasks call
MAX_BATCH = 1000


class _Batch:
    def __init__(self) -> None:
        self.task_ids: set[str] = set()
        self.stopped: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()


class HeartbeatRelay:
    def __init__(self, orchestrator: OrchestratorClient, window: timedelta) -> None:
        self._orchestrator = orchestrator
        self._window = window.total_seconds()
        self._open: _Batch | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def beat(self, task_id: str) -> bool:
        """Report the task alive; True when the orchestrator says it is no longer STARTED (cancelled,
        expired or unknown) and its work should stop. Raises the orchestrator's error when it fails."""
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            flush = asyncio.create_task(self._flush(batch), name="jobs-heartbeat-flush")
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        batch.task_ids.add(task_id)
        stopped = await asyncio.shield(batch.stopped)
        return task_id in stopped

    async def _flush(self, batch: _Batch) -> None:
        await asyncio.sleep(self._window)
        self._open = None
        ids = sorted(batch.task_ids)
        stopped: list[str] = []
        try:
            for start in range(0, len(ids), MAX_BATCH):
                stopped += await self._orchestrator.heartbeat(ids[start : start + MAX_BATCH])
        except Exception as exc:
            batch.stopped.set_exception(exc)
            # every waiter re-raises it; this keeps asyncio from reporting it as never retrieved
            batch.stopped.exception()
            return
        batch.stopped.set_result(set(stopped))


__all__ = ["HeartbeatRelay"]
