"""Operations and their messages: what the operations log stores, independent of where."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from nango.errors import InvalidRequest, NangoError

OperationType = Literal["sync", "action", "proxy", "auth", "webhook", "events", "deploy", "function", "admin"]
OperationState = Literal["waiting", "running", "success", "failed", "timeout", "cancelled"]
Level = Literal["debug", "info", "warn", "error"]
MessageSource = Literal["internal", "user"]
MessageType = Literal["log", "http"]

OPERATION_TYPES: tuple[OperationType, ...] = get_args(OperationType)
OPERATION_STATES: tuple[OperationState, ...] = get_args(OperationState)
LEVELS: tuple[Level, ...] = get_args(Level)
MESSAGE_SOURCES: tuple[MessageSource, ...] = get_args(MessageSource)
MESSAGE_TYPES: tuple[MessageType, ...] = get_args(MessageType)

# The lifecycle as data: the states an operation may be in for it to move to a given state.
# Success, failed, timeout and cancelled are terminal, so a late succeed() cannot undo a timeout.
TRANSITIONS: dict[OperationState, tuple[OperationState, ...]] = {
    "waiting": (),
    "running": ("waiting",),
    "success": ("waiting", "running"),
    "failed": ("waiting", "running"),
    "timeout": ("waiting", "running"),
    "cancelled": ("waiting", "running"),
}
OPEN_STATES: tuple[OperationState, ...] = ("waiting", "running")

# How long an operation may stay open before the retention daemon marks it `timeout`.
DEFAULT_EXPIRY: dict[OperationType, timedelta] = {
    "sync": timedelta(hours=24),
    "action": timedelta(minutes=15),
    "function": timedelta(minutes=15),
    "webhook": timedelta(minutes=15),
    "events": timedelta(minutes=15),
    "proxy": timedelta(minutes=5),
    "auth": timedelta(minutes=5),
    "deploy": timedelta(minutes=5),
    "admin": timedelta(minutes=5),
}


def utcnow() -> datetime:
    return datetime.now(UTC)


# the variant nibble (0b10xx) for each random hex digit, keeping its two low bits
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_id() -> str:
    """A random (version 4) UUID as text: `str(uuid.uuid4())` at a quarter of its cost (the version
    and variant bits are set in the hex text rather than in a copy of the bytes)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# the canonical form, which every id made here has: checked without parsing
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)} (got {value!r})")


def _check_uuid(name: str, value: str) -> None:
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise InvalidRequest(f"{name} must be a UUID (got {value!r})") from None


def _milliseconds(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start) / timedelta(milliseconds=1)))


def error_dict(error: dict[str, Any] | BaseException) -> dict[str, Any]:
    """The stored form of an error: a dict as given, an exception as {type, message[, code]}."""
    if isinstance(error, dict):
        return error
    described: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, NangoError):
        described["code"] = error.instance_code
    return described


@dataclass(frozen=True)
class Operation:
    """One top-level unit of work (Nango's activity log id): a sync run, a proxy call, an OAuth flow…"""

    type: OperationType
    action: str
    id: str = field(default_factory=new_id)
    state: OperationState = "running"
    level: Level = "info"
    environment_id: int | None = None
    provider_config_key: str | None = None
    provider: str | None = None
    connection_id: str | None = None
    nango_connection_id: int | None = None
    function_name: str | None = None
    job_id: str | None = None
    end_user_id: str | None = None
    error: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        _check_uuid("operation id", self.id)
        _check("operation type", self.type, OPERATION_TYPES)
        _check("operation state", self.state, OPERATION_STATES)
        _check("operation level", self.level, LEVELS)
        if not self.action:
            raise InvalidRequest("operation action must not be empty")

    @property
    def duration_ms(self) -> int | None:
        return _milliseconds(self.started_at, self.ended_at)

    @classmethod
    def finished(
        cls,
        type: OperationType,
        action: str,
        state: OperationState,
        level: Level,
        *,
        started_at: datetime,
        ended_at: datetime,
        environment_id: int | None = None,
        provider_config_key: str | None = None,
        provider: str | None = None,
        connection_id: str | None = None,
        nango_connection_id: int | None = None,
        error: dict[str, Any] | None = None,
        request: dict[str, Any] | None = None,
        response: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Operation:
        """A new operation that is already over when it is recorded (a proxy call), created when it
        started. Checked as `__init__` checks it, without its 21 frozen-attribute writes: this runs
        on every proxy call."""
        _check("operation type", type, OPERATION_TYPES)
        _check("operation state", state, OPERATION_STATES)
        _check("operation level", level, LEVELS)
        if not action:
            raise InvalidRequest("operation action must not be empty")
        operation = object.__new__(cls)
        operation.__dict__.update(
            _FINISHED_DEFAULTS,
            id=new_id(),
            type=type,
            action=action,
            state=state,
            level=level,
            environment_id=environment_id,
            provider_config_key=provider_config_key,
            provider=provider,
            connection_id=connection_id,
            nango_connection_id=nango_connection_id,
            error=error,
            request=request,
            response=response,
            meta=meta,
            created_at=started_at,
            started_at=started_at,
            ended_at=ended_at,
            expires_at=started_at + DEFAULT_EXPIRY[type],
        )
        return operation


# the fields Operation.finished does not take, at their defaults
_FINISHED_DEFAULTS: dict[str, Any] = {name: None for name in ("function_name", "job_id", "end_user_id")}


@dataclass(frozen=True)
class OperationUpdate:
    """A state change of an operation, with what became known when it happened.

    `meta` is merged into the operation's meta; the other fields replace theirs when not None.
    """

    id: str
    state: OperationState
    at: datetime = field(default_factory=utcnow)
    level: Level | None = None
    error: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_uuid("operation id", self.id)
        _check("operation state", self.state, OPERATION_STATES)
        if self.level is not None:
            _check("operation level", self.level, LEVELS)


@dataclass(frozen=True)
class Message:
    """One line of an operation's log.

    `request` is {method, url, headers}, `response` {code, headers}, `retry` {attempt, max, waited_ms}.
    """

    operation_id: str
    message: str
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    level: Level = "info"
    source: MessageSource = "internal"
    type: MessageType = "log"
    error: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    retry: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    ended_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.operation_id:
            raise InvalidRequest("a log message needs an operation_id")
        _check_uuid("operation_id", self.operation_id)
        _check_uuid("message id", self.id)
        _check("message level", self.level, LEVELS)
        _check("message source", self.source, MESSAGE_SOURCES)
        _check("message type", self.type, MESSAGE_TYPES)

    @property
    def duration_ms(self) -> int | None:
        return _milliseconds(self.created_at, self.ended_at)


__all__ = [
    "DEFAULT_EXPIRY",
    "LEVELS",
    "MESSAGE_SOURCES",
    "MESSAGE_TYPES",
    "OPEN_STATES",
    "OPERATION_STATES",
    "OPERATION_TYPES",
    "TRANSITIONS",
    "Level",
    "Message",
    "MessageSource",
    "MessageType",
    "Operation",
    "OperationState",
    "OperationType",
    "OperationUpdate",
    "error_dict",
    "new_id",
    "utcnow",
]
