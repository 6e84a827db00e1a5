from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pydantic import AliasChoices, Field, SecretStr, field_validator

from nango.config import (
    BlobSettings,
    DatabaseSettings,
    EncryptionSettings,
    LogsSettings,
    Port,
    ProcessSettings,
    RedisSettings,
    ServiceUrls,
)
from nango.outbound import OutboundSettings
from nango.providers import ProvidersSettings
from nango.proxycore import ProxySettings

UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def parse_size(value: str) -> int:
    """'75mb' -> bytes (Nango's body-limit notation)."""
    match = _SIZE.match(value)
    if not match:
        raise ValueError("expected a size such as 75mb, 512kb or 1048576")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


class ServerSettings(
    ProcessSettings,
    DatabaseSettings,
    RedisSettings,
    BlobSettings,
    ServiceUrls,
    EncryptionSettings,
    LogsSettings,
    ProvidersSettings,
    OutboundSettings,
    ProxySettings,
):
    port: Port = Field(3003, validation_alias=AliasChoices("SERVER_PORT", "NANGO_PORT"))
    grpc_port: Port = Field(3004, validation_alias="NANGO_SERVER_GRPC_PORT")
    connect_ui_port: Port = Field(3009, validation_alias="NANGO_CONNECT_UI_PORT")
    # Nango's image serves Connect UI only when this is true (its compose file sets it; so does `nango up`)
    serve_connect_ui: bool = Field(False, validation_alias="FLAG_SERVE_CONNECT_UI")
    server_url: str = Field("http://localhost:3003", validation_alias="NANGO_SERVER_URL", pattern=r"^https?://")
    # unset: http://localhost:<NANGO_CONNECT_UI_PORT>, see connect_url()
    public_connect_url: str | None = Field(None, validation_alias="NANGO_PUBLIC_CONNECT_URL", pattern=r"^https?://")
    websockets_path: str = Field("/", validation_alias="NANGO_SERVER_WEBSOCKETS_PATH", pattern=r"^/")
    public_body_limit: str = Field("75mb", validation_alias="NANGO_SERVER_PUBLIC_BODY_LIMIT")
    secret_key_dev: SecretStr | None = Field(None, validation_alias="NANGO_SECRET_KEY_DEV")
    secret_key_prod: SecretStr | None = Field(None, validation_alias="NANGO_SECRET_KEY_PROD")
    public_auth_deprecated_after: datetime = Field(
        datetime(2025, 8, 25, tzinfo=UTC), validation_alias="PUBLIC_AUTHENTICATION_DEPRECATION_DATE"
    )
    rate_limit_enabled: bool = Field(True, validation_alias="FLAG_API_RATE_LIMIT_ENABLED")
    rate_limit_per_minute: int = Field(200, ge=1, le=10_000_000, validation_alias="DEFAULT_RATE_LIMIT_PER_MIN")
    refresh_connections_every_min: float = Field(
        10, gt=0, le=1440, validation_alias="CRON_REFRESH_CONNECTIONS_EVERY_MIN"
    )
    refresh_connections_limit: int = Field(100, ge=1, le=10_000, validation_alias="CRON_REFRESH_CONNECTIONS_LIMIT")
    delete_old_data_every_min: float = Field(10, gt=0, le=1440, validation_alias="CRON_DELETE_OLD_DATA_EVERY_MIN")
    delete_old_connections_max_days: int = Field(
        31, ge=0, le=3650, validation_alias="CRON_DELETE_OLD_CONNECTIONS_MAX_DAYS"
    )
    # a callback without the state cookie set by /oauth/connect is only logged unless this is on
    oauth_state_cookie_enforced: bool = Field(False, validation_alias="NANGO_OAUTH_STATE_COOKIE_ENFORCED")

    # synchronous actions one environment may run at once (reference §8.4); 0 is unlimited
    action_environment_max_concurrency: int = Field(
        500, ge=0, le=100_000, validation_alias="ACTION_ENVIRONMENT_MAX_CONCURRENCY"
    )

    # a sync run whose runner has not heartbeated for this long expires (Nango: 5 min); applies to new schedules
    sync_heartbeat_timeout_seconds: float = Field(
        300, ge=1, le=86_400, validation_alias="NANGO_SYNC_HEARTBEAT_TIMEOUT_SECONDS"
    )

    # how long the proxy reuses a connection it read (decrypted); 0 reads it on every call
    proxy_connection_cache_ms: int = Field(5_000, ge=0, le=300_000, validation_alias="NANGO_PROXY_CONNECTION_CACHE_MS")

    # incoming provider webhooks (reference §7.1): largest body accepted, per-environment ingress limit
    webhook_max_body_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, le=1024**3, validation_alias="NANGO_WEBHOOK_MAX_BODY_BYTES"
    )
    webhook_ingress_rate_limit_per_min: int = Field(
        4000, ge=1, le=100_000_000, validation_alias="NANGO_WEBHOOK_INGRESS_RATE_LIMIT_PER_MIN"
    )
    webhook_ingress_rate_limit_enforce: bool = Field(False, validation_alias="NANGO_WEBHOOK_INGRESS_RATE_LIMIT_ENFORCE")
    # how long incoming webhooks reuse environment, integration, connection and sync lookups; 0 never does
    webhook_lookup_cache_ms: int = Field(2_000, ge=0, le=60_000, validation_alias="NANGO_WEBHOOK_LOOKUP_CACHE_MS")

    @field_validator("public_body_limit")
    @classmethod
    def _valid_size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("secret_key_dev", "secret_key_prod")
    @classmethod
    def _uuid_v4(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not UUID_V4.match(value.get_secret_value()):
            raise ValueError("must be a UUID v4, e.g. the output of `uuidgen -r`")
        return value

    def body_limit_bytes(self) -> int:
        return parse_size(self.public_body_limit)

    def sync_heartbeat_timeout(self) -> timedelta:
        return timedelta(seconds=self.sync_heartbeat_timeout_seconds)

    def connect_url(self) -> str:
        """Connect UI's public URL, the base of every `connect_link`."""
        return self.public_connect_url or f"http://localhost:{self.connect_ui_port}"
