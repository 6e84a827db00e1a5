"""The delivery loop: claims due rows in batches (any number of replicas side by side), signs each with
its environment's current key, POSTs it through the outbound client under the URL policy, and records
the attempt (operations log, then the row: delivered, failed, or due again after a back-off).

What uses no attempt: an open circuit (postponed to the end of its cool-down), a server that cannot say
the signing key (postponed a moment), a replica stopping (its claimed rows are given back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from nango.errors import NangoError, NotFound
from nango.jobs.webhooks.breaker import CircuitBreaker, Gate
from nango.jobs.webhooks.config import DeliveryConfig
from nango.jobs.webhooks.settings_cache import SettingsCache
from nango.jobs.webhooks.signing import DELIVERY_ID_HEADER, USER_AGENT, request_headers
from nango.jobs.webhooks.store import Delivery, DeliveryState, DeliveryStore, Finish
from nango.oplog import Operation
from nango.outbound import OutboundClient, OutboundDenied, OutboundPolicy, OutboundRequest

log = logging.getLogger(__name__)

# the receiver's answer is read up to this much (then dropped): its body is not used
_ANSWER_CAP = 64 * 1024
_CLEAN_EVERY = 60.0
_CLEAN_LIMIT = 5_000
# results are written together when they arrive within this window
_RECORD_WINDOW = 0.01
_BACKOFF_MAX = 5.0


class Verdict(StrEnum):
    DELIVERED = "delivered"
    # network error, timeout, 5xx or 429: tried again after a back-off
    RETRY = "retry"
    # any other answer, or a URL the policy refuses: not tried again
    REFUSED = "refused"


@dataclass(frozen=True)
class Attempt:
    started_at: datetime
    duration_ms: int
    status: int | None = None
    # webhook_url_denied, timeout, network_error, invalid_url
    error: str | None = None
    detail: str = ""

    @property
    def verdict(self) -> Verdict:
        if self.status is not None:
            if 200 <= self.status < 300:
                return Verdict.DELIVERED
            if self.status >= 500 or self.status == 429:
                return Verdict.RETRY
            return Verdict.REFUSED
        if self.error in ("timeout", "network_error"):
            return Verdict.RETRY
        return Verdict.REFUSED

    @property
    def reached(self) -> bool:
        """The receiver answered (whatever it said, except 5xx and 429): its circuit may close."""
        return self.status is not None and self.verdict is not Verdict.RETRY

    def describe(self) -> str:
        if self.status is not None:
            return f"http_{self.status}"
        return f"{self.error}: {self.detail}" if self.detail else str(self.error)


class AttemptLog(Protocol):
    def record(self, operation: Operation) -> bool: ...


def _since(clock: float) -> int:
    return int((time.monotonic() - clock) * 1000)


def _jitter(delay: timedelta) -> timedelta:
    """Up to 10 % more, so that rows postponed together do not all come back in the same instant."""
    return delay * (1 + random.random() / 10)  # noqa: S311


class DeliveryLoop:
    def __init__(
        self,
        store: DeliveryStore,
        settings: SettingsCache,
        breaker: CircuitBreaker,
        outbound: OutboundClient,
        policy: OutboundPolicy,
        config: DeliveryConfig,
        oplog: AttemptLog | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.breaker = breaker
        self.outbound = outbound
        self.policy = policy
        self.config = config
        self.oplog = oplog
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._have_results = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._results: list[Finish] = []
        self._wake_urls: set[str] = set()
        # rows still held per claim, so a stopping loop gives back exactly what it holds
        self._held: dict[str, int] = defaultdict(int)
        self._claimer: asyncio.Task[None] | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._recording = True
        self._cleaned_at = 0.0
        # environments whose settings could not be read last time (logged once per outage)
        self._settings_failing: set[int] = set()
        self.sent = 0

    # ---- lifecycle

    def start(self) -> None:
        self._stopping.clear()
        self._recording = True
        self._recorder = asyncio.create_task(self._record_loop(), name="webhooks-recorder")
        self._claimer = asyncio.create_task(self._claim_loop(), name="webhooks-claimer")

    def wake(self) -> None:
        """New rows may be due (an enqueue on this replica): look now rather than at the next poll."""
        self._woken.set()

    async def stop(self, grace: float) -> None:
        """Claim nothing more, let sends in flight finish for `grace` seconds, give back the rest."""
        self._stopping.set()
        self._woken.set()
        self._slot_freed.set()
        if self._claimer is not None:
            await self._claimer
            self._claimer = None
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace)
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.wait(set(self._inflight))
        self._recording = False
        self._have_results.set()
        if self._recorder is not None:
            await self._recorder
            self._recorder = None
        held = [claim for claim, count in self._held.items() if count > 0]
        if held:
            with contextlib.suppress(Exception):
                await self.store.release(held)
        self._held.clear()

    # ---- claiming

    async def _claim_loop(self) -> None:
        failures = 0
        smallest = max(1, min(self.config.batch_size, self.config.concurrency) // 4)
        while not self._stopping.is_set():
            # cleared before counting: a send ending after the count sets it again
            self._slot_freed.clear()
            free = self.config.concurrency - len(self._inflight)
            want = min(free, self.config.batch_size)
            if want < smallest:
                await self._slot_freed.wait()
                continue
            self._woken.clear()
            try:
                rows = await self.store.claim(want, self.config.lease)
                await self._dispatch(rows)
                await self._clean()
            except Exception:
                failures += 1
                if failures == 1:
                    log.exception("webhook delivery loop failed, retrying")
                await asyncio.sleep(min(0.2 * 2**failures, _BACKOFF_MAX))
                continue
            failures = 0
            if len(rows) < want:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.poll.total_seconds()):
                        await self._woken.wait()

    async def _dispatch(self, rows: Sequence[Delivery]) -> None:
        for row in rows:
            self._held[row.claim] += 1
        by_environment: dict[int, list[Delivery]] = defaultdict(list)
        for row in rows:
            by_environment[row.environment_id].append(row)
        keys = await asyncio.gather(*(self._signing_key(env, group) for env, group in by_environment.items()))
        by_url: dict[str, list[tuple[Delivery, str]]] = defaultdict(list)
        for group, key in zip(by_environment.values(), keys, strict=True):
            if key is not None:
                for row in group:
                    by_url[row.url].append((row, key))
        for url, batch in by_url.items():
            await self._admit(url, batch)

    async def _signing_key(self, environment_id: int, rows: Sequence[Delivery]) -> str | None:
        """The environment's current key; None once its rows are dealt with (postponed or failed)."""
        try:
            key = (await self.settings.get(environment_id)).signing_key
        except NotFound:
            log.warning("webhooks of an unknown environment dropped", extra={"environment_id": environment_id})
            for row in rows:
                self._finish(Finish(row.id, row.claim, DeliveryState.FAILED, error="unknown_environment"))
        except Exception as exc:
            code = exc.instance_code if isinstance(exc, NangoError) else type(exc).__name__
            if environment_id not in self._settings_failing:
                self._settings_failing.add(environment_id)
                log.warning(
                    "webhook settings unavailable, deliveries postponed",
                    extra={"environment_id": environment_id, "code": code},
                )
            for row in rows:
                self._postpone(row, self.config.settings_retry, f"settings_unavailable: {code}")
        else:
            if environment_id in self._settings_failing:
                self._settings_failing.discard(environment_id)
                log.info("webhook settings available again", extra={"environment_id": environment_id})
            return key
        return None

    async def _admit(self, url: str, batch: Sequence[tuple[Delivery, str]]) -> None:
        try:
            admission = await self.breaker.admit(url)
        except NangoError as exc:
            # the breaker's store is down: deliver anyway rather than hold every webhook back
            log.warning("webhook circuit state unavailable", extra={"code": exc.instance_code})
            for row, key in batch:
                self._spawn(row, key, probe=False)
            return
        if admission.gate is Gate.OPEN:
            for row, _ in batch:
                self._postpone(row, _jitter(admission.retry_in), "circuit_open")
            return
        first, *others = batch
        probe = admission.gate is Gate.PROBE
        self._spawn(*first, probe=probe)
        for row, key in others:
            if probe:
                self._postpone(row, self.config.probe_wait, "circuit_probing")
            else:
                self._spawn(row, key, probe=False)

    def _spawn(self, row: Delivery, key: str, *, probe: bool) -> None:
        task = asyncio.create_task(self._deliver(row, key, probe), name=f"webhook-{row.id}")
        self._inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery crashed", exc_info=task.exception())

    # ---- one attempt

    async def _deliver(self, row: Delivery, key: str, probe: bool) -> None:
        try:
            left = None if probe else self.breaker.open_here(row.url)
            if left is not None:
                self._postpone(row, _jitter(left), "circuit_open")
                return
            attempt = await self._send(row, key)
            self.sent += 1
            await self._tell_breaker(row.url, attempt, probe)
            finish = self._outcome(row, attempt)
            self._finish(finish)
            self._log(row, attempt, finish)
        except asyncio.CancelledError:
            # stopping: the row goes back as it was
            self._postpone(row, timedelta(0), None)
            raise
        except Exception:
            log.exception("webhook delivery failed unexpectedly", extra={"delivery_id": row.event_id})
            self._postpone(row, self.config.settings_retry, "internal_error")

    async def _send(self, row: Delivery, key: str) -> Attempt:
        body = row.body.encode()
        headers = request_headers(key, body, row.event_id, row.headers if row.type == "forward" else None)
        started_at, clock = datetime.now(UTC), time.monotonic()
        try:
            request = OutboundRequest("POST", URL(row.url), CIMultiDict(headers), body, follow_redirects=False)
            async with asyncio.timeout(self.config.timeout.total_seconds()):
                response = await self.outbound.send(request, self.policy)
                try:
                    read = 0
                    async for chunk in response.content.iter_chunked(16 * 1024):
                        read += len(chunk)
                        if read > _ANSWER_CAP:
                            break
                finally:
                    response.release()
            return Attempt(started_at, _since(clock), status=response.status)
        except OutboundDenied as exc:
            return Attempt(started_at, _since(clock), error="webhook_url_denied", detail=exc.reason)
        except TimeoutError:
            return Attempt(started_at, _since(clock), error="timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt(started_at, _since(clock), error="network_error", detail=type(exc).__name__)
        except ValueError:
            return Attempt(started_at, _since(clock), error="invalid_url")

    async def _tell_breaker(self, url: str, attempt: Attempt, probe: bool) -> None:
        try:
            if attempt.reached:
                if await self.breaker.succeeded(url, probe=probe):
                    self._wake_urls.add(url)
                    self._have_results.set()
            elif attempt.verdict is Verdict.RETRY:
                await self.breaker.failed(url, probe=probe)
        except NangoError as exc:
            log.warning("webhook circuit state unavailable", extra={"code": exc.instance_code})

    def _outcome(self, row: Delivery, attempt: Attempt) -> Finish:
        verdict = attempt.verdict
        if verdict is Verdict.DELIVERED:
            return Finish(row.id, row.claim, DeliveryState.DELIVERED, used=1, status=attempt.status)
        used = row.attempts + 1
        if verdict is Verdict.RETRY and used < self.config.attempts:
            delay = self.config.backoff(used)
            # while the circuit is open nothing is sent before its probe, and a probe that finds the
            # receiver back wakes the URL's rows: waiting longer than the cool-down would only add delay
            open_left = self.breaker.open_here(row.url)
            if open_left is not None:
                delay = min(delay, open_left)
            delay = _jitter(delay)
            return Finish(
                row.id,
                row.claim,
                DeliveryState.PENDING,
                used=1,
                delay=delay,
                status=attempt.status,
                error=attempt.describe(),
            )
        error = attempt.describe() if verdict is Verdict.REFUSED else f"retries_exhausted: {attempt.describe()}"
        return Finish(row.id, row.claim, DeliveryState.FAILED, used=1, status=attempt.status, error=error)

    # ---- recording

    def _postpone(self, row: Delivery, delay: timedelta, reason: str | None) -> None:
        self._finish(Finish(row.id, row.claim, DeliveryState.PENDING, used=0, delay=delay, error=reason))

    def _finish(self, finish: Finish) -> None:
        self._results.append(finish)
        self._have_results.set()

    async def _record_loop(self) -> None:
        while self._recording or self._results or self._wake_urls:
            await self._have_results.wait()
            if self._recording:
                await asyncio.sleep(_RECORD_WINDOW)
            self._have_results.clear()
            batch, self._results = self._results, []
            urls, self._wake_urls = self._wake_urls, set()
            try:
                await self.store.finish(batch)
                for url in urls:
                    woken = await self.store.wake(url)
                    log.info("webhook receiver is back: waiting deliveries woken", extra={"deliveries": woken})
            except Exception:
                log.exception("could not record webhook attempts, retrying")
                self._results[:0] = batch
                self._wake_urls |= urls
                if not self._recording:
                    return  # stopping: the claims are given back, their leases bound the rest
                await asyncio.sleep(1.0)
                self._have_results.set()
                continue
            for finish in batch:
                self._release_one(finish.claim)
            if urls:
                self.wake()

    def _release_one(self, claim: str) -> None:
        left = self._held.get(claim, 0) - 1
        if left > 0:
            self._held[claim] = left
        else:
            self._held.pop(claim, None)

    def _log(self, row: Delivery, attempt: Attempt, finish: Finish) -> None:
        if self.oplog is None:
            return
        ended = attempt.started_at + timedelta(milliseconds=attempt.duration_ms)
        delivered = finish.state is DeliveryState.DELIVERED
        meta: dict[str, Any] = {
            "delivery_id": row.event_id,
            "webhook_type": row.type,
            "url": row.url,
            "attempt": row.attempts + 1,
            "max_attempts": self.config.attempts,
            "status": attempt.status,
            "duration_ms": attempt.duration_ms,
            "outcome": finish.state.value if finish.state is not DeliveryState.PENDING else "retry",
        }
        if finish.state is DeliveryState.PENDING:
            meta["retry_in_ms"] = int(finish.delay.total_seconds() * 1000)
        self.oplog.record(
            Operation(
                type="webhook",
                action="outgoing",
                state="success" if delivered else "failed",
                level="info" if delivered else ("warn" if finish.state is DeliveryState.PENDING else "error"),
                environment_id=row.environment_id,
                connection_id=row.connection_id or None,
                provider_config_key=row.provider_config_key or None,
                request={
                    "method": "POST",
                    "url": row.url,
                    "headers": {
                        "content-type": "application/json",
                        "user-agent": USER_AGENT,
                        DELIVERY_ID_HEADER: row.event_id,
                    },
                },
                response={"code": attempt.status} if attempt.status is not None else None,
                error=None if delivered else {"code": attempt.error or "http_error", "message": attempt.describe()},
                meta=meta,
                created_at=attempt.started_at,
                started_at=attempt.started_at,
                ended_at=ended,
            )
        )

    async def _clean(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < _CLEAN_EVERY:
            return
        self._cleaned_at = now
        deleted = await self.store.delete_finished(
            delivered_before=self.config.delivered_retention,
            failed_before=self.config.failed_retention,
            limit=_CLEAN_LIMIT,
        )
        if deleted:
            log.info("old webhook deliveries forgotten", extra={"deleted": deleted})


__all__ = ["Attempt", "AttemptLog", "DeliveryLoop", "Verdict"]
