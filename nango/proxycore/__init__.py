"""The proxy's rules, service-neutral: URL building, credential injection by auth mode, retries and
waits, the 401 refresh. The gateway's `/proxy` route and the runner's in-function proxy both call
through `ProxyEngine`, so a request is built and retried the same way wherever it starts.
"""

from nango.proxycore.engine import Attempt, CallerGone, ProxyCall, ProxyEngine, UpstreamAnswer
from nango.proxycore.errors import (
    BaseUrlOverrideDisabled,
    BaseUrlOverrideNotAllowed,
    InvalidBaseUrl,
    UnsupportedAuth,
    UnsupportedProvider,
)
from nango.proxycore.settings import ProxySettings
from nango.proxycore.spec import ConnectionView, CredentialSource, ProxySpec
from nango.proxycore.target import MASK, Target

__all__ = [
    "MASK",
    "Attempt",
    "BaseUrlOverrideDisabled",
    "BaseUrlOverrideNotAllowed",
    "CallerGone",
    "ConnectionView",
    "CredentialSource",
    "InvalidBaseUrl",
    "ProxyCall",
    "ProxyEngine",
    "ProxySettings",
    "ProxySpec",
    "Target",
    "UnsupportedAuth",
    "UnsupportedProvider",
    "UpstreamAnswer",
]
