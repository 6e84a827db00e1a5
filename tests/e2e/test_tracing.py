"""OpenTelemetry under `nango up`: with the standard OTLP variables set, every service exports its spans
over OTLP/HTTP, and a call from one service to another is one trace (the callee's span is the child of
the caller's). No OpenTelemetry Collector can be installed here: the receiver below decodes the
protobuf the official exporter sends with the official OTLP definitions (opentelemetry-proto)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.platform import start_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@dataclass(frozen=True)
class Exported:
    service: str
    name: str
    kind: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    values: tuple[str, ...]


@dataclass
class Receiver:
    url: str = ""
    spans: list[Exported] = field(default_factory=list)
    requests: int = 0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        state.requests += 1
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    values = tuple(a.value.string_value for a in span.attributes)
                    state.spans.append(
                        Exported(
                            attributes.get("service.name", ""),
                            span.name,
                            span.kind,
                            span.trace_id,
                            span.span_id,
                            span.parent_span_id,
                            values,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield state
    finally:
        await runner.cleanup()


def _calls_across(spans: list[Exported], caller: str, callee: str) -> list[tuple[Exported, Exported]]:
    """(client span, server span) pairs of one gRPC call from `caller` to `callee`."""
    clients = {s.span_id: s for s in spans if s.service == caller and s.kind == Span.SPAN_KIND_CLIENT}
    return [
        (clients[s.parent_span_id], s)
        for s in spans
        if s.service == callee and s.kind == Span.SPAN_KIND_SERVER and s.parent_span_id in clients
    ]


async def test_every_service_exports_its_spans_and_a_call_between_services_is_one_trace(
    receiver: Receiver, tmp_path: Path
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    up = await asyncio.to_thread(lambda: start_up(tmp_path, name="otel", extra_env=env).wait_ready())
    try:
        # jobs long-polls the orchestrator for tasks from the start: each poll is a call across services
        async with asyncio.timeout(60):
            while not _calls_across(receiver.spans, "nango-jobs", "nango-orchestrator"):
                await asyncio.sleep(0.2)
        client, server = _calls_across(receiver.spans, "nango-jobs", "nango-orchestrator")[0]
        assert client.trace_id == server.trace_id
        assert client.name == server.name
        assert server.name.startswith("/nangopb.orchestrator.v1.OrchestratorService/")
        # the launcher asks the server for the environments' keys at start: the server's spans are there too
        async with asyncio.timeout(30):
            while "nango-server" not in {s.service for s in receiver.spans}:
                await asyncio.sleep(0.2)
        token, keys = up.internal_token, up.dev_key
    finally:
        assert await asyncio.to_thread(up.stop) == 0
    # what was batched when the services stopped was sent before they exited; no secret is in a span
    services = {s.service for s in receiver.spans}
    assert {"nango-server", "nango-orchestrator", "nango-jobs"} <= services
    assert not [s for s in receiver.spans for value in s.values if token in value or keys in value]
