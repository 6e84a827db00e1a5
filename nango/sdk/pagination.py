"""Provider pagination (Nango §6.4): cursor, link and offset, over any proxy call.

The provider's `proxy.paginate` defaults are merged with the caller's `paginate=` dict (the caller's
keys win); each page's records are found at `response_path` and yielded as a list.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from nango.providers import Paginate
from nango.sdk.errors import PaginationError

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PATH_PART = re.compile(r"[^.[\]]+|\[(\d+)\]")
_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_REL = re.compile(r"""rel\s*=\s*"?([^";,]+)"?""", re.IGNORECASE)


def get_path(data: Any, path: str) -> Any:
    """`data` at a lodash-style path (`a.b[0].c`); None when any step is missing."""
    current = data
    for match in _PATH_PART.finditer(path):
        index, key = match.group(1), match.group(0)
        if index is not None:
            if not isinstance(current, list) or int(index) >= len(current):
                return None
            current = current[int(index)]
        elif isinstance(current, Mapping) and key in current:
            current = current[key]
        else:
            return None
    return current


def link_from_header(header: str | None, rel: str) -> str | None:
    """The URL of the `rel` relation in an RFC 5988 `Link` header."""
    if not header:
        return None
    for match in _LINK.finditer(header):
        rels = _REL.search(match.group(2))
        if rels is not None and rel in rels.group(1).split():
            return match.group(1)
    return None


def pagination_config(defaults: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None) -> Paginate:
    """The provider's defaults with the caller's keys laid over them, validated."""
    merged = {**(defaults or {}), **(overrides or {})}
    merged.pop("on_page", None)
    if "type" not in merged:
        raise PaginationError("this provider has no default pagination: pass paginate={'type': ...}")
    try:
        return Paginate.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'paginate'}: {e['msg']}" for e in exc.errors())
        raise PaginationError(f"invalid pagination configuration: {problems}") from None


class PageRequest:
    """The request of the next page: the caller's endpoint, parameters and body, moved on per page."""

    def __init__(self, method: str, endpoint: str, params: Mapping[str, Any] | None, data: Any, in_body: bool) -> None:
        self.method = method
        self.endpoint = endpoint
        self.params: dict[str, Any] = dict(params or {})
        self.data = data
        self.in_body = in_body
        self.base_url_override: str | None = None
        if in_body and data is not None and not isinstance(data, Mapping):
            raise PaginationError("paginating in the body needs `data` to be a dict")

    def set(self, name: str, value: Any) -> None:
        if self.in_body:
            self.data = {**(self.data or {}), name: value}
        else:
            self.params[name] = value

    def follow(self, link: str) -> None:
        """Point at a next-page link: a full URL or a path with its query."""
        parts = urlsplit(link)
        if parts.scheme and parts.netloc:
            self.base_url_override = f"{parts.scheme}://{parts.netloc}"
        self.endpoint = parts.path + (f"?{parts.query}" if parts.query else "")
        self.params = {}


def _records(body: Any, config: Paginate) -> list[Any]:
    records = get_path(body, config.response_path) if config.response_path else body
    if records is None:
        return []
    if not isinstance(records, list):
        where = f"at response_path {config.response_path!r}" if config.response_path else "the response body"
        raise PaginationError(f"{where} is not an array: set paginate={{'response_path': ...}}")
    return records


def _valid_cursor(cursor: Any) -> bool:
    if isinstance(cursor, bool):
        return False
    if isinstance(cursor, str):
        return bool(cursor.strip())
    return isinstance(cursor, int | float)


async def paginate(
    fetch: Callable[[PageRequest], Awaitable[tuple[Any, Mapping[str, str]]]],
    config: Paginate,
    request: PageRequest,
    on_page: Callable[..., Any] | None = None,
) -> AsyncIterator[list[Any]]:
    """Yield each page's records until the strategy says there are no more. `fetch` makes one call
    and returns (parsed body, response headers)."""
    if config.limit is not None and config.limit_name_in_request:
        request.set(config.limit_name_in_request, config.limit)
    offset = config.offset_start_value or 0
    while True:
        if config.type == "offset":
            assert config.offset_name_in_request is not None
            request.set(config.offset_name_in_request, str(offset))
        body, headers = await fetch(request)
        records = _records(body, config)
        if not records:
            return
        yield records
        if config.type == "cursor":
            assert config.cursor_path_in_response is not None
            assert config.cursor_name_in_request is not None
            cursor = get_path(body, config.cursor_path_in_response)
            if not _valid_cursor(cursor):
                return
            next_param: Any = cursor.strip() if isinstance(cursor, str) else cursor
            request.set(config.cursor_name_in_request, next_param)
        elif config.type == "link":
            link = None
            if config.link_rel_in_response_header:
                link = link_from_header(headers.get("link") or headers.get("Link"), config.link_rel_in_response_header)
            elif config.link_path_in_response_body:
                found = get_path(body, config.link_path_in_response_body)
                link = found if isinstance(found, str) and found else None
            if not link:
                return
            next_param = link
            request.follow(link)
        else:
            if config.limit is not None and len(records) < config.limit:
                return
            offset += 1 if config.offset_calculation_method == "per-page" else len(records)
            next_param = offset
        if on_page is not None:
            outcome = on_page({"next_page_param": next_param, "response": body})
            if inspect.isawaitable(outcome):
                await outcome


__all__ = ["PageRequest", "get_path", "link_from_header", "paginate", "pagination_config"]
