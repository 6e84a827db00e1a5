"""gRPC bootstrap shared by the five services.

- `build_server`: a `grpc.aio` server with `grpc.health.v1`, server reflection, the internal-token
  check (health and reflection stay open, so probes and `grpcurl list` work), OpenTelemetry
  context propagation, and translation of `NangoError` into a status plus trailing metadata.

OpenTelemetry: when a tracer provider is installed (`opentelemetry-instrument`, or one set before the
service starts), every call is a client and a server span through opentelemetry-instrumentation-grpc.
Without one, spans would be no-ops that still cost about 200 µs of CPU per call, so only the W3C
trace context crosses: the client sends `traceparent` when a valid span is current, and the server
makes it current for the handler.
- `open_channel` / `invoke`: the client side used by every `client.py`; it attaches the token and
  turns a failed call back into the `NangoError` the other side raised. Raw `grpc.RpcError` never
  leaves a `client.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from nango.errors import (
    Forbidden,
    InternalError,
    InvalidInternalToken,
    NangoError,
    NotImplementedYet,
    RpcStatus,
    ServiceUnavailable,
    Timeout,
)

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-nango-internal-token"  # noqa: S105 - a header name
TASK_TOKEN_HEADER = "x-nango-task-token"  # noqa: S105 - a header name
ERROR_CODE_HEADER = "nango-error-code"
ERROR_PAYLOAD_HEADER = "nango-error-payload-bin"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_OPEN_METHODS = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_TO_GRPC = {status: getattr(grpc.StatusCode, status.value) for status in RpcStatus}

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
# Servers close each connection after a few minutes (in-flight calls, long polls included, get a
# minute to finish), so clients behind a connection-balancing Service reconnect and spread over
# replicas that were added since.
_SERVER_OPTIONS = [
    *_CHANNEL_OPTIONS,
    ("grpc.max_connection_age_ms", 5 * 60 * 1000),
    ("grpc.max_connection_age_grace_ms", 60 * 1000),
]


def grpc_status(error: NangoError) -> grpc.StatusCode:
    return _TO_GRPC[type(error).rpc_status]


async def _abort_with(context: grpc.aio.ServicerContext, error: NangoError) -> None:
    metadata: list[tuple[str, str | bytes]] = [(ERROR_CODE_HEADER, error.instance_code)]
    if error.payload is not None:
        metadata.append((ERROR_PAYLOAD_HEADER, json.dumps(error.payload, default=str).encode()))
    await context.abort(grpc_status(error), error.message, trailing_metadata=tuple(metadata))


def _rewrap(handler: grpc.RpcMethodHandler, wrap: Callable[[Any, str], Any]) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour replaced by `wrap(behaviour, kind)`."""
    kinds = [
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ]
    for kind, factory in kinds:
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            return factory(
                wrap(behaviour, kind),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


@dataclass(frozen=True)
class TaskScope:
    """What a task token lets the code of one running function reach: its environment and connection."""

    task_id: str
    environment_id: int
    nango_connection_id: int
    expires_at: float


_current_scope: contextvars.ContextVar[TaskScope | None] = contextvars.ContextVar("nango_task_scope", default=None)
_TASK_TOKEN_VERSION = "nt1"  # noqa: S105 - a format tag


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_task_token(secret: str, scope: TaskScope) -> str:
    """A token for one task, signed with the internal token; it cannot be widened without that secret."""
    payload = _b64(json.dumps(asdict(scope), separators=(",", ":")).encode())
    signed = f"{_TASK_TOKEN_VERSION}.{payload}"
    signature = _b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())
    return f"{signed}.{signature}"


def read_task_token(secret: str, token: str) -> TaskScope | None:
    """The scope of a valid, unexpired task token; None otherwise."""
    try:
        version, payload, signature = token.split(".")
    except ValueError:
        return None
    expected = _b64(hmac.new(secret.encode(), f"{version}.{payload}".encode(), hashlib.sha256).digest())
    if version != _TASK_TOKEN_VERSION or not hmac.compare_digest(signature, expected):
        return None
    try:
        scope = TaskScope(**json.loads(_unb64(payload)))
    except (ValueError, TypeError):
        return None
    return scope if scope.expires_at > time.time() else None


def task_scope() -> TaskScope | None:
    """The task token's scope of the call being served; None when the caller holds the internal token."""
    return _current_scope.get()


def require_scope(environment_id: int, nango_connection_id: int | None = None) -> None:
    """Refuse a task-token call that reaches outside its task's environment or connection."""
    scope = _current_scope.get()
    if scope is None:
        return
    if scope.environment_id != environment_id or (
        nango_connection_id is not None and scope.nango_connection_id != nango_connection_id
    ):
        raise Forbidden("this task's token does not reach that environment or connection")


class InternalTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call without the shared internal token, except health and reflection, and the
    methods in `task_methods` called with a valid task token (whose scope the servicer then checks)."""

    def __init__(self, token: str, task_methods: frozenset[str] = frozenset()) -> None:
        self._token = token.encode()
        self._secret = token
        self._task_methods = task_methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_METHODS):
            return handler
        presented = task_token = ""
        for key, value in details.invocation_metadata or ():
            if key == TOKEN_HEADER:
                presented = value if isinstance(value, str) else value.decode()
            elif key == TASK_TOKEN_HEADER:
                task_token = value if isinstance(value, str) else value.decode()
        if presented and hmac.compare_digest(presented.encode(), self._token):
            return handler
        if task_token and details.method in self._task_methods:
            scope = read_task_token(self._secret, task_token)
            if scope is not None:
                return _rewrap(handler, lambda behaviour, kind: _scoped(behaviour, kind, scope))
        return _rewrap(handler, lambda _behaviour, kind: _refuse(kind, InvalidInternalToken()))


def _scoped(behaviour: Callable[..., Any], kind: str, scope: TaskScope) -> Callable[..., Any]:
    if kind.endswith("_stream"):

        async def scoped_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            _current_scope.set(scope)
            async for item in behaviour(request, context):
                yield item

        return scoped_stream

    async def scoped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        _current_scope.set(scope)
        result = behaviour(request, context)
        return await result if inspect.isawaitable(result) else result

    return scoped


def _refuse(kind: str, error: NangoError) -> Callable[..., Any]:
    if kind.endswith("_stream"):

        async def refuse_stream(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await _abort_with(context, error)
            yield  # pragma: no cover - abort raises

        return refuse_stream

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _abort_with(context, error)

    return refuse


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Turns a NangoError into its gRPC status with the code in trailing metadata; anything else
    becomes INTERNAL with a log line (never the exception text, which may hold a secret). With
    `propagate_context`, the caller's W3C trace context is current while the handler runs."""

    def __init__(self, *, propagate_context: bool = False) -> None:
        self._propagate = propagate_context

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        carrier = _trace_carrier(details.invocation_metadata) if self._propagate else None
        return _rewrap(handler, lambda behaviour, kind: _translating(behaviour, kind, method, carrier))


def _trace_carrier(metadata: Sequence[tuple[str, str | bytes]] | None) -> dict[str, str] | None:
    """The W3C trace context headers among a call's metadata; None without a `traceparent`."""
    carrier: dict[str, str] | None = None
    for key, value in metadata or ():
        if key in _TRACE_HEADERS and isinstance(value, str):
            carrier = carrier or {}
            carrier[key] = value
    return carrier if carrier and "traceparent" in carrier else None


