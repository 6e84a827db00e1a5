"""The page the OAuth popup ends on (reference §4.2 step 8).

It tells its opener (Connect UI, or the app that called `nango.auth()`) the outcome by postMessage
and on the `nango-oauth-callback` BroadcastChannel, closes itself when acknowledged (or 500 ms after
a success), and on error stays open with the details. Its script and style are fixed text allowed by
hash in a strict CSP; the outcome reaches the script through HTML-escaped data attributes.
"""

from __future__ import annotations

import base64
import hashlib
import html

from aiohttp import web

from nango.errors import NangoError

_SCRIPT = """
(function () {
  var data = document.body.dataset;
  var ok = data.status === 'success';
  var message = ok
    ? { type: 'nango_oauth_callback_success' }
    : { type: 'nango_oauth_callback_error', payload: { message: data.message, errorType: data.errorType } };
  function onAck(event) {
    if (event.data && event.data.type === 'nango_oauth_callback_ack') { window.close(); }
  }
  window.addEventListener('message', onAck);
  try {
    var channel = new BroadcastChannel('nango-oauth-callback');
    channel.onmessage = onAck;
    channel.postMessage(message);
  } catch (e) { /* no BroadcastChannel in this browser: postMessage alone */ }
  if (window.opener) {
    try { window.opener.postMessage(message, '*'); } catch (e) { /* opener gone */ }
  }
  if (ok) { setTimeout(function () { window.close(); }, 500); }
})();
"""

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0; padding: 2.5rem 1.5rem;
  color: #1f2933; background: #f7f9fb; }
main { max-width: 32rem; margin: 0 auto; }
h1 { font-size: 1.25rem; margin: 0 0 0.75rem; }
p { line-height: 1.5; margin: 0 0 0.5rem; }
code { background: #e4e7eb; padding: 0.1rem 0.3rem; border-radius: 0.2rem; }
.error h1 { color: #b42318; }
"""


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CSP = (
    f"default-src 'none'; script-src '{_sha256(_SCRIPT)}'; style-src '{_sha256(_STYLE)}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _page(*, status: str, title: str, body: str, attributes: dict[str, str]) -> str:
    data = "".join(f' data-{name}="{html.escape(value, quote=True)}"' for name, value in attributes.items())
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body data-status="{status}"{data}><main class="{status}">{body}</main>'
        f"<script>{_SCRIPT}</script></body></html>"
    )


def success_page() -> web.Response:
    text = _page(
        status="success",
        title="Authorization successful",
        body="<h1>Authorization successful</h1><p>You can close this window.</p>",
        attributes={},
    )
    return web.Response(text=text, content_type="text/html", headers=_HEADERS)


def error_page(error: NangoError) -> web.Response:
    """HTTP 400 showing the error's type and message, escaped; messages are built never to hold a secret."""
    error_type, message = error.instance_code, error.message
    body = (
        "<h1>Authorization failed</h1>"
        f"<p>{html.escape(message)}</p>"
        f"<p>Error type: <code>{html.escape(error_type)}</code></p>"
        "<p>You can close this window and try again.</p>"
    )
    text = _page(
        status="error",
        title="Authorization failed",
        body=body,
        attributes={"error-type": error_type, "message": message},
    )
    return web.Response(text=text, status=400, content_type="text/html", headers=_HEADERS)
