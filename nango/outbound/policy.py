"""Which URLs and addresses the platform may call out to (NANGO_OUTBOUND_URL_POLICY).

A policy is checked twice: on every URL before it is requested (scheme, allow and deny lists, IP
literals) and on every address a host name resolves to, in the connector's resolver, so the address
checked is the address connected to and a rebinding DNS answer cannot slip through.

Nango's JSON shape is kept (`mode`, `denylist`, `allowlist`, `blockPrivateIps`, `blockLinkLocal`,
`maxRedirects`, `allowedSchemes`, `resolveDns`) with one addition, `blockLoopback` (default true),
so that an operator can allow loopback on purpose; `mode: permissive` allows every address.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from nango.outbound.errors import OutboundDenied

Mode = Literal["denylist", "allowlist", "permissive"]
AddressClass = Literal["loopback", "private", "link_local", "unspecified"]

# Cloud metadata endpoints and loopback names, denied unless the operator says otherwise (as Nango).
DEFAULT_DENYLIST = (
    "169.254.169.254",
    "metadata.google.internal",
    "localhost",
    "127.0.0.1",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
)
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "::ffff:127.0.0.1"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class PolicyInput(BaseModel):
    """The JSON an operator writes; unset fields take the value of the policy it is laid over."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode | None = None
    denylist: list[str] | None = None
    allowlist: list[str] | None = None
    blockPrivateIps: bool | None = None
    blockLinkLocal: bool | None = None
    blockLoopback: bool | None = None
    resolveDns: bool | None = None
    allowedSchemes: list[str] | None = None
    maxRedirects: int | None = Field(default=None, ge=0, le=20)

    def over(self, base: PolicyInput) -> PolicyInput:
        return base.model_copy(update=self.model_dump(exclude_none=True))


def parse_policy_json(raw: str | None, variable: str) -> PolicyInput:
    """An operator's policy JSON; a blank value is no policy. Raises ValueError naming what is wrong."""
    if raw is None or not raw.strip():
        return PolicyInput()
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError(f'{variable} must be a JSON object, e.g. {{"mode": "denylist"}}') from None
    try:
        return PolicyInput.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{variable}: {problems}") from None


def parse_denylist_env(raw: str | None) -> list[str] | None:
    """NANGO_PROXY_BASE_URL_OVERRIDE_DENYLIST as Nango reads it: unset keeps the defaults (None), an
    empty value or `[]` removes them (an explicit opt-out), a JSON array of hosts is added to them."""
    if raw is None:
        return None
    if not raw.strip():
        return []
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError("NANGO_PROXY_BASE_URL_OVERRIDE_DENYLIST must be a JSON array of host names") from None
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise ValueError("NANGO_PROXY_BASE_URL_OVERRIDE_DENYLIST must be a JSON array of host names")
    entries = [item.strip() for item in data if item.strip()]
    return [*DEFAULT_DENYLIST, *entries] if entries else []


def canonical_host(host: str) -> str:
    """Lower case, without IPv6 brackets or trailing dots: the form lists are matched in."""
    value = host.strip().lower()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return value.rstrip(".")


def _normalize_entry(entry: str) -> str:
    text = entry.strip()
    if "://" in text:
        text = URL(text).raw_host or ""
    return canonical_host(text)


