"""persist's background loops. Every replica runs them; work is claimed in the database first, so no
piece of it is done twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from nango.persist.records import RecordsCache

log = logging.getLogger(__name__)

# A model whose payloads were all checked is looked at again after this long.
PRUNING_RECHECK = timedelta(hours=1)
MODELS_PER_TICK = 10


class PruningDaemon:
    """Empties the payloads of records not modified for `older_than` (PERSIST_AUTO_PRUNING_DAYS); the
    records and their metadata stay, read with `pruned_at` set."""

    def __init__(self, records: RecordsCache, *, older_than: timedelta, interval: timedelta, limit: int) -> None:
        self._records = records
        self._older_than = older_than
        self._interval = interval
        self._limit = limit
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="persist-pruning")

    async def stop(self) -> None:
        """Let the current tick finish, then end the loop."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def tick(self) -> int:
        """Prune up to `limit` records in each of a few due models; returns how many were pruned."""
        cutoff = datetime.now(UTC) - self._older_than
        pruned = 0
        for scope in await self._records.store.claim_for_pruning(PRUNING_RECHECK, MODELS_PER_TICK):
            result = await self._records.prune_older_than(scope, cutoff, self._limit)
            pruned += result.count
            if result.has_more:
                await self._records.store.unclaim_for_pruning(scope)
        if pruned:
            log.info("record payloads pruned", extra={"count": pruned})
        return pruned

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("pruning tick failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval.total_seconds()):
                    await self._stopping.wait()


__all__ = ["PruningDaemon"]
