"""Checkpoints (optimistic concurrency) and runner locks (TTL, owners) through persist's real gRPC
server and PersistClient."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from nango.config import load
from nango.crypto import generate_key
from nango.errors import InvalidRequest
from nango.grpckit import ERROR_CODE_HEADER, check_health, open_channel
from nango.persist.app import run
from nango.persist.client import CheckpointConflict, PersistClient
from nango.persist.settings import PersistSettings
from nangopb.persist.v1 import persist_pb2, persist_pb2_grpc
from tests.conftest import free_port

pytestmark = pytest.mark.integration

TOKEN = "persist-coordination-test-token-0123"
SCHEMA = f"persist_coord_it_{uuid.uuid4().hex[:8]}"
ENV = 4
_connections = itertools.count(1)


@pytest.fixture(scope="module")
async def target(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    port = free_port()
    env = {
        "NANGO_DATABASE_URL": database_url,
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_PERSIST_PORT": str(port),
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_LOGS_DATABASE_SCHEMA": f"{SCHEMA}_logs",
        "RECORDS_DATABASE_SCHEMA": SCHEMA,
        "NANGO_ENCRYPTION_KEY": generate_key(),
        "NANGO_DATA_DIR": str(tmp_path_factory.mktemp("persist-data")),
        "NANGO_SHUTDOWN_GRACE_SECONDS": "2",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for name in ("NANGO_LOGS_ENABLED", "RECORDS_DATABASE_URL", "NANGO_ENCRYPTION_PREVIOUS_KEYS"):
            patch.delenv(name, raising=False)
        settings = load(PersistSettings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    address = f"127.0.0.1:{port}"
    async with asyncio.timeout(30):
        while not await check_health(address):
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    try:
        yield address
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


@pytest.fixture(scope="module")
async def client(target: str) -> AsyncIterator[PersistClient]:
    async with PersistClient(target, TOKEN) as persist_client:
        yield persist_client


async def test_checkpoint_versions_move_with_every_write(client: PersistClient) -> None:
    connection = next(_connections)
    assert await client.get_checkpoint(ENV, connection, "sync:contacts") is None

    created = await client.put_checkpoint(ENV, connection, "sync:contacts", {"page": 1}, expected_version=0)
    updated = await client.put_checkpoint(ENV, connection, "sync:contacts", {"page": 2}, expected_version=1)

    assert (created.checkpoint, created.version, created.deleted_at) == ({"page": 1}, 1, None)
    assert (updated.checkpoint, updated.version) == ({"page": 2}, 2)
    assert await client.get_checkpoint(ENV, connection, "sync:contacts") == updated
    # another connection, another environment: other checkpoints
    assert await client.get_checkpoint(ENV, connection + 1000, "sync:contacts") is None
    assert await client.get_checkpoint(ENV + 1, connection, "sync:contacts") is None
    for stale in (0, 1, 3):
        with pytest.raises(CheckpointConflict) as caught:
            await client.put_checkpoint(ENV, connection, "sync:contacts", {"page": 99}, expected_version=stale)
        assert caught.value.instance_code == "checkpoint_conflict"
        assert caught.value.status == 409
    assert (await client.get_checkpoint(ENV, connection, "sync:contacts")) == updated


async def test_a_deleted_checkpoint_is_read_with_deleted_at_and_can_be_written_again(client: PersistClient) -> None:
    connection = next(_connections)
    await client.put_checkpoint(ENV, connection, "k", {"cursor": "abc"}, expected_version=0)

    deleted = await client.delete_checkpoint(ENV, connection, "k", expected_version=1)

    assert deleted.version == 2
    assert deleted.deleted_at is not None
    assert await client.get_checkpoint(ENV, connection, "k") == deleted
    with pytest.raises(CheckpointConflict):
        await client.delete_checkpoint(ENV, connection, "k", expected_version=2)
    with pytest.raises(CheckpointConflict):
        await client.delete_checkpoint(ENV, connection, "never-written", expected_version=0)
    revived = await client.put_checkpoint(ENV, connection, "k", {"cursor": "def"}, expected_version=2)
    assert (revived.checkpoint, revived.version, revived.deleted_at) == ({"cursor": "def"}, 3, None)


async def test_two_concurrent_writers_one_wins(client: PersistClient) -> None:
    connection = next(_connections)
    await client.put_checkpoint(ENV, connection, "k", {"n": 0}, expected_version=0)
    for round_ in range(1, 11):
        current = await client.get_checkpoint(ENV, connection, "k")
        assert current is not None
        assert current.version == round_
        outcomes = await asyncio.gather(
            *(
                client.put_checkpoint(ENV, connection, "k", {"writer": w}, expected_version=current.version)
                for w in range(2)
            ),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1
        assert winners[0].version == round_ + 1
        assert len(losers) == 1
        assert isinstance(losers[0], CheckpointConflict)
    # creation races the same way
    created = await asyncio.gather(
        *(client.put_checkpoint(ENV, connection, "new", {"w": w}, expected_version=0) for w in range(3)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in created) == 1


async def test_a_conflict_is_aborted_on_the_wire(target: str, client: PersistClient) -> None:
    connection = next(_connections)
    await client.put_checkpoint(ENV, connection, "k", {"n": 0}, expected_version=0)
    channel = open_channel(target, TOKEN)
    try:
        stub = persist_pb2_grpc.PersistServiceStub(channel)
        request = persist_pb2.PutCheckpointRequest(
            environment_id=ENV, nango_connection_id=connection, key="k", checkpoint_json=b"{}", expected_version=7
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PutCheckpoint(request, timeout=10)
    finally:
        await channel.close()
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert (ERROR_CODE_HEADER, "checkpoint_conflict") in tuple(caught.value.trailing_metadata() or ())


@pytest.mark.parametrize(
    ("key", "payload", "match"),
    [("", {"a": 1}, "key"), ("k" * 256, {"a": 1}, "key"), ("k", {"big": "x" * (1024 * 1024)}, "at most")],
)
async def test_bad_checkpoints_are_refused(
    client: PersistClient, key: str, payload: dict[str, str], match: str
) -> None:
    with pytest.raises(InvalidRequest, match=match):
        await client.put_checkpoint(ENV, next(_connections), key, payload, expected_version=0)


async def test_a_lock_has_one_owner_until_it_expires(client: PersistClient) -> None:
    key = f"lock-{uuid.uuid4()}"
    assert await client.try_acquire_lock(ENV, "runner-a", key, timedelta(milliseconds=600))
    assert not await client.try_acquire_lock(ENV, "runner-b", key, timedelta(seconds=30))
    # the owner taking it again extends it
    assert await client.try_acquire_lock(ENV, "runner-a", key, timedelta(milliseconds=600))
    # the same key in another environment is another lock
    assert await client.try_acquire_lock(ENV + 1, "runner-b", key, timedelta(seconds=30))

    async with asyncio.timeout(5):
        while not await client.try_acquire_lock(ENV, "runner-b", key, timedelta(seconds=30)):
            await asyncio.sleep(0.1)

    assert not await client.release_lock(ENV, "runner-a", key)
    assert not await client.try_acquire_lock(ENV, "runner-a", key, timedelta(seconds=30))
    assert await client.release_lock(ENV, "runner-b", key)
    assert not await client.release_lock(ENV, "runner-b", key)
    assert await client.try_acquire_lock(ENV, "runner-a", key, timedelta(seconds=30))


async def test_release_all_frees_only_the_owners_locks(client: PersistClient) -> None:
    owner, other = f"runner-{uuid.uuid4()}", f"runner-{uuid.uuid4()}"
    for i in range(5):
        assert await client.try_acquire_lock(ENV, owner, f"{owner}-{i}", timedelta(seconds=30))
    assert await client.try_acquire_lock(ENV, other, f"{other}-0", timedelta(seconds=30))

    assert await client.release_all_locks(ENV, owner) == 5
    assert await client.release_all_locks(ENV, owner) == 0
    assert not await client.try_acquire_lock(ENV, owner, f"{other}-0", timedelta(seconds=30))
    assert await client.try_acquire_lock(ENV, other, f"{owner}-3", timedelta(seconds=30))


@pytest.mark.parametrize(
    ("owner", "key", "ttl"),
    [
        ("", "k", timedelta(seconds=1)),
        ("o", "", timedelta(seconds=1)),
        ("o", "k", timedelta(0)),
        ("o", "k", timedelta(days=2)),
    ],
)
async def test_bad_lock_requests_are_refused(client: PersistClient, owner: str, key: str, ttl: timedelta) -> None:
    with pytest.raises(InvalidRequest):
        await client.try_acquire_lock(ENV, owner, key, ttl)
