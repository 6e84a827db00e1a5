"""Records through the `nango` object: validation against the model, batches of 1,000, variants,
partial updates, deletions and track-deletes bookkeeping."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from sdk_fakes import FakeBackend, context

from nango.sdk import InvalidRecord, Model, Nango, SdkError, sync
from nango.sdk.definitions import FunctionDefinition, clear_registry, registered
from nango.sdk.execute import execute
from nango.sdk.runtime import MAX_CHUNK_BYTES, MAX_RECORD_BYTES, MB, BatchSummary, ModelCounts


class Contact(Model):
    id: str
    name: str
    age: int | None = None


class Company(Model):
    id: int
    domain: str


@pytest.fixture
def definition() -> FunctionDefinition:
    clear_registry()

    @sync(description="d", frequency="every hour", models=[Contact, Company])
    async def contacts(nango: Any) -> None:
        return None

    return registered()[0]


def nango_for(definition: FunctionDefinition, backend: FakeBackend, **overrides: Any) -> Nango:
    return Nango(context(**overrides), backend, definition)


async def test_records_are_validated_and_sent_in_batches_of_1000(definition: FunctionDefinition) -> None:
    backend = FakeBackend()
    changes: list[tuple[str, ModelCounts]] = []
    nango = Nango(context(), backend, definition, on_records_changed=lambda m, c: changes.append((m, c)))
    records: list[Any] = [Contact(id=str(i), name=f"n{i}") for i in range(2000)]
    records += [{"id": str(i), "name": f"d{i}", "age": "41"} for i in range(2000, 2500)]
    assert await nango.batch_save(records, "Contact")
    # the last batches may still be in flight when batch_save returns
    await nango.settle_records()
    assert [len(batch) for _, batch in backend.saved] == [1000, 1000, 500]
    assert backend.saved[2][1][0] == {"id": "2000", "name": "d2000", "age": 41}
    assert nango.results["Contact"].added == 2500
    assert [c.added for _, c in changes] == [1000, 1000, 500]


async def test_an_invalid_record_sends_nothing(definition: FunctionDefinition) -> None:
    backend = FakeBackend()
    nango = nango_for(definition, backend)
    with pytest.raises(InvalidRecord, match=r"record 1 of model Contact is invalid: name"):
        await nango.batch_save([{"id": "1", "name": "ok"}, {"id": "2"}], "Contact")
    with pytest.raises(InvalidRecord, match="record 0 of model Company"):
        await nango.batch_save([{"id": "x", "domain": "a.com"}], Company)
    assert backend.saved == []


async def test_models_are_named_with_their_variant(definition: FunctionDefinition) -> None:
    backend = FakeBackend()
    nango = nango_for(definition, backend, variant="eu")
    await nango.batch_save([Company(id=1, domain="a.com")], Company)
    # the last batches may still be in flight when batch_save returns
    await nango.settle_records()
    assert backend.saved == [("Company::eu", [{"id": 1, "domain": "a.com"}])]
    assert nango.model_full_name("Contact") == "Contact::eu"
    assert nango_for(definition, backend, variant="base").model_full_name("Contact") == "Contact"


async def test_undeclared_models_and_non_syncs_are_refused(definition: FunctionDefinition) -> None:
    nango = nango_for(definition, FakeBackend())
    with pytest.raises(SdkError, match="does not declare a model 'Deal'"):
        await nango.batch_save([{"id": "1"}], "Deal")
    action_nango = Nango(context(function_type="action"), FakeBackend(), None)
    with pytest.raises(SdkError, match="only be saved by syncs"):
        await action_nango.batch_save([{"id": "1", "name": "n"}], "Contact")


async def test_updates_are_partial_and_deletions_need_only_ids(definition: FunctionDefinition) -> None:
    backend = FakeBackend()
    nango = nango_for(definition, backend)
    await nango.batch_update([{"id": "1", "age": 30}, Contact(id="2", name="Bo")], "Contact")
    assert backend.updated == [("Contact", [{"id": "1", "age": 30}, {"id": "2", "name": "Bo"}])]
    with pytest.raises(InvalidRecord, match="age"):
        await nango.batch_update([{"id": "1", "age": "old"}], "Contact")
    with pytest.raises(InvalidRecord, match="id"):
        await nango.batch_update([{"age": 1}], "Contact")
    await nango.batch_delete([{"id": "1"}, Contact(id="2", name="x")], "Contact")
    assert backend.deleted == [("Contact", [{"id": "1"}, {"id": "2"}])]
    with pytest.raises(InvalidRecord, match="string or integer id"):
        await nango.batch_delete([{"name": "no id"}], "Contact")
    assert nango.results["Contact"] == ModelCounts(added=0, updated=2, deleted=2)


async def test_records_by_ids_leave_out_missing_and_deleted(definition: FunctionDefinition) -> None:
    backend = FakeBackend()
    nango = nango_for(definition, backend)
    await nango.batch_save([{"id": "1", "name": "a"}, {"id": "2", "name": "b"}], "Contact")
    backend.saved.append(("Contact", [{"id": "3", "name": "c", "_nango_metadata": {"deleted_at": "2024-01-01"}}]))
    found = await nango.get_records_by_ids(["1", "3", "9"], "Contact")
    assert list(found) == ["1"]


async def test_track_deletes_uses_the_job_that_started_the_pass(definition: FunctionDefinition) -> None:
    backend = FakeBackend()
    first = nango_for(definition, backend, sync_job_id="7")
    await first.track_deletes_start("Contact")
    # an interrupted pass is continued by the next run, not restarted
    second = nango_for(definition, backend, sync_job_id="8")
    await second.track_deletes_start("Contact")
    assert await second.track_deletes_end("Contact") == {"deleted_keys": ["gone"]}
    assert backend.outdated == [("Contact", 7)]
    assert second.results["Contact"].deleted == 1
    with pytest.raises(SdkError, match="without track_deletes_start"):
        await second.track_deletes_end("Contact")
    third = nango_for(definition, backend, sync_job_id="9")
    await third.track_deletes_start("Contact")
    await third.track_deletes_end("Contact")
    assert backend.outdated[-1] == ("Contact", 9)


async def test_track_deletes_needs_a_sync_job_id(definition: FunctionDefinition) -> None:
    nango = nango_for(definition, FakeBackend(), sync_job_id="")
    with pytest.raises(SdkError, match="sync job id"):
        await nango.track_deletes_start("Contact")


async def test_large_records_are_sent_in_batches_under_the_byte_limit(definition: FunctionDefinition) -> None:
    backend = FakeBackend()
    nango = nango_for(definition, backend)
    big = "x" * (10 * MB)
    await nango.batch_save([Contact(id=str(i), name=big) for i in range(7)] + [Contact(id="s", name="s")], "Contact")
    # the last batches may still be in flight when batch_save returns
    await nango.settle_records()
    # three 10 MB records per batch keep each batch under MAX_CHUNK_BYTES
    assert [[r["id"] for r in batch] for _, batch in backend.saved] == [["0", "1", "2"], ["3", "4", "5"], ["6", "s"]]
    assert all(len(json.dumps(batch)) <= MAX_CHUNK_BYTES for _, batch in backend.saved)
    assert nango.results["Contact"].added == 8


async def test_a_record_over_the_size_limit_sends_nothing(definition: FunctionDefinition) -> None:
    backend = FakeBackend()
    nango = nango_for(definition, backend)
    records = [Contact(id="a", name="a"), Contact(id="b", name="x" * (MAX_RECORD_BYTES + 1))]
    with pytest.raises(InvalidRecord, match=r"record 1 of model Contact is invalid: size: 16.0 MB of JSON, over"):
        await nango.batch_save(records, "Contact")
    with pytest.raises(InvalidRecord, match=r"record 1 of model Contact is invalid: size"):
        await nango.batch_update([{"id": "a"}, {"id": "b", "name": "x" * (MAX_RECORD_BYTES + 1)}], "Contact")
    assert backend.saved == backend.updated == []


async def test_repeated_ids_in_a_batch_are_logged_as_a_warning(definition: FunctionDefinition) -> None:
    class Repeating(FakeBackend):
        async def save_records(self, model: str, records: bytes) -> BatchSummary:
            ids = [str(r["id"]) for r in json.loads(records)]
            repeated = tuple(i for n, i in enumerate(ids) if i in ids[:n])
            return BatchSummary(added=len(set(ids)), non_unique_keys=repeated)

    backend = Repeating()
    nango = nango_for(definition, backend)
    await nango.batch_save([{"id": "a", "name": "1"}, {"id": "b", "name": "2"}, {"id": "a", "name": "3"}], "Contact")
    await nango.finish()
    assert nango.results["Contact"].added == 2
    (line,) = backend.logs
    assert line.level == "warn"
    assert "1 id(s) of model Contact appeared more than once in one batch" in line.message
    assert line.message.endswith(": a")


class GatedBackend(FakeBackend):
    """A persist whose batches are written when the test says so: `events` tells what started and ended
    in which order; a batch listed in `refuse` (by its first id) fails."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.events: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.refuse = refuse

    def release(self, first_id: str) -> None:
        self.gates.setdefault(first_id, asyncio.Event()).set()

    async def save_records(self, model: str, records: bytes) -> BatchSummary:
        first = str(json.loads(records)[0]["id"])
        self.events.append(f"start {first}")
        await self.gates.setdefault(first, asyncio.Event()).wait()
        self.events.append(f"end {first}")
        if first in self.refuse:
            raise SdkError(f"persist refused the batch starting at {first}")
        return await super().save_records(model, records)

    async def put_checkpoint(self, key: str, value: dict[str, Any], expected_version: int) -> int:
        self.events.append("checkpoint")
        return await super().put_checkpoint(key, value, expected_version)


