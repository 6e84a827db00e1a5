"""The completion publisher of outgoing webhooks: an ended sync (or webhook run) becomes one `sync`
webhook per model, or an error webhook; an ended async action becomes an `async_action` webhook; each
stored in `webhook_deliveries` before `publish` returns. Jobs publishes at least once per task, and the
event ids are derived from the task id, so a second publish stores nothing new."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from nango.errors import NangoError, NotFound
from nango.jobs.args import SYNC_KINDS
from nango.jobs.events import TaskEnded
from nango.jobs.models import FunctionFailure, OutgoingWebhook, SyncJob, SyncJobStatus
from nango.jobs.webhooks import payloads
from nango.jobs.webhooks.settings_cache import SettingsCache
from nango.jobs.webhooks.store import DeliveryStore
from nango.orchestrator.client import TaskState
from nango.runner.client import FunctionType
from nango.server.client import SyncRunContext, WebhookSettings

log = logging.getLogger(__name__)

# what the server answers for a sync whose sync, function, connection or environment is gone
_GONE = frozenset({"unknown_sync", "unknown_connection", "unknown_environment", "not_found"})


class SyncContexts(Protocol):
    async def get_sync_run_context(self, sync_id: str) -> SyncRunContext: ...


class WebhookPublisher:
    def __init__(
        self,
        settings: SettingsCache,
        syncs: SyncContexts,
        store: DeliveryStore,
        *,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.syncs = syncs
        self.store = store
        self.on_enqueued = on_enqueued

    async def publish(self, event: TaskEnded) -> None:
        webhooks = await self.webhooks(event)
        if webhooks and await self.store.enqueue(webhooks) and self.on_enqueued is not None:
            self.on_enqueued()

    async def webhooks(self, event: TaskEnded) -> list[OutgoingWebhook]:
        """What the customer is told about this ended task (nothing, for most tasks)."""
        args = event.args
        if args.kind in SYNC_KINDS and event.sync_job is not None:
            return await self._sync(event, event.sync_job)
        if args.kind is FunctionType.ACTION and args.is_async:
            return await self._async_action(event)
        return []

    async def _settings(self, event: TaskEnded) -> WebhookSettings | None:
        try:
            return await self.settings.get(event.args.environment_id, event.args.nango_connection_id)
        except NotFound:
            # the connection (or its environment) is gone: nobody to tell
            log.info("no webhook for a task of a deleted connection", extra={"task_id": event.task_id})
            return None

    def _webhook(self, event: TaskEnded, kind: str, part: str, body: object, urls: tuple[str, ...]) -> OutgoingWebhook:
        args = event.args
        return OutgoingWebhook(
            event_id=payloads.event_id(event.task_id, part),
            environment_id=args.environment_id,
            type=kind,
            body=body,
            urls=urls,
            connection_id=args.connection_id,
            provider_config_key=args.provider_config_key,
        )

    async def _sync(self, event: TaskEnded, job: SyncJob) -> list[OutgoingWebhook]:
        if job.status is SyncJobStatus.RUNNING:
            return []
        settings = await self._settings(event)
        urls = settings.destinations() if settings is not None else ()
        if settings is None or not urls:
            return []
        args = event.args
        if job.status is SyncJobStatus.SUCCESS:
            always = settings.on_sync_completion_always
            # the models without changes matter only when every model is reported
            models = await self._models(args.sync_id, job) if always else [r.model for r in job.results]
            return [
                self._webhook(event, "sync", f"sync:{model}", body, urls)
                for model, body in payloads.sync_success_bodies(args, job, models, always=always)
            ]
        if not settings.on_sync_error:
            return []
        error = job.error or event.error or FunctionFailure("script_internal_error", "the sync failed")
        body = payloads.sync_error_body(args, job, await self._models(args.sync_id, job), error)
        return [self._webhook(event, "sync", "sync:error", body, urls)]

    async def _models(self, sync_id: str | None, job: SyncJob) -> list[str]:
        """The sync's declared models; those of its results when the sync is gone."""
        if sync_id is not None:
            try:
                return list((await self.syncs.get_sync_run_context(sync_id)).function.models)
            except NangoError as exc:
                if not isinstance(exc, NotFound) and exc.instance_code not in _GONE:
                    raise
        return [r.model for r in job.results]

    async def _async_action(self, event: TaskEnded) -> list[OutgoingWebhook]:
        ended = event.ended
        if ended is None:
            log.warning("async action ended without a task to name it: no webhook", extra={"task_id": event.task_id})
            return []
        if ended.state in (TaskState.FAILED, TaskState.EXPIRED) and ended.retries_left:
            return []  # another attempt follows; the last one tells
        settings = await self._settings(event)
        urls = settings.destinations() if settings is not None else ()
        if settings is None or not urls or not settings.on_async_action_completion:
            return []
        body = payloads.async_action_body(event.args, ended.retry_key)
        return [self._webhook(event, "async_action", "async_action", body, urls)]


__all__ = ["SyncContexts", "WebhookPublisher"]
