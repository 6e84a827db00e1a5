"""Per-connection syncs and their schedules in the orchestrator.

A sync row is the control plane's record of "this sync runs for this connection"; its schedule,
named `environment:<env>:sync:<sync id>`, lives in the orchestrator. Every operation here is
idempotent (ensure / remove), so a deploy or a connection event that failed half-way is completed by
running it again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import timedelta

from nango.orchestrator.client import (
    OrchestratorClient,
    ScheduleNotFound,
    ScheduleSpec,
    ScheduleState,
    TaskGroup,
    TaskTimeouts,
)
from nango.sdk.frequency import parse_frequency
from nango.server.store.functions import FunctionRow, FunctionStore, SyncRow

log = logging.getLogger(__name__)

# reference §8.4: recurring syncs may wait an hour to start, run for a day, and must heartbeat
SYNC_TIMEOUTS = TaskTimeouts(
    created_to_started=timedelta(hours=1), started_to_completed=timedelta(hours=24), heartbeat=timedelta(minutes=5)
)


def schedule_name(sync: SyncRow) -> str:
    return f"environment:{sync.environment_id}:sync:{sync.id}"


def sync_group(environment_id: int) -> str:
    return f"sync:environment:{environment_id}"


class SyncScheduler:
    def __init__(
        self, store: FunctionStore, orchestrator: OrchestratorClient, *, heartbeat_timeout: timedelta | None = None
    ) -> None:
        self.store = store
        self.orchestrator = orchestrator
        # a sync whose runner stops heartbeating for this long expires (and its job ends as an error)
        self.timeouts = (
            SYNC_TIMEOUTS if heartbeat_timeout is None else replace(SYNC_TIMEOUTS, heartbeat=heartbeat_timeout)
        )

    def _spec(
        self, sync: SyncRow, function: FunctionRow, connection_id: str, *, state: ScheduleState = ScheduleState.STARTED
    ) -> ScheduleSpec:
        frequency = parse_frequency(sync.frequency or function.frequency or "every day")
        return ScheduleSpec(
            name=schedule_name(sync),
            group=TaskGroup(sync_group(sync.environment_id)),
            frequency=frequency,
            state=state,
            timeouts=self.timeouts,
            args={
                "type": "sync",
                "environment_id": sync.environment_id,
                "nango_connection_id": sync.connection_row_id,
                "connection_id": connection_id,
                "provider_config_key": function.provider_config_key,
                "function": function.name,
                "sync_id": sync.id,
                "variant": sync.variant,
            },
        )

    async def ensure(
        self, function: FunctionRow, connection_row_id: int, connection_id: str, *, variant: str = "base"
    ) -> SyncRow:
        """The sync of this function for this connection, created and scheduled if it was not."""
        sync, created = await self.store.insert_sync(
            str(uuid.uuid4()), function.environment_id, connection_row_id, function.id, function.name, variant
        )
        existing = await self.orchestrator.search_schedules(names=[schedule_name(sync)], limit=1)
        if created or not existing:
            await self.orchestrator.create_schedule(self._spec(sync, function, connection_id))
        elif function.frequency and not sync.frequency:
            await self.orchestrator.update_schedule_frequency(schedule_name(sync), parse_frequency(function.frequency))
        return sync

    async def remove(self, syncs: list[SyncRow]) -> None:
        """Delete the syncs and their schedules (a running task of theirs is cancelled)."""
        names = [schedule_name(s) for s in syncs]
        for name in names:
            try:
                await self.orchestrator.set_schedules_state([name], ScheduleState.DELETED)
            except ScheduleNotFound:
                log.info("schedule already gone", extra={"schedule": name})
        if syncs:
            await self.store.delete_syncs([s.id for s in syncs])

    async def remove_for_connection(self, connection_row_id: int) -> None:
        await self.remove(await self.store.syncs_of_connection(connection_row_id))

    async def set_frequency(self, sync: SyncRow, function: FunctionRow, frequency: str | None) -> timedelta:
        """A per-connection frequency, or back to the function's with None."""
        interval = parse_frequency(frequency or function.frequency or "every day")
        await self.store.set_sync_frequency(sync.id, frequency)
        await self.orchestrator.update_schedule_frequency(schedule_name(sync), interval)
        return interval
