"""The runner's gRPC API: protobuf in, TaskManager calls, protobuf out."""

from __future__ import annotations

import json
import re
from datetime import UTC

import grpc

from nango.errors import InvalidRequest
from nango.grpckit import json_bytes, json_value
from nango.runner.models import (
    ConnectionContext,
    FunctionRef,
    FunctionSpec,
    FunctionType,
    SyncContext,
    TaskStart,
)
from nango.runner.tasks import TaskManager
from nango.sdk.definitions import NAME_PATTERN
from nangopb.runner.v1 import runner_pb2, runner_pb2_grpc

SERVICE_NAME = "nangopb.runner.v1.RunnerService"

_TYPES_FROM_PB = {
    runner_pb2.FUNCTION_TYPE_SYNC: FunctionType.SYNC,
    runner_pb2.FUNCTION_TYPE_ACTION: FunctionType.ACTION,
    runner_pb2.FUNCTION_TYPE_WEBHOOK: FunctionType.WEBHOOK,
    runner_pb2.FUNCTION_TYPE_ON_EVENT: FunctionType.ON_EVENT,
}
_TYPES_TO_PB = {v: k for k, v in _TYPES_FROM_PB.items()}
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _required(value: str, where: str) -> str:
    if not value:
        raise InvalidRequest(f"{where} is required")
    return value


def _json_object(data: bytes, where: str) -> dict[str, object] | None:
    try:
        value = json_value(data)
    except ValueError:
        raise InvalidRequest(f"{where} is not valid JSON") from None
    if value is not None and not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object")
    return value


def task_from_pb(request: runner_pb2.StartTaskRequest) -> TaskStart:
    kind = _TYPES_FROM_PB.get(request.type)
    if kind is None:
        raise InvalidRequest("type must be SYNC, ACTION, WEBHOOK or ON_EVENT")
    function, connection = request.function, request.connection
    if not NAME_PATTERN.fullmatch(function.name):
        raise InvalidRequest("function.name is required (letters, digits, '_' and '-')")
    if not _SHA256.fullmatch(function.bundle_sha256):
        raise InvalidRequest("function.bundle_sha256 must be a hex SHA-256")
    if connection.environment_id <= 0 or connection.nango_connection_id <= 0:
        raise InvalidRequest("connection.environment_id and connection.nango_connection_id are required")
    if request.input_json:
        try:
            json.loads(request.input_json)
        except ValueError:
            raise InvalidRequest("input_json is not valid JSON") from None
    sync = None
    if request.HasField("sync"):
        pb = request.sync
        last = pb.last_sync_date.ToDatetime(tzinfo=UTC) if pb.HasField("last_sync_date") else None
        sync = SyncContext(pb.sync_id, pb.sync_job_id, pb.variant, last, pb.track_deletes, pb.reconcile)
    return TaskStart(
        task_id=_required(request.task_id, "task_id"),
        type=kind,
        function=FunctionRef(
            function.name,
            function.version,
            _required(function.bundle_key, "function.bundle_key"),
            function.bundle_sha256.lower(),
        ),
        connection=ConnectionContext(
            environment_id=connection.environment_id,
            nango_connection_id=connection.nango_connection_id,
            connection_id=_required(connection.connection_id, "connection.connection_id"),
            provider_config_key=_required(connection.provider_config_key, "connection.provider_config_key"),
            provider=connection.provider,
            environment_name=connection.environment_name,
            end_user=_json_object(connection.end_user_json, "connection.end_user_json"),
        ),
        task_token=_required(request.task_token, "task_token"),
        sync=sync,
        input_json=request.input_json,
        activity_log_id=request.activity_log_id,
        debug=request.debug,
        attempt=request.attempt,
    )


def spec_to_pb(spec: FunctionSpec) -> runner_pb2.FunctionSpec:
    return runner_pb2.FunctionSpec(
        name=spec.name,
        type=_TYPES_TO_PB[spec.type],
        description=spec.description,
        version=spec.version,
        module=spec.module,
        attribute=spec.attribute,
        frequency=spec.frequency,
        auto_start=spec.auto_start,
        track_deletes=spec.track_deletes,
        models=list(spec.models),
        models_json_schema=json_bytes(spec.models_json_schema),
        input_json_schema=json_bytes(spec.input_json_schema),
        output_json_schema=json_bytes(spec.output_json_schema),
        webhook_subscriptions=list(spec.webhook_subscriptions),
        event=spec.event,
        scopes=list(spec.scopes),
        reconcile_deletes=spec.reconcile_deletes,
    )


class RunnerServicer(runner_pb2_grpc.RunnerServiceServicer):
    def __init__(self, manager: TaskManager) -> None:
        self.manager = manager

    async def StartTask(
        self, request: runner_pb2.StartTaskRequest, context: grpc.aio.ServicerContext
    ) -> runner_pb2.StartTaskResponse:
        return runner_pb2.StartTaskResponse(accepted=self.manager.start(task_from_pb(request)))

    async def AbortTask(
        self, request: runner_pb2.AbortTaskRequest, context: grpc.aio.ServicerContext
    ) -> runner_pb2.AbortTaskResponse:
        aborted = self.manager.abort(_required(request.task_id, "task_id"), request.reason)
        return runner_pb2.AbortTaskResponse(aborted=aborted)

    async def GetRunnerStatus(
        self, request: runner_pb2.GetRunnerStatusRequest, context: grpc.aio.ServicerContext
    ) -> runner_pb2.GetRunnerStatusResponse:
        status = self.manager.status()
        return runner_pb2.GetRunnerStatusResponse(
            node_id=status.node_id, capacity=status.capacity, running_task_ids=list(status.running_task_ids)
        )

    async def InspectBundle(
        self, request: runner_pb2.InspectBundleRequest, context: grpc.aio.ServicerContext
    ) -> runner_pb2.InspectBundleResponse:
        specs = await self.manager.inspect(request.bundle_zip, request.provider_config_key)
        return runner_pb2.InspectBundleResponse(functions=[spec_to_pb(s) for s in specs])
