"""Sync control on an in-process server with a real orchestrator and persist, without jobs (so the
status comes from the schedule alone, as it does while jobs is down): trigger (plain, reset, empty
cache; new and legacy forms), start, pause, status, connection frequency, variants, and a table of
bad input answered with documented 4xx codes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from nango.crypto import generate_key
from nango.orchestrator.client import OrchestratorClient, ScheduleState, Task
from nango.persist.client import PersistClient, RecordScope
from tests.support.inprocess import TOKEN, InProcessServer, new_schema, server_env, start_server
from tests.support.services import add_function, orchestrator_service, persist_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEY = "crm"


@dataclass
class Stack:
    server: InProcessServer
    orchestrator: OrchestratorClient
    persist: PersistClient
    pool: asyncpg.Pool
    dev_key: str
    environment_id: int
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        sent = {"Authorization": f"Bearer {self.dev_key}", **(headers or {})}
        async with self.http.request(method, self.server.url + path, json=body, headers=sent) as response:
            return response.status, await response.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, body)
        assert status == 200, answer
        return answer

    async def connect(self, connection_id: str) -> int:
        body = {
            "provider_config_key": KEY,
            "connection_id": connection_id,
            "credentials": {"type": "API_KEY", "apiKey": "k"},
        }
        status, answer = await self.call("POST", "/connections", body)
        assert status == 201, answer
        row_id: int = await self.pool.fetchval("SELECT id FROM connections WHERE connection_id = $1", connection_id)
        return row_id

    async def sync_id(self, connection_id: str, name: str = "contacts", variant: str = "base") -> str:
        return str(
            await self.pool.fetchval(
                """SELECT s.id FROM syncs s JOIN connections c ON c.id = s.connection_id
                   WHERE c.connection_id = $1 AND s.name = $2 AND s.variant = $3""",
                connection_id,
                name,
                variant,
            )
        )

    def schedule(self, sync_id: str) -> str:
        return f"environment:{self.environment_id}:sync:{sync_id}"

    async def take(self, sync_id: str | None = None) -> Task:
        """The next sync run (of `sync_id`, finishing any other on the way), as jobs would dequeue it."""
        for _ in range(50):
            (task,) = await self.orchestrator.dequeue("sync:*", limit=1, wait=timedelta(seconds=10))
            if sync_id is None or task.args["sync_id"] == sync_id:
                return task
            await self.orchestrator.succeed(task.id, {"output": None})
        raise AssertionError(f"no run of sync {sync_id}")

    async def status(self, connection_id: str | None = None, syncs: str = "*") -> list[dict[str, Any]]:
        query = f"/sync/status?provider_config_key={KEY}&syncs={syncs}"
        answer = await self.ok("GET", query + (f"&connection_id={connection_id}" if connection_id else ""))
        found: list[dict[str, Any]] = answer["syncs"]
        return found


@pytest.fixture(scope="module")
async def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    schema, key, dev = new_schema("nango_syncctl"), generate_key(), str(uuid.uuid4())
    tmp = tmp_path_factory.mktemp("syncctl")
    async with (
        orchestrator_service(database_url, f"{schema}_orch") as orchestrator_target,
        persist_service(database_url, f"{schema}_rec", tmp, key) as persist_target,
    ):
        server = await start_server(
            server_env(
                database_url,
                schema,
                tmp,
                NANGO_ENCRYPTION_KEY=key,
                NANGO_SECRET_KEY_DEV=dev,
                ORCHESTRATOR_SERVICE_URL=orchestrator_target,
                PERSIST_SERVICE_URL=persist_target,
                # nothing listens here: sync status must do without jobs
                JOBS_SERVICE_URL="127.0.0.1:9",
                LOG_LEVEL="warning",
            )
        )
        pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema})
        orchestrator = OrchestratorClient(orchestrator_target, TOKEN)
        persist = PersistClient(persist_target, TOKEN)
        environment_id = await pool.fetchval("SELECT id FROM environments WHERE name = 'dev'")
        try:
            async with aiohttp.ClientSession() as http:
                stack = Stack(server, orchestrator, persist, pool, dev, environment_id, http)
                await stack.ok("POST", "/integrations", {"provider": "resend", "unique_key": KEY})
                await add_function(pool, environment_id, KEY, "contacts", "sync", models=["Contact", "Note"])
                await add_function(pool, environment_id, KEY, "deals", "sync", models=["Deal"], frequency="every day")
                await add_function(pool, environment_id, KEY, "send", "action")
                yield stack
        finally:
            await orchestrator.close()
            await persist.close()
            await pool.close()
            await server.stop()


async def drain(stack: Stack) -> None:
    """Start and finish every waiting sync run (a new sync runs at once), as jobs would."""
    while tasks := await stack.orchestrator.dequeue("sync:*", limit=100, wait=timedelta(seconds=0.5)):
        for task in tasks:
            await stack.orchestrator.succeed(task.id, {"output": None})


async def test_status_from_the_schedule_while_jobs_is_away(stack: Stack) -> None:
    await stack.connect("status-1")
    await drain(stack)
    found = await stack.status("status-1")
    assert [(s["name"], s["variant"], s["connection_id"]) for s in found] == [
        ("contacts", "base", "status-1"),
        ("deals", "base", "status-1"),
    ]
    contacts = found[0]
    assert contacts["id"] == await stack.sync_id("status-1")
    assert contacts["status"] == "SUCCESS"
    assert contacts["latestExecutionStatus"] == "SUCCESS"
    assert contacts["frequency"] == "every hour"
    assert contacts["finishedAt"] is not None
    assert contacts["nextScheduledSyncAt"] is not None
    assert contacts["recordCount"] == {"Contact": 0, "Note": 0}
    assert contacts["checkpoint"] is None
    assert "latestResult" not in contacts
    assert [s["name"] for s in await stack.status("status-1", "deals")] == ["deals"]
    assert await stack.status("status-1", "nope") == []


async def test_a_started_run_reads_running_and_counts_and_checkpoints_show(stack: Stack) -> None:
    row_id = await stack.connect("status-2")
    await drain(stack)
    await stack.persist.save_records(RecordScope(stack.environment_id, row_id, "Contact"), [{"id": "1"}, {"id": "2"}])
    await stack.persist.put_checkpoint(
        stack.environment_id, row_id, "sync:contacts:base", {"page": 3}, expected_version=0
    )
    await stack.ok(
        "POST", "/sync/trigger", {"syncs": ["contacts"], "provider_config_key": KEY, "connection_id": "status-2"}
    )
    task = await stack.take()
    assert task.args["sync_id"] == await stack.sync_id("status-2")
    (contacts,) = await stack.status("status-2", "contacts")
    assert (contacts["status"], contacts["latestExecutionStatus"]) == ("RUNNING", "RUNNING")
    assert contacts["recordCount"] == {"Contact": 2, "Note": 0}
    assert contacts["checkpoint"] == {"page": 3}
    await stack.orchestrator.fail(task.id, {"error": {"type": "script_error", "message": "x"}})
    (contacts,) = await stack.status("status-2", "contacts")
    assert (contacts["status"], contacts["latestExecutionStatus"]) == ("ERROR", "ERROR")


async def test_reset_and_empty_cache_clear_state_and_reach_the_run(stack: Stack) -> None:
    row_id = await stack.connect("reset-1")
    sync_id = await stack.sync_id("reset-1")
    # the new sync's first run is still waiting: a reset replaces it
    await stack.persist.save_records(RecordScope(stack.environment_id, row_id, "Contact"), [{"id": "1"}])
    for checkpoint_key in ("sync:contacts:base", "sync:contacts:base:trackDeletes:Note"):
        await stack.persist.put_checkpoint(stack.environment_id, row_id, checkpoint_key, {"a": 1}, expected_version=0)
    await stack.pool.execute("UPDATE syncs SET last_sync_date = now() WHERE id = $1", sync_id)
    body = {"syncs": [{"name": "contacts", "variant": "base"}], "connection_id": "reset-1", "opts": {"reset": True}}
    status, answer = await stack.call("POST", "/sync/trigger", body, {"Provider-Config-Key": KEY})
    assert (status, answer) == (200, {"success": True})
    task = await stack.take(sync_id)
    assert (task.args["full"], task.args["empty_cache"]) == (True, False)
    await stack.orchestrator.succeed(task.id, {"output": None})
    assert await stack.pool.fetchval("SELECT last_sync_date FROM syncs WHERE id = $1", sync_id) is None
    for checkpoint_key in ("sync:contacts:base", "sync:contacts:base:trackDeletes:Note"):
        stored = await stack.persist.get_checkpoint(stack.environment_id, row_id, checkpoint_key)
        assert stored is None or stored.deleted_at is not None
    # the schedule's own args are back to normal runs
    (schedule,) = await stack.orchestrator.search_schedules(names=[stack.schedule(sync_id)])
    assert "full" not in schedule.args
    assert (await stack.status("reset-1", "contacts"))[0]["recordCount"] == {"Contact": 1, "Note": 0}

    legacy = {"syncs": ["contacts"], "provider_config_key": KEY, "connection_id": "reset-1"}
    await stack.ok("POST", "/sync/trigger", {**legacy, "sync_mode": "full_refresh_and_clear_cache"})
    task = await stack.take(sync_id)
    assert (task.args["full"], task.args["empty_cache"]) == (True, True)
    await stack.orchestrator.succeed(task.id, {"output": None})
    assert (await stack.status("reset-1", "contacts"))[0]["recordCount"] == {"Contact": 0, "Note": 0}

    await stack.ok("POST", "/sync/trigger", {**legacy, "full_resync": False})
    task = await stack.take(sync_id)
    assert "full" not in task.args
    await stack.orchestrator.succeed(task.id, {"output": None})


async def test_trigger_everything_of_an_integration(stack: Stack) -> None:
    await stack.connect("all-1")
    await stack.connect("all-2")
    await drain(stack)
    await stack.ok("POST", "/sync/trigger", {"syncs": [], "provider_config_key": KEY})
    tasks = await stack.orchestrator.dequeue("sync:*", limit=100, wait=timedelta(seconds=5))
    ran = {(t.args["connection_id"], t.args["function"]) for t in tasks}
    assert {("all-1", "contacts"), ("all-1", "deals"), ("all-2", "contacts"), ("all-2", "deals")} <= ran
    for task in tasks:
        await stack.orchestrator.succeed(task.id, {"output": None})


async def test_pause_and_start(stack: Stack) -> None:
    await stack.connect("pause-1")
    await drain(stack)
    body = {"syncs": ["contacts"], "provider_config_key": KEY, "connection_id": "pause-1"}
    assert await stack.ok("POST", "/sync/pause", body) == {"success": True}
    (schedule,) = await stack.orchestrator.search_schedules(names=[stack.schedule(await stack.sync_id("pause-1"))])
    assert schedule.state is ScheduleState.PAUSED
    (contacts,) = await stack.status("pause-1", "contacts")
    assert (contacts["status"], contacts["nextScheduledSyncAt"]) == ("PAUSED", None)
    assert await stack.ok("POST", "/sync/start", body) == {"success": True}
    task = await stack.take()
    assert task.args["connection_id"] == "pause-1"
    (contacts,) = await stack.status("pause-1", "contacts")
    assert contacts["status"] == "RUNNING"
    await stack.orchestrator.succeed(task.id, {"output": None})


async def test_connection_frequency(stack: Stack) -> None:
    await stack.connect("freq-1")
    name = stack.schedule(await stack.sync_id("freq-1"))
    body = {
        "sync_name": "contacts",
        "provider_config_key": KEY,
        "connection_id": "freq-1",
        "frequency": "every 2 hours",
    }
    assert await stack.ok("PUT", "/sync/update-connection-frequency", body) == {"frequency": "every 2 hours"}
    (schedule,) = await stack.orchestrator.search_schedules(names=[name])
    assert schedule.frequency == timedelta(hours=2)
    assert (await stack.status("freq-1", "contacts"))[0]["frequency"] == "every 2 hours"
    reverted = await stack.ok("PUT", "/sync/update-connection-frequency", {**body, "frequency": None})
    assert reverted == {"frequency": "every hour"}
    (schedule,) = await stack.orchestrator.search_schedules(names=[name])
    assert schedule.frequency == timedelta(hours=1)
    status, answer = await stack.call("PUT", "/sync/update-connection-frequency", {**body, "frequency": "sometimes"})
    assert (status, answer["error"]) == (400, {"code": "invalid_body", "message": "Sync interval is invalid"})
    status, answer = await stack.call("PUT", "/sync/update-connection-frequency", {**body, "frequency": "10s"})
    assert (status, answer["error"]["message"]) == (400, "Sync interval is invalid")


async def test_variants(stack: Stack) -> None:
    await stack.connect("variant-1")
    body = {"provider_config_key": KEY, "connection_id": "variant-1"}
    created = await stack.ok("POST", "/sync/contacts/variant/eu", body)
    assert created == {"id": await stack.sync_id("variant-1", "contacts", "eu"), "name": "contacts", "variant": "eu"}
    assert await stack.orchestrator.search_schedules(names=[stack.schedule(created["id"])])
    found = await stack.status("variant-1", "contacts::eu")
    assert [(s["name"], s["variant"]) for s in found] == [("contacts", "eu")]
    status, answer = await stack.call("POST", "/sync/contacts/variant/eu", body)
    assert (status, answer["error"]["code"]) == (400, "sync_variant_already_exists")
    for method in ("POST", "DELETE"):
        status, answer = await stack.call(method, "/sync/contacts/variant/Base", body)
        assert (status, answer["error"]["code"]) == (400, "invalid_variant")
    status, answer = await stack.call("POST", "/sync/send/variant/eu", body)
    assert (status, answer["error"]["code"]) == (400, "unknown_sync")
    assert await stack.ok("DELETE", "/sync/contacts/variant/eu", body) == {"success": True}
    assert await stack.orchestrator.search_schedules(names=[stack.schedule(created["id"])]) == []
    status, answer = await stack.call("DELETE", "/sync/contacts/variant/eu", body)
    assert (status, answer["error"]["code"]) == (404, "not_found")


TRIGGER = {"syncs": ["contacts"], "provider_config_key": KEY}
FREQUENCY = {"sync_name": "contacts", "provider_config_key": KEY, "connection_id": "bad-1", "frequency": "1h"}
VARIANT = {"provider_config_key": KEY, "connection_id": "bad-1"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/sync/trigger", {"syncs": ["contacts"]}, 400, "missing_provider_config_key"),
        (
            "POST",
            "/sync/trigger",
            {**TRIGGER, "opts": {"reset": True}, "sync_mode": "incremental"},
            400,
            "invalid_body",
        ),
        ("POST", "/sync/trigger", {**TRIGGER, "sync_mode": "sometimes"}, 400, "invalid_body"),
        ("POST", "/sync/trigger", {**TRIGGER, "opts": {"reset": "yes"}}, 400, "invalid_body"),
        ("POST", "/sync/trigger", {**TRIGGER, "opts": {"purge": True}}, 400, "invalid_body"),
        ("POST", "/sync/trigger", {**TRIGGER, "syncs": "contacts"}, 400, "invalid_body"),
        ("POST", "/sync/trigger", {**TRIGGER, "syncs": [{"name": "contacts"}]}, 400, "invalid_body"),
        ("POST", "/sync/trigger", {**TRIGGER, "syncs": ["bad name"]}, 400, "invalid_body"),
        ("POST", "/sync/trigger", {**TRIGGER, "connection_id": "nobody"}, 400, "unknown_connection"),
        ("POST", "/sync/trigger", {**TRIGGER, "provider_config_key": "nope"}, 404, "unknown_provider_config"),
        ("POST", "/sync/trigger", {**TRIGGER, "syncs": ["nope"]}, 400, "no_syncs_found"),
        ("POST", "/sync/trigger?x=1", TRIGGER, 400, "invalid_query_params"),
        ("POST", "/sync/start", {"syncs": ["contacts"]}, 400, "invalid_body"),
        ("POST", "/sync/start", {**TRIGGER, "connection_id": "nobody"}, 400, "unknown_connection"),
        ("POST", "/sync/pause", {**TRIGGER, "syncs": ["nope"], "connection_id": "bad-1"}, 400, "no_syncs_found"),
        ("GET", f"/sync/status?provider_config_key={KEY}", None, 400, "invalid_query_params"),
        ("GET", "/sync/status?syncs=*", None, 400, "invalid_query_params"),
        ("GET", f"/sync/status?syncs=a%20b&provider_config_key={KEY}", None, 400, "invalid_query_params"),
        (
            "GET",
            f"/sync/status?syncs=*&provider_config_key={KEY}&connection_id=nobody",
            None,
            400,
            "unknown_connection",
        ),
        ("GET", "/sync/status?syncs=*&provider_config_key=nope", None, 404, "unknown_provider_config"),
        (
            "PUT",
            "/sync/update-connection-frequency",
            {k: v for k, v in FREQUENCY.items() if k != "frequency"},
            400,
            "invalid_body",
        ),
        ("PUT", "/sync/update-connection-frequency", {**FREQUENCY, "sync_name": "nope"}, 400, "unknown_sync"),
        (
            "PUT",
            "/sync/update-connection-frequency",
            {**FREQUENCY, "connection_id": "nobody"},
            400,
            "unknown_connection",
        ),
        ("PUT", "/sync/update-connection-frequency", {**FREQUENCY, "frequency": 5}, 400, "invalid_body"),
        ("POST", "/sync/contacts/variant/eu", {**VARIANT, "connection_id": "nobody"}, 400, "unknown_connection"),
        ("POST", "/sync/contacts/variant/e%20u", VARIANT, 400, "invalid_uri_params"),
        ("POST", "/sync/contacts/variant/eu", {"provider_config_key": KEY}, 400, "invalid_body"),
        ("DELETE", "/sync/contacts/variant/eu", {**VARIANT, "extra": 1}, 400, "invalid_body"),
    ],
)
async def test_bad_input_gets_its_documented_code(
    stack: Stack, method: str, path: str, body: Any, status: int, code: str
) -> None:
    if not await stack.pool.fetchval("SELECT 1 FROM connections WHERE connection_id = 'bad-1'"):
        await stack.connect("bad-1")
    got, answer = await stack.call(method, path, body)
    assert (got, answer["error"]["code"]) == (status, code), answer
