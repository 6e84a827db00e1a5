"""The webhook outbox: events the server must hand to other services durably (docs/webhooks.md).

An event is written into `webhook_outbox` in the transaction of the change it announces (a new
connection, a failed refresh, an incoming provider webhook); the relay hands it over and deletes
the row only once the receiver answered:

- a `Delivery` goes to jobs (`EnqueueWebhooks`), which stores one delivery per URL and sends it;
- a `TaskToCreate` goes to the orchestrator (`CreateTasks`, a webhook task run by jobs).

At least once: a crash after the hand-over but before the delete sends the row again, which jobs
ignores (it stores an event id once). Any number of replicas relay at the same time: each claims
rows with `FOR UPDATE SKIP LOCKED`. `add()` wakes the relay of its own process at once; the other
replicas' relays find rows within POLL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg

from nango.errors import AlreadyExists, InvalidRequest, NangoError, NotFound
from nango.jobs.client import JobsClient, OutgoingWebhook
from nango.orchestrator.client import GroupQueueFull, OrchestratorClient, TaskGroup, TaskSpec, TaskTimeouts
from nango.server.store.webhooks import OutboxRow, OutboxStore

log = logging.getLogger(__name__)

# reference §8.4: webhook tasks
WEBHOOK_TASK_TIMEOUTS = TaskTimeouts(
    created_to_started=timedelta(minutes=5), started_to_completed=timedelta(minutes=60), heartbeat=timedelta(minutes=5)
)
WEBHOOK_TASK_MAX_CONCURRENCY = 500
BATCH_SIZE = 500
POLL_SECONDS = 0.5
# after a wake-up by add(conn): time for the caller's transaction to commit before the rows are claimed
WAKE_DELAY_SECONDS = 0.02
MAX_BACKOFF_SECONDS = 30.0
# a row refused for itself is tried again later, the delay doubling up to this
MAX_ROW_DELAY_SECONDS = 3600.0


def _event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Delivery:
    """One outgoing webhook (becomes one `OutgoingWebhook` of jobs.proto)."""

    environment_id: int
    # "auth" | "forward" (jobs itself makes "sync" and "async_action")
    type: str
    # the payload of §7.2 / §7.1: a JSON object (a forward without a matched connection sends the raw body)
    body: Mapping[str, Any]
    # settings.destinations(override)
    urls: tuple[str, ...]
    # forwarded provider headers (forward only)
    headers: Mapping[str, str] = field(default_factory=dict)
    connection_id: str = ""
    provider_config_key: str = ""
    # X-Nango-Delivery-Id: the same for every attempt and every URL of this event
    event_id: str = field(default_factory=_event_id)


@dataclass(frozen=True)
class TaskToCreate:
    """An orchestrator task the relay creates (a `webhook` task, docs/functions.md)."""

    # a uuid4: the task's name, the same however often the relay sends it
    name: str
    # "webhook:environment:<id>"
    group_key: str
    # TaskArgs JSON (docs/functions.md, type "webhook"); carries environment_id
    args: Mapping[str, Any]
    max_concurrency: int = WEBHOOK_TASK_MAX_CONCURRENCY
    retry_max: int = 0
    timeouts: TaskTimeouts = WEBHOOK_TASK_TIMEOUTS

    @property
    def environment_id(self) -> int:
        value = self.args.get("environment_id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        prefix, _, tail = self.group_key.rpartition(":")
        if prefix.endswith("environment") and tail.isdigit():
            return int(tail)
        raise ValueError(f"task {self.name}: args carry no environment_id and the group key names none")


OutboxItem = Delivery | TaskToCreate


def _encode(item: OutboxItem) -> tuple[str, int, str]:
    if isinstance(item, Delivery):
        data: dict[str, Any] = {
            "event_id": item.event_id,
            "type": item.type,
            "body": item.body,
            "urls": list(item.urls),
            "headers": dict(item.headers),
            "connection_id": item.connection_id,
            "provider_config_key": item.provider_config_key,
        }
        return "delivery", item.environment_id, json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    timeouts = item.timeouts
    data = {
        "name": item.name,
        "group_key": item.group_key,
        "args": item.args,
        "max_concurrency": item.max_concurrency,
        "retry_max": item.retry_max,
        "timeouts": [
            timeouts.created_to_started.total_seconds(),
            timeouts.started_to_completed.total_seconds(),
            timeouts.heartbeat.total_seconds(),
        ],
    }
    return "task", item.environment_id, json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode(row: OutboxRow) -> OutboxItem:
    data = json.loads(row.item)
    if row.kind == "delivery":
        return Delivery(
            environment_id=row.environment_id,
            type=data["type"],
            body=data["body"],
            urls=tuple(data["urls"]),
            headers=data.get("headers") or {},
            connection_id=data.get("connection_id", ""),
            provider_config_key=data.get("provider_config_key", ""),
            event_id=data["event_id"],
        )
    created_to_started, started_to_completed, heartbeat = data["timeouts"]
    return TaskToCreate(
        name=data["name"],
        group_key=data["group_key"],
        args=data["args"],
        max_concurrency=data["max_concurrency"],
        retry_max=data["retry_max"],
        timeouts=TaskTimeouts(
            created_to_started=timedelta(seconds=created_to_started),
            started_to_completed=timedelta(seconds=started_to_completed),
            heartbeat=timedelta(seconds=heartbeat),
        ),
    )


class WebhookOutbox:
    def __init__(self, store: OutboxStore) -> None:
        self.store = store
        # set by add(): the relay of this process looks at once
        self.added = asyncio.Event()

    async def add(self, items: Sequence[Delivery | TaskToCreate], conn: asyncpg.Connection | None = None) -> None:
        """Stores the items, in `conn`'s transaction when given. Items with no URL are dropped here."""
        kept = [item for item in items if not isinstance(item, Delivery) or item.urls]
        if not kept:
            return
        await self.store.insert([_encode(item) for item in kept], conn)
        # with `conn` the rows appear at its commit; the relay's poll finds them if this wake-up is early
        self.added.set()


