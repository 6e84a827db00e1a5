"""The completion publisher against a real in-process server (its GetWebhookSettings, with the
connection's override) and the real deliveries table: which ended tasks become which webhooks, and
that publishing an ended task again stores nothing new."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from nango.crypto import Keyring, generate_key
from nango.db import create_pool, migrate_url
from nango.jobs.args import TaskArgs
from nango.jobs.events import TaskEnded
from nango.jobs.models import FunctionFailure, ModelResult, SyncJob, SyncJobStatus, SyncJobType
from nango.jobs.webhooks import payloads
from nango.jobs.webhooks.publisher import WebhookPublisher
from nango.jobs.webhooks.settings_cache import SettingsCache
from nango.jobs.webhooks.signing import stable_json
from nango.jobs.webhooks.store import DeliveryStore, StoredDelivery
from nango.orchestrator.client import Task, TaskGroup, TaskState, TaskTimeouts
from nango.runner.client import FunctionType
from nango.server.client import ServerClient
from tests.support.inprocess import TOKEN, InProcessServer, new_schema, server_env, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PRIMARY, SECONDARY, OVERRIDE = (
    "https://customer.example/primary",
    "https://customer.example/secondary",
    "https://override.example/hooks",
)
STARTED = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@dataclass
class Setup:
    server: InProcessServer
    http: aiohttp.ClientSession
    environment_id: int
    connections: dict[str, int]
    database_url: str


@pytest.fixture(scope="module")
async def setup(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    schema, key = new_schema("nango_whpub"), generate_key()
    server = await start_server(
        server_env(database_url, schema, tmp_path_factory.mktemp("whpub"), NANGO_ENCRYPTION_KEY=key)
    )
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    env = await conn.fetchrow("SELECT id, uuid, secret_key_sealed FROM environments WHERE name = 'dev'")
    dev = Keyring.from_encoded(key).open_text(env["secret_key_sealed"], aad=f"environment:{env['uuid']}:secret_key")
    http = aiohttp.ClientSession(base_url=server.url, headers={"Authorization": f"Bearer {dev}"})
    body = {
        "provider": "github",
        "unique_key": "gh",
        "credentials": {"type": "OAUTH2", "client_id": "i", "client_secret": "s"},
    }
    async with http.post("/integrations", json=body) as r:
        assert r.status == 200
    for name, override in (("alice", None), ("bob", OVERRIDE)):
        body = {
            "provider_config_key": "gh",
            "connection_id": name,
            "credentials": {"type": "OAUTH2", "access_token": f"tok-{name}"},
            **({"webhook_url_override": override} if override else {}),
        }
        async with http.post("/connections", json=body) as r:
            assert r.status == 201, await r.text()
    ids = {r["connection_id"]: r["id"] for r in await conn.fetch("SELECT id, connection_id FROM connections")}
    await conn.close()
    yield Setup(server, http, env["id"], ids, database_url)
    await http.close()
    await server.stop()


async def webhook_settings(setup: Setup, **changes: Any) -> None:
    async with setup.http.patch("/environment/webhook-settings", json=changes) as r:
        assert r.status == 200, await r.text()


@dataclass
class Publishing:
    publisher: WebhookPublisher
    store: DeliveryStore
    server: ServerClient
    woken: list[bool]

    async def rows(self) -> list[StoredDelivery]:
        return await self.store.rows()

    def fresh(self) -> WebhookPublisher:
        """A publisher whose settings cache is empty (settings changed since are read at once)."""
        return WebhookPublisher(SettingsCache(self.server), self.server, self.store)


@pytest.fixture
async def publishing(setup: Setup) -> AsyncIterator[Publishing]:
    schema = new_schema("nango_jobs_pub")
    await migrate_url(setup.database_url, schema, "nango.jobs")
    pool = await create_pool(setup.database_url, schema=schema, application_name="test-publisher", max_size=4)
    server = ServerClient(setup.server.grpc, TOKEN)
    store = DeliveryStore(pool)
    woken: list[bool] = []
    # a fresh cache each test: settings changed by the test are read at once
    publisher = WebhookPublisher(SettingsCache(server), server, store, on_enqueued=lambda: woken.append(True))
    yield Publishing(publisher, store, server, woken)
    await server.close()
    await pool.close()


def sync_args(setup: Setup, connection: str = "alice", variant: str = "base") -> TaskArgs:
    return TaskArgs(
        kind=FunctionType.SYNC,
        environment_id=setup.environment_id,
        nango_connection_id=setup.connections.get(connection, 987_654),
        connection_id=connection,
        provider_config_key="gh",
        function="issues",
        sync_id=str(uuid.uuid4()),
        variant=variant,
    )


def sync_job(status: SyncJobStatus, results: tuple[ModelResult, ...], error: FunctionFailure | None = None) -> SyncJob:
    return SyncJob(
        id=1,
        sync_id=str(uuid.uuid4()),
        task_id=str(uuid.uuid4()),
        type=SyncJobType.INCREMENTAL,
        status=status,
        results=results,
        started_at=STARTED,
        ended_at=STARTED + timedelta(seconds=5),
        error=error,
    )


def ended_task(state: TaskState, *, retry_count: int = 0, retry_max: int = 0) -> Task:
    now = datetime.now(UTC)
    return Task(
        id=str(uuid.uuid4()),
        name="action",
        group=TaskGroup("action:environment:1:async", 1),
        state=state,
        args={},
        retry_count=retry_count,
        retry_max=retry_max,
        retry_key=str(uuid.uuid4()),
        owner_key="environment:1",
        schedule_id=None,
        timeouts=TaskTimeouts(),
        created_at=now,
        starts_after=now,
        last_state_transition_at=now,
        last_heartbeat_at=now,
        output=None,
        terminated=True,
    )


async def test_a_sync_with_changes_tells_both_urls_once_per_changed_model(setup: Setup, publishing: Publishing) -> None:
    await webhook_settings(setup, primary_url=PRIMARY, secondary_url=SECONDARY, on_sync_completion_always=False)
    results = (ModelResult("Issue", 3, 1, 0), ModelResult("Comment", 0, 0, 0))
    ran = sync_job(SyncJobStatus.SUCCESS, results)
    event = TaskEnded(str(uuid.uuid4()), sync_args(setup), sync_job=ran)
    await publishing.publisher.publish(event)
    rows = await publishing.rows()
    assert sorted((r.url, r.type) for r in rows) == [(PRIMARY, "sync"), (SECONDARY, "sync")]
    assert {r.event_id for r in rows} == {payloads.event_id(event.task_id, "sync:Issue")}
    ((_, body),) = payloads.sync_success_bodies(event.args, ran, ["Issue"], always=False)
    assert {r.body for r in rows} == {stable_json(body)}
    assert publishing.woken == [True]

    # published again (a crash before it was recorded): nothing new
    await publishing.publisher.publish(event)
    assert len(await publishing.rows()) == 2
    assert publishing.woken == [True]


async def test_no_change_is_told_only_when_always_is_on(setup: Setup, publishing: Publishing) -> None:
    await webhook_settings(setup, primary_url=PRIMARY, secondary_url=None, on_sync_completion_always=False)
    quiet = sync_job(SyncJobStatus.SUCCESS, (ModelResult("Issue"),))
    await publishing.publisher.publish(TaskEnded(str(uuid.uuid4()), sync_args(setup), sync_job=quiet))
    assert await publishing.rows() == []
    await webhook_settings(setup, on_sync_completion_always=True)
    await publishing.fresh().publish(TaskEnded(str(uuid.uuid4()), sync_args(setup), sync_job=quiet))
    (row,) = await publishing.rows()
    assert (row.url, '"responseResults":{"added":0,"deleted":0,"updated":0}' in row.body) == (PRIMARY, True)


async def test_a_failed_sync_is_told_when_on_sync_error(setup: Setup, publishing: Publishing) -> None:
    await webhook_settings(setup, primary_url=PRIMARY, secondary_url=None, on_sync_error=True)
    failure = FunctionFailure("script_http_error", "upstream said 500")
    failed = sync_job(SyncJobStatus.ERROR, (ModelResult("Issue", 1, 0, 0),), failure)
    event = TaskEnded(str(uuid.uuid4()), sync_args(setup), error=failure, sync_job=failed)
    await publishing.publisher.publish(event)
    (row,) = await publishing.rows()
    assert row.event_id == payloads.event_id(event.task_id, "sync:error")
    assert '"error":{"description":"upstream said 500","type":"script_http_error"}' in row.body
    assert '"success":false' in row.body

    await webhook_settings(setup, on_sync_error=False)
    await publishing.fresh().publish(TaskEnded(str(uuid.uuid4()), sync_args(setup), error=failure, sync_job=failed))
    assert len(await publishing.rows()) == 1
    await webhook_settings(setup, on_sync_error=True)


async def test_the_connection_override_replaces_both_urls_and_gone_connections_get_nothing(
    setup: Setup, publishing: Publishing
) -> None:
    await webhook_settings(setup, primary_url=PRIMARY, secondary_url=SECONDARY)
    changed = sync_job(SyncJobStatus.SUCCESS, (ModelResult("Issue", 1, 0, 0),))
    await publishing.publisher.publish(TaskEnded(str(uuid.uuid4()), sync_args(setup, "bob"), sync_job=changed))
    (row,) = await publishing.rows()
    assert row.url == OVERRIDE
    await publishing.publisher.publish(TaskEnded(str(uuid.uuid4()), sync_args(setup, "nobody"), sync_job=changed))
    assert len(await publishing.rows()) == 1


async def test_async_actions_are_told_once_their_last_attempt_ended(setup: Setup, publishing: Publishing) -> None:
    await webhook_settings(setup, primary_url=PRIMARY, secondary_url=None, on_async_action_completion=True)
    args = TaskArgs(
        kind=FunctionType.ACTION,
        environment_id=setup.environment_id,
        nango_connection_id=setup.connections["alice"],
        connection_id="alice",
        provider_config_key="gh",
        function="create_issue",
        is_async=True,
    )
    done = ended_task(TaskState.SUCCEEDED)
    await publishing.publisher.publish(TaskEnded(done.id, args, output={"ok": 1}, ended=done))
    (row,) = await publishing.rows()
    assert row.type == "async_action"
    assert row.body == stable_json(payloads.async_action_body(args, done.retry_key))

    failure = FunctionFailure("action_script_runtime_error", "no")
    retried = ended_task(TaskState.FAILED, retry_count=0, retry_max=2)
    await publishing.publisher.publish(TaskEnded(retried.id, args, error=failure, ended=retried))
    assert len(await publishing.rows()) == 1
    last = ended_task(TaskState.FAILED, retry_count=2, retry_max=2)
    await publishing.publisher.publish(TaskEnded(last.id, args, error=failure, ended=last))
    assert len(await publishing.rows()) == 2

    # synchronous actions and other tasks tell nothing
    sync_action = TaskArgs(**{**args.__dict__, "is_async": False})
    await publishing.publisher.publish(TaskEnded(done.id + "x", sync_action, ended=done))
    assert len(await publishing.rows()) == 2
