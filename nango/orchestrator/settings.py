from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr

from nango.config import DatabaseSettings, Port, ProcessSettings, SchemaName


class OrchestratorDatabaseSettings(DatabaseSettings):
    orchestrator_database_url: SecretStr | None = Field(None, validation_alias="ORCHESTRATOR_DATABASE_URL")
    orchestrator_schema: SchemaName = Field("nango_scheduler", validation_alias="ORCHESTRATOR_DATABASE_SCHEMA")
    orchestrator_pool_max: int = Field(20, ge=1, le=1000, validation_alias="ORCHESTRATOR_DB_POOL_MAX")

    def database(self) -> str:
        """ORCHESTRATOR_DATABASE_URL when set, else the main database."""
        if self.orchestrator_database_url is not None:
            return self.orchestrator_database_url.get_secret_value()
        return self.main_database_url()


class OrchestratorSettings(ProcessSettings, OrchestratorDatabaseSettings):
    port: Port = Field(3008, validation_alias="NANGO_ORCHESTRATOR_PORT")
    expiring_tick_interval_ms: int = Field(
        1000, ge=10, le=3_600_000, validation_alias="ORCHESTRATOR_EXPIRING_TICK_INTERVAL_MS"
    )
    # Nango ticks every 100 ms; 250 ms keeps a two-core box idle while runs still start promptly
    scheduling_tick_interval_ms: int = Field(
        250, ge=10, le=3_600_000, validation_alias="ORCHESTRATOR_SCHEDULING_TICK_INTERVAL_MS"
    )
    cleaning_tick_interval_ms: int = Field(
        10_000, ge=10, le=86_400_000, validation_alias="ORCHESTRATOR_CLEANING_TICK_INTERVAL_MS"
    )
    cleaning_older_than_days: int = Field(5, ge=1, le=3650, validation_alias="ORCHESTRATOR_CLEANING_OLDER_THAN_DAYS")
    task_created_per_group_count_max: int = Field(
        10_000, ge=1, le=10_000_000, validation_alias="ORCHESTRATOR_TASK_CREATED_PER_GROUP_COUNT_MAX"
    )

    def expiring_tick(self) -> timedelta:
        return timedelta(milliseconds=self.expiring_tick_interval_ms)

    def scheduling_tick(self) -> timedelta:
        return timedelta(milliseconds=self.scheduling_tick_interval_ms)

    def cleaning_tick(self) -> timedelta:
        return timedelta(milliseconds=self.cleaning_tick_interval_ms)

    def cleaning_older_than(self) -> timedelta:
        return timedelta(days=self.cleaning_older_than_days)
