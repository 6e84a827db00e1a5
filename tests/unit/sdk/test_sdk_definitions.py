"""Declaring functions: what the decorators accept, refuse, and describe."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nango.sdk import ActionError, DefinitionError, Model, action, on_event, sync
from nango.sdk.definitions import clear_registry, registered


class Contact(Model):
    id: str
    name: str


class NewContact(Model):
    name: str


@pytest.fixture(autouse=True)
def empty_registry() -> None:
    clear_registry()


def test_the_authors_example_declares_a_sync_and_an_action() -> None:
    @sync(description="Contacts", frequency="every hour", models=[Contact], track_deletes=True)
    async def contacts(nango: Any) -> None:
        return None

    @action(description="Create a contact", input=NewContact, output=Contact)
    async def create_contact(nango: Any, input: NewContact) -> Contact:
        return Contact(id="1", name=input.name)

    found = {d.name: d for d in registered()}
    assert set(found) == {"contacts", "create_contact"}
    spec = found["contacts"].spec()
    assert (spec["type"], spec["frequency"], spec["track_deletes"], spec["auto_start"]) == (
        "sync",
        "every hour",
        True,
        True,
    )
    assert spec["models"] == ["Contact"]
    assert spec["models_json_schema"]["Contact"]["required"] == ["id", "name"]
    assert spec["version"] == "0.0.1"
    action_spec = found["create_contact"].spec()
    assert action_spec["input_json_schema"]["properties"] == {"name": {"title": "Name", "type": "string"}}
    assert action_spec["output_json_schema"]["title"] == "Contact"
    # the decorated function stays a plain coroutine function
    assert asyncio.run(create_contact(None, NewContact(name="Ada"))) == Contact(id="1", name="Ada")


def test_name_version_and_details_are_kept() -> None:
    @sync(
        description="d",
        frequency="30m",
        models=[Contact],
        name="all-contacts",
        version="1.2.0",
        auto_start=False,
        webhook_subscriptions=["contact.created"],
        scopes=["contacts.read"],
        reconcile_deletes="every day",
    )
    async def fetch(nango: Any) -> None:
        return None

    (definition,) = registered()
    assert (definition.name, definition.attribute, definition.version) == ("all-contacts", "fetch", "1.2.0")
    assert definition.spec()["webhook_subscriptions"] == ["contact.created"]
    assert definition.spec()["reconcile_deletes"] == "every day"
    assert not definition.auto_start


@pytest.mark.parametrize(
    ("frequency", "message"),
    [
        ("every fortnight", "expected e.g."),
        ("10s", "between 30 seconds and 31 days"),
        ("every 40 days", "between 30 seconds and 31 days"),
        ("", "non-empty"),
    ],
)
def test_invalid_frequencies_are_refused_at_definition(frequency: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        sync(description="d", frequency=frequency, models=[Contact])


def test_a_record_model_needs_a_required_str_or_int_id() -> None:
    class NoId(Model):
        name: str

    class OptionalId(Model):
        id: str | None = None

    class FloatId(Model):
        id: float

    class IntId(Model):
        id: int

    with pytest.raises(DefinitionError, match="has no `id` field"):
        sync(description="d", frequency="every hour", models=[NoId])
    with pytest.raises(DefinitionError, match="must be required"):
        sync(description="d", frequency="every hour", models=[OptionalId])
    with pytest.raises(DefinitionError, match="must be str or int"):
        sync(description="d", frequency="every hour", models=[FloatId])
    with pytest.raises(DefinitionError, match="non-empty list"):
        sync(description="d", frequency="every hour", models=[])
    sync(description="d", frequency="every hour", models=[IntId])


@pytest.mark.parametrize("name", ["has space", "dots.no", "", "ünicode"])
def test_invalid_names_are_refused(name: str) -> None:
    async def handler(nango: Any) -> None:
        return None

    with pytest.raises(DefinitionError, match="invalid function name"):
        action(description="d", name=name)(handler)


def test_functions_must_be_async_and_take_their_input() -> None:
    def not_async(nango: Any) -> None:
        return None

    async def no_input(nango: Any) -> None:
        return None

    with pytest.raises(DefinitionError, match="async def"):
        action(description="d")(not_async)
    with pytest.raises(DefinitionError, match=r"must take \(nango, input\)"):
        action(description="d", input=NewContact)(no_input)
    with pytest.raises(DefinitionError, match="description"):
        action(description=" ")(no_input)


def test_on_event_knows_nangos_three_events() -> None:
    @on_event("post-connection-creation", description="welcome")
    async def welcome(nango: Any) -> None:
        return None

    assert registered()[0].spec()["event"] == "post-connection-creation"
    with pytest.raises(DefinitionError, match="unknown event"):
        on_event("connection-updated", description="d")


def test_a_sync_declares_its_webhook_handler() -> None:
    @sync(description="d", frequency="every hour", models=[Contact], webhook_subscriptions=["*"])
    async def contacts(nango: Any) -> None:
        return None

    @contacts.on_webhook
    async def on_contact(nango: Any, payload: Any) -> None:
        return None

    assert registered()[0].webhook_handler is on_contact

    @action(description="d")
    async def act(nango: Any) -> None:
        return None

    with pytest.raises(DefinitionError, match="only syncs"):
        act.on_webhook(on_contact)


def test_action_error_carries_its_payload() -> None:
    error = ActionError({"code": "missing_field", "field": "email"})
    assert error.payload == {"code": "missing_field", "field": "email"}
    assert str(ActionError("plain message")) == "plain message"
