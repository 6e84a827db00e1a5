"""Non-popup auth routes (reference §4.4): the frontend SDK POSTs the end user's credentials as JSON.

Every route authenticates with `?connect_session_token=` (or the legacy public key), checks that
the integration's provider uses the route's auth mode, obtains and tests the credentials, then ends
with `FlowFinisher.finish` and answers 200 `{providerConfigKey, connectionId}`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field

from nango.errors import InvalidBody
from nango.server.auth.errors import InvalidAuthMode, InvalidConnectionConfig
from nango.server.auth.flows import FlowContext
from nango.server.auth.jwt_tokens import RESERVED_FIELDS
from nango.server.auth.oauth2 import ClientCredentials
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.flow import resolve_flow
from nango.server.gateway.http import Auth, auth, json_body, json_response
from nango.server.gateway.validation import parse_body
from nango.server.inputs import Strict

routes = web.RouteTableDef()

M = TypeVar("M", bound=BaseModel)


class ApiKeyBody(Strict):
    apiKey: str = Field(min_length=1)


class BasicBody(Strict):
    username: str = Field(min_length=1)
    password: str = ""


class ClientCredentialsBody(Strict):
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    client_certificate: str | None = None
    client_private_key: str | None = None


class TbaBody(Strict):
    token_id: str = Field(min_length=1)
    token_secret: str = Field(min_length=1)
    oauth_client_id_override: str | None = Field(None, min_length=1)
    oauth_client_secret_override: str | None = Field(None, min_length=1)


class EmptyBody(Strict):
    pass


async def _start(request: web.Request, model: type[M], auth_mode: str) -> tuple[M, FlowContext]:
    body = await parse_body(request, model)
    return body, await _flow(request, auth_mode)


async def _flow(request: web.Request, auth_mode: str) -> FlowContext:
    ctx = await resolve_flow(request, request.match_info["provider_config_key"])
    if ctx.provider.auth_mode != auth_mode:
        raise InvalidAuthMode(
            f"The integration's provider uses {ctx.provider.auth_mode} auth; this route creates {auth_mode} connections"
        )
    return ctx


async def _finish(
    request: web.Request,
    ctx: FlowContext,
    credentials: dict[str, Any],
) -> web.Response:
    finished = await request.app[GATEWAY].finisher.finish(ctx, credentials=credentials)
    return json_response(
        {"providerConfigKey": ctx.provider_config_key, "connectionId": finished.connection.connection_id}
    )


@routes.post("/api-auth/api-key/{provider_config_key}")
@auth(Auth.FLOW)
async def api_key(request: web.Request) -> web.Response:
    body, ctx = await _start(request, ApiKeyBody, "API_KEY")
    credentials = {"type": "API_KEY", "apiKey": body.apiKey}
    await request.app[GATEWAY].direct_auth.check(ctx.provider, ctx.integration, credentials, ctx.connection_config)
    return await _finish(request, ctx, credentials)


@routes.post("/api-auth/basic/{provider_config_key}")
@auth(Auth.FLOW)
async def basic(request: web.Request) -> web.Response:
    body, ctx = await _start(request, BasicBody, "BASIC")
    credentials = {"type": "BASIC", "username": body.username, "password": body.password}
    await request.app[GATEWAY].direct_auth.check(ctx.provider, ctx.integration, credentials, ctx.connection_config)
    return await _finish(request, ctx, credentials)


@routes.post("/oauth2/auth/{provider_config_key}")
@auth(Auth.FLOW)
async def client_credentials(request: web.Request) -> web.Response:
    body, ctx = await _start(request, ClientCredentialsBody, "OAUTH2_CC")
    credentials = await request.app[GATEWAY].direct_auth.client_credentials(
        ctx.provider,
        ClientCredentials(body.client_id, body.client_secret),
        scopes=ctx.scopes,
        connection_config=ctx.connection_config,
    )
    # stored (sealed) in Nango's shape; this version does not present client certificates to the token endpoint
    credentials.update(body.model_dump(include={"client_certificate", "client_private_key"}, exclude_none=True))
    return await _finish(request, ctx, credentials)


@routes.post("/auth/jwt/{provider_config_key}")
@auth(Auth.FLOW)
async def signed_jwt(request: web.Request) -> web.Response:
    data = await json_body(request)
    if not isinstance(data, dict):
        raise InvalidBody("The body must be a JSON object of the provider's credential fields")
    clashing = sorted(RESERVED_FIELDS.intersection(data) - {"type"})
    if clashing:
        errors = [{"code": "custom", "message": "Reserved for the signed token", "path": [key]} for key in clashing]
        raise InvalidBody(f"{', '.join(clashing)} cannot be submitted", errors=errors)
    ctx = await _flow(request, "JWT")
    fields = {key: value for key, value in data.items() if key != "type"}
    credentials = request.app[GATEWAY].direct_auth.signed_jwt(ctx.provider, fields)
    await request.app[GATEWAY].direct_auth.check(ctx.provider, ctx.integration, credentials, ctx.connection_config)
    return await _finish(request, ctx, credentials)


@routes.post("/auth/tba/{provider_config_key}")
@auth(Auth.FLOW)
async def tba(request: web.Request) -> web.Response:
    body, ctx = await _start(request, TbaBody, "TBA")
    if not ctx.connection_config.get("accountId"):
        raise InvalidConnectionConfig.missing(["accountId"], "TBA signature")
    credentials: dict[str, Any] = {"type": "TBA", "token_id": body.token_id, "token_secret": body.token_secret}
    if body.oauth_client_id_override or body.oauth_client_secret_override:
        override = {"client_id": body.oauth_client_id_override, "client_secret": body.oauth_client_secret_override}
        credentials["config_override"] = {key: value for key, value in override.items() if value}
    await request.app[GATEWAY].direct_auth.check(ctx.provider, ctx.integration, credentials, ctx.connection_config)
    return await _finish(request, ctx, credentials)


@routes.post("/auth/unauthenticated/{provider_config_key}")
@auth(Auth.FLOW)
async def unauthenticated(request: web.Request) -> web.Response:
    _, ctx = await _start(request, EmptyBody, "NONE")
    return await _finish(request, ctx, {"type": "NONE"})
