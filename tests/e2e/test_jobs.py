"""Jobs in `nango up`: sync runs dispatched to the runner with their sync-job history, records in
persist and last_sync_date on the server; actions ending with their output or error; and a runner
killed with SIGKILL in the middle of a sync, whose task expires and whose next run completes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psutil
import pytest
import yaml
from aiohttp import web

from nango.errors import ServiceUnavailable
from nango.grpckit import check_health
from nango.jobs.client import (
    FunctionFailure,
    JobsClient,
    SyncJob,
    SyncJobStatus,
    SyncJobType,
    TaskCompletion,
    UnknownTask,
)
from nango.orchestrator.client import (
    OrchestratorClient,
    Schedule,
    ScheduleState,
    Task,
    TaskGroup,
    TaskSpec,
    TaskState,
    TaskTimeouts,
)
from nango.persist.client import PersistClient
from nango.persist.models import RecordScope
from nango.server.client import ServerClient
from tests.conftest import free_port
from tests.support.platform import Up, start_up
from tests.support.proxy import provider

pytestmark = pytest.mark.e2e

MODELS = """
from nango.sdk import Model


class Contact(Model):
    id: str
    name: str
"""

CONTACTS = """
from models import Contact

from nango.sdk import sync


@sync(description="Contacts", frequency="every hour", models=[Contact], track_deletes=True)
async def contacts(nango):
    async for page in nango.paginate(endpoint="/contacts", paginate={"limit": 2}):
        await nango.batch_save([Contact(id=c["id"], name=c["name"]) for c in page], "Contact")
"""

ACTIONS = """
from nango.sdk import ActionError, action


@action(description="Counts the contacts")
async def count_contacts(nango, input):
    r = await nango.get(endpoint="/contacts", params={"limit": 100})
    return {"count": len(r.json()["data"]), "echo": input}


@action(description="Refuses")
async def refuse(nango, input):
    raise ActionError({"reason": "not today", "input": input})
