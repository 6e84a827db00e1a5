"""persist's background loops. Every replica runs them; work is claimed in the database first, so no
piece of it is done twice."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from nango.persist.records import RecordsCache
from nango.process.periodic import Periodic

log = logging.getLogger(__name__)

# A model whose payloads were all checked is looked at again after this long.
PRUNING_RECHECK = timedelta(hours=1)
MODELS_PER_TICK = 10


class PruningDaemon(Periodic):
    """Empties the payloads of records not modified for `older_than` (PERSIST_AUTO_PRUNING_DAYS); the
    records and their metadata stay, read with `pruned_at` set."""

    name = "persist-pruning"

    def __init__(self, records: RecordsCache, *, older_than: timedelta, interval: timedelta, limit: int) -> None:
        super().__init__(interval)
        self._records = records
        self._older_than = older_than
        self._limit = limit

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


__all__ = ["PruningDaemon"]
