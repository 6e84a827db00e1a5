"""Outgoing-webhook pieces free of I/O: the bodies jobs makes (§7.2, §3.7) and their event ids, the
bytes on the wire and their signatures, the back-off, how an answer is judged, the settings cache, and
the circuit breaker over the in-process store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nango.errors import ServiceUnavailable
from nango.jobs.args import TaskArgs
from nango.jobs.client import webhook_from_pb, webhook_to_pb
from nango.jobs.models import FunctionFailure, ModelResult, OutgoingWebhook, SyncJob, SyncJobStatus, SyncJobType
from nango.jobs.settings import JobsSettings
from nango.jobs.webhooks import payloads
from nango.jobs.webhooks.breaker import CircuitBreaker, Gate
from nango.jobs.webhooks.config import DeliveryConfig
from nango.jobs.webhooks.delivery import Attempt, Verdict
from nango.jobs.webhooks.settings_cache import SettingsCache
from nango.jobs.webhooks.signing import request_headers, stable_json
from nango.kv import MemoryKV
from nango.runner.client import FunctionType
from nango.server.client import WebhookSettings

STARTED = datetime(2026, 11, 27, 9, 30, 1, 234567, tzinfo=UTC)
ENDED = STARTED + timedelta(seconds=3)


def args(variant: str = "base", kind: FunctionType = FunctionType.SYNC) -> TaskArgs:
    return TaskArgs(
        kind=kind,
        environment_id=7,
        nango_connection_id=11,
        connection_id="alice",
        provider_config_key="crm",
        function="contacts",
        sync_id=str(uuid.uuid4()),
        variant=variant,
    )


def job(results: tuple[ModelResult, ...] = (), *, kind: SyncJobType = SyncJobType.INCREMENTAL) -> SyncJob:
    return SyncJob(1, str(uuid.uuid4()), str(uuid.uuid4()), kind, SyncJobStatus.SUCCESS, results, STARTED, ENDED)


def test_sync_success_bodies_one_per_model_with_changes() -> None:
    ran = job((ModelResult("Contact", 2, 1, 0), ModelResult("Deal", 0, 0, 0)), kind=SyncJobType.FULL)
    bodies = payloads.sync_success_bodies(args(), ran, ["Contact", "Deal", "Note"], always=False)
    assert bodies == [
        (
            "Contact",
            {
                "from": "nango",
                "type": "sync",
                "connectionId": "alice",
                "providerConfigKey": "crm",
                "syncName": "contacts",
                "syncVariant": "base",
                "model": "Contact",
                "syncType": "INITIAL",
                "success": True,
                "responseResults": {"added": 2, "updated": 1, "deleted": 0},
                "modifiedAfter": "2026-11-27T09:30:01.234Z",
                "queryTimeStamp": "2026-11-27T09:30:01.234Z",
            },
        )
    ]
    every = payloads.sync_success_bodies(args(), ran, ["Contact", "Deal", "Note"], always=True)
    assert [model for model, _ in every] == ["Contact", "Deal", "Note"]
    assert every[2][1]["responseResults"] == {"added": 0, "updated": 0, "deleted": 0}


def test_variant_models_are_named_as_declared_and_types_as_nango_sends_them() -> None:
    ran = job((ModelResult("Contact::emea", 1, 0, 0), ModelResult("Contact", 0, 1, 0)), kind=SyncJobType.WEBHOOK)
    ((model, body),) = payloads.sync_success_bodies(args("emea"), ran, ["Contact"], always=False)
    assert (model, body["syncVariant"], body["syncType"]) == ("Contact", "emea", "WEBHOOK")
    assert body["responseResults"] == {"added": 1, "updated": 1, "deleted": 0}
    assert payloads.SYNC_TYPES[SyncJobType.INCREMENTAL] == "INCREMENTAL"


def test_sync_error_and_async_action_bodies() -> None:
    failed = payloads.sync_error_body(
        args(), job(), ["Contact", "Deal"], FunctionFailure("script_error", "boom", payload={"secret": "no"})
    )
    assert failed == {
        "from": "nango",
        "type": "sync",
        "connectionId": "alice",
        "providerConfigKey": "crm",
        "syncName": "contacts",
        "syncVariant": "base",
        "model": "Contact,Deal",
        "syncType": "INCREMENTAL",
        "success": False,
        "error": {"type": "script_error", "description": "boom"},
        "startedAt": "2026-11-27T09:30:01.234Z",
        "failedAt": "2026-11-27T09:30:04.234Z",
    }
    action = payloads.async_action_body(args(kind=FunctionType.ACTION), "abc")
    assert action == {
        "type": "async_action",
        "from": "nango",
        "connectionId": "alice",
        "providerConfigKey": "crm",
        "payload": {"id": "abc", "statusUrl": "/action/abc"},
    }


def test_event_ids_are_stable_per_task_and_part() -> None:
    task = str(uuid.uuid4())
    assert payloads.event_id(task, "sync:Contact") == payloads.event_id(task, "sync:Contact")
    assert payloads.event_id(task, "sync:Contact") != payloads.event_id(task, "sync:Deal")
    assert payloads.event_id(task, "sync:Contact") != payloads.event_id(str(uuid.uuid4()), "sync:Contact")
    uuid.UUID(payloads.event_id(task, "x"))


def test_body_is_stable_and_signed_as_the_sdk_checks_it() -> None:
    text = stable_json({"b": 1, "a": {"d": [1, "é"], "c": None}})
    assert text == '{"a":{"c":null,"d":[1,"é"]},"b":1}'
    assert stable_json({"s": "\ud800"}) == '{"s":"\\ud800"}'
    with pytest.raises(ValueError, match="JSON"):
        stable_json({"n": float("nan")})
    body = text.encode()
    headers = request_headers(
        "key-1", body, "evt-1", {"X-Hub-Signature": "sha1=x", "Content-Type": "text/plain", "x-nango-hmac-sha256": "f"}
    )
    assert headers["X-Nango-Hmac-Sha256"] == hmac.new(b"key-1", body, hashlib.sha256).hexdigest()
    assert headers["X-Nango-Signature"] == hashlib.sha256(b"key-1" + body).hexdigest()
    assert headers["X-Nango-Delivery-Id"] == "evt-1"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Hub-Signature"] == "sha1=x"
    assert "x-nango-hmac-sha256" not in headers


def test_backoff_doubles_from_three_seconds_up_to_the_cap() -> None:
    config = DeliveryConfig()
    waits = [config.backoff(n).total_seconds() for n in range(1, 12)]
    assert waits == [3, 6, 12, 24, 48, 96, 192, 300, 300, 300, 300]
    assert config.lease > config.timeout
    assert DeliveryConfig(retry_max_delay=timedelta(0)).backoff(5) == timedelta(0)


@pytest.mark.parametrize(
    ("status", "error", "verdict", "reached"),
    [
        (200, None, Verdict.DELIVERED, True),
        (204, None, Verdict.DELIVERED, True),
        (500, None, Verdict.RETRY, False),
        (503, None, Verdict.RETRY, False),
        (429, None, Verdict.RETRY, False),
        (400, None, Verdict.REFUSED, True),
        (410, None, Verdict.REFUSED, True),
        (302, None, Verdict.REFUSED, True),
        (None, "timeout", Verdict.RETRY, False),
        (None, "network_error", Verdict.RETRY, False),
        (None, "webhook_url_denied", Verdict.REFUSED, False),
        (None, "invalid_url", Verdict.REFUSED, False),
    ],
)
def test_answers_are_judged_as_nango_does_with_429_retried(
    status: int | None, error: str | None, verdict: Verdict, reached: bool
) -> None:
    attempt = Attempt(STARTED, 5, status=status, error=error)
    assert (attempt.verdict, attempt.reached) == (verdict, reached)


def test_outgoing_webhook_round_trips_through_protobuf() -> None:
    webhook = OutgoingWebhook("e1", 3, "forward", {"é": [1, 2]}, ("https://a", "https://b"), {"X-A": "1"}, "c", "p")
    assert webhook_from_pb(webhook_to_pb(webhook)) == webhook
    broken = webhook_to_pb(webhook)
    broken.body_json = b"{nope"
    with pytest.raises(ValueError, match="Expecting"):
        webhook_from_pb(broken)


class Source:
    def __init__(self) -> None:
        self.calls = 0
        self.key = "k1"
        self.fail = False

    async def get_webhook_settings(self, environment_id: int, nango_connection_id: int = 0) -> WebhookSettings:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise ServiceUnavailable("server down")
        return WebhookSettings("dev", "https://a", "", True, True, True, False, True, self.key)


async def test_settings_are_cached_at_most_two_seconds_and_shared_by_concurrent_askers() -> None:
    now = [100.0]
    source = Source()
    cache = SettingsCache(source, ttl=10, clock=lambda: now[0])
    assert cache.ttl == 2.0
    first = await asyncio.gather(*(cache.get(7) for _ in range(5)))
    assert {s.signing_key for s in first} == {"k1"}
    assert source.calls == 1
    source.key = "k2"
    now[0] += 1.9
    assert (await cache.get(7)).signing_key == "k1"
    now[0] += 0.2
    assert (await cache.get(7)).signing_key == "k2"
    await cache.get(7, 11)
    assert source.calls == 3
    source.fail = True
    now[0] += 3
    with pytest.raises(ServiceUnavailable):
        await cache.get(7)
    source.fail = False
    assert (await cache.get(7)).signing_key == "k2"


async def test_breaker_opens_after_failures_in_the_window_and_one_probe_decides() -> None:
    kv = MemoryKV()
    breaker = CircuitBreaker(kv, failures=3, window=timedelta(seconds=10), cooldown=timedelta(milliseconds=300))
    url = "https://customer.example/hooks"
    assert (await breaker.admit(url)).gate is Gate.CLOSED
    assert not await breaker.failed(url, probe=False)
    assert not await breaker.succeeded(url, probe=False)
    assert not await breaker.failed(url, probe=False)
    assert await breaker.failed(url, probe=False)
    admission = await breaker.admit(url)
    assert admission.gate is Gate.OPEN
    assert timedelta(0) < admission.retry_in <= timedelta(milliseconds=300)
    assert breaker.open_here(url) is not None
    await asyncio.sleep(0.35)
    assert breaker.open_here(url) is None
    assert (await breaker.admit(url)).gate is Gate.PROBE
    assert (await breaker.admit(url)).gate is Gate.OPEN
    # the probe failed: another cool-down, then another probe
    assert await breaker.failed(url, probe=True)
    assert (await breaker.admit(url)).gate is Gate.OPEN
    await asyncio.sleep(0.35)
    assert (await breaker.admit(url)).gate is Gate.PROBE
    assert await breaker.succeeded(url, probe=True)
    assert (await breaker.admit(url)).gate is Gate.CLOSED
    # other URLs never noticed
    assert (await breaker.admit("https://other.example/")).gate is Gate.CLOSED
    await kv.close()


def test_delivery_settings_read_nango_names() -> None:
    settings = JobsSettings.model_validate(
        {
            "NANGO_INTERNAL_TOKEN": "0123456789abcdef0123",
            "NANGO_WEBHOOK_TIMEOUT_MS": "1500",
            "NANGO_WEBHOOK_RETRY_ATTEMPTS": "4",
            "NANGO_WEBHOOK_RETRY_MAX_DELAY_SECONDS": "30",
            "NANGO_WEBHOOK_CIRCUIT_COOLDOWN_SECONDS": "5",
        }
    )
    config = settings.delivery_config()
    assert (config.timeout, config.attempts, config.retry_max_delay, config.circuit_cooldown) == (
        timedelta(milliseconds=1500),
        4,
        timedelta(seconds=30),
        timedelta(seconds=5),
    )
    assert config.backoff(9) == timedelta(seconds=30)
