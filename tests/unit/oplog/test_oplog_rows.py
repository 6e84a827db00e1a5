"""The rows a store writes: redacted payloads are the same whether or not they come from the cache of
flat payloads (the shapes every proxy call repeats)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

from nango.oplog import Message, Operation
from nango.oplog.redact import MASK
from nango.oplog.store import _flat_cache, _message_row, _operation_row
from nango.telemetry import register_secret

NOW = datetime.now(UTC)


def proxy_operation(url: str, *, code: int = 200, meta: dict[str, object] | None = None) -> Operation:
    return Operation.finished(
        "proxy",
        "call",
        "success",
        "info",
        started_at=NOW,
        ended_at=NOW,
        environment_id=1,
        request={"method": "GET", "url": url},
        response={"code": code},
        meta=meta if meta is not None else {"retries": 0, "response_bytes": 199},
    )


def payloads(op: Operation) -> tuple[object, ...]:
    row = _operation_row(op)
    return tuple(None if text is None else json.loads(text) for text in row[13:17])


def test_a_repeated_payload_is_written_the_same_every_time() -> None:
    op = proxy_operation("https://api.example.com/v1/users?limit=10")
    first, second = _operation_row(op), _operation_row(op)
    assert first[13:17] == second[13:17]
    assert payloads(op) == (None, op.request, op.response, op.meta)


def test_a_secret_in_a_query_is_masked_every_time_and_never_cached() -> None:
    op = proxy_operation("https://api.example.com/v1/users?api_key=hunter2hunter2&limit=10")
    for _ in range(3):
        stored = _operation_row(op)[14]
        assert "hunter2" not in stored
        assert MASK in stored
    assert not any("hunter2" in str(key) for key in _flat_cache)


def test_a_secret_registered_later_is_masked_in_a_payload_written_before() -> None:
    secret = secrets.token_hex(12)
    op = proxy_operation(f"https://api.example.com/v1/{secret}/items")
    assert secret in _operation_row(op)[14]
    register_secret(secret)
    assert secret not in _operation_row(op)[14]


def test_booleans_and_floats_are_not_taken_for_the_equal_ints() -> None:
    ints = proxy_operation("https://api.example.com/a", meta={"retries": 1, "response_bytes": 1})
    others = proxy_operation("https://api.example.com/a", meta={"retries": True, "response_bytes": 1.0})
    assert payloads(ints)[3] == {"retries": 1, "response_bytes": 1}
    stored = _operation_row(others)[16]
    assert stored == '{"retries": true, "response_bytes": 1.0}'


def test_message_payloads_go_through_the_same_path() -> None:
    line = Message(
        operation_id=proxy_operation("https://x").id,
        message="GET https://api.example.com/?token=abcdefgh123",
        type="http",
        request={"method": "GET", "url": "https://api.example.com/?token=abcdefgh123"},
        response={"code": 200},
    )
    row = _message_row(line)
    assert "abcdefgh123" not in row[6]
    assert "abcdefgh123" not in row[8]
    assert json.loads(row[9]) == {"code": 200}
