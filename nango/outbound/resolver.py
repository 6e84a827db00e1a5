"""DNS resolution that checks every address against the outbound policy before it is used.

The connector connects to exactly the addresses this resolver returns (and caches them for its DNS
TTL), so the address checked is the address connected to: a host that answers with a public address
to a check and a private one to the connection cannot exist here.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from nango.outbound.errors import OutboundDenied
from nango.outbound.policy import OutboundPolicy


class PinningResolver(AbstractResolver):
    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self.policy.resolve_dns or self.policy.permissive:
            return results
        if not results:
            raise OutboundDenied("denied_dns", "The host resolved to no address", host=host)
        # one blocked answer refuses the host: a round-robin set must not mix in an internal address
        for result in results:
            self.policy.check_address(result["host"], reason="denied_dns", host=host)
        return results

    async def close(self) -> None:
        await self._inner.close()


__all__ = ["PinningResolver"]