"""

FILES = {"models.py": MODELS, "contacts.py": CONTACTS, "actions.py": ACTIONS}
INTEGRATION = "crm"
# the runner heartbeats every 0.3 s; a sync task silent for 3 s expires
HEARTBEAT_TIMEOUT = 3


@dataclass
class Upstream:
    """A CRM on 127.0.0.1: contacts per API key, cursor pagination, pages delayed for `slow` keys."""

    url: str = ""
    contacts: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)
    pages: dict[str, int] = field(default_factory=dict)

    def app(self) -> web.Application:
        async def list_contacts(request: web.Request) -> web.Response:
            key = request.headers.get("x-api-key", "")
            self.pages[key] = self.pages.get(key, 0) + 1
            await asyncio.sleep(self.slow.get(key, 0.0))
            rows = self.contacts.get(key, [])
            start, limit = int(request.query.get("cursor", "0")), int(request.query.get("limit", "100"))
            following = start + limit if start + limit < len(rows) else None
            return web.json_response({"data": rows[start : start + limit], "next_cursor": following})

        app = web.Application()
        app.router.add_get("/contacts", list_contacts)
        return app


@dataclass
class Clients:
    orchestrator: OrchestratorClient
    jobs: JobsClient
    persist: PersistClient
    server: ServerClient


@dataclass
class Connected:
    connection_id: str
    api_key: str
    schedule: Schedule

    @property
    def sync_id(self) -> str:
        return str(self.schedule.args["sync_id"])

    @property
    def environment_id(self) -> int:
        return int(self.schedule.args["environment_id"])

    @property
    def nango_connection_id(self) -> int:
        return int(self.schedule.args["nango_connection_id"])


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    api = Upstream()
    port = free_port()
    api.url = f"http://127.0.0.1:{port}"
    runner = web.AppRunner(api.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield api
    await runner.cleanup()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("jobs")
    paginate = {
        "type": "cursor",
        "cursor_name_in_request": "cursor",
        "cursor_path_in_response": "next_cursor",
        "response_path": "data",
        "limit_name_in_request": "limit",
    }
    crm = provider(
        "API_KEY", proxy={"base_url": upstream.url, "headers": {"x-api-key": "${apiKey}"}, "paginate": paginate}
    )
    providers_file = tmp / "providers.yaml"
    providers_file.write_text(yaml.safe_dump({"crm": crm}))
    extra = {
        "NANGO_PROVIDERS_FILE": str(providers_file),
        "NANGO_OUTBOUND_URL_POLICY": '{"blockLoopback": false}',
        "NANGO_SYNC_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
        "RUNNER_HEARTBEAT_INTERVAL_MS": "300",
        "ORCHESTRATOR_EXPIRING_TICK_INTERVAL_MS": "200",
        "JOBS_RECONCILE_INTERVAL_MS": "300",
        "NANGO_SHUTDOWN_GRACE_SECONDS": "2",
        "RUNNER_CAPACITY": "1",
        "JOBS_RUNNER_RETRY_MS": "100",
    }
    up = start_up(tmp, extra_env=extra, name="jobs").wait_ready()
    yield up
    assert up.stop() == 0


@pytest.fixture(scope="module")
async def clients(platform: Up) -> AsyncIterator[Clients]:
    token = platform.internal_token
    ports = platform.ports
    found = Clients(
        OrchestratorClient(f"127.0.0.1:{ports['NANGO_ORCHESTRATOR_PORT']}", token),
        JobsClient(f"127.0.0.1:{ports['NANGO_JOBS_PORT']}", token),
        PersistClient(f"127.0.0.1:{ports['NANGO_PERSIST_PORT']}", token),
        ServerClient(f"127.0.0.1:{ports['NANGO_SERVER_GRPC_PORT']}", token),
    )
    yield found
    for client in (found.orchestrator, found.jobs, found.persist, found.server):
        await client.close()


async def call(up: Up, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {up.dev_key}"}) as http,
        http.request(method, up.api + path, json=body) as response,
    ):
        return response.status, await response.json(content_type=None)


@pytest.fixture(scope="module")
async def deployed(platform: Up) -> str:
    status, answer = await call(platform, "POST", "/integrations", {"provider": "crm", "unique_key": INTEGRATION})
    assert status == 200, answer
    payload = {"integrations": {INTEGRATION: {"files": FILES}}, "confirm": True}
    status, answer = await call(platform, "POST", "/functions/deploy", payload)
    assert (status, answer.get("applied")) == (200, True), answer
    return INTEGRATION


_keys = itertools.count(1)


def contacts(*names: str) -> list[dict[str, str]]:
    return [{"id": name, "name": name.upper()} for name in names]


async def connect(
    up: Up, clients: Clients, upstream: Upstream, name: str, rows: list[dict[str, str]], *, slow: float = 0.0
) -> Connected:
    """A connection whose API key sees `rows` upstream; its sync's first run starts at once."""
    api_key = f"key-{name}-{next(_keys)}"
    upstream.contacts[api_key] = rows
    if slow:
        upstream.slow[api_key] = slow
    body = {
        "provider_config_key": INTEGRATION,
        "connection_id": name,
        "credentials": {"type": "API_KEY", "apiKey": api_key},
    }
    status, answer = await call(up, "POST", "/connections", body)
    assert status == 201, answer
    async with asyncio.timeout(10):
        while True:
            schedules = await clients.orchestrator.search_schedules(state=ScheduleState.STARTED, limit=1000)
            mine = [s for s in schedules if s.args.get("connection_id") == name]
            if mine:
                return Connected(name, api_key, mine[0])
            await asyncio.sleep(0.1)


async def latest_job(clients: Clients, sync_id: str) -> SyncJob | None:
    # after jobs restarted, this client's channel fails fast until its reconnect back-off ends
    async with asyncio.timeout(15):
        while True:
            try:
                jobs = await clients.jobs.list_sync_jobs([sync_id], latest_only=True)
            except ServiceUnavailable:
                await asyncio.sleep(0.1)
                continue
            return jobs[0] if jobs else None


