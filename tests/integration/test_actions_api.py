"""`POST /action/trigger` and `GET /action/{id}` on an in-process server with a real orchestrator.

The test plays jobs' part with the orchestrator's own API (dequeue `action:*`, then succeed, fail or
cancel with the outputs jobs writes: `{"output"}` / `{"error": {type, message, payload, status,
upstream}}`), so the server's side of the contract is checked without a runner: codes and shapes of
every outcome, bad input answered with its documented 4xx and never a 500, async actions scoped to
their environment, and the TriggerAction RPC on the same path.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from nango.crypto import generate_key
from nango.errors import NangoError
from nango.orchestrator.client import OrchestratorClient, Task, TaskState
from nango.server.client import ServerClient
from tests.support.inprocess import TOKEN, InProcessServer, new_schema, server_env, start_server
from tests.support.services import add_function, orchestrator_service

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEY = "acts"
CONNECTION = "c1"


@dataclass
class Stack:
    server: InProcessServer
    orchestrator: OrchestratorClient
    pool: asyncpg.Pool
    dev_key: str
    prod_key: str
    environment_id: int
    http: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        key: str | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        sent = {"Authorization": f"Bearer {key or self.dev_key}", **(headers or {})}
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with self.http.request(method, self.server.url + path, headers=sent, **kwargs) as response:
            return response.status, await response.json(content_type=None), dict(response.headers)

    async def trigger(self, name: str, input: Any = None, **headers: str) -> tuple[int, Any, dict[str, str]]:
        sent = {"Connection-Id": CONNECTION, "Provider-Config-Key": KEY, **headers}
        return await self.call("POST", "/action/trigger", {"action_name": name, "input": input}, sent)

    async def take(self, group: str = "action:*") -> Task:
        """The next action task, as jobs would dequeue it."""
        (task,) = await self.orchestrator.dequeue(group, limit=1, wait=timedelta(seconds=10))
        return task


@pytest.fixture(scope="module")
async def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    schema = new_schema("nango_actions")
    async with orchestrator_service(database_url, f"{schema}_orch") as orchestrator_target:
        dev, prod = str(uuid.uuid4()), str(uuid.uuid4())
        server = await start_server(
            server_env(
                database_url,
                schema,
                tmp_path_factory.mktemp("actions"),
                NANGO_ENCRYPTION_KEY=generate_key(),
                NANGO_SECRET_KEY_DEV=dev,
                NANGO_SECRET_KEY_PROD=prod,
                ORCHESTRATOR_SERVICE_URL=orchestrator_target,
                # nothing listens here: these tests never need jobs or persist
                JOBS_SERVICE_URL="127.0.0.1:9",
                PERSIST_SERVICE_URL="127.0.0.1:9",
                LOG_LEVEL="warning",
            )
        )
        pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema})
        environment_id = await pool.fetchval("SELECT id FROM environments WHERE name = 'dev'")
        orchestrator = OrchestratorClient(orchestrator_target, TOKEN)
        async with aiohttp.ClientSession() as http:
            stack = Stack(server, orchestrator, pool, dev, prod, environment_id, http)
            status, answer, _ = await stack.call("POST", "/integrations", {"provider": "resend", "unique_key": KEY})
            assert status == 200, answer
            connection = {
                "provider_config_key": KEY,
                "connection_id": CONNECTION,
                "credentials": {"type": "API_KEY", "apiKey": "k"},
            }
            status, answer, _ = await stack.call("POST", "/connections", connection)
            assert status == 201, answer
            for name in ("echo", "fails", "disabled"):
                await add_function(pool, environment_id, KEY, name, "action")
            await pool.execute("UPDATE functions SET enabled = false WHERE name = 'disabled'")
            await add_function(pool, environment_id, KEY, "contacts", "sync", auto_start=False)
            try:
                yield stack
            finally:
                await orchestrator.close()
                await pool.close()
                await server.stop()


BAD_UUID = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    [
        ("POST", "/action/trigger", {"Connection-Id": None}, {"action_name": "echo"}, 400, "invalid_headers"),
        ("POST", "/action/trigger", {"Provider-Config-Key": None}, {"action_name": "echo"}, 400, "invalid_headers"),
        ("POST", "/action/trigger", {"X-Async": "maybe"}, {"action_name": "echo"}, 400, "invalid_headers"),
        (
            "POST",
            "/action/trigger",
            {"X-Async": "true", "X-Max-Retries": "6"},
            {"action_name": "echo"},
            400,
            "invalid_headers",
        ),
        (
            "POST",
            "/action/trigger",
            {"X-Async": "true", "X-Max-Retries": "-1"},
            {"action_name": "echo"},
            400,
            "invalid_headers",
        ),
        (
            "POST",
            "/action/trigger",
            {"X-Async": "true", "X-Max-Retries": "1.5"},
            {"action_name": "echo"},
            400,
            "invalid_headers",
        ),
        ("POST", "/action/trigger", {"Connection-Id": "x" * 300}, {"action_name": "echo"}, 400, "invalid_headers"),
        ("POST", "/action/trigger", {}, {}, 400, "invalid_body"),
        ("POST", "/action/trigger", {}, {"action_name": "no spaces please"}, 400, "invalid_body"),
        ("POST", "/action/trigger", {}, {"action_name": 12}, 400, "invalid_body"),
        ("POST", "/action/trigger", {}, [1, 2], 400, "invalid_body"),
        ("POST", "/action/trigger", {"Content-Type": "application/json"}, b'{"action_name": ', 400, "invalid_json"),
        ("POST", "/action/trigger", {"Content-Type": "text/plain"}, b"echo", 415, "invalid_content_type"),
        ("POST", "/action/trigger?debug=1", {}, {"action_name": "echo"}, 400, "invalid_query_params"),
        ("POST", "/action/trigger", {"Connection-Id": "nobody"}, {"action_name": "echo"}, 400, "unknown_connection"),
        (
            "POST",
            "/action/trigger",
            {"Provider-Config-Key": "nope"},
            {"action_name": "echo"},
            400,
            "unknown_connection",
        ),
        ("POST", "/action/trigger", {}, {"action_name": "missing"}, 404, "not_found"),
        ("POST", "/action/trigger", {}, {"action_name": "contacts"}, 404, "not_found"),
        ("POST", "/action/trigger", {}, {"action_name": "disabled"}, 404, "disabled_resource"),
        ("POST", "/action/trigger", {"X-Async": "true"}, {"action_name": "missing"}, 404, "not_found"),
        ("GET", "/action/not-a-uuid", {}, None, 400, "invalid_uri_params"),
        ("GET", f"/action/{BAD_UUID}", {}, None, 404, "not_found"),
        ("GET", f"/action/{BAD_UUID}?x=1", {}, None, 400, "invalid_query_params"),
        ("PUT", "/action/trigger", {}, None, 405, "method_not_allowed"),
    ],
)
async def test_bad_input_gets_its_documented_code(
    stack: Stack, method: str, path: str, headers: dict[str, str | None], body: Any, status: int, code: str
) -> None:
    # None removes one of the usual headers
    merged = {"Connection-Id": CONNECTION, "Provider-Config-Key": KEY, **headers}
    sent = {name: value for name, value in merged.items() if value is not None}
    raw = body if isinstance(body, bytes) else None
    got, answer, _ = await stack.call(method, path, None if raw else body, sent, raw=raw)
    assert (got, answer["error"]["code"]) == (status, code), answer


async def test_no_secret_key_is_refused(stack: Stack) -> None:
    async with stack.http.post(stack.server.url + "/action/trigger", json={"action_name": "echo"}) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "missing_auth_header"


async def _settle(stack: Stack, state: TaskState, output: Any, name: str = "echo", input: Any = None) -> Any:
    """Trigger `name` and end its task like jobs would; returns (status, body) of the trigger."""
    call = asyncio.create_task(stack.trigger(name, input))
    task = await stack.take()
    assert task.group.key == f"action:environment:{stack.environment_id}"
    assert task.owner_key == f"environment:{stack.environment_id}"
    assert task.timeouts.created_to_started == timedelta(seconds=30)
    assert task.timeouts.started_to_completed == timedelta(minutes=15)
    assert task.args["function"] == name
    assert task.args["input"] == input
    assert task.args["async"] is False
    if state is TaskState.SUCCEEDED:
        await stack.orchestrator.succeed(task.id, output)
    elif state is TaskState.FAILED:
        await stack.orchestrator.fail(task.id, output)
    else:
        await stack.orchestrator.cancel(task.id, "by the test")
    status, body, _ = await asyncio.wait_for(call, 10)
    return status, body


async def test_sync_action_answers_its_raw_output(stack: Stack) -> None:
    output = {"id": "42", "nested": {"list": [1, 2, None]}, "text": "é"}
    assert await _settle(stack, TaskState.SUCCEEDED, {"output": output}, input={"name": "x"}) == (200, output)
    assert await _settle(stack, TaskState.SUCCEEDED, {"output": None}) == (200, None)
    assert await _settle(stack, TaskState.SUCCEEDED, {"output": [1, "two"]}) == (200, [1, "two"])


async def test_action_error_is_a_500_with_its_payload(stack: Stack) -> None:
    error = {"type": "action_script_runtime_error", "message": "x", "payload": {"reason": "no"}, "status": 500}
    status, body = await _settle(stack, TaskState.FAILED, {"error": error}, name="fails")
    assert status == 500
    assert body == {
        "error": {
            "code": "action_script_runtime_error",
            "message": "The action script failed with a runtime error",
            "payload": {"reason": "no"},
        }
    }


async def test_upstream_http_error_is_a_424_with_the_upstream_answer(stack: Stack) -> None:
    upstream = {"status": 404, "headers": {"content-type": "application/json"}, "body": {"message": "gone"}}
    error = {
        "type": "script_http_error",
        "message": "GET /x: 404",
        "payload": None,
        "status": 424,
        "upstream": upstream,
    }
    status, body = await _settle(stack, TaskState.FAILED, {"error": error}, name="fails")
    assert status == 424
    assert body["error"]["code"] == "script_http_error"
    assert body["error"]["upstream"] == upstream


async def test_other_failures_keep_their_type_and_status(stack: Stack) -> None:
    error = {"type": "script_timeout", "message": "took too long", "payload": None, "status": 500}
    status, body = await _settle(stack, TaskState.FAILED, {"error": error}, name="fails")
    assert (status, body["error"]["code"], body["error"]["message"]) == (500, "script_timeout", "took too long")
    status, body = await _settle(stack, TaskState.CANCELLED, None)
    assert (status, body["error"]["code"]) == (410, "script_aborted")


async def test_an_action_nobody_runs_ends_with_an_error_not_a_hang(stack: Stack) -> None:
    # nothing dequeues: the orchestrator expires the task 30 s after it was created
    status, body, _ = await asyncio.wait_for(stack.trigger("echo"), 60)
    assert status == 504
    assert body["error"]["code"] == "action_timeout"
    assert body["error"]["payload"] == {"reason": "createdToStartedTimeoutSecs_exceeded"}
    assert "jobs" in body["error"]["message"]


async def test_a_caller_that_leaves_stops_waiting_but_the_task_runs_on(stack: Stack) -> None:
    url = stack.server.url + "/action/trigger"
    headers = {"Authorization": f"Bearer {stack.dev_key}", "Connection-Id": CONNECTION, "Provider-Config-Key": KEY}
    with pytest.raises(TimeoutError):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as impatient:
            await impatient.post(url, json={"action_name": "echo"}, headers=headers)
    task = await stack.take()
    assert task.state is TaskState.STARTED
    done = await stack.orchestrator.succeed(task.id, {"output": "late"})
    assert done.state is TaskState.SUCCEEDED


async def test_async_action_202_then_pending_running_and_its_output(stack: Stack) -> None:
    status, body, headers = await stack.trigger("echo", {"n": 1}, **{"X-Async": "true"})
    assert status == 202
    action_id = body["id"]
    assert body == {"id": action_id, "statusUrl": f"/action/{action_id}"}
    assert headers["Location"] == f"/action/{action_id}"
    uuid.UUID(action_id)

    status, pending, _ = await stack.call("GET", f"/action/{action_id}")
    assert (status, pending) == (202, {"id": action_id, "statusUrl": f"/action/{action_id}", "status": "PENDING"})

    task = await stack.take()
    assert task.retry_key == action_id
    assert task.group.key == f"action:environment:{stack.environment_id}:async"
    assert task.group.max_concurrency == 1
    assert task.timeouts.created_to_started == timedelta(hours=24)
    assert task.args["async"] is True
    status, running, _ = await stack.call("GET", f"/action/{action_id}")
    assert (status, running["status"]) == (202, "RUNNING")

    await stack.orchestrator.succeed(task.id, {"output": {"done": True}})
    status, result, _ = await stack.call("GET", f"/action/{action_id}")
    assert (status, result) == (200, {"done": True})

    # another environment's key never sees it
    status, other, _ = await stack.call("GET", f"/action/{action_id}", key=stack.prod_key)
    assert (status, other["error"]["code"]) == (404, "not_found")


async def test_async_action_retries_then_reports_the_last_attempt(stack: Stack) -> None:
    status, body, _ = await stack.trigger("fails", None, **{"X-Async": "true", "X-Max-Retries": "1"})
    assert status == 202
    first = await stack.take()
    assert first.retry_max == 1
    error = {"type": "action_script_runtime_error", "message": "x", "payload": {"attempt": 1}, "status": 500}
    await stack.orchestrator.fail(first.id, {"error": error})
    status, pending, _ = await stack.call("GET", body["statusUrl"])
    assert (status, pending["status"]) == (202, "PENDING")

    second = await stack.take()
    assert (second.retry_key, second.retry_count) == (body["id"], 1)
    error["payload"] = {"attempt": 2}
    await stack.orchestrator.fail(second.id, {"error": error})
    status, failed, _ = await stack.call("GET", body["statusUrl"])
    assert status == 500
    assert failed["error"] == {
        "code": "action_script_runtime_error",
        "message": "The action script failed with a runtime error",
        "payload": {"attempt": 2},
    }


async def test_async_actions_of_an_environment_run_one_at_a_time(stack: Stack) -> None:
    for n in range(2):
        status, _, _ = await stack.trigger("echo", {"n": n}, **{"X-Async": "true"})
        assert status == 202
    group = f"action:environment:{stack.environment_id}:async"
    first = await stack.take(group)
    assert await stack.orchestrator.dequeue(group, limit=5, wait=timedelta(seconds=1)) == []
    await stack.orchestrator.succeed(first.id, {"output": 0})
    second = await stack.take(group)
    assert second.args["input"] == {"n": 1}
    await stack.orchestrator.succeed(second.id, {"output": 1})


async def test_trigger_action_rpc_runs_the_same_path(stack: Stack) -> None:
    client = ServerClient(stack.server.grpc, TOKEN)
    try:
        call = asyncio.create_task(client.trigger_action(stack.environment_id, KEY, CONNECTION, "echo", {"a": 1}))
        task = await stack.take()
        assert task.args["input"] == {"a": 1}
        await stack.orchestrator.succeed(task.id, {"output": {"b": 2}})
        assert await asyncio.wait_for(call, 10) == {"b": 2}

        call = asyncio.create_task(client.trigger_action(stack.environment_id, KEY, CONNECTION, "fails"))
        task = await stack.take()
        error = {"type": "action_script_runtime_error", "message": "x", "payload": {"why": "no"}, "status": 500}
        await stack.orchestrator.fail(task.id, {"error": error})
        with pytest.raises(NangoError) as failed:
            await asyncio.wait_for(call, 10)
        assert (failed.value.instance_code, failed.value.payload) == ("action_script_runtime_error", {"why": "no"})

        with pytest.raises(NangoError) as unknown:
            await client.trigger_action(stack.environment_id, KEY, CONNECTION, "missing")
        assert unknown.value.instance_code == "not_found"
    finally:
        await client.close()
