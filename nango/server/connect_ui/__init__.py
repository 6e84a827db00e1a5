"""Connect UI: the page end users see when they connect an account (reference §4.5).

A hand-written SPA (static HTML, CSS and ES modules in `static/`, no build step, no third-party
code) served by the server process on NANGO_CONNECT_UI_PORT when FLAG_SERVE_CONNECT_UI is on.
"""

from __future__ import annotations

from nango.server.connect_ui.site import Bundle, build_app, content_security_policy, start

__all__ = ["Bundle", "build_app", "content_security_policy", "start"]
