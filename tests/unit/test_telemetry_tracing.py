"""When `configure_tracing` leaves tracing off (the export itself is tested end to end in
tests/e2e/test_tracing.py): without an endpoint, when switched off, and for a protocol it does not
speak. Nothing is installed then, so the services make no spans."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from nango.grpckit import tracing_enabled
from nango.telemetry import configure_tracing

ENDPOINT = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
    ids=["no endpoint", "sdk disabled", "exporter none", "grpc protocol"],
)
def test_tracing_stays_off(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert configure_tracing("server") is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not tracing_enabled()
