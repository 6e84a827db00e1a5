"""The servicer: protobuf in, domain calls, protobuf out. Input is validated here; a bad field
answers INVALID_ARGUMENT (code `invalid_request`) with a message naming it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from nango.errors import InvalidRequest
from nango.grpckit import json_bytes
from nango.orchestrator.models import Schedule, ScheduleSpec, Task, TaskGroup, TaskQuery, TaskSpec, TaskTimeouts
from nango.orchestrator.scheduler import Scheduler
from nango.orchestrator.states import ScheduleState, TaskState
from nangopb.orchestrator.v1 import orchestrator_pb2 as pb
from nangopb.orchestrator.v1 import orchestrator_pb2_grpc

MAX_BATCH = 1000
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_NAME_LENGTH = 1024
MAX_GROUP_KEY_LENGTH = 255
MAX_RETRIES = 100
MAX_DURATION = timedelta(days=3650)

_TASK_STATE_TO_PB = {s: pb.TaskState.Value(f"TASK_STATE_{s.value}") for s in TaskState}
_TASK_STATE_FROM_PB: dict[int, TaskState] = {v: s for s, v in _TASK_STATE_TO_PB.items()}
_SCHEDULE_STATE_TO_PB = {s: pb.ScheduleState.Value(f"SCHEDULE_STATE_{s.value}") for s in ScheduleState}
_SCHEDULE_STATE_FROM_PB: dict[int, ScheduleState] = {v: s for s, v in _SCHEDULE_STATE_TO_PB.items()}
_DEFAULT_TIMEOUTS = TaskTimeouts()


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def CreateTask(
        self, request: pb.CreateTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTaskResponse:
        spec = _task_spec(_required(request, "task"), "task")
        task = await self.scheduler.create_task(spec, _wait(request, "wait"))
        return pb.CreateTaskResponse(task=_task_pb(task))

    async def CreateTasks(
        self, request: pb.CreateTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTasksResponse:
        _at_most(request.tasks, MAX_BATCH, "tasks")
        specs = [_task_spec(t, f"tasks[{i}]") for i, t in enumerate(request.tasks)]
        tasks = await self.scheduler.create_tasks(specs)
        return pb.CreateTasksResponse(tasks=[_task_pb(t) for t in tasks])

    async def DequeueTasks(
        self, request: pb.DequeueTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.DequeueTasksResponse:
        pattern = _text(request.group_key_pattern, "group_key_pattern", MAX_GROUP_KEY_LENGTH)
        if not 1 <= request.limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT} (got {request.limit})")
        wait = _wait(request, "wait")
        tasks = await self.scheduler.dequeue(pattern, request.limit, wait)
        return pb.DequeueTasksResponse(tasks=[_task_pb(t) for t in tasks])

    async def HeartbeatTasks(
        self, request: pb.HeartbeatTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatTasksResponse:
        _at_most(request.task_ids, MAX_BATCH, "task_ids")
        ids = [_uuid(v, f"task_ids[{i}]") for i, v in enumerate(request.task_ids)]
        stopped = await self.scheduler.heartbeat(ids)
        return pb.HeartbeatTasksResponse(stopped_task_ids=stopped)

    async def SucceedTask(
        self, request: pb.SucceedTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.SucceedTaskResponse:
        task = await self.scheduler.succeed(
            _uuid(request.task_id, "task_id"),
            _json(request.output_json, "output_json"),
            _next_execution_delay(request),
        )
        return pb.SucceedTaskResponse(task=_task_pb(task))

    async def FailTask(self, request: pb.FailTaskRequest, context: grpc.aio.ServicerContext) -> pb.FailTaskResponse:
        failed = await self.scheduler.fail(
            _uuid(request.task_id, "task_id"),
            _json(request.error_json, "error_json"),
            _next_execution_delay(request),
        )
        reply = pb.FailTaskResponse(task=_task_pb(failed.task))
        if failed.retry is not None:
            reply.retry.CopyFrom(_task_pb(failed.retry))
        return reply

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelTaskResponse:
        task = await self.scheduler.cancel(_uuid(request.task_id, "task_id"), request.reason)
        return pb.CancelTaskResponse(task=_task_pb(task))

    async def GetTaskOutput(
        self, request: pb.GetTaskOutputRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTaskOutputResponse:
        task = await self.scheduler.task_output(_uuid(request.task_id, "task_id"), _wait(request, "wait"))
        return pb.GetTaskOutputResponse(task=_task_pb(task))

    async def GetRetryOutput(
        self, request: pb.GetRetryOutputRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRetryOutputResponse:
        task = await self.scheduler.retry_output(
            _uuid(request.retry_key, "retry_key"), request.owner_key, _wait(request, "wait")
        )
        return pb.GetRetryOutputResponse(task=_task_pb(task))

    async def SearchTasks(
        self, request: pb.SearchTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchTasksResponse:
        _at_most(request.ids, MAX_BATCH, "ids")
        query = TaskQuery(
            ids=[_uuid(v, f"ids[{i}]") for i, v in enumerate(request.ids)],
            group_key=request.group_key or None,
            schedule_id=_uuid(request.schedule_id, "schedule_id") if request.schedule_id else None,
            states=[_task_state(v, f"states[{i}]") for i, v in enumerate(request.states)],
            limit=_limit(request.limit),
        )
        tasks = await self.scheduler.search_tasks(query)
        return pb.SearchTasksResponse(tasks=[_task_pb(t) for t in tasks])

    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateScheduleResponse:
        schedule = await self.scheduler.create_schedule(_schedule_spec(_required(request, "schedule")))
        return pb.CreateScheduleResponse(schedule=_schedule_pb(schedule))

    async def SetSchedulesState(
        self, request: pb.SetSchedulesStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetSchedulesStateResponse:
        if not request.names:
            raise InvalidRequest("names must not be empty")
        _at_most(request.names, MAX_BATCH, "names")
        names = [_text(v, f"names[{i}]", MAX_NAME_LENGTH) for i, v in enumerate(request.names)]
        state = _schedule_state(request.state, "state")
        schedules = await self.scheduler.set_schedules_state(names, state)
        return pb.SetSchedulesStateResponse(schedules=[_schedule_pb(s) for s in schedules])

    async def UpdateScheduleFrequency(
        self, request: pb.UpdateScheduleFrequencyRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateScheduleFrequencyResponse:
        name = _text(request.name, "name", MAX_NAME_LENGTH)
        frequency = _positive_duration(request, "frequency", "frequency")
        schedule = await self.scheduler.update_schedule_frequency(name, frequency)
        return pb.UpdateScheduleFrequencyResponse(schedule=_schedule_pb(schedule))

    async def RunSchedule(
        self, request: pb.RunScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunScheduleResponse:
        task = await self.scheduler.run_schedule(_text(request.name, "name", MAX_NAME_LENGTH))
        return pb.RunScheduleResponse(task=_task_pb(task))

    async def SearchSchedules(
        self, request: pb.SearchSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchSchedulesResponse:
        _at_most(request.names, MAX_BATCH, "names")
        state = None if request.state == pb.SCHEDULE_STATE_UNSPECIFIED else _schedule_state(request.state, "state")
        schedules = await self.scheduler.search_schedules(list(request.names), state, _limit(request.limit))
        return pb.SearchSchedulesResponse(schedules=[_schedule_pb(s) for s in schedules])


# protobuf -> domain, validating


def _required(message: Message, field: str, label: str | None = None) -> Any:
    if not message.HasField(field):
        raise InvalidRequest(f"{label or field} is required")
    return getattr(message, field)


def _at_most(values: Sequence[Any], most: int, field: str) -> None:
    if len(values) > most:
        raise InvalidRequest(f"{field} holds {len(values)} items; at most {most} are allowed")


def _text(value: str, field: str, max_length: int) -> str:
    if not value.strip():
        raise InvalidRequest(f"{field} must not be empty")
    return _bounded(value, field, max_length)


def _bounded(value: str, field: str, max_length: int) -> str:
    if len(value) > max_length:
        raise InvalidRequest(f"{field} must be at most {max_length} characters")
    return value


def _uuid(value: str, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequest(f"{field} must be a UUID (got {value[:64]!r})") from None


def _json(data: bytes, field: str) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise InvalidRequest(f"{field} is not valid JSON") from None


def _json_object(data: bytes, field: str) -> dict[str, Any]:
    value = _json(data, field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{field} must be a JSON object")
    return value


def _duration(message: Duration, field: str) -> timedelta:
    if message.seconds * message.nanos < 0 or abs(message.nanos) >= 1_000_000_000:
        raise InvalidRequest(f"{field} is not a valid duration")
    value = message.ToTimedelta()
    if abs(value) > MAX_DURATION:
        raise InvalidRequest(f"{field} must be at most {MAX_DURATION.days} days")
    return value


def _positive_duration(message: Message, field: str, label: str) -> timedelta:
    value = _duration(_required(message, field, label), label)
    if value <= timedelta(0):
        raise InvalidRequest(f"{label} must be positive")
    return value


def _wait(message: Message, field: str) -> timedelta:
    if not message.HasField(field):
        return timedelta(0)
    value = _duration(getattr(message, field), field)
    if value < timedelta(0):
        raise InvalidRequest(f"{field} must not be negative")
    return value


def _next_execution_delay(request: pb.SucceedTaskRequest | pb.FailTaskRequest) -> timedelta | None:
    if not request.HasField("next_execution_delay"):
        return None
    value = _duration(request.next_execution_delay, "next_execution_delay")
    if value < timedelta(0):
        raise InvalidRequest("next_execution_delay must not be negative")
    return value


def _limit(value: int) -> int:
    if value == 0:
        return DEFAULT_LIMIT
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}, or 0 for {DEFAULT_LIMIT} (got {value})")
    return value


def _timestamp(message: Timestamp, field: str) -> datetime:
    try:
        return message.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{field} is not a valid timestamp") from None


def _group(message: pb.TaskSpec | pb.ScheduleSpec, field: str) -> TaskGroup:
    if not message.HasField("group"):
        raise InvalidRequest(f"{field}.group is required")
    key = _text(message.group.key, f"{field}.group.key", MAX_GROUP_KEY_LENGTH)
    if message.group.max_concurrency < 0:
        raise InvalidRequest(f"{field}.group.max_concurrency must not be negative")
    return TaskGroup(key, message.group.max_concurrency)


def _retry_max(value: int, field: str) -> int:
    if not 0 <= value <= MAX_RETRIES:
        raise InvalidRequest(f"{field} must be between 0 and {MAX_RETRIES} (got {value})")
    return value


def _timeouts(message: pb.TaskSpec | pb.ScheduleSpec, field: str) -> TaskTimeouts:
    """Nango's defaults for the timeouts not given; a given one must be positive."""
    if not message.HasField("timeouts"):
        return _DEFAULT_TIMEOUTS
    given = message.timeouts
    values: dict[str, timedelta] = {}
    for name in ("created_to_started", "started_to_completed", "heartbeat"):
        values[name] = (
            _positive_duration(given, name, f"{field}.timeouts.{name}")
            if given.HasField(name)
            else getattr(_DEFAULT_TIMEOUTS, name)
        )
    return TaskTimeouts(**values)


