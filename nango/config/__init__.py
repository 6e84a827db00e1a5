"""Settings: one pydantic-settings object per service, built once at start and passed down.

Variables keep Nango's names where Nango has one (a Nango operator's `.env` carries over). A wrong
value stops the process with exit code 2 and one line per problem naming the variable, never a
traceback: see `load()`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from nango.crypto import Keyring, load_or_create_key_file, parse_key

Port = Annotated[int, Field(ge=1, le=65535)]


def _strip_scheme(value: Any) -> Any:
    # Nango's examples write service URLs as http://host:port; gRPC wants host:port.
    if isinstance(value, str):
        for scheme in ("http://", "https://", "grpc://", "dns:///"):
            if value.startswith(scheme):
                return value[len(scheme) :].rstrip("/")
    return value


GrpcTarget = Annotated[str, BeforeValidator(_strip_scheme), Field(min_length=3, pattern=r"^[^\s/]+:\d{1,5}$")]
SchemaName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable and what is expected."""

    exit_code = 2


class Settings(BaseSettings):
    """Base of every settings class: environment only, unknown variables ignored."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)


class ProcessSettings(Settings):
    """What every long-running process needs: logging, shutdown and the internal call token."""

    log_level: Literal["debug", "info", "warn", "warning", "error"] = Field("info", validation_alias="LOG_LEVEL")
    log_format: Literal["json", "text"] = Field("json", validation_alias="NANGO_LOG_FORMAT")
    bind_host: str = Field("0.0.0.0", validation_alias="NANGO_BIND_HOST", min_length=1)
    shutdown_grace_seconds: float = Field(10.0, ge=0, le=600, validation_alias="NANGO_SHUTDOWN_GRACE_SECONDS")
    internal_token: SecretStr = Field(validation_alias="NANGO_INTERNAL_TOKEN", min_length=16)
    data_dir: Path = Field(Path("~/.nango"), validation_alias="NANGO_DATA_DIR")
    mode: Literal["development", "production"] = Field("development", validation_alias="NANGO_ENV")

    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()


class DatabaseSettings(Settings):
    """The main (control-plane) database: `NANGO_DATABASE_URL`, or Nango's `NANGO_DB_*` parts."""

    database_url: SecretStr | None = Field(None, validation_alias="NANGO_DATABASE_URL")
    db_host: str = Field("localhost", validation_alias="NANGO_DB_HOST")
    db_port: Port = Field(5432, validation_alias="NANGO_DB_PORT")
    db_user: str = Field("nango", validation_alias="NANGO_DB_USER")
    db_password: SecretStr = Field(SecretStr("nango"), validation_alias="NANGO_DB_PASSWORD")
    db_name: str = Field("nango", validation_alias="NANGO_DB_NAME")
    db_ssl: bool = Field(False, validation_alias="NANGO_DB_SSL")
    db_schema: SchemaName = Field("nango", validation_alias="NANGO_DB_SCHEMA")
    db_pool_min: int = Field(1, ge=0, le=1000, validation_alias="NANGO_DB_POOL_MIN")
    db_pool_max: int = Field(10, ge=1, le=1000, validation_alias="NANGO_DB_POOL_MAX")
    migrate_at_start: bool = Field(True, validation_alias="NANGO_MIGRATE_AT_START")

    def main_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        password = quote(self.db_password.get_secret_value(), safe="")
        url = (
            f"postgresql://{quote(self.db_user, safe='')}:{password}@{self.db_host}:{self.db_port}/"
            f"{quote(self.db_name, safe='')}"
        )
        return url + ("?sslmode=require" if self.db_ssl else "")


class RedisSettings(Settings):
    """Redis for locks, rate limits and pub/sub; absent means the in-process store."""

    redis_url: SecretStr | None = Field(None, validation_alias="NANGO_REDIS_URL")
    redis_host: str | None = Field(None, validation_alias="NANGO_REDIS_HOST")
    redis_port: Port = Field(6379, validation_alias="NANGO_REDIS_PORT")
    redis_auth: SecretStr | None = Field(None, validation_alias="NANGO_REDIS_AUTH")
    redis_username: str | None = Field(None, validation_alias="NANGO_REDIS_USERNAME")
    redis_key_prefix: str = Field("nango:", validation_alias="NANGO_REDIS_KEY_PREFIX")

    def resolved_redis_url(self) -> str | None:
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        if self.redis_host is None:
            return None
        auth = ""
        if self.redis_auth is not None:
            user = quote(self.redis_username or "", safe="")
            auth = f"{user}:{quote(self.redis_auth.get_secret_value(), safe='')}@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/0"


class BlobSettings(Settings):
    """Object storage: S3 (or an S3-compatible server) when a bucket is set, else a local folder."""

    bucket_name: str | None = Field(
        None, validation_alias=AliasChoices("AWS_BUCKET_NAME", "AWS_INTEGRATIONS_BUCKET_NAME")
    )
    aws_region: str | None = Field(None, validation_alias=AliasChoices("AWS_REGION", "AWS_INTEGRATIONS_REGION"))
    s3_endpoint_url: str | None = Field(None, validation_alias=AliasChoices("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"))
    blob_dir: Path | None = Field(None, validation_alias="NANGO_BLOB_DIR")


