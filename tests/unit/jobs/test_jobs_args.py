"""Task arguments as docs/functions.md defines them: read once, every wrong one named."""

from __future__ import annotations

from typing import Any

import pytest

from nango.jobs.args import Bundle, TaskArgs, parse_task_args
from nango.jobs.errors import InvalidTaskArgs
from nango.runner.client import FunctionType

SYNC_ID = "0b7e1a0c-3f3e-4d52-9b8e-5a1f2c3d4e5f"


def sync_args(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "type": "sync",
        "environment_id": 3,
        "nango_connection_id": 42,
        "connection_id": "user-1",
        "provider_config_key": "crm",
        "function": "contacts",
        "sync_id": SYNC_ID,
        "variant": "base",
    }
    args.update(changes)
    return {k: v for k, v in args.items() if v is not ...}


def test_a_scheduled_sync_reads_with_defaults() -> None:
    args = parse_task_args(sync_args())
    assert args == TaskArgs(
        kind=FunctionType.SYNC,
        environment_id=3,
        nango_connection_id=42,
        connection_id="user-1",
        provider_config_key="crm",
        function="contacts",
        sync_id=SYNC_ID,
    )
    assert (args.full, args.empty_cache, args.input, args.is_async, args.activity_log_id) == (
        False,
        False,
        None,
        False,
        "",
    )


def test_every_field_is_read() -> None:
    args = parse_task_args(
        sync_args(
            type="webhook",
            variant="eu",
            full=True,
            empty_cache=True,
            input={"event": "created"},
            activity_log_id="op-1",
            sync_id=SYNC_ID.upper(),
        )
    )
    assert args.kind is FunctionType.WEBHOOK
    assert (args.variant, args.full, args.empty_cache) == ("eu", True, True)
    assert args.input == {"event": "created"}
    assert args.activity_log_id == "op-1"
    assert args.sync_id == SYNC_ID


def test_actions_and_events_need_no_sync() -> None:
    action = parse_task_args(sync_args(type="action", sync_id=..., variant=..., input=[1, 2], **{"async": True}))
    assert (action.kind, action.sync_id, action.input, action.is_async) == (FunctionType.ACTION, None, [1, 2], True)
    event = parse_task_args(sync_args(type="on-event", sync_id=..., function="on_create"))
    assert (event.kind, event.function, event.variant) == (FunctionType.ON_EVENT, "on_create", "base")


def test_a_stored_task_reads_back_the_same() -> None:
    args = parse_task_args(sync_args(full=True, input={"a": 1}, activity_log_id="op"))
    assert parse_task_args(args.to_json()) == args


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"type": "abort"}, "type"),
        ({"type": ["sync"]}, "type"),
        ({"type": ...}, "type"),
        ({"environment_id": 0}, "environment_id"),
        ({"environment_id": "3"}, "environment_id"),
        ({"environment_id": True}, "environment_id"),
        ({"nango_connection_id": -1}, "nango_connection_id"),
        ({"connection_id": ""}, "connection_id"),
        ({"provider_config_key": None}, "provider_config_key"),
        ({"function": 7}, "function"),
        ({"sync_id": ...}, "sync_id"),
        ({"sync_id": "not-a-uuid"}, "sync_id"),
        ({"variant": 1}, "variant"),
        ({"full": "yes"}, "full"),
        ({"empty_cache": 1}, "empty_cache"),
        ({"async": "false"}, "async"),
        ({"activity_log_id": 5}, "activity_log_id"),
    ],
)
def test_wrong_arguments_are_named(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidTaskArgs) as caught:
        parse_task_args(sync_args(**changes))
    assert caught.value.message.startswith(named)
    assert caught.value.instance_code == "invalid_task_args"


def test_an_actions_carried_bundle_is_read_and_written_back() -> None:
    bundle = {"id": "f-1", "version": "3", "key": "bundles/f-1.zip", "sha256": "ab" * 32}
    raw = sync_args(type="action", sync_id=..., variant=...)
    args = parse_task_args({**raw, "bundle": bundle})
    assert args.bundle == Bundle(id="f-1", version="3", key="bundles/f-1.zip", sha256="ab" * 32)
    assert parse_task_args(args.to_json()) == args
    assert parse_task_args(raw).bundle is None
    assert "bundle" not in parse_task_args(raw).to_json()


@pytest.mark.parametrize(
    ("changes", "bundle"),
    [
        ({}, {"id": "f-1", "version": "3", "key": "k", "sha256": "s"}),  # a sync carries none
        ({"type": "action", "sync_id": ...}, "bundles/f-1.zip"),
        ({"type": "action", "sync_id": ...}, {"id": "f-1", "version": "3", "key": "k"}),
        ({"type": "action", "sync_id": ...}, {"id": "f-1", "version": 3, "key": "k", "sha256": "s"}),
    ],
)
def test_a_wrong_bundle_is_named(changes: dict[str, Any], bundle: Any) -> None:
    with pytest.raises(InvalidTaskArgs):
        parse_task_args({**sync_args(**changes), "bundle": bundle})