def _refused_for_itself(exc: NangoError) -> bool:
    """The receiver answered, and refused these items (not: it was unreachable)."""
    return isinstance(exc, InvalidRequest | GroupQueueFull | NotFound)


class Unreachable(Exception):
    """jobs or the orchestrator could not take the batch (down, timing out, not serving the call yet)."""

    def __init__(self, service: str, error: NangoError) -> None:
        super().__init__(f"{service}: {error.instance_code}")
        self.service = service
        self.error = error


class OutboxRelay:
    """Hands outbox rows to jobs and the orchestrator; `start()`/`stop()` like the other daemons."""

    name = "webhook-outbox-relay"

    def __init__(
        self,
        outbox: WebhookOutbox,
        pool: asyncpg.Pool,
        jobs: JobsClient,
        orchestrator: OrchestratorClient,
        *,
        batch_size: int = BATCH_SIZE,
        poll_seconds: float = POLL_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.outbox = outbox
        self.pool = pool
        self.jobs = jobs
        self.orchestrator = orchestrator
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._task: asyncio.Task[None] | None = None
        self._unreachable: set[str] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        backoff = 0.0
        while True:
            # cleared before the pass: an add() during it makes the next wait return at once
            self.outbox.added.clear()
            try:
                handed = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Unreachable as exc:
                if exc.service not in self._unreachable:
                    self._unreachable.add(exc.service)
                    log.warning(
                        "webhook outbox: service unreachable, holding events until it answers",
                        extra={"service": exc.service, "error": exc.error.instance_code},
                    )
                backoff = min(max(backoff * 2, self.poll_seconds), self.max_backoff_seconds)
                await asyncio.sleep(backoff)
                continue
            except Exception:
                log.exception("webhook outbox relay pass failed")
                backoff = min(max(backoff * 2, self.poll_seconds), self.max_backoff_seconds)
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            if handed >= self.batch_size:
                continue
            try:
                await asyncio.wait_for(self.outbox.added.wait(), self.poll_seconds)
            except TimeoutError:
                continue
            await asyncio.sleep(WAKE_DELAY_SECONDS)

    def _reachable(self, service: str) -> None:
        if service in self._unreachable:
            self._unreachable.discard(service)
            log.info("webhook outbox: service reachable again", extra={"service": service})

    async def relay_once(self) -> int:
        """One batch: claim due rows, hand them over, delete what was taken. Returns how many rows
        were claimed; raises Unreachable (after committing what did go through) when a service is down."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await self.outbox.store.claim(conn, self.batch_size)
            if not rows:
                return 0
            deliveries: list[tuple[OutboxRow, Delivery]] = []
            tasks: list[tuple[OutboxRow, TaskToCreate]] = []
            broken: list[int] = []
            for row in rows:
                try:
                    item = decode(row)
                except (ValueError, KeyError, TypeError):
                    log.error("webhook outbox: undecodable row dropped", extra={"outbox_id": row.id})
                    broken.append(row.id)
                    continue
                if isinstance(item, Delivery):
                    deliveries.append((row, item))
                else:
                    tasks.append((row, item))
            await self.outbox.store.delete(conn, broken)
            failure: Unreachable | None = None
            for service, batch, send in (
                ("jobs", deliveries, self._send_deliveries),
                ("orchestrator", tasks, self._send_tasks),
            ):
                if not batch:
                    continue
                try:
                    done, refused = await _hand_over(batch, send)
                except NangoError as exc:
                    failure = failure or Unreachable(service, exc)
                    continue
                self._reachable(service)
                await self.outbox.store.delete(conn, done)
                if refused:
                    log.warning(
                        "webhook outbox: events refused, trying them again later",
                        extra={"service": service, "count": len(refused)},
                    )
                    await self.outbox.store.postpone(conn, refused, MAX_ROW_DELAY_SECONDS)
        if failure is not None:
            raise failure
        return len(rows)

    async def _send_deliveries(self, items: Sequence[Delivery]) -> None:
        await self.jobs.enqueue_webhooks(
            [
                OutgoingWebhook(
                    event_id=d.event_id,
                    environment_id=d.environment_id,
                    type=d.type,
                    body=d.body,
                    urls=d.urls,
                    headers=d.headers,
                    connection_id=d.connection_id,
                    provider_config_key=d.provider_config_key,
                )
                for d in items
            ]
        )

    async def _send_tasks(self, items: Sequence[TaskToCreate]) -> None:
        await self.orchestrator.create_tasks(
            [
                TaskSpec(
                    name=t.name,
                    group=TaskGroup(t.group_key, t.max_concurrency),
                    args=t.args,
                    retry_max=t.retry_max,
                    timeouts=t.timeouts,
                    idempotency_key=t.name,
                )
                for t in items
            ]
        )


async def _hand_over(batch: Sequence[tuple[OutboxRow, Any]], send: Any) -> tuple[list[int], list[int]]:
    """(row ids taken, row ids refused for themselves). A batch refused as a whole is sent again one
    item at a time, so one bad item does not hold back the others; an item that exists already was
    taken by an earlier attempt. Raises the NangoError of an unreachable service."""
    try:
        await send([item for _, item in batch])
        return [row.id for row, _ in batch], []
    except AlreadyExists:
        if len(batch) == 1:
            return [batch[0][0].id], []
    except NangoError as exc:
        if not _refused_for_itself(exc):
            raise
        if len(batch) == 1:
            return [], [batch[0][0].id]
    done: list[int] = []
    refused: list[int] = []
    for row, item in batch:
        try:
            await send([item])
            done.append(row.id)
        except AlreadyExists:
            done.append(row.id)
        except NangoError as exc:
            if not _refused_for_itself(exc):
                raise
            refused.append(row.id)
    return done, refused


__all__ = [
    "WEBHOOK_TASK_TIMEOUTS",
    "Delivery",
    "OutboxRelay",
    "TaskToCreate",
    "WebhookOutbox",
    "decode",
]
