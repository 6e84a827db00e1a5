"""The lean HTTP/1.1 pool behind `OutboundClient.send()`, against upstreams written by hand: framing
(chunked, until the connection closes, informational answers), the request it writes, pooling and
its limits, back-pressure, timeouts and the errors callers handle."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import uvloop
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict
from yarl import URL

from nango.outbound import OutboundClient, OutboundRequest, PoolSettings, server_policy
from nango.outbound.wire import WireResponse

POLICY = server_policy('{"blockLoopback": false}', None)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A TCP server running `handler` per connection; counts connections and those open now."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self.closed.set()
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    return head, (await reader.readexactly(length) if length else b"")


def answering(*answers: bytes, then_close: bool = False) -> Handler:
    """Reads a request and writes the next answer, for as long as there are requests."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers if then_close else iter(lambda: answers[0], None):
            await read_request(reader)
            writer.write(answer)
            await writer.drain()

    return handler


async def get(client: OutboundClient, url: str, **kwargs: object) -> WireResponse:
    response = await client.send(OutboundRequest("GET", URL(url), **kwargs), POLICY)  # type: ignore[arg-type]
    assert isinstance(response, WireResponse)
    return response


async def test_a_chunked_answer_is_decoded_and_its_connection_reused() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    async with Scripted(answering(chunked)) as up, OutboundClient() as client:
        for _ in range(3):
            response = await get(client, up.url + "/c")
            assert (response.status, response.content_length, await response.read()) == (200, None, b"abcdefg")
    assert up.connections == 1


async def test_an_answer_ending_with_its_connection_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"part two")

    async with Scripted(handler) as up, OutboundClient() as client:
        for _ in range(2):
            response = await get(client, up.url)
            assert await response.read() == b"part one, part two"
    assert up.connections == 2


async def test_informational_answers_before_the_answer_are_skipped() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    async with Scripted(answering(early + OK)) as up, OutboundClient() as client:
        response = await get(client, up.url)
        assert (response.status, response.reason, await response.read()) == (200, "OK", b"ok")
        assert "Link" not in response.headers


async def test_the_request_head_it_writes() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            seen.append(head + body)
            writer.write(OK)

    async with Scripted(handler) as up, OutboundClient() as client:
        port = up.url.rsplit(":", 1)[1]
        smuggling = CIMultiDict({"Content-Length": "100", "Transfer-Encoding": "chunked", "X-Key": "k"})
        for method, body in (("POST", None), ("PUT", b"{}"), ("DELETE", None)):
            request = OutboundRequest(method, URL(up.url + "/p?q=1"), headers=smuggling, body=body)
            response = await client.send(request, POLICY)
            await response.read()
        response = await get(client, up.url, headers=CIMultiDict({"Accept": "text/csv", "User-Agent": "mine"}))
        await response.read()
    post, put, delete, plain = (request.decode() for request in seen)
    assert post.startswith(f"POST /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n")
    # the body's own framing, never the caller's: a Content-Length of 0 for a method that carries a body
    assert "Content-Length: 0\r\n" in post
    assert "Transfer-Encoding" not in post
    assert "100" not in post
    assert put.endswith("Content-Length: 2\r\n\r\n{}")
    assert "Content-Length: 0\r\n" in delete
    assert "X-Key: k\r\nAccept: */*\r\nUser-Agent: nango-py/" in post
    assert "Accept: text/csv\r\nUser-Agent: mine\r\n\r\n" in plain
    assert "Content-Length" not in plain


async def test_a_header_that_would_split_the_request_is_never_sent() -> None:
    async with Scripted(answering(OK)) as up, OutboundClient() as client:
        for headers in ({"X-Key": "k\r\nX-Smuggled: 1"}, {"X-Key\n": "k"}):
            with pytest.raises(ValueError, match="Newline or carriage return"):
                await get(client, up.url, headers=CIMultiDict(headers))
    assert up.connections == 0


async def test_a_slow_reader_pauses_the_upstream_and_the_connection_serves_the_next_call() -> None:
    size = 4 * 1024 * 1024

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // 65536):
                writer.write(b"z" * 65536)
                await writer.drain()

    async with Scripted(handler) as up, OutboundClient() as client:
        for _ in range(2):
            response = await get(client, up.url)
            await asyncio.sleep(0.2)
            # the connection stopped reading: what waits in the answer is bounded, the rest is upstream
            assert response._buffered < 1024 * 1024
            received = 0
            async for chunk in response.content.iter_chunked(65536):
                received += len(chunk)
            assert received == size
    assert up.connections == 1


async def test_an_answer_let_go_before_its_end_closes_its_connection() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000
    async with Scripted(answering(big)) as up, OutboundClient() as client:
        response = await get(client, up.url)
        assert await response.content.read(10) == b"x" * 10
        response.release()
        await asyncio.wait_for(up.closed.wait(), 5)
        assert up.open == 0
        response = await get(client, up.url)
        assert response.status == 200
        response.close()
    assert up.connections == 2


async def test_a_caller_cancelled_while_waiting_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers; returns when the client closes the connection

    async with Scripted(handler) as up, OutboundClient() as client:
        waiting = asyncio.ensure_future(get(client, up.url))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(up.closed.wait(), 5)


