"""Integration routes (reference §3.3)."""

from __future__ import annotations

from aiohttp import web

from nango.errors import InvalidQueryParams
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import Auth, auth, json_response
from nango.server.gateway.middleware import CONNECT_SESSION, ENVIRONMENT
from nango.server.gateway.validation import parse_body, reject_unknown_query
from nango.server.gateway.views import public_integration
from nango.server.integrations import CreateIntegration, UpdateIntegration

routes = web.RouteTableDef()

_INCLUDES = {"webhook", "credentials"}


def _includes(request: web.Request) -> set[str]:
    reject_unknown_query(request, {"include"})
    wanted = {part for value in request.query.getall("include", []) for part in value.split(",") if part}
    bad = wanted - _INCLUDES
    if bad:
        raise InvalidQueryParams(
            errors=[
                {"code": "invalid_enum_value", "message": "include must be webhook or credentials", "path": ["include"]}
            ]
        )
    return wanted


@routes.get("/integrations")
@auth(Auth.SECRET_KEY_OR_CONNECT_SESSION)
async def list_integrations(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    integrations = await gw.integrations.all(environment.id)
    session = request.get(CONNECT_SESSION)
    if session is not None and session.allowed_integrations is not None:
        integrations = [i for i in integrations if i.unique_key in session.allowed_integrations]
    return json_response({"data": [public_integration(gw, i, environment.uuid, set()) for i in integrations]})


@routes.post("/integrations")
async def create_integration(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    body = await parse_body(request, CreateIntegration)
    integration = await gw.integrations.create(environment.id, body)
    gw.incoming_webhooks.forget_integration(environment.id, integration.unique_key)
    return json_response({"data": public_integration(gw, integration, environment.uuid, set())})


@routes.get("/integrations/{unique_key}")
async def get_integration(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    include = _includes(request)
    integration = await gw.integrations.get(environment.id, request.match_info["unique_key"])
    return json_response({"data": public_integration(gw, integration, environment.uuid, include)})


@routes.patch("/integrations/{unique_key}")
async def update_integration(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    body = await parse_body(request, UpdateIntegration)
    integration = await gw.integrations.update(environment.id, request.match_info["unique_key"], body)
    gw.incoming_webhooks.forget_integration(environment.id, request.match_info["unique_key"])
    gw.incoming_webhooks.forget_integration(environment.id, integration.unique_key)
    return json_response({"data": public_integration(gw, integration, environment.uuid, set())})


@routes.delete("/integrations/{unique_key}")
async def delete_integration(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    await gw.integrations.delete(environment.id, request.match_info["unique_key"])
    gw.incoming_webhooks.forget_integration(environment.id, request.match_info["unique_key"])
    return json_response({"success": True})
