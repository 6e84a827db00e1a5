"""Where a proxy call goes and what it carries: URL, headers, and what of it may be logged.

Order of headers (later wins, names compared case-insensitively), as Nango builds them: the auth
mode's header, the provider's `proxy.headers`, then the caller's headers, except that a
`user-agent` set by the provider stays. The provider's `proxy.query` is appended to the URL.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from multidict import CIMultiDict
from yarl import URL

from nango.errors import InvalidQueryParams
from nango.providers.interpolate import render, template_values
from nango.proxycore import auth
from nango.proxycore.errors import InvalidBaseUrl, UnsupportedProvider
from nango.proxycore.spec import ConnectionView, ProxySpec

MASK = "[REDACTED]"
# placeholders whose value depends on the request (or the clock): rendered per call
_PER_REQUEST = re.compile(r"\$\{[^}]*\b(?:method|endpoint|host|path|now|random)\b")
_PROTECTED = ("user-agent",)
# credential values shorter than this are not searched for in logged URLs (too likely to collide)
_MIN_SECRET = 6
_URL_SAFE = "-_.!~*'()"


@dataclass(frozen=True)
class Prepared:
    """What a connection contributes to every call, rendered once per ConnectionView."""

    base_url: str | None
    base_url_problem: str | None
    headers: tuple[tuple[str, str], ...]
    header_templates: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    query_templates: tuple[tuple[str, str], ...]
    # the auth mode's headers overlaid with the provider's rendered ones (lower-case names)
    base_headers: tuple[tuple[str, str], ...]
    signed: bool
    # credential values to mask in a logged URL, each with its URL-encoded form when that differs
    secrets: tuple[tuple[str, str | None], ...]
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Target:
    url: URL
    headers: CIMultiDict[str]
    # the URL with injected query values and credential values masked
    log_url: str
    # header names whose values came from the connection (masked in logs)
    injected: frozenset[str]


_prepared: weakref.WeakKeyDictionary[ConnectionView, Prepared] = weakref.WeakKeyDictionary()


def _secrets(view: ConnectionView) -> tuple[tuple[str, str | None], ...]:
    found = [v for v in view.credentials.values() if isinstance(v, str) and len(v) >= _MIN_SECRET]
    if view.client_secret and len(view.client_secret) >= _MIN_SECRET:
        found.append(view.client_secret)
    longest_first = sorted(set(found), key=len, reverse=True)
    encoded = [quote(secret, safe=_URL_SAFE) for secret in longest_first]
    return tuple((s, e if e != s else None) for s, e in zip(longest_first, encoded, strict=True))


def prepare(view: ConnectionView) -> Prepared:
    """The rendered parts of a connection, kept as long as the view lives."""
    cached = _prepared.get(view)
    if cached is not None:
        return cached
    proxy = view.provider.proxy
    values = template_values(
        connection_config=view.connection_config,
        credentials=view.credentials,
        metadata=view.metadata,
        client_id=view.client_id,
        client_secret=view.client_secret,
    )
    base_url, problem = None, None
    if proxy is not None and proxy.base_url:
        rendered = render(proxy.base_url, values)
        if rendered.unresolved:
            problem = f"The provider's base URL needs {', '.join(rendered.unresolved)} from the connection"
        else:
            base_url = rendered.text
    if base_url is not None:
        try:
            check_base_url(base_url)
        except InvalidBaseUrl as exc:
            base_url, problem = None, exc.message
    headers, header_templates = _split({k.lower(): v for k, v in (proxy.headers or {}).items()} if proxy else {})
    query, query_templates = _split(dict(proxy.query or {}) if proxy else {})
    rendered_headers = _render_all(headers, values)
    auth_headers = auth.static_headers(view, (proxy.headers or {}).values() if proxy else ())
    prepared = Prepared(
        base_url=base_url,
        base_url_problem=problem,
        headers=rendered_headers,
        header_templates=header_templates,
        query=_render_all(query, values),
        query_templates=query_templates,
        base_headers=tuple({**auth_headers, **dict(rendered_headers)}.items()),
        signed=auth.auth_mode(view) in auth.SIGNED_MODES,
        secrets=_secrets(view),
        values=values,
    )
    _prepared[view] = prepared
    return prepared


def _split(templates: dict[str, str]) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    static = {k: v for k, v in templates.items() if not _PER_REQUEST.search(v)}
    dynamic = tuple((k, v) for k, v in templates.items() if _PER_REQUEST.search(v))
    return static, dynamic


def _render_all(templates: Mapping[str, str], values: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Rendered templates; one that does not fully resolve is left out rather than sent half-filled."""
    out = []
    for name, template in templates.items():
        rendered = render(template, values)
        if not rendered.unresolved:
            out.append((name, rendered.text))
    return tuple(out)


