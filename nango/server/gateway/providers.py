"""Provider catalog routes (reference §3.3) and generated provider logos."""

from __future__ import annotations

import hashlib
import re
from html import escape

from aiohttp import web

from nango.providers.errors import UnknownProvider
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import Auth, auth, json_response
from nango.server.gateway.validation import reject_unknown_query

routes = web.RouteTableDef()

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


@routes.get("/providers")
@auth(Auth.SECRET_KEY_OR_CONNECT_SESSION)
async def list_providers(request: web.Request) -> web.Response:
    reject_unknown_query(request, {"search"})
    gw = request.app[GATEWAY]
    catalog = gw.providers.current
    search = request.query.get("search", "")
    names = catalog.search(search) if search else catalog.names()
    return json_response(
        {"data": [catalog.public_entry(n, logo_base_url=_logo_base(gw.server_url)) for n in sorted(names)]}
    )


@routes.get("/providers/{provider}")
@auth(Auth.SECRET_KEY_OR_CONNECT_SESSION)
async def get_provider(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    name = request.match_info["provider"]
    if gw.providers.current.get(name) is None:
        raise UnknownProvider(f"Unknown provider {name}")
    return json_response({"data": gw.providers.current.public_entry(name, logo_base_url=_logo_base(gw.server_url))})


@routes.get("/providers.json")
@auth(Auth.NONE)
async def providers_json(request: web.Request) -> web.Response:
    return json_response(request.app[GATEWAY].providers.current.as_raw_dict())


@routes.get("/images/template-logos/{file}")
@auth(Auth.NONE)
async def provider_logo(request: web.Request) -> web.Response:
    """A generated badge (initials on a colour derived from the name): we ship no third-party logos."""
    name = request.match_info["file"].removesuffix(".svg")
    if not _SLUG.match(name):
        raise UnknownProvider()
    provider = request.app[GATEWAY].providers.current.get(name)
    label = provider.display_name if provider else name
    initials = "".join(word[0] for word in re.split(r"[\s_.-]+", label) if word)[:2].upper() or "?"
    hue = int(hashlib.sha256(name.encode()).hexdigest()[:4], 16) % 360
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        f'<rect width="64" height="64" rx="14" fill="hsl({hue},55%,45%)"/>'
        '<text x="32" y="41" font-family="Helvetica,Arial,sans-serif" font-size="26" font-weight="600" '
        f'fill="#fff" text-anchor="middle">{escape(initials)}</text></svg>'
    )
    return web.Response(text=svg, content_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


def _logo_base(server_url: str) -> str:
    return f"{server_url.rstrip('/')}/images/template-logos"
