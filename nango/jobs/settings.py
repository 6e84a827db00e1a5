from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from nango.config import (
    DatabaseSettings,
    LogsSettings,
    Port,
    ProcessSettings,
    RedisSettings,
    SchemaName,
    ServiceUrls,
    Settings,
)
from nango.jobs.webhooks.config import DeliveryConfig
from nango.outbound import OutboundSettings


class JobsDatabaseSettings(DatabaseSettings):
    jobs_database_url: SecretStr | None = Field(None, validation_alias="JOBS_DATABASE_URL")
    jobs_schema: SchemaName = Field("nango_jobs", validation_alias="JOBS_DATABASE_SCHEMA")
    jobs_pool_max: int = Field(10, ge=1, le=1000, validation_alias="JOBS_DB_POOL_MAX")

    def database(self) -> str:
        """JOBS_DATABASE_URL when set, else the main database."""
        if self.jobs_database_url is not None:
            return self.jobs_database_url.get_secret_value()
        return self.main_database_url()


class ProcessorLoop(BaseModel):
    """One dequeue loop of `JOBS_PROCESSOR_CONFIG`, in Nango's spelling."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    group_key_pattern: str = Field(validation_alias="groupKeyPattern", min_length=1, max_length=255)
    max_concurrency: int = Field(validation_alias="maxConcurrency", ge=1, le=10_000)


# Nango runs 200 of each; a two-core box with one runner of RUNNER_CAPACITY 16 is better served by fewer
DEFAULT_PROCESSOR_CONFIG = (
    ProcessorLoop(group_key_pattern="sync:*", max_concurrency=8),
    ProcessorLoop(group_key_pattern="action:*", max_concurrency=8),
    ProcessorLoop(group_key_pattern="webhook:*", max_concurrency=4),
    ProcessorLoop(group_key_pattern="on-event:*", max_concurrency=4),
)


class WebhookDeliverySettings(Settings):
    """Outgoing webhooks (docs/webhooks.md "Sending"): Nango's names where Nango has one."""

    webhook_timeout_ms: int = Field(20_000, ge=100, le=600_000, validation_alias="NANGO_WEBHOOK_TIMEOUT_MS")
    # attempts of one delivery before it fails for good (Nango: 2; here a receiver may be down ~25 min)
    webhook_retry_attempts: int = Field(20, ge=1, le=100, validation_alias="NANGO_WEBHOOK_RETRY_ATTEMPTS")
    webhook_retry_max_delay_seconds: float = Field(
        900, ge=0, le=86_400, validation_alias="NANGO_WEBHOOK_RETRY_MAX_DELAY_SECONDS"
    )
    # the first retry waits this long, each next one twice as long (Nango's 3 s)
    webhook_retry_base_ms: int = Field(3_000, ge=1, le=3_600_000, validation_alias="NANGO_WEBHOOK_RETRY_BASE_MS")
    # deliveries in flight at once in one jobs process, and how many rows one claim takes
    webhook_concurrency: int = Field(64, ge=1, le=10_000, validation_alias="NANGO_WEBHOOK_CONCURRENCY")
    webhook_batch_size: int = Field(100, ge=1, le=10_000, validation_alias="NANGO_WEBHOOK_BATCH_SIZE")
    # how often an idle loop looks for due rows (an enqueue on the same replica wakes it at once)
    webhook_poll_ms: int = Field(500, ge=10, le=60_000, validation_alias="NANGO_WEBHOOK_POLL_MS")
    # circuit breaker per URL: open after this many failures within the window, probe after the cool-down
    webhook_circuit_failures: int = Field(5, ge=1, le=10_000, validation_alias="NANGO_WEBHOOK_CIRCUIT_FAILURES")
    webhook_circuit_window_seconds: float = Field(
        10, gt=0, le=3_600, validation_alias="NANGO_WEBHOOK_CIRCUIT_WINDOW_SECONDS"
    )
    webhook_circuit_cooldown_seconds: float = Field(
        60, gt=0, le=86_400, validation_alias="NANGO_WEBHOOK_CIRCUIT_COOLDOWN_SECONDS"
    )
    # delivered rows are kept this long (duplicates enqueued meanwhile are recognised), failed ones longer
    webhook_delivered_retention_minutes: int = Field(
        60, ge=0, le=525_600, validation_alias="NANGO_WEBHOOK_DELIVERED_RETENTION_MINUTES"
    )
    webhook_failed_retention_days: int = Field(
        7, ge=0, le=3_650, validation_alias="NANGO_WEBHOOK_FAILED_RETENTION_DAYS"
    )

    def delivery_config(self) -> DeliveryConfig:
        return DeliveryConfig(
            timeout=timedelta(milliseconds=self.webhook_timeout_ms),
            attempts=self.webhook_retry_attempts,
            retry_base=timedelta(milliseconds=self.webhook_retry_base_ms),
            retry_max_delay=timedelta(seconds=self.webhook_retry_max_delay_seconds),
            concurrency=self.webhook_concurrency,
            batch_size=self.webhook_batch_size,
            poll=timedelta(milliseconds=self.webhook_poll_ms),
            circuit_failures=self.webhook_circuit_failures,
            circuit_window=timedelta(seconds=self.webhook_circuit_window_seconds),
            circuit_cooldown=timedelta(seconds=self.webhook_circuit_cooldown_seconds),
            delivered_retention=timedelta(minutes=self.webhook_delivered_retention_minutes),
            failed_retention=timedelta(days=self.webhook_failed_retention_days),
        )