def _task_spec(message: pb.TaskSpec, field: str) -> TaskSpec:
    return TaskSpec(
        name=_text(message.name, f"{field}.name", MAX_NAME_LENGTH),
        group=_group(message, field),
        args=_json_object(message.args_json, f"{field}.args_json"),
        retry_max=_retry_max(message.retry_max, f"{field}.retry_max"),
        timeouts=_timeouts(message, field),
        owner_key=_bounded(message.owner_key, f"{field}.owner_key", MAX_GROUP_KEY_LENGTH),
        starts_after=_timestamp(message.starts_after, f"{field}.starts_after")
        if message.HasField("starts_after")
        else None,
        idempotency_key=_bounded(message.idempotency_key, f"{field}.idempotency_key", MAX_NAME_LENGTH),
    )


def _schedule_spec(message: pb.ScheduleSpec) -> ScheduleSpec:
    field = "schedule"
    state = ScheduleState.STARTED
    if message.state != pb.SCHEDULE_STATE_UNSPECIFIED:
        state = _schedule_state(message.state, f"{field}.state")
    if state is ScheduleState.DELETED:
        raise InvalidRequest(f"{field}.state must be STARTED or PAUSED")
    return ScheduleSpec(
        name=_text(message.name, f"{field}.name", MAX_NAME_LENGTH),
        group=_group(message, field),
        frequency=_positive_duration(message, "frequency", f"{field}.frequency"),
        args=_json_object(message.args_json, f"{field}.args_json"),
        state=state,
        starts_at=_timestamp(message.starts_at, f"{field}.starts_at") if message.HasField("starts_at") else None,
        retry_max=_retry_max(message.retry_max, f"{field}.retry_max"),
        timeouts=_timeouts(message, field),
    )


