"""Outgoing webhooks' pure parts: destinations, the auth payload, outbox items on the wire and the
relay's hand-over rules, and the PATCH body's validation."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from nango.errors import AlreadyExists, InvalidRequest, ServiceUnavailable
from nango.orchestrator.client import GroupQueueFull, TaskTimeouts
from nango.server.gateway.webhook_settings import SettingsPatch
from nango.server.store.connections import EndUserRow
from nango.server.store.webhooks import OutboxRow
from nango.server.webhooks.auth import AuthError, auth_payload
from nango.server.webhooks.outbox import (
    WEBHOOK_TASK_TIMEOUTS,
    Delivery,
    TaskToCreate,
    _encode,
    _hand_over,
    decode,
)
from nango.server.webhooks.settings import WebhookSettings

KEY = "f" * 64


def _settings(primary: str | None = "https://a.example.com", secondary: str | None = "https://b.example.com") -> Any:
    return WebhookSettings(
        environment_id=1, environment_name="dev", primary_url=primary, secondary_url=secondary, signing_key=KEY
    )


def test_destinations() -> None:
    settings = _settings()
    assert settings.destinations(None) == ("https://a.example.com", "https://b.example.com")
    assert settings.destinations("") == ("https://a.example.com", "https://b.example.com")
    # the override replaces both URLs
    assert settings.destinations("https://o.example.com") == ("https://o.example.com",)
    assert _settings(None, "https://b.example.com").destinations(None) == ("https://b.example.com",)
    assert _settings("https://a.example.com", "https://a.example.com").destinations(None) == ("https://a.example.com",)
    assert _settings(None, None).destinations(None) == ()
    assert _settings(None, None).destinations("https://o.example.com") == ("https://o.example.com",)


def test_override_view_keeps_the_rest() -> None:
    seen = _settings().with_override("https://o.example.com")
    assert (seen.primary_url, seen.secondary_url) == ("https://o.example.com", None)
    assert seen.signing_key == KEY
    assert seen.on_auth_creation is True
    assert seen.on_sync_completion_always is False
    assert _settings().with_override(None) == _settings()


def test_the_signing_key_is_not_in_reprs() -> None:
    assert KEY not in repr(_settings())
    assert KEY in json.dumps(_settings().public())


def test_auth_payload_minimal_and_full() -> None:
    assert auth_payload(
        operation="creation",
        connection_id="c-1",
        provider_config_key="gh",
        auth_mode="OAUTH2",
        provider="github",
        environment_name="dev",
        success=True,
    ) == {
        "from": "nango",
        "type": "auth",
        "operation": "creation",
        "connectionId": "c-1",
        "providerConfigKey": "gh",
        "authMode": "OAUTH2",
        "provider": "github",
        "environment": "dev",
        "success": True,
    }
    end_user = EndUserRow("u-1", "u@example.com", "U", "org-1", "Org", {"plan": "pro"})
    body = auth_payload(
        operation="refresh",
        connection_id="c-1",
        provider_config_key="gh",
        auth_mode=None,
        provider="github",
        environment_name="prod",
        success=False,
        tags={"end_user_id": "u-1"},
        end_user=end_user,
        error=AuthError("invalid_grant", "refresh token revoked"),
    )
    assert body["authMode"] == "unknown"
    assert body["tags"] == {"end_user_id": "u-1"}
    assert body["endUser"] == {
        "endUserId": "u-1",
        "endUserEmail": "u@example.com",
        "organizationId": "org-1",
        "tags": {"plan": "pro"},
    }
    assert body["error"] == {"type": "invalid_grant", "description": "refresh token revoked"}
    bare = auth_payload(
        operation="override",
        connection_id="c",
        provider_config_key="k",
        auth_mode="API_KEY",
        provider="p",
        environment_name="dev",
        success=True,
        end_user=EndUserRow("u-2", None, None, None, None, None),
    )
    assert bare["endUser"] == {"endUserId": "u-2", "tags": {}}
    assert "tags" not in bare
    assert "error" not in bare


def test_outbox_items_round_trip() -> None:
    delivery = Delivery(
        environment_id=4,
        type="forward",
        body={"payload": {"nul": "\u0000", "text": "é"}},
        urls=("https://a.example.com",),
        headers={"x-h": "v"},
        connection_id="c",
        provider_config_key="k",
    )
    kind, environment_id, item = _encode(delivery)
    assert (kind, environment_id) == ("delivery", 4)
    assert decode(OutboxRow(1, kind, environment_id, item, 0)) == delivery
    assert uuid.UUID(delivery.event_id)
    assert Delivery(environment_id=4, type="auth", body={}, urls=()).event_id != delivery.event_id

    task = TaskToCreate(
        name=str(uuid.uuid4()),
        group_key="webhook:environment:4",
        args={"type": "webhook", "environment_id": 4, "input": {"a": 1}},
    )
    kind, environment_id, item = _encode(task)
    assert (kind, environment_id) == ("task", 4)
    assert decode(OutboxRow(2, kind, environment_id, item, 0)) == task
    assert task.timeouts == WEBHOOK_TASK_TIMEOUTS
    assert TaskTimeouts(timedelta(minutes=5), timedelta(minutes=60), timedelta(minutes=5)) == WEBHOOK_TASK_TIMEOUTS


def test_a_task_names_its_environment() -> None:
    assert TaskToCreate(name="n", group_key="webhook:environment:9", args={}).environment_id == 9
    assert TaskToCreate(name="n", group_key="webhook:environment:9", args={"environment_id": 3}).environment_id == 3
    with pytest.raises(ValueError, match="environment_id"):
        _ = TaskToCreate(name="n", group_key="webhooks", args={}).environment_id


def _batch(n: int) -> list[tuple[OutboxRow, int]]:
    return [(OutboxRow(i, "delivery", 1, "{}", 0), i) for i in range(n)]


async def test_hand_over_isolates_refused_items() -> None:
    sent: list[list[int]] = []

    async def send(items: Sequence[int]) -> None:
        sent.append(list(items))
        if 2 in items:
            raise InvalidRequest("bad item")
        if 3 in items and len(items) == 1:
            raise AlreadyExists()

    done, refused = await _hand_over(_batch(5), send)
    assert (sorted(done), refused) == ([0, 1, 3, 4], [2])
    assert sent[0] == [0, 1, 2, 3, 4]
    assert sent[1:] == [[0], [1], [2], [3], [4]]


async def test_hand_over_treats_a_full_queue_as_a_refusal_and_an_outage_as_an_error() -> None:
    async def full(items: Sequence[int]) -> None:
        raise GroupQueueFull()

    assert await _hand_over(_batch(1), full) == ([], [0])

    async def down(items: Sequence[int]) -> None:
        raise ServiceUnavailable()

    with pytest.raises(ServiceUnavailable):
        await _hand_over(_batch(3), down)

    async def exists(items: Sequence[int]) -> None:
        raise AlreadyExists()

    assert await _hand_over(_batch(2), exists) == ([0, 1], [])


@pytest.mark.parametrize(
    "body",
    [
        {"on_sync_error": "true"},
        {"on_sync_error": 0},
        {"on_sync_error": None},
        {"primary_url": "ftp://x.example.com"},
        {"primary_url": "https:/x"},
        {"primary_url": "example.com/hook"},
        {"primary_url": "https://" + "a" * 2048},
        {"signing_key": "k"},
        {"extra": True},
    ],
)
def test_patch_body_refusals(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SettingsPatch.model_validate(body)


def test_patch_body_accepts_and_clears() -> None:
    patch = SettingsPatch.model_validate({"primary_url": "", "secondary_url": None, "on_sync_error": False})
    assert patch.model_dump(include=patch.model_fields_set) == {
        "primary_url": None,
        "secondary_url": None,
        "on_sync_error": False,
    }
    patch = SettingsPatch.model_validate({"primary_url": "http://hooks.example.com:8080/a?b=c"})
    assert patch.primary_url == "http://hooks.example.com:8080/a?b=c"


def test_signing_keys_are_masked_in_logs() -> None:
    from nango.telemetry import JsonFormatter, register_secret

    register_secret(KEY)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"key {KEY}", None, None)
    assert KEY not in JsonFormatter("server").format(record)
