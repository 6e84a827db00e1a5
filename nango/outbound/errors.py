"""Errors of outbound calls: refused by the URL policy, or the upstream could not be reached."""

from __future__ import annotations

from typing import Any

from nango.errors import NangoError, RpcStatus


class OutboundDenied(NangoError):
    """The URL, an address its host resolves to, or a redirect target is refused by the outbound policy.

    `reason` is one of: invalid_url, invalid_scheme, allowlist_miss, denied_hostname, denied_ip,
    denied_dns, redirect_denied.
    """

    code = "outbound_url_denied"
    http_status = 400
    rpc_status = RpcStatus.PERMISSION_DENIED
    default_message = "The outbound URL policy does not allow this address"

    def __init__(self, reason: str, message: str, *, host: str | None = None, **kwargs: Any) -> None:
        payload = {"reason": reason, **({"host": host} if host else {})}
        super().__init__(message, payload=payload, **kwargs)
        self.reason = reason
        self.host = host


class UpstreamUnreachable(NangoError):
    code = "upstream_unreachable"
    http_status = 502
    rpc_status = RpcStatus.UNAVAILABLE
    default_message = "The upstream API could not be reached"


class UpstreamTimeout(NangoError):
    code = "upstream_timeout"
    http_status = 504
    rpc_status = RpcStatus.DEADLINE_EXCEEDED
    default_message = "The upstream API did not answer in time"


class TooManyRedirects(NangoError):
    code = "too_many_redirects"
    http_status = 502
    rpc_status = RpcStatus.UNAVAILABLE
    default_message = "The upstream API redirected too many times"


__all__ = ["OutboundDenied", "TooManyRedirects", "UpstreamTimeout", "UpstreamUnreachable"]
