"""Connect session routes (reference §3.1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from nango.server.connect_sessions import CreateConnectSession, IssuedSession, ReconnectSession
from nango.server.gateway.context import GATEWAY, Gateway
from nango.server.gateway.http import Auth, auth, json_response
from nango.server.gateway.middleware import CONNECT_SESSION, ENVIRONMENT
from nango.server.gateway.validation import parse_body
from nango.server.gateway.views import end_user_view, js_date
from nango.server.gateway.webhook_settings import check_webhook_url
from nango.server.inputs import Strict

routes = web.RouteTableDef()

CONNECT_UI_SETTINGS = {
    "theme": {"light": {"primary": "#00B2E3"}, "dark": {"primary": "#00B2E3"}},
    "defaultTheme": "system",
    "showWatermark": False,
}


def _issued(gw: Gateway, issued: IssuedSession) -> web.Response:
    link = f"{gw.public_connect_url.rstrip('/')}/?session_token={issued.token}"
    body = {"data": {"token": issued.token, "connect_link": link, "expires_at": js_date(issued.session.expires_at)}}
    return json_response(body, status=201)


@routes.post("/connect/sessions")
async def create_session(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    body = await parse_body(request, CreateConnectSession)
    check_webhook_url(gw.webhook_url_policy, "webhook_url_override", body.webhook_url_override)
    return _issued(gw, await gw.connect_sessions.create(environment.id, body))


@routes.post("/connect/sessions/reconnect")
async def create_reconnect_session(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    body = await parse_body(request, ReconnectSession)
    check_webhook_url(gw.webhook_url_policy, "webhook_url_override", body.webhook_url_override)
    return _issued(gw, await gw.connect_sessions.reconnect(environment.id, body))


@routes.get("/connect/session")
@auth(Auth.CONNECT_SESSION)
async def get_session(request: web.Request) -> web.Response:
    gw, session = request.app[GATEWAY], request[CONNECT_SESSION]
    data: dict[str, Any] = {
        "endUser": end_user_view(session.end_user),
        "connectUISettings": CONNECT_UI_SETTINGS,
        "websocketsPath": gw.websockets_path,
    }
    optional = {
        "allowed_integrations": session.allowed_integrations,
        "integrations_config_defaults": session.integrations_config_defaults,
        "overrides": session.overrides,
        "webhook_url_override": session.webhook_url_override,
        "tags": session.tags,
    }
    data.update({k: v for k, v in optional.items() if v is not None})
    if session.connection_row_id is not None:
        data["isReconnecting"] = True
    return json_response({"data": data})


@routes.delete("/connect/session")
@auth(Auth.CONNECT_SESSION)
async def delete_session(request: web.Request) -> web.Response:
    await request.app[GATEWAY].connect_sessions.delete(request[CONNECT_SESSION])
    return web.Response(status=204)


TelemetryEvent = Literal[
    "open",
    "view:list",
    "view:integration",
    "view:unknown_error",
    "view:credentials_error",
    "view:success",
    "click:integration",
    "click:doc",
    "click:doc_section",
    "click:connect",
    "click:close",
    "click:finish",
    "click:outside",
    "popup:blocked_by_browser",
    "popup:closed_early",
]


class TelemetryDimensions(Strict):
    integration: str | None = Field(None, max_length=255)


class Telemetry(Strict):
    token: str = Field(min_length=1, max_length=255)
    event: TelemetryEvent
    timestamp: datetime
    dimensions: TelemetryDimensions | None = None


@routes.post("/connect/telemetry")
@auth(Auth.NONE)
async def telemetry(request: web.Request) -> web.Response:
    """Connect UI's usage events: validated and accepted; this build keeps no product analytics."""
    body = await parse_body(request, Telemetry)
    await request.app[GATEWAY].connect_sessions.authenticate(body.token)
    return web.Response(status=204)
