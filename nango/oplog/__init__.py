"""The operations log: what happened to each sync, action, proxy call, OAuth flow… and its lines.

Service-neutral: any service records through `OperationsLog` (from `open_operations_log`), whose
writes are batched off the caller's path; the dashboard and API read through a `LogStore`.
Everything is redacted before it is stored. Postgres (schema `NANGO_LOGS_DATABASE_SCHEMA`) is the
only store for now; `NANGO_LOGS_ENABLED=true` (Elasticsearch) is refused until it is built.
"""

from nango.oplog.log import OperationHandle, OperationsLog, open_operations_log
from nango.oplog.models import (
    Level,
    Message,
    MessageSource,
    MessageType,
    Operation,
    OperationState,
    OperationType,
    OperationUpdate,
)
from nango.oplog.redact import redact, redact_value
from nango.oplog.retention import LogRetention
from nango.oplog.store import LogStore, Period, PostgresLogStore, migrate_logs
from nango.oplog.writer import BatchWriter

__all__ = [
    "BatchWriter",
    "Level",
    "LogRetention",
    "LogStore",
    "Message",
    "MessageSource",
    "MessageType",
    "Operation",
    "OperationHandle",
    "OperationState",
    "OperationType",
    "OperationUpdate",
    "OperationsLog",
    "Period",
    "PostgresLogStore",
    "migrate_logs",
    "open_operations_log",
    "redact",
    "redact_value",
]
