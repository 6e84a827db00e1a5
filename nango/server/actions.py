"""Running actions (reference §3.7, §8.4): one orchestrator task per call, which jobs runs on a runner.

The synchronous path waits for the task with repeated long-polls; the orchestrator's expiry guarantees
it ends (30 s to start, 15 min to complete, 5 min between heartbeats), so a wait is bounded even when
no worker ever takes the task. The asynchronous path answers at once with the task's retry key, read
back with `GET /action/{id}` by the environment that owns it.

Async actions run one at a time per environment, in their own group `action:environment:<id>:async`
(matched by jobs' `action:*`): in the synchronous actions' group a limit of 1 would also count the
synchronous ones, and a steady flow of those would starve them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nango.errors import NangoError, NotFound, RpcStatus
from nango.orchestrator.client import (
    OrchestratorClient,
    Task,
    TaskGroup,
    TaskNotFound,
    TaskSpec,
    TaskState,
    TaskTimeouts,
)
from nango.server.errors import UnknownConnection
from nango.server.functions import FunctionService
from nango.server.store.connections import ConnectionRow
from nango.server.store.functions import FunctionRow

# reference §8.4
ACTION_TIMEOUTS = TaskTimeouts(
    created_to_started=timedelta(seconds=30), started_to_completed=timedelta(minutes=15), heartbeat=timedelta(minutes=5)
)
ASYNC_ACTION_TIMEOUTS = TaskTimeouts(
    created_to_started=timedelta(hours=24), started_to_completed=timedelta(minutes=15), heartbeat=timedelta(minutes=5)
)
MAX_RETRIES = 5
MAX_OUTPUT_BYTES = 2 * 1024 * 1024
# one long-poll of the orchestrator (its own cap)
POLL = timedelta(seconds=30)
# past the task's own timeouts, the orchestrator's expiry sweep gets this long to notice
EXPIRY_GRACE = timedelta(minutes=1)
# how often a waiting caller checks that its client is still there
DISCONNECT_CHECK_SECONDS = 1.0


def action_group(environment_id: int) -> str:
    return f"action:environment:{environment_id}"


def async_action_group(environment_id: int) -> str:
    return f"action:environment:{environment_id}:async"


def owner_key(environment_id: int) -> str:
    return f"environment:{environment_id}"


def status_url(action_id: str) -> str:
    return f"/action/{action_id}"


class ActionFailed(NangoError):
    """The action ran and failed, or never ran; `upstream` is the provider's answer for script_http_error."""

    code = "action_script_failure"
    http_status = 500
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "The action failed"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        payload: Any = None,
        http_status: int | None = None,
        upstream: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, payload=payload, http_status=http_status)
        self.upstream = upstream

    def to_envelope(self) -> dict[str, Any]:
        envelope = super().to_envelope()
        if self.upstream is not None:
            envelope["error"]["upstream"] = self.upstream
        return envelope


@dataclass(frozen=True)
class AsyncAction:
    id: str

    @property
    def status_url(self) -> str:
        return status_url(self.id)


@dataclass(frozen=True)
class ActionResult:
    """`GET /action/{id}`: the output when `done`, else the state of the attempt under way."""

    done: bool
    output: Any = None
    state: TaskState | None = None


