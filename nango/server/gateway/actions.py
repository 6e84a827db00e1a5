"""Action routes (reference §3.7): `POST /action/trigger` (synchronous, or asynchronous with
`X-Async: true`) and `GET /action/{id}`.

`GET /action/{id}` of an action still waiting or running answers 202 `{id, statusUrl, status}` (status
`PENDING` or `RUNNING`); the output, or the action's error, once it has finished.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field, field_validator

from nango.orchestrator.client import TaskState
from nango.server.actions import MAX_RETRIES, CallerGone, status_url
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import json_response
from nango.server.gateway.middleware import ENVIRONMENT
from nango.server.gateway.validation import parse_body, parse_headers, parse_path, reject_unknown_query
from nango.server.inputs import ConnectionId, ProviderConfigKey, Strict

routes = web.RouteTableDef()

# zod's stringbool, which Nango's X-Async header goes through
_TRUE = frozenset({"true", "1", "yes", "on", "y", "enabled"})
_FALSE = frozenset({"false", "0", "no", "off", "n", "disabled"})
_HEADER_NAMES = ("provider-config-key", "connection-id", "x-async", "x-max-retries")


class TriggerHeaders(Strict):
    provider_config_key: ProviderConfigKey = Field(alias="provider-config-key")
    connection_id: ConnectionId = Field(alias="connection-id")
    x_async: bool = Field(False, alias="x-async")
    x_max_retries: int = Field(0, alias="x-max-retries", ge=0, le=MAX_RETRIES)

    @field_validator("x_async", mode="before")
    @classmethod
    def _string_bool(cls, value: Any) -> bool:
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("must be true or false")

    @field_validator("x_max_retries", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        text = str(value).strip()
        if not text.isascii() or not text.isdigit():
            raise ValueError(f"must be a whole number from 0 to {MAX_RETRIES}")
        return int(text)


class TriggerBody(Strict):
    # Nango's schema ignores other fields here
    model_config = ConfigDict(extra="ignore")

    action_name: str = Field(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9_-]+$")
    input: Any = None


class ActionPath(Strict):
    id: str = Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _output_response(output: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(output, separators=(",", ":"), default=str).encode(),
        status=status,
        content_type="application/json",
    )


def _disconnected(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@routes.post("/action/trigger")
async def trigger_action(request: web.Request) -> web.StreamResponse:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    present = {name: request.headers[name] for name in _HEADER_NAMES if name in request.headers}
    headers = parse_headers(present, TriggerHeaders)
    reject_unknown_query(request, set())
    body = await parse_body(request, TriggerBody)
    args = (environment.id, headers.provider_config_key, headers.connection_id, body.action_name, body.input)
    if headers.x_async:
        started = await gw.actions.start(*args, retries=headers.x_max_retries)
        return json_response(
            {"id": started.id, "statusUrl": started.status_url}, status=202, headers={"Location": started.status_url}
        )
    try:
        output = await gw.actions.run(*args, disconnected=lambda: _disconnected(request))
    except CallerGone:
        # nobody is left to answer; the task runs on
        return web.Response(status=499)
    return _output_response(output)


@routes.get("/action/{id}")
async def action_result(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    path = parse_path(request, ActionPath)
    reject_unknown_query(request, set())
    result = await gw.actions.result(environment.id, path.id.lower())
    if not result.done:
        status: Literal["PENDING", "RUNNING"] = "RUNNING" if result.state is TaskState.STARTED else "PENDING"
        return json_response(
            {"id": path.id, "statusUrl": status_url(path.id), "status": status},
            status=202,
            headers={"Retry-After": "1"},
        )
    return _output_response(result.output)
