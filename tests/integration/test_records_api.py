"""`GET /records` and `PATCH /records/prune` on an in-process server over a real persist: records
written through persist's client (as a sync run writes them) read back through the public API with
every filter (a union), cursor paging to the end, ids, modified_after, variants; and a table of bad
input, each answered with its documented 4xx, never a 500."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest

from nango.crypto import generate_key
from nango.persist.client import PersistClient, RecordScope
from tests.support.inprocess import TOKEN, InProcessServer, new_schema, server_env, start_server
from tests.support.services import persist_service

pytestmark = pytest.mark.integration

KEY = "recs"
CONNECTION = "c1"
HEADERS = {"Connection-Id": CONNECTION, "Provider-Config-Key": KEY}


@dataclass
class Stack:
    server: InProcessServer
    dev_key: str
    http: aiohttp.ClientSession
    # when the first batch had been written and before the updates
    between: datetime

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        sent = {"Authorization": f"Bearer {self.dev_key}", **(HEADERS if headers is None else headers)}
        async with self.http.request(method, self.server.url + path, json=body, headers=sent) as response:
            return response.status, await response.json(content_type=None)

    async def records(self, **query: Any) -> dict[str, Any]:
        params = [(k, v) for k, value in query.items() for v in (value if isinstance(value, list) else [value])]
        status, body = await self.call("GET", "/records?" + urlencode(params))
        assert status == 200, body
        assert set(body) == {"next_cursor", "records"}
        return dict(body)


def ids(page: dict[str, Any]) -> list[str]:
    return [r["id"] for r in page["records"]]


@pytest.fixture(scope="module")
async def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    schema, key, dev = new_schema("nango_records_api"), generate_key(), str(uuid.uuid4())
    tmp = tmp_path_factory.mktemp("records")
    async with persist_service(database_url, f"{schema}_rec", tmp, key) as persist_target:
        server = await start_server(
            server_env(
                database_url,
                schema,
                tmp,
                NANGO_ENCRYPTION_KEY=key,
                NANGO_SECRET_KEY_DEV=dev,
                PERSIST_SERVICE_URL=persist_target,
                # nothing listens here: these tests never need the orchestrator or jobs
                ORCHESTRATOR_SERVICE_URL="127.0.0.1:9",
                JOBS_SERVICE_URL="127.0.0.1:9",
                LOG_LEVEL="warning",
            )
        )
        persist = PersistClient(persist_target, TOKEN)
        try:
            async with aiohttp.ClientSession() as http:
                stack = Stack(server, dev, http, datetime.now(UTC))
                status, _ = await stack.call("POST", "/integrations", {"provider": "resend", "unique_key": KEY}, {})
                assert status == 200
                for connection in (CONNECTION, "empty"):
                    body = {
                        "provider_config_key": KEY,
                        "connection_id": connection,
                        "credentials": {"type": "API_KEY", "apiKey": "k"},
                    }
                    status, answer = await stack.call("POST", "/connections", body, {})
                    assert status == 201, answer
                pool = await asyncpg.create_pool(database_url, server_settings={"search_path": schema})
                row_id = await pool.fetchval("SELECT id FROM connections WHERE connection_id = $1", CONNECTION)
                environment_id = await pool.fetchval("SELECT id FROM environments WHERE name = 'dev'")
                await pool.close()
                contacts = RecordScope(environment_id, row_id, "Contact")
                await persist.save_records(contacts, [{"id": str(n), "name": f"n{n}"} for n in range(1, 6)])
                await asyncio.sleep(0.01)
                stack.between = datetime.now(UTC)
                await asyncio.sleep(0.01)
                await persist.save_records(contacts, [{"id": "2", "name": "two"}, {"id": "3", "name": "three"}])
                await persist.delete_records(contacts, [{"id": "4"}])
                variant = RecordScope(environment_id, row_id, "Contact::v2")
                await persist.save_records(variant, [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}])
                yield stack
        finally:
            await persist.close()
            await server.stop()


async def test_records_with_metadata_in_cursor_order(stack: Stack) -> None:
    page = await stack.records(model="Contact")
    assert page["next_cursor"] is None
    assert sorted(ids(page)) == ["1", "2", "3", "4", "5"]
    by_id = {r["id"]: r for r in page["records"]}
    assert by_id["2"]["name"] == "two"
    assert {r["id"]: r["_nango_metadata"]["last_action"] for r in page["records"]} == {
        "1": "ADDED",
        "2": "UPDATED",
        "3": "UPDATED",
        "4": "DELETED",
        "5": "ADDED",
    }
    assert by_id["4"]["_nango_metadata"]["deleted_at"] is not None
    metadata = by_id["1"]["_nango_metadata"]
    assert set(metadata) == {"first_seen_at", "last_modified_at", "last_action", "deleted_at", "pruned_at", "cursor"}
    # the SDK calls /records/ with a trailing slash
    status, again = await stack.call("GET", "/records/?model=Contact")
    assert (status, again) == (200, page)


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("added", ["1", "5"]),
        ("updated", ["2", "3"]),
        ("deleted", ["4"]),
        ("ADDED,updated", ["1", "2", "3", "5"]),
        # a union, unlike Nango's source (documented deviation)
        ("updated,deleted", ["2", "3", "4"]),
        ("Deleted,added", ["1", "4", "5"]),
        ("added,updated,deleted", ["1", "2", "3", "4", "5"]),
    ],
)
async def test_filters_combine_as_a_union(stack: Stack, filter: str, expected: list[str]) -> None:
    assert sorted(ids(await stack.records(model="Contact", filter=filter))) == expected


async def test_cursor_paging_reaches_the_end_once(stack: Stack) -> None:
    everything = ids(await stack.records(model="Contact"))
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await stack.records(model="Contact", limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["records"]) <= 2
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    # any record's own cursor resumes after it
    first = (await stack.records(model="Contact", limit=1))["records"][0]
    rest = await stack.records(model="Contact", cursor=first["_nango_metadata"]["cursor"])
    assert ids(rest) == everything[1:]


async def test_ids_modified_after_delta_and_variants(stack: Stack) -> None:
    assert sorted(ids(await stack.records(model="Contact", ids=["4", "1", "nope"]))) == ["1", "4"]
    assert ids(await stack.records(model="Contact", ids="3")) == ["3"]
    after = stack.between.isoformat()
    assert sorted(ids(await stack.records(model="Contact", modified_after=after))) == ["2", "3", "4"]
    assert sorted(ids(await stack.records(model="Contact", delta=after))) == ["2", "3", "4"]
    zulu = stack.between.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert sorted(ids(await stack.records(model="Contact", modified_after=zulu))) == ["2", "3", "4"]
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert ids(await stack.records(model="Contact", modified_after=future)) == []
    assert sorted(ids(await stack.records(model="Contact", variant="v2"))) == ["a", "b"]
    assert sorted(ids(await stack.records(model="Contact", variant="base"))) == ["1", "2", "3", "4", "5"]
    assert await stack.records(model="Other") == {"next_cursor": None, "records": []}
    status, empty = await stack.call(
        "GET", "/records?model=Contact", headers={"Connection-Id": "empty", "Provider-Config-Key": KEY}
    )
    assert (status, empty) == (200, {"next_cursor": None, "records": []})


LONG_AGO = (datetime.now(UTC) - timedelta(days=400)).isoformat()
NOT_A_CURSOR = base64.b64encode(b"yesterday||not-a-uuid").decode()


@pytest.mark.parametrize(
    ("query", "headers", "status", "code"),
    [
        ("model=Contact", {"Connection-Id": CONNECTION}, 400, "invalid_headers"),
        ("model=Contact", {"Provider-Config-Key": KEY}, 400, "invalid_headers"),
        ("model=Contact", {"Connection-Id": "x" * 256, "Provider-Config-Key": KEY}, 400, "invalid_headers"),
        ("model=Contact", {"Connection-Id": "nobody", "Provider-Config-Key": KEY}, 400, "unknown_connection"),
        ("model=Contact", {"Connection-Id": CONNECTION, "Provider-Config-Key": "nope"}, 400, "unknown_connection"),
        ("", None, 400, "invalid_query_params"),
        ("model=contact", None, 400, "invalid_query_params"),
        ("model=Contact&variant=a::b", None, 400, "invalid_query_params"),
        ("model=Contact&limit=0", None, 400, "invalid_query_params"),
        ("model=Contact&limit=10001", None, 400, "invalid_query_params"),
        ("model=Contact&limit=ten", None, 400, "invalid_query_params"),
        ("model=Contact&filter=bogus", None, 400, "invalid_query_params"),
        ("model=Contact&filter=added,", None, 400, "invalid_query_params"),
        ("model=Contact&filter=", None, 400, "invalid_query_params"),
        ("model=Contact&cursor=", None, 400, "invalid_query_params"),
        ("model=Contact&cursor=" + "a" * 1001, None, 400, "invalid_query_params"),
        ("model=Contact&cursor=abc", None, 400, "invalid_cursor_value"),
        (f"model=Contact&cursor={NOT_A_CURSOR}", None, 400, "invalid_cursor_value"),
        ("model=Contact&" + "&".join(f"ids={n}" for n in range(101)), None, 400, "invalid_query_params"),
        ("model=Contact&ids=" + "i" * 257, None, 400, "invalid_query_params"),
        ("model=Contact&modified_after=yesterday", None, 400, "invalid_query_params"),
        (f"model=Contact&modified_after={LONG_AGO}", None, 400, "invalid_query_params"),
        (f"model=Contact&delta={LONG_AGO}", None, 400, "invalid_query_params"),
        ("model=Contact&modified_after=1714557600", None, 400, "invalid_query_params"),
        ("model=Contact&page=2", None, 400, "invalid_query_params"),
    ],
)
async def test_bad_list_input_gets_its_documented_code(
    stack: Stack, query: str, headers: dict[str, str] | None, status: int, code: str
) -> None:
    got, body = await stack.call("GET", "/records?" + query, headers=headers)
    assert (got, body["error"]["code"]) == (status, code), body


async def test_prune_empties_payloads_up_to_a_cursor(stack: Stack) -> None:
    page = await stack.records(model="Contact", variant="v2")
    until = page["records"][0]["_nango_metadata"]["cursor"]
    body = {"model": "Contact", "variant": "v2", "until_cursor": until}
    status, pruned = await stack.call("PATCH", "/records/prune", body)
    assert (status, pruned) == (200, {"count": 1, "has_more": False})
    after = (await stack.records(model="Contact", variant="v2"))["records"]
    assert after[0]["_nango_metadata"]["pruned_at"] is not None
    assert "name" not in after[0]
    assert after[1]["name"] in ("A", "B")
    assert after[1]["_nango_metadata"]["pruned_at"] is None


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ({"model": "Contact"}, None, 400, "invalid_body"),
        ({"model": "Contact", "until_cursor": ""}, None, 400, "invalid_body"),
        ({"model": "Contact", "until_cursor": "abc", "limit": 0}, None, 400, "invalid_body"),
        ({"model": "Contact", "until_cursor": "abc", "limit": 1.5}, None, 400, "invalid_body"),
        ({"model": "Contact", "until_cursor": "abc", "limit": True}, None, 400, "invalid_body"),
        ({"model": "Contact", "until_cursor": "abc", "extra": 1}, None, 400, "invalid_body"),
        ({"model": "contact", "until_cursor": "abc"}, None, 400, "invalid_body"),
        ({"model": "Contact", "until_cursor": "abc"}, None, 400, "invalid_cursor_value"),
        ({"model": "Contact", "until_cursor": "abc"}, {"Provider-Config-Key": KEY}, 400, "invalid_headers"),
        (
            {"model": "Contact", "until_cursor": "abc"},
            {"Connection-Id": "nobody", "Provider-Config-Key": KEY},
            400,
            "unknown_connection",
        ),
    ],
)
async def test_bad_prune_input_gets_its_documented_code(
    stack: Stack, body: Any, headers: dict[str, str] | None, status: int, code: str
) -> None:
    got, answer = await stack.call("PATCH", "/records/prune", body, headers)
    assert (got, answer["error"]["code"]) == (status, code), answer
