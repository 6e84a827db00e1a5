from __future__ import annotations

from pydantic import Field, SecretStr

from nango.config import DatabaseSettings, LogsSettings, Port, ProcessSettings, SchemaName


class RecordsDatabaseSettings(DatabaseSettings):
    records_database_url: SecretStr | None = Field(None, validation_alias="RECORDS_DATABASE_URL")
    records_schema: SchemaName = Field("nango_records", validation_alias="RECORDS_DATABASE_SCHEMA")
    records_pool_max: int = Field(20, ge=1, le=1000, validation_alias="RECORDS_DATABASE_POOL_MAX")

    def database(self) -> str:
        """RECORDS_DATABASE_URL when set, else the main database."""
        if self.records_database_url is not None:
            return self.records_database_url.get_secret_value()
        return self.main_database_url()


class PersistSettings(ProcessSettings, RecordsDatabaseSettings, LogsSettings):
    port: Port = Field(3007, validation_alias="NANGO_PERSIST_PORT")
