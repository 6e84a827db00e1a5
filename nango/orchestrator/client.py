"""The typed async client other services use to reach the orchestrator.

It speaks the domain types of `nango.orchestrator.models` and raises `NangoError`s (the classes of
`nango.orchestrator.errors` for the orchestrator's own codes); a raw `grpc.RpcError` never escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from nango.grpckit import invoke, json_bytes, json_value, open_channel
from nango.orchestrator.errors import GroupQueueFull, InvalidTransition, ScheduleNotFound, TaskNotFound
from nango.orchestrator.models import (
    FailedTask,
    Schedule,
    ScheduleSpec,
    Task,
    TaskGroup,
    TaskSpec,
    TaskTimeouts,
)
from nango.orchestrator.states import ScheduleState, TaskState
from nangopb.orchestrator.v1 import orchestrator_pb2 as pb
from nangopb.orchestrator.v1 import orchestrator_pb2_grpc

SERVICE = "orchestrator"

_TASK_STATE_TO_PB = {s: pb.TaskState.Value(f"TASK_STATE_{s.value}") for s in TaskState}
_TASK_STATE_FROM_PB: dict[int, TaskState] = {v: s for s, v in _TASK_STATE_TO_PB.items()}
_SCHEDULE_STATE_TO_PB = {s: pb.ScheduleState.Value(f"SCHEDULE_STATE_{s.value}") for s in ScheduleState}
_SCHEDULE_STATE_FROM_PB: dict[int, ScheduleState] = {v: s for s, v in _SCHEDULE_STATE_TO_PB.items()}


class OrchestratorClient:
    """One channel to the orchestrator. Plain calls time out after `timeout` seconds; long-polls
    after their wait plus `timeout`."""

    def __init__(self, target: str, token: str, *, timeout: float = 10.0) -> None:
        self._channel = open_channel(target, token)
        self._stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> OrchestratorClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # tasks

    async def create_task(self, spec: TaskSpec, *, wait: timedelta = timedelta(0)) -> Task:
        """Create the task; with `wait`, then wait up to that long (30 s at most) for it to terminate
        (check `terminated`), in the same call."""
        request = pb.CreateTaskRequest(task=_task_spec_pb(spec))
        if wait > timedelta(0):
            request.wait.CopyFrom(_duration_pb(wait))
        reply = await invoke(SERVICE, self._stub.CreateTask(request, **self._t(wait)))
        return _task(reply.task)

    async def create_tasks(self, specs: Sequence[TaskSpec]) -> list[Task]:
        """All of them in one transaction, or none (GroupQueueFull when a group's backlog is full)."""
        request = pb.CreateTasksRequest(tasks=[_task_spec_pb(s) for s in specs])
        reply = await invoke(SERVICE, self._stub.CreateTasks(request, **self._t()))
        return [_task(t) for t in reply.tasks]

    async def dequeue(self, group_key_pattern: str, *, limit: int, wait: timedelta = timedelta(0)) -> list[Task]:
        """Start up to `limit` tasks of groups matching the glob (`*` only); wait up to `wait` (30 s at most)."""
        request = pb.DequeueTasksRequest(group_key_pattern=group_key_pattern, limit=limit, wait=_duration_pb(wait))
        reply = await invoke(SERVICE, self._stub.DequeueTasks(request, **self._t(wait)))
        return [_task(t) for t in reply.tasks]

    async def heartbeat(self, task_ids: Sequence[str]) -> list[str]:
        """Returns the ids of tasks no longer STARTED (cancelled, expired, unknown): stop working on them."""
        reply = await invoke(
            SERVICE, self._stub.HeartbeatTasks(pb.HeartbeatTasksRequest(task_ids=list(task_ids)), **self._t())
        )
        return list(reply.stopped_task_ids)

    async def succeed(self, task_id: str, output: Any = None, *, next_execution_delay: timedelta | None = None) -> Task:
        """STARTED -> SUCCEEDED. Repeating the call answers with the first one's result; from any
        other state it raises InvalidTransition."""
        request = pb.SucceedTaskRequest(task_id=task_id, output_json=json_bytes(output))
        if next_execution_delay is not None:
            request.next_execution_delay.CopyFrom(_duration_pb(next_execution_delay))
        reply = await invoke(SERVICE, self._stub.SucceedTask(request, **self._t()))
        return _task(reply.task)

    async def fail(self, task_id: str, error: Any, *, next_execution_delay: timedelta | None = None) -> FailedTask:
        """STARTED -> FAILED, with the next attempt when retries remain; repeatable like `succeed`."""
        request = pb.FailTaskRequest(task_id=task_id, error_json=json_bytes(error))
        if next_execution_delay is not None:
            request.next_execution_delay.CopyFrom(_duration_pb(next_execution_delay))
        reply = await invoke(SERVICE, self._stub.FailTask(request, **self._t()))
        return FailedTask(_task(reply.task), _task(reply.retry) if reply.HasField("retry") else None)

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """CREATED | STARTED -> CANCELLED with output {"reason": reason}; repeatable like `succeed`."""
        request = pb.CancelTaskRequest(task_id=task_id, reason=reason)
        reply = await invoke(SERVICE, self._stub.CancelTask(request, **self._t()))
        return _task(reply.task)

    async def get_task_output(self, task_id: str, *, wait: timedelta = timedelta(0)) -> Task:
        """The task; waits up to `wait` for it to terminate (check `terminated`)."""
        request = pb.GetTaskOutputRequest(task_id=task_id, wait=_duration_pb(wait))
        reply = await invoke(SERVICE, self._stub.GetTaskOutput(request, **self._t(wait)))
        return _task(reply.task)

    async def get_retry_output(self, retry_key: str, owner_key: str, *, wait: timedelta = timedelta(0)) -> Task:
        """The latest attempt with this retry key, if `owner_key` owns it (TaskNotFound otherwise)."""
        request = pb.GetRetryOutputRequest(retry_key=retry_key, owner_key=owner_key, wait=_duration_pb(wait))
        reply = await invoke(SERVICE, self._stub.GetRetryOutput(request, **self._t(wait)))
        return _task(reply.task)

    async def search_tasks(
        self,
        *,
        ids: Sequence[str] = (),
        group_key: str | None = None,
        schedule_id: str | None = None,
        states: Sequence[TaskState] = (),
        limit: int = 100,
    ) -> list[Task]:
        """Tasks meeting every given criterion, newest first."""
        request = pb.SearchTasksRequest(
            ids=list(ids),
            group_key=group_key or "",
            schedule_id=schedule_id or "",
            states=[_TASK_STATE_TO_PB[s] for s in states],
            limit=limit,
        )
        reply = await invoke(SERVICE, self._stub.SearchTasks(request, **self._t()))
        return [_task(t) for t in reply.tasks]

    # schedules

    async def create_schedule(self, spec: ScheduleSpec) -> Schedule:
        """Create a schedule, or replace the live one with the same name."""
        request = pb.CreateScheduleRequest(schedule=_schedule_spec_pb(spec))
        reply = await invoke(SERVICE, self._stub.CreateSchedule(request, **self._t()))
        return _schedule(reply.schedule)

    async def set_schedules_state(self, names: Sequence[str], state: ScheduleState) -> list[Schedule]:
        """Start, pause (cancelling the running task) or delete schedules; ScheduleNotFound if any is unknown."""
        request = pb.SetSchedulesStateRequest(names=list(names), state=_SCHEDULE_STATE_TO_PB[state])
        reply = await invoke(SERVICE, self._stub.SetSchedulesState(request, **self._t()))
        return [_schedule(s) for s in reply.schedules]

    async def update_schedule_frequency(self, name: str, frequency: timedelta) -> Schedule:
        request = pb.UpdateScheduleFrequencyRequest(name=name, frequency=_duration_pb(frequency))
        reply = await invoke(SERVICE, self._stub.UpdateScheduleFrequency(request, **self._t()))
        return _schedule(reply.schedule)

    async def run_schedule(self, name: str) -> Task:
        """The task created now, or the schedule's task that is already waiting or running."""
        reply = await invoke(SERVICE, self._stub.RunSchedule(pb.RunScheduleRequest(name=name), **self._t()))
        return _task(reply.task)

    async def search_schedules(
        self, *, names: Sequence[str] = (), state: ScheduleState | None = None, limit: int = 100
    ) -> list[Schedule]:
        """Schedules by name and state; without a state, those not DELETED."""
        request = pb.SearchSchedulesRequest(
            names=list(names),
            state=pb.SCHEDULE_STATE_UNSPECIFIED if state is None else _SCHEDULE_STATE_TO_PB[state],
            limit=limit,
        )
        reply = await invoke(SERVICE, self._stub.SearchSchedules(request, **self._t()))
        return [_schedule(s) for s in reply.schedules]

    def _t(self, wait: timedelta = timedelta(0)) -> dict[str, float]:
        return {"timeout": self._timeout + max(wait.total_seconds(), 0.0)}


def _duration_pb(value: timedelta) -> Duration:
    message = Duration()
    message.FromTimedelta(value)
    return message


def _timestamp_pb(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


def _timeouts_pb(value: TaskTimeouts) -> pb.TaskTimeouts:
    return pb.TaskTimeouts(
        created_to_started=_duration_pb(value.created_to_started),
        started_to_completed=_duration_pb(value.started_to_completed),
        heartbeat=_duration_pb(value.heartbeat),
    )


def _task_spec_pb(spec: TaskSpec) -> pb.TaskSpec:
    message = pb.TaskSpec(
        name=spec.name,
        group=pb.TaskGroup(key=spec.group.key, max_concurrency=spec.group.max_concurrency),
        retry_max=spec.retry_max,
        timeouts=_timeouts_pb(spec.timeouts),
        owner_key=spec.owner_key,
        args_json=json_bytes(dict(spec.args)),
        idempotency_key=spec.idempotency_key,
    )
    if spec.starts_after is not None:
        message.starts_after.CopyFrom(_timestamp_pb(spec.starts_after))
    return message


def _schedule_spec_pb(spec: ScheduleSpec) -> pb.ScheduleSpec:
    message = pb.ScheduleSpec(
        name=spec.name,
        state=_SCHEDULE_STATE_TO_PB[spec.state],
        frequency=_duration_pb(spec.frequency),
        group=pb.TaskGroup(key=spec.group.key, max_concurrency=spec.group.max_concurrency),
        retry_max=spec.retry_max,
        timeouts=_timeouts_pb(spec.timeouts),
        args_json=json_bytes(dict(spec.args)),
    )
    if spec.starts_at is not None:
        message.starts_at.CopyFrom(_timestamp_pb(spec.starts_at))
    return message


def _datetime(message: Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def _timeouts(message: pb.TaskTimeouts) -> TaskTimeouts:
    return TaskTimeouts(
        created_to_started=message.created_to_started.ToTimedelta(),
        started_to_completed=message.started_to_completed.ToTimedelta(),
        heartbeat=message.heartbeat.ToTimedelta(),
    )


def _task(message: pb.Task) -> Task:
    return Task(
        id=message.id,
        name=message.name,
        group=TaskGroup(message.group.key, message.group.max_concurrency),
        state=_TASK_STATE_FROM_PB[message.state],
        args=json_value(message.args_json, {}),
        retry_count=message.retry_count,
        retry_max=message.retry_max,
        retry_key=message.retry_key,
        owner_key=message.owner_key,
        schedule_id=message.schedule_id or None,
        timeouts=_timeouts(message.timeouts),
        created_at=_datetime(message.created_at),
        starts_after=_datetime(message.starts_after),
        last_state_transition_at=_datetime(message.last_state_transition_at),
        last_heartbeat_at=_datetime(message.last_heartbeat_at),
        output=json_value(message.output_json),
        terminated=message.terminated,
    )


def _schedule(message: pb.Schedule) -> Schedule:
    return Schedule(
        id=message.id,
        name=message.name,
        state=_SCHEDULE_STATE_FROM_PB[message.state],
        starts_at=_datetime(message.starts_at),
        frequency=message.frequency.ToTimedelta(),
        group=TaskGroup(message.group.key, message.group.max_concurrency),
        retry_max=message.retry_max,
        timeouts=_timeouts(message.timeouts),
        args=json_value(message.args_json, {}),
        created_at=_datetime(message.created_at),
        updated_at=_datetime(message.updated_at),
        deleted_at=_datetime(message.deleted_at) if message.HasField("deleted_at") else None,
        next_execution_at=_datetime(message.next_execution_at),
        last_scheduled_task_id=message.last_scheduled_task_id or None,
        last_scheduled_task_state=_TASK_STATE_FROM_PB.get(message.last_scheduled_task_state),
    )


__all__ = [
    "FailedTask",
    "GroupQueueFull",
    "InvalidTransition",
    "OrchestratorClient",
    "Schedule",
    "ScheduleNotFound",
    "ScheduleSpec",
    "ScheduleState",
    "Task",
    "TaskGroup",
    "TaskNotFound",
    "TaskSpec",
    "TaskState",
    "TaskTimeouts",
]
