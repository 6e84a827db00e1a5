"""A circuit breaker per destination URL, shared by every jobs replica through the KV store (Redis when
configured, else this process only).

- closed: deliveries are sent; a failure (network, timeout, 5xx, 429) counts in a fixed window, and
  `failures` of them within `window` open the circuit;
- open for `cooldown`: deliveries are postponed to its end, using no attempt;
- then one probe at a time (whoever takes the probe key): its success closes the circuit (and the caller
  wakes the URL's waiting rows), its failure opens it for another cool-down. A circuit never probed
  again is forgotten after `forget_after`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from yarl import URL

from nango.kv import KVStore

log = logging.getLogger(__name__)


class Gate(StrEnum):
    CLOSED = "closed"
    PROBE = "probe"
    OPEN = "open"


@dataclass(frozen=True)
class Admission:
    gate: Gate
    # OPEN: how long to wait before asking again
    retry_in: timedelta = timedelta(0)


class CircuitBreaker:
    def __init__(
        self,
        kv: KVStore,
        *,
        failures: int = 5,
        window: timedelta = timedelta(seconds=10),
        cooldown: timedelta = timedelta(seconds=60),
        probe_timeout: timedelta = timedelta(seconds=30),
        probe_wait: timedelta = timedelta(seconds=2),
        forget_after: timedelta = timedelta(hours=1),
    ) -> None:
        self.kv = kv
        self.failures = failures
        self.window = window.total_seconds()
        self.cooldown = cooldown.total_seconds()
        self.probe_timeout = probe_timeout.total_seconds()
        self.probe_wait = probe_wait
        self.forget_after = forget_after.total_seconds()
        self._owner = secrets.token_hex(8)
        # URLs this process knows to be open, until when (monotonic): no KV round trip per delivery
        self._open_until: dict[str, float] = {}

    @staticmethod
    def _key(url: str, part: str) -> str:
        return f"webhooks:circuit:{hashlib.sha256(url.encode()).hexdigest()[:32]}:{part}"

    def open_here(self, url: str) -> timedelta | None:
        """How long the circuit stays open, when this process knows it is open."""
        until = self._open_until.get(url)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._open_until[url]
            return None
        return timedelta(seconds=left)

    def _remember_open(self, url: str, seconds: float) -> None:
        if len(self._open_until) > 10_000:
            self._open_until.clear()
        self._open_until[url] = time.monotonic() + seconds

    async def admit(self, url: str) -> Admission:
        """May deliveries to `url` be sent now: all of them, one probe, or none for a while?"""
        left = self.open_here(url)
        if left is not None:
            return Admission(Gate.OPEN, left)
        ttl = await self.kv.ttl(self._key(url, "open"))
        if ttl is not None and ttl > 0:
            self._remember_open(url, ttl)
            return Admission(Gate.OPEN, timedelta(seconds=ttl))
        if await self.kv.get(self._key(url, "tripped")) is None:
            return Admission(Gate.CLOSED)
        # cooled down: one probe at a time, across replicas
        if await self.kv.set(self._key(url, "probe"), self._owner, ttl=self.probe_timeout, only_if_absent=True):
            return Admission(Gate.PROBE)
        return Admission(Gate.OPEN, self.probe_wait)

    async def succeeded(self, url: str, *, probe: bool) -> bool:
        """A delivery reached the receiver. True when this closed an open circuit."""
        if not probe:
            return False
        await self.kv.delete(
            self._key(url, "tripped"), self._key(url, "open"), self._key(url, "probe"), self._key(url, "fails")
        )
        self._open_until.pop(url, None)
        log.info("webhook circuit closed", extra={"host": _host(url)})
        return True

    async def failed(self, url: str, *, probe: bool) -> bool:
        """A delivery could not reach the receiver (or it answered 5xx / 429). True when this opened the circuit."""
        if probe:
            await self._open(url)
            await self.kv.delete(self._key(url, "probe"))
            return True
        count = await self.kv.incr(self._key(url, "fails"), ttl=self.window)
        if count < self.failures:
            return False
        await self.kv.delete(self._key(url, "fails"))
        return await self._open(url)

    async def _open(self, url: str) -> bool:
        opened = await self.kv.set(self._key(url, "open"), b"1", ttl=self.cooldown, only_if_absent=True)
        await self.kv.set(self._key(url, "tripped"), b"1", ttl=self.forget_after)
        left = self.cooldown if opened else await self.kv.ttl(self._key(url, "open"))
        self._remember_open(url, left or self.cooldown)
        if opened:
            log.warning("webhook circuit opened", extra={"host": _host(url), "cooldown_seconds": self.cooldown})
        return opened


def _host(url: str) -> str | None:
    """For logs: the host only (a URL's path or query may carry a token)."""
    try:
        return URL(url).host
    except ValueError:
        return None


__all__ = ["Admission", "CircuitBreaker", "Gate"]