async def wait_job(clients: Clients, sync_id: str, *, after: int = 0, timeout: float = 20.0) -> SyncJob:
    """The first job newer than `after` once it has ended."""
    async with asyncio.timeout(timeout):
        while True:
            job = await latest_job(clients, sync_id)
            if job is not None and job.id > after and job.status is not SyncJobStatus.RUNNING:
                return job
            await asyncio.sleep(0.1)


async def all_records(clients: Clients, connected: Connected) -> list[dict[str, Any]]:
    """Every stored record of the connection, deleted ones included, in cursor order."""
    scope = RecordScope(connected.environment_id, connected.nango_connection_id, "Contact")
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await clients.persist.get_records(scope, cursor=cursor, limit=100)
        found += page.records()
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


async def live_records(clients: Clients, connected: Connected) -> dict[str, str]:
    return {
        r["id"]: r["name"] for r in await all_records(clients, connected) if r["_nango_metadata"]["deleted_at"] is None
    }


def upstream_view(upstream: Upstream, connected: Connected) -> dict[str, str]:
    return {c["id"]: c["name"] for c in upstream.contacts[connected.api_key]}


def counts(job: SyncJob) -> dict[str, tuple[int, int, int]]:
    return {r.model: (r.added, r.updated, r.deleted) for r in job.results}


async def run_sync(clients: Clients, connected: Connected) -> Task:
    task = await clients.orchestrator.run_schedule(connected.schedule.name)
    assert task.state in (TaskState.CREATED, TaskState.STARTED)
    return task


async def test_sync_runs_record_jobs_counts_and_last_sync_date(
    platform: Up, clients: Clients, upstream: Upstream, deployed: str
) -> None:
    connected = await connect(platform, clients, upstream, "sync-counts", contacts("a1", "a2", "a3", "a4", "a5"))

    first = await wait_job(clients, connected.sync_id)
    assert (first.status, first.type) == (SyncJobStatus.SUCCESS, SyncJobType.FULL), first.error
    assert counts(first) == {"Contact": (5, 0, 0)}
    assert first.ended_at is not None
    assert first.ended_at >= first.started_at
    assert await live_records(clients, connected) == upstream_view(upstream, connected)
    context = await clients.server.get_sync_run_context(connected.sync_id)
    assert context.sync.last_sync_date == first.started_at

    rows = upstream.contacts[connected.api_key]
    rows[0] = {"id": "a1", "name": "RENAMED"}
    del rows[4]
    rows.append({"id": "a6", "name": "A6"})
    task = await run_sync(clients, connected)
    second = await wait_job(clients, connected.sync_id, after=first.id)
    assert (second.status, second.type, second.task_id) == (SyncJobStatus.SUCCESS, SyncJobType.INCREMENTAL, task.id)
    assert counts(second) == {"Contact": (1, 1, 1)}
    assert await live_records(clients, connected) == upstream_view(upstream, connected)
    context = await clients.server.get_sync_run_context(connected.sync_id)
    assert context.sync.last_sync_date == second.started_at > first.started_at
    ended = await clients.orchestrator.get_task_output(task.id)
    assert (ended.state, ended.output) == (TaskState.SUCCEEDED, {"output": None})

    history = await clients.jobs.list_sync_jobs([connected.sync_id])
    assert [j.id for j in history] == [second.id, first.id]


def action_args(connected: Connected, function: str, payload: Any) -> dict[str, Any]:
    return {
        "type": "action",
        "environment_id": connected.environment_id,
        "nango_connection_id": connected.nango_connection_id,
        "connection_id": connected.connection_id,
        "provider_config_key": INTEGRATION,
        "function": function,
        "input": payload,
        "async": False,
    }


async def run_action(
    clients: Clients, connected: Connected, function: str, payload: Any, *, timeout: float = 30.0
) -> Task:
    spec = TaskSpec(
        name=f"action:{function}:{next(_keys)}",
        group=TaskGroup(f"action:environment:{connected.environment_id}"),
        args=action_args(connected, function, payload),
        timeouts=TaskTimeouts(timedelta(seconds=30), timedelta(seconds=60), timedelta(seconds=60)),
    )
    task = await clients.orchestrator.create_task(spec)
    ended = await clients.orchestrator.get_task_output(task.id, wait=timedelta(seconds=timeout))
    assert ended.terminated, ended
    return ended


