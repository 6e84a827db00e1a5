"""One dequeued task, from its arguments to a runner: resolve the function, record the dispatch (and
the sync job), empty the cache when asked, mint the task token, start it on a runner and wait until
its result is settled. Until a runner takes it, jobs heartbeats the task itself; after that only the
runner's heartbeats keep it alive, so a runner that vanishes loses the task to expiry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nango.errors import NangoError, ServiceUnavailable, Timeout
from nango.grpckit import TaskScope, mint_task_token
from nango.jobs.args import SYNC_KINDS, Bundle, TaskArgs, parse_task_args
from nango.jobs.errors import FunctionDisabled, InvalidTaskArgs
from nango.jobs.heartbeats import HeartbeatRelay
from nango.jobs.models import FunctionFailure, SyncJob, SyncJobType, TaskCompletion
from nango.jobs.results import failure_json, model_name, sync_job_type
from nango.jobs.settle import Settler
from nango.jobs.store import JobsStore
from nango.orchestrator.client import InvalidTransition, OrchestratorClient, Task, TaskNotFound
from nango.persist.client import PersistClient
from nango.runner.client import ConnectionContext, FunctionRef, FunctionType, RunnerClient, SyncContext, TaskStart
from nango.server.client import FunctionConfig, ServerClient

log = logging.getLogger(__name__)

# jobs heartbeats a task it holds this many times per heartbeat timeout, within these bounds (seconds)
_HOLD_BEATS_PER_TIMEOUT = 3
_HOLD_INTERVAL_MIN, _HOLD_INTERVAL_MAX = 0.1, 30.0


@dataclass(frozen=True)
class _Plan:
    """What the server says about the function to run."""

    function: FunctionConfig
    provider: str = ""
    environment_name: str = ""
    end_user: dict[str, Any] | None = None
    last_sync_date: datetime | None = None
    job_type: SyncJobType | None = None


def _carried(args: TaskArgs, bundle: Bundle) -> FunctionConfig:
    return FunctionConfig(
        id=bundle.id,
        environment_id=args.environment_id,
        provider_config_key=args.provider_config_key,
        name=args.function,
        type=args.kind.value,
        version=bundle.version,
        bundle_key=bundle.key,
        bundle_sha256=bundle.sha256,
        models=(),
        track_deletes=False,
        auto_start=False,
        frequency="",
        webhook_subscriptions=(),
        input_json_schema=None,
        models_json_schema={},
        enabled=True,
    )


def _failure(error: NangoError) -> FunctionFailure:
    return FunctionFailure(error.instance_code, error.message, error.status, error.payload)


def hold_interval(heartbeat_timeout: timedelta) -> float:
    """How often jobs heartbeats a task it holds, so that it never expires while held."""
    interval = heartbeat_timeout.total_seconds() / _HOLD_BEATS_PER_TIMEOUT
    return min(max(interval, _HOLD_INTERVAL_MIN), _HOLD_INTERVAL_MAX)


def input_json(value: Any) -> bytes:
    return b"" if value is None else json.dumps(value, separators=(",", ":")).encode()


class Dispatcher:
    def __init__(
        self,
        *,
        store: JobsStore,
        settler: Settler,
        relay: HeartbeatRelay,
        orchestrator: OrchestratorClient,
        server: ServerClient,
        runner: RunnerClient,
        persist: PersistClient,
        secret: str,
        runner_retry: timedelta,
    ) -> None:
        self.store = store
        self.settler = settler
        self.relay = relay
        self.orchestrator = orchestrator
        self.server = server
        self.runner = runner
        self.persist = persist
        self._secret = secret
        self._runner_retry = runner_retry.total_seconds()

    async def run(self, task: Task, stopping: asyncio.Event) -> None:
        """Handle the task until its result is settled. Cancelling this leaves a started task to its
        runner: the runner's report settles it later, through any jobs replica."""
        try:
            args = parse_task_args(task.args)
        except InvalidTaskArgs as exc:
            log.warning("task refused", extra={"task_id": task.id, "error": exc.message})
            await self._fail_in_orchestrator(task.id, _failure(exc))
            return
        settled = self.settler.waiter(task.id)
        try:
            failure = await self._dispatch(task, args, stopping)
            if failure is not None:
                await self.settler.report(TaskCompletion(task.id, error=failure))
            await settled
        except NangoError as exc:
            log.warning("task could not be handled", extra={"task_id": task.id, "code": exc.instance_code})
            await self._fail_in_orchestrator(task.id, _failure(exc))
        except Exception:
            log.exception("task could not be handled", extra={"task_id": task.id})
            await self._fail_in_orchestrator(task.id, FunctionFailure("script_internal_error", "jobs failed the task"))
        finally:
            self.settler.forget(task.id)

    async def _dispatch(self, task: Task, args: TaskArgs, stopping: asyncio.Event) -> FunctionFailure | None:
        """Start the task on a runner; the failure to settle it with when that cannot be done."""
        job: SyncJob | None = None
        if args.sync_id is None:
            # no sync job to open: the task is recorded while the server is asked what to run
            planned, _ = await asyncio.gather(
                self._plan_or_failure(args, first_attempt=task.retry_count == 0), self.store.dispatch(task.id, args)
            )
            if isinstance(planned, FunctionFailure):
                return planned
            plan = planned
        else:
            try:
                plan = await self._plan(args)
            except NangoError as exc:
                await self.store.dispatch(task.id, args)
                return _failure(exc)
            _, job = await self.store.dispatch(task.id, args, plan.job_type)
        lost = asyncio.Event()
        holder = asyncio.create_task(self._hold(task, lost), name=f"jobs-hold-{task.id}")
        try:
            if args.empty_cache and args.kind in SYNC_KINDS:
                await self._empty_cache(args, plan.function)
            return await self._start(self._task_start(task, args, plan, job), stopping, lost)
        except NangoError as exc:
            return _failure(exc)
        finally:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holder

    async def _plan_or_failure(self, args: TaskArgs, *, first_attempt: bool) -> _Plan | FunctionFailure:
        bundle = args.bundle
        if bundle is not None and first_attempt:
            # an action's first attempt runs what the server resolved when it was triggered (it checked
            # the function was enabled); a retry asks again, the function may have been redeployed since
            return _Plan(function=_carried(args, bundle))
        try:
            return await self._plan(args)
        except NangoError as exc:
            return _failure(exc)

    async def _plan(self, args: TaskArgs) -> _Plan:
        if args.sync_id is not None:
            context = await self.server.get_sync_run_context(args.sync_id)
            plan = _Plan(
                function=context.function,
                provider=context.connection.provider,
                environment_name=context.environment_name,
                end_user=context.connection.end_user,
                last_sync_date=context.sync.last_sync_date,
                # a reconcile pass is no sync job: no history, last_sync_date and checkpoints left alone
                job_type=None if args.reconcile else sync_job_type(args, context.sync.last_sync_date),
            )
        else:
            function = await self.server.get_function_config(
                args.environment_id, args.provider_config_key, args.function, args.kind.value
            )
            plan = _Plan(function=function)
        if not plan.function.enabled:
            raise FunctionDisabled(f"the function {plan.function.name} is disabled")
        return plan

    def _task_start(self, task: Task, args: TaskArgs, plan: _Plan, job: SyncJob | None) -> TaskStart:
        function = plan.function
        # the token lives as long as the orchestrator lets the task run
        expires_at = (task.last_state_transition_at + task.timeouts.started_to_completed).timestamp()
        token = mint_task_token(
            self._secret, TaskScope(task.id, args.environment_id, args.nango_connection_id, expires_at)
        )
        sync = None
        if job is not None and args.sync_id is not None:
            sync = SyncContext(
                sync_id=args.sync_id,
                sync_job_id=str(job.id),
                variant=args.variant,
                last_sync_date=None if args.full else plan.last_sync_date,
                track_deletes=function.track_deletes and args.kind is FunctionType.SYNC,
            )
        elif args.reconcile and args.sync_id is not None:
            sync = SyncContext(sync_id=args.sync_id, variant=args.variant, reconcile=True)
        return TaskStart(
            task_id=task.id,
            type=args.kind,
            function=FunctionRef(function.name, function.version, function.bundle_key, function.bundle_sha256),
            connection=ConnectionContext(
                environment_id=args.environment_id,
                nango_connection_id=args.nango_connection_id,
                connection_id=args.connection_id,
                provider_config_key=args.provider_config_key,
                provider=plan.provider,
                environment_name=plan.environment_name,
                end_user=plan.end_user,
            ),
            task_token=token,
            sync=sync,
            input_json=input_json(args.input),
            activity_log_id=args.activity_log_id,
            attempt=task.retry_count + 1,
        )

    async def _empty_cache(self, args: TaskArgs, function: FunctionConfig) -> None:
        models = [model_name(m, args.variant) for m in function.models]
        # with no model ClearRecords would clear every model of the connection
        if not models:
            return
        while (await self.persist.clear_records(args.environment_id, args.nango_connection_id, models)).has_more:
            pass

    async def _start(self, start: TaskStart, stopping: asyncio.Event, lost: asyncio.Event) -> FunctionFailure | None:
        """None once a runner took the task; a failure when none can."""
        while True:
            try:
                if await self.runner.start_task(start):
                    return None
            except (ServiceUnavailable, Timeout) as exc:
                return FunctionFailure("runner_unavailable", f"no runner took the task: {exc.message}", 503)
            if lost.is_set():
                return FunctionFailure("script_aborted", "the task ended before a runner took it", 410)
            if stopping.is_set():
                return FunctionFailure("script_aborted", "jobs stopped before a runner took the task", 410)
            # every runner is full: ask again shortly (jobs heartbeats the task meanwhile)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._runner_retry):
                    await stopping.wait()

    async def _hold(self, task: Task, lost: asyncio.Event) -> None:
        """Heartbeat a task jobs holds; sets `lost` when the orchestrator says it ended."""
        interval = hold_interval(task.timeouts.heartbeat)
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.relay.beat(task.id):
                    lost.set()
                    return
            except NangoError as exc:
                log.warning("heartbeat failed", extra={"task_id": task.id, "code": exc.instance_code})

    async def _fail_in_orchestrator(self, task_id: str, failure: FunctionFailure) -> None:
        """For a task jobs cannot record: fail it so its retry policy applies."""
        try:
            await self.orchestrator.fail(task_id, {"error": failure_json(failure)})
        except (InvalidTransition, TaskNotFound):
            pass
        except NangoError as exc:
            log.error("could not fail a task", extra={"task_id": task_id, "code": exc.instance_code})


__all__ = ["Dispatcher", "hold_interval", "input_json"]
