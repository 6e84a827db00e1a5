"""Where operations and messages are kept: the `LogStore` interface and its Postgres implementation."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from nango.db import create_pool, migrate_url
from nango.errors import InvalidRequest
from nango.jsontext import json_encoder
from nango.oplog.models import (
    OPEN_STATES,
    OPERATION_STATES,
    OPERATION_TYPES,
    TRANSITIONS,
    Message,
    Operation,
    OperationState,
    OperationType,
    OperationUpdate,
    utcnow,
)
from nango.oplog.redact import redact_dict, redact_string, redact_value
from nango.telemetry import known_secrets

MAX_PAGE = 500
_PREPARE_SLICE = 32
T = TypeVar("T")
R = TypeVar("R")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# JSON's escape for NUL, which jsonb refuses; an even run of backslashes before it is not an escape.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Period = tuple[datetime | None, datetime | None]


class LogStore(ABC):
    """Storage of the operations log. Implementations redact everything before it is stored."""

    @abstractmethod
    async def insert_operations(self, operations: Sequence[Operation]) -> None: ...

    @abstractmethod
    async def update_operations(self, updates: Sequence[OperationUpdate]) -> None:
        """Apply state changes in order; a change the lifecycle does not allow is ignored."""

    @abstractmethod
    async def insert_messages(self, messages: Sequence[Message]) -> None: ...

    @abstractmethod
    async def get_operation(self, operation_id: str) -> Operation | None: ...

    @abstractmethod
    async def search_operations(
        self,
        *,
        environment_id: int,
        types: Sequence[OperationType] | None = None,
        states: Sequence[OperationState] | None = None,
        integrations: Sequence[str] | None = None,
        connections: Sequence[str] | None = None,
        period: Period | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Operation], str | None]:
        """Newest first, at most `limit` (1..500); the cursor of the next page, or None at the end."""

    @abstractmethod
    async def list_messages(
        self, operation_id: str, *, limit: int = 100, cursor: str | None = None, search: str | None = None
    ) -> tuple[list[Message], str | None]:
        """Oldest first, optionally only lines containing `search` (case-insensitive)."""

    @abstractmethod
    async def timeout_expired(self, *, now: datetime | None = None) -> int:
        """Mark open operations past their expires_at as `timeout`; returns how many."""

    @abstractmethod
    async def delete_older_than(self, days: int, *, now: datetime | None = None) -> int:
        """Delete operations (with their messages) and messages created more than `days` ago;
        returns the number of operations deleted."""

    @abstractmethod
    async def close(self) -> None: ...


def _encode_cursor(created_at: datetime, key: str) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}|{key}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, key = raw.split("|", 1)
        return _EPOCH + timedelta(microseconds=int(micros)), key
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise InvalidRequest("the cursor is not valid", code="invalid_cursor") from None


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE} (got {limit})")


def _check_values(name: str, values: Sequence[str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise InvalidRequest(f"unknown {name}: {', '.join(unknown)}")


def _text(value: str | None) -> str | None:
    # Postgres text cannot hold NUL; a function may well log one.
    return None if value is None else value.replace("\x00", "\ufffd")


# `json.dumps(value, default=str, ensure_ascii=False)`, built once: it runs on every row
_encode_json = json_encoder(ensure_ascii=False, separators=(", ", ": "))


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else _json_text(value)


def _json_text(value: Any) -> str:
    text = _encode_json(value)
    return _JSON_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


# Payloads of the shapes every proxy call repeats ({"method", "url"}, {"code"}, {"retries", …}): flat,
# their values str or int. The stored JSON of each distinct one is kept, but only when redaction
# changed nothing in it, so the cache never holds a secret redaction found; it is emptied whenever a
# secret is registered (one it holds may now contain it), and when full.
_FLAT_CACHE_MAX = 4096
_FLAT_VALUE_MAX = 1024
_flat_cache: dict[tuple[tuple[str, Any], ...], str] = {}
_flat_cache_secrets: tuple[str, ...] = ()


def _redacted_json(value: dict[str, Any] | None) -> str | None:
    """`_json(redact_dict(value))`, from the cache for a flat payload seen before."""
    global _flat_cache_secrets
    if value is None:
        return None
    secrets = known_secrets()
    if secrets is not _flat_cache_secrets:
        _flat_cache.clear()
        _flat_cache_secrets = secrets
    key: tuple[tuple[str, Any], ...] | None = None
    if len(value) <= 4:
        key = tuple(value.items())
        for name, item in key:
            kind = type(item)
            # exactly str and int: True == 1 and 1.0 == 1 as keys, but not in JSON
            if type(name) is not str or not (kind is int or (kind is str and len(item) <= _FLAT_VALUE_MAX)):
                key = None
                break
        if key is not None:
            cached = _flat_cache.get(key)
            if cached is not None:
                return cached
    redacted = redact_value(value)
    text = _json_text(redacted)
    if key is not None and redacted == value:
        if len(_flat_cache) >= _FLAT_CACHE_MAX:
            _flat_cache.clear()
        _flat_cache[key] = text
    return text


def _dict(value: str | None) -> dict[str, Any] | None:
    return None if value is None else dict(json.loads(value))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


_OPERATION_COLUMNS = (
    "id, type, action, state, level, environment_id, provider_config_key, provider, connection_id, "
    "nango_connection_id, function_name, job_id, end_user_id, error, request, response, meta, "
    "created_at, started_at, ended_at, expires_at"
)
_OPERATION_TYPES_SQL = (
    "uuid[], text[], text[], text[], text[], bigint[], text[], text[], text[], bigint[], text[], text[], text[], "
    "jsonb[], jsonb[], jsonb[], jsonb[], timestamptz[], timestamptz[], timestamptz[], timestamptz[]"
)
_MESSAGE_COLUMNS = (
    "id, operation_id, created_at, level, source, type, message, error, request, response, retry, meta, ended_at"
)
_MESSAGE_TYPES_SQL = (
    "uuid[], uuid[], timestamptz[], text[], text[], text[], text[], jsonb[], jsonb[], jsonb[], jsonb[], jsonb[], "
    "timestamptz[]"
)


def _names(columns: str) -> list[str]:
    return [name.strip() for name in columns.split(",")]


def _unnest(types_sql: str) -> str:
    casts = [f"${i}::{t.strip()}" for i, t in enumerate(types_sql.split(","), start=1)]
    return f"unnest({', '.join(casts)})"


def _operation_row(op: Operation) -> tuple[Any, ...]:
    """The row of an operation, its payloads redacted (what `redact` does, without a copy)."""
    return (
        op.id,
        op.type,
        _text(op.action),
        op.state,
        op.level,
        op.environment_id,
        _text(op.provider_config_key),
        _text(op.provider),
        _text(op.connection_id),
        op.nango_connection_id,
        _text(op.function_name),
        _text(op.job_id),
        _text(op.end_user_id),
        _redacted_json(op.error),
        _redacted_json(op.request),
        _redacted_json(op.response),
        _redacted_json(op.meta),
        op.created_at,
        op.started_at,
        op.ended_at,
        op.expires_at,
    )


def _message_row(m: Message) -> tuple[Any, ...]:
    """The row of a message, its text and payloads redacted (what `redact` does, without a copy)."""
    return (
        m.id,
        m.operation_id,
        m.created_at,
        m.level,
        m.source,
        m.type,
        _text(redact_string(m.message)),
        _redacted_json(m.error),
        _redacted_json(m.request),
        _redacted_json(m.response),
        _redacted_json(m.retry),
        _redacted_json(m.meta),
        m.ended_at,
    )


def _update_args(update: OperationUpdate) -> tuple[Any, ...]:
    """The arguments of the update statement for a state change, its payloads redacted."""
    return (
        update.id,
        update.state,
        update.level,
        _json(redact_dict(update.error)),
        _json(redact_dict(update.response)),
        _json(redact_dict(update.meta)),
        update.at,
        list(TRANSITIONS[update.state]),
    )


def _operation_from(r: asyncpg.Record) -> Operation:
    return Operation(
        id=str(r["id"]),
        type=r["type"],
        action=r["action"],
        state=r["state"],
        level=r["level"],
        environment_id=r["environment_id"],
        provider_config_key=r["provider_config_key"],
        provider=r["provider"],
        connection_id=r["connection_id"],
        nango_connection_id=r["nango_connection_id"],
        function_name=r["function_name"],
        job_id=r["job_id"],
        end_user_id=r["end_user_id"],
        error=_dict(r["error"]),
        request=_dict(r["request"]),
        response=_dict(r["response"]),
        meta=_dict(r["meta"]),
        created_at=r["created_at"],
        started_at=r["started_at"],
        ended_at=r["ended_at"],
        expires_at=r["expires_at"],
    )


def _message_from(r: asyncpg.Record) -> Message:
    return Message(
        id=str(r["id"]),
        operation_id=str(r["operation_id"]),
        created_at=r["created_at"],
        level=r["level"],
        source=r["source"],
        type=r["type"],
        message=r["message"],
        error=_dict(r["error"]),
        request=_dict(r["request"]),
        response=_dict(r["response"]),
        retry=_dict(r["retry"]),
        meta=_dict(r["meta"]),
        ended_at=r["ended_at"],
    )


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def _prepare(items: Sequence[T], build: Callable[[T], R]) -> list[R]:
    """Redact and shape a batch in slices, yielding to the event loop between them: a batch of a few
    hundred items would otherwise hold the loop (and every request of the process) for tens of ms."""
    out: list[R] = []
    for start in range(0, len(items), _PREPARE_SLICE):
        if start:
            await asyncio.sleep(0)
        out.extend(build(item) for item in items[start : start + _PREPARE_SLICE])
    return out


class PostgresLogStore(LogStore):
    """The operations log in one Postgres schema (`NANGO_LOGS_DATABASE_SCHEMA`, default nango_logs).

    Every statement names the schema, so the store works on any pool, whatever its search_path.
    """

    def __init__(self, pool: asyncpg.Pool, schema: str, *, owns_pool: bool = False, batch_size: int = 5000) -> None:
        if not _SCHEMA.match(schema):
            raise ValueError(f"not a safe schema name: {schema!r}")
        self.pool = pool
        self.schema = schema
        self._owns_pool = owns_pool
        self._batch_size = batch_size
        ops, msgs = f"{schema}.operations", f"{schema}.messages"
        self._insert_operations_sql = (
            f"INSERT INTO {ops} ({_OPERATION_COLUMNS}) SELECT * FROM {_unnest(_OPERATION_TYPES_SQL)} "
            "ON CONFLICT (id) DO NOTHING"
        )
        self._insert_messages_sql = (
            f"INSERT INTO {msgs} ({_MESSAGE_COLUMNS}) SELECT * FROM {_unnest(_MESSAGE_TYPES_SQL)} "
            "ON CONFLICT (id) DO NOTHING"
        )
        # The WHERE clause is the lifecycle: only a transition TRANSITIONS allows can match a row.
        self._update_sql = f"""
            UPDATE {ops} SET
                state = $2,
                level = COALESCE($3, level),
                error = COALESCE($4::jsonb, error),
                response = COALESCE($5::jsonb, response),
                meta = CASE WHEN $6::jsonb IS NULL THEN meta ELSE COALESCE(meta, '{{}}'::jsonb) || $6::jsonb END,
                started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, $7) ELSE started_at END,
                ended_at = CASE WHEN $2 = 'running' THEN ended_at ELSE $7 END
            WHERE id = $1 AND state = ANY($8::text[])"""

    @classmethod
    async def connect(cls, url: str, schema: str, *, max_size: int = 4) -> PostgresLogStore:
        """A store with its own small pool, closed by `close()`."""
        pool = await create_pool(url, schema=schema, application_name="nango-oplog", min_size=1, max_size=max_size)
        return cls(pool, schema, owns_pool=True)

    async def close(self) -> None:
        if self._owns_pool:
            await self.pool.close()

    async def insert_operations(self, operations: Sequence[Operation]) -> None:
        if not operations:
            return
        rows = await _prepare(operations, _operation_row)
        await self._copy("operations", _names(_OPERATION_COLUMNS), rows, self._insert_operations_sql)

    async def update_operations(self, updates: Sequence[OperationUpdate]) -> None:
        if not updates:
            return
        args = await _prepare(updates, _update_args)
        await self.pool.executemany(self._update_sql, args)

    async def insert_messages(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        rows = await _prepare(messages, _message_row)
        await self._copy("messages", _names(_MESSAGE_COLUMNS), rows, self._insert_messages_sql)

    async def _copy(self, table: str, columns: list[str], rows: list[tuple[Any, ...]], insert_sql: str) -> None:
        """A batch through binary COPY, the cheapest way in on both sides. A batch holding an id that
        is already stored (a retried write) fails whole; it is then inserted without the ids already there."""
        try:
            await self.pool.copy_records_to_table(table, records=rows, columns=columns, schema_name=self.schema)
        except asyncpg.UniqueViolationError:
            await self.pool.execute(insert_sql, *(list(column) for column in zip(*rows, strict=True)))

    async def get_operation(self, operation_id: str) -> Operation | None:
        if not _is_uuid(operation_id):
            return None
        row = await self.pool.fetchrow(
            f"SELECT {_OPERATION_COLUMNS} FROM {self.schema}.operations WHERE id = $1", operation_id
        )
        return _operation_from(row) if row else None

    async def search_operations(
        self,
        *,
        environment_id: int,
        types: Sequence[OperationType] | None = None,
        states: Sequence[OperationState] | None = None,
        integrations: Sequence[str] | None = None,
        connections: Sequence[str] | None = None,
        period: Period | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Operation], str | None]:
        _check_limit(limit)
        args: list[Any] = [environment_id]
        where = ["environment_id = $1"]

        def bind(sql: str, value: Any) -> None:
            args.append(value)
            where.append(sql.replace("?", f"${len(args)}"))

        if types:
            _check_values("operation types", types, OPERATION_TYPES)
            bind("type = ANY(?::text[])", list(types))
        if states:
            _check_values("operation states", states, OPERATION_STATES)
            bind("state = ANY(?::text[])", list(states))
        if integrations:
            bind("provider_config_key = ANY(?::text[])", list(integrations))
        if connections:
            bind("connection_id = ANY(?::text[])", list(connections))
        if period is not None:
            start, end = period
            if start is not None:
                bind("created_at >= ?", start)
            if end is not None:
                bind("created_at <= ?", end)
        if cursor:
            after, key = _decode_cursor(cursor)
            if not _is_uuid(key):
                raise InvalidRequest("the cursor is not valid", code="invalid_cursor")
            args.extend([after, key])
            where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)}::uuid)")
        args.append(limit + 1)
        rows = await self.pool.fetch(
            f"SELECT {_OPERATION_COLUMNS} FROM {self.schema}.operations WHERE {' AND '.join(where)} "
            f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
            *args,
        )
        operations = [_operation_from(r) for r in rows[:limit]]
        last = operations[-1] if len(rows) > limit else None
        return operations, _encode_cursor(last.created_at, last.id) if last else None

    async def list_messages(
        self, operation_id: str, *, limit: int = 100, cursor: str | None = None, search: str | None = None
    ) -> tuple[list[Message], str | None]:
        _check_limit(limit)
        if not _is_uuid(operation_id):
            return [], None
        args: list[Any] = [operation_id]
        where = ["operation_id = $1"]
        if search:
            args.append(_like_pattern(search))
            where.append(f"message ILIKE ${len(args)}")
        if cursor:
            after, key = _decode_cursor(cursor)
            if not key.isdigit():
                raise InvalidRequest("the cursor is not valid", code="invalid_cursor")
            args.extend([after, int(key)])
            where.append(f"(created_at, seq) > (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        rows = await self.pool.fetch(
            f"SELECT seq, {_MESSAGE_COLUMNS} FROM {self.schema}.messages WHERE {' AND '.join(where)} "
            f"ORDER BY created_at, seq LIMIT ${len(args)}",
            *args,
        )
        page = rows[:limit]
        next_cursor = _encode_cursor(page[-1]["created_at"], str(page[-1]["seq"])) if len(rows) > limit else None
        return [_message_from(r) for r in page], next_cursor

    async def timeout_expired(self, *, now: datetime | None = None) -> int:
        now = now or utcnow()
        ops = f"{self.schema}.operations"
        total = 0
        while True:
            count = await self.pool.fetchval(
                f"""WITH expired AS (
                        SELECT id FROM {ops} WHERE state = ANY($2::text[]) AND expires_at < $1
                        ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED),
                    updated AS (
                        UPDATE {ops} o SET state = 'timeout', level = 'error', ended_at = $1,
                            error = COALESCE(o.error, '{{"type": "timeout", "message": "operation timed out"}}'::jsonb)
                        FROM expired WHERE o.id = expired.id AND o.state = ANY($2::text[])
                        RETURNING 1)
                    SELECT count(*) FROM updated""",
                now,
                list(OPEN_STATES),
                self._batch_size,
            )
            total += int(count)
            if count < self._batch_size:
                return total

    async def delete_older_than(self, days: int, *, now: datetime | None = None) -> int:
        if days < 1:
            raise ValueError("retention must be at least one day")
        cutoff = (now or utcnow()) - timedelta(days=days)
        ops, msgs = f"{self.schema}.operations", f"{self.schema}.messages"
        deleted = 0
        while True:
            # One bounded transaction per step, so retention never holds long locks.
            count = await self.pool.fetchval(
                f"""WITH doomed AS (
                        SELECT id FROM {ops} WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED),
                    gone AS (DELETE FROM {ops} o USING doomed WHERE o.id = doomed.id RETURNING o.id),
                    lines AS (DELETE FROM {msgs} m USING gone WHERE m.operation_id = gone.id)
                    SELECT count(*) FROM gone""",
                cutoff,
                self._batch_size,
            )
            deleted += int(count)
            if count < self._batch_size:
                break
        while True:
            count = await self.pool.fetchval(
                f"""WITH gone AS (
                        DELETE FROM {msgs} WHERE id IN (SELECT id FROM {msgs} WHERE created_at < $1 LIMIT $2)
                        RETURNING 1)
                    SELECT count(*) FROM gone""",
                cutoff,
                self._batch_size,
            )
            if count < self._batch_size:
                return deleted


async def migrate_logs(url: str, schema: str) -> list[str]:
    """Apply the operations-log migrations to `schema` in the database at `url`."""
    return await migrate_url(url, schema, "nango.oplog")


__all__ = ["MAX_PAGE", "LogStore", "Period", "PostgresLogStore", "migrate_logs"]
