"""The webhook outbox and its relay, on real Postgres, against a gRPC JobsService that stores what it
is given the way jobs does (once per event id and URL) and the real orchestrator.

What a user would notice: an event written with a change is handed over within a second; nothing is
lost while jobs is down, starting or refusing one bad event; several replicas never double-send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest

from nango.db import create_pool, migrate_url
from nango.errors import InvalidRequest
from nango.grpckit import RunningServer, ServiceBinding, check_health, start_server
from nango.jobs.client import JobsClient
from nango.orchestrator.app import run as run_orchestrator
from nango.orchestrator.client import OrchestratorClient, TaskState
from nango.orchestrator.settings import OrchestratorSettings
from nango.server.store.webhooks import OutboxStore
from nango.server.webhooks.outbox import (
    WEBHOOK_TASK_TIMEOUTS,
    Delivery,
    OutboxRelay,
    TaskToCreate,
    Unreachable,
    WebhookOutbox,
)
from nangopb.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKEN = "outbox-test-internal-token"
JOBS_SERVICE = "nangopb.jobs.v1.JobsService"


class FakeJobs(jobs_pb2_grpc.JobsServiceServicer):
    """EnqueueWebhooks as jobs answers it: rows stored once per (event_id, url), answered once stored;
    an event whose body says `"poison": true` is refused (INVALID_ARGUMENT) with its whole batch."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], jobs_pb2.OutgoingWebhook] = {}
        self.calls: list[list[str]] = []
        self.received_at: dict[str, float] = {}
        self.serving = True

    async def EnqueueWebhooks(
        self, request: jobs_pb2.EnqueueWebhooksRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.EnqueueWebhooksResponse:
        if not self.serving:
            # what a jobs that does not serve the call yet answers
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        ids = [w.event_id for w in request.webhooks]
        self.calls.append(ids)
        if any(json.loads(w.body_json).get("poison") for w in request.webhooks):
            raise InvalidRequest("a webhook of the batch is invalid")
        for webhook in request.webhooks:
            self.received_at.setdefault(webhook.event_id, time.monotonic())
            for url in webhook.urls:
                self.stored.setdefault((webhook.event_id, url), webhook)
        return jobs_pb2.EnqueueWebhooksResponse()

    def events(self) -> set[str]:
        return {event_id for event_id, _ in self.stored}


def fake_jobs() -> FakeJobs:
    # the generated base declares every RPC abstract; the ones not overridden answer UNIMPLEMENTED
    return FakeJobs()  # type: ignore[abstract]


@dataclass
class Env:
    pool: asyncpg.Pool
    environment_id: int
    other_environment_id: int
    jobs_port: int
    fakes: list[FakeJobs] = field(default_factory=list)
    servers: list[RunningServer] = field(default_factory=list)

    async def serve_jobs(self, fake: FakeJobs) -> None:
        self.servers.append(
            await start_server(
                [ServiceBinding(JOBS_SERVICE, fake, jobs_pb2_grpc.add_JobsServiceServicer_to_server)],
                host="127.0.0.1",
                port=self.jobs_port,
                token=TOKEN,
            )
        )

    async def stop_jobs(self) -> None:
        for server in self.servers:
            await server.stop(0)
        self.servers.clear()


@pytest.fixture(scope="module")
async def schema(database_url: str) -> tuple[str, int, int]:
    name = f"nango_outbox_{uuid.uuid4().hex[:8]}"
    await migrate_url(database_url, name, "nango.server")
    conn = await asyncpg.connect(database_url, server_settings={"search_path": name})
    account = await conn.fetchval("INSERT INTO accounts (uuid, name) VALUES ($1, 'a') RETURNING id", uuid.uuid4())
    ids = []
    for env in ("dev", "prod"):
        ids.append(
            await conn.fetchval(
                """INSERT INTO environments (account_id, uuid, name, secret_key_hash, secret_key_sealed, public_key)
                   VALUES ($1, $2, $3, $4, 'x', $5) RETURNING id""",
                account,
                uuid.uuid4(),
                env,
                uuid.uuid4().hex,
                uuid.uuid4(),
            )
        )
    await conn.close()
    return name, ids[0], ids[1]


@pytest.fixture
async def env(database_url: str, schema: tuple[str, int, int]) -> AsyncIterator[Env]:
    name, environment_id, other = schema
    pool = await create_pool(database_url, schema=name, application_name="outbox-test", max_size=6)
    await pool.execute("DELETE FROM webhook_outbox")
    state = Env(pool, environment_id, other, free_port())
    try:
        yield state
    finally:
        await state.stop_jobs()
        await pool.close()


@pytest.fixture(scope="module")
async def orchestrator(database_url: str) -> AsyncIterator[OrchestratorClient]:
    port = free_port()
    settings = OrchestratorSettings.model_validate(
        {
            "NANGO_INTERNAL_TOKEN": TOKEN,
            "NANGO_BIND_HOST": "127.0.0.1",
            "NANGO_ORCHESTRATOR_PORT": port,
            "NANGO_SHUTDOWN_GRACE_SECONDS": 1,
            "ORCHESTRATOR_DATABASE_URL": database_url,
            "ORCHESTRATOR_DATABASE_SCHEMA": f"nango_outbox_orch_{uuid.uuid4().hex[:8]}",
            "ORCHESTRATOR_DB_POOL_MAX": 4,
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_orchestrator(settings, stop))
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not await check_health(target, "nangopb.orchestrator.v1.OrchestratorService"):
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "orchestrator did not become healthy"
        await asyncio.sleep(0.05)
    client = OrchestratorClient(target, TOKEN)
    yield client
    await client.close()
    stop.set()
    await asyncio.wait_for(task, 20)


@pytest.fixture
async def relay_factory(env: Env, orchestrator: OrchestratorClient) -> AsyncIterator[Any]:
    started: list[OutboxRelay] = []

    def make(outbox: WebhookOutbox, **kwargs: Any) -> OutboxRelay:
        jobs = JobsClient(f"127.0.0.1:{env.jobs_port}", TOKEN, timeout=2.0)
        relay = OutboxRelay(outbox, env.pool, jobs, orchestrator, **kwargs)
        started.append(relay)
        return relay

    yield make
    for relay in started:
        await relay.stop()
        await relay.jobs.close()


async def _stop(*relays: OutboxRelay) -> None:
    for relay in relays:
        await relay.stop()


def _delivery(env: Env, n: int, **body: Any) -> Delivery:
    return Delivery(
        environment_id=env.environment_id,
        type="auth",
        body={"from": "nango", "type": "auth", "n": n, **body},
        urls=("https://a.example.com/hook", "https://b.example.com/hook"),
        connection_id=f"conn-{n}",
        provider_config_key="gh",
    )


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _outbox_rows(env: Env) -> int:
    return int(await env.pool.fetchval("SELECT count(*) FROM webhook_outbox"))


async def _drained(env: Env, left: int = 0) -> int:
    """Rows left once the relay deleted what it handed over (it deletes just after jobs answers)."""
    deadline = time.monotonic() + 5
    while (count := await _outbox_rows(env)) != left and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return count


async def test_add_writes_in_the_callers_transaction_and_drops_deliveries_without_urls(env: Env) -> None:
    outbox = WebhookOutbox(OutboxStore(env.pool))
    async with env.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await outbox.add([_delivery(env, 1)], conn)
        await transaction.rollback()
        assert await _outbox_rows(env) == 0
        async with conn.transaction():
            await outbox.add([_delivery(env, 2)], conn)
            # not visible to others before the commit
            assert await _outbox_rows(env) == 0
    assert await _outbox_rows(env) == 1
    no_url = Delivery(environment_id=env.environment_id, type="auth", body={"x": 1}, urls=())
    await outbox.add([no_url])
    await outbox.add([])
    assert await _outbox_rows(env) == 1
    task = TaskToCreate(
        name=str(uuid.uuid4()), group_key=f"webhook:environment:{env.environment_id}", args={"type": "webhook"}
    )
    await outbox.add([no_url, task])
    rows = await env.pool.fetch("SELECT kind, environment_id FROM webhook_outbox ORDER BY id")
    assert [(r["kind"], r["environment_id"]) for r in rows] == [
        ("delivery", env.environment_id),
        ("task", env.environment_id),
    ]


async def test_relay_hands_events_to_jobs_within_a_second(env: Env, relay_factory: Any) -> None:
    fake = fake_jobs()
    await env.serve_jobs(fake)
    outbox = WebhookOutbox(OutboxStore(env.pool))
    relay = relay_factory(outbox, poll_seconds=5.0)
    relay.start()
    try:
        await asyncio.sleep(0.1)
        forward = Delivery(
            environment_id=env.other_environment_id,
            type="forward",
            body={"from": "github", "type": "forward", "payload": {"zero": "\u0000", "emoji": "é"}},
            urls=("https://c.example.com/in",),
            headers={"x-github-event": "push"},
            connection_id="c1",
            provider_config_key="gh-app",
        )
        added_at = time.monotonic()
        async with env.pool.acquire() as conn, conn.transaction():
            await outbox.add([_delivery(env, 1), forward], conn)
        await _until(lambda: len(fake.events()) == 2, timeout=5)
        # the in-process wake-up, not the (5 s) poll, brought them
        assert max(fake.received_at.values()) - added_at < 1.0
        sent = fake.stored[(forward.event_id, "https://c.example.com/in")]
        assert sent.environment_id == env.other_environment_id
        assert (sent.type, sent.connection_id, sent.provider_config_key) == ("forward", "c1", "gh-app")
        assert dict(sent.headers) == {"x-github-event": "push"}
        assert json.loads(sent.body_json) == forward.body
        first = _delivery(env, 1)
        both = [k for k in fake.stored if k[0] != forward.event_id]
        assert sorted(url for _, url in both) == sorted(first.urls)
        assert await _drained(env) == 0
    finally:
        await _stop(relay)


async def test_nothing_is_lost_while_jobs_is_down_or_not_serving_the_call(
    env: Env, relay_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = WebhookOutbox(OutboxStore(env.pool))
    relay = relay_factory(outbox, poll_seconds=0.1, max_backoff_seconds=0.2)
    caplog.set_level(logging.INFO, logger="nango.server.webhooks.outbox")
    relay.start()
    try:
        items = [_delivery(env, n) for n in range(20)]
        await outbox.add(items)
        # nothing listens on jobs' port: several passes fail, the events stay
        await asyncio.sleep(1.0)
        assert await _outbox_rows(env) == 20
        # jobs starts but does not serve EnqueueWebhooks yet (UNIMPLEMENTED): still held
        fake = fake_jobs()
        fake.serving = False
        await env.serve_jobs(fake)
        await asyncio.sleep(0.6)
        assert await _outbox_rows(env) == 20
        assert fake.stored == {}
        # now it does: everything arrives, once per event and URL
        fake.serving = True
        await _until(lambda: len(fake.events()) == 20)
        assert await _drained(env) == 0
        assert fake.events() == {item.event_id for item in items}
        assert len(fake.stored) == 40
    finally:
        await _stop(relay)
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    # logged once for the outage (and once for the unserved call), not once per pass or per row
    assert 1 <= len(unreachable) <= 2, [r.getMessage() for r in unreachable]
    assert any("reachable again" in r.getMessage() for r in caplog.records)


async def test_a_refused_event_does_not_hold_back_the_others(env: Env, relay_factory: Any) -> None:
    fake = fake_jobs()
    await env.serve_jobs(fake)
    outbox = WebhookOutbox(OutboxStore(env.pool))
    poison = _delivery(env, 99, poison=True)
    good = [_delivery(env, n) for n in range(5)]
    await outbox.add([good[0], good[1], poison, *good[2:]])
    relay = relay_factory(outbox, poll_seconds=0.1)
    relay.start()
    try:
        await _until(lambda: len(fake.events()) == 5)
        assert await _drained(env, 1) == 1
        row = await env.pool.fetchrow("SELECT item, attempts, available_at > now() AS later FROM webhook_outbox")
        assert json.loads(row["item"])["event_id"] == poison.event_id
        assert row["attempts"] == 1
        assert row["later"] is True
        assert fake.events() == {d.event_id for d in good}
    finally:
        await _stop(relay)


async def test_a_resent_batch_is_stored_once(env: Env, relay_factory: Any) -> None:
    """A relay that dies after jobs stored a batch but before deleting it sends the same events again."""
    fake = fake_jobs()
    await env.serve_jobs(fake)
    outbox = WebhookOutbox(OutboxStore(env.pool))
    items = [_delivery(env, n) for n in range(3)]
    await outbox.add(items)
    relay = relay_factory(outbox)

    async def crash_before_delete(conn: Any, ids: Any) -> None:
        if ids:
            raise ConnectionResetError("the relay's process died")

    original = outbox.store.delete
    outbox.store.delete = crash_before_delete  # type: ignore[method-assign]
    with pytest.raises(ConnectionResetError):
        await relay.relay_once()
    outbox.store.delete = original  # type: ignore[method-assign]
    assert await _outbox_rows(env) == 3
    assert await relay.relay_once() == 3
    assert await _outbox_rows(env) == 0
    # sent twice with the same event ids, stored once
    assert fake.calls == [[i.event_id for i in items]] * 2
    assert len(fake.stored) == 6


async def test_replicas_never_send_the_same_event_twice(env: Env, relay_factory: Any) -> None:
    fake = fake_jobs()
    await env.serve_jobs(fake)
    outbox = WebhookOutbox(OutboxStore(env.pool))
    items = [_delivery(env, n) for n in range(1200)]
    for start in range(0, len(items), 300):
        await outbox.add(items[start : start + 300])
    relays = [relay_factory(WebhookOutbox(OutboxStore(env.pool)), batch_size=100, poll_seconds=0.05) for _ in range(3)]
    for relay in relays:
        relay.start()
    try:
        await _until(lambda: len(fake.events()) == 1200, timeout=60)
        sent = [event_id for call in fake.calls for event_id in call]
        assert len(sent) == 1200
        assert set(sent) == {i.event_id for i in items}
        # in batches of at most 100
        assert all(len(call) <= 100 for call in fake.calls)
        assert await _drained(env) == 0
    finally:
        await _stop(*relays)


async def test_tasks_are_created_in_the_orchestrator(
    env: Env, relay_factory: Any, orchestrator: OrchestratorClient
) -> None:
    fake = fake_jobs()
    await env.serve_jobs(fake)
    outbox = WebhookOutbox(OutboxStore(env.pool))
    group = f"webhook:environment:{env.environment_id}"
    tasks = [
        TaskToCreate(
            name=str(uuid.uuid4()),
            group_key=group,
            args={
                "type": "webhook",
                "environment_id": env.environment_id,
                "connection_id": f"c{n}",
                "input": {"n": n},
            },
        )
        for n in range(3)
    ]
    await outbox.add([*tasks, _delivery(env, 1)])
    relay = relay_factory(outbox, poll_seconds=0.1)
    relay.start()
    try:
        found: list[Any] = []

        async def created() -> bool:
            found[:] = await orchestrator.search_tasks(group_key=group, limit=10)
            return len(found) >= 3

        deadline = time.monotonic() + 10
        while not await created():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        by_name = {t.name: t for t in found}
        assert set(by_name) == {t.name for t in tasks}
        for spec in tasks:
            task = by_name[spec.name]
            assert task.state is TaskState.CREATED
            assert dict(task.args) == dict(spec.args)
            assert task.group.max_concurrency == 500
            assert task.timeouts == WEBHOOK_TASK_TIMEOUTS
        await _until(lambda: len(fake.events()) == 1)
        assert await _drained(env) == 0
    finally:
        await _stop(relay)


async def test_tasks_wait_while_the_orchestrator_is_down(env: Env) -> None:
    fake = fake_jobs()
    await env.serve_jobs(fake)
    outbox = WebhookOutbox(OutboxStore(env.pool))
    jobs = JobsClient(f"127.0.0.1:{env.jobs_port}", TOKEN, timeout=2.0)
    down = OrchestratorClient(f"127.0.0.1:{free_port()}", TOKEN, timeout=1.0)
    relay = OutboxRelay(outbox, env.pool, jobs, down)
    task = TaskToCreate(name=str(uuid.uuid4()), group_key=f"webhook:environment:{env.environment_id}", args={})
    await outbox.add([task, _delivery(env, 7)])
    try:
        with pytest.raises(Unreachable):
            await relay.relay_once()
        # the delivery went to jobs and left the outbox; the task stays for later
        assert len(fake.events()) == 1
        assert [r["kind"] for r in await env.pool.fetch("SELECT kind FROM webhook_outbox")] == ["task"]
    finally:
        await jobs.close()
        await down.close()
