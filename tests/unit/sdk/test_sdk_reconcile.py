"""A sync run as a reconcile pass (`reconcile_deletes`): ids only, nothing written, the checkpoint left
alone, one pass per model opened before the function and closed after it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sdk_fakes import FakeBackend, context

from nango.sdk import Model, Nango, sync
from nango.sdk.definitions import FunctionDefinition, clear_registry, registered
from nango.sdk.execute import execute


class Contact(Model):
    id: str
    name: str


class Company(Model):
    id: int
    domain: str


def declare(body: Any, **options: Any) -> FunctionDefinition:
    clear_registry()
    sync(description="d", frequency="every hour", models=[Contact, Company], reconcile_deletes="every day", **options)(
        body
    )
    return registered()[0]


async def lists_ids(nango: Any) -> None:
    """What an incremental sync does when `nango.is_reconcile`: list everything, ids only."""
    checkpoint = await nango.get_checkpoint()
    assert checkpoint is None
    assert nango.last_sync_date is None
    await nango.batch_save([{"id": "a"}, Contact(id="b", name="B")], "Contact")
    await nango.batch_update([{"id": "c"}], "Contact")
    await nango.batch_save([{"id": 1}], Company)
    await nango.save_checkpoint({"since": 99})
    await nango.track_deletes_start("Contact")
    assert await nango.track_deletes_end("Contact") == {"deleted_keys": []}


async def test_a_reconcile_pass_marks_ids_and_writes_nothing() -> None:
    backend = FakeBackend()
    backend.saved.append(("Contact", [{"id": "a"}, {"id": "gone"}]))
    definition = declare(lists_ids)
    nango = Nango(context(reconcile=True, last_sync_date=datetime(2024, 1, 1, tzinfo=UTC)), backend, definition)
    assert nango.is_reconcile

    assert await execute(definition, nango, "sync") == b"null"

    assert backend.reconciled == ["Contact", "Company"]
    assert backend.saved == [("Contact", [{"id": "a"}, {"id": "gone"}])]
    assert backend.updated == []
    assert backend.checkpoints == {}
    assert backend.outdated == []
    assert nango.results["Contact"].deleted == 1
    await nango.finish()
    assert "reconcile pass over Contact: 3 id(s) seen, 1 record(s) deleted: gone" in [
        line.message for line in backend.logs
    ]


async def test_a_failed_pass_deletes_nothing() -> None:
    async def fails(nango: Any) -> None:
        await nango.batch_save([{"id": "a"}], "Contact")
        raise RuntimeError("upstream broke mid-listing")

    backend = FakeBackend()
    definition = declare(fails)
    nango = Nango(context(reconcile=True), backend, definition)
    with pytest.raises(RuntimeError):
        await execute(definition, nango, "sync")
    assert backend.reconciled == []
    assert set(backend.reconciling) == {"Contact", "Company"}


async def test_a_reconcile_pass_still_needs_ids_and_applies_deletions() -> None:
    async def lists(nango: Any) -> None:
        await nango.batch_delete([{"id": "x"}], "Contact")
        await nango.batch_save([{"name": "no id"}], "Contact")

    backend = FakeBackend()
    definition = declare(lists)
    nango = Nango(context(reconcile=True), backend, definition)
    with pytest.raises(Exception, match="record 0 of model Contact is invalid: id"):
        await execute(definition, nango, "sync")
    assert backend.deleted == [("Contact", [{"id": "x"}])]


async def test_legacy_track_deletes_does_not_run_in_a_pass() -> None:
    async def nothing(nango: Any) -> None:
        await nango.batch_save([{"id": "a"}], "Contact")

    backend = FakeBackend()
    definition = declare(nothing, track_deletes=True)
    nango = Nango(context(reconcile=True), backend, definition)
    await execute(definition, nango, "sync")
    assert backend.outdated == []
    assert backend.reconciled == ["Contact", "Company"]


async def test_an_ordinary_run_is_not_a_pass() -> None:
    async def saves(nango: Any) -> None:
        assert not nango.is_reconcile
        await nango.batch_save([{"id": "a", "name": "A"}], "Contact")

    backend = FakeBackend()
    definition = declare(saves)
    await execute(definition, Nango(context(), backend, definition), "sync")
    assert backend.saved == [("Contact", [{"id": "a", "name": "A"}])]
    assert backend.reconciled == []
