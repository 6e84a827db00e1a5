"""The batching writer's queue: it never blocks or raises into the caller, drops when full, and
drains on flush and close. The store here is a stand-in; every SQL path is tested on Postgres."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime

import pytest

from nango.oplog import (
    BatchWriter,
    LogStore,
    Message,
    Operation,
    OperationState,
    OperationType,
    OperationUpdate,
    Period,
)

OPERATION_ID = str(uuid.uuid4())


class RecordingStore(LogStore):
    """Records the batches it is asked to write; `gate` holds writes back, `error` makes them fail."""

    def __init__(self, *, error: Exception | None = None, hang: bool = False) -> None:
        self.batches: list[list[object]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error = error
        self.hang = hang

    async def _write(self, items: Sequence[object]) -> None:
        await self.gate.wait()
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        self.batches.append(list(items))

    async def insert_operations(self, operations: Sequence[Operation]) -> None:
        await self._write(operations)

    async def update_operations(self, updates: Sequence[OperationUpdate]) -> None:
        await self._write(updates)

    async def insert_messages(self, messages: Sequence[Message]) -> None:
        await self._write(messages)

    async def get_operation(self, operation_id: str) -> Operation | None:
        raise NotImplementedError

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
        raise NotImplementedError

    async def list_messages(
        self, operation_id: str, *, limit: int = 100, cursor: str | None = None, search: str | None = None
    ) -> tuple[list[Message], str | None]:
        raise NotImplementedError

    async def timeout_expired(self, *, now: datetime | None = None) -> int:
        raise NotImplementedError

    async def delete_older_than(self, days: int, *, now: datetime | None = None) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    @property
    def written(self) -> int:
        return sum(len(batch) for batch in self.batches)


def line(text: str = "hello") -> Message:
    return Message(operation_id=OPERATION_ID, message=text)


async def test_a_full_queue_drops_counts_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore()
    store.gate.clear()
    writer = BatchWriter(store, max_queue=3, batch_size=10, flush_interval=0.01)
    caplog.set_level(logging.WARNING, logger="nango.oplog.writer")

    accepted = [writer.submit(line(str(i))) for i in range(10)]

    assert accepted == [True, True, True] + [False] * 7
    assert writer.dropped == 7
    warnings = [r for r in caplog.records if r.getMessage() == "operations log is dropping entries"]
    assert len(warnings) == 1

    store.gate.set()
    assert await writer.flush(timeout=5)
    assert [m.message for batch in store.batches for m in batch] == ["0", "1", "2"]  # type: ignore[attr-defined]
    await writer.close(timeout=5)


async def test_batches_are_bounded_and_everything_is_written() -> None:
    store = RecordingStore()
    writer = BatchWriter(store, max_queue=5000, batch_size=500, flush_interval=0.05)
    for i in range(1234):
        assert writer.submit(line(str(i)))
    assert await writer.flush(timeout=5)
    assert store.written == 1234
    assert max(len(b) for b in store.batches) <= 500
    await writer.close(timeout=5)


async def test_a_partial_batch_is_written_after_the_interval_without_flush() -> None:
    store = RecordingStore()
    writer = BatchWriter(store, flush_interval=0.05)
    writer.submit(line())
    async with asyncio.timeout(5):
        while store.written == 0:
            await asyncio.sleep(0.01)
    await writer.close(timeout=5)


async def test_a_failing_store_never_reaches_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore(error=RuntimeError("password=hunter2 rejected"))
    writer = BatchWriter(store, flush_interval=0.01)
    caplog.set_level(logging.WARNING, logger="nango.oplog.writer")
    for _ in range(5):
        assert writer.submit(line())
    assert await writer.flush(timeout=5)
    assert writer.failed == 5
    assert "hunter2" not in caplog.text
    assert any(getattr(r, "error", None) == "RuntimeError" for r in caplog.records)
    # still working once the store recovers
    store.error = None
    writer.submit(line())
    assert await writer.flush(timeout=5)
    assert store.written == 1
    await writer.close(timeout=5)


async def test_a_hanging_store_costs_the_batch_not_the_caller() -> None:
    store = RecordingStore(hang=True)
    writer = BatchWriter(store, flush_interval=0.01, write_timeout=0.1)
    writer.submit(line())
    assert await writer.flush(timeout=5)
    assert writer.failed == 1
    await writer.close(timeout=5)


async def test_flush_gives_up_after_its_timeout() -> None:
    store = RecordingStore()
    store.gate.clear()
    writer = BatchWriter(store, flush_interval=0.01)
    writer.submit(line())
    assert not await writer.flush(timeout=0.1)
    store.gate.set()
    assert await writer.flush(timeout=5)
    await writer.close(timeout=5)


async def test_close_drains_then_drops_later_entries() -> None:
    store = RecordingStore()
    writer = BatchWriter(store, flush_interval=10)
    for _ in range(3):
        writer.submit(line())
    await writer.close(timeout=5)
    assert store.written == 3
    assert not writer.submit(line())
    assert writer.dropped == 1


async def test_inserts_are_written_before_updates_of_the_same_batch() -> None:
    store = RecordingStore()
    writer = BatchWriter(store, flush_interval=0.05)
    operation = Operation(type="action", action="run")
    writer.submit(operation)
    writer.submit(OperationUpdate(operation.id, "success"))
    writer.submit(line())
    assert await writer.flush(timeout=5)
    assert [type(batch[0]) for batch in store.batches] == [Operation, OperationUpdate, Message]
    await writer.close(timeout=5)
