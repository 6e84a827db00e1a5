"""The Connect UI site: `index.html` for the SPA routes, the static assets, strict headers.

Files are read once at start-up into memory and looked up by exact name, so no request path ever
reaches the filesystem. The page learns the API URL from a data attribute of `index.html` (rendered
once, HTML-escaped); the CSP allows scripts, styles and fetches only from this origin and the API's.
"""

from __future__ import annotations

import errno
import hashlib
import html
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from nango.config import SettingsError
from nango.server.gateway.http import Handler

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
INDEX = "index.html"
# the client-side views; each is one level deep so the page's relative asset URLs resolve under a base path
SPA_ROUTES = ("/", "/integrations", "/go")
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True)
class Bundle:
    """The page template and its assets, with a version that changes whenever any file does."""

    index_template: str
    assets: dict[str, Asset]
    version: str

    @classmethod
    def load(cls, directory: Path = STATIC_DIR) -> Bundle:
        assets: dict[str, Asset] = {}
        digest = hashlib.sha256()
        for path in sorted(directory.iterdir()):
            content_type = CONTENT_TYPES.get(path.suffix)
            if not path.is_file() or (content_type is None and path.name != INDEX):
                continue
            body = path.read_bytes()
            digest.update(path.name.encode() + b"\0" + body)
            if content_type is not None:
                assets[path.name] = Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')
        return cls((directory / INDEX).read_text(encoding="utf-8"), assets, digest.hexdigest()[:12])

    def render_index(self, *, api_url: str) -> bytes:
        values = {"api_url": api_url, "version": self.version}
        text = self.index_template
        for name, value in values.items():
            text = text.replace("{{" + name + "}}", html.escape(value, quote=True))
        return text.encode()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def content_security_policy(api_url: str) -> str:
    """Scripts and styles from this origin only; the API origin (and its websocket) for calls and logos;
    any page may embed Connect UI (`openConnectUI` puts it in an iframe)."""
    api = _origin(api_url)
    websocket = ("wss://" if api.startswith("https://") else "ws://") + urlsplit(api).netloc
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src 'self' {api} data:; connect-src 'self' {api} {websocket}; "
        "base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors *"
    )


def security_headers(api_url: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(api_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }


def build_app(*, api_url: str, bundle: Bundle | None = None) -> web.Application:
    """The Connect UI web app; `api_url` is the public API URL (NANGO_SERVER_URL) the page calls by default."""
    bundle = bundle or Bundle.load()
    headers = security_headers(api_url)
    index = bundle.render_index(api_url=api_url)

    @web.middleware
    async def harden(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = web.Response(status=exc.status, text=f"{exc.status} {exc.reason}\n", content_type="text/plain")
            if isinstance(exc, web.HTTPMethodNotAllowed):
                response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            response.headers.setdefault("Cache-Control", REVALIDATE)
        response.headers.update(headers)
        return response

    async def page(_request: web.Request) -> web.Response:
        return web.Response(
            body=index, content_type="text/html", charset="utf-8", headers={"Cache-Control": REVALIDATE}
        )

    async def asset(request: web.Request) -> web.Response:
        found = bundle.assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        # a URL with the current version never changes; other requests (module imports) revalidate
        versioned = request.query.get("v") == bundle.version
        cache = {"Cache-Control": IMMUTABLE if versioned else REVALIDATE, "ETag": found.etag}
        cache["Cross-Origin-Resource-Policy"] = "same-origin"
        if found.etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=cache)
        return web.Response(body=found.body, headers={"Content-Type": found.content_type, **cache})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"result": "ok"}, headers={"Cache-Control": "no-store"})

    app = web.Application(middlewares=[harden])
    for route in SPA_ROUTES:
        app.router.add_get(route, page)
    app.router.add_get("/assets/{name}", asset)
    app.router.add_get("/health", health)
    return app


async def start(app: web.Application, *, host: str, port: int, shutdown_timeout: float) -> web.AppRunner:
    """Serve `app` on `host:port`; a port already in use stops the process with a message saying so."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise SettingsError(
                f"NANGO_CONNECT_UI_PORT {port} is already in use: stop what uses it, choose another port, "
                "or set FLAG_SERVE_CONNECT_UI=false to serve Connect UI elsewhere"
            ) from None
        raise SettingsError(f"Connect UI cannot listen on {host}:{port} (NANGO_CONNECT_UI_PORT): {exc}") from None
    log.info("connect ui listening", extra={"connect_ui_port": port})
    return runner
