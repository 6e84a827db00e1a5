"""Background loops of the server, safe with any number of replicas (each pass runs under a kv lock)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from nango.kv import KVStore
from nango.server.connections import ConnectionService
from nango.server.store.connections import ConnectionStore

log = logging.getLogger(__name__)


class _Periodic:
    """Runs `tick()` every `every_seconds` while holding `lock_key`, so one replica does each pass."""

    name = "periodic"
    lock_key = ""

    def __init__(self, kv: KVStore, every_seconds: float) -> None:
        self.kv = kv
        self.every = every_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                owner = f"{self.name}:{id(self)}"
                if await self.kv.try_acquire(self.lock_key, owner, ttl=self.every):
                    await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background pass failed", extra={"daemon": self.name})

    async def tick(self) -> None:
        raise NotImplementedError


class ConnectionKeepAlive(_Periodic):
    """Refreshes tokens that expire soon and exercises connections nobody read for a day, so
    refresh tokens stay alive and broken connections show their auth error early (§4.7)."""

    name = "connection-keepalive"
    lock_key = "lock:connectionCheck:cron"

    def __init__(self, connections: ConnectionService, kv: KVStore, *, every_seconds: float, limit: int) -> None:
        super().__init__(kv, every_seconds)
        self.connections = connections
        self.limit = limit

    async def tick(self) -> None:
        count = await self.connections.refresh_due(limit=self.limit, stale_after=timedelta(days=1))
        if count:
            log.info("connections kept alive", extra={"count": count})


class Housekeeping(_Periodic):
    """Purges soft-deleted connections after CRON_DELETE_OLD_CONNECTIONS_MAX_DAYS."""

    name = "housekeeping"
    lock_key = "lock:housekeeping:cron"

    def __init__(self, store: ConnectionStore, kv: KVStore, *, every_seconds: float, connections_max_days: int) -> None:
        super().__init__(kv, every_seconds)
        self.store = store
        self.connections_max_days = connections_max_days

    async def tick(self) -> None:
        purged = await self.store.purge_deleted(self.connections_max_days)
        if purged:
            log.info("deleted connections purged", extra={"count": purged})
