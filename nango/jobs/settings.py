from __future__ import annotations

from pydantic import Field, SecretStr

from nango.config import DatabaseSettings, Port, ProcessSettings, SchemaName, ServiceUrls


class JobsDatabaseSettings(DatabaseSettings):
    jobs_database_url: SecretStr | None = Field(None, validation_alias="JOBS_DATABASE_URL")
    jobs_schema: SchemaName = Field("nango_jobs", validation_alias="JOBS_DATABASE_SCHEMA")

    def database(self) -> str:
        """JOBS_DATABASE_URL when set, else the main database."""
        if self.jobs_database_url is not None:
            return self.jobs_database_url.get_secret_value()
        return self.main_database_url()


class JobsSettings(ProcessSettings, JobsDatabaseSettings, ServiceUrls):
    port: Port = Field(3005, validation_alias="NANGO_JOBS_PORT")