def failure(task: Task) -> ActionFailed:
    """The error a terminated, unsuccessful action task stands for."""
    output: dict[str, Any] = task.output if isinstance(task.output, dict) else {}
    if task.state is TaskState.FAILED:
        found = output.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        kind = str(error.get("type") or "action_script_failure")
        payload = error.get("payload")
        if kind == "action_script_runtime_error":
            return ActionFailed(
                "The action script failed with a runtime error", code=kind, payload=payload, http_status=500
            )
        if kind == "script_http_error":
            upstream = error.get("upstream") if isinstance(error.get("upstream"), dict) else None
            message = str(error.get("message") or "An upstream call of the action failed")
            return ActionFailed(message, code=kind, payload=payload, http_status=424, upstream=upstream)
        status = error.get("status")
        return ActionFailed(
            str(error.get("message") or "The action failed"),
            code=kind,
            payload=payload,
            http_status=status if isinstance(status, int) and 400 <= status <= 599 else 500,
        )
    reason = str(output.get("reason") or task.state.value.lower())
    if task.state is TaskState.CANCELLED:
        return ActionFailed(
            "The action was cancelled", code="script_aborted", payload={"reason": reason}, http_status=410
        )
    if reason == "createdToStartedTimeoutSecs_exceeded":
        message = "No worker started the action in time: is the jobs service running?"
    else:
        message = "The action did not finish in time"
    return ActionFailed(message, code="action_timeout", payload={"reason": reason}, http_status=504)


def outcome(task: Task) -> Any:
    """The output of a terminated task, or the ActionFailed it stands for."""
    if task.state is not TaskState.SUCCEEDED:
        raise failure(task)
    # jobs stores `{"output": ...}`: an output of null stays distinguishable from no output
    output = task.output.get("output") if isinstance(task.output, dict) else None
    if len(json.dumps(output, separators=(",", ":"), default=str)) > MAX_OUTPUT_BYTES:
        raise ActionFailed(
            f"The action's output is larger than {MAX_OUTPUT_BYTES // (1024 * 1024)} MB",
            code="action_output_too_big",
            http_status=500,
        )
    return output


Disconnected = Callable[[], bool]


def _wait_bound(timeouts: TaskTimeouts) -> timedelta:
    """How long a synchronous action can take before the orchestrator ends it, and its sweep notices."""
    return timeouts.created_to_started + timeouts.started_to_completed + EXPIRY_GRACE


class CallerGone(Exception):
    """The caller of a synchronous action went away; its wait stopped, the task runs on."""


# calls left to end by themselves, held until they do (the event loop keeps only weak references)
_detached: set[asyncio.Future[Task]] = set()


def _forget(call: asyncio.Future[Task]) -> None:
    _detached.discard(call)
    # its failure, if any, concerns nobody any more
    if not call.cancelled():
        call.exception()


async def _unless_disconnected(
    call: Awaitable[Task], disconnected: Disconnected | None, *, cancel: bool = True
) -> Task:
    """The call's result; CallerGone once `disconnected()` says the caller left, the call then cancelled,
    or (`cancel=False`, for a call that must not be cut short) left to end by itself."""
    pending = asyncio.ensure_future(call)
    if disconnected is None:
        return await pending
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=DISCONNECT_CHECK_SECONDS)
            if done:
                return pending.result()
            if disconnected():
                raise CallerGone()
    finally:
        if not pending.done():
            if cancel:
                pending.cancel()
            else:
                _detached.add(pending)
                pending.add_done_callback(_forget)