async def test_connections_per_host_are_capped_and_the_calls_queue() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(OK)

    async with Scripted(handler) as up, OutboundClient(PoolSettings(per_host=2)) as client:

        async def call() -> bytes:
            response = await get(client, up.url)
            return await response.read()

        assert await asyncio.gather(*(call() for _ in range(8))) == [b"ok"] * 8
    assert (up.connections, up.most_open) == (2, 2)


async def test_idle_connections_are_closed_after_the_keepalive() -> None:
    async with Scripted(answering(OK)) as up, OutboundClient(PoolSettings(keepalive=0.2)) as client:
        response = await get(client, up.url)
        await response.read()
        await asyncio.wait_for(up.closed.wait(), 5)
        response = await get(client, up.url)
        assert await response.read() == b"ok"
    assert up.connections == 2


async def test_an_upstream_silent_before_answering_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with Scripted(handler) as up, OutboundClient(PoolSettings(read_timeout=0.2)) as client:
        with pytest.raises(TimeoutError):
            await get(client, up.url)


async def test_errors_are_aiohttps() -> None:
    garbage = answering(b"this is not HTTP\r\n\r\n")
    truncated = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", then_close=True)
    huge_head = answering(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"f" * 70000 + b"\r\n\r\n")
    async with (
        Scripted(garbage) as bad,
        Scripted(truncated) as short,
        Scripted(huge_head) as huge,
        OutboundClient() as client,
    ):
        with pytest.raises(aiohttp.ClientResponseError):
            await get(client, bad.url)
        with pytest.raises(aiohttp.ClientResponseError):
            await get(client, huge.url)
        response = await get(client, short.url)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
        closed = f"http://127.0.0.1:{_unused_port()}"
        with pytest.raises(aiohttp.ClientConnectorError):
            await get(client, closed)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}/", cert
    finally:
        await runner.cleanup()


async def test_https_verifies_the_upstreams_certificate(
    tls_upstream: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_upstream
    async with OutboundClient() as client:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await get(client, url)
        assert isinstance(refused.value.os_error, ssl.SSLCertVerificationError)
    # trusted through the system's own setting (OpenSSL's SSL_CERT_FILE), as aiohttp's client is
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    async with OutboundClient() as client:
        response = await get(client, url)
        assert (response.status, await response.read()) == (200, b"secure")


@pytest.mark.parametrize(
    "scenario",
    [
        test_a_chunked_answer_is_decoded_and_its_connection_reused,
        test_a_slow_reader_pauses_the_upstream_and_the_connection_serves_the_next_call,
        test_a_caller_cancelled_while_waiting_closes_the_connection,
        test_errors_are_aiohttps,
    ],
    ids=lambda scenario: scenario.__name__.removeprefix("test_"),
)
async def test_under_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    """The services run on uvloop, whose transports differ from asyncio's (pause and resume, write buffers)."""
    await asyncio.to_thread(uvloop.run, scenario())


async def test_bytes_sent_on_an_idle_connection_retire_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await asyncio.sleep(0.05)
        writer.write(OK)  # an answer to nothing: the connection is out of step
        await reader.read()

    async with Scripted(handler) as up, OutboundClient() as client:
        response = await get(client, up.url)
        assert await response.read() == b"ok"
        await asyncio.wait_for(up.closed.wait(), 5)


class Answers(AbstractResolver):
    """Answers every lookup with the same addresses, after a moment (as a real lookup takes)."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        await asyncio.sleep(0.05)
        return [
            ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0)
            for address in self.addresses
        ]

    async def close(self) -> None:
        return None


def _swallowing_listener(port: int) -> tuple[socket.socket, list[socket.socket]]:
    """A listener on 127.0.0.2 whose accept queue is full: a new connection attempt gets no answer
    at all (Linux drops the SYN), like an address with a route to nowhere."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.2", port))
    except OSError:
        listener.close()
        raise
    listener.listen(0)
    fillers: list[socket.socket] = []
    for _ in range(8):
        probe = socket.socket()
        probe.setblocking(False)
        probe.connect_ex(("127.0.0.2", port))
        fillers.append(probe)
        if not select.select([], [probe], [], 0.2)[1]:
            return listener, fillers  # this attempt hangs: the queue is full
    raise AssertionError("the listener kept accepting connections")


async def test_an_address_that_swallows_connections_costs_a_moment_not_the_call() -> None:
    # the upstream on 127.0.0.1 and the swallowing listener on 127.0.0.2 share a port: one the system
    # gave the upstream, taken on 127.0.0.2 too when it is free there
    for _ in range(20):
        upstream = await asyncio.start_server(answering(OK), "127.0.0.1", 0)
        port = upstream.sockets[0].getsockname()[1]
        try:
            listener, fillers = _swallowing_listener(port)
            break
        except OSError:
            upstream.close()
    else:
        raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")
    dns = Answers(["127.0.0.2", "127.0.0.1"])
    url = URL(f"http://api.dual.test:{port}/")
    try:
        async with OutboundClient(PoolSettings(connect_timeout=3), dns=lambda: dns) as client:
            started = time.monotonic()
            responses = await asyncio.gather(*(client.send(OutboundRequest("GET", url), POLICY) for _ in range(5)))
            assert [await response.read() for response in responses] == [b"ok"] * 5
            # the second address is tried 250 ms after the first (as aiohttp's happy eyeballs), not at the timeout
            assert time.monotonic() - started < 2
        # five new connections at once, one lookup
        assert dns.lookups == 1
    finally:
        upstream.close()
        for sock in (listener, *fillers):
            sock.close()
