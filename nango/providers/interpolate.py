"""`${...}` templates of providers.yaml, rendered by pure functions (no I/O).

Placeholders:
- `${connectionConfig.x}`, `${credentials.x}`, `${metadata.x}`: dot paths into those maps. A key that
  itself holds dots (token_response_metadata stores `team.id` as one key) is found as well.
- `${apiKey}`, `${username}`, `${password}` (any top-level credential key), `${accessToken}`,
  `${clientId}`, `${clientSecret}`, `${endpoint}`, `${method}`, `${host}`, `${path}`.
- Helpers: `${base64(text)}`, `${sha256Hex(text)}`, `${sha256Base64(text)}`,
  `${hmacSha1Hex(key, data)}` (HMAC-SHA1 keyed by the first argument over the second, hex; spaces
  around the comma are ignored), `${random}` (a uuid4), `${now}` (ISO 8601 UTC with milliseconds,
  as JavaScript prints it), `${now:FMT}` and `${now+7:days:FMT}` / `${now-2:hours}` (units days,
  hours, minutes; FMT tokens YYYY MM DD HH mm ss, anything else literal). A helper argument is
  template text, e.g. `${base64(${apiKey}:)}`, or another helper call, e.g. `${base64(sha256Hex(x))}`.
- `A || B`: A when A renders to something other than its raw text, else B (more alternatives chain).

A placeholder that cannot be resolved stays in the text exactly as written (a helper whose argument
cannot be resolved too); `render` also reports which ones did not resolve.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import quote

Values = Mapping[str, Any]

_HELPER_CALL = re.compile(r"^([A-Za-z][A-Za-z0-9]*)\((.*)\)$", re.DOTALL)
_NOW = re.compile(r"^now(?:([+-])(\d{1,6}):(day|hour|minute)s?)?(?::(.+))?$", re.DOTALL)
_FORMAT_TOKEN = re.compile(r"YYYY|MM|DD|HH|mm|ss")
# encodeURIComponent leaves these unescaped; Nango builds its URLs with it.
_URL_SAFE = "-_.!~*'()"
_PREFIXES_STRIPPED_FOR_SKIP = ("connectionConfig.", "credentials.")
_RESERVED = frozenset(
    {"connectionConfig", "credentials", "metadata", "accessToken", "clientId", "clientSecret"}
    | {"endpoint", "method", "host", "path"}
)


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_base64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _hmac_sha1_hex(key: str, data: str) -> str:
    return hmac.new(key.encode(), data.encode(), hashlib.sha1).hexdigest()


_HELPERS: dict[str, tuple[int, Callable[..., str]]] = {
    "base64": (1, _base64),
    "sha256Hex": (1, _sha256_hex),
    "sha256Base64": (1, _sha256_base64),
    "hmacSha1Hex": (2, _hmac_sha1_hex),
}


class Rendered(NamedTuple):
    text: str
    unresolved: tuple[str, ...]
    """The placeholders left in `text` as written, e.g. `${connectionConfig.subdomain}`."""


@dataclass(frozen=True)
class _Context:
    values: Values
    moment: datetime
    url: bool
    skip_encode: Collection[str]


def template_values(
    *,
    connection_config: Mapping[str, Any] | None = None,
    credentials: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    access_token: str | None = None,
    endpoint: str | None = None,
    method: str | None = None,
    host: str | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    """The variables a template can use. Top-level credential keys are also bare names (`${apiKey}`);
    `accessToken` defaults to the credentials' `access_token` (OAuth) or `token` (client credentials, JWT)."""
    creds = dict(credentials or {})
    values: dict[str, Any] = {key: value for key, value in creds.items() if key not in _RESERVED}
    values["connectionConfig"] = dict(connection_config or {})
    values["credentials"] = creds
    values["metadata"] = dict(metadata or {})
    token = access_token if access_token is not None else creds.get("access_token", creds.get("token"))
    named = {
        "accessToken": token,
        "clientId": client_id,
        "clientSecret": client_secret,
        "endpoint": endpoint,
        "method": method,
        "host": host,
        "path": path,
    }
    values.update({key: value for key, value in named.items() if value is not None})
    return values


