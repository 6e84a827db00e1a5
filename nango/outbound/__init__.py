"""Outbound HTTP: the one pooled client every service uses to call external APIs, and the URL
policy (SSRF protection) each call is held to. Service-neutral: the server's proxy and token
requests use it, and so will the runner's in-function proxy.
"""

from nango.outbound.client import Body, OutboundClient, OutboundRequest, PoolSettings, Response
from nango.outbound.errors import OutboundDenied, TooManyRedirects, UpstreamTimeout, UpstreamUnreachable
from nango.outbound.policy import (
    DEFAULT_DENYLIST,
    PERMISSIVE,
    OutboundPolicy,
    PolicyInput,
    classify_address,
    oauth_policy,
    server_policy,
)
from nango.outbound.resolver import PinningResolver
from nango.outbound.settings import OutboundSettings
from nango.outbound.wire import USER_AGENT

__all__ = [
    "DEFAULT_DENYLIST",
    "PERMISSIVE",
    "USER_AGENT",
    "Body",
    "OutboundClient",
    "OutboundDenied",
    "OutboundPolicy",
    "OutboundRequest",
    "OutboundSettings",
    "PinningResolver",
    "PolicyInput",
    "PoolSettings",
    "Response",
    "TooManyRedirects",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "classify_address",
    "oauth_policy",
    "server_policy",
]
