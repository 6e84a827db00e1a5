"""The completion event: the seam through which outgoing webhooks (sync results, async actions)
learn that a task ended. Jobs publishes one per task once its result is applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from nango.jobs.args import TaskArgs
from nango.jobs.models import FunctionFailure, SyncJob
from nango.orchestrator.client import Task


@dataclass(frozen=True)
class TaskEnded:
    task_id: str
    # what ran, for which connection (type, function, sync id, async flag…)
    args: TaskArgs
    output: Any = None
    error: FunctionFailure | None = None
    # syncs and webhook runs: the job as it ended, with its status and per-model counts
    sync_job: SyncJob | None = None
    # the orchestrator task as it ended (its retry key, whether a retry follows); None when forgotten
    ended: Task | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


class CompletionPublisher(Protocol):
    """Receives every ended task at least once (a crash between publishing and recording it
    publishes again), so a subscriber deduplicates by `task_id`. An exception makes jobs retry."""

    async def publish(self, event: TaskEnded) -> None: ...


__all__ = ["CompletionPublisher", "TaskEnded"]
