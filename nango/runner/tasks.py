"""Running tasks: accept, fetch the bundle, fork a worker, supervise it (heartbeats, wall time, abort),
decide the outcome and report it to jobs. Bundle inspection runs in a throwaway worker the same way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta

from nango.errors import Forbidden, InvalidRequest, NangoError, NotImplementedYet
from nango.grpckit import read_task_token
from nango.jobs.client import FunctionFailure, JobsClient, ModelResult, TaskCompletion, TaskTelemetry
from nango.oplog import Message
from nango.persist.client import PersistClient
from nango.runner.bundles import BundleCache
from nango.runner.models import ErrorType, FunctionSpec, FunctionType, RunnerStatus, TaskStart
from nango.runner.settings import RunnerSettings
from nango.runner.wire import (
    Failure,
    InspectBundle,
    InspectOutcome,
    Limits,
    RecordsChanged,
    RunTask,
    TaskOutcome,
    WireError,
    read_message,
)
from nango.runner.workers import ExitStatus, Templates, Worker, Zygote

log = logging.getLogger(__name__)

# how long a worker that sent its outcome may take to exit before it is killed
_EXIT_GRACE = 5.0
# how long a result is offered to jobs before the runner gives up (the task then expires and is retried)
_REPORT_WINDOW = 60.0
_SPEC_TYPES = {"sync": FunctionType.SYNC, "action": FunctionType.ACTION, "on-event": FunctionType.ON_EVENT}


@dataclass(eq=False)
class RunningTask:
    start: TaskStart
    wall_limit: float
    started: float = field(default_factory=time.monotonic)
    worker: Worker | None = None
    # why the runner ended the worker: aborted, stopped (jobs said so), timeout, shutdown
    stop_reason: str | None = None
    stop_detail: str = ""
    counts: dict[str, list[int]] = field(default_factory=dict)
    job: asyncio.Task[None] | None = None
    # its one CompleteTask is sent (or being sent): it no longer counts as running, though its worker may
    # still be exiting
    reported: bool = False

    def stop(self, reason: str, detail: str = "") -> None:
        if self.stop_reason is None:
            self.stop_reason, self.stop_detail = reason, detail
        if self.worker is not None:
            self.worker.kill()

    def remaining(self) -> float:
        return max(self.wall_limit - (time.monotonic() - self.started), 0.0)

    def record(self, change: RecordsChanged) -> None:
        counts = self.counts.setdefault(change.model, [0, 0, 0])
        counts[0] += change.added
        counts[1] += change.updated
        counts[2] += change.deleted


def spec_from_dict(data: dict[str, object]) -> FunctionSpec:
    def text(name: str) -> str:
        return str(data.get(name) or "")

    def strings(name: str) -> tuple[str, ...]:
        value = data.get(name) or []
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    schemas = data.get("models_json_schema")
    input_schema, output_schema = data.get("input_json_schema"), data.get("output_json_schema")
    return FunctionSpec(
        name=text("name"),
        type=_SPEC_TYPES[text("type")],
        description=text("description"),
        version=text("version"),
        module=text("module"),
        attribute=text("attribute"),
        frequency=text("frequency"),
        auto_start=bool(data.get("auto_start")),
        track_deletes=bool(data.get("track_deletes")),
        models=strings("models"),
        models_json_schema=schemas if isinstance(schemas, dict) else {},
        input_json_schema=input_schema if isinstance(input_schema, dict) else None,
        output_json_schema=output_schema if isinstance(output_schema, dict) else None,
        webhook_subscriptions=strings("webhook_subscriptions"),
        event=text("event"),
        scopes=strings("scopes"),
        reconcile_deletes=text("reconcile_deletes"),
    )


class TaskManager:
    def __init__(
        self,
        settings: RunnerSettings,
        zygote: Zygote,
        bundles: BundleCache,
        jobs: JobsClient,
        persist: PersistClient,
    ) -> None:
        self.settings = settings
        self.zygote = zygote
        self.bundles = bundles
        self.jobs = jobs
        self.persist = persist
        self.node_id = settings.resolved_node_id()
        self.limits = Limits(settings.memory_limit_mb, settings.cpu_limit_seconds)
        self.templates = Templates(
            zygote, self.limits, capacity=settings.template_count, start_timeout=settings.inspect_timeout_seconds
        )
        self._secret = settings.internal_token.get_secret_value()
        self._running: dict[str, RunningTask] = {}
        self._draining = False

    def status(self) -> RunnerStatus:
        return RunnerStatus(self.node_id, self.settings.capacity, tuple(self._unreported()))

    def _unreported(self) -> list[str]:
        return [task_id for task_id, running in self._running.items() if not running.reported]

    # tasks

    def start(self, task: TaskStart) -> bool:
        """Accept a task (it runs in the background), or refuse it when full or stopping."""
        if task.task_id in self._running:
            return True
        if self._draining or len(self._unreported()) >= self.settings.capacity:
            return False
        scope = read_task_token(self._secret, task.task_token)
        if scope is None:
            raise InvalidRequest("task_token is not valid (or has expired)")
        if (scope.task_id, scope.environment_id, scope.nango_connection_id) != (
            task.task_id,
            task.connection.environment_id,
            task.connection.nango_connection_id,
        ):
            raise Forbidden("task_token was minted for another task or connection")
        wall_limit = min(self.settings.wall_time_limit_seconds, scope.expires_at - time.time())
        running = RunningTask(task, wall_limit)
        self._running[task.task_id] = running
        running.job = asyncio.create_task(self._run(running), name=f"runner-task-{task.task_id}")
        return True

    def abort(self, task_id: str, reason: str) -> bool:
        running = self._running.get(task_id)
        if running is None or running.reported:
            return False
        running.stop("aborted", reason)
        return True

    async def _run(self, running: RunningTask) -> None:
        task = running.start
        try:
            await self._execute(running)
        except NangoError as exc:
            await self._finish(running, TaskOutcome(failure=Failure(ErrorType.INTERNAL, exc.message)))
        except Exception:
            log.exception("the runner failed to run a task", extra={"task_id": task.task_id})
            failure = Failure(ErrorType.INTERNAL, "the runner could not run the function")
            await self._finish(running, TaskOutcome(failure=failure))
        finally:
            self._running.pop(task.task_id, None)

    async def _execute(self, running: RunningTask) -> None:
        """Run the task in a worker and report its result: the worker's own as soon as it sends it (a process
        ending, and its template noticing, can take longer than a short task), else why the worker ended."""
        task = running.start
        exit_status: ExitStatus | None = None
        async with self.bundles.use(task.function.bundle_key, task.function.bundle_sha256) as bundle_dir:
            if running.stop_reason is not None:
                failure = self._stopped(running)
            else:
                worker = await self.templates.spawn(bundle_dir)
                running.worker = worker
                try:
                    if running.stop_reason is not None:
                        worker.kill()
                    outcome: TaskOutcome | None = None
                    with contextlib.suppress(OSError):
                        await worker.send(self._message(task, str(bundle_dir)))
                        outcome = await self._supervise(running, worker)
                    if outcome is not None:
                        await self._finish(running, outcome, from_worker=True)
                    exit_status = await worker.wait(_EXIT_GRACE)
                finally:
                    worker.close()
                if outcome is not None:
                    return
                failure = self._ended(running, exit_status)
        await self._finish(running, TaskOutcome(failure=failure), exit_status)

    async def _finish(
        self,
        running: RunningTask,
        outcome: TaskOutcome,
        exit_status: ExitStatus | None = None,
        *,
        from_worker: bool = False,
    ) -> None:
        """Report the task's result to jobs; only the first call of a task does (one CompleteTask per task).
        `from_worker`: the outcome is the worker's own, which logged its failure itself."""
        if running.reported:
            return
        running.reported = True
        task = running.start
        failure = outcome.failure
        if failure is not None:
            log.info("task failed", extra={"task_id": task.task_id, "error_type": failure.type})
            if not from_worker:
                await self._log_failure(task, failure)
        maxrss_kb = exit_status.maxrss_kb if exit_status is not None else outcome.maxrss_kb
        completion = TaskCompletion(
            task_id=task.task_id,
            output=None if outcome.output_json is None else json.loads(outcome.output_json),
            error=None
            if failure is None
            else FunctionFailure(failure.type, failure.message, failure.status, failure.payload, failure.upstream),
            telemetry=TaskTelemetry(
                duration=timedelta(seconds=time.monotonic() - running.started),
                max_memory_bytes=maxrss_kb * 1024,
                proxy_calls=outcome.proxy_calls,
                log_messages=outcome.log_messages,
            ),
            results=[ModelResult(model, *counts) for model, counts in sorted(running.counts.items())],
        )
        await self._report(completion)

    def _message(self, task: TaskStart, bundle_dir: str) -> RunTask:
        sync, connection = task.sync, task.connection
        return RunTask(
            task_id=task.task_id,
            function_name=task.function.name,
            function_type=task.type.value,
            bundle_dir=bundle_dir,
            limits=self.limits,
            task_token=task.task_token,
            environment_id=connection.environment_id,
            environment_name=connection.environment_name,
            nango_connection_id=connection.nango_connection_id,
            connection_id=connection.connection_id,
            provider_config_key=connection.provider_config_key,
            provider=connection.provider,
            input_json=task.input_json,
            activity_log_id=task.activity_log_id,
            sync_id=sync.sync_id if sync else "",
            sync_job_id=sync.sync_job_id if sync else "",
            variant=sync.variant if sync else "",
            last_sync_date=sync.last_sync_date if sync else None,
            track_deletes=sync.track_deletes if sync else False,
            reconcile=sync.reconcile if sync else False,
            attempt=task.attempt,
            debug=task.debug,
            end_user=connection.end_user,
        )

    async def _supervise(self, running: RunningTask, worker: Worker) -> TaskOutcome | None:
        """Read the worker's messages until its outcome, under the wall-time limit, heartbeating."""
        heartbeats = asyncio.create_task(self._heartbeats(running))
        try:
            async with asyncio.timeout(running.remaining()):
                while True:
                    message = await read_message(worker.reader)
                    if message is None:
                        return None
                    if isinstance(message, RecordsChanged):
                        running.record(message)
                    elif isinstance(message, TaskOutcome):
                        return message
        except TimeoutError:
            running.stop("timeout")
            return None
        except WireError:
            worker.kill()
            return None
        finally:
            heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeats

    async def _heartbeats(self, running: RunningTask) -> None:
        interval = self.settings.heartbeat_interval_ms / 1000
        warned = False
        while True:
            await asyncio.sleep(interval)
            try:
                stop = await self.jobs.heartbeat_task(running.start.task_id)
            except NangoError as exc:
                if not warned:
                    log.warning(
                        "heartbeat to jobs failed", extra={"task_id": running.start.task_id, "code": exc.instance_code}
                    )
                    warned = True
                continue
            if stop:
                running.stop("stopped", "jobs reported the task cancelled or expired")
                return

    def _stopped(self, running: RunningTask) -> Failure:
        reason, detail = running.stop_reason, running.stop_detail
        if reason == "timeout":
            return Failure(ErrorType.TIMEOUT, f"the function ran longer than its time limit ({running.wall_limit:g} s)")
        if reason == "shutdown":
            return Failure(ErrorType.ABORTED, "the runner stopped while the function ran", 410)
        return Failure(ErrorType.ABORTED, "the function was aborted" + (f": {detail}" if detail else ""), 410)

    def _ended(self, running: RunningTask, exit_status: ExitStatus) -> Failure:
        """Why a worker that sent no outcome ended."""
        if running.stop_reason is not None:
            return self._stopped(running)
        if exit_status.unknown:
            return Failure(ErrorType.INTERNAL, "the runner lost the function's process (its zygote stopped)")
        cpu = self.settings.cpu_limit_seconds
        if exit_status.signal == signal.SIGXCPU or (
            exit_status.signal == signal.SIGKILL and exit_status.cpu_seconds >= cpu
        ):
            return Failure(ErrorType.TIMEOUT, f"the function used more than its CPU time limit ({cpu} s)")
        if exit_status.signal == signal.SIGKILL:
            return Failure(
                ErrorType.MEMORY, "the function's process was killed, most likely by the system for lack of memory"
            )
        return Failure(ErrorType.SCRIPT, f"the function's process {exit_status.describe()} without a result")

    async def _log_failure(self, task: TaskStart, failure: Failure) -> None:
        """A line in the operation for failures the worker could not log itself (it was killed)."""
        if not task.activity_log_id:
            return
        line = Message(
            operation_id=task.activity_log_id,
            message=f"{failure.type}: {failure.message}",
            level="error",
            source="internal",
            error={"type": failure.type, "message": failure.message},
        )
        try:
            await self.persist.write_log_messages(task.connection.environment_id, [line])
        except NangoError as exc:
            log.warning("could not log a task failure", extra={"task_id": task.task_id, "code": exc.instance_code})

    async def _report(self, completion: TaskCompletion) -> None:
        delay, deadline = 0.2, time.monotonic() + _REPORT_WINDOW
        while True:
            try:
                await self.jobs.complete_task(completion)
                return
            except NotImplementedYet:
                log.warning("jobs does not take task results yet", extra={"task_id": completion.task_id})
                return
            except NangoError as exc:
                if exc.status < 500 or time.monotonic() + delay > deadline:
                    log.error(
                        "could not report a task result to jobs",
                        extra={"task_id": completion.task_id, "code": exc.instance_code},
                    )
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # inspection

    async def inspect(self, bundle_zip: bytes, provider_config_key: str) -> list[FunctionSpec]:
        """Import a bundle in a throwaway worker (same limits) and return what it declares."""
        limit = self.settings.max_bundle_mb * 1024 * 1024
        if not bundle_zip:
            raise InvalidRequest("bundle_zip is empty")
        if len(bundle_zip) > limit:
            raise InvalidRequest(f"the bundle is larger than {self.settings.max_bundle_mb} MB")
        worker = await self.zygote.spawn()
        timeout = self.settings.inspect_timeout_seconds
        message: object = None
        try:
            with contextlib.suppress(OSError, WireError):
                await worker.send(InspectBundle(bundle_zip, self.limits, limit))
                try:
                    async with asyncio.timeout(timeout):
                        message = await read_message(worker.reader)
                except TimeoutError:
                    worker.kill()
                    raise InvalidRequest(f"the bundle did not finish importing within {timeout:g} s") from None
            exit_status = await worker.wait(_EXIT_GRACE)
        finally:
            worker.close()
        where = f"the bundle of {provider_config_key}" if provider_config_key else "the bundle"
        if not isinstance(message, InspectOutcome):
            raise InvalidRequest(f"importing {where} failed: its process {exit_status.describe()}")
        if message.error is not None:
            raise InvalidRequest(f"{where} does not load: {message.error}")
        return [spec_from_dict(spec) for spec in message.specs]

    async def shutdown(self, grace: float) -> None:
        """Refuse new tasks, let running ones finish for `grace` seconds, then abort the rest."""
        self._draining = True
        jobs = [r.job for r in self._running.values() if r.job is not None]
        if jobs:
            await asyncio.wait(jobs, timeout=grace)
        for running in list(self._running.values()):
            running.stop("shutdown")
        jobs = [r.job for r in self._running.values() if r.job is not None]
        if jobs:
            await asyncio.wait(jobs, timeout=_EXIT_GRACE + 10)
        self.templates.close()


__all__ = ["RunningTask", "TaskManager", "spec_from_dict"]
