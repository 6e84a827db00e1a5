"""The completion event: the seam through which outgoing webhooks (sync results, async actions)
learn that a task ended. Jobs publishes one per task once its result is applied."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from nango.jobs.args import TaskArgs
from nango.jobs.models import FunctionFailure, SyncJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskEnded:
    task_id: str
    # what ran, for which connection (type, function, sync id, async flag…)
    args: TaskArgs
    output: Any = None
    error: FunctionFailure | None = None
    # syncs and webhook runs: the job as it ended, with its status and per-model counts
    sync_job: SyncJob | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


class CompletionPublisher(Protocol):
    """Receives every ended task at least once (a crash between publishing and recording it
    publishes again), so a subscriber deduplicates by `task_id`. An exception makes jobs retry."""

    async def publish(self, event: TaskEnded) -> None: ...


class LogPublisher:
    """Until outgoing webhooks subscribe: one log line per ended task."""

    async def publish(self, event: TaskEnded) -> None:
        log.info(
            "task ended",
            extra={
                "task_id": event.task_id,
                "type": event.args.kind.value,
                "function": event.args.function,
                "succeeded": event.succeeded,
                "error_type": event.error.type if event.error is not None else None,
                "sync_job_id": event.sync_job.id if event.sync_job is not None else None,
            },
        )


__all__ = ["CompletionPublisher", "LogPublisher", "TaskEnded"]
