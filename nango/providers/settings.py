"""Where the provider catalog comes from: the packaged file, an operator's file, a remote file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from nango.config import Settings


def _blank_is_unset(value: Any) -> Any:
    # A `.env` line such as `PROVIDERS_URL=` means "not set", not an empty path or URL.
    return None if isinstance(value, str) and not value.strip() else value


class ProvidersSettings(Settings):
    """`NANGO_PROVIDERS_FILE` is laid over the packaged catalog; `PROVIDERS_URL` is fetched every
    `PROVIDERS_RELOAD_INTERVAL` milliseconds (Nango's unit) and laid over both."""

    providers_file: Annotated[Path | None, BeforeValidator(_blank_is_unset)] = Field(
        None, validation_alias="NANGO_PROVIDERS_FILE"
    )
    providers_url: Annotated[str | None, BeforeValidator(_blank_is_unset)] = Field(
        None, validation_alias="PROVIDERS_URL", pattern=r"^https?://\S+$"
    )
    providers_reload_interval_ms: int = Field(
        60_000, ge=1_000, le=86_400_000, validation_alias="PROVIDERS_RELOAD_INTERVAL"
    )

    @property
    def reload_interval_seconds(self) -> float:
        return self.providers_reload_interval_ms / 1000


__all__ = ["ProvidersSettings"]
