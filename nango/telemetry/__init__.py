"""Process logging (JSON lines on stdout) and tracing setup, the same in every service.

Every record passes through `redact_text`, so a secret that slips into a log message (a bearer
token, a `client_secret=` query parameter, a key registered with `register_secret`) is masked
before it is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)

_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]{8,}"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|api_?key|apikey|password|secret|token|"
        r"signature|sig|code_verifier|private_key)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;}]{3,}"
    ),
    re.compile(r"(nango_connect_session_)[0-9a-f]{8,}"),
    re.compile(r"(postgres(?:ql)?://[^:/\s]*:)[^@\s]+(@)"),
    re.compile(r"(rediss?://[^:/\s]*:)[^@\s]+(@)"),
]
# a word every one of _SECRET_PATTERNS needs (in lower case): ASCII text without one is searched once,
# not six times (a case-insensitive search is several times slower than lower() and a plain one)
_MAY_HOLD_SECRET = re.compile(
    r"bearer|basic|token|secret|api_?key|password|sig|code_verifier|private_key|nango_connect_session_|postgres|redis"
)
_MASK = "[REDACTED]"

_known_secrets: set[str] = set()
# a snapshot read without the lock (replaced whole on each registration)
_known_snapshot: tuple[str, ...] = ()
_known_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask this exact value wherever it appears in logs from now on."""
    global _known_snapshot
    if len(value) >= 8:
        with _known_lock:
            _known_secrets.add(value)
            _known_snapshot = tuple(_known_secrets)


def known_secrets() -> tuple[str, ...]:
    """The registered secrets: a new tuple after every registration, so a cache built from redacted
    text can tell by identity that it must be emptied."""
    return _known_snapshot


def redact_text(text: str) -> str:
    for secret in _known_snapshot:
        if secret in text:
            text = text.replace(secret, _MASK)
    # outside ASCII, case-insensitive matching has equivalences lower() does not give (the long s and s)
    if text.isascii() and _MAY_HOLD_SECRET.search(text.lower()) is None:
        return text
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(
            lambda m: m.group(1) + _MASK + (m.group(2) if m.lastindex and m.lastindex >= 2 else ""), text
        )
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return redact_text(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Send this process's logs to stdout, one JSON object per line (or plain text)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(level.lower(), level.upper()))
    for noisy in ("asyncio", "aiohttp.access", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_tracing(service: str) -> Callable[[], None] | None:
    """Export this process's spans over OTLP/HTTP when the standard OpenTelemetry variables ask for
    it (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; the exporter reads its
    headers, timeout and certificate from the standard variables too). The service is named
    `nango-<service>` unless `OTEL_SERVICE_NAME` names it. `OTEL_SDK_DISABLED=true` or
    `OTEL_TRACES_EXPORTER=none` turns it off. Returns the function that flushes and stops the export
    (None when nothing was installed). Without it, no span is made: only the W3C trace context a
    caller sent crosses the services (nango.grpckit)."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "otlp":
        return None
    if not (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if protocol.strip() not in ("", "http/protobuf"):
        logging.getLogger(__name__).warning(
            "only OTLP over HTTP (http/protobuf) is exported; spans are not exported", extra={"protocol": protocol}
        )
        return None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.namespace": "nango"}
    if not env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = f"nango-{service}"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


__all__ = ["JsonFormatter", "configure_logging", "configure_tracing", "known_secrets", "redact_text", "register_secret"]
