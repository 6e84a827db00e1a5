"""The public API rate limiter (reference §2.5): a fixed 60-second window per account.

Counters live in the kv store (Redis across replicas, in-process otherwise). When the store
fails, the request is allowed: the limiter protects the platform, it must not take it down.
`public_api` (middleware.py) takes a quota for each authenticated request.
"""

from __future__ import annotations

import logging
import math
import time

from aiohttp import web

from nango.errors import NangoError, TooManyRequests
from nango.server.gateway.context import Gateway

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


class Quota:
    """What one request used of its account's window."""

    __slots__ = ("limit", "reset", "used")

    def __init__(self, limit: int, used: int, reset: int) -> None:
        self.limit = limit
        self.used = used
        self.reset = reset

    @property
    def exceeded(self) -> bool:
        return self.used > self.limit

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.limit - self.used, 0)),
            "X-RateLimit-Reset": str(self.reset),
        }

    def refusal(self, request: web.Request) -> web.Response:
        """The 429 of a request over the limit."""
        retry_after = max(math.ceil(self.reset - time.time()), 1)
        error = TooManyRequests(f"Too many requests, retry in {retry_after} seconds")
        body = {"code": error.instance_code, "message": error.message, "method": request.method, "path": request.path}
        headers = {**self.headers(), "Retry-After": str(retry_after)}
        return web.json_response({"error": body}, status=429, headers=headers)


async def take(request: web.Request, gw: Gateway, account_id: int, *, connect_session: bool) -> Quota | None:
    """Count the request in its account's window (connect-session and script calls have their own
    counters); None when the limiter is off or its store failed."""
    limit = gw.rate_limit_per_minute
    if limit <= 0:
        return None
    kind = "global" if connect_session else "secret"
    if request.headers.get("Nango-Is-Script", "").lower() == "true":
        kind += "-script"
    window = int(time.time() // WINDOW_SECONDS)
    key = f"ratelimit:account-{kind}-{account_id}:{window}"
    try:
        used = await gw.kv.incr(key, ttl=WINDOW_SECONDS + 5)
    except NangoError as exc:
        log.warning("rate limiter unavailable, request allowed", extra={"error": exc.instance_code})
        return None
    return Quota(limit, used, (window + 1) * WINDOW_SECONDS)


__all__ = ["WINDOW_SECONDS", "Quota", "take"]
