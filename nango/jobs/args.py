"""The arguments of an orchestrator task, as docs/functions.md defines them, read and checked once."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nango.jobs.errors import InvalidTaskArgs
from nango.runner.client import FunctionType

_KINDS = {kind.value: kind for kind in FunctionType}
# the kinds that run a sync's code and therefore need its sync id and a sync job
SYNC_KINDS = frozenset({FunctionType.SYNC, FunctionType.WEBHOOK})


@dataclass(frozen=True)
class Bundle:
    """A deployed function's code, as the server resolved it."""

    id: str
    version: str
    key: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "version": self.version, "key": self.key, "sha256": self.sha256}


@dataclass(frozen=True)
class TaskArgs:
    kind: FunctionType
    environment_id: int
    nango_connection_id: int
    connection_id: str
    provider_config_key: str
    function: str
    sync_id: str | None = None
    variant: str = "base"
    full: bool = False
    empty_cache: bool = False
    # action input, webhook payload or event payload
    input: Any = None
    # actions: the caller polls for the result instead of waiting
    is_async: bool = False
    # the operation the run's log lines belong to, when its creator opened one
    activity_log_id: str = ""
    # syncs: a reconcile pass (docs/functions.md), run without a sync job
    reconcile: bool = False
    # actions: the function's bundle as the server resolved it when the action was triggered
    bundle: Bundle | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind.value,
            "environment_id": self.environment_id,
            "nango_connection_id": self.nango_connection_id,
            "connection_id": self.connection_id,
            "provider_config_key": self.provider_config_key,
            "function": self.function,
            "sync_id": self.sync_id,
            "variant": self.variant,
            "full": self.full,
            "empty_cache": self.empty_cache,
            "input": self.input,
            "async": self.is_async,
            "activity_log_id": self.activity_log_id,
            "reconcile": self.reconcile,
            **({"bundle": self.bundle.to_json()} if self.bundle is not None else {}),
        }


def _positive(args: Mapping[str, Any], name: str) -> int:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidTaskArgs(f"{name} must be a positive integer")
    return value


def _text(args: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = args.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidTaskArgs(f"{name} must be a {'non-empty ' if required else ''}string")
    return value


def _flag(args: Mapping[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise InvalidTaskArgs(f"{name} must be a boolean")
    return value


def parse_task_args(args: Mapping[str, Any]) -> TaskArgs:
    """The task's arguments, or InvalidTaskArgs naming the first one that is wrong."""
    raw_kind = args.get("type")
    kind = _KINDS.get(raw_kind) if isinstance(raw_kind, str) else None
    if kind is None:
        raise InvalidTaskArgs(f"type must be one of {', '.join(sorted(_KINDS))}")
    sync_id: str | None = None
    if kind in SYNC_KINDS:
        raw = _text(args, "sync_id")
        try:
            sync_id = str(uuid.UUID(raw))
        except ValueError:
            raise InvalidTaskArgs("sync_id must be a UUID") from None
    return TaskArgs(
        kind=kind,
        environment_id=_positive(args, "environment_id"),
        nango_connection_id=_positive(args, "nango_connection_id"),
        connection_id=_text(args, "connection_id"),
        provider_config_key=_text(args, "provider_config_key"),
        function=_text(args, "function"),
        sync_id=sync_id,
        variant=_text(args, "variant", required=False) or "base",
        full=_flag(args, "full"),
        empty_cache=_flag(args, "empty_cache"),
        input=args.get("input"),
        is_async=_flag(args, "async"),
        activity_log_id=_text(args, "activity_log_id", required=False),
        reconcile=_reconcile(args, kind),
        bundle=_bundle(args, kind),
    )


def _bundle(args: Mapping[str, Any], kind: FunctionType) -> Bundle | None:
    raw = args.get("bundle")
    if raw is None:
        return None
    if kind is not FunctionType.ACTION or not isinstance(raw, Mapping):
        raise InvalidTaskArgs("bundle is an object, for action tasks only")
    return Bundle(
        id=_text(raw, "id"), version=_text(raw, "version"), key=_text(raw, "key"), sha256=_text(raw, "sha256")
    )


def _reconcile(args: Mapping[str, Any], kind: FunctionType) -> bool:
    reconcile = _flag(args, "reconcile")
    if reconcile and kind is not FunctionType.SYNC:
        raise InvalidTaskArgs("reconcile is for sync tasks only")
    return reconcile


__all__ = ["SYNC_KINDS", "Bundle", "TaskArgs", "parse_task_args"]
