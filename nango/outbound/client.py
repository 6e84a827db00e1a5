"""The process's one outbound HTTP client: pooled keep-alive connections per upstream host.

Each policy gets its own connection pool, because a pooled connection carries the policy it was
opened under: one opened for a token endpoint (private addresses allowed) must never serve a proxy
call (private addresses refused). Redirects are followed here, each hop checked against the policy.

`send()` checks each URL itself, so it goes through sessions without aiohttp tracing (a trace costs
several awaited signals per request); `session()` is for code written against plain aiohttp, which
the policy polices through a trace on every request and redirect. All of a policy's sessions share
its one pool.

`send()` makes each hop itself on its session's pool (`_exchange`): what `ClientSession.request`
does for a request without redirects, cookies, traces, proxies or a total timeout, some 15 µs of
CPU cheaper (it runs on every proxy call). URLs with credentials and streamed bodies take aiohttp's
own path.

No session keeps cookies: the client serves every connection of every customer, and a cookie one
upstream set must never ride along on another's call (Nango's proxy keeps none either).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.client_reqrep import ClientRequest, ClientResponse
from aiohttp.helpers import DEFAULT_CHUNK_SIZE, EMPTY_BODY_METHODS, TimerNoop
from multidict import CIMultiDict
from yarl import URL

from nango.outbound.errors import OutboundDenied, TooManyRedirects
from nango.outbound.policy import OutboundPolicy
from nango.outbound.resolver import PinningResolver

Body = bytes | AsyncIterable[bytes] | None

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# dropped when a redirect leaves the origin, unless the caller asked to keep every header
_ORIGIN_BOUND = ("authorization", "cookie", "proxy-authorization")
# as aiohttp: a request on a pooled connection the upstream had closed is sent once more, when it may be
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class PolicyRefused(aiohttp.ClientConnectionError):
    """A request made through `session()` that the policy refused before connecting: an aiohttp
    error, so code written against plain aiohttp handles it like an unreachable host."""

    def __init__(self, denied: OutboundDenied) -> None:
        super().__init__(f"refused by the outbound URL policy: {denied.message}")
        self.denied = denied


def _policing(policy: OutboundPolicy) -> aiohttp.TraceConfig:
    """Checks every URL a session requests, and every redirect it follows, before connecting: the
    resolver sees host names only, never literal addresses such as http://127.0.0.1/."""

    def check(url: URL) -> None:
        try:
            policy.check_url(url)
        except OutboundDenied as exc:
            raise PolicyRefused(exc) from None

    async def on_start(_: object, __: object, params: aiohttp.TraceRequestStartParams) -> None:
        check(params.url)

    async def on_redirect(_: object, __: object, params: aiohttp.TraceRequestRedirectParams) -> None:
        location = params.response.headers.get("Location")
        if location:
            check(params.url.join(URL(location)))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.on_request_redirect.append(on_redirect)
    trace.freeze()
    return trace


@dataclass(frozen=True)
class PoolSettings:
    connect_timeout: float = 10.0
    # longest silence while reading an answer; a download may take any time while bytes flow
    read_timeout: float = 300.0
    size: int = 512
    per_host: int = 100
    keepalive: float = 30.0
    dns_ttl: float = 10.0


@dataclass(slots=True)
class OutboundRequest:
    method: str
    url: URL
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: Body = None
    decompress: bool = False
    follow_redirects: bool = True
    forward_headers_on_redirect: bool = True


