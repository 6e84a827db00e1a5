"""Bad input to functions under `nango up`: each is refused (or reported) with a clear error, and
nothing already stored changes: the deployed functions, their code and the cached records.

Covered here: bundles that do not import, a model without `id`, invalid frequencies (deploy and per
connection), a record failing its model, a batch with duplicate ids, `batch_save` of 10 MB records,
unknown functions (action and sync triggers), and tampered cursors on `GET /records`.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from nango.jobs.client import JobsClient, SyncJob, SyncJobStatus
from nango.orchestrator.client import OrchestratorClient
from tests.support.items import ItemsApi, Rest, start_items_platform
from tests.support.platform import Up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MODELS = """
from nango.sdk import Model


class Item(Model):
    id: str
    name: str
    value: int
    updated: int


class Strict(Model):
    id: str
    count: int


class Pair(Model):
    id: str
    name: str


class Blob(Model):
    id: str
    data: str
"""

SYNCS = """
from models import Blob, Item, Pair, Strict

from nango.sdk import action, sync

MB = 1024 * 1024


@sync(description="Every item", frequency="every day", models=[Item], track_deletes=True)
async def items(nango):
    async for page in nango.paginate(endpoint="/items", paginate={"limit": 100}):
        await nango.batch_save([Item(**item) for item in page], "Item")


@sync(description="Its second batch fails the model", frequency="every day", models=[Strict])
async def strict(nango):
    await nango.batch_save([Strict(id=f"s{i}", count=i) for i in range(3)], "Strict")
    await nango.batch_save([{"id": "s3", "count": 3}, {"id": "s4", "count": "four"}], "Strict")


@sync(description="One id twice in a batch", frequency="every day", models=[Pair])
async def pairs(nango):
    batch = [{"id": "a", "name": "first"}, {"id": "b", "name": "b"}, {"id": "a", "name": "second"}]
    await nango.batch_save(batch, "Pair")


@sync(description="Records of 10 MB", frequency="every day", models=[Blob])
async def blobs(nango):
    await nango.batch_save([Blob(id=f"b{i}", data=str(i) * (10 * MB)) for i in range(7)], "Blob")


@action(description="Echo")
async def echo(nango, input):
    return input
"""

GOOD = {"models.py": MODELS, "syncs.py": SYNCS}
INTEGRATION = "bad-input"
CONNECTION = "bad-user"
API_KEY = "key-bad"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, api: ItemsApi) -> Iterator[Up]:
    up = start_items_platform(tmp_path_factory.mktemp("badinput"), api, "badinput")
    yield up
    assert up.stop() == 0


@pytest.fixture(scope="module")
async def jobs(platform: Up) -> AsyncIterator[JobsClient]:
    token = platform.internal_token
    async with JobsClient(f"127.0.0.1:{platform.ports['NANGO_JOBS_PORT']}", token) as client:
        yield client


@pytest.fixture(scope="module")
async def orchestrator(platform: Up) -> AsyncIterator[OrchestratorClient]:
    token = platform.internal_token
    async with OrchestratorClient(f"127.0.0.1:{platform.ports['NANGO_ORCHESTRATOR_PORT']}", token) as client:
        yield client


@pytest.fixture(scope="module")
async def rest(platform: Up, api: ItemsApi) -> Rest:
    """The good bundle deployed, a connection, and every sync's first run ended."""
    client = Rest(platform)
    for i in range(250):
        api.put(API_KEY, f"item-{i:03d}", name=f"Item {i}", value=i)
    await client.deploy(INTEGRATION, GOOD)
    await client.connect(INTEGRATION, CONNECTION, API_KEY)
    for sync in ("items", "strict", "pairs", "blobs"):
        await client.wait_run(INTEGRATION, CONNECTION, sync, timeout=90)
    return client


async def snapshot(rest: Rest) -> dict[str, Any]:
    """What must not change: functions, their code, and the records of the good sync."""
    functions = await rest.ok("GET", f"/integrations/{INTEGRATION}/functions")
    code = await rest.ok("GET", f"/integrations/{INTEGRATION}/functions/items/code")
    records = await rest.records(INTEGRATION, CONNECTION, "Item")
    return {"functions": functions, "code": code, "records": records}


async def latest_job(jobs: JobsClient, rest: Rest, sync: str) -> SyncJob:
    status = await rest.sync_status(INTEGRATION, CONNECTION, sync)
    (job,) = await jobs.list_sync_jobs([status["id"]], latest_only=True)
    return job