class JobsSettings(
    ProcessSettings,
    JobsDatabaseSettings,
    ServiceUrls,
    RedisSettings,
    LogsSettings,
    OutboundSettings,
    WebhookDeliverySettings,
):
    port: Port = Field(3005, validation_alias="NANGO_JOBS_PORT")
    # JSON: [{"groupKeyPattern": "sync:*", "maxConcurrency": 8}, ...], one dequeue loop each
    processor_config: Annotated[tuple[ProcessorLoop, ...], NoDecode] = Field(
        DEFAULT_PROCESSOR_CONFIG, validation_alias="JOBS_PROCESSOR_CONFIG", min_length=1
    )
    # how long one dequeue waits for a task before asking again (the orchestrator caps it at 30 s)
    dequeue_wait_ms: int = Field(10_000, ge=0, le=30_000, validation_alias="JOBS_DEQUEUE_WAIT_MS")
    # runner heartbeats arriving within this window reach the orchestrator in one call
    heartbeat_batch_ms: int = Field(50, ge=0, le=5_000, validation_alias="JOBS_HEARTBEAT_BATCH_MS")
    # how often tasks whose runner vanished are looked up in the orchestrator and settled
    reconcile_interval_ms: int = Field(5_000, ge=50, le=600_000, validation_alias="JOBS_RECONCILE_INTERVAL_MS")
    # a full runner (StartTask accepted=false) is asked again after this long
    runner_retry_ms: int = Field(1_000, ge=10, le=60_000, validation_alias="JOBS_RUNNER_RETRY_MS")
    # sync-job history older than this is deleted, the latest job of each sync kept (Nango's name)
    delete_old_jobs_max_days: int = Field(31, ge=1, le=3650, validation_alias="CRON_DELETE_OLD_JOBS_MAX_DAYS")

    @field_validator("processor_config", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError('expected JSON such as [{"groupKeyPattern": "sync:*", "maxConcurrency": 8}]') from None
        return value

    @field_validator("processor_config")
    @classmethod
    def _distinct_patterns(cls, value: tuple[ProcessorLoop, ...]) -> tuple[ProcessorLoop, ...]:
        patterns = [loop.group_key_pattern for loop in value]
        if len(set(patterns)) != len(patterns):
            raise ValueError("each groupKeyPattern may appear once")
        return value

    def dequeue_wait(self) -> timedelta:
        return timedelta(milliseconds=self.dequeue_wait_ms)

    def heartbeat_batch(self) -> timedelta:
        return timedelta(milliseconds=self.heartbeat_batch_ms)

    def reconcile_interval(self) -> timedelta:
        return timedelta(milliseconds=self.reconcile_interval_ms)

    def runner_retry(self) -> timedelta:
        return timedelta(milliseconds=self.runner_retry_ms)

    def old_jobs_age(self) -> timedelta:
        return timedelta(days=self.delete_old_jobs_max_days)
