"""Wake-ups for long-polls, from Postgres LISTEN/NOTIFY, so a task created or finished through one
replica wakes the callers waiting on every other replica.

The triggers of migration 0001 notify `<schema>.task_created` (payload: the group key) and
`<schema>.task_terminated` (payload: id, retry key, group max concurrency, group key). A waiter
registers before it queries and re-queries when woken, so no notification falls between the two.
A task that terminates through this process is also handed to its waiters here, once committed, so
they answer without querying it again (terminal states never change).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg

from nango.errors import ServiceUnavailable
from nango.orchestrator.models import Task
from nango.orchestrator.patterns import GroupPattern

log = logging.getLogger(__name__)


class TaskWatch(asyncio.Event):
    """Set when the watched task terminates; `ended` holds the task when it ended through this process."""

    def __init__(self) -> None:
        super().__init__()
        self.ended: Task | None = None


class TaskEvents:
    def __init__(self, url: str, schema: str) -> None:
        self._url = url
        self.created_channel = f"{schema}.task_created"
        self.terminated_channel = f"{schema}.task_terminated"
        self._groups: dict[asyncio.Event, GroupPattern] = {}
        self._tasks: defaultdict[str, set[TaskWatch]] = defaultdict(set)
        self._retries: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        # tasks this process is terminating now, and those of them whose end was notified meanwhile
        self._ending: Counter[str] = Counter()
        self._noticed: set[str] = set()
        self._listening = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self.closing = False

    async def start(self, timeout: float = 30.0) -> None:
        """Start listening; returns once the first LISTEN is in place."""
        self._supervisor = asyncio.create_task(self._supervise(), name="orchestrator-listen")
        try:
            async with asyncio.timeout(timeout):
                await self._listening.wait()
        except TimeoutError:
            await self.stop()
            raise ServiceUnavailable("cannot LISTEN on the orchestrator database") from None

    def interrupt(self) -> None:
        """Shutting down: every long-poll answers with what it has now."""
        self.closing = True
        self._wake_all()

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None

    @contextmanager
    def watching_groups(self, pattern: GroupPattern) -> Iterator[asyncio.Event]:
        """Set when a task is created in a matching group, or a limited matching group frees a slot."""
        event = asyncio.Event()
        self._groups[event] = pattern
        try:
            yield event
        finally:
            del self._groups[event]

    @contextmanager
    def watching_task(self, task_id: str) -> Iterator[TaskWatch]:
        """Set when the task terminates."""
        with _registered(self._tasks, task_id, TaskWatch()) as watch:
            yield watch

    @contextmanager
    def watching_retry(self, retry_key: str) -> Iterator[asyncio.Event]:
        """Set when an attempt with this retry key terminates."""
        with _registered(self._retries, retry_key, asyncio.Event()) as event:
            yield event

    @contextmanager
    def ending_here(self, task_id: str) -> Iterator[None]:
        """Around this process's own attempt to terminate a task: a notification of its end that arrives
        meanwhile wakes its waiters only once the attempt is over, by when `ended_here` has handed them
        the task (or, if the attempt failed, they query it)."""
        self._ending[task_id] += 1
        try:
            yield
        finally:
            self._ending[task_id] -= 1
            if not self._ending[task_id]:
                del self._ending[task_id]
                if task_id in self._noticed:
                    self._noticed.discard(task_id)
                    for watch in self._tasks.get(task_id, ()):
                        watch.set()

    def ended_here(self, tasks: Iterable[Task]) -> None:
        """Tasks this process just terminated, committed: their waiters here take them as they are."""
        for task in tasks:
            for watch in self._tasks.get(task.id, ()):
                watch.ended = task
                watch.set()

    async def _supervise(self) -> None:
        delay = 0.2
        while True:
            try:
                conn = await asyncpg.connect(self._url)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cannot connect to LISTEN, retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                await self._listen_until_lost(conn)
                delay = 0.2
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN failed, reconnecting", extra={"error": type(exc).__name__})
            finally:
                self._listening.clear()
                conn.terminate()

    async def _listen_until_lost(self, conn: Any) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(self.created_channel, self._on_created)
        await conn.add_listener(self.terminated_channel, self._on_terminated)
        self._listening.set()
        # what was notified while nobody listened is found by re-querying
        self._wake_all()
        await lost.wait()
        log.warning("LISTEN connection lost, reconnecting")

    def _on_created(self, _conn: Any, _pid: int, _channel: str, group_key: str) -> None:
        self._wake_groups(group_key)

    def _on_terminated(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        task_id, retry_key, max_concurrency, group_key = payload.split(" ", 3)
        if task_id in self._ending:
            self._noticed.add(task_id)
        else:
            for watch in self._tasks.get(task_id, ()):
                watch.set()
        for event in self._retries.get(retry_key, ()):
            event.set()
        # a finished task frees a slot only in a limited group; unlimited ones had no one waiting on it
        if max_concurrency != "0":
            self._wake_groups(group_key)

    def _wake_groups(self, group_key: str) -> None:
        for event, pattern in self._groups.items():
            if pattern.matches(group_key):
                event.set()

    def _wake_all(self) -> None:
        for event in self._groups:
            event.set()
        for registry in (self._tasks, self._retries):
            for events in registry.values():
                for event in events:
                    event.set()


E = TypeVar("E", bound=asyncio.Event)


@contextmanager
def _registered(registry: defaultdict[str, set[E]], key: str, event: E) -> Iterator[E]:
    registry[key].add(event)
    try:
        yield event
    finally:
        waiters = registry[key]
        waiters.discard(event)
        if not waiters:
            del registry[key]