def names(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {str(r["id"]): r.get("name") for r in records}


NO_ID = """
from nango.sdk import Model, sync


class NoId(Model):
    name: str


@sync(description="d", frequency="every day", models=[NoId])
async def s(nango): ...
"""
BROKEN_SYNC = (
    'from nango.sdk import sync\n\n@sync(description="d", frequency="{}", models=[])\nasync def s(nango): ...\n'
)


@pytest.mark.parametrize(
    ("files", "needles"),
    [
        ({"broken.py": "def (:\n"}, ["broken.py", "line 1"]),
        ({"missing.py": "import no_such_module\n"}, ["missing.py", "no_such_module"]),
        ({"boom.py": "raise RuntimeError('boom at import')\n"}, ["boom.py", "boom at import"]),
        ({"nothing.py": "x = 1\n"}, ["no function"]),
        ({"s.py": NO_ID}, ["s.py", "model NoId has no `id` field"]),
        ({"s.py": BROKEN_SYNC.format("whenever")}, ["frequency", "whenever"]),
        ({"s.py": BROKEN_SYNC.format("every 10 seconds")}, ["frequency", "30 seconds"]),
        ({"s.py": BROKEN_SYNC.format("every 40 days")}, ["frequency", "31 days"]),
    ],
)
async def test_a_bad_bundle_is_refused_and_changes_nothing(
    rest: Rest, files: dict[str, str], needles: list[str]
) -> None:
    before = await snapshot(rest)
    status, answer = await rest.call(
        "POST", "/functions/deploy", {"integrations": {INTEGRATION: {"files": files}}, "confirm": True}
    )
    assert status == 400, answer
    assert set(answer["error"]) >= {"code", "message"}
    for needle in needles:
        assert needle in answer["error"]["message"], answer
    assert await snapshot(rest) == before


async def test_an_invalid_frequency_for_a_connection_is_refused(rest: Rest) -> None:
    before = await rest.sync_status(INTEGRATION, CONNECTION, "items")
    for frequency in ("whenever", "every 10 seconds", "every 40 days", ""):
        body = {
            "sync_name": "items",
            "provider_config_key": INTEGRATION,
            "connection_id": CONNECTION,
            "frequency": frequency,
        }
        status, answer = await rest.call("PUT", "/sync/update-connection-frequency", body)
        assert (status, answer["error"]["message"]) == (400, "Sync interval is invalid"), frequency
    after = await rest.sync_status(INTEGRATION, CONNECTION, "items")
    assert (after["frequency"], after["nextScheduledSyncAt"]) == (before["frequency"], before["nextScheduledSyncAt"])


async def test_a_record_failing_its_model_fails_the_run_and_writes_nothing_of_its_batch(
    rest: Rest, jobs: JobsClient
) -> None:
    status = await rest.sync_status(INTEGRATION, CONNECTION, "strict")
    assert status["latestExecutionStatus"] == "ERROR", status
    job = await latest_job(jobs, rest, "strict")
    assert job.status is SyncJobStatus.ERROR
    assert job.error is not None
    assert job.error.type == "script_error"
    assert "record 1 of model Strict is invalid: count" in job.error.message
    stored = await rest.records(INTEGRATION, CONNECTION, "Strict")
    # the first batch is kept; nothing of the second (not even its valid record s3)
    assert sorted(str(r["id"]) for r in stored) == ["s0", "s1", "s2"]


async def test_a_batch_with_duplicate_ids_keeps_the_first_and_says_so(rest: Rest, jobs: JobsClient) -> None:
    status = await rest.sync_status(INTEGRATION, CONNECTION, "pairs")
    assert status["latestExecutionStatus"] == "SUCCESS", status
    assert status["latestResult"] == {"Pair": {"added": 2, "updated": 0, "deleted": 0}}
    stored = await rest.records(INTEGRATION, CONNECTION, "Pair")
    assert names(stored) == {"a": "first", "b": "b"}


async def test_records_of_10_mb_are_saved_and_read_back(rest: Rest, jobs: JobsClient) -> None:
    status = await rest.sync_status(INTEGRATION, CONNECTION, "blobs")
    assert status["latestExecutionStatus"] == "SUCCESS", (await latest_job(jobs, rest, "blobs")).error
    assert status["latestResult"] == {"Blob": {"added": 7, "updated": 0, "deleted": 0}}
    # 70 MB in all: more than one answer holds, so pages stop early and carry a cursor
    stored = await rest.records(INTEGRATION, CONNECTION, "Blob")
    assert {str(r["id"]): r["data"] for r in stored} == {f"b{i}": str(i) * (10 * MB) for i in range(7)}


async def test_unknown_functions_are_not_found(rest: Rest) -> None:
    headers = {"Connection-Id": CONNECTION, "Provider-Config-Key": INTEGRATION}
    for name in ("nope", "items"):
        status, answer = await rest.call("POST", "/action/trigger", {"action_name": name}, headers=headers)
        assert (status, answer["error"]["code"]) == (404, "not_found"), answer
        status, answer = await rest.call(
            "POST", "/action/trigger", {"action_name": name}, headers={**headers, "X-Async": "true"}
        )
        assert (status, answer["error"]["code"]) == (404, "not_found"), answer
    assert await rest.ok("POST", "/action/trigger", {"action_name": "echo", "input": 1}, headers=headers) == 1
    for sync in ("nope", "echo"):
        body = {"syncs": [sync], "provider_config_key": INTEGRATION, "connection_id": CONNECTION}
        status, answer = await rest.call("POST", "/sync/trigger", body)
        assert (status, answer["error"]["code"]) == (400, "no_syncs_found"), answer
    # as Nango: the status of syncs that do not exist is an empty list
    status, answer = await rest.call(
        "GET", "/sync/status", syncs="nope", provider_config_key=INTEGRATION, connection_id=CONNECTION
    )
    assert (status, answer) == (200, {"syncs": []})


def cursor_of(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


TAMPERED = [
    "not base64 at all!",
    cursor_of("yesterday||not-a-uuid"),
    cursor_of("2024-05-01T10:00:00.000000+00:00"),
    cursor_of("2024-05-01T10:00:00.000000||00000000-0000-0000-0000-000000000000"),
    cursor_of("2024-05-01T10:00:00.000000+00:00||00000000-0000-0000-0000-000000000000||x"),
    cursor_of("0001-01-01T00:00:00.000000+14:00||00000000-0000-0000-0000-000000000000"),
    cursor_of("9999-12-31T23:59:59.999999-14:00||00000000-0000-0000-0000-000000000000"),
    cursor_of("2024-05-01T10:00:00.000000+00:00||{00000000-0000-0000-0000-000000000000}"),
    cursor_of(b"\xff\xfe||\x00"),
    cursor_of("2024-05-01T10:00:00.000000+00:00\x00||00000000-0000-0000-0000-000000000000"),
]


@pytest.mark.parametrize("cursor", TAMPERED, ids=[f"tampered-{i}" for i in range(len(TAMPERED))])
async def test_a_tampered_cursor_is_refused(rest: Rest, cursor: str) -> None:
    before = await rest.records(INTEGRATION, CONNECTION, "Item")
    headers = {"Connection-Id": CONNECTION, "Provider-Config-Key": INTEGRATION}
    status, answer = await rest.call("GET", "/records", headers=headers, model="Item", cursor=cursor)
    assert (status, answer["error"]["code"]) == (400, "invalid_cursor_value"), answer
    assert await rest.records(INTEGRATION, CONNECTION, "Item") == before


async def test_a_modified_after_past_year_9999_in_utc_is_refused(rest: Rest) -> None:
    headers = {"Connection-Id": CONNECTION, "Provider-Config-Key": INTEGRATION}
    status, answer = await rest.call(
        "GET", "/records", headers=headers, model="Item", modified_after="9999-12-31T23:59:59-14:00"
    )
    assert (status, answer["error"]["code"]) == (400, "invalid_query_params"), answer


async def test_a_well_formed_cursor_only_chooses_where_reading_starts(rest: Rest) -> None:
    """A cursor is a position, not a secret: a crafted one reads from there, and nothing else."""
    everything = await rest.records(INTEGRATION, CONNECTION, "Item")
    headers = {"Connection-Id": CONNECTION, "Provider-Config-Key": INTEGRATION}
    start = cursor_of("2000-01-01T00:00:00.000000+00:00||00000000-0000-0000-0000-000000000000")
    page = await rest.ok("GET", "/records", headers=headers, model="Item", limit=10_000, cursor=start)
    assert page["records"] == everything
    end = cursor_of("2999-01-01T00:00:00.000000+00:00||ffffffff-ffff-ffff-ffff-ffffffffffff")
    assert await rest.ok("GET", "/records", headers=headers, model="Item", cursor=end) == {
        "next_cursor": None,
        "records": [],
    }


async def test_the_good_sync_still_runs_after_all_that(rest: Rest, api: ItemsApi) -> None:
    before = await rest.sync_status(INTEGRATION, CONNECTION, "items")
    api.put(API_KEY, "item-000", name="Changed", value=-1)
    await rest.trigger(INTEGRATION, CONNECTION, "items")
    after = await rest.wait_run(INTEGRATION, CONNECTION, "items", after=before["finishedAt"], timeout=60)
    assert after["latestExecutionStatus"] == "SUCCESS", after
    assert after["latestResult"] == {"Item": {"added": 0, "updated": 1, "deleted": 0}}
    stored = await rest.records(INTEGRATION, CONNECTION, "Item")
    assert {str(r["id"]): {k: v for k, v in r.items() if k != "_nango_metadata"} for r in stored} == api.view(API_KEY)
