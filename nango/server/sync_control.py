"""Sync control on the public API (reference §3.6): trigger, start, pause, status, per-connection
frequency and variants.

A trigger runs the sync's own schedule now (orchestrator `RunSchedule`), so a sync never has two runs
at once and the schedule's state always describes the latest run. A reset or an emptied cache is done
here before the run (last_sync_date, the sync's checkpoints, its records) and announced to the run by
`full` / `empty_cache` in its task args: the schedule's args are replaced for the one run and put back
right after (`RunSchedule` copies them into the task it creates). When a run is already running, the
trigger joins it instead of starting another, as Nango's `schedules/run` does; a run still waiting
for a worker is replaced when the trigger resets.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nango.errors import InvalidBody, NangoError, NotFound, NotImplementedYet, RpcStatus, ServiceUnavailable, Timeout
from nango.jobs.client import JobsClient, SyncJob, SyncJobStatus
from nango.orchestrator.client import (
    InvalidTransition,
    OrchestratorClient,
    Schedule,
    ScheduleNotFound,
    ScheduleSpec,
    ScheduleState,
    TaskState,
)
from nango.persist.client import CheckpointConflict, PersistClient
from nango.sdk.frequency import InvalidFrequency, parse_frequency
from nango.server.errors import UnknownConnection, UnknownProviderConfig
from nango.server.functions import FunctionService
from nango.server.records import BASE_VARIANT, model_key
from nango.server.store.connections import ConnectionFilter, ConnectionRow
from nango.server.store.functions import FunctionRow, SyncRow
from nango.server.syncs import reconcile_schedule_name, schedule_name

log = logging.getLogger(__name__)

# reference §6.3: MAX_SYNCS_PER_CONNECTION; we count the variants of one sync on one connection
MAX_VARIANTS_PER_SYNC = 100
STATUS_BATCH = 500
_CLEAR_ROUNDS = 10_000


class NoSyncsFound(NangoError):
    rpc_status = RpcStatus.FAILED_PRECONDITION
    code = "no_syncs_found"
    http_status = 400
    default_message = "No syncs found given the inputs."


class UnknownSync(NangoError):
    rpc_status = RpcStatus.FAILED_PRECONDITION
    code = "unknown_sync"
    http_status = 400
    default_message = "Sync does not exist"


class InvalidVariant(NangoError):
    rpc_status = RpcStatus.FAILED_PRECONDITION
    code = "invalid_variant"
    http_status = 400
    default_message = 'The variant name "base" is protected'


class VariantExists(NangoError):
    rpc_status = RpcStatus.FAILED_PRECONDITION
    code = "sync_variant_already_exists"
    http_status = 400
    default_message = "This variant of the sync already exists for the connection"


class ResourceCapped(NangoError):
    rpc_status = RpcStatus.FAILED_PRECONDITION
    code = "resource_capped"
    http_status = 400
    default_message = "The limit of this resource is reached"


@dataclass(frozen=True)
class SyncRef:
    name: str
    variant: str = BASE_VARIANT


@dataclass(frozen=True)
class SyncTarget:
    """One sync of one connection, with the function it runs."""

    sync: SyncRow
    function: FunctionRow
    connection: ConnectionRow

    @property
    def schedule(self) -> str:
        return schedule_name(self.sync)

    def models(self) -> list[str]:
        return [model_key(m, self.sync.variant) for m in self.function.models]


@dataclass(frozen=True)
class SyncStatus:
    """What `GET /sync/status` reports for one sync of one connection (ReportedSyncJobStatus)."""

    target: SyncTarget
    status: str
    frequency: str | None
    next_scheduled_at: datetime | None
    finished_at: datetime | None
    job_type: str | None
    latest_result: dict[str, dict[str, int]] | None
    latest_execution_status: str | None
    record_count: dict[str, int]
    checkpoint: dict[str, Any] | None


def checkpoint_keys(sync: SyncRow, function: FunctionRow) -> list[str]:
    """The persist checkpoint keys a sync's runs write (nango.sdk's `TaskContext.checkpoint_key`)."""
    base = f"sync:{sync.name}:{sync.variant or BASE_VARIANT}"
    return [base, *(f"{base}:trackDeletes:{model_key(model, sync.variant)}" for model in function.models)]


def classify(job_status: str | None, schedule_state: ScheduleState | None) -> str:
    """Nango's sync status from the latest job's status and the schedule's state."""
    if job_status == SyncJobStatus.RUNNING:
        return "RUNNING"
    if schedule_state is ScheduleState.PAUSED:
        return "PAUSED"
    if schedule_state is ScheduleState.STARTED:
        if job_status == SyncJobStatus.STOPPED:
            return "ERROR"
        return job_status or "SUCCESS"
    return "STOPPED"


