"""Functions through `@nangohq/node` against `nango up`: deployed with `nango deploy --auto-confirm`,
then scripts config, environment variables, sync control (trigger, status, pause, start, frequency,
variants), records (every filter, cursor paging to the end), actions (sync and async, error shapes),
and the same actions as MCP tools (`POST /mcp`) through the official MCP Python SDK.

The functions call a local upstream API (provider `compat-crm`, declared in conftest.py). Tests that
need a function to actually run (`RUNS`) need the jobs service; the others hold without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from tests.compat.conftest import FUNCTIONS_PROVIDER, FUNCTIONS_UPSTREAM_PORT, Sdk, SdkError
from tests.support.platform import BIN, Up

pytestmark = [pytest.mark.compat, pytest.mark.timeout(180)]

KEY = FUNCTIONS_PROVIDER
CONNECTION = "crm-user-1"
# a run has this long to show up in the sync status
RUN_TIMEOUT = 90.0

MODELS = """
from nango.sdk import Model


class Contact(Model):
    id: str
    name: str


class ContactId(Model):
    id: str
"""

CONTACTS = """
from models import Contact

from nango.sdk import sync


@sync(description="Contacts of the CRM", frequency="every hour", models=[Contact])
async def contacts(nango):
    checkpoint = await nango.get_checkpoint() or {}
    await nango.track_deletes_start("Contact")
    async for page in nango.paginate(endpoint="/contacts", paginate={"limit": 2}):
        await nango.batch_save([Contact(id=c["id"], name=c["name"]) for c in page], "Contact")
    await nango.track_deletes_end("Contact")
    await nango.save_checkpoint({"runs": int(checkpoint.get("runs", 0)) + 1})
"""

ACTIONS = """
from models import Contact, ContactId

from nango.sdk import ActionError, action


@action(description="One contact", input=ContactId, output=Contact)
async def get_contact(nango, input: ContactId) -> Contact:
    r = await nango.get(endpoint=f"/contacts/{input.id}")
    return Contact(**r.json())


@action(description="Refuses")
async def refuse(nango, input):
    raise ActionError({"reason": "not today", "input": input})


@action(description="Fails upstream")
async def upstream_error(nango):
    await nango.get(endpoint="/status/404")


@action(description="Environment variables")
async def variables(nango):
    return await nango.get_environment_variables()


@action(description="Another action through the server")
async def chain(nango, input):
    contact = {"id": input["id"]}
    return await nango.trigger_action(nango.provider_config_key, nango.connection_id, "get_contact", contact)
