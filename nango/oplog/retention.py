"""The retention daemon: times out operations left open and deletes old ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nango.oplog.store import LogStore

log = logging.getLogger(__name__)


class LogRetention:
    """Every `interval` seconds: marks open operations past expires_at as `timeout`, then deletes
    operations and messages older than `retention_days`. Safe to run on every replica at once."""

    def __init__(self, store: LogStore, *, retention_days: int, interval: float = 300.0) -> None:
        self._store = store
        self._retention_days = retention_days
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> tuple[int, int]:
        """(operations timed out, operations deleted)."""
        timed_out = await self._store.timeout_expired()
        deleted = await self._store.delete_older_than(self._retention_days)
        if timed_out or deleted:
            log.info("operations log retention", extra={"timed_out": timed_out, "deleted": deleted})
        return timed_out, deleted

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="oplog-retention")

    async def stop(self) -> None:
        # Each step is its own short transaction, so cancelling mid-way loses nothing.
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("operations log retention failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self._interval)


__all__ = ["LogRetention"]