class OutboundClient:
    def __init__(self, pool: PoolSettings | None = None, *, dns: Callable[[], AbstractResolver] | None = None) -> None:
        """`dns` makes the name resolver each pool's policy checks (the system resolver by default)."""
        self.pool = pool or PoolSettings()
        self._dns = dns
        self._connectors: dict[OutboundPolicy, aiohttp.TCPConnector] = {}
        self._sessions: dict[OutboundPolicy, aiohttp.ClientSession] = {}
        # send()'s own sessions per policy: (raw bytes, decompressed)
        self._senders: dict[OutboundPolicy, tuple[aiohttp.ClientSession, aiohttp.ClientSession]] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=self.pool.connect_timeout, sock_read=self.pool.read_timeout
        )

    def _connector(self, policy: OutboundPolicy) -> aiohttp.TCPConnector:
        """The policy's pool (created on first use, inside the event loop)."""
        connector = self._connectors.get(policy)
        if connector is None:
            connector = aiohttp.TCPConnector(
                limit=self.pool.size,
                limit_per_host=self.pool.per_host,
                keepalive_timeout=self.pool.keepalive,
                ttl_dns_cache=int(self.pool.dns_ttl),
                resolver=PinningResolver(policy, self._dns() if self._dns else None),
            )
            self._connectors[policy] = connector
        return connector

    def session(self, policy: OutboundPolicy) -> aiohttp.ClientSession:
        """A session on the policy's pool that checks every URL it requests against the policy."""
        session = self._sessions.get(policy)
        if session is None:
            session = aiohttp.ClientSession(
                connector=self._connector(policy),
                connector_owner=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                trace_configs=[_policing(policy)],
            )
            self._sessions[policy] = session
        return session

    def _sender(self, policy: OutboundPolicy, decompress: bool) -> aiohttp.ClientSession:
        senders = self._senders.get(policy)
        if senders is None:
            connector = self._connector(policy)
            # raw: no Accept-Encoding of aiohttp's own, so that the bytes passed on are what the caller asked for
            raw = aiohttp.ClientSession(
                connector=connector,
                connector_owner=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
            )
            decompressing = aiohttp.ClientSession(
                connector=connector, connector_owner=False, cookie_jar=aiohttp.DummyCookieJar(), timeout=self._timeout
            )
            senders = self._senders[policy] = (raw, decompressing)
        return senders[1] if decompress else senders[0]

    async def close(self) -> None:
        sessions = [*self._sessions.values(), *(s for pair in self._senders.values() for s in pair)]
        connectors = list(self._connectors.values())
        self._sessions, self._senders, self._connectors = {}, {}, {}
        await asyncio.gather(*(session.close() for session in sessions))
        await asyncio.gather(*(connector.close() for connector in connectors))

    async def __aenter__(self) -> OutboundClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def send(self, request: OutboundRequest, policy: OutboundPolicy) -> aiohttp.ClientResponse:
        """Send the request, following up to `policy.max_redirects` redirects; the caller reads (or
        releases) the response. Raises OutboundDenied, TooManyRedirects and aiohttp's errors."""
        session = self._sender(policy, request.decompress)
        method, url, headers, body = request.method, request.url, request.headers, request.body
        if request.decompress and "accept-encoding" in headers:
            headers = CIMultiDict(headers)
            headers.popall("accept-encoding")
        for hop in range(policy.max_redirects + 1):
            try:
                policy.check_url(url)
                if body is None or isinstance(body, bytes):
                    response = await self._exchange(session, method, url, headers, body)
                else:
                    response = await session.request(method, url, headers=headers, data=body, allow_redirects=False)
            except OutboundDenied as exc:
                if hop == 0:
                    raise
                raise OutboundDenied(
                    "redirect_denied", f"A redirect was refused: {exc.message}", host=exc.host
                ) from None
            location = response.headers.get("Location")
            if not request.follow_redirects or response.status not in _REDIRECTS or not location:
                return response
            target = url.join(URL(location))
            keeps_method = response.status in (307, 308)
            if keeps_method and body is not None and not isinstance(body, bytes):
                return response  # a streamed body cannot be sent twice: the caller gets the redirect
            response.release()
            # the caller's headers are not changed: each hop works on its own copy
            headers = CIMultiDict(headers)
            if not keeps_method and (response.status == 303 or method == "POST") and method != "HEAD":
                method, body = "GET", None
                for name in ("content-type", "content-length", "content-encoding"):
                    headers.popall(name, None)
            if not request.forward_headers_on_redirect and target.origin() != url.origin():
                for name in _ORIGIN_BOUND:
                    headers.popall(name, None)
            url = target
        raise TooManyRedirects(f"The upstream API redirected more than {policy.max_redirects} times")

    async def _exchange(
        self, session: aiohttp.ClientSession, method: str, url: URL, headers: CIMultiDict[str], body: bytes | None
    ) -> aiohttp.ClientResponse:
        """`session.request(method, url, headers=headers, data=body, allow_redirects=False)` for the
        sessions `_sender` makes (no cookies, traces, proxy, middlewares or total timeout; the pool's
        connect and read timeouts apply), made directly on the session's connector."""
        if url.raw_user is not None or url.raw_password is not None:
            # aiohttp turns credentials in the URL into an Authorization header
            return await session.request(method, url, headers=headers, data=body, allow_redirects=False)
        connector = session.connector
        if session.closed or connector is None:
            raise RuntimeError("Session is closed")
        timeout = self._timeout
        method = method.upper()
        retry_stale = method in _IDEMPOTENT
        while True:
            request = ClientRequest(
                method,
                url,
                headers=headers,
                skip_auto_headers=session.skip_auto_headers,
                data=body,
                # the pool's loop (asking asyncio for the running one costs a getpid() per call)
                loop=connector._loop,
                response_class=ClientResponse,
                session=session,
                ssl=True,
                traces=[],
            )
            try:
                try:
                    connection = await connector.connect(request, traces=[], timeout=timeout)
                except TimeoutError as exc:
                    raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from exc
                protocol = connection.protocol
                assert protocol is not None
                protocol.set_response_params(
                    timer=TimerNoop(),
                    skip_payload=method in EMPTY_BODY_METHODS,
                    read_until_eof=True,
                    auto_decompress=session.auto_decompress,
                    read_timeout=timeout.sock_read,
                    read_bufsize=DEFAULT_CHUNK_SIZE,
                    timeout_ceil_threshold=connector._timeout_ceil_threshold,
                )
                try:
                    response = await request.send(connection)
                    try:
                        await response.start(connection)
                    except BaseException:
                        response.close()
                        raise
                except BaseException:
                    connection.close()
                    raise
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
                raise
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                if not retry_stale:
                    raise
                retry_stale = False
                await request.close()
                continue
            except aiohttp.ClientError:
                raise
            except OSError as exc:
                if exc.errno is None and isinstance(exc, TimeoutError):
                    raise
                raise aiohttp.ClientOSError(*exc.args) from exc
            if request._body is not None:
                await request._body.close()
            return response


__all__ = ["Body", "OutboundClient", "OutboundRequest", "PolicyRefused", "PoolSettings"]
