"""The jobs service as it runs (`nango.jobs.app.run`, in-process) beside a real in-process server:
`EnqueueWebhooks` stores each (event, URL) once, answers after commit, and the service's own delivery
loop sends them; bad input and callers without the internal token are refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest
from aiohttp import web

from nango.config import load
from nango.errors import InvalidInternalToken, InvalidRequest
from nango.grpckit import TaskScope, check_health, invoke, mint_task_token, open_channel
from nango.jobs.app import run
from nango.jobs.client import JobsClient, OutgoingWebhook, webhook_to_pb
from nango.jobs.settings import JobsSettings
from nangopb.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from tests.conftest import free_port
from tests.support.inprocess import TOKEN, environment, new_schema, server_env, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@dataclass
class Receiver:
    got: list[tuple[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.got.append((request.path, request.headers["X-Nango-Delivery-Id"]))
        return web.Response(status=204)


@dataclass
class Service:
    jobs: JobsClient
    target: str
    receiver: Receiver
    receiver_url: str
    environment_id: int
    database_url: str
    schema: str


@pytest.fixture(scope="module")
async def service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    server_schema = new_schema("nango_jobsvc")
    server = await start_server(server_env(database_url, server_schema, tmp_path_factory.mktemp("jobsvc")))
    conn = await asyncpg.connect(database_url, server_settings={"search_path": server_schema})
    environment_id = int(await conn.fetchval("SELECT id FROM environments WHERE name = 'dev'"))
    await conn.close()

    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    schema, jobs_port = new_schema("nango_jobs_svc"), free_port()
    nowhere = f"127.0.0.1:{free_port()}"
    with environment(
        {
            "NANGO_INTERNAL_TOKEN": TOKEN,
            "NANGO_DATABASE_URL": database_url,
            "JOBS_DATABASE_SCHEMA": schema,
            "NANGO_LOGS_DATABASE_SCHEMA": f"{server_schema}_logs",
            "NANGO_JOBS_PORT": str(jobs_port),
            "NANGO_BIND_HOST": "127.0.0.1",
            "SERVER_SERVICE_URL": server.grpc,
            "ORCHESTRATOR_SERVICE_URL": nowhere,
            "RUNNER_SERVICE_URL": nowhere,
            "PERSIST_SERVICE_URL": nowhere,
            "NANGO_OUTBOUND_URL_POLICY": '{"blockLoopback": false}',
            "NANGO_WEBHOOK_POLL_MS": "50",
            "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
            "LOG_LEVEL": "error",
        }
    ):
        settings = load(JobsSettings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    target = f"127.0.0.1:{jobs_port}"
    async with asyncio.timeout(30):
        while not await check_health(target):
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    jobs = JobsClient(target, TOKEN)
    yield Service(jobs, target, receiver, f"http://127.0.0.1:{port}", environment_id, database_url, schema)
    await jobs.close()
    stop.set()
    await asyncio.wait_for(task, 30)
    await runner.cleanup()
    await server.stop()


async def stored(service: Service, event_ids: list[str]) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(service.database_url)
    try:
        return await conn.fetch(
            f"SELECT event_id, url, state FROM {service.schema}.webhook_deliveries "
            "WHERE event_id = ANY($1::text[]) ORDER BY url",
            event_ids,
        )
    finally:
        await conn.close()


async def test_enqueued_webhooks_are_stored_once_and_delivered(service: Service) -> None:
    first = OutgoingWebhook(
        str(uuid.uuid4()),
        service.environment_id,
        "auth",
        {"from": "nango", "type": "auth", "operation": "creation"},
        (f"{service.receiver_url}/primary", f"{service.receiver_url}/secondary"),
    )
    second = OutgoingWebhook(
        str(uuid.uuid4()), service.environment_id, "forward", {"raw": True}, (f"{service.receiver_url}/primary",)
    )
    await service.jobs.enqueue_webhooks([first, second])
    # answered after commit: the rows are there as the call returns
    assert len(await stored(service, [first.event_id, second.event_id])) == 3
    await service.jobs.enqueue_webhooks([first, second, first])
    assert len(await stored(service, [first.event_id, second.event_id])) == 3
    deadline = time.monotonic() + 15
    while len(service.receiver.got) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sorted(service.receiver.got) == sorted(
        [("/primary", first.event_id), ("/secondary", first.event_id), ("/primary", second.event_id)]
    )
    # recorded just after the answer
    async with asyncio.timeout(5):
        while {r["state"] for r in await stored(service, [first.event_id, second.event_id])} != {"delivered"}:
            await asyncio.sleep(0.05)


async def test_bad_webhooks_are_refused_whole(service: Service) -> None:
    good = webhook_to_pb(OutgoingWebhook(str(uuid.uuid4()), service.environment_id, "auth", {}, ("https://a.example",)))
    broken = jobs_pb2.OutgoingWebhook()
    broken.CopyFrom(good)
    broken.event_id = str(uuid.uuid4())
    broken.body_json = b"{not json"
    channel = open_channel(service.target, TOKEN)
    stub = jobs_pb2_grpc.JobsServiceStub(channel)
    try:
        for bad in (
            broken,
            jobs_pb2.OutgoingWebhook(
                event_id="e", environment_id=service.environment_id, type="sms", urls=["https://a"]
            ),
            jobs_pb2.OutgoingWebhook(
                event_id="", environment_id=service.environment_id, type="auth", urls=["https://a"]
            ),
            jobs_pb2.OutgoingWebhook(event_id="e", environment_id=0, type="auth", urls=["https://a"]),
        ):
            with pytest.raises(InvalidRequest):
                await invoke("jobs", stub.EnqueueWebhooks(jobs_pb2.EnqueueWebhooksRequest(webhooks=[good, bad])))
        assert await stored(service, [good.event_id]) == []
    finally:
        await channel.close()


async def test_only_the_internal_token_may_enqueue(service: Service) -> None:
    webhook = OutgoingWebhook(str(uuid.uuid4()), service.environment_id, "auth", {}, ("https://a.example",))
    async with JobsClient(service.target, "not-the-internal-token") as stranger:
        with pytest.raises(InvalidInternalToken):
            await stranger.enqueue_webhooks([webhook])
    task_token = mint_task_token(TOKEN, TaskScope(str(uuid.uuid4()), service.environment_id, 1, time.time() + 60))
    channel = open_channel(service.target, None, task_token=task_token)
    try:
        stub = jobs_pb2_grpc.JobsServiceStub(channel)
        request = jobs_pb2.EnqueueWebhooksRequest(webhooks=[webhook_to_pb(webhook)])
        with pytest.raises(InvalidInternalToken):
            await invoke("jobs", stub.EnqueueWebhooks(request))
    finally:
        await channel.close()
    assert await stored(service, [webhook.event_id]) == []