def _translating(
    behaviour: Callable[..., Any], kind: str, method: str, carrier: dict[str, str] | None = None
) -> Callable[..., Any]:
    async def fail(context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, NotImplementedError):
            # the generated base servicer's answer for an RPC this version does not serve yet
            exc = NotImplementedYet(f"{method} is not implemented by this version")
        if isinstance(exc, NangoError):
            if exc.status >= 500:
                log.warning("rpc failed", extra={"method": method, "code": exc.instance_code})
            await _abort_with(context, exc)
        else:
            log.exception("unhandled error in rpc", extra={"method": method})
            await _abort_with(context, InternalError("internal error while handling " + method))

    if kind.endswith("_stream"):

        async def translate_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if carrier is not None:
                # each call runs in a task of its own: the context stays this call's
                otel_context.attach(propagate.extract(carrier))
            try:
                async for item in behaviour(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await fail(context, exc)

        return translate_stream

    async def translate(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if carrier is not None:
            otel_context.attach(propagate.extract(carrier))
        try:
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await fail(context, exc)

    return translate


@dataclass
class ServiceBinding:
    """A servicer and the generated `add_*Servicer_to_server` function that registers it."""

    name: str
    servicer: Any
    register: Callable[[Any, grpc.aio.Server], None]


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish for up to `grace` seconds, then cancel."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(
    bindings: Sequence[ServiceBinding],
    *,
    host: str,
    port: int,
    token: str,
    task_methods: frozenset[str] = frozenset(),
) -> RunningServer:
    interceptors: list[Any] = [InternalTokenInterceptor(token, task_methods)]
    if tracing_enabled():
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptors.append(aio_server_interceptor())  # type: ignore[no-untyped-call]
        interceptors.append(ErrorInterceptor(propagate_context=False))
    else:
        interceptors.append(ErrorInterceptor(propagate_context=True))
    server = grpc.aio.server(interceptors=interceptors, options=_SERVER_OPTIONS)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.register(binding.servicer, server)
    names = [b.name for b in bindings]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise ServiceUnavailable(f"cannot listen on {host}:{port}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, health_servicer, bound)


async def serve_until(
    stop: asyncio.Event,
    bindings: Sequence[ServiceBinding],
    *,
    host: str,
    port: int,
    token: str,
    grace: float,
    task_methods: frozenset[str] = frozenset(),
) -> None:
    """Serve until `stop` is set, then shut down gracefully."""
    running = await start_server(bindings, host=host, port=port, token=token, task_methods=task_methods)
    log.info("grpc server listening", extra={"port": running.port, "services": [b.name for b in bindings]})
    await stop.wait()
    log.info("grpc server draining", extra={"grace_seconds": grace})
    await running.stop(grace)


_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


def tracing_enabled() -> bool:
    """Whether spans are recorded: a tracer provider is installed (the API's default is a proxy that
    records nothing until one is)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


class _TokenClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the token (when there is one) and, with `propagate_context`, the current W3C trace context."""

    def __init__(self, header: str | None, token: str | None, *, propagate_context: bool) -> None:
        self._pairs = [(header, token)] if header is not None and token is not None else []
        self._propagate = propagate_context

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        pairs = self._pairs
        if self._propagate and trace.get_current_span().get_span_context().is_valid:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            pairs = [*pairs, *carrier.items()]
        if not pairs:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for pair in pairs:
            metadata.add(*pair)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


def open_channel(target: str, token: str | None, *, task_token: str | None = None) -> grpc.aio.Channel:
    """A channel to another service with the internal token, or with a task token (the code of one
    running function); with neither it sends no token (health checks, tests)."""
    spans = tracing_enabled()
    header: str | None
    value: str | None
    if token is not None:
        header, value = TOKEN_HEADER, token
    elif task_token is not None:
        header, value = TASK_TOKEN_HEADER, task_token
    else:
        header = value = None
    interceptors: list[Any] = [_TokenClientInterceptor(header, value, propagate_context=not spans)]
    if spans:
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        interceptors.extend(aio_client_interceptors())  # type: ignore[no-untyped-call]
    return grpc.aio.insecure_channel(target, interceptors=interceptors, options=_CHANNEL_OPTIONS)


def error_from_rpc(exc: grpc.aio.AioRpcError, service: str) -> NangoError:
    """The NangoError a failed call stands for."""
    code: str | None = None
    payload: Any = None
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_CODE_HEADER:
            code = value if isinstance(value, str) else value.decode()
        elif key == ERROR_PAYLOAD_HEADER:
            try:
                payload = json.loads(value)
            except ValueError:
                payload = None
    if code is not None:
        return NangoError.class_for(code)(exc.details() or None, code=code, payload=payload)
    status = exc.code()
    if status == grpc.StatusCode.UNAVAILABLE:
        return ServiceUnavailable(f"{service} service is unavailable")
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"call to {service} timed out")
    if status == grpc.StatusCode.UNAUTHENTICATED:
        return InvalidInternalToken(f"{service} refused the internal token")
    if status == grpc.StatusCode.UNIMPLEMENTED:
        return NotImplementedYet(f"{service} does not implement this call")
    return InternalError(f"call to {service} failed ({status.name})")


R = TypeVar("R")


async def invoke(service: str, call: Awaitable[R]) -> R:
    """Await a stub call, translating its failure into a NangoError."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, service) from None


async def check_health(target: str, service: str = "", timeout: float = 1.0) -> bool:
    """True when the server at `target` reports SERVING for `service`."""
    channel = grpc.aio.insecure_channel(target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False
    finally:
        await channel.close()


def json_bytes(value: Any) -> bytes:
    """Encode a value for a `*_json` field (empty bytes for None)."""
    return b"" if value is None else json.dumps(value, separators=(",", ":"), default=str).encode()


def json_value(data: bytes, default: Any = None) -> Any:
    """Decode a `*_json` field (empty bytes are `default`)."""
    return json.loads(data) if data else default


__all__ = [
    "ERROR_CODE_HEADER",
    "TASK_TOKEN_HEADER",
    "TOKEN_HEADER",
    "ErrorInterceptor",
    "InternalTokenInterceptor",
    "RunningServer",
    "ServiceBinding",
    "TaskScope",
    "check_health",
    "error_from_rpc",
    "grpc_status",
    "invoke",
    "json_bytes",
    "json_value",
    "mint_task_token",
    "open_channel",
    "read_task_token",
    "require_scope",
    "serve_until",
    "start_server",
    "task_scope",
]
