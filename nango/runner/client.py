"""The typed client jobs and the server use to reach a runner.

It speaks the domain types of `nango.runner.models` and raises `NangoError`s; a raw `grpc.RpcError`
never escapes.
"""

from __future__ import annotations

from types import TracebackType

from nango.grpckit import invoke, json_bytes, json_value, open_channel
from nango.runner.models import (
    ConnectionContext,
    ErrorType,
    FunctionRef,
    FunctionSpec,
    FunctionType,
    RunnerStatus,
    SyncContext,
    TaskStart,
)
from nangopb.runner.v1 import runner_pb2, runner_pb2_grpc

SERVICE = "runner"

_TYPES_TO_PB = {
    FunctionType.SYNC: runner_pb2.FUNCTION_TYPE_SYNC,
    FunctionType.ACTION: runner_pb2.FUNCTION_TYPE_ACTION,
    FunctionType.WEBHOOK: runner_pb2.FUNCTION_TYPE_WEBHOOK,
    FunctionType.ON_EVENT: runner_pb2.FUNCTION_TYPE_ON_EVENT,
}
_TYPES_FROM_PB: dict[int, FunctionType] = {v: k for k, v in _TYPES_TO_PB.items()}


def task_to_pb(task: TaskStart) -> runner_pb2.StartTaskRequest:
    connection = task.connection
    request = runner_pb2.StartTaskRequest(
        task_id=task.task_id,
        type=_TYPES_TO_PB[task.type],
        function=runner_pb2.FunctionRef(
            name=task.function.name,
            version=task.function.version,
            bundle_key=task.function.bundle_key,
            bundle_sha256=task.function.bundle_sha256,
        ),
        connection=runner_pb2.ConnectionContext(
            environment_id=connection.environment_id,
            environment_name=connection.environment_name,
            nango_connection_id=connection.nango_connection_id,
            connection_id=connection.connection_id,
            provider_config_key=connection.provider_config_key,
            provider=connection.provider,
            end_user_json=json_bytes(connection.end_user),
        ),
        input_json=task.input_json,
        activity_log_id=task.activity_log_id,
        debug=task.debug,
        task_token=task.task_token,
        attempt=task.attempt,
    )
    if task.sync is not None:
        request.sync.CopyFrom(
            runner_pb2.SyncContext(
                sync_id=task.sync.sync_id,
                sync_job_id=task.sync.sync_job_id,
                variant=task.sync.variant,
                track_deletes=task.sync.track_deletes,
                reconcile=task.sync.reconcile,
            )
        )
        if task.sync.last_sync_date is not None:
            request.sync.last_sync_date.FromDatetime(task.sync.last_sync_date)
    return request


def spec_from_pb(pb: runner_pb2.FunctionSpec) -> FunctionSpec:
    return FunctionSpec(
        name=pb.name,
        type=_TYPES_FROM_PB[pb.type],
        description=pb.description,
        version=pb.version,
        module=pb.module,
        attribute=pb.attribute,
        frequency=pb.frequency,
        auto_start=pb.auto_start,
        track_deletes=pb.track_deletes,
        models=tuple(pb.models),
        models_json_schema=json_value(pb.models_json_schema, {}),
        input_json_schema=json_value(pb.input_json_schema),
        output_json_schema=json_value(pb.output_json_schema),
        webhook_subscriptions=tuple(pb.webhook_subscriptions),
        event=pb.event,
        scopes=tuple(pb.scopes),
        reconcile_deletes=pb.reconcile_deletes,
    )


class RunnerClient:
    """One channel to a runner. Plain calls time out after `timeout` seconds; inspection after
    `inspect_timeout` (it imports customer code)."""

    def __init__(self, target: str, token: str, *, timeout: float = 10.0, inspect_timeout: float = 120.0) -> None:
        self._channel = open_channel(target, token)
        self._stub = runner_pb2_grpc.RunnerServiceStub(self._channel)
        self._timeout = timeout
        self._inspect_timeout = inspect_timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> RunnerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start_task(self, task: TaskStart) -> bool:
        """True when the runner took the task; False when it is full (try another runner). A runner that
        is restarting gets until the timeout to come back (the channel waits for it to be ready instead of
        failing at once while it reconnects): only one gone for longer fails the task."""
        call = self._stub.StartTask(task_to_pb(task), timeout=self._timeout, wait_for_ready=True)
        reply = await invoke(SERVICE, call)
        return bool(reply.accepted)

    async def abort_task(self, task_id: str, reason: str = "") -> bool:
        """True when the task was running there (it ends as `script_aborted`)."""
        request = runner_pb2.AbortTaskRequest(task_id=task_id, reason=reason)
        reply = await invoke(SERVICE, self._stub.AbortTask(request, timeout=self._timeout))
        return bool(reply.aborted)

    async def status(self) -> RunnerStatus:
        reply = await invoke(
            SERVICE, self._stub.GetRunnerStatus(runner_pb2.GetRunnerStatusRequest(), timeout=self._timeout)
        )
        return RunnerStatus(reply.node_id, reply.capacity, tuple(reply.running_task_ids))

    async def inspect_bundle(self, bundle_zip: bytes, provider_config_key: str = "") -> list[FunctionSpec]:
        """The functions a bundle declares; InvalidRequest naming the file and line when it does not load."""
        request = runner_pb2.InspectBundleRequest(bundle_zip=bundle_zip, provider_config_key=provider_config_key)
        reply = await invoke(SERVICE, self._stub.InspectBundle(request, timeout=self._inspect_timeout))
        return [spec_from_pb(pb) for pb in reply.functions]


__all__ = [
    "ConnectionContext",
    "ErrorType",
    "FunctionRef",
    "FunctionSpec",
    "FunctionType",
    "RunnerClient",
    "RunnerStatus",
    "SyncContext",
    "TaskStart",
    "spec_from_pb",
    "task_to_pb",
]
