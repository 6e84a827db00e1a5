"""Settings of outbound calls: the URL policies (Nango's variables) and the pool's timeouts."""

from __future__ import annotations

from pydantic import Field, field_validator

from nango.config import Settings
from nango.outbound.client import PoolSettings
from nango.outbound.policy import OutboundPolicy, parse_denylist_env, parse_policy_json, server_policy


class OutboundSettings(Settings):
    # JSON array of hosts added to the metadata and loopback defaults; empty or `[]` removes them
    proxy_base_url_override_denylist: str | None = Field(
        None, validation_alias="NANGO_PROXY_BASE_URL_OVERRIDE_DENYLIST"
    )
    outbound_url_policy: str | None = Field(None, validation_alias="NANGO_OUTBOUND_URL_POLICY")
    outbound_url_policy_oauth: str | None = Field(None, validation_alias="NANGO_OUTBOUND_URL_POLICY_OAUTH")
    outbound_connect_timeout_ms: int = Field(
        10_000, ge=100, le=600_000, validation_alias="NANGO_OUTBOUND_CONNECT_TIMEOUT_MS"
    )
    outbound_read_timeout_ms: int = Field(
        300_000, ge=100, le=86_400_000, validation_alias="NANGO_OUTBOUND_READ_TIMEOUT_MS"
    )
    outbound_pool_size: int = Field(512, ge=1, le=100_000, validation_alias="NANGO_OUTBOUND_POOL_SIZE")
    outbound_pool_per_host: int = Field(100, ge=0, le=100_000, validation_alias="NANGO_OUTBOUND_POOL_PER_HOST")
    outbound_keepalive_ms: int = Field(30_000, ge=0, le=3_600_000, validation_alias="NANGO_OUTBOUND_KEEPALIVE_MS")

    @field_validator("outbound_url_policy")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        parse_policy_json(value, "NANGO_OUTBOUND_URL_POLICY")
        return value

    @field_validator("outbound_url_policy_oauth")
    @classmethod
    def _oauth_policy(cls, value: str | None) -> str | None:
        parse_policy_json(value, "NANGO_OUTBOUND_URL_POLICY_OAUTH")
        return value

    @field_validator("proxy_base_url_override_denylist")
    @classmethod
    def _denylist(cls, value: str | None) -> str | None:
        parse_denylist_env(value)
        return value

    def outbound_policy(self) -> OutboundPolicy:
        """Calls made with a connection's credentials: the proxy and the credential checks."""
        return server_policy(self.outbound_url_policy, self.proxy_base_url_override_denylist)

    def outbound_pool(self) -> PoolSettings:
        return PoolSettings(
            connect_timeout=self.outbound_connect_timeout_ms / 1000,
            read_timeout=self.outbound_read_timeout_ms / 1000,
            size=self.outbound_pool_size,
            per_host=self.outbound_pool_per_host,
            keepalive=self.outbound_keepalive_ms / 1000,
        )


__all__ = ["OutboundSettings"]
