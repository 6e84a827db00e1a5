"""The records cache through persist's real gRPC server and PersistClient, on real Postgres:
upserts and change detection, soft deletes, track-deletes generations, cursor paging with filters,
merging, prune, clear, counts, encryption at rest and partitioning."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from nango.config import load
from nango.crypto import generate_key
from nango.errors import Forbidden, InvalidRequest
from nango.grpckit import TaskScope, check_health, invoke, mint_task_token, open_channel
from nango.persist.app import run
from nango.persist.client import (
    BatchContext,
    CursorPosition,
    InvalidCursor,
    Merging,
    MergingStrategy,
    PersistClient,
    ReconcilePassNotOpen,
    RecordAction,
    RecordScope,
)
from nango.persist.cursor import encode_cursor
from nango.persist.models import MAX_RECORD_BYTES, MB, PAGE_BYTES_BUDGET
from nango.persist.settings import PersistSettings
from nangopb.persist.v1 import persist_pb2, persist_pb2_grpc
from tests.conftest import free_port

pytestmark = pytest.mark.integration

TOKEN = "persist-records-test-token-0123456789"
SCHEMA = f"persist_records_it_{uuid.uuid4().hex[:8]}"
ENV = 3
SECRET = "SECRET-payload-value-7f3a"
_connections = itertools.count(1000)


@dataclass
class Persist:
    target: str
    stop: asyncio.Event
    task: asyncio.Task[None]


@pytest.fixture(scope="module")
async def persist(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Persist]:
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
        "NANGO_MIGRATE_AT_START": "true",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for name in ("NANGO_LOGS_ENABLED", "RECORDS_DATABASE_URL", "NANGO_ENCRYPTION_PREVIOUS_KEYS"):
            patch.delenv(name, raising=False)
        settings = load(PersistSettings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    target = f"127.0.0.1:{port}"
    async with asyncio.timeout(30):
        while not await check_health(target):
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    try:
        yield Persist(target, stop, task)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


@pytest.fixture(scope="module")
async def client(persist: Persist) -> AsyncIterator[PersistClient]:
    async with PersistClient(persist.target, TOKEN) as persist_client:
        yield persist_client


@pytest.fixture(scope="module")
async def db(persist: Persist, database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": SCHEMA})
    try:
        yield conn
    finally:
        await conn.close()


def new_scope(model: str = "Contact") -> RecordScope:
    return RecordScope(ENV, next(_connections), model)


def contact(i: int, version: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": f"c-{i}", "name": f"Contact {i}", "version": version, "tags": ["a", "b"], **extra}


async def read_all(
    client: PersistClient, scope: RecordScope, limit: int = 1000, cursor: str | None = None, **query: Any
) -> list[dict[str, Any]]:
    """Every page to the end (bounded), concatenated."""
    records: list[dict[str, Any]] = []
    for _ in range(1000):
        page = await client.get_records(scope, cursor=cursor, limit=limit, **query)
        records += page.records()
        if page.next_cursor is None:
            return records
        cursor = page.next_cursor
    raise AssertionError("paging did not end")


async def raw_rows(db: asyncpg.Connection, scope: RecordScope) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        "SELECT external_id, xmin::text::bigint AS xmin, data, data_hash, created_at, updated_at, deleted_at, "
        "pruned_at, size_bytes FROM records WHERE connection_id = $1 AND model = $2",
        scope.connection_id,
        scope.model,
    )
    return {row["external_id"]: row for row in rows}


async def test_a_batch_is_saved_and_counted(client: PersistClient, db: asyncpg.Connection) -> None:
    scope = new_scope()
    result = await client.save_records(scope, [contact(i) for i in range(1000)])

    assert (result.summary.added, result.summary.updated, result.summary.unchanged) == (1000, 0, 0)
    assert set(result.summary.added_keys) == {f"c-{i}" for i in range(1000)}
    counts = await client.count_records(ENV, [scope.connection_id])
    assert [(c.model, c.count) for c in counts] == [("Contact", 1000)]
    stored = await db.fetchval(
        "SELECT sum(size_bytes) FROM records WHERE connection_id = $1 AND model = $2", scope.connection_id, scope.model
    )
    assert counts[0].size_bytes == stored > 1000 * 40
    records = {r["id"]: r for r in await read_all(client, scope)}
    assert len(records) == 1000
    assert records["c-0"] == {
        **contact(0),
        "_nango_metadata": {**records["c-0"]["_nango_metadata"], "last_action": "ADDED", "deleted_at": None},
    }
    assert records["c-0"]["_nango_metadata"]["pruned_at"] is None


async def test_an_unchanged_batch_rewrites_nothing(client: PersistClient, db: asyncpg.Connection) -> None:
    scope = new_scope()
    batch = [contact(i) for i in range(300)]
    await client.save_records(scope, batch)
    before = await raw_rows(db, scope)

    result = await client.save_records(scope, batch)

    assert (result.summary.added, result.summary.updated, result.summary.unchanged) == (0, 0, 300)
    after = await raw_rows(db, scope)
    # same row versions (xmin): not even a no-op update was written
    assert {k: (r["xmin"], r["updated_at"]) for k, r in after.items()} == {
        k: (r["xmin"], r["updated_at"]) for k, r in before.items()
    }


async def test_changing_ten_records_updates_exactly_those(client: PersistClient, db: asyncpg.Connection) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(200)])
    before = await raw_rows(db, scope)
    changed = {f"c-{i}" for i in range(50, 60)}

    result = await client.save_records(scope, [contact(i, version=2 if f"c-{i}" in changed else 1) for i in range(200)])

    assert (result.summary.added, result.summary.updated, result.summary.unchanged) == (0, 10, 190)
    assert set(result.summary.updated_keys) == changed
    after = await raw_rows(db, scope)
    moved = {k for k in after if after[k]["updated_at"] != before[k]["updated_at"]}
    assert moved == changed
    assert all(after[k]["created_at"] == before[k]["created_at"] for k in after)
    records = {r["id"]: r for r in await read_all(client, scope)}
    assert records["c-55"]["version"] == 2
    assert records["c-55"]["_nango_metadata"]["last_action"] == "UPDATED"
    assert records["c-1"]["_nango_metadata"]["last_action"] == "ADDED"
    # the changed records come last in cursor order
    assert {r["id"] for r in (await read_all(client, scope))[-10:]} == changed


async def test_soft_delete_then_undelete_reads_as_added(client: PersistClient) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(10)])
    when = "2024-03-01T12:00:00+00:00"

    deleted = await client.delete_records(scope, [{"id": "c-1"}, {"id": "c-2", "deletedAt": when}, {"id": "nope"}])
    again = await client.delete_records(scope, [{"id": "c-1"}])

    assert (deleted.summary.deleted, set(deleted.summary.deleted_keys)) == (2, {"c-1", "c-2"})
    assert (again.summary.deleted, again.summary.unchanged) == (0, 1)
    records = {r["id"]: r for r in await read_all(client, scope)}
    assert records["c-1"]["_nango_metadata"]["last_action"] == "DELETED"
    assert records["c-1"]["_nango_metadata"]["deleted_at"] is not None
    assert datetime.fromisoformat(records["c-2"]["_nango_metadata"]["deleted_at"]) == datetime.fromisoformat(when)
    assert records["c-1"]["name"] == "Contact 1"  # a deleted record keeps its last payload
    assert (await client.count_records(ENV, [scope.connection_id]))[0].count == 10

    resaved = await client.save_records(scope, [contact(1)])

    assert (resaved.summary.added, resaved.summary.added_keys) == (1, ("c-1",))
    meta = {r["id"]: r for r in await read_all(client, scope)}["c-1"]["_nango_metadata"]
    assert meta["last_action"] == "ADDED"
    assert meta["deleted_at"] is None
    assert meta["first_seen_at"] == meta["last_modified_at"]


async def test_duplicate_ids_in_a_batch_first_one_wins(client: PersistClient) -> None:
    scope = new_scope()
    batch = [contact(1, version=1), contact(2), contact(1, version=99), {"id": 2, "name": "number id"}, contact(1)]

    result = await client.save_records(scope, batch)

    assert result.summary.added == 3
    assert set(result.summary.non_unique_keys) == {"c-1"}
    records = {r["id"]: r for r in await read_all(client, scope)}
    assert records["c-1"]["version"] == 1
    assert records["2"]["name"] == "number id"  # a number id is stored (and answered) as a string


async def test_a_batch_with_one_invalid_record_writes_nothing(client: PersistClient, db: asyncpg.Connection) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(20)])
    before = await raw_rows(db, scope)
    bad_batches: list[Any] = [
        [*[contact(i, version=2) for i in range(30)], {"name": "no id"}],
        [*[contact(i, version=2) for i in range(30)], {"id": True}],
        [*[contact(i, version=2) for i in range(30)], {"id": ""}],
        [*[contact(i, version=2) for i in range(30)], "not an object"],
        [*[contact(i, version=2) for i in range(30)], {"id": "x" * 300}],
    ]
    for bad in bad_batches:
        with pytest.raises(InvalidRequest, match=r"records\[30\]"):
            await client.save_records(scope, bad)
    for raw in (b"{not json", b'{"id": "1"}', b"[NaN]", b""):
        with pytest.raises(InvalidRequest):
            await client.save_records(scope, raw)

    assert await raw_rows(db, scope) == before
    assert (await client.count_records(ENV, [scope.connection_id]))[0].count == 20


async def test_record_and_batch_size_limits_are_clear_and_write_nothing(
    client: PersistClient, db: asyncpg.Connection
) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(3)])
    before = await raw_rows(db, scope)
    too_big = {"id": "big", "blob": "x" * MAX_RECORD_BYTES}
    with pytest.raises(InvalidRequest, match=r"records\[1\] is 16.0 MB of JSON; a record holds at most 16 MB"):
        await client.save_records(scope, [contact(9), too_big])
    with pytest.raises(InvalidRequest, match=r"records\[0\] is 16.0 MB of JSON"):
        await client.update_records(scope, [{"id": "c-1", "blob": "x" * MAX_RECORD_BYTES}])
    # refused by the client before sending: gRPC would only say the message is too large
    with pytest.raises(InvalidRequest, match=r"a batch is at most 48 MB of JSON \(5\d.\d MB sent\)"):
        await client.save_records(scope, [{"id": str(i), "blob": "x" * (10 * MB)} for i in range(5)])
    assert await raw_rows(db, scope) == before


async def test_pages_of_large_records_stop_at_the_byte_budget(client: PersistClient) -> None:
    scope = new_scope("Blob")
    size = 10 * MB
    for i in range(7):
        await client.save_records(scope, [{"id": f"b{i}", "blob": str(i) * size}])
    await client.save_records(scope, [{"id": f"s{i}", "blob": "small"} for i in range(5)])
    pages = []
    cursor = None
    for _ in range(20):
        page = await client.get_records(scope, cursor=cursor, limit=10_000)
        pages.append([r["id"] for r in page.records()])
        cursor = page.next_cursor
        if cursor is None:
            break
    # payloads before a page's last record stay under PAGE_BYTES_BUDGET (32 MB): four 10 MB records a page
    assert pages[0] == ["b0", "b1", "b2", "b3"]
    # one batch shares a timestamp: its records follow in id order
    assert (len(pages), pages[1][:3], sorted(pages[1][3:])) == (2, ["b4", "b5", "b6"], ["s0", "s1", "s2", "s3", "s4"])
    assert PAGE_BYTES_BUDGET == 32 * MB
    one = await client.get_records(scope, limit=1)
    assert ([r["id"] for r in one.records()], one.next_cursor is not None) == (["b0"], True)
    filtered = await client.get_records(scope, external_ids=["s1", "b6", "b0"], limit=3)
    assert [r["id"] for r in filtered.records()] == ["b0", "b6", "s1"]


@pytest.mark.parametrize(
    "model", ["", "contact", "Contact::", "Contact::a::b", "Con tact", "C", "Contact;DROP", "Contact::v/1"]
)
async def test_model_names_are_checked(client: PersistClient, persist: Persist, model: str) -> None:
    channel = open_channel(persist.target, TOKEN)
    try:
        stub = persist_pb2_grpc.PersistServiceStub(channel)
        request = persist_pb2.SaveRecordsRequest(
            scope=persist_pb2.RecordScope(environment_id=ENV, nango_connection_id=1, model=model),
            records_json=b'[{"id": "1"}]',
        )
        with pytest.raises(InvalidRequest, match="model"):
            await invoke("persist", stub.SaveRecords(request, timeout=10))
    finally:
        await channel.close()


async def test_track_deletes_removes_what_a_generation_did_not_see(
    client: PersistClient, db: asyncpg.Connection
) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(100)], BatchContext(generation=10))
    before = await raw_rows(db, scope)
    # the next full sync sees 90 of them, unchanged, in two batches
    for chunk in (range(0, 50), range(50, 90)):
        result = await client.save_records(scope, [contact(i) for i in chunk], BatchContext(generation=11))
        assert result.summary.unchanged == len(chunk)

    outdated = await client.delete_outdated_records(scope, 11)

    assert outdated.deleted == 10
    assert set(outdated.deleted_keys) == {f"c-{i}" for i in range(90, 100)}
    after = await raw_rows(db, scope)
    # seen-but-unchanged records keep their cursor position
    assert all(after[f"c-{i}"]["updated_at"] == before[f"c-{i}"]["updated_at"] for i in range(90))
    assert {k for k, r in after.items() if r["deleted_at"] is not None} == set(outdated.deleted_keys)
    # an older generation ending late deletes nothing the newer one saw; repeating is a no-op
    assert (await client.delete_outdated_records(scope, 10)).deleted == 0
    assert (await client.delete_outdated_records(scope, 11)).deleted == 0
    with pytest.raises(InvalidRequest, match="sync job id"):
        await client.save_records(scope, [contact(1)], BatchContext(generation=-1))


async def test_paging_returns_every_record_once_in_cursor_order(client: PersistClient) -> None:
    scope = new_scope()
    for start in range(0, 2500, 500):
        await client.save_records(scope, [contact(i) for i in range(start, start + 500)])
    await client.save_records(scope, [contact(i, version=2) for i in range(0, 2500, 7)])

    records = await read_all(client, scope, limit=299)

    assert len(records) == 2500
    assert len({r["id"] for r in records}) == 2500
    keys = [(r["_nango_metadata"]["last_modified_at"], decode_id(r["_nango_metadata"]["cursor"])) for r in records]
    assert keys == sorted(keys)
    # any record's cursor resumes right after it
    middle = records[1234]["_nango_metadata"]["cursor"]
    page = await client.get_records(scope, cursor=middle, limit=10)
    assert [r["id"] for r in page.records()] == [r["id"] for r in records[1235:1245]]
    # the default page is 100 records
    assert len((await client.get_records(scope, limit=0)).records()) == 100
    assert await client.get_cursor(scope, CursorPosition.FIRST) == records[0]["_nango_metadata"]["cursor"]
    assert await client.get_cursor(scope, CursorPosition.LAST) == records[-1]["_nango_metadata"]["cursor"]
    assert await client.get_cursor(new_scope(), CursorPosition.LAST) is None


def decode_id(cursor: str) -> uuid.UUID:
    return uuid.UUID(base64.b64decode(cursor).decode().split("||")[1])


async def test_filters_combine_as_a_union(client: PersistClient) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(9)])
    await client.save_records(scope, [contact(i, version=2) for i in (3, 4, 5)])
    await client.delete_records(scope, [{"id": "c-5"}, {"id": "c-6"}])
    expected = {
        RecordAction.ADDED: {"c-0", "c-1", "c-2", "c-7", "c-8"},
        RecordAction.UPDATED: {"c-3", "c-4"},
        RecordAction.DELETED: {"c-5", "c-6"},
    }
    for size in (1, 2, 3):
        for actions in itertools.combinations(RecordAction, size):
            records = await read_all(client, scope, limit=2, actions=actions)
            assert {r["id"] for r in records} == set().union(*(expected[a] for a in actions)), actions
            assert {r["_nango_metadata"]["last_action"] for r in records} == {a.value for a in actions}
    assert len(await read_all(client, scope)) == 9


async def test_modified_after_and_ids(client: PersistClient) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(20)])
    await asyncio.sleep(0.01)
    mark = datetime.now(UTC)
    await client.save_records(scope, [contact(i, version=2) for i in (4, 8)])

    recent = await read_all(client, scope, modified_after=mark)
    chosen = await read_all(client, scope, external_ids=["c-1", "c-8", "c-404"])
    both = await read_all(client, scope, external_ids=["c-1", "c-8"], modified_after=mark)

    assert {r["id"] for r in recent} == {"c-4", "c-8"}
    assert {r["id"] for r in chosen} == {"c-1", "c-8"}
    assert [r["id"] for r in both] == ["c-8"]
    with pytest.raises(InvalidRequest, match="100 ids"):
        await client.get_records(scope, external_ids=[f"c-{i}" for i in range(101)])


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        base64.b64encode(b"garbage").decode(),
        base64.b64encode(b"2024-05-01T10:00:00.000000+00:00||not-a-uuid").decode(),
        base64.b64encode(f"yesterday||{uuid.uuid4()}".encode()).decode(),
        base64.b64encode(f"2024-05-01T10:00:00||{uuid.uuid4()}".encode()).decode(),
        base64.b64encode(f"2024-05-01T10:00:00+00:00||{uuid.uuid4()}||x".encode()).decode(),
        "A" * 1001,
    ],
)
async def test_a_bad_cursor_is_an_invalid_request(client: PersistClient, cursor: str) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(1)])
    with pytest.raises(InvalidCursor) as caught:
        await client.get_records(scope, cursor=cursor)
    assert caught.value.instance_code == "invalid_cursor_value"
    assert caught.value.status == 400


@pytest.mark.parametrize("limit", [-1, 10_001])
async def test_limit_is_bounded(client: PersistClient, limit: int) -> None:
    with pytest.raises(InvalidRequest, match="limit"):
        await client.get_records(new_scope(), limit=limit)


async def test_update_merges_into_live_records(client: PersistClient) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i, extra="keep") for i in range(5)])
    await client.delete_records(scope, [{"id": "c-4"}])

    result = await client.update_records(
        scope, [{"id": "c-1", "name": "Renamed"}, {"id": "c-2", "version": 1}, {"id": "c-4", "name": "x"}, {"id": "z"}]
    )

    assert (result.summary.updated, result.summary.updated_keys, result.summary.unchanged) == (1, ("c-1",), 1)
    records = {r["id"]: r for r in await read_all(client, scope)}
    assert records["c-1"]["name"] == "Renamed"
    assert records["c-1"]["extra"] == "keep"
    assert records["c-1"]["_nango_metadata"]["last_action"] == "UPDATED"
    assert records["c-4"]["name"] == "Contact 4"
    assert "z" not in records


async def test_merging_leaves_records_modified_after_the_cursor(client: PersistClient) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(6)])
    start = await client.get_cursor(scope, CursorPosition.LAST)
    assert start is not None
    # after the run started, c-2 is changed by someone else
    await client.update_records(scope, [{"id": "c-2", "name": "changed by the API"}])
    merging = Merging(MergingStrategy.IGNORE_IF_MODIFIED_AFTER_CURSOR, start)

    first = await client.save_records(scope, [contact(i, version=2) for i in range(4)], BatchContext(merging=merging))
    # between the run's batches, c-3 is changed by someone else
    await client.update_records(scope, [{"id": "c-3", "name": "changed again by the API"}])
    second = await client.save_records(
        scope, [contact(i, version=3) for i in (0, 3, 5)], BatchContext(merging=first.next_merging)
    )

    assert set(first.summary.updated_keys) == {"c-0", "c-1", "c-3"}
    assert first.summary.unchanged == 1
    assert first.next_merging.strategy is MergingStrategy.IGNORE_IF_MODIFIED_AFTER_CURSOR
    assert first.next_merging.cursor not in (None, start)
    # what the run itself wrote is not "modified by someone else" for its next batch
    assert set(second.summary.updated_keys) == {"c-0", "c-5"}
    assert second.summary.unchanged == 1
    records = {r["id"]: r for r in await read_all(client, scope)}
    assert records["c-2"]["name"] == "changed by the API"
    assert records["c-3"]["name"] == "changed again by the API"
    override = await client.save_records(scope, [contact(2, version=4)])
    assert override.summary.updated_keys == ("c-2",)
    assert override.next_merging == Merging(MergingStrategy.OVERRIDE)


async def test_prune_empties_payloads_up_to_a_cursor(client: PersistClient, db: asyncpg.Connection) -> None:
    scope = new_scope()
    for i in range(8):
        await client.save_records(scope, [contact(i, secret=SECRET)])
    records = await read_all(client, scope)
    size_before = (await client.count_records(ENV, [scope.connection_id]))[0].size_bytes
    until = records[4]["_nango_metadata"]["cursor"]

    first = await client.prune_records(scope, until, limit=3)
    second = await client.prune_records(scope, until, limit=3)

    assert (first.count, first.has_more) == (3, True)
    assert (second.count, second.has_more) == (2, False)
    after = await read_all(client, scope)
    assert [r["id"] for r in after] == [r["id"] for r in records]  # cursor order unchanged
    for record in after[:5]:
        assert set(record) == {"id", "_nango_metadata"}
        assert record["_nango_metadata"]["pruned_at"] is not None
    assert after[5]["name"] == "Contact 5"
    assert after[5]["_nango_metadata"]["pruned_at"] is None
    assert (await client.count_records(ENV, [scope.connection_id]))[0].size_bytes < size_before
    # saving the same content again brings the payload back without moving the record
    restored = await client.save_records(scope, [contact(0, secret=SECRET)])
    assert restored.summary.unchanged == 1
    again = {r["id"]: r for r in await read_all(client, scope)}["c-0"]
    assert again["name"] == "Contact 0"
    assert again["_nango_metadata"]["cursor"] == records[0]["_nango_metadata"]["cursor"]
    rows = await raw_rows(db, scope)
    assert (
        sum(r["size_bytes"] for r in rows.values())
        == (await client.count_records(ENV, [scope.connection_id]))[0].size_bytes
    )


async def test_clear_deletes_in_bounded_steps(client: PersistClient, db: asyncpg.Connection) -> None:
    connection = next(_connections)
    contacts, deals = RecordScope(ENV, connection, "Contact"), RecordScope(ENV, connection, "Deal::big")
    other = new_scope()
    await client.save_records(contacts, [contact(i) for i in range(30)])
    await client.save_records(deals, [contact(i) for i in range(20)])
    await client.save_records(other, [contact(i) for i in range(5)])

    steps = []
    for _ in range(10):
        step = await client.clear_records(ENV, connection, limit=20)
        steps.append(step.deleted_count)
        if not step.has_more:
            break

    assert steps == [20, 20, 10]
    assert await client.count_records(ENV, [connection]) == []
    left = await db.fetchval("SELECT count(*) FROM records WHERE connection_id = $1", connection)
    assert left == 0
    assert (await client.count_records(ENV, [other.connection_id]))[0].count == 5
    await client.save_records(contacts, [contact(1)])
    cleared = await client.clear_records(ENV, connection, ["Contact"])
    assert (cleared.deleted_count, cleared.has_more) == (1, False)


async def test_counts_follow_every_write(client: PersistClient, db: asyncpg.Connection) -> None:
    scope = new_scope("Ticket")
    await client.save_records(scope, [contact(i) for i in range(50)])
    await client.save_records(scope, [contact(i, version=2, padding="x" * 100) for i in range(10)])
    await client.delete_records(scope, [{"id": "c-1"}])
    await client.update_records(scope, [{"id": "c-2", "more": "y" * 50}])

    counts = await client.count_records(ENV, [scope.connection_id], ["Ticket"])
    actual = await db.fetchrow(
        "SELECT count(*), sum(size_bytes) FROM records WHERE connection_id = $1 AND model = $2",
        scope.connection_id,
        scope.model,
    )
    assert [(c.count, c.size_bytes) for c in counts] == [(actual[0], actual[1])]
    assert await client.count_records(ENV + 1, [scope.connection_id]) == []


async def test_payloads_are_not_readable_in_the_table(client: PersistClient, db: asyncpg.Connection) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i, api_token=SECRET, note=f"{SECRET} in prose") for i in range(20)])

    dump = await db.fetchval(
        "SELECT string_agg(r::text, '\n') FROM records AS r WHERE connection_id = $1", scope.connection_id
    )

    assert SECRET not in dump
    assert SECRET.encode().hex() not in dump
    assert "Contact 1" not in dump
    # bytea prints as hex, so also look at the stored bytes themselves
    payloads = await db.fetch("SELECT data FROM records WHERE connection_id = $1", scope.connection_id)
    assert len(payloads) == 20
    for row in payloads:
        assert SECRET.encode() not in row["data"]
        assert b"Contact" not in row["data"]
    records = await read_all(client, scope)
    assert records[0]["api_token"] == SECRET
    # a sealed payload is bound to its row: moved to another record it no longer opens
    await db.execute(
        "UPDATE records SET data = (SELECT data FROM records WHERE connection_id = $1 AND model = $2 "
        "AND external_id = 'c-0') WHERE connection_id = $1 AND model = $2 AND external_id = 'c-1'",
        scope.connection_id,
        scope.model,
    )
    with pytest.raises(Exception, match="failed authentication") as caught:
        await client.get_records(scope, external_ids=["c-1"])
    assert SECRET not in str(caught.value)


async def test_one_huge_connection_does_not_share_a_partition_or_a_scan(
    client: PersistClient, db: asyncpg.Connection
) -> None:
    huge, small = new_scope(), new_scope()
    await client.save_records(small, [contact(i) for i in range(10)])
    # find a second connection that hashes to another partition than `small`
    for _ in range(50):
        await client.save_records(huge, [contact(i) for i in range(1)])
        partitions = await db.fetch(
            "SELECT DISTINCT tableoid::regclass::text AS p, connection_id FROM records WHERE connection_id = ANY($1)",
            [huge.connection_id, small.connection_id],
        )
        if len({r["p"] for r in partitions}) == 2:
            break
        huge = new_scope()
    else:
        pytest.fail("no two connections on different partitions")
    for start in range(0, 20_000, 5000):
        await client.save_records(huge, [{"id": f"h-{i}", "n": i} for i in range(start, start + 5000)])
    await db.execute("ANALYZE records")

    plans = {}
    for scope in (huge, small):
        rows = await db.fetch(
            "EXPLAIN SELECT external_id FROM records WHERE connection_id = $1 AND model = $2 "
            "AND (updated_at, id) > ($3, $4) ORDER BY updated_at, id LIMIT 1001",
            scope.connection_id,
            scope.model,
            datetime(2020, 1, 1, tzinfo=UTC),
            uuid.UUID(int=0),
        )
        plans[scope] = "\n".join(r[0] for r in rows)
        # one partition only: the other connection's rows are never looked at
        assert len(set(re.findall(r"records_p\d+", plans[scope]))) == 1, plans[scope]
    assert "Index Scan" in plans[huge], plans[huge]
    assert "updated_at_id_idx" in plans[huge], plans[huge]
    assert "Sort" not in plans[huge], plans[huge]
    assert re.findall(r"records_p\d+", plans[huge])[0] != re.findall(r"records_p\d+", plans[small])[0]
    started = asyncio.get_running_loop().time()
    assert len(await read_all(client, small)) == 10
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_a_reader_paging_during_writes_sees_every_record_once(client: PersistClient) -> None:
    scope = new_scope()
    await asyncio.gather(
        *(client.save_records(scope, [contact(i) for i in range(s, s + 100)]) for s in range(0, 1000, 100))
    )
    writers = asyncio.gather(
        *(client.save_records(scope, [contact(i) for i in range(s, s + 50)]) for s in range(1000, 1500, 50))
    )
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        page = await client.get_records(scope, cursor=cursor, limit=40)
        records = page.records()
        seen += [r["id"] for r in records]
        if records:
            cursor = records[-1]["_nango_metadata"]["cursor"]
        if page.next_cursor is None:
            if writers.done():
                break
            await asyncio.sleep(0.005)
    await writers
    seen += [r["id"] for r in await read_all(client, scope, cursor=cursor)] if cursor else []

    assert len(seen) == len(set(seen)) == 1500


async def test_timestamps_have_microseconds(client: PersistClient) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(1)])
    meta = (await client.get_records(scope)).records()[0]["_nango_metadata"]
    for name in ("first_seen_at", "last_modified_at"):
        assert len(meta[name]) == len("2024-05-01T10:00:00.123456+00:00"), meta[name]
        assert datetime.fromisoformat(meta[name]) - datetime.now(UTC) < timedelta(minutes=1)


async def test_a_reconcile_pass_deletes_only_what_it_did_not_see_and_nobody_wrote_since(
    client: PersistClient, db: asyncpg.Connection
) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(10)])
    started_at = await client.start_reconcile(scope, "pass-1")
    before = await raw_rows(db, scope)
    assert all(row["updated_at"] < started_at for row in before.values())
    await client.mark_records_seen(scope, "pass-1", [f"c-{i}" for i in range(6)])
    await client.mark_records_seen(scope, "pass-1", ["c-1", "c-2"])
    # written while the pass lists: a change and a new record are kept; saving c-8 unchanged writes
    # nothing, so c-8 (which the listing did not see) is deleted like c-6 and c-9
    await client.save_records(scope, [contact(7, version=2), contact(10), contact(8)])

    result = await client.finish_reconcile(scope, "pass-1")

    assert (result.seen, result.deleted, sorted(result.deleted_keys)) == (6, 3, ["c-6", "c-8", "c-9"])
    after = await raw_rows(db, scope)
    assert sorted(k for k, row in after.items() if row["deleted_at"] is not None) == ["c-6", "c-8", "c-9"]
    # what the pass saw was not written at all
    assert {f"c-{i}": after[f"c-{i}"]["xmin"] for i in range(6)} == {
        f"c-{i}": before[f"c-{i}"]["xmin"] for i in range(6)
    }
    with pytest.raises(ReconcilePassNotOpen):
        await client.finish_reconcile(scope, "pass-1")
    assert await db.fetchval("SELECT count(*) FROM reconcile_seen WHERE connection_id = $1", scope.connection_id) == 0


async def test_a_reconcile_pass_that_saw_nothing_deletes_nothing_and_a_newer_pass_replaces_it(
    client: PersistClient, db: asyncpg.Connection
) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(3)])
    await client.start_reconcile(scope, "old")
    await client.mark_records_seen(scope, "old", ["c-0"])
    await client.start_reconcile(scope, "new")
    with pytest.raises(ReconcilePassNotOpen):
        await client.mark_records_seen(scope, "old", ["c-1"])
    with pytest.raises(ReconcilePassNotOpen):
        await client.finish_reconcile(scope, "old")
    result = await client.finish_reconcile(scope, "new")
    assert (result.seen, result.deleted) == (0, 0)
    assert all(row["deleted_at"] is None for row in (await raw_rows(db, scope)).values())


async def test_reconcile_input_is_checked(client: PersistClient, persist: Persist) -> None:
    scope = new_scope()
    await client.save_records(scope, [contact(1)])
    for pass_id in ("", "x" * 101, "tab\there", "é"):
        with pytest.raises(InvalidRequest, match="pass_id"):
            await client.start_reconcile(scope, pass_id)
    await client.start_reconcile(scope, "checked")
    with pytest.raises(InvalidRequest, match="at most 10000 ids"):
        await client.mark_records_seen(scope, "checked", [str(i) for i in range(10_001)])
    with pytest.raises(InvalidRequest, match=r"external_ids\[1\]"):
        await client.mark_records_seen(scope, "checked", ["ok", "x" * 256])
    # a task's token runs the pass named after its task only, on its own connection
    token = mint_task_token(TOKEN, TaskScope("task-7", ENV, scope.connection_id, time.time() + 60))
    async with PersistClient(persist.target, None, task_token=token) as task_client:
        with pytest.raises(Forbidden):
            await task_client.start_reconcile(scope, "checked")
        with pytest.raises(Forbidden):
            await task_client.start_reconcile(new_scope(), "task-7")
        await task_client.start_reconcile(scope, "task-7")
        await task_client.mark_records_seen(scope, "task-7", ["c-1"])
        assert (await task_client.finish_reconcile(scope, "task-7")).deleted == 0


async def test_page_times_and_cursors_are_the_stored_ones_to_the_microsecond(
    client: PersistClient, db: asyncpg.Connection
) -> None:
    # pages read timestamps as microseconds since the epoch: whole seconds, years before 1970 and
    # late years must come out exactly as the stored moments
    scope = new_scope()
    await client.save_records(scope, [contact(i) for i in range(4)])
    moments = {
        "c-0": ("1969-12-31 23:59:59.999999+00", "1969-12-31 23:59:59.999999+00"),
        "c-1": ("2024-05-01 10:00:00+00", "2024-05-01 12:00:00.000001+00"),
        "c-2": ("2001-02-03 04:05:06.5+00", "9000-01-01 00:00:00+00"),
    }
    for external_id, (created_at, updated_at) in moments.items():
        await db.execute(
            "UPDATE records SET created_at = $4::text::timestamptz, updated_at = $5::text::timestamptz "
            "WHERE connection_id = $1 AND model = $2 AND external_id = $3",
            scope.connection_id,
            scope.model,
            external_id,
            created_at,
            updated_at,
        )
    stored = {
        row["external_id"]: row
        for row in await db.fetch(
            "SELECT external_id, id, created_at, updated_at FROM records WHERE connection_id = $1 AND model = $2",
            scope.connection_id,
            scope.model,
        )
    }

    first = await client.get_records(scope, limit=3)
    rest = await client.get_records(scope, cursor=first.next_cursor, limit=3)

    records = first.records() + rest.records()
    assert [r["id"] for r in records] == ["c-0", "c-1", "c-3", "c-2"]
    for record in records:
        row = stored[record["id"]]
        meta = record["_nango_metadata"]
        assert meta["first_seen_at"] == row["created_at"].isoformat(timespec="microseconds")
        assert meta["last_modified_at"] == row["updated_at"].isoformat(timespec="microseconds")
        assert meta["cursor"] == encode_cursor(row["updated_at"], row["id"])
        assert meta["last_action"] == ("ADDED" if row["created_at"] == row["updated_at"] else "UPDATED")
    assert first.next_cursor == records[2]["_nango_metadata"]["cursor"]
    assert rest.next_cursor is None