def contacts(*ids: str) -> list[Contact]:
    return [Contact(id=i, name=f"n{i}") for i in ids]


async def settled() -> None:
    """Let the event loop run what is ready (calls in flight, batches sent) as far as it goes."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_next_batch_is_sent_while_one_is_written(definition: FunctionDefinition) -> None:
    backend = GatedBackend()
    nango = nango_for(definition, backend)
    assert await nango.batch_save(contacts("a", "b"), "Contact")
    assert await nango.batch_save(contacts("c", "d"), "Contact")
    await settled()
    # both in flight, neither written yet
    assert backend.events == ["start a", "start c"]
    third = asyncio.ensure_future(nango.batch_save(contacts("e"), "Contact"))
    await settled()
    # at most two in flight: the third waits for the oldest
    assert backend.events == ["start a", "start c"]
    assert not third.done()
    backend.release("a")
    await settled()
    assert backend.events == ["start a", "start c", "end a", "start e"]
    assert third.done()
    assert nango.results["Contact"].added == 2
    backend.release("c")
    backend.release("e")
    await nango.settle_records()
    assert nango.results["Contact"].added == 5
    assert [[r["id"] for r in batch] for _, batch in backend.saved] == [["a", "b"], ["c", "d"], ["e"]]


async def test_a_batch_sharing_an_id_with_one_in_flight_waits_for_it(definition: FunctionDefinition) -> None:
    backend = GatedBackend()
    nango = nango_for(definition, backend)
    await nango.batch_save(contacts("a", "b"), "Contact")
    second = asyncio.ensure_future(nango.batch_save(contacts("x", "b"), "Contact"))
    await settled()
    # there is room for two in flight, but "b" of the first is not written yet
    assert backend.events == ["start a"]
    assert not second.done()
    backend.release("a")
    await second
    backend.release("x")
    await nango.settle_records()
    assert backend.events == ["start a", "end a", "start x", "end x"]
    # a number id and its string are one record; the same id in another model is another record
    await nango.batch_save([Company(id=7, domain="x.com")], Company)
    third = asyncio.ensure_future(nango.batch_save([{"id": "7", "domain": "y.com"}], Company))
    await settled()
    assert not third.done()
    other_model = asyncio.ensure_future(nango.batch_save(contacts("7"), "Contact"))
    await settled()
    assert other_model.done()
    assert backend.events[-2:] == ["start 7", "start 7"]
    backend.release("7")
    await third
    await nango.settle_records()
    # the later record wins: it was written last
    assert [batch for model, batch in backend.saved if model == "Company"][-1] == [{"id": 7, "domain": "y.com"}]


async def test_a_refused_batch_raises_at_the_next_call_and_stops_what_follows(definition: FunctionDefinition) -> None:
    backend = GatedBackend(refuse=frozenset({"a"}))
    nango = nango_for(definition, backend)
    await nango.batch_save(contacts("a"), "Contact")
    await nango.batch_save(contacts("b"), "Contact")
    backend.release("a")
    with pytest.raises(SdkError, match="persist refused the batch starting at a"):
        await nango.batch_save(contacts("c"), "Contact")
    # the batch after the refused one was already out and is written; the one raising was not sent
    backend.release("b")
    await nango.settle_records()
    assert [[r["id"] for r in batch] for _, batch in backend.saved] == [["b"]]
    assert "start c" not in backend.events


async def test_a_checkpoint_is_written_after_the_records_saved_before_it(definition: FunctionDefinition) -> None:
    backend = GatedBackend(refuse=frozenset({"b"}))
    nango = nango_for(definition, backend)
    await nango.batch_save(contacts("a"), "Contact")
    await nango.batch_save(contacts("b"), "Contact")
    saving = asyncio.ensure_future(nango.save_checkpoint({"page": 2}))
    await settled()
    assert "checkpoint" not in backend.events
    backend.release("a")
    backend.release("b")
    # the second batch failed: the checkpoint, which would claim it saved, is not written
    with pytest.raises(SdkError, match="starting at b"):
        await saving
    assert backend.events == ["start a", "start b", "end a", "end b"]
    assert backend.checkpoints == {}


async def test_a_run_whose_last_batch_fails_fails(definition: FunctionDefinition) -> None:
    backend = GatedBackend(refuse=frozenset({"z"}))
    backend.release("a")
    backend.release("z")

    async def handler(nango: Nango) -> None:
        await nango.batch_save(contacts("a"), "Contact")
        await nango.batch_save(contacts("z"), "Contact")

    nango = nango_for(definition, backend)
    with pytest.raises(SdkError, match="starting at z"):
        await execute(replace(definition, handler=handler), nango, "sync")
    assert nango.results["Contact"].added == 1


async def test_finish_waits_for_batches_left_in_flight_and_counts_them(definition: FunctionDefinition) -> None:
    backend = GatedBackend(refuse=frozenset({"b"}))
    nango = nango_for(definition, backend)
    await nango.batch_save(contacts("a"), "Contact")
    await nango.batch_save(contacts("b"), "Contact")
    backend.release("a")
    backend.release("b")
    # the function failed before reading the answers: finish neither loses the written batch nor raises
    await nango.finish()
    assert nango.results["Contact"].added == 1
    assert backend.events[-1] == "end b"