async def test_actions_end_with_their_output_or_their_error(
    platform: Up, clients: Clients, upstream: Upstream, deployed: str
) -> None:
    connected = await connect(platform, clients, upstream, "actions", contacts("b1", "b2", "b3"))

    done = await run_action(clients, connected, "count_contacts", {"hello": "world"})
    assert (done.state, done.output) == (TaskState.SUCCEEDED, {"output": {"count": 3, "echo": {"hello": "world"}}})

    refused = await run_action(clients, connected, "refuse", {"n": 1})
    assert refused.state is TaskState.FAILED
    error = refused.output["error"]
    assert (error["type"], error["status"]) == ("action_script_runtime_error", 500)
    assert error["payload"] == {"reason": "not today", "input": {"n": 1}}

    unknown = await run_action(clients, connected, "no_such_action", None)
    assert unknown.state is TaskState.FAILED
    assert unknown.output["error"]["status"] == 404


async def test_an_action_runs_the_bundle_it_was_triggered_with_and_a_retry_asks_the_server(
    platform: Up, clients: Clients, upstream: Upstream, deployed: str
) -> None:
    connected = await connect(platform, clients, upstream, "carried", contacts("d1", "d2"))
    function = await clients.server.get_function_config(
        connected.environment_id, INTEGRATION, "count_contacts", "action"
    )
    # the first attempt runs the carried bundle without asking the server: a wrong hash makes it fail;
    # the retry asks the server and runs the deployed bundle
    spec = TaskSpec(
        name=f"action:carried:{next(_keys)}",
        group=TaskGroup(f"action:environment:{connected.environment_id}"),
        args={
            **action_args(connected, "count_contacts", None),
            "bundle": {"id": function.id, "version": function.version, "key": function.bundle_key, "sha256": "0" * 64},
        },
        retry_max=1,
        timeouts=TaskTimeouts(timedelta(seconds=30), timedelta(seconds=60), timedelta(seconds=60)),
        owner_key="test:carried",
    )
    task = await clients.orchestrator.create_task(spec)
    async with asyncio.timeout(30):
        while True:
            ended = await clients.orchestrator.get_retry_output(
                task.retry_key, "test:carried", wait=timedelta(seconds=10)
            )
            if ended.retry_count == 1 and ended.terminated:
                break
            await asyncio.sleep(0.1)
    assert (ended.state, ended.output, ended.retry_count) == (
        TaskState.SUCCEEDED,
        {"output": {"count": 2, "echo": None}},
        1,
    )


async def test_a_result_counts_once_and_an_ended_task_is_told_to_stop(
    platform: Up, clients: Clients, upstream: Upstream, deployed: str
) -> None:
    connected = await connect(platform, clients, upstream, "once", contacts("c1"))
    done = await run_action(clients, connected, "count_contacts", None)
    assert done.state is TaskState.SUCCEEDED

    # a runner repeating its report, even with another result, changes nothing
    await clients.jobs.complete_task(TaskCompletion(done.id, error=FunctionFailure("script_error", "late")))
    again = await clients.orchestrator.get_task_output(done.id)
    assert (again.state, again.output) == (TaskState.SUCCEEDED, done.output)
    assert await clients.jobs.heartbeat_task(done.id) is True
    with pytest.raises(UnknownTask):
        await clients.jobs.complete_task(TaskCompletion(str(uuid.uuid4()), output=1))


async def test_a_full_runner_makes_tasks_wait_not_fail(
    platform: Up, clients: Clients, upstream: Upstream, deployed: str
) -> None:
    # RUNNER_CAPACITY is 1: the action waits for the slow sync to end, then runs
    connected = await connect(platform, clients, upstream, "full-runner", contacts("d1", "d2", "d3", "d4"), slow=0.7)
    async with asyncio.timeout(10):
        while upstream.pages.get(connected.api_key, 0) < 1:
            await asyncio.sleep(0.02)
    action = await run_action(clients, connected, "count_contacts", None)
    assert (action.state, action.output) == (TaskState.SUCCEEDED, {"output": {"count": 4, "echo": None}})
    sync = await wait_job(clients, connected.sync_id)
    assert sync.status is SyncJobStatus.SUCCESS
    assert sync.ended_at is not None
    assert action.last_state_transition_at >= sync.ended_at


