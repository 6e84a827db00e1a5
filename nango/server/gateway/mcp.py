"""`POST /mcp` (reference §8.1): a connection's actions as the tools of a Model Context Protocol
server, over MCP's streamable HTTP transport, stateless (no session id, no server-sent events).

The caller authenticates with the environment's secret key and names the connection with the
`connection-id` and `provider-config-key` headers, as for `/action/trigger`; an unknown connection
or integration answers the REST error envelope before any JSON-RPC. Each JSON-RPC request gets one
`application/json` answer; a notification gets 202 with no body.

- `initialize`: the protocol version the client asked for when we speak it, else our latest.
- `tools/list`: the integration's enabled actions. Name: the action's; description: its own, else
  its name; `inputSchema`: the action's input JSON schema when it is an object schema, else an
  empty object schema.
- `tools/call`: runs the action as `POST /action/trigger` does (synchronously). Its output comes back
  as JSON text (and as `structuredContent` when it is an object); an action that fails comes back as
  a tool result with `isError` and the error envelope as text, as MCP asks of tool errors.
- A batch (a JSON array, as protocol versions up to 2025-03-26 allow) gets an array of the answers
  to its requests, in order (202 when it held only notifications).
- `GET` (and `DELETE`) answer 405 with a JSON-RPC error: there is no stream and no session to end.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import Field

from nango import __version__
from nango.errors import NangoError, NotFound
from nango.server.actions import ActionFailed, CallerGone
from nango.server.errors import UnknownConnection
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import json_response
from nango.server.gateway.middleware import ENVIRONMENT
from nango.server.gateway.validation import parse_headers
from nango.server.inputs import ConnectionId, ProviderConfigKey, Strict

routes = web.RouteTableDef()

PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST = PROTOCOL_VERSIONS[-1]
_HEADER_NAMES = ("provider-config-key", "connection-id")
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

# JSON-RPC 2.0 error codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


class McpHeaders(Strict):
    provider_config_key: ProviderConfigKey = Field(alias="provider-config-key")
    connection_id: ConnectionId = Field(alias="connection-id")


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error(code: int, message: str, id: Any = None, status: int = 200) -> web.Response:
    return json_response(_failure(code, message, id), status=status)


def _tool(function: Any) -> dict[str, Any]:
    schema = function.input_json_schema
    if not isinstance(schema, dict) or schema.get("type") != "object":
        schema = _EMPTY_SCHEMA
    return {"name": function.name, "description": function.description or function.name, "inputSchema": schema}


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class ConnectionTools:
    """The tools of one connection: its integration's enabled actions."""

    def __init__(self, request: web.Request, headers: McpHeaders) -> None:
        self.gw = request.app[GATEWAY]
        self.environment_id: int = request[ENVIRONMENT].id
        self.headers = headers
        self.request = request

    async def check(self) -> None:
        """An unknown integration or connection is refused before any JSON-RPC."""
        gw, headers = self.gw, self.headers
        await gw.integrations.get(self.environment_id, headers.provider_config_key)
        connection = await gw.functions.connections.store.get_by_key(
            self.environment_id, headers.provider_config_key, headers.connection_id
        )
        if connection is None:
            raise UnknownConnection("Failed to find connection")

    async def list(self) -> list[dict[str, Any]]:
        functions = await self.gw.functions.store.of_environment(self.environment_id)
        key = self.headers.provider_config_key
        actions = [f for f in functions if f.provider_config_key == key and f.type == "action" and f.enabled]
        return [_tool(f) for f in sorted(actions, key=lambda f: f.name)]

    async def call(self, params: dict[str, Any]) -> dict[str, Any]:
        name, arguments = params.get("name"), params.get("arguments")
        if not isinstance(name, str) or not name:
            raise RpcError(INVALID_PARAMS, "tools/call needs the tool's name")
        if arguments is not None and not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "tools/call arguments must be an object")
        headers = self.headers
        try:
            output = await self.gw.actions.run(
                self.environment_id,
                headers.provider_config_key,
                headers.connection_id,
                name,
                arguments or None,
                disconnected=self._disconnected,
            )
        except NotFound:
            # no such action, or a disabled one: not among the tools
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}") from None
        except ActionFailed as exc:
            return {"content": [{"type": "text", "text": _text(exc.to_envelope())}], "isError": True}
        result: dict[str, Any] = {"content": [{"type": "text", "text": _text(output)}], "isError": False}
        if isinstance(output, dict):
            result["structuredContent"] = output
        return result

    def _disconnected(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()


async def _answer(tools: ConnectionTools, method: str, params: dict[str, Any]) -> Any:
    if method == "initialize":
        asked = params.get("protocolVersion")
        return {
            "protocolVersion": asked if asked in PROTOCOL_VERSIONS else LATEST,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "nango", "version": __version__},
        }
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": await tools.list()}
    if method == "tools/call":
        return await tools.call(params)
    raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")


@routes.post("/mcp")
async def mcp(request: web.Request) -> web.StreamResponse:
    present = {name: request.headers[name] for name in _HEADER_NAMES if name in request.headers}
    tools = ConnectionTools(request, parse_headers(present, McpHeaders))
    await tools.check()
    try:
        message = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return _error(PARSE_ERROR, "Parse error: the body is not JSON", status=400)
    try:
        if isinstance(message, list) and message:
            # a batch (protocol versions up to 2025-03-26): one answer per request, in order
            answers = [answer for item in message if (answer := await _handle(tools, item)) is not None]
            return json_response(answers) if answers else web.Response(status=202)
        if not _is_message(message):
            return _error(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message", status=400)
        answer = await _handle(tools, message)
    except CallerGone:
        return web.Response(status=499)
    # a notification (notifications/initialized, cancelled…) has nothing to answer
    return web.Response(status=202) if answer is None else json_response(answer)


def _is_message(message: Any) -> bool:
    return isinstance(message, dict) and message.get("jsonrpc") == "2.0" and isinstance(message.get("method"), str)


def _failure(code: int, message: str, id: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id}


async def _handle(tools: ConnectionTools, message: Any) -> dict[str, Any] | None:
    """The answer to one message; None for a notification."""
    if not _is_message(message):
        return _failure(INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")
    if "id" not in message:
        return None
    id, params = message["id"], message.get("params") or {}
    if not isinstance(params, dict):
        return _failure(INVALID_PARAMS, "params must be an object", id)
    try:
        result = await _answer(tools, message["method"], params)
    except RpcError as exc:
        return _failure(exc.code, exc.message, id)
    except NangoError as exc:
        # refused before the action ran (it disappeared, it is disabled…): a tool error the model can read
        result = {"content": [{"type": "text", "text": _text(exc.to_envelope())}], "isError": True}
    return {"jsonrpc": "2.0", "id": id, "result": result}


async def _not_allowed(request: web.Request) -> web.Response:
    return json_response(
        {"jsonrpc": "2.0", "error": {"code": -32000, "message": "Method not allowed."}, "id": None},
        status=405,
        headers={"Allow": "POST"},
    )


routes.get("/mcp")(_not_allowed)
routes.delete("/mcp")(_not_allowed)
