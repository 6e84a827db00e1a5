"""A lean HTTP/1.1 client for `OutboundClient.send()`: one request in one write, the answer parsed by
llhttp (httptools), the connection back in its pool as soon as the answer's last byte is in.

aiohttp's client costs some 80 µs of CPU per request on this machine (request and response objects,
connector bookkeeping, header serialisation in several passes); this one about 15, and every proxy
call pays it. It does only what `send()` needs for a request whose body is in memory: no cookies,
redirects (`send()` follows them), proxies, decompression or streamed request bodies; those go
through aiohttp's client on the same policy.

What it keeps from aiohttp's connector, because the outbound policy depends on it:
- host names are resolved through the policy's `PinningResolver`, answers cached for the pool's DNS
  TTL, and the connection is made to exactly the address checked;
- a pool per policy (a connection opened under one policy never serves another), at most
  `per_host` connections per host and `size` in all, idle ones closed after `keepalive` seconds;
- the connect timeout, and the read timeout as the longest silence while an answer is awaited or
  read (not while the caller is slow to read: reading is paused then);
- a request on a pooled connection the upstream had closed is sent once more when its method is
  idempotent;
- the errors are aiohttp's (`ClientConnectorError`, `ServerDisconnectedError`,
  `SocketTimeoutError`, `ClientPayloadError`, `ClientResponseError`), so callers handle both
  clients alike.

The answer's body is buffered in the response, not in the connection: a connection carries one
exchange at a time and is reusable the moment its answer is complete. A caller that lets go of an
answer before its end (`release()` / `close()`) closes its connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import socket
import ssl
import weakref
from collections.abc import AsyncIterator
from typing import cast

import aiohappyeyeballs
import aiohttp
import httptools
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from nango import __version__
from nango.outbound.resolver import PinningResolver

# methods whose request carries no body: no Content-Length: 0 is added for them (as aiohttp)
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# as aiohttp: a request on a pooled connection the upstream had closed is sent once more, when it may be
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# the caller's framing headers are replaced by our own (a body in memory has a known length)
_FRAMING = frozenset({"content-length", "transfer-encoding", "host"})
USER_AGENT = f"nango-py/{__version__}"
# buffered answer bytes above which the connection stops reading until the caller catches up
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_CRLF = frozenset("\r\n")
# an answer's head is refused past these (aiohttp's parser refuses lines over 8 KiB and 128 headers)
MAX_HEAD_BYTES = 64 * 1024
_HAPPY_EYEBALLS_DELAY = 0.25
MAX_HEADERS = 256


def wire_eligible(method: str, url: URL, body: object, decompress: bool) -> bool:
    """Whether `WirePool.request` can carry the request (else aiohttp's client does)."""
    return (
        (body is None or isinstance(body, bytes))
        and not decompress
        and method != "HEAD"
        and method != "CONNECT"
        and url.scheme in ("http", "https")
        and url.raw_user is None
        and url.raw_password is None
        and url.raw_host is not None
    )


class _HeadTooLarge(Exception):
    """The answer's headers are over MAX_HEAD_BYTES or MAX_HEADERS."""


class _Closed(Exception):
    """The connection went away before the answer's first byte (a stale pooled connection)."""


class WireResponse:
    """An upstream answer: status, headers and a body read as it arrives (aiohttp's ClientResponse
    surface that the proxy, token and webhook code use)."""

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_buffered",
        "_connection",
        "_eof",
        "_error",
        "_waiter",
        "content_length",
        "headers",
        "method",
        "reason",
        "status",
        "url",
    )

    def __init__(self, method: str, url: URL) -> None:
        self.method = method
        self.url = url
        self.status = 0
        self.reason: str | None = None
        self.headers: CIMultiDictProxy[str] = _EMPTY_HEADERS
        self.content_length: int | None = None
        self._buffer: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        # the connection still delivering this answer's body (None once it is complete or dropped)
        self._connection: _Connection | None = None

    @property
    def content(self) -> WireResponse:
        return self

    # fed by the connection

    def _feed(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        self._eof = True
        self._error = error
        self._connection = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        connection = self._connection
        if connection is not None:
            connection.resume()
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    def _take(self, n: int) -> bytes:
        chunk = self._buffer.popleft()
        if 0 <= n < len(chunk):
            self._buffer.appendleft(chunk[n:])
            chunk = chunk[:n]
        self._buffered -= len(chunk)
        connection = self._connection
        if connection is not None and self._buffered < _LOW_WATER:
            connection.resume()
        return chunk

    # read by the caller

    async def read(self, n: int = -1) -> bytes:
        """With n < 0 the whole (rest of the) body; else at most n bytes, b"" at its end."""
        if n < 0:
            while not self._eof:
                await self._wait()
            if self._error is not None:
                raise self._error
            chunks = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            return chunks
        if n == 0:
            return b""
        while not self._buffer:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return b""
            await self._wait()
        return self._take(n)

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        while chunk := await self.read(n):
            yield chunk

    def release(self) -> None:
        """Done with the answer: a connection still delivering it is closed (its rest is unread)."""
        connection = self._connection
        if connection is not None:
            self._connection = None
            connection.abandon()
        if not self._eof:
            self._eof = True
            self._error = aiohttp.ClientConnectionError("Connection closed")
        self._buffer.clear()
        self._buffered = 0
        self._wake()

    close = release

    def __del__(self) -> None:
        # dropped without release() (as aiohttp's ClientResponse): its connection is not kept
        connection = self._connection
        if connection is not None:
            self._connection = None
            # collected after its event loop closed (at exit): nothing is left to give back
            with contextlib.suppress(RuntimeError):
                connection.abandon()


_EMPTY_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class _Connection(asyncio.Protocol):
    """One upstream connection: an exchange at a time, parsed with llhttp."""

    def __init__(self, pool: WirePool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        # counted against the pool's limits (until it closes)
        self.counted = False
        self.idle_since = 0.0
        # the exchange under way
        # held weakly: an answer its caller dropped unreleased is collected, and gives its connection back
        self._response: weakref.ReferenceType[WireResponse] | None = None
        self.head: asyncio.Future[WireResponse] | None = None
        self._header_list: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._reason: str | None = None
        self._informational = False
        self._until_eof = False
        self._got_bytes = False
        # the caller asked for Connection: close
        self._last = False
        self._paused = False
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def response(self) -> WireResponse | None:
        ref = self._response
        return ref() if ref is not None else None

    @response.setter
    def response(self, response: WireResponse | None) -> None:
        self._response = weakref.ref(response) if response is not None else None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # bytes nobody asked for (on an idle connection): it cannot be trusted again
            return
        self._got_bytes = True
        self._last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self._fail(self._invalid("The answer's headers are too large"), close=True)
            else:
                # a bug of ours in a callback, not the upstream's: reported as what it is
                self._fail(cause or exc, close=True)
        except httptools.HttpParserUpgrade:
            self._fail(self._invalid("The upstream switched protocols"), close=True)
        except httptools.HttpParserError as exc:
            self._fail(self._invalid(f"Invalid HTTP answer: {exc}"), close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.pool._lost(self)
        response = self.response
        if self.head is not None and not self.head.done():
            if not self._got_bytes:
                self.head.set_exception(_Closed())
            else:
                self.head.set_exception(aiohttp.ServerDisconnectedError())
            self.response = None
        elif response is not None:
            self.response = None
            if self._until_eof:
                response._finish()
            else:
                response._finish(aiohttp.ClientPayloadError("Response payload is not completed"))

    # llhttp callbacks

    def on_message_begin(self) -> None:
        if self.response is None:
            self.close()  # an answer nobody asked for (after a complete one): the connection is out of step
        self._header_list = []
        self._head_bytes = 0
        self._reason = None

    def on_status(self, status: bytes) -> None:
        self._reason = status.decode("utf-8", "surrogateescape")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES or len(self._header_list) >= MAX_HEADERS:
            raise _HeadTooLarge()
        self._header_list.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self._informational = True  # 100 Continue, 103 Early Hints: the answer is still to come
            return
        response = self.response
        head = self.head
        if response is None or head is None or head.done():
            return
        headers = CIMultiDictProxy(CIMultiDict(self._header_list))
        response.status, response.reason, response.headers = status, self._reason, headers
        length = headers.get("Content-Length")
        if length is not None and length.isdigit():
            response.content_length = int(length)
        self._until_eof = (
            length is None
            and "chunked" not in headers.get("Transfer-Encoding", "").lower()
            and status not in (204, 304)
            and response.method != "HEAD"
        )
        response._connection = self
        # the future is let go of: it would hold the answer (held weakly here) for as long as the body flows
        self.head = None
        head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is None:
            return
        response._feed(body)
        if response._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self.response
        self.response = self.head = None
        self._cancel_timer()
        reusable = (
            not self._last
            and self.parser.should_keep_alive()
            and self.transport is not None
            and self.transport.get_write_buffer_size() == 0
        )
        if response is None:
            self.close()
            return
        response._finish()
        # the answer's rest is the response's now: the connection reads again for its next exchange
        self.resume()
        if reusable:
            self.pool._park(self)
        else:
            self.close()

    # the exchange

    async def exchange(self, method: str, url: URL, head: bytes, body: bytes | None, last: bool) -> WireResponse:
        assert self.transport is not None
        self._last = last
        response = WireResponse(method, url)
        self.response = response
        self.head = self.loop.create_future()
        self._got_bytes = False
        self._until_eof = False
        self._last_read = self.loop.time()
        if body and len(body) <= 65536:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            if body:
                self.transport.write(body)
        self._arm_timer()
        return await self.head

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self._last_read = self.loop.time()
            self.transport.resume_reading()

    def abandon(self) -> None:
        """The caller let go of the answer before its end: the rest is never read."""
        self.response = None
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timer()
            self.pool._lost(self)
            transport = self.transport
            if transport is not None:
                # request bytes still waiting to be written would hold the socket open: dropped
                if transport.get_write_buffer_size():
                    transport.abort()
                else:
                    transport.close()

    # the read timeout: the longest silence while an answer is due (not while the caller reads slowly)

    def _arm_timer(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_at(self._last_read + self.pool.read_timeout, self._check_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timer(self) -> None:
        self._timer = None
        if self.response is None and self.head is None:
            return
        due = self._last_read + self.pool.read_timeout
        if self._paused or due > self.loop.time():
            self._timer = self.loop.call_at(
                max(due, self.loop.time() + 0.001) if not self._paused else self.loop.time() + 1.0,
                self._check_timer,
            )
            return
        self._fail(aiohttp.SocketTimeoutError("Timeout on reading data from socket"), close=True)

    def _fail(self, error: BaseException, *, close: bool) -> None:
        head, response = self.head, self.response
        self.head = self.response = None
        if head is not None and not head.done():
            head.set_exception(error)
        elif response is not None:
            response._finish(error)
        if close:
            self.close()

    def _invalid(self, message: str) -> aiohttp.ClientResponseError:
        response = self.response
        url = response.url if response is not None else URL()
        method = response.method if response is not None else "GET"
        info = RequestInfo(url, method, CIMultiDictProxy(CIMultiDict()), url)
        return aiohttp.ClientResponseError(info, (), message=message)


class WirePool:
    """A policy's connections, by (scheme, host, port)."""

    def __init__(
        self,
        resolver: PinningResolver,
        *,
        loop: asyncio.AbstractEventLoop,
        connect_timeout: float,
        read_timeout: float,
        size: int,
        per_host: int,
        keepalive: float,
        dns_ttl: float,
        ssl_context: ssl.SSLContext,
    ) -> None:
        self.resolver = resolver
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.size = size
        self.per_host = per_host
        self.keepalive = keepalive
        self.dns_ttl = dns_ttl
        self.ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: dict[tuple[str, str, int], int] = {}
        self._total = 0
        self._all: set[_Connection] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Future[list[str]]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, method: str, url: URL, headers: CIMultiDict[str], body: bytes | None) -> WireResponse:
        if self._closed:
            raise RuntimeError("Session is closed")
        host = url.raw_host
        assert host is not None
        port = url.port or (443 if url.scheme == "https" else 80)
        key = (url.scheme, host, port)
        head = _head(method, url, headers, body)
        last = "connection" in headers and headers["connection"].lower() == "close"
        retry_stale = method in _IDEMPOTENT
        while True:
            connection, reused = await self._acquire(key)
            try:
                return await connection.exchange(method, url, head, body, last)
            except _Closed:
                if reused and retry_stale:
                    retry_stale = False
                    continue
                raise aiohttp.ServerDisconnectedError() from None
            except asyncio.CancelledError:
                connection.abandon()
                raise

    def clear_dns_cache(self) -> None:
        self._dns.clear()

    async def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._all):
            connection.close()
        self._idle.clear()

    # the pool

    def _pooled(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    def _park(self, connection: _Connection) -> None:
        if self._closed:
            connection.close()
            return
        connection.idle_since = self.loop.time()
        self._idle.setdefault(connection.key, []).append(connection)
        if self._waiters:
            self._wake_all()
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.keepalive / 2, self._sweep_idle)

    def _lost(self, connection: _Connection) -> None:
        """A connection closed (by either side): it no longer counts against the limits."""
        if connection.counted:
            connection.counted = False
            self._all.discard(connection)
            self._total -= 1
            self._open[connection.key] -= 1
            idle = self._idle.get(connection.key)
            if idle and connection in idle:
                idle.remove(connection)
            self._wake_all()

    def _wake_all(self) -> None:
        """Every waiting caller looks again (a connection freed for one host may be what another host's
        caller waits for, through eviction): waiters exist only while the pool is at its limits."""
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _sweep_idle(self) -> None:
        self._sweep = None
        expired = self.loop.time() - self.keepalive
        left = False
        for idle in list(self._idle.values()):
            for connection in [c for c in idle if c.idle_since <= expired]:
                connection.close()
            left = left or bool(idle)
        if left and not self._closed:
            self._sweep = self.loop.call_later(self.keepalive / 2, self._sweep_idle)

    async def _acquire(self, key: tuple[str, str, int]) -> tuple[_Connection, bool]:
        """An idle connection to the host (and True), else a new one once it fits the pool's limits
        (closing an idle connection to another host when the pool is full of them)."""
        while True:
            connection = self._pooled(key)
            if connection is not None:
                return connection, True
            if self._open.get(key, 0) < self.per_host and (self._total < self.size or self._evict_idle()):
                return await self._connect(key), False
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_all()  # the wake-up this caller got goes to the others
                raise

    def _evict_idle(self) -> bool:
        oldest: _Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        oldest.close()
        return True

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        self._total += 1
        self._open[key] = self._open.get(key, 0) + 1
        connection = _Connection(self, key)
        connection.counted = True
        self._all.add(connection)
        try:
            async with asyncio.timeout(self.connect_timeout):
                addresses = await self._resolve(host, port)
                failure = ConnectionKey(host, port, scheme == "https", True, None, None, None)
                infos: list[aiohappyeyeballs.AddrInfoType] = [
                    (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))
                    if ":" in address
                    else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
                    for address in addresses
                ]
                if not infos:
                    raise aiohttp.ClientConnectorError(failure, OSError(f"no address for {host}"))
                try:
                    # as aiohttp: the next address is tried after 250 ms, families interleaved, so an
                    # address that swallows the connection (an IPv6 route to nowhere) costs 250 ms, not the call
                    sock = await aiohappyeyeballs.start_connection(
                        infos, happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY, interleave=1, loop=self.loop
                    )
                except OSError as exc:
                    raise aiohttp.ClientConnectorError(failure, exc) from exc
                try:
                    await self.loop.create_connection(
                        lambda: connection,
                        sock=sock,
                        ssl=self.ssl_context if scheme == "https" else None,
                        server_hostname=host.strip("[]") if scheme == "https" else None,
                    )
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        sock.close()
                    raise aiohttp.ClientConnectorError(failure, exc) from exc
        except TimeoutError as exc:
            self._lost(connection)
            raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {scheme}://{host}:{port}") from exc
        except BaseException:
            self._lost(connection)
            raise
        return connection

    async def _resolve(self, host: str, port: int) -> list[str]:
        """The checked addresses of a name (cached for the DNS TTL); calls that need the same name
        meanwhile share one lookup."""
        literal = host.strip("[]")
        if _is_address(literal):
            return [literal]
        key = (host, port)
        cached = self._dns.get(key)
        if cached is not None and cached[0] > self.loop.time():
            return cached[1]
        pending = self._resolving.get(key)
        if pending is None:
            pending = self._resolving[key] = asyncio.ensure_future(self._lookup(host, port))
            pending.add_done_callback(functools.partial(self._looked_up, key))
        # shielded: a caller that leaves does not cancel the lookup the others wait for
        return await asyncio.shield(pending)

    async def _lookup(self, host: str, port: int) -> list[str]:
        results = await self.resolver.resolve(host, port, socket.AF_UNSPEC)
        addresses = [result["host"] for result in results]
        self._dns[(host, port)] = (self.loop.time() + self.dns_ttl, addresses)
        return addresses

    def _looked_up(self, key: tuple[str, int], done: asyncio.Future[list[str]]) -> None:
        if self._resolving.get(key) is done:
            del self._resolving[key]
        if not done.cancelled():
            done.exception()  # retrieved: a refusal every caller left behind is not reported as unseen


def _is_address(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


def _head(method: str, url: URL, headers: CIMultiDict[str], body: bytes | None) -> bytes:
    """The request line and headers, as aiohttp would send them for this request: Host first, the
    caller's headers in their order, Accept and User-Agent when the caller set none, and the body's
    length. A header that would split the head (CR or LF) is refused, as aiohttp does."""
    path = url.raw_path_qs or "/"
    lines = [method, " ", path, " HTTP/1.1\r\nHost: ", _host_header(url, headers), "\r\n"]
    accept = agent = False
    for name, value in headers.items():
        lower = name.lower()
        if lower in _FRAMING:
            continue
        if not _CRLF.isdisjoint(name) or not _CRLF.isdisjoint(value):
            raise ValueError(
                "Newline or carriage return character detected in HTTP status message or header. "
                "This is a potential security issue."
            )
        if lower == "accept":
            accept = True
        elif lower == "user-agent":
            agent = True
        lines += (name, ": ", value, "\r\n")
    if not accept:
        lines.append("Accept: */*\r\n")
    if not agent:
        lines += ("User-Agent: ", USER_AGENT, "\r\n")
    if body is not None:
        lines += ("Content-Length: ", str(len(body)), "\r\n")
    elif method not in _BODILESS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


def _host_header(url: URL, headers: CIMultiDict[str]) -> str:
    given = headers.get("Host")
    if given is not None and _CRLF.isdisjoint(given):
        return given
    host = url.raw_host or ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if url.explicit_port and not url.is_default_port():
        return f"{host}:{url.port}"
    return host


__all__ = ["USER_AGENT", "WirePool", "WireResponse", "wire_eligible"]
