"""A small external API on 127.0.0.1 for the proxy's tests: it answers with what it received.

`/echo/...` answers `{method, path, query, headers, body_sha256, body_size, body}` for any method;
the other routes play one behaviour each (rate limits, redirects, compression, slow streams...).
Counters are per `?key=`, so tests sharing the server never see each other's attempts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import itertools
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from oauthlib.oauth1.rfc5849 import signature as oauth1

from tests.conftest import free_port

# the OAuth 1.0a consumer (the integration's app) and token (the connection's) /signed accepts
OAUTH1_CONSUMER = ("consumer-key", "consumer-secret")
OAUTH1_TOKEN = ("token-key", "token-secret")


@dataclass
class Upstream:
    url: str
    attempts: Counter[str] = field(default_factory=Counter)
    # `/stream` downloads and `/echo` uploads whose other end went away before the end, by key
    abandoned: set[str] = field(default_factory=set)
    # headers seen on `/after-redirect`, by key
    redirected: dict[str, dict[str, str]] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


def _echo_body(body: bytes) -> dict[str, object]:
    try:
        text: object = body.decode()
    except UnicodeDecodeError:
        text = base64.b64encode(body).decode()
    return {"body_sha256": hashlib.sha256(body).hexdigest(), "body_size": len(body), "body": text}


def build_app(state: Upstream) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        hasher, size, parts = hashlib.sha256(), 0, []
        try:
            async for chunk in request.content.iter_chunked(1 << 16):
                hasher.update(chunk)
                size += len(chunk)
                if size <= 1 << 20:
                    parts.append(chunk)
        except (ConnectionError, aiohttp.ClientPayloadError, asyncio.CancelledError):
            state.abandoned.add(request.query.get("key", ""))
            raise
        answer = {
            "method": request.method,
            "path": request.raw_path.partition("?")[0],
            "query": request.raw_path.partition("?")[2],
            "headers": dict(request.headers),
            **_echo_body(b"".join(parts)),
            "body_sha256": hasher.hexdigest(),
            "body_size": size,
        }
        extra = {"X-Request-Id": "req-123", "X-RateLimit-Remaining": "41", "Set-Cookie": "session=upstream"}
        extra |= {"X-Internal-Debug": "secret-topology", "Content-Disposition": 'inline; filename="echo.json"'}
        return web.json_response(answer, headers=extra)

    async def signed(request: web.Request) -> web.Response:
        """200 when the OAuth 1.0a signature (HMAC-SHA1, or HMAC-SHA256 for TBA) is right, as oauthlib checks it."""
        header = request.headers.get("Authorization", "")
        form = await request.post() if request.content_type == "application/x-www-form-urlencoded" else {}
        body = [(k, str(v)) for k, v in form.items()]
        query = request.raw_path.partition("?")[2]
        params = oauth1.collect_parameters(uri_query=query, headers={"Authorization": header}, body=body)
        sent = dict(oauth1.collect_parameters(headers={"Authorization": header}, exclude_oauth_signature=False))
        base_string = oauth1.signature_base_string(
            request.method, oauth1.base_string_uri(str(request.url)), oauth1.normalize_parameters(params)
        )
        known = sent.get("oauth_consumer_key") == OAUTH1_CONSUMER[0] and sent.get("oauth_token") == OAUTH1_TOKEN[0]
        keys = SimpleNamespace(client_secret=OAUTH1_CONSUMER[1], resource_owner_secret=OAUTH1_TOKEN[1])
        method = sent.get("oauth_signature_method")
        sign = oauth1.sign_hmac_sha256_with_client if method == "HMAC-SHA256" else oauth1.sign_hmac_sha1_with_client
        ok = known and sent.get("oauth_signature") == sign(base_string, keys)
        realm = next((part.split("=", 1)[1].strip('"') for part in header.split(", ") if "realm=" in part), None)
        return web.json_response({"ok": ok, "method": method, "realm": realm}, status=200 if ok else 401)

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        body = request.query.get("body", f"upstream says {code}")
        return web.Response(status=code, body=body.encode(), content_type="text/plain")

    async def rate_limited(request: web.Request) -> web.Response:
        """429 with `Retry-After: <after>` on the first call of a key, then 200."""
        key = request.query["key"]
        state.attempts[key] += 1
        if state.attempts[key] == 1:
            headers = {"Retry-After": request.query.get("after", "2")}
            return web.json_response({"error": "slow down"}, status=429, headers=headers)
        return web.json_response({"attempt": state.attempts[key]})

    async def reset_at(request: web.Request) -> web.Response:
        """429 with an epoch reset time (`x-ratelimit-reset`) `in` seconds ahead, then 200."""
        key = request.query["key"]
        state.attempts[key] += 1
        if state.attempts[key] == 1:
            reset = int(time.time()) + int(request.query.get("in", "2"))
            return web.json_response({}, status=429, headers={"X-RateLimit-Reset": str(reset)})
        return web.json_response({"attempt": state.attempts[key]})

    async def exhausted(request: web.Request) -> web.Response:
        """403 with `x-ratelimit-remaining: 0` on the first call of a key, then 200."""
        key = request.query["key"]
        state.attempts[key] += 1
        if state.attempts[key] == 1:
            return web.json_response({}, status=403, headers={"X-RateLimit-Remaining": "0"})
        return web.json_response({"attempt": state.attempts[key]})

    async def in_body(request: web.Request) -> web.Response:
        """403 whose JSON body says when to retry (Google's style), then 200."""
        key = request.query["key"]
        state.attempts[key] += 1
        if state.attempts[key] == 1:
            message = "User-rate limit exceeded. Retry after 1"
            return web.json_response({"error": {"message": message}}, status=403)
        return web.json_response({"attempt": state.attempts[key]})

    async def failing(request: web.Request) -> web.Response:
        """`code` for the first `times` calls of a key, then 200."""
        key = request.query["key"]
        state.attempts[key] += 1
        if state.attempts[key] <= int(request.query.get("times", "1")):
            return web.Response(status=int(request.query.get("code", "503")), text="not yet")
        return web.json_response({"attempt": state.attempts[key]})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def after_redirect(request: web.Request) -> web.Response:
        state.redirected[request.query.get("key", "")] = dict(request.headers)
        return web.json_response({"redirected": True, "method": request.method})

    async def gzipped(request: web.Request) -> web.Response:
        body = json.dumps({"compressed": True, "padding": "x" * 2000}).encode()
        return web.Response(
            body=gzip.compress(body), headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def stream(request: web.Request) -> web.StreamResponse:
        """`chunks` chunks of 64 KiB, `delay` seconds apart; records when the reader went away."""
        key = request.query.get("key", "")
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        try:
            for index in range(int(request.query.get("chunks", "10"))):
                await response.write(bytes([index % 256]) * 65536)
                await asyncio.sleep(float(request.query.get("delay", "0")))
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            state.abandoned.add(key)
            raise
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("seconds", "5")))
        return web.json_response({"slow": True})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/echo{tail:.*}", echo)
    app.router.add_route("*", "/api/echo{tail:.*}", echo)
    app.router.add_route("*", "/signed{tail:.*}", signed)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/rate-limited", rate_limited)
    app.router.add_get("/reset-at", reset_at)
    app.router.add_get("/exhausted", exhausted)
    app.router.add_get("/in-body", in_body)
    app.router.add_route("*", "/failing", failing)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_route("*", "/after-redirect", after_redirect)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/stream", stream)
    app.router.add_get("/slow", slow)
    return app


def _free_port_v6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def start_upstream(host: str = "127.0.0.1") -> AsyncIterator[Upstream]:
    """`async with start_upstream() as upstream:` runs it on a free port of `host`."""
    port = free_port() if ":" not in host else _free_port_v6()
    state = Upstream(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    runner = web.AppRunner(build_app(state), handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield state
    finally:
        await runner.cleanup()


__all__ = ["OAUTH1_CONSUMER", "OAUTH1_TOKEN", "Upstream", "build_app", "start_upstream"]