# what the latest run's task state says when jobs cannot tell
_TASK_EXECUTION_STATUS = {
    TaskState.STARTED: SyncJobStatus.RUNNING,
    TaskState.SUCCEEDED: SyncJobStatus.SUCCESS,
    TaskState.FAILED: SyncJobStatus.ERROR,
    TaskState.EXPIRED: SyncJobStatus.ERROR,
    TaskState.CANCELLED: SyncJobStatus.STOPPED,
}


class SyncControl:
    def __init__(
        self, functions: FunctionService, orchestrator: OrchestratorClient, persist: PersistClient, jobs: JobsClient
    ) -> None:
        self.functions = functions
        self.store = functions.store
        self.scheduler = functions.scheduler
        self.orchestrator = orchestrator
        self.persist = persist
        self.jobs = jobs

    # finding syncs

    async def connection(self, environment_id: int, provider_config_key: str, connection_id: str) -> ConnectionRow:
        row = await self.functions.connections.store.get_by_key(environment_id, provider_config_key, connection_id)
        if row is None:
            raise UnknownConnection()
        return row

    async def _sync_functions(self, environment_id: int, provider_config_key: str) -> dict[str, FunctionRow]:
        integration = await self.functions.integrations.find(environment_id, provider_config_key)
        if integration is None:
            raise UnknownProviderConfig()
        return {f.id: f for f in await self.store.of_integration(integration.id) if f.type == "sync"}

    async def targets(
        self, environment_id: int, provider_config_key: str, refs: Sequence[SyncRef], connection_id: str | None
    ) -> list[SyncTarget]:
        """The syncs named by `refs` (every sync when empty) of one connection, or of every connection
        of the integration when `connection_id` is None."""
        functions = await self._sync_functions(environment_id, provider_config_key)
        if connection_id is not None:
            connection = await self.connection(environment_id, provider_config_key, connection_id)
            connections = {connection.id: connection}
            syncs = await self.store.syncs_of_connection(connection.id)
        else:
            rows = await self.functions.connections.search(
                ConnectionFilter(environment_id=environment_id, integration_keys=[provider_config_key])
            )
            connections = {row.id: row for row in rows}
            syncs = [s for function_id in functions for s in await self.store.syncs_of_function(function_id)]
        wanted = {(r.name, r.variant) for r in refs}
        found = [
            SyncTarget(s, functions[s.function_id], connections[s.connection_row_id])
            for s in syncs
            if s.function_id in functions
            and s.connection_row_id in connections
            and (not wanted or (s.name, s.variant) in wanted)
        ]
        return sorted(found, key=lambda t: (t.connection.connection_id, t.sync.name, t.sync.variant))

    async def _required_targets(
        self, environment_id: int, provider_config_key: str, refs: Sequence[SyncRef], connection_id: str | None
    ) -> list[SyncTarget]:
        found = await self.targets(environment_id, provider_config_key, refs, connection_id)
        if not found:
            raise NoSyncsFound()
        return found

    # commands

    async def trigger(
        self,
        environment_id: int,
        provider_config_key: str,
        refs: Sequence[SyncRef],
        connection_id: str | None,
        *,
        reset: bool,
        empty_cache: bool,
    ) -> None:
        for target in await self._required_targets(environment_id, provider_config_key, refs, connection_id):
            if reset:
                await self.store.clear_last_sync_date(target.sync.id)
                await self._clear_checkpoints(target)
            if empty_cache:
                await self._clear_records(target)
            await self._run(target, full=reset, empty_cache=empty_cache)

    async def start(
        self, environment_id: int, provider_config_key: str, refs: Sequence[SyncRef], connection_id: str | None
    ) -> None:
        """Unpause the schedules, then run each now."""
        found = await self._required_targets(environment_id, provider_config_key, refs, connection_id)
        await self._set_state(found, ScheduleState.STARTED)
        for target in found:
            await self._run(target, full=False, empty_cache=False)

    async def pause(
        self, environment_id: int, provider_config_key: str, refs: Sequence[SyncRef], connection_id: str | None
    ) -> None:
        """Pause the schedules (a waiting or running run is cancelled)."""
        found = await self._required_targets(environment_id, provider_config_key, refs, connection_id)
        await self._set_state(found, ScheduleState.PAUSED)

    async def _set_state(self, targets: Sequence[SyncTarget], state: ScheduleState) -> None:
        for target in targets:
            try:
                await self.orchestrator.set_schedules_state([target.schedule], state)
            except ScheduleNotFound:
                await self._reschedule(target)
                await self.orchestrator.set_schedules_state([target.schedule], state)
            if target.function.reconcile_deletes:
                # a paused sync is not reconciled either; `_reschedule` above made a missing one
                with contextlib.suppress(ScheduleNotFound):
                    await self.orchestrator.set_schedules_state([reconcile_schedule_name(target.sync)], state)

    async def _reschedule(self, target: SyncTarget) -> None:
        """Recreate a schedule the orchestrator lost (its database reset, say)."""
        log.warning("sync schedule missing, recreating it", extra={"schedule": target.schedule})
        await self.scheduler.ensure(
            target.function, target.connection.id, target.connection.connection_id, variant=target.sync.variant
        )

    async def _schedule(self, target: SyncTarget) -> Schedule:
        found = await self.orchestrator.search_schedules(names=[target.schedule], limit=1)
        if not found:
            await self._reschedule(target)
            found = await self.orchestrator.search_schedules(names=[target.schedule], limit=1)
        if not found:
            raise NotFound(f"the schedule of sync {target.sync.name} could not be created", code="unknown_sync")
        return found[0]

    async def _run(self, target: SyncTarget, *, full: bool, empty_cache: bool) -> None:
        schedule = await self._schedule(target)
        if not full and not empty_cache:
            await self.orchestrator.run_schedule(schedule.name)
            return
        flags = {"full": full, "empty_cache": empty_cache}
        await self.orchestrator.create_schedule(_respec(schedule, {**schedule.args, **flags}))
        try:
            task = await self.orchestrator.run_schedule(schedule.name)
            if task.state is TaskState.CREATED and any(task.args.get(k) != v for k, v in flags.items()):
                # a run still waiting was created with the old args: replace it by one that resets
                with contextlib.suppress(InvalidTransition):
                    await self.orchestrator.cancel(task.id, "replaced by a reset")
                await self.orchestrator.run_schedule(schedule.name)
        finally:
            await self.orchestrator.create_schedule(_respec(schedule, dict(schedule.args)))

    async def _clear_checkpoints(self, target: SyncTarget) -> None:
        env, connection = target.sync.environment_id, target.connection.id
        for key in checkpoint_keys(target.sync, target.function):
            # a run writing the checkpoint meanwhile moves its version on: read it again and retry
            for _ in range(5):
                stored = await self.persist.get_checkpoint(env, connection, key)
                if stored is None or stored.deleted_at is not None:
                    break
                with contextlib.suppress(CheckpointConflict):
                    await self.persist.delete_checkpoint(env, connection, key, expected_version=stored.version)
                    break

    async def _clear_records(self, target: SyncTarget) -> None:
        for _ in range(_CLEAR_ROUNDS):
            result = await self.persist.clear_records(target.sync.environment_id, target.connection.id, target.models())
            if not result.has_more:
                return

    # status

    async def status(
        self, environment_id: int, provider_config_key: str, refs: Sequence[SyncRef], connection_id: str | None
    ) -> list[SyncStatus]:
        found = await self.targets(environment_id, provider_config_key, refs, connection_id)
        statuses = []
        # the orchestrator and jobs take up to 1,000 names or ids per call
        for start in range(0, len(found), STATUS_BATCH):
            statuses += await self._statuses(environment_id, found[start : start + STATUS_BATCH])
        return statuses

    async def _statuses(self, environment_id: int, found: list[SyncTarget]) -> list[SyncStatus]:
        names = [t.schedule for t in found]
        schedules = {s.name: s for s in await self.orchestrator.search_schedules(names=names, limit=len(names))}
        jobs = await self._latest_jobs([t.sync.id for t in found])
        finished = await self._finished_runs(schedules.values()) if jobs is None else {}
        counts = await self._record_counts(environment_id, found)
        statuses = []
        for target in found:
            schedule = schedules.get(target.schedule)
            job = jobs.get(target.sync.id) if jobs is not None else None
            statuses.append(
                await self._status(target, schedule, job, jobs is not None, finished, counts.get(target.connection.id))
            )
        return statuses

    async def _status(
        self,
        target: SyncTarget,
        schedule: Schedule | None,
        job: SyncJob | None,
        jobs_answered: bool,
        finished: dict[str, datetime],
        counts: dict[str, int] | None,
    ) -> SyncStatus:
        state = schedule.state if schedule is not None else None
        last_task = schedule.last_scheduled_task_state if schedule is not None else None
        if jobs_answered:
            execution: str | None = job.status.value if job is not None else None
            finished_at = job.ended_at if job is not None else None
        else:
            mapped = _TASK_EXECUTION_STATUS.get(last_task) if last_task is not None else None
            execution = mapped.value if mapped is not None else None
            finished_at = finished.get(schedule.last_scheduled_task_id or "") if schedule is not None else None
        # the orchestrator knows a run started before jobs has written its job
        status = classify("RUNNING" if last_task is TaskState.STARTED else execution, state)
        checkpoint = await self.persist.get_checkpoint(
            target.sync.environment_id, target.connection.id, checkpoint_keys(target.sync, target.function)[0]
        )
        models = counts or {}
        return SyncStatus(
            target=target,
            status=status,
            frequency=target.sync.frequency or target.function.frequency,
            next_scheduled_at=schedule.next_execution_at
            if schedule is not None and state is ScheduleState.STARTED
            else None,
            finished_at=finished_at,
            job_type=job.type.value if job is not None else None,
            latest_result={
                r.model.partition("::")[0]: {"added": r.added, "updated": r.updated, "deleted": r.deleted}
                for r in job.results
            }
            if job is not None
            else None,
            latest_execution_status=execution,
            record_count={m: models.get(model_key(m, target.sync.variant), 0) for m in target.function.models},
            checkpoint=checkpoint.checkpoint if checkpoint is not None and checkpoint.deleted_at is None else None,
        )

    async def _latest_jobs(self, sync_ids: list[str]) -> dict[str, SyncJob] | None:
        """The latest job of each sync; None when jobs cannot answer (not running, or too old to know)."""
        try:
            found = await self.jobs.list_sync_jobs(sync_ids, latest_only=True, limit=len(sync_ids))
        except (NotImplementedYet, ServiceUnavailable, Timeout) as exc:
            log.info("sync status without jobs", extra={"reason": exc.instance_code})
            return None
        latest: dict[str, SyncJob] = {}
        for job in found:
            latest.setdefault(job.sync_id, job)
        return latest

    async def _finished_runs(self, schedules: Any) -> dict[str, datetime]:
        """When each schedule's last run ended, from the orchestrator (used when jobs cannot tell)."""
        ids = [s.last_scheduled_task_id for s in schedules if s.last_scheduled_task_id]
        if not ids:
            return {}
        tasks = await self.orchestrator.search_tasks(ids=ids, limit=len(ids))
        return {t.id: t.last_state_transition_at for t in tasks if t.terminated}

    async def _record_counts(self, environment_id: int, targets: list[SyncTarget]) -> dict[int, dict[str, int]]:
        connection_ids = sorted({t.connection.id for t in targets})
        models = sorted({m for t in targets for m in t.models()})
        counts: dict[int, dict[str, int]] = {}
        for count in await self.persist.count_records(environment_id, connection_ids, models):
            counts.setdefault(count.connection_id, {})[count.model] = count.count
        return counts

    # frequency and variants

    async def set_frequency(
        self,
        environment_id: int,
        provider_config_key: str,
        connection_id: str,
        name: str,
        variant: str,
        frequency: str | None,
    ) -> str | None:
        """Override the sync's frequency for this connection (None: back to the function's); returns the
        frequency now in force."""
        connection = await self.connection(environment_id, provider_config_key, connection_id)
        sync = await self.store.find_sync(connection.id, name, variant)
        function = await self.store.get(sync.function_id) if sync is not None else None
        if sync is None or function is None:
            raise UnknownSync()
        if frequency is not None:
            try:
                parse_frequency(frequency)
            except InvalidFrequency:
                raise InvalidBody("Sync interval is invalid") from None
        try:
            await self.scheduler.set_frequency(sync, function, frequency)
        except ScheduleNotFound:
            await self._reschedule(SyncTarget(sync, function, connection))
            await self.scheduler.set_frequency(sync, function, frequency)
        return frequency or function.frequency

    async def create_variant(
        self, environment_id: int, provider_config_key: str, connection_id: str, name: str, variant: str
    ) -> SyncRow:
        if variant.lower() == BASE_VARIANT:
            raise InvalidVariant(f'Variant name "{variant}" is protected.')
        connection = await self.connection(environment_id, provider_config_key, connection_id)
        existing = [s for s in await self.store.syncs_of_connection(connection.id) if s.name == name]
        if any(s.variant == variant for s in existing):
            raise VariantExists()
        if len(existing) >= MAX_VARIANTS_PER_SYNC:
            raise ResourceCapped(
                f"Maximum number of variants per sync and connection ({MAX_VARIANTS_PER_SYNC}) reached"
            )
        function = next(
            (f for f in (await self._sync_functions(environment_id, provider_config_key)).values() if f.name == name),
            None,
        )
        if function is None:
            raise UnknownSync()
        return await self.scheduler.ensure(function, connection.id, connection.connection_id, variant=variant)

    async def delete_variant(
        self, environment_id: int, provider_config_key: str, connection_id: str, name: str, variant: str
    ) -> None:
        if variant.lower() == BASE_VARIANT:
            raise InvalidVariant(f'Cannot delete protected variant "{variant}".')
        connection = await self.connection(environment_id, provider_config_key, connection_id)
        sync = await self.store.find_sync(connection.id, name, variant)
        if sync is None:
            raise NotFound(f"No variant {variant} of sync {name} for this connection")
        await self.scheduler.remove([sync])


def _respec(schedule: Schedule, args: dict[str, Any]) -> ScheduleSpec:
    """The schedule as it is (grid, state, timeouts) with other args; replacing it keeps its next run."""
    return ScheduleSpec(
        name=schedule.name,
        group=schedule.group,
        frequency=schedule.frequency,
        args=args,
        state=schedule.state,
        starts_at=schedule.starts_at,
        retry_max=schedule.retry_max,
        timeouts=schedule.timeouts,
    )