def check_base_url(value: str) -> URL:
    try:
        url = URL(value)
    except ValueError:
        raise InvalidBaseUrl(f"Not a URL: {value!r}") from None
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise InvalidBaseUrl(f"The base URL must be an absolute http(s) URL, got {value!r}")
    return url


def _query_pairs(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _with_params(query: str, params: Mapping[str, str] | str | None) -> str:
    if params is None:
        return query
    if isinstance(params, str):
        if query:
            raise InvalidQueryParams("Can not set query params in endpoint and in params")
        return params.removeprefix("?")
    kept = [(k, v) for k, v in _query_pairs(query) if k not in params]
    return urlencode([*kept, *params.items()], quote_via=quote)


def build(spec: ProxySpec, view: ConnectionView, form: tuple[tuple[str, str], ...] = ()) -> Target:
    """The URL and headers of one attempt (credentials may change between attempts). The base URL
    was checked when it was rendered (or, for an override, before the call)."""
    prepared = prepare(view)
    if spec.base_url_override:
        base = spec.base_url_override.rstrip("/")
    elif prepared.base_url is not None:
        base = prepared.base_url.rstrip("/")
        if spec.endpoint.lstrip("/").startswith(base):
            spec = replace(spec, endpoint=spec.endpoint.lstrip("/")[len(base) :])
    elif prepared.base_url_problem is not None:
        raise InvalidBaseUrl(prepared.base_url_problem)
    else:
        raise UnsupportedProvider()
    path, _, query = spec.endpoint.partition("?")
    if spec.params is not None:
        query = _with_params(query, spec.params)
    url_text = f"{base}/{path.lstrip('/')}"

    provider_query = list(prepared.query)
    provider_headers = dict(prepared.base_headers)
    if prepared.header_templates or prepared.query_templates:
        probe = URL(url_text, encoded=True)
        request_values = {
            **prepared.values,
            "method": spec.method,
            "endpoint": spec.endpoint,
            "host": probe.host or "",
            "path": probe.path,
        }
        provider_query += _render_all(dict(prepared.query_templates), request_values)
        provider_headers.update(_render_all(dict(prepared.header_templates), request_values))
    masked_query = ""
    if provider_query:
        given = {k for k, _ in _query_pairs(query)}
        clash = sorted(given & {k for k, _ in provider_query})
        if clash:
            raise InvalidQueryParams(
                f"The query parameter {', '.join(clash)} is set by the integration's provider; "
                "remove it from the endpoint",
                errors=[{"code": "custom", "message": "set by the provider", "path": [k]} for k in clash],
            )
        injected_query = "&".join(f"{quote(k, safe=_URL_SAFE)}={quote(v, safe=_URL_SAFE)}" for k, v in provider_query)
        masked_query = "&".join(f"{quote(k, safe=_URL_SAFE)}={MASK}" for k, _ in provider_query)
        full_query = f"{query}&{injected_query}" if query else injected_query
    else:
        full_query = query
    url = URL(f"{url_text}?{full_query}" if full_query else url_text, encoded=True)

    headers: CIMultiDict[str] = CIMultiDict(provider_headers)
    injected = set(provider_headers)
    for name, value in spec.headers:
        lower = name.lower()
        if lower in _PROTECTED and lower in provider_headers:
            continue
        headers[name] = value
        injected.discard(lower)
    # a signature is the auth mode's header: provider or caller Authorization headers come first
    if prepared.signed and "authorization" not in headers:
        signature = auth.signed_header(view, spec.method, url, form)
        if signature is not None:
            headers["authorization"] = signature
            injected.add("authorization")

    logged_query = f"{query}&{masked_query}" if query and masked_query else (query or masked_query)
    log_url = f"{url_text}?{logged_query}" if logged_query else url_text
    for secret, encoded in prepared.secrets:
        if secret in log_url:
            log_url = log_url.replace(secret, MASK)
        if encoded is not None and encoded in log_url:
            log_url = log_url.replace(encoded, MASK)
    return Target(url=url, headers=headers, log_url=log_url, injected=frozenset(injected))


__all__ = ["MASK", "Prepared", "Target", "build", "check_base_url", "prepare"]
