"""Settings of the proxy itself (the outbound policy it is held to lives in nango.outbound)."""

from __future__ import annotations

from pydantic import Field

from nango.config import Settings


class ProxySettings(Settings):
    proxy_base_url_override_enabled: bool = Field(True, validation_alias="NANGO_PROXY_BASE_URL_OVERRIDE_ENABLED")


__all__ = ["ProxySettings"]
