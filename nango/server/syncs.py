"""Per-connection syncs and their schedules in the orchestrator.

A sync row is the control plane's record of "this sync runs for this connection"; its schedule,
named `environment:<env>:sync:<sync id>`, lives in the orchestrator. A sync whose function sets
`reconcile_deletes` has a second schedule, `<that name>:reconcile`, whose runs carry `reconcile: true`
(docs/functions.md): its first run falls one reconcile interval after the schedule is made. Every
operation here is idempotent (ensure / remove), so a deploy or a connection event that failed half-way
is completed by running it again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from nango.orchestrator.client import (
    OrchestratorClient,
    Schedule,
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


def reconcile_schedule_name(sync: SyncRow) -> str:
    return f"{schedule_name(sync)}:reconcile"


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

    def _reconcile_spec(
        self, sync: SyncRow, function: FunctionRow, connection_id: str, interval: timedelta, state: ScheduleState
    ) -> ScheduleSpec:
        main = self._spec(sync, function, connection_id, state=state)
        return replace(
            main,
            name=reconcile_schedule_name(sync),
            frequency=interval,
            starts_at=datetime.now(UTC) + interval,
            args={**main.args, "reconcile": True},
        )

    async def ensure(
        self, function: FunctionRow, connection_row_id: int, connection_id: str, *, variant: str = "base"
    ) -> SyncRow:
        """The sync of this function for this connection, created and scheduled if it was not."""
        sync, created = await self.store.insert_sync(
            str(uuid.uuid4()), function.environment_id, connection_row_id, function.id, function.name, variant
        )
        names = [schedule_name(sync), reconcile_schedule_name(sync)]
        found = {s.name: s for s in await self.orchestrator.search_schedules(names=names, limit=len(names))}
        existing = found.get(schedule_name(sync))
        if created or existing is None:
            await self.orchestrator.create_schedule(self._spec(sync, function, connection_id))
        elif function.frequency and not sync.frequency:
            await self.orchestrator.update_schedule_frequency(schedule_name(sync), parse_frequency(function.frequency))
        state = existing.state if existing is not None and not created else ScheduleState.STARTED
        await self._ensure_reconcile(sync, function, connection_id, found.get(names[1]), state)
        return sync

    async def _ensure_reconcile(
        self,
        sync: SyncRow,
        function: FunctionRow,
        connection_id: str,
        existing: Schedule | None,
        state: ScheduleState,
    ) -> None:
        """The reconcile schedule when the function asks for one (at its interval), none otherwise."""
        if not function.reconcile_deletes:
            if existing is not None:
                await self._delete_schedules([existing.name])
            return
        interval = parse_frequency(function.reconcile_deletes)
        if existing is None:
            await self.orchestrator.create_schedule(
                self._reconcile_spec(sync, function, connection_id, interval, state)
            )
        elif existing.frequency != interval:
            await self.orchestrator.update_schedule_frequency(existing.name, interval)

    async def _delete_schedules(self, names: list[str]) -> None:
        for name in names:
            try:
                await self.orchestrator.set_schedules_state([name], ScheduleState.DELETED)
            except ScheduleNotFound:
                log.info("schedule already gone", extra={"schedule": name})

    async def remove(self, syncs: list[SyncRow]) -> None:
        """Delete the syncs and their schedules (a running task of theirs is cancelled)."""
        await self._delete_schedules([name for s in syncs for name in (schedule_name(s), reconcile_schedule_name(s))])
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