class ServiceUrls(Settings):
    """gRPC targets of the other services (Nango's `*_SERVICE_URL` names; `http://` is accepted)."""

    server_url: GrpcTarget = Field("localhost:3004", validation_alias="SERVER_SERVICE_URL")
    orchestrator_url: GrpcTarget = Field("localhost:3008", validation_alias="ORCHESTRATOR_SERVICE_URL")
    jobs_url: GrpcTarget = Field("localhost:3005", validation_alias="JOBS_SERVICE_URL")
    runner_url: GrpcTarget = Field("localhost:3006", validation_alias="RUNNER_SERVICE_URL")
    persist_url: GrpcTarget = Field("localhost:3007", validation_alias="PERSIST_SERVICE_URL")


class LogsSettings(Settings):
    """The operations log: Postgres by default, Elasticsearch when `NANGO_LOGS_ENABLED=true`."""

    logs_enabled: bool = Field(False, validation_alias="NANGO_LOGS_ENABLED")
    logs_schema: SchemaName = Field("nango_logs", validation_alias="NANGO_LOGS_DATABASE_SCHEMA")
    logs_retention_days: int = Field(15, ge=1, le=3650, validation_alias="NANGO_LOGS_ES_RETENTION_DAYS")


class EncryptionSettings(Settings):
    """`NANGO_ENCRYPTION_KEY` seals new data; `NANGO_ENCRYPTION_PREVIOUS_KEYS` (comma-separated)
    still open data sealed before a rotation."""

    encryption_key: SecretStr | None = Field(None, validation_alias="NANGO_ENCRYPTION_KEY")
    previous_encryption_keys: SecretStr | None = Field(None, validation_alias="NANGO_ENCRYPTION_PREVIOUS_KEYS")

    @field_validator("encryption_key")
    @classmethod
    def _valid_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key(value.get_secret_value())
        return value

    @field_validator("previous_encryption_keys")
    @classmethod
    def _valid_previous(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for key in value.get_secret_value().split(","):
                if key.strip():
                    parse_key(key)
        return value

    def keyring(self, *, mode: str, data_dir: Path) -> tuple[Keyring, bool]:
        """The keyring; in development mode without a key, one generated under `data_dir`.

        Returns (keyring, generated_now). Production mode never generates a key: replicas that
        each invented their own could not read each other's data.
        """
        previous = []
        if self.previous_encryption_keys is not None:
            previous = [k.strip() for k in self.previous_encryption_keys.get_secret_value().split(",") if k.strip()]
        if self.encryption_key is not None:
            return Keyring.from_encoded(self.encryption_key.get_secret_value(), previous), False
        if mode == "production":
            raise SettingsError(
                "invalid setting NANGO_ENCRYPTION_KEY: is required when NANGO_ENV=production "
                "(generate one with `openssl rand -base64 32`)"
            )
        key, created = load_or_create_key_file(data_dir / "encryption.key")
        return Keyring.from_encoded(key, previous), created


S = TypeVar("S", bound=Settings)


def load(cls: type[S]) -> S:
    """Build settings from the environment, or raise SettingsError."""
    try:
        return cls()
    except ValidationError as exc:
        raise SettingsError(describe(cls, exc, dict(os.environ))) from None


def _aliases(name: str, info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [a for a in alias.choices if isinstance(a, str)]
    return [name.upper()]


def describe(cls: type[Settings], exc: ValidationError, env: dict[str, str]) -> str:
    """One line per problem: `VARIABLE: what is wrong (got 'value')`; secrets are never echoed."""
    by_alias: dict[str, tuple[str, FieldInfo | None]] = {}
    for field_name, field_info in cls.model_fields.items():
        for alias in _aliases(field_name, field_info):
            by_alias[alias.lower()] = (field_name, field_info)
    lowered = {k.lower(): k for k in env}
    lines = []
    for err in exc.errors():
        head = str(err["loc"][0]) if err["loc"] else "?"
        name, info = by_alias.get(head.lower(), (head, None))
        variable = head
        if info is not None:
            present = [a for a in _aliases(name, info) if a.lower() in lowered]
            variable = lowered[present[0].lower()] if present else _aliases(name, info)[0]
        message = str(err["msg"])
        if err["type"] == "missing":
            message = "is required but not set"
        secret = info is not None and "SecretStr" in str(info.annotation)
        got = "" if secret or err["type"] == "missing" else f" (got {err.get('input')!r})"
        lines.append(f"invalid setting {variable}: {message[0].lower()}{message[1:]}{got}")
    return "; ".join(lines)


__all__ = [
    "BlobSettings",
    "DatabaseSettings",
    "EncryptionSettings",
    "GrpcTarget",
    "LogsSettings",
    "Port",
    "ProcessSettings",
    "RedisSettings",
    "SchemaName",
    "ServiceUrls",
    "Settings",
    "SettingsError",
    "describe",
    "load",
]
