"""What a proxy call is made of: the caller's request, and the connection it is made with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nango.providers import Provider


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """The caller's request (Nango's proxy configuration)."""

    method: str
    # the path and query string after `/proxy`, exactly as sent
    endpoint: str
    # sent upstream as given: the `Nango-Proxy-*` headers without their prefix, and Content-Type
    headers: tuple[tuple[str, str], ...] = ()
    retries: int = 0
    retry_on: frozenset[int] = frozenset()
    base_url_override: str | None = None
    decompress: bool = False
    forward_headers_on_redirect: bool = True
    # query parameters given apart from the endpoint (the in-function SDK's `params`)
    params: Mapping[str, str] | str | None = None


@dataclass(frozen=True, eq=False)
class ConnectionView:
    """A connection as a proxy call needs it. A new view is made whenever its credentials change,
    so what is derived from one view (rendered templates) can be kept as long as the view."""

    provider_name: str
    provider: Provider
    credentials: Mapping[str, Any]
    connection_config: Mapping[str, Any]
    metadata: Mapping[str, Any]
    # the integration's OAuth app, for OAuth 1.0a signatures and `${clientId}` templates
    client_id: str | None = None
    client_secret: str | None = None


class CredentialSource(Protocol):
    """Where a call gets its connection: fresh credentials, and a forced refresh after a 401."""

    async def current(self) -> ConnectionView: ...

    async def refreshed(self) -> ConnectionView | None:
        """The connection after a forced refresh; None when its credentials cannot be refreshed."""
        ...


__all__ = ["ConnectionView", "CredentialSource", "ProxySpec"]