"""

FILES = {"models.py": MODELS, "contacts.py": CONTACTS, "actions.py": ACTIONS}


@dataclass
class Crm:
    """The upstream API the functions call: contacts paged by cursor, and a failing route."""

    contacts: dict[str, str] = field(default_factory=dict)
    api_keys: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        async def page(request: web.Request) -> web.Response:
            self.api_keys.append(request.headers.get("x-api-key", ""))
            ordered = sorted(self.contacts)
            start = int(request.query.get("cursor") or 0)
            limit = int(request.query.get("limit") or 100)
            chunk = ordered[start : start + limit]
            following = start + limit if start + limit < len(ordered) else None
            body = {"data": [{"id": i, "name": self.contacts[i]} for i in chunk], "next_cursor": following}
            return web.json_response(body)

        async def one(request: web.Request) -> web.Response:
            contact = request.match_info["id"]
            if contact not in self.contacts:
                return web.json_response({"message": "no such contact"}, status=404)
            return web.json_response({"id": contact, "name": self.contacts[contact]})

        async def status(request: web.Request) -> web.Response:
            return web.json_response({"message": "gone"}, status=int(request.match_info["code"]))

        app = web.Application()
        app.add_routes([web.get("/contacts", page), web.get("/contacts/{id}", one), web.get("/status/{code}", status)])
        return app


@pytest.fixture(scope="module")
async def crm() -> AsyncIterator[Crm]:
    state = Crm({"1": "Ada", "2": "Grace", "3": "Linus", "4": "Barbara", "5": "Ken"})
    runner = web.AppRunner(state.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", FUNCTIONS_UPSTREAM_PORT).start()
    yield state
    await runner.cleanup()


@pytest.fixture(scope="module")
def functions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("functions")
    (root / KEY).mkdir()
    for name, text in FILES.items():
        (root / KEY / name).write_text(text)
    return root


def nango_deploy(platform: Up, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NANGO_")}
    environ.update({"NANGO_SECRET_KEY_DEV": platform.dev_key, "NANGO_HOSTPORT": platform.api, **env})
    return subprocess.run(
        [str(BIN / "nango"), "deploy", *args], env=environ, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
async def deployed(platform: Up, sdk: Sdk, crm: Crm, functions_dir: Path) -> str:
    """The integration with its functions deployed, and one connection (whose syncs start at once)."""
    await sdk("createIntegration", {"provider": KEY, "unique_key": KEY})
    done = await asyncio.to_thread(nango_deploy, platform, str(functions_dir), "--auto-confirm")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"+ {KEY}: sync contacts (added)" in done.stdout
    assert f"+ {KEY}: action get_contact (added)" in done.stdout
    connection = {
        "provider_config_key": KEY,
        "connection_id": CONNECTION,
        "credentials": {"type": "API_KEY", "apiKey": "crm-key"},
    }
    await sdk("_importConnection", connection)
    return CONNECTION


async def test_deploy_again_changes_nothing_and_bad_bundles_are_refused(
    platform: Up, deployed: str, functions_dir: Path, tmp_path: Path
) -> None:
    again = await asyncio.to_thread(nango_deploy, platform, str(functions_dir), "--auto-confirm")
    assert again.returncode == 0, again.stderr
    assert "Nothing to deploy" in again.stdout

    broken = tmp_path / KEY
    broken.mkdir()
    (broken / "broken.py").write_text("def (:\n")
    refused = await asyncio.to_thread(nango_deploy, platform, str(tmp_path), "--auto-confirm")
    assert refused.returncode == 1
    assert "refused the deploy" in refused.stderr
    assert "broken.py" in refused.stderr

    unconfirmed = await asyncio.to_thread(nango_deploy, platform, str(tmp_path))
    assert unconfirmed.returncode == 1
    no_key = await asyncio.to_thread(nango_deploy, platform, str(functions_dir), NANGO_SECRET_KEY_DEV="")
    assert no_key.returncode == 1
    assert "NANGO_SECRET_KEY_DEV" in no_key.stderr
    away = await asyncio.to_thread(
        nango_deploy, platform, str(functions_dir), "--auto-confirm", NANGO_HOSTPORT="http://127.0.0.1:9"
    )
    assert away.returncode == 1
    assert "cannot reach" in away.stderr


async def test_scripts_config(sdk: Sdk, deployed: str) -> None:
    config = await sdk("getScriptsConfig")
    (entry,) = [c for c in config if c["providerConfigKey"] == KEY]
    assert entry["provider"] == KEY
    assert [s["name"] for s in entry["syncs"]] == ["contacts"]
    assert entry["syncs"][0]["runs"] == "every hour"
    assert sorted(a["name"] for a in entry["actions"]) == [
        "chain",
        "get_contact",
        "refuse",
        "upstream_error",
        "variables",
    ]
    tools = await sdk("getScriptsConfig", "openai")
    assert "get_contact" in [t["name"] for t in tools["data"]]


async def test_environment_variables(sdk: Sdk) -> None:
    variables = [{"name": "CRM_REGION", "value": "eu"}, {"name": "FEATURE_X", "value": "on"}]
    assert await sdk("_setEnvironmentVariables", variables) == variables
    assert await sdk("getEnvironmentVariables") == variables
    with pytest.raises(SdkError) as refused:
        await sdk("_setEnvironmentVariables", [{"name": "not valid", "value": "x"}])
    assert (refused.value.status, refused.value.code) == (400, "invalid_body")
    assert await sdk("getEnvironmentVariables") == variables


async def test_sync_status_pause_start_and_frequency(sdk: Sdk, deployed: str) -> None:
    status = await sdk("syncStatus", KEY, ["contacts"], CONNECTION)
    (contacts,) = status["syncs"]
    assert (contacts["name"], contacts["variant"], contacts["connection_id"]) == ("contacts", "base", CONNECTION)
    assert contacts["status"] in ("RUNNING", "SUCCESS", "ERROR")
    assert contacts["frequency"] == "every hour"
    assert set(contacts["recordCount"]) == {"Contact"}
    assert [s["name"] for s in (await sdk("syncStatus", KEY, "*"))["syncs"]] == ["contacts"]

    paused = await sdk("pauseSync", KEY, ["contacts"], CONNECTION)
    assert (paused["status"], paused["data"]) == (200, {"success": True})
    (contacts,) = (await sdk("syncStatus", KEY, ["contacts"], CONNECTION))["syncs"]
    assert (contacts["status"], contacts["nextScheduledSyncAt"]) == ("PAUSED", None)
    started = await sdk("startSync", KEY, ["contacts"], CONNECTION)
    assert (started["status"], started["data"]) == (200, {"success": True})
    (contacts,) = (await sdk("syncStatus", KEY, ["contacts"], CONNECTION))["syncs"]
    assert contacts["status"] != "PAUSED"
    assert contacts["nextScheduledSyncAt"] is not None

    changed = await sdk("updateSyncConnectionFrequency", KEY, "contacts", CONNECTION, "every 2 hours")
    assert changed == {"frequency": "every 2 hours"}
    assert (await sdk("syncStatus", KEY, ["contacts"], CONNECTION))["syncs"][0]["frequency"] == "every 2 hours"
    assert await sdk("updateSyncConnectionFrequency", KEY, {"name": "contacts"}, CONNECTION, None) == {
        "frequency": "every hour"
    }
    with pytest.raises(SdkError) as invalid:
        await sdk("updateSyncConnectionFrequency", KEY, "contacts", CONNECTION, "every blue moon")
    assert invalid.value.status == 400
    assert invalid.value.data["error"]["message"] == "Sync interval is invalid"
    with pytest.raises(SdkError) as unknown:
        await sdk("syncStatus", KEY, ["contacts"], "nobody")
    assert (unknown.value.status, unknown.value.code) == (400, "unknown_connection")


async def test_sync_variants(sdk: Sdk, deployed: str) -> None:
    props = {"provider_config_key": KEY, "connection_id": CONNECTION, "name": "contacts", "variant": "emea"}
    created = await sdk("createSyncVariant", props)
    assert (created["name"], created["variant"]) == ("contacts", "emea")
    uuid.UUID(created["id"])
    found = await sdk("syncStatus", KEY, [{"name": "contacts", "variant": "emea"}], CONNECTION)
    assert [(s["id"], s["variant"]) for s in found["syncs"]] == [(created["id"], "emea")]
    with pytest.raises(SdkError) as again:
        await sdk("createSyncVariant", props)
    assert (again.value.status, again.value.code) == (400, "sync_variant_already_exists")
    with pytest.raises(SdkError) as base:
        await sdk("createSyncVariant", {**props, "variant": "base"})
    assert (base.value.status, base.value.code) == (400, "invalid_variant")
    assert await sdk("deleteSyncVariant", props) == {"success": True}
    assert (await sdk("syncStatus", KEY, [{"name": "contacts", "variant": "emea"}], CONNECTION))["syncs"] == []


async def test_records_errors_without_a_run(sdk: Sdk, deployed: str) -> None:
    config = {"providerConfigKey": KEY, "connectionId": "nobody", "model": "Contact"}
    with pytest.raises(SdkError) as unknown:
        await sdk("listRecords", config)
    assert (unknown.value.status, unknown.value.code) == (400, "unknown_connection")
    with pytest.raises(SdkError) as bad_cursor:
        await sdk("listRecords", {**config, "connectionId": CONNECTION, "cursor": "bm90LWEtY3Vyc29y"})
    assert (bad_cursor.value.status, bad_cursor.value.code) == (400, "invalid_cursor_value")
    with pytest.raises(SdkError) as bad_filter:
        await sdk("listRecords", {**config, "connectionId": CONNECTION, "filter": "created"})
    assert (bad_filter.value.status, bad_filter.value.code) == (400, "invalid_query_params")


# ---- tests that need functions to run (the jobs service)


async def sync_run(sdk: Sdk, after: float, **trigger: Any) -> dict[str, Any]:
    """Trigger the contacts sync and wait for a run that finished after `after` (epoch seconds, taken
    just before: an earlier run's end must not count)."""
    await sdk("triggerSync", KEY, ["contacts"], CONNECTION, *([trigger["opts"]] if "opts" in trigger else []))
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        (status,) = (await sdk("syncStatus", KEY, ["contacts"], CONNECTION))["syncs"]
        finished = status.get("finishedAt")
        if status["status"] != "RUNNING" and finished and _epoch(finished) > after:
            assert status["status"] == "SUCCESS", status
            return dict(status)
        await asyncio.sleep(0.5)
    raise AssertionError(f"no sync run finished within {RUN_TIMEOUT}s (is the jobs service running?)")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def all_records(sdk: Sdk, **query: Any) -> list[dict[str, Any]]:
    config = {"providerConfigKey": KEY, "connectionId": CONNECTION, "model": "Contact", **query}
    records: list[dict[str, Any]] = []
    for _ in range(100):
        page = await sdk("listRecords", config)
        records += page["records"]
        if page["next_cursor"] is None:
            return records
        config["cursor"] = page["next_cursor"]
    raise AssertionError("paging did not end")


async def test_runs_sync_then_records_with_every_filter_and_paging(sdk: Sdk, crm: Crm, deployed: str) -> None:
    first = await sync_run(sdk, time.time())
    assert first["recordCount"] == {"Contact": 5}
    assert first["checkpoint"]["runs"] >= 1
    assert set(crm.api_keys) == {"crm-key"}
    records = await all_records(sdk)
    assert sorted(r["id"] for r in records) == ["1", "2", "3", "4", "5"]
    assert {r["_nango_metadata"]["last_action"] for r in records} == {"ADDED"}

    crm.contacts["2"] = "Grace Hopper"
    del crm.contacts["4"]
    crm.contacts["6"] = "Dennis"
    second = await sync_run(sdk, time.time())
    assert second["latestResult"]["Contact"] == {"added": 1, "updated": 1, "deleted": 1}

    by_filter = {
        "added": ["1", "3", "5", "6"],
        "updated": ["2"],
        "deleted": ["4"],
        "added,updated": ["1", "2", "3", "5", "6"],
        "updated,deleted": ["2", "4"],
        "ADDED,DELETED": ["1", "3", "4", "5", "6"],
    }
    for filter, expected in by_filter.items():
        assert sorted(r["id"] for r in await all_records(sdk, filter=filter)) == expected, filter
    paged = await all_records(sdk, limit=1)
    assert [r["id"] for r in paged] == [r["id"] for r in await all_records(sdk)]
    assert len(paged) == 6
    by_id = await sdk(
        "listRecords", {"providerConfigKey": KEY, "connectionId": CONNECTION, "model": "Contact", "ids": ["2", "4"]}
    )
    assert sorted(r["id"] for r in by_id["records"]) == ["2", "4"]
    last = paged[-1]["_nango_metadata"]["last_modified_at"]
    later = await sdk(
        "listRecords", {"providerConfigKey": KEY, "connectionId": CONNECTION, "model": "Contact", "modifiedAfter": last}
    )
    assert later["records"] == [] or [r["id"] for r in later["records"]] == [paged[-1]["id"]]

    # a reset clears the checkpoint; emptying the cache clears the records, which the run saves again
    reset = await sync_run(sdk, time.time(), opts={"reset": True, "emptyCache": True})
    assert reset["checkpoint"] == {"runs": 1}
    assert reset["recordCount"] == {"Contact": 5}
    assert {r["_nango_metadata"]["last_action"] for r in await all_records(sdk)} == {"ADDED"}


async def test_runs_actions_sync_and_async_with_their_error_shapes(sdk: Sdk, crm: Crm, deployed: str) -> None:
    assert await sdk("triggerAction", KEY, CONNECTION, "get_contact", {"id": "1"}) == {"id": "1", "name": "Ada"}
    assert await sdk("triggerAction", KEY, CONNECTION, "chain", {"id": "3"}) == {"id": "3", "name": "Linus"}
    await sdk("_setEnvironmentVariables", [{"name": "CRM_REGION", "value": "eu"}])
    assert await sdk("triggerAction", KEY, CONNECTION, "variables") == [{"name": "CRM_REGION", "value": "eu"}]

    with pytest.raises(SdkError) as refused:
        await sdk("triggerAction", KEY, CONNECTION, "refuse", {"x": 1})
    assert refused.value.status == 500
    assert refused.value.data["error"]["code"] == "action_script_runtime_error"
    assert refused.value.data["error"]["payload"] == {"reason": "not today", "input": {"x": 1}}

    with pytest.raises(SdkError) as upstream:
        await sdk("triggerAction", KEY, CONNECTION, "upstream_error")
    assert (upstream.value.status, upstream.value.code) == (424, "script_http_error")
    assert upstream.value.data["error"]["upstream"]["status"] == 404

    with pytest.raises(SdkError) as unknown:
        await sdk("triggerAction", KEY, CONNECTION, "no_such_action")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")

    started = await sdk("triggerActionAsync", KEY, CONNECTION, "get_contact", {"id": "5"})
    assert started["statusUrl"] == f"/action/{started['id']}"
    deadline = time.monotonic() + RUN_TIMEOUT
    result = await sdk("getAsyncActionResult", {"id": started["id"]})
    while isinstance(result, dict) and result.get("statusUrl") and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        result = await sdk("getAsyncActionResult", {"statusUrl": started["statusUrl"]})
    assert result == {"id": "5", "name": "Ken"}


async def test_unknown_async_action_is_not_found(sdk: Sdk) -> None:
    with pytest.raises(SdkError) as missing:
        await sdk("getAsyncActionResult", {"id": str(uuid.uuid4())})
    assert (missing.value.status, missing.value.code) == (404, "not_found")


# MCP (reference §8.1): the connection's actions as tools, driven by the official MCP Python SDK


@contextlib.asynccontextmanager
async def mcp_session(platform: Up, connection_id: str = CONNECTION) -> AsyncIterator[ClientSession]:
    headers = {
        "Authorization": f"Bearer {platform.dev_key}",
        "provider-config-key": KEY,
        "connection-id": connection_id,
    }
    async with (
        httpx.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(platform.api + "/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        yield session


async def test_mcp_lists_the_actions_as_tools_and_calls_them(platform: Up, crm: Crm, deployed: str) -> None:
    async with mcp_session(platform) as session:
        hello = await session.initialize()
        assert hello.serverInfo.name == "nango"
        assert hello.capabilities.tools is not None
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert sorted(tools) == ["chain", "get_contact", "refuse", "upstream_error", "variables"]
        assert tools["get_contact"].description == "One contact"
        assert tools["get_contact"].inputSchema["properties"]["id"]["type"] == "string"
        assert tools["refuse"].inputSchema == {"type": "object", "properties": {}}

        found = await session.call_tool("get_contact", {"id": "2"})
        assert not found.isError
        contact = {"id": "2", "name": crm.contacts["2"]}
        assert found.structuredContent == contact
        assert found.content[0].type == "text"
        assert json.loads(found.content[0].text) == contact

        # a failing action is a tool error the model can read, not a protocol error
        refused = await session.call_tool("refuse", {"x": 1})
        assert refused.isError
        assert refused.content[0].type == "text"
        error = json.loads(refused.content[0].text)["error"]
        assert (error["code"], error["payload"]) == (
            "action_script_runtime_error",
            {"reason": "not today", "input": {"x": 1}},
        )

        with pytest.raises(McpError) as unknown:
            await session.call_tool("no_such_action", {})
        assert unknown.value.error.code == -32602


async def test_mcp_refuses_what_it_does_not_serve(platform: Up, deployed: str) -> None:
    auth = {"Authorization": f"Bearer {platform.dev_key}"}
    ids = {**auth, "provider-config-key": KEY, "connection-id": CONNECTION}
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient(base_url=platform.api, timeout=30) as http:
        # no stream and no session: GET and DELETE are refused the way Nango refuses them
        for method in ("GET", "DELETE"):
            answer = await http.request(method, "/mcp", headers=ids)
            assert answer.status_code == 405
            assert answer.json() == {
                "jsonrpc": "2.0",
                "error": {"code": -32000, "message": "Method not allowed."},
                "id": None,
            }
        assert (await http.post("/mcp", json=ping, headers=ids)).json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        # a notification is accepted with nothing to answer
        note = await http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=ids)
        assert (note.status_code, note.content) == (202, b"")
        # a batch: the answers to its requests in order, an invalid member answered as such
        batch = [
            ping,
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": "b", "method": "tools/list"},
            {"not": "rpc"},
        ]
        answers = (await http.post("/mcp", json=batch, headers=ids)).json()
        assert [a["id"] for a in answers] == [1, "b", None]
        assert "get_contact" in {tool["name"] for tool in answers[1]["result"]["tools"]}
        assert answers[2]["error"]["code"] == -32600
        only_notes = await http.post("/mcp", json=[batch[1], batch[1]], headers=ids)
        assert (only_notes.status_code, only_notes.content) == (202, b"")
        answer = await http.post("/mcp", content=b"{not json", headers=ids)
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, -32700)
        answer = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "resources/list"}, headers=ids)
        assert answer.json()["error"]["code"] == -32601
        # before any JSON-RPC: the REST envelope, as every route
        answer = await http.post("/mcp", json=ping, headers={"provider-config-key": KEY, "connection-id": CONNECTION})
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "missing_auth_header")
        answer = await http.post("/mcp", json=ping, headers={**auth, "provider-config-key": KEY})
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_headers")
        answer = await http.post("/mcp", json=ping, headers={**ids, "connection-id": "nobody"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "unknown_connection")
        answer = await http.post("/mcp", json=ping, headers={**ids, "provider-config-key": "nothing-here"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "unknown_provider_config")
