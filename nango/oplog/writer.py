"""The batching writer that keeps log writes off the caller's critical path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nango.oplog.models import Message, Operation, OperationUpdate
from nango.oplog.store import LogStore

log = logging.getLogger(__name__)

Item = Operation | OperationUpdate | Message


class BatchWriter:
    """Queues operations, state changes and messages and writes them in batches.

    `submit` never waits and never raises: a full queue (or a closed writer) drops the item, counts
    it in `dropped` and warns once per overflow. A batch is written when `batch_size` items are
    queued or `flush_interval` seconds after its first item; a failing or slow store (bounded by
    `write_timeout`) costs that batch, counted in `failed`, and never reaches the caller.
    """

    def __init__(
        self,
        store: LogStore,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        write_timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._queue: asyncio.Queue[Item] = asyncio.Queue(max_queue)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._write_timeout = write_timeout
        self._hurry = asyncio.Event()
        self._flushing = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._warned = False
        self.dropped = 0
        self.failed = 0

    def submit(self, item: Item) -> bool:
        """Queue an item; False when it was dropped."""
        if self._closed:
            return self._drop("closed")
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            return self._drop("queue full")
        if self._queue.qsize() >= self._batch_size:
            self._hurry.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="oplog-writer")
        return True

    def _drop(self, reason: str) -> bool:
        self.dropped += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "operations log is dropping entries", extra={"reason": reason, "queue_size": self._queue.maxsize}
            )
        return False

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or failed); False if `timeout` passed first."""
        self._flushing += 1
        self._hurry.set()
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
            return True
        except TimeoutError:
            log.warning("operations log flush timed out", extra={"pending": self._queue.qsize()})
            return False
        finally:
            self._flushing -= 1

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting entries, write what is queued (for up to `timeout` seconds) and stop."""
        self._closed = True
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() < self._batch_size - 1 and not self._flushing:
                self._hurry.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self._flush_interval)
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if self._queue.empty():
                self._warned = False

    async def _write(self, batch: list[Item]) -> None:
        # Inserts before updates, so an operation started and ended within one batch ends up ended.
        operations = [i for i in batch if isinstance(i, Operation)]
        updates = [i for i in batch if isinstance(i, OperationUpdate)]
        messages = [i for i in batch if isinstance(i, Message)]
        await self._attempt("operations", self._store.insert_operations, operations)
        await self._attempt("operation updates", self._store.update_operations, updates)
        await self._attempt("messages", self._store.insert_messages, messages)

    async def _attempt(self, what: str, write: Callable[[Sequence[Any]], Awaitable[None]], items: list[Any]) -> None:
        if not items:
            return
        try:
            async with asyncio.timeout(self._write_timeout):
                await write(items)
        except Exception as exc:
            self.failed += len(items)
            # The exception's text may quote a value being written; its type is enough to act on.
            log.warning(
                "operations log write failed", extra={"what": what, "items": len(items), "error": type(exc).__name__}
            )


__all__ = ["BatchWriter", "Item"]