@functools.lru_cache(maxsize=4096)
def classify_address(address: str) -> AddressClass | None:
    """Why an address would be refused (None for a public address); embedded IPv4 addresses of
    IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 forms are judged as the IPv4 address."""
    try:
        ip = ipaddress.ip_address(canonical_host(address).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and int(ip) >> 32 == 0 and int(ip) > 1:
            embedded = ipaddress.IPv4Address(int(ip))
        if embedded is not None:
            return classify_address(str(embedded))
        if ip in _NAT64_LOCAL or ip.teredo is not None:
            return "private"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast or not ip.is_global:
        return "private"
    return None


@dataclass(frozen=True)
class OutboundPolicy:
    mode: Mode = "denylist"
    denylist: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_DENYLIST))
    allowlist: tuple[str, ...] = ()
    block_private: bool = True
    block_link_local: bool = True
    block_loopback: bool = True
    resolve_dns: bool = True
    schemes: frozenset[str] = frozenset({"http", "https"})
    max_redirects: int = 5

    @property
    def permissive(self) -> bool:
        return self.mode == "permissive"

    @classmethod
    def build(cls, given: PolicyInput, default_denylist: list[str] | None = None) -> OutboundPolicy:
        """A policy from an operator's JSON. Its denylist is the JSON's (added to the defaults), else
        `default_denylist` (NANGO_PROXY_BASE_URL_OVERRIDE_DENYLIST), else the defaults; without
        any denylist and without a `mode`, the mode is permissive, as in Nango."""
        block_loopback = given.blockLoopback if given.blockLoopback is not None else True
        if given.denylist is not None:
            entries = [*DEFAULT_DENYLIST, *given.denylist]
        elif default_denylist is not None:
            entries = list(default_denylist)
        else:
            entries = list(DEFAULT_DENYLIST)
        mode: Mode = given.mode or ("denylist" if entries else "permissive")
        denylist = frozenset(_normalize_entry(e) for e in entries if _normalize_entry(e))
        if not block_loopback:
            # allowing loopback on purpose must not be undone by the loopback names of the defaults
            denylist -= _LOOPBACK_NAMES - {_normalize_entry(e) for e in (given.denylist or [])}
        return cls(
            mode=mode,
            denylist=frozenset() if mode == "permissive" else denylist,
            allowlist=tuple(canonical_host(e) for e in given.allowlist or () if e.strip()),
            block_private=given.blockPrivateIps if given.blockPrivateIps is not None else True,
            block_link_local=given.blockLinkLocal if given.blockLinkLocal is not None else True,
            block_loopback=block_loopback,
            resolve_dns=given.resolveDns if given.resolveDns is not None else True,
            schemes=frozenset(s.lower().rstrip(":") for s in given.allowedSchemes or ("http", "https")),
            max_redirects=given.maxRedirects if given.maxRedirects is not None else 5,
        )

    def _allowed_on_list(self, host: str) -> bool:
        for entry in self.allowlist:
            if entry.startswith("."):
                if host == entry[1:] or host.endswith(entry):
                    return True
            elif host == entry or host.endswith("." + entry):
                return True
        return False

    def denies_host(self, host: str) -> bool:
        return not self.permissive and canonical_host(host) in self.denylist

    def check_url(self, url: URL) -> None:
        """Raise OutboundDenied unless the URL may be requested (its host's addresses are checked
        when it is resolved)."""
        if not url.absolute or not url.raw_host:
            raise OutboundDenied("invalid_url", "The URL is not absolute")
        if (url.scheme or "").lower() not in self.schemes:
            raise OutboundDenied("invalid_scheme", f"The URL scheme {url.scheme!r} is not allowed")
        if self.permissive:
            return
        host = canonical_host(url.raw_host)
        if self.mode == "allowlist" and self.allowlist and not self._allowed_on_list(host):
            raise OutboundDenied("allowlist_miss", "The host is not on the outbound allowlist", host=host)
        if host in self.denylist:
            raise OutboundDenied("denied_hostname", "The host is denied by the outbound URL policy", host=host)
        self.check_address(host, reason="denied_ip")

    def check_address(self, address: str, *, reason: str = "denied_dns", host: str | None = None) -> None:
        """Raise OutboundDenied when the policy blocks this kind of address."""
        if self.permissive:
            return
        kind = classify_address(address)
        blocked = kind == "unspecified" or (
            (kind == "loopback" and self.block_loopback)
            or (kind == "private" and self.block_private)
            or (kind == "link_local" and self.block_link_local)
        )
        if blocked:
            what = kind.replace("_", "-") if kind else "blocked"
            raise OutboundDenied(
                reason, f"The address is {what} and the outbound policy blocks it", host=host or canonical_host(address)
            )


PERMISSIVE = OutboundPolicy(mode="permissive", denylist=frozenset())


def server_policy(policy_json: str | None, denylist_env: str | None) -> OutboundPolicy:
    """The policy of the proxy and of calls made with a connection's credentials."""
    return OutboundPolicy.build(
        parse_policy_json(policy_json, "NANGO_OUTBOUND_URL_POLICY"), parse_denylist_env(denylist_env)
    )


def oauth_policy(policy_json: str | None, oauth_json: str | None) -> OutboundPolicy:
    """Token endpoints: private addresses allowed (self-hosted identity providers), metadata,
    loopback and link-local blocked, unless NANGO_OUTBOUND_URL_POLICY(_OAUTH) say otherwise."""
    base = PolicyInput(blockPrivateIps=False, mode="denylist")
    merged = parse_policy_json(oauth_json, "NANGO_OUTBOUND_URL_POLICY_OAUTH").over(
        parse_policy_json(policy_json, "NANGO_OUTBOUND_URL_POLICY").over(base)
    )
    return OutboundPolicy.build(merged)


__all__ = [
    "DEFAULT_DENYLIST",
    "PERMISSIVE",
    "OutboundPolicy",
    "PolicyInput",
    "canonical_host",
    "classify_address",
    "oauth_policy",
    "parse_denylist_env",
    "parse_policy_json",
    "server_policy",
]
