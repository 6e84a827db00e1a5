"""The public API rate limiter (reference §2.5): a fixed 60-second window per account.

Counters live in the kv store (Redis across replicas, in-process otherwise). When the store
fails, the request is allowed: the limiter protects the platform, it must not take it down.
"""

from __future__ import annotations

import logging
import math
import time

from aiohttp import web

from nango.errors import NangoError, TooManyRequests
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import Auth, Handler, auth_of
from nango.server.gateway.middleware import CONNECT_SESSION, ENVIRONMENT

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    limit = gw.rate_limit_per_minute
    route = request.match_info.route
    if limit <= 0 or request.match_info.http_exception is not None or auth_of(route.handler) is Auth.NONE:
        return await handler(request)
    environment = request.get(ENVIRONMENT)
    if environment is None:
        return await handler(request)
    kind = "global" if request.get(CONNECT_SESSION) is not None else "secret"
    if request.headers.get("Nango-Is-Script", "").lower() == "true":
        kind += "-script"
    window = int(time.time() // WINDOW_SECONDS)
    key = f"ratelimit:account-{kind}-{environment.account_id}:{window}"
    reset = (window + 1) * WINDOW_SECONDS
    try:
        used = await gw.kv.incr(key, ttl=WINDOW_SECONDS + 5)
    except NangoError as exc:
        log.warning("rate limiter unavailable, request allowed", extra={"error": exc.instance_code})
        return await handler(request)
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(limit - used, 0)),
        "X-RateLimit-Reset": str(reset),
    }
    if used > limit:
        retry_after = max(math.ceil(reset - time.time()), 1)
        error = TooManyRequests(f"Too many requests, retry in {retry_after} seconds")
        body = {"code": error.instance_code, "message": error.message, "method": request.method, "path": request.path}
        return web.json_response({"error": body}, status=429, headers={**headers, "Retry-After": str(retry_after)})
    response = await handler(request)
    if not response.prepared:
        response.headers.update(headers)
    return response