def _task_state(value: int, field: str) -> TaskState:
    state = _TASK_STATE_FROM_PB.get(value)
    if state is None:
        raise InvalidRequest(f"{field} must be a task state (got {value})")
    return state


def _schedule_state(value: int, field: str) -> ScheduleState:
    state = _SCHEDULE_STATE_FROM_PB.get(value)
    if state is None:
        raise InvalidRequest(f"{field} must be STARTED, PAUSED or DELETED (got {value})")
    return state


# domain -> protobuf


def _timestamp_pb(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


def _duration_pb(value: timedelta) -> Duration:
    message = Duration()
    message.FromTimedelta(value)
    return message


def _timeouts_pb(value: TaskTimeouts) -> pb.TaskTimeouts:
    return pb.TaskTimeouts(
        created_to_started=_duration_pb(value.created_to_started),
        started_to_completed=_duration_pb(value.started_to_completed),
        heartbeat=_duration_pb(value.heartbeat),
    )


def _task_pb(task: Task) -> pb.Task:
    return pb.Task(
        id=task.id,
        name=task.name,
        group=pb.TaskGroup(key=task.group.key, max_concurrency=task.group.max_concurrency),
        state=_TASK_STATE_TO_PB[task.state],
        args_json=json_bytes(task.args),
        retry_count=task.retry_count,
        retry_max=task.retry_max,
        retry_key=task.retry_key,
        owner_key=task.owner_key,
        schedule_id=task.schedule_id or "",
        timeouts=_timeouts_pb(task.timeouts),
        created_at=_timestamp_pb(task.created_at),
        starts_after=_timestamp_pb(task.starts_after),
        last_state_transition_at=_timestamp_pb(task.last_state_transition_at),
        last_heartbeat_at=_timestamp_pb(task.last_heartbeat_at),
        output_json=json_bytes(task.output),
        terminated=task.terminated,
    )


def _schedule_pb(schedule: Schedule) -> pb.Schedule:
    message = pb.Schedule(
        id=schedule.id,
        name=schedule.name,
        state=_SCHEDULE_STATE_TO_PB[schedule.state],
        starts_at=_timestamp_pb(schedule.starts_at),
        frequency=_duration_pb(schedule.frequency),
        group=pb.TaskGroup(key=schedule.group.key, max_concurrency=schedule.group.max_concurrency),
        retry_max=schedule.retry_max,
        timeouts=_timeouts_pb(schedule.timeouts),
        args_json=json_bytes(schedule.args),
        created_at=_timestamp_pb(schedule.created_at),
        updated_at=_timestamp_pb(schedule.updated_at),
        next_execution_at=_timestamp_pb(schedule.next_execution_at),
        last_scheduled_task_id=schedule.last_scheduled_task_id or "",
    )
    if schedule.deleted_at is not None:
        message.deleted_at.CopyFrom(_timestamp_pb(schedule.deleted_at))
    if schedule.last_scheduled_task_state is not None:
        message.last_scheduled_task_state = _TASK_STATE_TO_PB[schedule.last_scheduled_task_state]
    return message