def _segments(template: str) -> list[tuple[str, str | None]]:
    """The template as (raw text, expression) pairs; expression is None for literal text."""
    segments: list[tuple[str, str | None]] = []
    literal_start = 0
    while (start := template.find("${", literal_start)) >= 0:
        depth, end = 1, start + 2
        while end < len(template) and depth:
            depth += {"{": 1, "}": -1}.get(template[end], 0)
            end += 1
        if depth:
            break  # never closed: the rest is literal text
        if start > literal_start:
            segments.append((template[literal_start:start], None))
        segments.append((template[start:end], template[start + 2 : end - 1]))
        literal_start = end
    if literal_start < len(template):
        segments.append((template[literal_start:], None))
    return segments


def _alternatives(template: str) -> list[str]:
    parts = [""]
    for text, expr in _segments(template):
        if expr is not None:
            parts[-1] += text
            continue
        first, *rest = text.split("||")
        parts[-1] += first
        parts.extend(rest)
    return [part.strip() for part in parts] if len(parts) > 1 else parts


def _lookup(value: Any, path: Sequence[str]) -> Any:
    if not path:
        return value
    if not isinstance(value, Mapping):
        return None
    for cut in range(len(path), 0, -1):
        key = ".".join(path[:cut])
        if key in value:
            found = _lookup(value[key], path[cut:])
            if found is not None:
                return found
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now(moment: datetime, sign: str | None, amount: str | None, unit: str | None, fmt: str | None) -> str:
    if amount is not None and unit is not None:
        delta = timedelta(**{f"{unit}s": int(amount)})
        moment = moment + delta if sign == "+" else moment - delta
    if fmt is None:
        return _iso(moment)
    tokens = {
        "YYYY": f"{moment.year:04d}",
        "MM": f"{moment.month:02d}",
        "DD": f"{moment.day:02d}",
        "HH": f"{moment.hour:02d}",
        "mm": f"{moment.minute:02d}",
        "ss": f"{moment.second:02d}",
    }
    return _FORMAT_TOKEN.sub(lambda match: tokens[match.group()], fmt)


def _split_top_level_comma(text: str) -> list[str] | None:
    depth = 0
    for index, char in enumerate(text):
        if char in "{(":
            depth += 1
        elif char in "})":
            depth -= 1
        elif char == "," and depth == 0:
            return [text[:index].strip(), text[index + 1 :].strip()]
    return None


def _argument(arg: str, ctx: _Context) -> str | None:
    call = _HELPER_CALL.match(arg.strip())
    if call and call.group(1) in _HELPERS:
        return _helper(call.group(1), call.group(2), ctx)
    rendered = _render_one(arg, _Context(ctx.values, ctx.moment, url=False, skip_encode=()))
    return None if rendered.unresolved else rendered.text


def _helper(name: str, args_text: str, ctx: _Context) -> str | None:
    arity, function = _HELPERS[name]
    args = [args_text] if arity == 1 else _split_top_level_comma(args_text)
    if args is None:
        return None
    values = [_argument(arg, ctx) for arg in args]
    if any(value is None for value in values):
        return None
    return function(*values)


def _evaluate(expr: str, ctx: _Context) -> tuple[str | None, str | None]:
    """The value of one placeholder (None when unresolved) and, for a variable, its key for skip-encode."""
    expr = expr.strip()
    call = _HELPER_CALL.match(expr)
    if call and call.group(1) in _HELPERS:
        return _helper(call.group(1), call.group(2), ctx), None
    if expr == "random":
        return str(uuid.uuid4()), None
    now = _NOW.match(expr)
    if now:
        return _now(ctx.moment, *now.groups()), None
    key = expr
    for prefix in _PREFIXES_STRIPPED_FOR_SKIP:
        if expr.startswith(prefix):
            key = expr[len(prefix) :]
    return _text(_lookup(ctx.values, expr.split("."))), key


