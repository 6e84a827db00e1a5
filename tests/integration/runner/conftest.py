"""A platform for the runner's tests, in this event loop: the real server and persist (against the
test database), the runner, a local upstream API on 127.0.0.1, a blob store on a temp folder, and a
small jobs servicer that records what the runner reports (jobs itself is not built yet)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
import yaml
from aiohttp import web

from nango.blob import LocalBlobStore
from nango.config import load
from nango.crypto import generate_key
from nango.grpckit import RunningServer, ServiceBinding, TaskScope, check_health, mint_task_token
from nango.grpckit import start_server as start_grpc_server
from nango.jobs.client import TaskCompletion, completion_from_pb
from nango.persist.app import run as run_persist
from nango.persist.settings import PersistSettings
from nango.runner.app import run as run_runner
from nango.runner.client import (
    ConnectionContext,
    FunctionRef,
    FunctionType,
    RunnerClient,
    SyncContext,
    TaskStart,
)
from nango.runner.settings import RunnerSettings
from nangopb.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.conftest import free_port
from tests.support.inprocess import TOKEN, InProcessServer, environment, new_schema, server_env, start_server
from tests.support.proxy import provider

MODELS = """
from nango.sdk import Model


class Contact(Model):
    id: str
    name: str


class NewContact(Model):
    name: str
"""

CONTACTS = """
from models import Contact

from nango.sdk import sync


@sync(description="Contacts", frequency="every hour", models=[Contact], track_deletes=True)
async def contacts(nango):
    checkpoint = await nango.get_checkpoint() or {}
    async for page in nango.paginate(endpoint="/contacts", paginate={"limit": 2}):
        await nango.batch_save([Contact(id=c["id"], name=c["name"]) for c in page], "Contact")
    await nango.save_checkpoint({"runs": checkpoint.get("runs", 0) + 1})
    await nango.log("saved the contacts")
"""

ACTIONS = """
import asyncio

from models import Contact, NewContact

from nango.sdk import ActionError, action

STATE = {"value": None}


@action(description="Create a contact", input=NewContact, output=Contact)
async def create_contact(nango, input: NewContact) -> Contact:
    r = await nango.post(endpoint="/contacts", data=input.model_dump())
    return Contact(**r.json())


@action(description="Refuses")
async def refuse(nango, input):
    raise ActionError({"reason": "not today", "input": input})


def divide(a):
    return a / 0


@action(description="Crashes")
async def crash(nango):
    print("about to divide")
    return divide(1)


@action(description="Fails upstream")
async def upstream_error(nango):
    await nango.get("/status/404")


@action(description="Allocates until it cannot")
async def hog(nango):
    chunks = []
    for _ in range(400):
        chunks.append(bytearray(10 * 1024 * 1024))
    return len(chunks)


@action(description="Sleeps")
async def sleepy(nango, input):
    await asyncio.sleep(input["seconds"])
    return "awake"


@action(description="Remembers a value in a module global")
async def remember(nango, input):
    previous = STATE["value"]
    STATE["value"] = input["value"]
    return {"previous": previous}


@action(description="Reads a connection")
async def peek(nango, input):
    return await nango.get_connection(connection_id=input["connection_id"])


@action(description="Calls another action")
async def chain(nango):
    return await nango.trigger_action(nango.provider_config_key, nango.connection_id, "remember", {"value": 1})
