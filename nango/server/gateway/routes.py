"""Platform routes: liveness, readiness and environment variables."""

from __future__ import annotations

from aiohttp import web

from nango.errors import ServiceUnavailable
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import Auth, auth, json_response
from nango.server.gateway.middleware import ENVIRONMENT

routes = web.RouteTableDef()


@routes.get("/health")
@auth(Auth.NONE)
async def health(_request: web.Request) -> web.Response:
    return json_response({"result": "ok"})


@routes.get("/ready")
@auth(Auth.NONE)
async def ready(request: web.Request) -> web.Response:
    try:
        await request.app[GATEWAY].environments.store.ping()
    except Exception as exc:
        raise ServiceUnavailable("the database is not reachable") from exc
    return json_response({"result": "ok"})


@routes.get("/environment-variables")
async def environment_variables(request: web.Request) -> web.Response:
    environment = request[ENVIRONMENT]
    variables = await request.app[GATEWAY].environments.variables(environment.id)
    return json_response([{"name": name, "value": value} for name, value in variables])