def _render_one(template: str, ctx: _Context) -> Rendered:
    parts: list[str] = []
    unresolved: list[str] = []
    for raw, expr in _segments(template):
        if expr is None:
            parts.append(raw)
            continue
        value, key = _evaluate(expr, ctx)
        if value is None:
            parts.append(raw)
            unresolved.append(raw)
            continue
        if ctx.url and not (key is not None and (key in ctx.skip_encode or expr.strip() in ctx.skip_encode)):
            value = quote(value, safe=_URL_SAFE)
        parts.append(value)
    return Rendered("".join(parts), tuple(unresolved))


def _context(values: Values, now: datetime | None, url: bool, skip_encode: Collection[str]) -> _Context:
    moment = datetime.now(UTC) if now is None else now
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return _Context(values, moment, url, skip_encode)


def render(
    template: str,
    values: Values,
    *,
    url: bool = False,
    skip_encode: Collection[str] = (),
    now: datetime | None = None,
) -> Rendered:
    """Render `template`. With `url=True` every substituted value is percent-encoded (as
    encodeURIComponent does) unless its key, with any `connectionConfig.`/`credentials.` prefix
    removed, is in `skip_encode`. `now` pins the clock (a naive datetime is taken as UTC)."""
    ctx = _context(values, now, url, skip_encode)
    alternatives = _alternatives(template)
    for alternative in alternatives[:-1]:
        rendered = _render_one(alternative, ctx)
        if rendered.text != alternative:
            return rendered
    return _render_one(alternatives[-1], ctx)


def interpolate(template: str, values: Values, *, now: datetime | None = None) -> str:
    return render(template, values, now=now).text


def interpolate_url(
    template: str, values: Values, *, skip_encode: Collection[str] = (), now: datetime | None = None
) -> str:
    """A URL template (authorization_url, token_url) with its substituted values percent-encoded."""
    return render(template, values, url=True, skip_encode=skip_encode, now=now).text


def interpolate_headers(headers: Mapping[str, str], values: Values, *, now: datetime | None = None) -> dict[str, str]:
    """Rendered headers; a header whose placeholders do not all resolve is left out, not sent half-filled."""
    moment = datetime.now(UTC) if now is None else now
    rendered = {name: render(value, values, now=moment) for name, value in headers.items()}
    return {name: result.text for name, result in rendered.items() if not result.unresolved}


def _variables(template: str) -> Iterator[str]:
    for _, expr in _segments(template):
        if expr is None:
            continue
        expr = expr.strip()
        call = _HELPER_CALL.match(expr)
        if call and call.group(1) in _HELPERS:
            yield from _variables(call.group(2))
        else:
            yield expr


def connection_config_keys(template: str) -> list[str]:
    """The `${connectionConfig.x}` keys a template mentions (in every `||` alternative), in order."""
    prefix = "connectionConfig."
    keys = [name[len(prefix) :] for name in _variables(template) if name.startswith(prefix)]
    return list(dict.fromkeys(keys))


def missing_connection_config(template: str, connection_config: Mapping[str, Any]) -> list[str]:
    """The connection config keys still needed to render `template`: none when some `||` alternative
    has all of its keys, else the missing keys of the first alternative."""
    first_missing: list[str] | None = None
    for alternative in _alternatives(template):
        missing = [
            key
            for key in connection_config_keys(alternative)
            if _text(_lookup(connection_config, key.split("."))) is None
        ]
        if not missing:
            return []
        if first_missing is None:
            first_missing = missing
    return first_missing or []


__all__ = [
    "Rendered",
    "Values",
    "connection_config_keys",
    "interpolate",
    "interpolate_headers",
    "interpolate_url",
    "missing_connection_config",
    "render",
    "template_values",
]
