"""persist's WriteLogMessages, served in-process on a real port and reached through PersistClient."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from nango.config import load
from nango.errors import InvalidRequest, Unauthenticated
from nango.grpckit import check_health, invoke, open_channel
from nango.oplog import Message, PostgresLogStore
from nango.oplog.models import utcnow
from nango.persist.app import run
from nango.persist.client import PersistClient, log_message_to_pb
from nango.persist.settings import PersistSettings
from nangopb.persist.v1 import persist_pb2, persist_pb2_grpc
from tests.conftest import free_port

pytestmark = pytest.mark.integration

TOKEN = "persist-logs-test-token-0123456789"
LOGS_SCHEMA = f"persist_logs_test_{uuid.uuid4().hex[:8]}"
RECORDS_SCHEMA = f"persist_records_test_{uuid.uuid4().hex[:8]}"


@dataclass
class Persist:
    target: str
    stop: asyncio.Event
    task: asyncio.Task[None]


async def start_persist(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Persist:
    port = free_port()
    for name, value in {
        "NANGO_DATABASE_URL": database_url,
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_PERSIST_PORT": str(port),
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_LOGS_DATABASE_SCHEMA": LOGS_SCHEMA,
        "RECORDS_DATABASE_SCHEMA": RECORDS_SCHEMA,
        "NANGO_SHUTDOWN_GRACE_SECONDS": "2",
        "NANGO_MIGRATE_AT_START": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NANGO_LOGS_ENABLED", raising=False)
    monkeypatch.delenv("RECORDS_DATABASE_URL", raising=False)
    stop = asyncio.Event()
    task = asyncio.create_task(run(load(PersistSettings), stop))
    target = f"127.0.0.1:{port}"
    async with asyncio.timeout(30):
        while not await check_health(target):
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    return Persist(target, stop, task)


async def stop_persist(persist: Persist) -> None:
    persist.stop.set()
    async with asyncio.timeout(30):
        await persist.task


@pytest.fixture
async def persist(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Persist]:
    running = await start_persist(database_url, monkeypatch)
    try:
        yield running
    finally:
        await stop_persist(running)


@pytest.fixture
async def client(persist: Persist) -> AsyncIterator[PersistClient]:
    persist_client = PersistClient(persist.target, TOKEN)
    try:
        yield persist_client
    finally:
        await persist_client.close()


@pytest.fixture
async def logs(database_url: str, persist: Persist) -> AsyncIterator[PostgresLogStore]:
    store = await PostgresLogStore.connect(database_url, LOGS_SCHEMA)
    try:
        yield store
    finally:
        await store.close()


async def wait_for_lines(store: PostgresLogStore, operation_id: str, count: int) -> list[Message]:
    async with asyncio.timeout(10):
        while True:
            lines, _ = await store.list_messages(operation_id)
            if len(lines) >= count:
                return lines
            await asyncio.sleep(0.05)


async def test_function_lines_are_written_to_their_operation(client: PersistClient, logs: PostgresLogStore) -> None:
    operation_id = str(uuid.uuid4())
    t0 = utcnow()
    sent = [
        Message(operation_id=operation_id, source="user", level="debug", message="fetching page 1", created_at=t0),
        Message(
            operation_id=operation_id,
            source="user",
            level="warn",
            message="rate limited",
            created_at=t0 + timedelta(milliseconds=1),
            meta={"page": 2, "api_key": "SECRET-from-function"},
        ),
        Message(
            operation_id=operation_id,
            source="internal",
            type="http",
            level="error",
            message="GET /contacts",
            created_at=t0 + timedelta(milliseconds=2),
            request={"method": "GET", "url": "https://api.test/contacts?access_token=SECRET-q", "headers": {}},
            response={"code": 500, "headers": {}},
            error={"message": "upstream failed"},
            retry={"attempt": 1, "max": 3, "waited_ms": 2000},
            ended_at=t0 + timedelta(milliseconds=250),
        ),
    ]

    assert await client.write_log_messages(7, sent) == 3
    # a runner retrying the same write (same message ids) must not duplicate lines
    assert await client.write_log_messages(7, sent) == 3

    stored = await wait_for_lines(logs, operation_id, 3)
    assert [(m.level, m.source, m.type, m.message) for m in stored] == [
        ("debug", "user", "log", "fetching page 1"),
        ("warn", "user", "log", "rate limited"),
        ("error", "internal", "http", "GET /contacts"),
    ]
    assert [m.created_at for m in stored] == [m.created_at for m in sent]
    assert stored[1].meta == {"page": 2, "api_key": "[REDACTED]"}
    assert stored[2].request == {
        "method": "GET",
        "url": "https://api.test/contacts?access_token=[REDACTED]",
        "headers": {},
    }
    assert stored[2].response == {"code": 500, "headers": {}}
    assert stored[2].error == {"message": "upstream failed"}
    assert stored[2].retry == {"attempt": 1, "max": 3, "waited_ms": 2000}
    assert [m.id for m in stored] == [m.id for m in sent]
    assert stored[2].duration_ms == 248  # ended 250 ms after t0, created 2 ms after it
    await asyncio.sleep(0.5)
    assert len((await logs.list_messages(operation_id))[0]) == 3


async def write_raw(target: str, token: str | None, messages: list[persist_pb2.LogMessage]) -> int:
    """WriteLogMessages without PersistClient, to send what the client would never build."""
    channel = open_channel(target, token)
    try:
        stub = persist_pb2_grpc.PersistServiceStub(channel)
        request = persist_pb2.WriteLogMessagesRequest(environment_id=7, messages=messages)
        reply = await invoke("persist", stub.WriteLogMessages(request, timeout=10))
        return int(reply.written)
    finally:
        await channel.close()


async def test_a_message_without_operation_id_is_refused(persist: Persist, logs: PostgresLogStore) -> None:
    good = Message(operation_id=str(uuid.uuid4()), message="fine")
    bad = persist_pb2.LogMessage(operation_id="", message="no operation")

    with pytest.raises(InvalidRequest, match=r"messages\[1\]\.operation_id"):
        await write_raw(persist.target, TOKEN, [log_message_to_pb(good), bad])
    # the whole call is refused: its valid line is not written either
    await asyncio.sleep(0.3)
    assert await logs.list_messages(good.operation_id) == ([], None)


async def test_malformed_fields_are_refused(persist: Persist) -> None:
    operation_id = str(uuid.uuid4())
    for bad in (
        persist_pb2.LogMessage(operation_id="not-a-uuid", message="x"),
        persist_pb2.LogMessage(operation_id=operation_id, message="x", meta_json=b"{not json"),
        persist_pb2.LogMessage(operation_id=operation_id, message="x", meta_json=b"[1, 2]"),
        persist_pb2.LogMessage(operation_id=operation_id, message="x", source="robot"),
        persist_pb2.LogMessage(operation_id=operation_id, message="x", level=99),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidRequest):
            await write_raw(persist.target, TOKEN, [bad])


@pytest.mark.parametrize("token", ["", "not-the-internal-token-at-all"])
async def test_a_client_with_a_wrong_token_is_refused(persist: Persist, token: str) -> None:
    intruder = PersistClient(persist.target, token)
    try:
        with pytest.raises(Unauthenticated):
            await intruder.write_log_messages(7, [Message(operation_id=str(uuid.uuid4()), message="x")])
    finally:
        await intruder.close()


async def test_a_call_without_a_token_is_refused(persist: Persist) -> None:
    with pytest.raises(Unauthenticated):
        await write_raw(persist.target, None, [persist_pb2.LogMessage(operation_id=str(uuid.uuid4()), message="x")])


async def test_lines_accepted_before_shutdown_are_written(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    persist = await start_persist(database_url, monkeypatch)
    operation_id = str(uuid.uuid4())
    persist_client = PersistClient(persist.target, TOKEN)
    try:
        lines = [Message(operation_id=operation_id, message=f"line {i}") for i in range(50)]
        assert await persist_client.write_log_messages(7, lines) == 50
    finally:
        await persist_client.close()
        await stop_persist(persist)

    store = await PostgresLogStore.connect(database_url, LOGS_SCHEMA)
    try:
        stored, _ = await store.list_messages(operation_id)
    finally:
        await store.close()
    assert [m.message for m in stored] == [f"line {i}" for i in range(50)]