class ActionService:
    def __init__(
        self, functions: FunctionService, orchestrator: OrchestratorClient, *, max_concurrency: int = 0
    ) -> None:
        self.functions = functions
        self.orchestrator = orchestrator
        # of the synchronous actions of one environment (ACTION_ENVIRONMENT_MAX_CONCURRENCY); 0 is unlimited
        self.max_concurrency = max_concurrency

    async def prepare(
        self, environment_id: int, provider_config_key: str, connection_id: str, action_name: str
    ) -> tuple[ConnectionRow, FunctionRow]:
        connection = await self.functions.connections.store.get_by_key(
            environment_id, provider_config_key, connection_id
        )
        if connection is None:
            raise UnknownConnection("Failed to find connection")
        found = await self.functions.store.find(environment_id, provider_config_key, action_name, "action")
        if not found:
            raise NotFound("Action not found")
        if not found[0].enabled:
            raise NotFound("The action is disabled", code="disabled_resource")
        return connection, found[0]

    def _spec(
        self, connection: ConnectionRow, function: FunctionRow, input: Any, *, is_async: bool, retries: int
    ) -> TaskSpec:
        environment_id = connection.environment_id
        stamp = datetime.now(UTC).isoformat()
        return TaskSpec(
            name=f"action:environment:{environment_id}:connection:{connection.id}:action:{function.name}"
            f":at:{stamp}:{uuid.uuid4()}",
            group=TaskGroup(async_action_group(environment_id), 1)
            if is_async
            else TaskGroup(action_group(environment_id), self.max_concurrency),
            args={
                "type": "action",
                "environment_id": environment_id,
                "nango_connection_id": connection.id,
                "connection_id": connection.connection_id,
                "provider_config_key": connection.provider_config_key,
                "function": function.name,
                # what to run, as resolved here: jobs need not ask again on the first attempt
                "bundle": {
                    "id": function.id,
                    "version": function.version,
                    "key": function.bundle_key,
                    "sha256": function.bundle_sha256,
                },
                "input": input,
                "async": is_async,
            },
            retry_max=retries,
            timeouts=ASYNC_ACTION_TIMEOUTS if is_async else ACTION_TIMEOUTS,
            owner_key=owner_key(environment_id),
        )

    async def run(
        self,
        environment_id: int,
        provider_config_key: str,
        connection_id: str,
        action_name: str,
        input: Any,
        *,
        disconnected: Disconnected | None = None,
    ) -> Any:
        """Run the action and return its output (ActionFailed when it fails or never runs). When
        `disconnected()` turns true the wait stops with CallerGone; the task itself runs on."""
        connection, function = await self.prepare(environment_id, provider_config_key, connection_id, action_name)
        spec = self._spec(connection, function, input, is_async=False, retries=0)
        deadline = asyncio.get_running_loop().time() + _wait_bound(spec.timeouts).total_seconds()
        # one call creates the task and waits for it; a caller that leaves meanwhile stops waiting, but the
        # call is not cut short (the task is created and runs on)
        task = await _unless_disconnected(
            self.orchestrator.create_task(spec, wait=min(POLL, _wait_bound(spec.timeouts))), disconnected, cancel=False
        )
        return await self.wait(task, disconnected, deadline=deadline)

    async def wait(self, task: Task, disconnected: Disconnected | None = None, *, deadline: float | None = None) -> Any:
        """The task's outcome once it terminates; waits until `deadline` (the event loop's clock; by
        default the task's own timeouts from now, with a grace for the expiry sweep)."""
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + _wait_bound(task.timeouts).total_seconds()
        while not task.terminated:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ActionFailed(
                    "The action did not finish in time",
                    code="action_timeout",
                    payload={"reason": "wait"},
                    http_status=504,
                )
            task = await _unless_disconnected(
                self.orchestrator.get_task_output(task.id, wait=min(POLL, timedelta(seconds=remaining))), disconnected
            )
        return outcome(task)

    async def start(
        self,
        environment_id: int,
        provider_config_key: str,
        connection_id: str,
        action_name: str,
        input: Any,
        *,
        retries: int,
    ) -> AsyncAction:
        """Queue the action; its id is the task's retry key, shared by every attempt."""
        connection, function = await self.prepare(environment_id, provider_config_key, connection_id, action_name)
        task = await self.orchestrator.create_task(
            self._spec(connection, function, input, is_async=True, retries=retries)
        )
        return AsyncAction(task.retry_key)

    async def result(self, environment_id: int, action_id: str) -> ActionResult:
        """The latest attempt of an async action this environment started; NotFound for any other id."""
        try:
            task = await self.orchestrator.get_retry_output(action_id, owner_key(environment_id))
        except TaskNotFound:
            raise NotFound(f"No action '{action_id}' found") from None
        if not task.terminated:
            return ActionResult(done=False, state=task.state)
        return ActionResult(done=True, output=outcome(task))
