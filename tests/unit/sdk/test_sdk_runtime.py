"""The `nango` object's other calls: proxy errors, checkpoints with versions, batched logs, and running
a declared function (input and output validation)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sdk_fakes import FakeBackend, context

from nango.sdk import CheckpointConflict, HTTPError, Model, Nango, SdkError, action, sync
from nango.sdk.definitions import clear_registry, registered
from nango.sdk.execute import FunctionNotFound, InvalidInput, InvalidOutput, execute, find_function
from nango.sdk.runtime import LOG_BATCH


async def test_proxy_builds_the_request_and_raises_on_http_errors() -> None:
    backend = FakeBackend(lambda r: (404 if r.endpoint == "/missing" else 200, {"ok": True}, {"X-Rate": "9"}))
    nango = Nango(context(), backend)
    response = await nango.post("contacts", data={"name": "Ada"}, params={"dry": True, "n": 2}, headers={"X-A": "1"})
    assert (response.status_code, response.json(), response.headers["x-rate"]) == (200, {"ok": True}, "9")
    sent = backend.requests[0]
    assert (sent.method, sent.endpoint, sent.params) == ("POST", "/contacts", {"dry": "true", "n": "2"})
    assert sent.headers == {"X-A": "1", "Content-Type": "application/json"}
    assert sent.body == b'{"name":"Ada"}'
    with pytest.raises(HTTPError) as failed:
        await nango.get("/missing")
    assert failed.value.response.status_code == 404
    assert failed.value.response.text == '{"ok": true}'
    assert nango.proxy_calls == 2


async def test_checkpoints_carry_their_version() -> None:
    backend = FakeBackend()
    nango = Nango(context(), backend)
    assert await nango.get_checkpoint() is None
    await nango.save_checkpoint({"cursor": "abc", "page": 2, "done": False})
    await nango.save_checkpoint({"cursor": "def", "page": 3, "done": False})
    assert backend.checkpoints["sync:contacts:base"].version == 2
    # another run wrote it since this one read it
    other = Nango(context(), backend)
    assert await other.get_checkpoint() == {"cursor": "def", "page": 3, "done": False}
    await nango.save_checkpoint({"cursor": "ghi"})
    with pytest.raises(CheckpointConflict):
        await other.save_checkpoint({"cursor": "stale"})
    await nango.clear_checkpoint()
    assert await nango.get_checkpoint() is None
    with pytest.raises(SdkError, match="flat dict"):
        await nango.save_checkpoint({"nested": {"no": 1}})


async def test_checkpoint_keys_are_per_function_and_variant() -> None:
    assert context().checkpoint_key == "sync:contacts:base"
    assert context(variant="eu").checkpoint_key == "sync:contacts:eu"
    assert context(function_type="action", function_name="create").checkpoint_key == "action:create"


async def test_logs_are_batched() -> None:
    backend = FakeBackend()
    nango = Nango(context(), backend)
    await nango.log("starting", {"page": 1}, level="debug")
    assert backend.logs == []
    for index in range(LOG_BATCH - 1):
        await nango.log(f"line {index}")
    await asyncio.sleep(0.01)
    # a full batch is sent at once, in one call
    assert (len(backend.logs), backend.log_calls) == (LOG_BATCH, 1)
    assert backend.logs[0].message == 'starting {"page": 1}'
    assert backend.logs[0].level == "debug"
    await nango.log("last", level="warn")
    await nango.finish()
    assert [line.message for line in backend.logs[-1:]] == ["last"]
    assert (nango.log_messages, backend.log_calls) == (LOG_BATCH + 1, 2)
    with pytest.raises(SdkError, match="log level"):
        await nango.log("x", level="fatal")  # type: ignore[arg-type]


async def test_connection_token_and_environment() -> None:
    nango = Nango(context(), FakeBackend())
    assert await nango.get_token() == "k-123"
    assert await nango.get_metadata() == {}
    assert await nango.get_environment_variables() == [{"name": "A", "value": "1"}]
    assert await nango.trigger_action("crm", "bob", "create", {"a": 1}) == {"triggered": "create"}
    assert (nango.connection_id, nango.provider_config_key, nango.variant) == ("alice", "crm", "base")


class Contact(Model):
    id: str
    name: str


class NewContact(Model):
    name: str


async def test_execute_validates_action_input_and_output() -> None:
    clear_registry()

    @action(description="create", input=NewContact, output=Contact)
    async def create(nango: Any, input: NewContact) -> Any:
        if input.name == "bad":
            return {"id": 1}
        return {"id": "1", "name": input.name}

    @action(description="raw")
    async def raw(nango: Any, input: Any) -> Any:
        return {"echo": input}

    definitions = registered()
    nango = Nango(context(function_type="action"), FakeBackend())
    create_def = find_function(definitions, "create", "action")
    assert json.loads(await execute(create_def, nango, "action", b'{"name": "Ada"}')) == {"id": "1", "name": "Ada"}
    with pytest.raises(InvalidInput, match="does not match NewContact") as refused:
        await execute(create_def, nango, "action", b'{"nom": "Ada"}')
    assert refused.value.errors is not None
    assert refused.value.errors[0]["loc"] == ["name"]
    with pytest.raises(InvalidInput, match="not valid JSON"):
        await execute(create_def, nango, "action", b"{nope")
    with pytest.raises(InvalidOutput, match="does not match Contact"):
        await execute(create_def, nango, "action", b'{"name": "bad"}')
    raw_def = find_function(definitions, "raw", "action")
    assert json.loads(await execute(raw_def, nango, "action", b"[1, 2]")) == {"echo": [1, 2]}
    with pytest.raises(FunctionNotFound):
        find_function(definitions, "raw", "sync")


async def test_execute_runs_legacy_track_deletes_after_a_sync() -> None:
    clear_registry()

    @sync(description="d", frequency="every hour", models=[Contact], track_deletes=True)
    async def contacts(nango: Any) -> None:
        await nango.batch_save([{"id": "1", "name": "a"}], "Contact")

    backend = FakeBackend()
    definition = registered()[0]
    nango = Nango(context(sync_job_id="12"), backend, definition)
    assert await execute(definition, nango, "sync") == b"null"
    assert backend.outdated == [("Contact", 12)]
    assert nango.results["Contact"].added == 1
    assert nango.results["Contact"].deleted == 1
