from __future__ import annotations

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
