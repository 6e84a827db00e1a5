"""The public API's middleware, composed in one (`public_api`): CORS on every answer including
errors, the error envelope, authentication before the rate limiter, and the limiter's headers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from nango.errors import InvalidRequest, UnknownAccount
from nango.kv.memory import MemoryKV
from nango.server.environments import Environment
from nango.server.gateway.context import GATEWAY, Gateway
from nango.server.gateway.http import Auth, auth, compact_json, json_response
from nango.server.gateway.middleware import ENVIRONMENT, public_api

KEY = str(uuid.uuid4())
ENVIRONMENT_ROW = Environment(7, 42, str(uuid.uuid4()), "dev", False)


class Environments:
    async def authenticate(self, secret_key: str) -> Environment:
        if secret_key != KEY:
            raise UnknownAccount()
        return ENVIRONMENT_ROW


async def ok(request: web.Request) -> web.Response:
    return json_response({"environment": request[ENVIRONMENT].id})


async def fails(_request: web.Request) -> web.Response:
    raise InvalidRequest("bad input")


async def breaks(_request: web.Request) -> web.Response:
    raise RuntimeError("a bug, with a detail that must stay in the log")


async def redirects(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


@auth(Auth.NONE)
async def open_route(_request: web.Request) -> web.Response:
    return json_response({"result": "ok"})


async def streams(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"X-Own": "yes"})
    await response.prepare(request)
    await response.write_eof(b"streamed")
    return response


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    fields: dict[str, Any] = dict.fromkeys(Gateway.__dataclass_fields__)
    fields.update(environments=Environments(), kv=MemoryKV(), rate_limit_per_minute=3)
    app = web.Application(middlewares=[public_api])
    app[GATEWAY] = Gateway(**fields)
    for path, handler in (
        ("/ok", ok),
        ("/fails", fails),
        ("/breaks", breaks),
        ("/redirects", redirects),
        ("/open", open_route),
        ("/streams", streams),
    ):
        app.router.add_get(path, handler)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def authorized() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


async def test_a_success_carries_cors_and_rate_limit_headers(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/ok", headers=authorized())
    assert response.status == 200
    assert await response.json() == {"environment": 7}
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "2"
    assert int(response.headers["X-RateLimit-Reset"]) % 60 == 0


async def test_authentication_comes_first_and_is_not_counted(client: TestClient[web.Request, web.Application]) -> None:
    for headers, code in (
        ({}, "missing_auth_header"),
        ({"Authorization": f"Bearer {uuid.uuid4()}"}, "unknown_account"),
    ):
        response = await client.get("/ok", headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == code
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "X-RateLimit-Remaining" not in response.headers
    response = await client.get("/ok", headers=authorized())
    assert response.headers["X-RateLimit-Remaining"] == "2"


async def test_over_the_limit_is_a_429_with_cors(client: TestClient[web.Request, web.Application]) -> None:
    if 60 - time.time() % 60 < 1:  # stay inside one fixed window
        await asyncio.sleep(60 - time.time() % 60 + 0.05)
    statuses = [(await client.get("/ok", headers=authorized())).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    response = await client.get("/ok", headers=authorized())
    assert response.status == 429
    body = await response.json()
    assert body["error"]["code"] == "too_many_request"
    assert body["error"]["path"] == "/ok"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    # routes without authentication are not limited
    assert (await client.get("/open")).status == 200


async def test_errors_use_the_envelope_with_cors(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/fails", headers=authorized())
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"
    assert response.headers["Access-Control-Allow-Origin"] == "*"

    response = await client.get("/breaks", headers=authorized())
    assert response.status == 500
    error = (await response.json())["error"]
    assert error["code"] == "generic_error_support"
    assert "a bug" not in json.dumps(error)
    assert response.headers["Access-Control-Allow-Origin"] == "*"

    response = await client.get("/no/such/route")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    response = await client.post("/ok", headers=authorized())
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_redirects_pass_through(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/redirects", headers=authorized(), allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/elsewhere"


async def test_preflight_needs_no_key(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.options(
        "/ok", headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-RateLimit-Remaining" not in response.headers


async def test_a_response_sent_by_its_route_is_left_alone(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/streams", headers=authorized())
    assert response.status == 200
    assert await response.read() == b"streamed"
    assert response.headers["X-Own"] == "yes"
    assert "X-RateLimit-Remaining" not in response.headers
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    "value",
    [
        {"a": "é\u2028\x00", "b": [1, 2.5, None, True, float("inf")], "c": datetime(2020, 1, 1)},
        "text",
        1.5,
        [],
        {"nested": {"list": [{"x": 1}]}},
    ],
)
def test_json_bodies_are_what_json_dumps_writes(value: object) -> None:
    assert compact_json(value) == json.dumps(value, separators=(",", ":"), default=str)
