"""`OperationsLog`: what services call to record operations and their lines."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg

from nango.config import LogsSettings
from nango.errors import NotImplementedYet
from nango.oplog.models import (
    DEFAULT_EXPIRY,
    Level,
    Message,
    Operation,
    OperationState,
    OperationType,
    OperationUpdate,
    error_dict,
    utcnow,
)
from nango.oplog.store import LogStore, PostgresLogStore
from nango.oplog.writer import BatchWriter


class OperationHandle:
    """One started operation: add lines to it, then end it once. Every method returns at once."""

    def __init__(self, writer: BatchWriter, operation: Operation) -> None:
        self._writer = writer
        self.operation = operation
        self._ended = False

    @property
    def id(self) -> str:
        return self.operation.id

    def debug(self, message: str, *, error: dict[str, Any] | BaseException | None = None, **meta: Any) -> None:
        self._line("debug", message, error, meta)

    def info(self, message: str, *, error: dict[str, Any] | BaseException | None = None, **meta: Any) -> None:
        self._line("info", message, error, meta)

    def warn(self, message: str, *, error: dict[str, Any] | BaseException | None = None, **meta: Any) -> None:
        self._line("warn", message, error, meta)

    def error(self, message: str, *, error: dict[str, Any] | BaseException | None = None, **meta: Any) -> None:
        self._line("error", message, error, meta)

    def _line(
        self, level: Level, message: str, error: dict[str, Any] | BaseException | None, meta: dict[str, Any]
    ) -> None:
        self._writer.submit(
            Message(
                operation_id=self.id,
                message=message,
                level=level,
                error=None if error is None else error_dict(error),
                meta=meta or None,
            )
        )

    def http(
        self,
        message: str,
        *,
        request: dict[str, Any],
        response: dict[str, Any] | None = None,
        retry: dict[str, Any] | None = None,
        error: dict[str, Any] | BaseException | None = None,
        started_at: datetime | None = None,
        level: Level | None = None,
    ) -> None:
        """An HTTP exchange: request {method, url, headers}, response {code, headers}, retry
        {attempt, max, waited_ms}; `started_at` (when the request was sent) gives its duration."""
        code = (response or {}).get("code")
        failed = error is not None or (isinstance(code, int) and code >= 400)
        now = utcnow()
        self._writer.submit(
            Message(
                operation_id=self.id,
                message=message,
                type="http",
                level=level or ("error" if failed else "info"),
                created_at=started_at or now,
                ended_at=now,
                request=request,
                response=response,
                retry=retry,
                error=None if error is None else error_dict(error),
            )
        )

    def mark_running(self) -> None:
        """A waiting operation (a queued sync, say) has started."""
        self._writer.submit(OperationUpdate(self.id, "running"))

    def succeed(self, *, response: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> None:
        self._end(OperationUpdate(self.id, "success", response=response, meta=meta))

    def fail(
        self,
        error: dict[str, Any] | BaseException,
        *,
        response: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self._end(
            OperationUpdate(self.id, "failed", level="error", error=error_dict(error), response=response, meta=meta)
        )

    def cancel(self) -> None:
        self._end(OperationUpdate(self.id, "cancelled"))

    def _end(self, update: OperationUpdate) -> None:
        if not self._ended:
            self._ended = True
            self._writer.submit(update)


class OperationsLog:
    """Records operations and their messages through a batching writer: no call here waits for the
    store or raises because of it. `flush()` waits for what is queued; `close()` drains and stops."""

    def __init__(
        self,
        store: LogStore,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        write_timeout: float = 10.0,
    ) -> None:
        self.store = store
        self._writer = BatchWriter(
            store,
            max_queue=max_queue,
            batch_size=batch_size,
            flush_interval=flush_interval,
            write_timeout=write_timeout,
        )

    @property
    def dropped(self) -> int:
        """Entries dropped because the queue was full or the log closed."""
        return self._writer.dropped

    @property
    def failed(self) -> int:
        """Entries lost to a failing or slow store."""
        return self._writer.failed

    def start(
        self,
        type: OperationType,
        action: str,
        *,
        state: OperationState = "running",
        level: Level = "info",
        environment_id: int | None = None,
        provider_config_key: str | None = None,
        provider: str | None = None,
        connection_id: str | None = None,
        nango_connection_id: int | None = None,
        function_name: str | None = None,
        job_id: str | None = None,
        end_user_id: str | None = None,
        request: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
    ) -> OperationHandle:
        """Record a new operation (`running` unless `state="waiting"`) and return its handle."""
        now = utcnow()
        operation = Operation(
            type=type,
            action=action,
            state=state,
            level=level,
            environment_id=environment_id,
            provider_config_key=provider_config_key,
            provider=provider,
            connection_id=connection_id,
            nango_connection_id=nango_connection_id,
            function_name=function_name,
            job_id=job_id,
            end_user_id=end_user_id,
            request=request,
            meta=meta,
            created_at=now,
            started_at=now if state == "running" else None,
            expires_at=expires_at or now + DEFAULT_EXPIRY[type],
        )
        self._writer.submit(operation)
        return OperationHandle(self._writer, operation)

    def record(self, operation: Operation) -> bool:
        """Queue an operation that is already over, in one write (a proxy call is logged when it ends)."""
        return self._writer.submit(operation)

    def log_messages(self, messages: Iterable[Message]) -> int:
        """Queue lines that arrive already built (a function's log); returns how many were accepted."""
        return sum(self._writer.submit(message) for message in messages)

    async def flush(self, timeout: float = 10.0) -> bool:
        return await self._writer.flush(timeout)

    async def close(self, timeout: float = 10.0) -> None:
        await self._writer.close(timeout)
        await self.store.close()


async def open_operations_log(target: asyncpg.Pool | str, settings: LogsSettings) -> OperationsLog:
    """The operations log in `settings.logs_schema`, on a pool or on a database URL (own pool).

    Migrations are the caller's (`migrate_logs`), applied at start like every other schema.
    """
    if settings.logs_enabled:
        raise NotImplementedYet(
            "NANGO_LOGS_ENABLED=true selects Elasticsearch logs, which this version does not support yet; "
            "unset it to keep the operations log in Postgres"
        )
    if isinstance(target, str):
        store = await PostgresLogStore.connect(target, settings.logs_schema)
    else:
        store = PostgresLogStore(target, settings.logs_schema)
    return OperationsLog(store)


__all__ = ["OperationHandle", "OperationsLog", "open_operations_log"]
