"""persist's domain types: what `client.py` returns and what `rpc.py` hands to the stores."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from nango.errors import InvalidRequest

MODEL_PATTERN = re.compile(r"^[A-Z][a-zA-Z0-9_-]+(::[a-zA-Z0-9_-]+)?$")
MAX_MODEL_LENGTH = 255
MB = 1024 * 1024
# A batch's JSON: under a gRPC message (64 MB) with room to spare, so a refused batch still reaches persist.
MAX_BATCH_BYTES = 48 * MB
# One record's JSON; with the page budget below, a page of records stays well under a gRPC message too.
MAX_RECORD_BYTES = 16 * MB
# A page of records stops once the payloads before its next record reach this.
PAGE_BYTES_BUDGET = 32 * MB


class MergingStrategy(Enum):
    OVERRIDE = "override"
    IGNORE_IF_MODIFIED_AFTER_CURSOR = "ignore_if_modified_after_cursor"


class RecordAction(Enum):
    ADDED = "ADDED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


class CursorPosition(Enum):
    FIRST = "first"
    LAST = "last"


@dataclass(frozen=True)
class RecordScope:
    """The records of one model of one connection; `model` is 'Model' or 'Model::variant'."""

    environment_id: int
    connection_id: int
    model: str

    def __post_init__(self) -> None:
        validate_model(self.model)
        if self.connection_id <= 0:
            raise InvalidRequest("nango_connection_id must be a positive integer")


def validate_model(model: str) -> None:
    if not model:
        raise InvalidRequest("model is required")
    if len(model) > MAX_MODEL_LENGTH or not MODEL_PATTERN.match(model):
        raise InvalidRequest(
            f"model {model[:100]!r} is not a model name: expected 'Model' or 'Model::variant' "
            "(a capital letter, then letters, digits, '_' or '-')"
        )


@dataclass(frozen=True)
class Merging:
    strategy: MergingStrategy = MergingStrategy.OVERRIDE
    # only with IGNORE_IF_MODIFIED_AFTER_CURSOR: records modified after it are left alone
    cursor: str | None = None


@dataclass(frozen=True)
class BatchContext:
    """Where a batch comes from. `generation` (the sync job id) marks the records it carries as seen."""

    sync_id: str | None = None
    generation: int | None = None
    activity_log_id: str | None = None
    merging: Merging = field(default_factory=Merging)


@dataclass(frozen=True)
class RecordSummary:
    """What a batch changed. Key lists are capped (1,000 keys each); the counts are exact."""

    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    added_keys: tuple[str, ...] = ()
    updated_keys: tuple[str, ...] = ()
    deleted_keys: tuple[str, ...] = ()
    # ids that appeared more than once in the batch; the first occurrence won
    non_unique_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchResult:
    summary: RecordSummary
    # what the next batch of the same run should send
    next_merging: Merging


@dataclass(frozen=True)
class OutdatedDeletion:
    deleted: int
    deleted_keys: tuple[str, ...]


@dataclass(frozen=True)
class ReconcileResult:
    """A finished reconcile pass: distinct ids it saw, and the records it soft-deleted."""

    seen: int
    deleted: int
    deleted_keys: tuple[str, ...]


@dataclass(frozen=True)
class RecordQuery:
    cursor: str | None = None
    limit: int = 100
    external_ids: tuple[str, ...] = ()
    modified_after: datetime | None = None
    # a union; empty means every record
    actions: frozenset[RecordAction] = frozenset()


@dataclass(frozen=True)
class RecordPage:
    """One page of records as the public API returns them: `records_json` is ready to send."""

    records_json: bytes
    # None on the last page
    next_cursor: str | None

    def records(self) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = json.loads(self.records_json)
        return value


@dataclass(frozen=True)
class PruneResult:
    count: int
    has_more: bool


@dataclass(frozen=True)
class ClearResult:
    deleted_count: int
    has_more: bool


@dataclass(frozen=True)
class RecordCount:
    connection_id: int
    model: str
    count: int
    size_bytes: int


@dataclass(frozen=True)
class Checkpoint:
    checkpoint: dict[str, Any]
    version: int
    deleted_at: datetime | None = None


__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_RECORD_BYTES",
    "MB",
    "PAGE_BYTES_BUDGET",
    "BatchContext",
    "BatchResult",
    "Checkpoint",
    "ClearResult",
    "CursorPosition",
    "Merging",
    "MergingStrategy",
    "OutdatedDeletion",
    "PruneResult",
    "ReconcileResult",
    "RecordAction",
    "RecordCount",
    "RecordPage",
    "RecordQuery",
    "RecordScope",
    "RecordSummary",
    "validate_model",
]