"""

BUNDLE = {"models.py": MODELS, "contacts.py": CONTACTS, "actions.py": ACTIONS}


def zip_files(files: dict[str, str]) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, text in files.items():
            bundle.writestr(name, text)
    return archive.getvalue()


@dataclass
class UpstreamApi:
    """A CRM on 127.0.0.1: contacts per API key, cursor pagination (`?cursor=&limit=`)."""

    url: str = ""
    contacts: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def app(self) -> web.Application:
        async def list_contacts(request: web.Request) -> web.Response:
            rows = self.contacts.get(request.headers.get("x-api-key", ""), [])
            start, limit = int(request.query.get("cursor", "0")), int(request.query.get("limit", "100"))
            following = start + limit if start + limit < len(rows) else None
            return web.json_response({"data": rows[start : start + limit], "next_cursor": following})

        async def create_contact(request: web.Request) -> web.Response:
            body = await request.json()
            row = {"id": f"c{next(self.ids)}", "name": body["name"]}
            self.contacts.setdefault(request.headers.get("x-api-key", ""), []).append(row)
            return web.json_response(row, status=201)

        async def status(request: web.Request) -> web.Response:
            return web.json_response({"error": "nope"}, status=int(request.match_info["code"]))

        app = web.Application()
        app.router.add_get("/contacts", list_contacts)
        app.router.add_post("/contacts", create_contact)
        app.router.add_get("/status/{code}", status)
        return app


class JobsRecorder(jobs_pb2_grpc.JobsServiceServicer):
    """Plays jobs for the runner: records results and heartbeats, says stop when told to."""

    def __init__(self) -> None:
        self.completions: dict[str, TaskCompletion] = {}
        self.waiters: dict[str, asyncio.Future[TaskCompletion]] = {}
        self.heartbeats: dict[str, int] = {}
        self.stop: set[str] = set()
        self.registrations: list[tuple[str, str, int]] = []

    def expect(self, task_id: str) -> asyncio.Future[TaskCompletion]:
        return self.waiters.setdefault(task_id, asyncio.get_running_loop().create_future())

    async def HeartbeatTask(
        self, request: jobs_pb2.HeartbeatTaskRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.HeartbeatTaskResponse:
        self.heartbeats[request.task_id] = self.heartbeats.get(request.task_id, 0) + 1
        return jobs_pb2.HeartbeatTaskResponse(stop=request.task_id in self.stop)

    async def CompleteTask(
        self, request: jobs_pb2.CompleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.CompleteTaskResponse:
        completion = completion_from_pb(request)
        self.completions[request.task_id] = completion
        waiter = self.expect(request.task_id)
        if not waiter.done():
            waiter.set_result(completion)
        return jobs_pb2.CompleteTaskResponse()

    async def RegisterRunner(
        self, request: jobs_pb2.RegisterRunnerRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.RegisterRunnerResponse:
        self.registrations.append((request.node_id, request.url, request.capacity))
        return jobs_pb2.RegisterRunnerResponse()


@dataclass
class Connection:
    connection_id: str
    nango_id: int
    api_key: str


@dataclass
class Platform:
    server: InProcessServer
    persist: str
    runner: RunnerClient
    runner_target: str
    jobs: JobsRecorder
    upstream: UpstreamApi
    blobs: LocalBlobStore
    secret_key: str
    environment_id: int
    integration: str
    logs_schema: str
    database_url: str
    bundle_key: str = ""
    bundle_sha: str = ""
    connections: dict[str, Connection] = field(default_factory=dict)

    async def put_bundle(self, files: dict[str, str]) -> tuple[str, str]:
        data = zip_files(files)
        sha = hashlib.sha256(data).hexdigest()
        key = f"bundles/{self.environment_id}/{self.integration}/{sha}.zip"
        await self.blobs.put(key, data)
        return key, sha

    async def connection(self, name: str, contacts: list[dict[str, str]] | None = None) -> Connection:
        api_key = f"key-{name}-{uuid.uuid4().hex[:8]}"
        self.upstream.contacts[api_key] = list(contacts or [])
        headers = {"Authorization": f"Bearer {self.secret_key}"}
        body = {
            "provider_config_key": self.integration,
            "connection_id": name,
            "credentials": {"type": "API_KEY", "apiKey": api_key},
        }
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(self.server.url + "/connections", json=body) as response:
                assert response.status == 201, await response.text()
            url = f"{self.server.url}/connection/{name}?provider_config_key={self.integration}"
            async with http.get(url) as response:
                nango_id = int((await response.json())["id"])
        found = Connection(name, nango_id, api_key)
        self.connections[name] = found
        return found

    def token(self, task_id: str, connection: Connection, ttl: float = 60.0) -> str:
        scope = TaskScope(task_id, self.environment_id, connection.nango_id, time.time() + ttl)
        return mint_task_token(TOKEN, scope)

    def task(
        self,
        function: str,
        connection: Connection,
        *,
        kind: FunctionType = FunctionType.ACTION,
        input: Any = None,
        sync_job_id: str = "",
        ttl: float = 60.0,
        bundle: tuple[str, str] | None = None,
    ) -> TaskStart:
        task_id = str(uuid.uuid4())
        key, sha = bundle or (self.bundle_key, self.bundle_sha)
        sync = SyncContext(sync_id=str(uuid.uuid4()), sync_job_id=sync_job_id) if kind is FunctionType.SYNC else None
        return TaskStart(
            task_id=task_id,
            type=kind,
            function=FunctionRef(function, "0.0.1", key, sha),
            connection=ConnectionContext(
                self.environment_id, connection.nango_id, connection.connection_id, self.integration, "crm"
            ),
            task_token=self.token(task_id, connection, ttl),
            sync=sync,
            input_json=b"" if input is None else json.dumps(input).encode(),
            activity_log_id=str(uuid.uuid4()),
        )

    async def start(self, task: TaskStart) -> asyncio.Future[TaskCompletion]:
        waiter = self.jobs.expect(task.task_id)
        assert await self.runner.start_task(task)
        return waiter

    async def run(self, task: TaskStart, timeout: float = 30.0) -> TaskCompletion:
        waiter = await self.start(task)
        return await asyncio.wait_for(waiter, timeout)

    async def wait_running(self, task_id: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while task_id not in (await self.runner.status()).running_task_ids:
                await asyncio.sleep(0.02)


async def _serve_jobs(jobs: JobsRecorder) -> tuple[RunningServer, str]:
    port = free_port()
    binding = ServiceBinding("nangopb.jobs.v1.JobsService", jobs, jobs_pb2_grpc.add_JobsServiceServicer_to_server)
    return await start_grpc_server([binding], host="127.0.0.1", port=port, token=TOKEN), f"127.0.0.1:{port}"


async def _wait_healthy(target: str, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(60):
        while not await check_health(target):
            if task.done():
                task.result()
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def platform_running(database_url: str, tmp: Path, **runner_env: str) -> AsyncIterator[Platform]:
    upstream = UpstreamApi()
    upstream_port = free_port()
    upstream.url = f"http://127.0.0.1:{upstream_port}"
    site_runner = web.AppRunner(upstream.app())
    await site_runner.setup()
    await web.TCPSite(site_runner, "127.0.0.1", upstream_port).start()

    paginate = {
        "type": "cursor",
        "cursor_name_in_request": "cursor",
        "cursor_path_in_response": "next_cursor",
        "response_path": "data",
        "limit_name_in_request": "limit",
    }
    providers = {
        "crm": provider(
            "API_KEY", proxy={"base_url": upstream.url, "headers": {"x-api-key": "${apiKey}"}, "paginate": paginate}
        )
    }
    providers_file = tmp / "providers.yaml"
    providers_file.write_text(yaml.safe_dump(providers))
    schema, secret_key, encryption_key = new_schema("nango_runner"), str(uuid.uuid4()), generate_key()
    loopback = '{"blockLoopback": false}'
    server = await start_server(
        server_env(
            database_url,
            schema,
            tmp,
            NANGO_ENCRYPTION_KEY=encryption_key,
            NANGO_SECRET_KEY_DEV=secret_key,
            NANGO_PROVIDERS_FILE=str(providers_file),
            NANGO_OUTBOUND_URL_POLICY=loopback,
            LOG_LEVEL="warning",
        )
    )
    jobs = JobsRecorder()
    jobs_server, jobs_target = await _serve_jobs(jobs)
    persist_port, runner_port = free_port(), free_port()
    logs_schema = f"{schema}_logs"
    common = {
        "NANGO_DATABASE_URL": database_url,
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp),
        "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
        "NANGO_ENCRYPTION_KEY": encryption_key,
        "NANGO_LOGS_DATABASE_SCHEMA": logs_schema,
        "LOG_LEVEL": "warning",
    }
    with environment({**common, "NANGO_PERSIST_PORT": str(persist_port), "RECORDS_DATABASE_SCHEMA": f"{schema}_rec"}):
        persist_settings = load(PersistSettings)
    with environment(
        {
            **common,
            "NANGO_RUNNER_PORT": str(runner_port),
            "PERSIST_SERVICE_URL": f"127.0.0.1:{persist_port}",
            "SERVER_SERVICE_URL": server.grpc,
            "JOBS_SERVICE_URL": jobs_target,
            "NANGO_BLOB_DIR": str(tmp / "blobs"),
            "NANGO_PROVIDERS_FILE": str(providers_file),
            "NANGO_OUTBOUND_URL_POLICY": loopback,
            "RUNNER_HEARTBEAT_INTERVAL_MS": "100",
            "RUNNER_MEMORY_LIMIT_MB": "700",
            "RUNNER_CPU_LIMIT_SECONDS": "20",
            "RUNNER_CAPACITY": "4",
            "RUNNER_INSPECT_TIMEOUT_SECONDS": "3",
            **runner_env,
        }
    ):
        runner_settings = load(RunnerSettings)
    stops = asyncio.Event(), asyncio.Event()
    persist_task = asyncio.create_task(run_persist(persist_settings, stops[0]))
    runner_task = asyncio.create_task(run_runner(runner_settings, stops[1]))
    runner_target = f"127.0.0.1:{runner_port}"
    runner = RunnerClient(runner_target, TOKEN)
    try:
        await _wait_healthy(f"127.0.0.1:{persist_port}", persist_task)
        await _wait_healthy(runner_target, runner_task)
        conn = await asyncpg.connect(database_url)
        environment_id = await conn.fetchval(f"SELECT id FROM {schema}.environments WHERE name = 'dev'")
        await conn.close()
        integration = f"crm-{uuid.uuid4().hex[:6]}"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret_key}"}) as http:
            body = {"provider": "crm", "unique_key": integration}
            async with http.post(server.url + "/integrations", json=body) as response:
                assert response.status == 200, await response.text()
        platform = Platform(
            server=server,
            persist=f"127.0.0.1:{persist_port}",
            runner=runner,
            runner_target=runner_target,
            jobs=jobs,
            upstream=upstream,
            blobs=LocalBlobStore(tmp / "blobs"),
            secret_key=secret_key,
            environment_id=environment_id,
            integration=integration,
            logs_schema=logs_schema,
            database_url=database_url,
        )
        platform.bundle_key, platform.bundle_sha = await platform.put_bundle(BUNDLE)
        yield platform
    finally:
        await runner.close()
        for stop in stops:
            stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(persist_task, runner_task, return_exceptions=True)
        await jobs_server.stop(0)
        await server.stop()
        await site_runner.cleanup()


@pytest.fixture(scope="module")
async def platform(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    async with platform_running(database_url, tmp_path_factory.mktemp("runner")) as running:
        yield running


__all__ = ["BUNDLE", "Connection", "JobsRecorder", "Platform", "platform", "platform_running", "zip_files"]
