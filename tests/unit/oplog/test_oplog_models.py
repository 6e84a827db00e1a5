"""Operations and messages: defaults, validation, derived durations and the lifecycle table."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from nango.config import LogsSettings, load
from nango.errors import InvalidRequest, NotFound, NotImplementedYet
from nango.oplog import Message, Operation, OperationUpdate, open_operations_log
from nango.oplog.models import OPEN_STATES, OPERATION_STATES, TRANSITIONS, error_dict, new_id, utcnow


def test_operation_defaults() -> None:
    op = Operation(type="proxy", action="call")
    uuid.UUID(op.id)
    assert op.state == "running"
    assert op.level == "info"
    assert op.created_at.tzinfo is not None
    assert op.duration_ms is None


def test_a_finished_operation_is_the_operation_the_constructor_makes() -> None:
    start = utcnow()
    end = start + timedelta(milliseconds=5)
    fields = {
        "environment_id": 3,
        "provider_config_key": "github",
        "provider": "github",
        "connection_id": "c1",
        "nango_connection_id": 9,
        "request": {"method": "GET", "url": "https://api.github.com/user"},
        "response": {"code": 200},
        "meta": {"retries": 0},
    }
    op = Operation.finished("proxy", "call", "success", "info", started_at=start, ended_at=end, **fields)  # type: ignore[arg-type]
    uuid.UUID(op.id)
    expected = Operation(
        type="proxy",
        action="call",
        id=op.id,
        state="success",
        level="info",
        created_at=start,
        started_at=start,
        ended_at=end,
        expires_at=start + timedelta(minutes=5),
        **fields,  # type: ignore[arg-type]
    )
    assert op == expected
    assert op.duration_ms == 5
    assert Operation.finished("proxy", "call", "success", "info", started_at=start, ended_at=end).id != op.id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("proxy", "call", "done", "info"), "operation state"),
        (("proxy", "call", "success", "loud"), "operation level"),
        (("nothing", "call", "success", "info"), "operation type"),
        (("proxy", "", "success", "info"), "action"),
    ],
)
def test_a_finished_operation_is_checked(args: tuple[str, str, str, str], message: str) -> None:
    now = utcnow()
    with pytest.raises(InvalidRequest, match=message):
        Operation.finished(*args, started_at=now, ended_at=now)  # type: ignore[arg-type]


def test_operation_duration_is_derived() -> None:
    start = utcnow()
    op = Operation(type="sync", action="run", started_at=start, ended_at=start + timedelta(seconds=1, milliseconds=250))
    assert op.duration_ms == 1250


def test_message_duration_is_derived() -> None:
    start = utcnow()
    message = Message(
        operation_id=str(uuid.uuid4()), message="GET /", created_at=start, ended_at=start + timedelta(milliseconds=42)
    )
    assert message.duration_ms == 42
    assert Message(operation_id=str(uuid.uuid4()), message="x").duration_ms is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "nope", "action": "run"},
        {"type": "sync", "action": ""},
        {"type": "sync", "action": "run", "state": "done"},
        {"type": "sync", "action": "run", "level": "fatal"},
        {"type": "sync", "action": "run", "id": "not-a-uuid"},
    ],
)
def test_operation_validation(kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        Operation(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"operation_id": ""},
        {"operation_id": "abc"},
        {"level": "fatal"},
        {"source": "runner"},
        {"type": "trace"},
    ],
)
def test_message_validation(kwargs: dict[str, str]) -> None:
    fields = {"operation_id": str(uuid.uuid4()), "message": "hello", **kwargs}
    with pytest.raises(InvalidRequest):
        Message(**fields)  # type: ignore[arg-type]


def test_update_validation() -> None:
    with pytest.raises(InvalidRequest):
        OperationUpdate(str(uuid.uuid4()), "finished")  # type: ignore[arg-type]


def test_terminal_states_are_final() -> None:
    terminal = set(OPERATION_STATES) - set(OPEN_STATES)
    for sources in TRANSITIONS.values():
        assert not terminal & set(sources)
    assert TRANSITIONS["waiting"] == ()


def test_error_dict() -> None:
    assert error_dict({"message": "x"}) == {"message": "x"}
    assert error_dict(ValueError("boom")) == {"type": "ValueError", "message": "boom"}
    assert error_dict(NotFound("gone", code="unknown_connection")) == {
        "type": "NotFound",
        "message": "gone",
        "code": "unknown_connection",
    }


async def test_elasticsearch_logs_are_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANGO_LOGS_ENABLED", "true")
    with pytest.raises(NotImplementedYet, match="Elasticsearch"):
        await open_operations_log("postgresql://unused.invalid/db", load(LogsSettings))


def test_new_ids_are_canonical_random_version_4_uuids() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # the variant's two free bits still vary
    assert {value[19] for value in ids} == set("89ab")