def service_process(up: Up, service: str) -> psutil.Process | None:
    """The process of `python -m nango.<service>` among nango up's children (None while it restarts)."""
    for child in psutil.Process(up.process.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if f"nango.{service}" in child.cmdline():
                return child
    return None


def running_service(up: Up, service: str) -> psutil.Process:
    found = service_process(up, service)
    assert found is not None, f"no {service} process among nango up's children"
    return found


async def wait_restarted(up: Up, service: str, port: str, old_pid: int) -> None:
    async with asyncio.timeout(30):
        while True:
            found = service_process(up, service)
            if found is not None and found.pid != old_pid and await check_health(f"127.0.0.1:{up.ports[port]}"):
                return
            await asyncio.sleep(0.1)


async def test_a_stopping_jobs_lets_running_syncs_finish(
    platform: Up, clients: Clients, upstream: Upstream, deployed: str
) -> None:
    connected = await connect(platform, clients, upstream, "drained", contacts("e1", "e2", "e3", "e4", "e5"), slow=0.4)
    async with asyncio.timeout(10):
        while upstream.pages.get(connected.api_key, 0) < 1:
            await asyncio.sleep(0.02)
    jobs = running_service(platform, "jobs")
    jobs.send_signal(signal.SIGTERM)
    # the grace period is 2 s: the run (three pages of 0.4 s) ends while the old process drains
    await asyncio.to_thread(jobs.wait, 10)
    gone_at = datetime.now(UTC)
    await wait_restarted(platform, "jobs", "NANGO_JOBS_PORT", jobs.pid)
    job = await wait_job(clients, connected.sync_id)
    assert job.status is SyncJobStatus.SUCCESS
    assert counts(job) == {"Contact": (5, 0, 0)}
    assert job.ended_at is not None
    assert job.ended_at < gone_at


async def test_runner_killed_mid_sync_expires_the_task_and_the_next_run_completes(
    platform: Up, clients: Clients, upstream: Upstream, deployed: str
) -> None:
    rows = contacts(*(f"k{i}" for i in range(10)))
    connected = await connect(platform, clients, upstream, "killed", rows, slow=1.0)
    async with asyncio.timeout(20):
        while upstream.pages.get(connected.api_key, 0) < 2:
            await asyncio.sleep(0.05)
    running = await latest_job(clients, connected.sync_id)
    assert running is not None
    assert running.status is SyncJobStatus.RUNNING

    killed = running_service(platform, "runner")
    os.kill(killed.pid, signal.SIGKILL)

    lost = await wait_job(clients, connected.sync_id, timeout=HEARTBEAT_TIMEOUT + 15)
    assert lost.id == running.id
    assert lost.status is SyncJobStatus.ERROR
    assert lost.error is not None
    assert lost.error.type == "task_expired"
    assert "heartbeat" in lost.error.message
    expired = await clients.orchestrator.get_task_output(running.task_id)
    assert expired.state is TaskState.EXPIRED

    await wait_restarted(platform, "runner", "NANGO_RUNNER_PORT", killed.pid)
    upstream.slow.pop(connected.api_key)
    del rows[3]
    rows.append({"id": "k10", "name": "K10"})
    await run_sync(clients, connected)
    recovered = await wait_job(clients, connected.sync_id, after=lost.id)
    assert recovered.status is SyncJobStatus.SUCCESS, recovered.error
    # exactly the upstream: every live payload equal, no id stored twice, only k3 (if the lost run got
    # that far) marked deleted
    stored = await all_records(clients, connected)
    ids = [r["id"] for r in stored]
    assert len(ids) == len(set(ids))
    live = {
        r["id"]: {k: v for k, v in r.items() if k != "_nango_metadata"}
        for r in stored
        if r["_nango_metadata"]["deleted_at"] is None
    }
    assert live == {c["id"]: c for c in upstream.contacts[connected.api_key]}
    assert set(ids) - set(live) <= {"k3"}
