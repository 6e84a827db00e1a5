"""A GitHub App install (or configuration change) done on github.com rather than through a Nango flow: GitHub
sends the browser to the app's Setup URL with `installation_id` and `setup_action` but no state (reference §4.2
step 1). There is no flow to finish, so the browser goes back where it came from (the Referer, as Nango does),
or sees a short page when the Referer is missing or not a web page.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import web

_PAGE = (
    "<!DOCTYPE html>\n"
    '<html lang="en"><head><meta charset="utf-8"><title>Installation received</title></head>'
    "<body><main><h1>Installation received</h1>"
    "<p>The app installation was recorded by GitHub. You can close this window.</p></main></body></html>"
)
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def is_stateless_install(query: Mapping[str, str]) -> bool:
    return not query.get("state") and bool(query.get("installation_id")) and bool(query.get("setup_action"))


def installed_elsewhere(request: web.Request) -> web.Response:
    referer = request.headers.get("Referer", "")
    parts = urlsplit(referer)
    if parts.scheme in ("http", "https") and parts.netloc:
        return web.Response(status=302, headers={"Location": referer, **_HEADERS})
    return web.Response(text=_PAGE, content_type="text/html", headers=_HEADERS)
