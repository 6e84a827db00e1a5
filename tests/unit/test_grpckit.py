"""The gRPC bootstrap: health and reflection open, everything else behind the internal token, and a
NangoError raised in a servicer reaching the caller as the same error."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from nango.errors import Conflict, Forbidden, InternalError, NotImplementedYet, Unauthenticated
from nango.grpckit import (
    RunningServer,
    ServiceBinding,
    TaskScope,
    check_health,
    invoke,
    mint_task_token,
    open_channel,
    require_scope,
    start_server,
    task_scope,
    tracing_enabled,
)
from nangopb.runner.v1 import runner_pb2, runner_pb2_grpc

TOKEN = "t" * 32
SERVICE = "nangopb.runner.v1.RunnerService"


class Servicer(runner_pb2_grpc.RunnerServiceServicer):
    async def GetRunnerStatus(self, request: object, context: object) -> runner_pb2.GetRunnerStatusResponse:
        return runner_pb2.GetRunnerStatusResponse(node_id="n1", capacity=4)

    async def AbortTask(self, request: runner_pb2.AbortTaskRequest, context: object) -> runner_pb2.AbortTaskResponse:
        if request.task_id == "conflict":
            raise Conflict("task is finishing", payload={"task_id": request.task_id})
        raise RuntimeError("boom with secret sk_live_123")


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    binding = ServiceBinding(SERVICE, Servicer(), runner_pb2_grpc.add_RunnerServiceServicer_to_server)  # type: ignore[abstract]
    running = await start_server([binding], host="127.0.0.1", port=0, token=TOKEN)
    yield running
    await running.stop(0)


async def test_health_and_reflection_need_no_token(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"
    assert await check_health(target)
    assert await check_health(target, SERVICE)
    channel = grpc.aio.insecure_channel(target)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = set()
        async for reply in stub.ServerReflectionInfo(ask()):
            names = {s.name for s in reply.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    finally:
        await channel.close()


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token-wrong-token"])
async def test_calls_without_the_token_are_refused(server: RunningServer, token: str | None) -> None:
    channel = open_channel(f"127.0.0.1:{server.port}", token)
    try:
        stub = runner_pb2_grpc.RunnerServiceStub(channel)
        with pytest.raises(Unauthenticated) as caught:
            await invoke("runner", stub.GetRunnerStatus(runner_pb2.GetRunnerStatusRequest()))
        assert caught.value.instance_code == "invalid_internal_token"
    finally:
        await channel.close()


async def test_nango_errors_cross_the_wire_intact(server: RunningServer) -> None:
    channel = open_channel(f"127.0.0.1:{server.port}", TOKEN)
    try:
        stub = runner_pb2_grpc.RunnerServiceStub(channel)
        status = await invoke("runner", stub.GetRunnerStatus(runner_pb2.GetRunnerStatusRequest()))
        assert (status.node_id, status.capacity) == ("n1", 4)
        with pytest.raises(Conflict) as caught:
            await invoke("runner", stub.AbortTask(runner_pb2.AbortTaskRequest(task_id="conflict")))
        assert caught.value.message == "task is finishing"
        assert caught.value.payload == {"task_id": "conflict"}
        with pytest.raises(InternalError) as crashed:
            await invoke("runner", stub.AbortTask(runner_pb2.AbortTaskRequest(task_id="x")))
        assert "sk_live_123" not in crashed.value.message
        with pytest.raises(NotImplementedYet):
            await invoke("runner", stub.StartTask(runner_pb2.StartTaskRequest(task_id="x")))
    finally:
        await channel.close()


async def test_draining_server_reports_not_serving() -> None:
    binding = ServiceBinding(SERVICE, Servicer(), runner_pb2_grpc.add_RunnerServiceServicer_to_server)  # type: ignore[abstract]
    running = await start_server([binding], host="127.0.0.1", port=0, token=TOKEN)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        await running.health.enter_graceful_shutdown()
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await channel.close()
        await running.stop(0)


async def test_task_tokens_reach_only_their_methods_and_scope() -> None:
    class Scoped(runner_pb2_grpc.RunnerServiceServicer):
        async def GetRunnerStatus(self, request: object, context: object) -> runner_pb2.GetRunnerStatusResponse:
            scope = task_scope()
            assert scope is not None
            require_scope(scope.environment_id, 7)
            return runner_pb2.GetRunnerStatusResponse(node_id=scope.task_id)

    allowed = frozenset({f"/{SERVICE}/GetRunnerStatus"})
    binding = ServiceBinding(SERVICE, Scoped(), runner_pb2_grpc.add_RunnerServiceServicer_to_server)  # type: ignore[abstract]
    running = await start_server([binding], host="127.0.0.1", port=0, token=TOKEN, task_methods=allowed)

    def token(connection: int, expires_in: float = 60, secret: str = TOKEN) -> str:
        return mint_task_token(secret, TaskScope("task-1", 3, connection, time.time() + expires_in))

    async def status(task_token: str) -> str:
        channel = open_channel(f"127.0.0.1:{running.port}", None, task_token=task_token)
        try:
            reply = await invoke(
                "runner",
                runner_pb2_grpc.RunnerServiceStub(channel).GetRunnerStatus(runner_pb2.GetRunnerStatusRequest()),
            )
            return str(reply.node_id)
        finally:
            await channel.close()

    try:
        assert await status(token(7)) == "task-1"
        with pytest.raises(Forbidden):
            await status(token(8))
        for bad in (token(7, expires_in=-1), token(7, secret="another-secret-of-sufficient-len"), "nt1.e30.x", "junk"):
            with pytest.raises(Unauthenticated):
                await status(bad)
        channel = open_channel(f"127.0.0.1:{running.port}", None, task_token=token(7))
        try:
            stub = runner_pb2_grpc.RunnerServiceStub(channel)
            with pytest.raises(Unauthenticated):
                await invoke("runner", stub.AbortTask(runner_pb2.AbortTaskRequest(task_id="x")))
        finally:
            await channel.close()
    finally:
        await running.stop(0)


class TraceEcho(runner_pb2_grpc.RunnerServiceServicer):
    """Answers with the trace id current in the handler (in node_id), or "none"."""

    async def GetRunnerStatus(self, request: object, context: object) -> runner_pb2.GetRunnerStatusResponse:
        span_context = trace.get_current_span().get_span_context()
        node = format(span_context.trace_id, "032x") if span_context.is_valid else "none"
        return runner_pb2.GetRunnerStatusResponse(node_id=node)


async def test_the_callers_trace_context_is_current_in_the_handler() -> None:
    """No tracer provider is installed here: no spans are made, but the W3C trace context still
    crosses, so a trace started in front of the platform continues in every service."""
    assert not tracing_enabled()
    binding = ServiceBinding(SERVICE, TraceEcho(), runner_pb2_grpc.add_RunnerServiceServicer_to_server)  # type: ignore[abstract]
    running = await start_server([binding], host="127.0.0.1", port=0, token=TOKEN)
    channel = open_channel(f"127.0.0.1:{running.port}", TOKEN)
    try:
        stub = runner_pb2_grpc.RunnerServiceStub(channel)
        outside = await invoke("runner", stub.GetRunnerStatus(runner_pb2.GetRunnerStatusRequest()))
        assert outside.node_id == "none"
        trace_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736
        parent = SpanContext(trace_id, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1))
        with trace.use_span(NonRecordingSpan(parent)):
            inside = await invoke("runner", stub.GetRunnerStatus(runner_pb2.GetRunnerStatusRequest()))
        assert inside.node_id == format(trace_id, "032x")
    finally:
        await channel.close()
        await running.stop(0)
