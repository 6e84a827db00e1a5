"""OAuth popup routes: `/oauth/connect/{providerConfigKey}` and `/oauth/callback` (reference §4.1, §4.2), for
OAUTH2, OAUTH1 and GitHub App installs (APP, CUSTOM). `/app-auth/connect` is Nango's Setup URL for GitHub Apps:
the same callback.

Both end the popup's story the same way: the outcome goes to the SDK's websocket (`ws_client_id`) and
the popup shows the callback page, HTTP 400 on error. Authentication failures of the connect route are
the middleware's JSON 401s, as in Nango.
"""

from __future__ import annotations

from aiohttp import web

from nango.errors import NangoError
from nango.server.auth.flows import FlowContext
from nango.server.auth.oauth2_flow import Succeeded, valid_ws_client_id
from nango.server.auth.popup import unexpected
from nango.server.gateway import app_install, callback_page
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.flow import resolve_flow
from nango.server.gateway.http import Auth, auth
from nango.server.gateway.middleware import ENVIRONMENT
from nango.server.gateway.websockets import error_message, notify, success_message

routes = web.RouteTableDef()

STATE_COOKIE_PREFIX = "oauth2-"
STATE_COOKIE_MAX_AGE = 3600


@routes.get("/oauth/connect/{providerConfigKey}", allow_head=False)
@auth(Auth.FLOW)
async def oauth_connect(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    provider_config_key = request.match_info["providerConfigKey"]
    ctx: FlowContext | None = None
    try:
        ctx = await resolve_flow(request, provider_config_key)
        authorization = await gw.oauth.start(ctx)
    except Exception as exc:
        error = exc if isinstance(exc, NangoError) else unexpected(exc)
        gw.oauth.record_failure(
            error,
            environment_id=request[ENVIRONMENT].id,
            provider_config_key=provider_config_key,
            provider=ctx.integration.provider if ctx else None,
            connection_id=ctx.connection_id if ctx else None,
        )
        connection_id = ctx.connection_id if ctx else request.query.get("connection_id")
        ws_client_id = valid_ws_client_id(request.query.get("ws_client_id"))
        await notify(gw.kv, ws_client_id, error_message(provider_config_key, connection_id, error))
        return callback_page.error_page(error)
    response = web.Response(
        status=302,
        headers={"Location": authorization.url, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
    # the callback checks the flow comes back to the browser that started it
    https = gw.server_url.startswith("https://")
    response.set_cookie(
        STATE_COOKIE_PREFIX + authorization.state,
        "1",
        max_age=STATE_COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        secure=https,
        samesite="None" if https else "Lax",
    )
    return response


# no HEAD: a link prefetcher must not spend a flow's single-use state
@routes.get("/oauth/callback", allow_head=False)
@routes.get("/app-auth/connect", allow_head=False)
@auth(Auth.NONE)
async def oauth_callback(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    if app_install.is_stateless_install(request.query):
        return app_install.installed_elsewhere(request)
    state = request.query.get("state") or ""
    cookie = STATE_COOKIE_PREFIX + state
    completion = await gw.oauth.complete(request.query, state_cookie_present=cookie in request.cookies)
    if isinstance(completion, Succeeded):
        target = completion.target
        response = callback_page.success_page()
        message = success_message(target.provider_config_key, target.connection_id, is_pending=completion.is_pending)
        await notify(gw.kv, target.ws_client_id, message)
    else:
        response = callback_page.error_page(completion.error)
        if (waiting := completion.target) is not None:
            message = error_message(waiting.provider_config_key, waiting.connection_id, completion.error)
            await notify(gw.kv, waiting.ws_client_id, message)
    if state and cookie in request.cookies:
        response.del_cookie(cookie, path="/")
    return response
