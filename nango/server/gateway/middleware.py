"""The gateway's middleware: CORS, error envelope, API authentication and the rate limiter, in that
order, composed in one middleware (`public_api`): four stacked ones cost every request a coroutine
and a partial each."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from nango.errors import (
    MalformedAuthHeader,
    MethodNotAllowed,
    MissingAuthHeader,
    NangoError,
    NotFound,
    RequestTooLarge,
    UnknownAccount,
)
from nango.server.connect_sessions import TOKEN_PREFIX as CONNECT_SESSION_PREFIX
from nango.server.environments import Environment
from nango.server.errors import DeprecatedAuthentication, InvalidPublicKey, MissingPublicKey
from nango.server.gateway import ratelimit
from nango.server.gateway.context import GATEWAY, Gateway
from nango.server.gateway.http import Auth, Handler, auth_of, json_response
from nango.server.settings import UUID_V4
from nango.server.store.sessions import ConnectSessionRow

log = logging.getLogger(__name__)

ENVIRONMENT = web.RequestKey("environment", Environment)
CONNECT_SESSION = web.RequestKey("connect_session", ConnectSessionRow)

CORS_ALLOW_HEADERS = (
    "Authorization, Content-Type, Accept, Origin, X-Requested-With, Nango-Activity-Log-Id, Nango-Is-Dry-Run, "
    "Nango-Is-Sync, Provider-Config-Key, Connection-Id, Sentry-Trace, Baggage"
)
CORS_EXPOSE_HEADERS = (
    "Authorization, Etag, Content-Type, Content-Length, X-Nango-Signature, X-RateLimit-Limit, "
    "X-RateLimit-Remaining, X-RateLimit-Reset"
)
# a route that sends its response itself (the proxy's streaming) adds these before it starts; kept as
# a case-insensitive multidict, which a response's headers take in without folding each name again
CORS_HEADERS = CIMultiDictProxy(
    CIMultiDict(
        {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
            "Access-Control-Allow-Methods": "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS",
            "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    )
)


def _from_http_exception(exc: web.HTTPException) -> NangoError:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("Route not found")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"{exc.method} is not allowed here; allowed: {', '.join(sorted(exc.allowed_methods))}")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return RequestTooLarge()
    return NangoError(exc.reason, code=f"http_{exc.status}", http_status=exc.status)


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The envelope of a failure: `{"error": {"code", "message"}}`; an unexpected one is a 500 with an
    id to quote to support, its details only in the log. Re-raises an HTTPException below 400."""
    if isinstance(exc, NangoError):
        return json_response(exc.to_envelope(), status=exc.status)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        error = _from_http_exception(exc)
        return json_response(error.to_envelope(), status=error.status)
    incident = str(uuid.uuid4())
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"incident": incident, "path": request.path, "method": request.method},
    )
    body = {
        "error": {
            "code": "generic_error_support",
            "message": f'An error occurred. Please contact support with this unique id: "{incident}"',
            "payload": incident,
        }
    }
    return json_response(body, status=500)


@web.middleware
async def error_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The error envelope alone, for an application without the public API's authentication."""
    try:
        return await handler(request)
    except Exception as exc:
        return error_response(request, exc)


@web.middleware
async def public_api(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS outermost (error responses need its headers too, or browsers hide them from Connect UI and
    the SDK; reference §2.5), then the error envelope, then authentication: routes need the
    environment's secret key unless they declare otherwise (reference §2.1), unknown routes 404 before
    any authentication; then the rate limiter, on authenticated routes only."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            match_info = request.match_info
            mode = auth_of(match_info.route.handler)
            if match_info.http_exception is not None or mode is Auth.NONE:
                response = await handler(request)
            else:
                gw = request.app[GATEWAY]
                account_id, by_session = await _authenticate(request, gw, mode)
                quota = None
                if gw.rate_limit_per_minute > 0:
                    quota = await ratelimit.take(request, gw, account_id, connect_session=by_session)
                if quota is not None and quota.exceeded:
                    response = quota.refusal(request)
                else:
                    response = await handler(request)
                    if quota is not None and not response.prepared:
                        response.headers.update(quota.headers())
        except Exception as exc:
            response = error_response(request, exc)
    if not response.prepared:
        response.headers.update(CORS_HEADERS)
    return response


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is None:
        raise MissingAuthHeader()
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MalformedAuthHeader()
    return token.strip()


async def _authenticate(request: web.Request, gw: Gateway, mode: Auth) -> tuple[int, bool]:
    """Sets ENVIRONMENT (and CONNECT_SESSION); returns the account and whether a session authenticated."""
    if mode is Auth.FLOW:
        await _flow_auth(request)
    else:
        token = bearer_token(request)
        if mode is Auth.CONNECT_SESSION or (
            mode is Auth.SECRET_KEY_OR_CONNECT_SESSION and token.startswith(CONNECT_SESSION_PREFIX)
        ):
            session = await gw.connect_sessions.authenticate(token)
            request[CONNECT_SESSION] = session
            request[ENVIRONMENT] = await gw.environments.get(session.environment_id)
        else:
            request[ENVIRONMENT] = await gw.environments.authenticate(token)
    return request[ENVIRONMENT].account_id, request.get(CONNECT_SESSION) is not None


async def _flow_auth(request: web.Request) -> None:
    """Browser auth flows carry `?connect_session_token=`; the legacy `?public_key=` is refused for
    accounts created after PUBLIC_AUTHENTICATION_DEPRECATION_DATE, as Nango does."""
    gw = request.app[GATEWAY]
    token = request.query.get("connect_session_token")
    if token:
        session = await gw.connect_sessions.authenticate(token)
        request[CONNECT_SESSION] = session
        request[ENVIRONMENT] = await gw.environments.get(session.environment_id)
        return
    public_key = request.query.get("public_key")
    if not public_key:
        raise MissingPublicKey()
    if not UUID_V4.match(public_key):
        raise InvalidPublicKey()
    environment = await gw.environments.by_public_key(public_key)
    if environment is None:
        raise UnknownAccount("Authentication failed. The provided public key is not valid.")
    if await gw.environments.account_created_at(environment.account_id) > gw.public_auth_deprecated_after:
        raise DeprecatedAuthentication()
    request[ENVIRONMENT] = environment
