"""Redis: one connection pool for commands, and one connection that every subscription of the process
shares (a connection per subscriber would exhaust the pool and Redis with many websockets)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError, ResponseError

from nango.errors import InternalError, NangoError, ServiceUnavailable
from nango.kv.base import KVStore, Subscription, millis
from nango.telemetry import redact_text

log = logging.getLogger(__name__)

# Compare-and-delete: only the owner that set the lock may free it, in one round trip.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_MASK = "[REDACTED]"


class RedisKV(KVStore):
    """Failures surface as ServiceUnavailable (InternalError for a command Redis refuses as wrong)."""

    def __init__(self, url: str, *, prefix: str = "nango:", max_connections: int = 50, timeout: float = 5.0) -> None:
        super().__init__(prefix)
        self._target, self._secrets = _describe(url)
        self._timeout = timeout
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # A few quick retries ride out a failover; beyond that the caller hears of it.
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3),
            )
        except ValueError:
            raise ValueError(
                f"invalid Redis URL for {self._target}: expected redis[s]://[[user]:password@]host[:port][/db]"
            ) from None
        self._client = aioredis.Redis.from_pool(pool)
        self._release_script = self._client.register_script(_RELEASE)
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pubsub_lock = asyncio.Lock()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        # One future per SUBSCRIBE sent, in order: Redis confirms them in the order they were sent.
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return redact_text(text)

    def _unavailable(self, exc: BaseException) -> ServiceUnavailable:
        detail = self._scrub(str(exc)) or type(exc).__name__
        return ServiceUnavailable(f"Redis at {self._target} is unavailable: {detail}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (ReadOnlyError, OutOfMemoryError) as exc:
            raise self._unavailable(exc) from exc
        except ResponseError as exc:
            raise InternalError(f"Redis refused the command: {self._scrub(str(exc))}") from exc
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def get(self, key: str) -> bytes | None:
        with self._errors():
            return cast(bytes | None, await self._client.get(self._key(key)))

    async def set(
        self, key: str, value: bytes | str, *, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        px = None if ttl is None else millis(ttl, "ttl")
        with self._errors():
            return bool(await self._client.set(self._key(key), value, px=px, nx=only_if_absent))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        with self._errors():
            return int(await self._client.delete(*(self._key(key) for key in keys)))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        full = self._key(key)
        with self._errors():
            if ttl is None:
                return int(await self._client.incrby(full, amount))
            # MULTI makes create-with-expiry and increment one step: a crash cannot leave a counter without ttl.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(full, 0, px=millis(ttl, "ttl"), nx=True)
                pipe.incrby(full, amount)
                _, value = await pipe.execute()
            return int(value)

    async def ttl(self, key: str) -> float | None:
        with self._errors():
            remaining = int(await self._client.pttl(self._key(key)))
        return None if remaining < 0 else remaining / 1000

    async def try_acquire(self, key: str, owner: str, ttl: float) -> bool:
        px = millis(ttl, "lock ttl")
        with self._errors():
            return bool(await self._client.set(self._key(key), owner, px=px, nx=True))

    async def release(self, key: str, owner: str) -> bool:
        with self._errors():
            return bool(await self._release_script(keys=[self._key(key)], args=[owner]))

    async def publish(self, channel: str, message: bytes | str) -> int:
        with self._errors():
            return int(await self._client.publish(self._key(channel), message))

    async def _attach(self, subscription: Subscription) -> None:
        channel = self._key(subscription.channel)
        async with self._pubsub_lock:
            subscribers = self._subscribers.setdefault(channel, set())
            if not subscribers:
                await self._send_subscribe(channel)
            subscribers.add(subscription)
            ready = self._ready[channel]
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(ready)
        except asyncio.CancelledError:
            await self._detach(subscription)
            raise
        except TimeoutError:
            await self._detach(subscription)
            raise ServiceUnavailable(
                f"Redis at {self._target} did not confirm a subscription within {self._timeout:g}s"
            ) from None
        if subscription._failure is not None:
            raise subscription._failure

    async def _send_subscribe(self, channel: str) -> None:
        """SUBSCRIBE on the shared connection, starting its reader the first time."""
        if self._pubsub is None:
            self._pubsub = self._client.pubsub()
        ready = asyncio.get_running_loop().create_future()
        pending = self._confirmations.setdefault(channel, deque())
        pending.append(ready)
        self._ready[channel] = ready
        try:
            with self._errors():
                await self._pubsub.subscribe(channel)
        except NangoError:
            pending.pop()
            if not pending:
                del self._confirmations[channel]
            del self._ready[channel], self._subscribers[channel]
            raise
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(self._pubsub), name="nango-kv-pubsub")

    async def _read(self, pubsub: PubSub) -> None:
        """Fan messages out to local subscribers until the connection fails beyond redis-py's retries."""
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except Exception as exc:  # any failure must end the subscriptions, not leave them waiting forever
                error = self._unavailable(exc)
                log.warning("redis subscription connection lost", extra={"error": error.message})
                await self._end_subscriptions(error)
                return
            if message is None:
                continue
            if message["type"] == "message":
                for subscription in self._subscribers.get(message["channel"].decode(), ()):
                    subscription._deliver(message["data"])
            elif message["type"] == "subscribe":
                channel = message["channel"].decode()
                pending = self._confirmations.get(channel)
                if pending:
                    confirmed = pending.popleft()
                    if not pending:
                        del self._confirmations[channel]
                    if not confirmed.done():
                        confirmed.set_result(None)

    async def _end_subscriptions(self, failure: NangoError | None) -> None:
        """End every subscription (with `failure`, if any) and drop the shared connection."""
        async with self._pubsub_lock:
            for subscribers in self._subscribers.values():
                for subscription in subscribers:
                    subscription._end(failure)
            # Waiters in _attach wake up, then find their subscription ended.
            for pending in self._confirmations.values():
                for confirmed in pending:
                    if not confirmed.done():
                        confirmed.set_result(None)
            self._subscribers.clear()
            self._ready.clear()
            self._confirmations.clear()
            pubsub, self._pubsub, self._reader = self._pubsub, None, None
        if pubsub is not None:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def _detach(self, subscription: Subscription) -> None:
        channel = self._key(subscription.channel)
        async with self._pubsub_lock:
            subscribers = self._subscribers.get(channel)
            if subscribers is None or subscription not in subscribers:
                return
            subscribers.discard(subscription)
            if subscribers:
                return
            del self._subscribers[channel], self._ready[channel]
            if self._pubsub is None:
                return
            try:
                with self._errors():
                    await self._pubsub.unsubscribe(channel)
            except NangoError as error:
                # The reader sees the same broken connection and ends the other subscriptions.
                log.warning("redis unsubscribe failed", extra={"channel": channel, "error": error.message})

    async def ping(self) -> None:
        with self._errors():
            await self._client.ping()

    async def close(self) -> None:
        reader = self._reader
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader})
        await self._end_subscriptions(None)
        await self._client.aclose()


def _describe(url: str) -> tuple[str, list[str]]:
    """Where the URL points, fit for messages, and the secrets it holds (to mask in any error text)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "?", []
    try:
        target = f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else (parts.path or "?")
    except ValueError:
        target = f"{parts.hostname}"
    found = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    secrets = {variant for secret in found for variant in (secret, unquote(secret)) if variant}
    # Longest first, so a password containing another is masked whole.
    return target, sorted(secrets, key=len, reverse=True)
