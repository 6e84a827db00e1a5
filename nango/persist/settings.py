from __future__ import annotations

from pydantic import Field, SecretStr

from nango.config import DatabaseSettings, EncryptionSettings, LogsSettings, Port, ProcessSettings, SchemaName


class RecordsDatabaseSettings(DatabaseSettings):
    records_database_url: SecretStr | None = Field(None, validation_alias="RECORDS_DATABASE_URL")
    records_schema: SchemaName = Field("nango_records", validation_alias="RECORDS_DATABASE_SCHEMA")
    records_pool_max: int = Field(20, ge=1, le=1000, validation_alias="RECORDS_DATABASE_POOL_MAX")

    def database(self) -> str:
        """RECORDS_DATABASE_URL when set, else the main database."""
        if self.records_database_url is not None:
            return self.records_database_url.get_secret_value()
        return self.main_database_url()


class PersistSettings(ProcessSettings, RecordsDatabaseSettings, LogsSettings, EncryptionSettings):
    """Record payloads are sealed with the platform keyring, so persist needs NANGO_ENCRYPTION_KEY too."""

    port: Port = Field(3007, validation_alias="NANGO_PERSIST_PORT")
    # unset: payloads are kept for as long as their records
    auto_pruning_days: int | None = Field(None, ge=1, le=36500, validation_alias="PERSIST_AUTO_PRUNING_DAYS")
    auto_pruning_interval_ms: int = Field(
        5000, ge=100, le=3_600_000, validation_alias="PERSIST_AUTO_PRUNING_INTERVAL_MS"
    )
    auto_pruning_limit: int = Field(1000, ge=1, le=100_000, validation_alias="PERSIST_AUTO_PRUNING_LIMIT")
