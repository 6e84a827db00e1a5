"""Nango's sync status from the latest job and the schedule, and the checkpoint keys a reset clears."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nango.orchestrator.client import ScheduleState
from nango.server.records import model_key
from nango.server.store.functions import FunctionRow, SyncRow
from nango.server.sync_control import checkpoint_keys, classify

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("job", "schedule", "status"),
    [
        ("RUNNING", ScheduleState.PAUSED, "RUNNING"),
        ("SUCCESS", ScheduleState.PAUSED, "PAUSED"),
        (None, ScheduleState.PAUSED, "PAUSED"),
        ("STOPPED", ScheduleState.STARTED, "ERROR"),
        ("ERROR", ScheduleState.STARTED, "ERROR"),
        ("SUCCESS", ScheduleState.STARTED, "SUCCESS"),
        (None, ScheduleState.STARTED, "SUCCESS"),
        ("SUCCESS", None, "STOPPED"),
        ("SUCCESS", ScheduleState.DELETED, "STOPPED"),
    ],
)
def test_classify(job: str | None, schedule: ScheduleState | None, status: str) -> None:
    assert classify(job, schedule) == status


def test_model_keys_name_the_variant() -> None:
    assert model_key("Contact", None) == "Contact"
    assert model_key("Contact", "base") == "Contact"
    assert model_key("Contact", "eu") == "Contact::eu"


def _sync(variant: str) -> SyncRow:
    return SyncRow("s", 1, 2, "f", "contacts", variant, None, None, NOW)


def _function() -> FunctionRow:
    return FunctionRow(
        id="f",
        environment_id=1,
        integration_id=1,
        provider_config_key="crm",
        name="contacts",
        type="sync",
        version="1",
        description="",
        bundle_key="k",
        bundle_sha256="0",
        module="contacts",
        attribute="contacts",
        frequency="every hour",
        auto_start=True,
        track_deletes=False,
        models=["Contact", "Note"],
        models_json_schema=None,
        input_json_schema=None,
        output_json_schema=None,
        webhook_subscriptions=[],
        event=None,
        scopes=[],
        reconcile_deletes=None,
        enabled=True,
        created_at=NOW,
        updated_at=NOW,
    )


def test_checkpoint_keys_are_the_sdks() -> None:
    assert checkpoint_keys(_sync("base"), _function()) == [
        "sync:contacts:base",
        "sync:contacts:base:trackDeletes:Contact",
        "sync:contacts:base:trackDeletes:Note",
    ]
    assert checkpoint_keys(_sync("eu"), _function())[1] == "sync:contacts:eu:trackDeletes:Contact::eu"
