"""`nango.paginate`: cursor, link and offset strategies against recorded page shapes, with the
provider's defaults merged with the caller's `paginate=`."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sdk_fakes import FakeBackend, context

from nango.sdk import Nango, PaginationError
from nango.sdk.pagination import get_path, link_from_header
from nango.sdk.runtime import ProxyRequest

PEOPLE = [{"id": str(i)} for i in range(1, 6)]


def params(request: ProxyRequest) -> dict[str, str]:
    query = {k: v[0] for k, v in parse_qs(urlsplit(request.endpoint).query).items()}
    return {**query, **request.params}


async def pages(nango: Nango, **options: Any) -> list[list[Any]]:
    return [page async for page in nango.paginate(**options)]


async def test_cursor_from_the_providers_defaults() -> None:
    # HubSpot-like: {"results": [...], "paging": {"next": {"after": "..."}}}
    def answer(request: ProxyRequest) -> tuple[int, Any, dict[str, str]]:
        after = int(params(request).get("after", "0"))
        limit = int(params(request)["limit"])
        body: dict[str, Any] = {"results": PEOPLE[after : after + limit]}
        if after + limit < len(PEOPLE):
            body["paging"] = {"next": {"after": str(after + limit)}}
        return 200, body, {}

    backend = FakeBackend(
        answer,
        defaults={
            "type": "cursor",
            "cursor_name_in_request": "after",
            "cursor_path_in_response": "paging.next.after",
            "response_path": "results",
            "limit_name_in_request": "limit",
            "limit": 100,
        },
    )
    nango = Nango(context(), backend)
    assert await pages(nango, endpoint="/crm/v3/objects/contacts", paginate={"limit": 2}) == [
        PEOPLE[0:2],
        PEOPLE[2:4],
        PEOPLE[4:5],
    ]
    assert [params(r).get("after") for r in backend.requests] == [None, "2", "4"]
    assert all(params(r)["limit"] == "2" for r in backend.requests)


@pytest.mark.parametrize("cursor", ["", "   ", None, True, {"x": 1}])
def test_cursor_stops_on_an_empty_or_odd_cursor(cursor: Any) -> None:
    from nango.sdk.pagination import _valid_cursor

    assert not _valid_cursor(cursor)


async def test_cursor_in_the_body_of_a_post() -> None:
    def answer(request: ProxyRequest) -> tuple[int, Any, dict[str, str]]:
        import json

        body = json.loads(request.body or b"{}")
        start = int(body.get("start_cursor") or 0)
        return 200, {"results": PEOPLE[start : start + 3], "next_cursor": start + 3 if start + 3 < 5 else None}, {}

    backend = FakeBackend(answer)
    nango = Nango(context(), backend)
    got = await pages(
        nango,
        endpoint="/v1/databases/db/query",
        method="POST",
        data={"filter": {"x": 1}},
        paginate={
            "type": "cursor",
            "cursor_name_in_request": "start_cursor",
            "cursor_path_in_response": "next_cursor",
            "response_path": "results",
        },
    )
    assert got == [PEOPLE[0:3], PEOPLE[3:5]]
    assert backend.requests[1].body == b'{"filter":{"x":1},"start_cursor":3}'
    assert backend.requests[1].params == {}


async def test_link_from_the_link_header() -> None:
    # GitHub-like: a JSON array per page and `Link: <...>; rel="next"`
    def answer(request: ProxyRequest) -> tuple[int, Any, dict[str, str]]:
        page = int(params(request).get("page", "1"))
        headers = {}
        if page < 3:
            headers["Link"] = (
                f'<https://api.github.test/user/repos?page={page + 1}&per_page=2>; rel="next", '
                '<https://api.github.test/user/repos?page=3&per_page=2>; rel="last"'
            )
        return 200, PEOPLE[(page - 1) * 2 : page * 2], headers

    backend = FakeBackend(
        answer, defaults={"type": "link", "link_rel_in_response_header": "next", "limit_name_in_request": "per_page"}
    )
    nango = Nango(context(), backend)
    got = await pages(nango, endpoint="/user/repos", paginate={"limit": 2})
    assert got == [PEOPLE[0:2], PEOPLE[2:4], PEOPLE[4:5]]
    second = backend.requests[1]
    assert second.endpoint == "/user/repos?page=2&per_page=2"
    assert second.params == {}
    assert second.base_url_override == "https://api.github.test"


async def test_link_from_the_body_as_a_path() -> None:
    def answer(request: ProxyRequest) -> tuple[int, Any, dict[str, str]]:
        page = int(params(request).get("page", "1"))
        nxt = f"/v2/calls?page={page + 1}" if page < 2 else None
        return 200, {"calls": PEOPLE[(page - 1) * 3 : page * 3], "meta": {"next_page_link": nxt}}, {}

    backend = FakeBackend(answer)
    nango = Nango(context(), backend)
    got = await pages(
        nango,
        endpoint="/v2/calls",
        paginate={"type": "link", "link_path_in_response_body": "meta.next_page_link", "response_path": "calls"},
    )
    assert got == [PEOPLE[0:3], PEOPLE[3:5]]
    assert backend.requests[1].endpoint == "/v2/calls?page=2"
    assert backend.requests[1].base_url_override is None


async def test_offset_by_response_size_stops_on_a_short_page() -> None:
    def answer(request: ProxyRequest) -> tuple[int, Any, dict[str, str]]:
        offset, limit = int(params(request)["offset"]), int(params(request)["limit"])
        return 200, {"data": {"items": PEOPLE[offset : offset + limit]}}, {}

    backend = FakeBackend(answer)
    nango = Nango(context(), backend)
    config = {
        "type": "offset",
        "offset_name_in_request": "offset",
        "limit_name_in_request": "limit",
        "limit": 2,
        "response_path": "data.items",
    }
    seen: list[Any] = []
    got = await pages(nango, endpoint="/items", paginate={**config, "on_page": lambda page: seen.append(page)})
    assert got == [PEOPLE[0:2], PEOPLE[2:4], PEOPLE[4:5]]
    assert [params(r)["offset"] for r in backend.requests] == ["0", "2", "4"]
    assert [s["next_page_param"] for s in seen] == [2, 4]


async def test_offset_per_page_stops_on_an_empty_page() -> None:
    def answer(request: ProxyRequest) -> tuple[int, Any, dict[str, str]]:
        page = int(params(request)["page"])
        return 200, PEOPLE[(page - 1) * 2 : page * 2], {}

    backend = FakeBackend(answer)
    nango = Nango(context(), backend)
    got = await pages(
        nango,
        endpoint="/items",
        paginate={
            "type": "offset",
            "offset_name_in_request": "page",
            "offset_start_value": 1,
            "offset_calculation_method": "per-page",
        },
    )
    assert got == [PEOPLE[0:2], PEOPLE[2:4], PEOPLE[4:5]]
    assert [params(r)["page"] for r in backend.requests] == ["1", "2", "3", "4"]


async def test_configuration_errors_say_what_is_missing() -> None:
    nango = Nango(context(), FakeBackend(lambda _r: (200, {"not": "a list"}, {})))
    with pytest.raises(PaginationError, match="no default pagination"):
        await pages(nango, endpoint="/x")
    with pytest.raises(PaginationError, match="cursor_name_in_request"):
        await pages(nango, endpoint="/x", paginate={"type": "cursor"})
    with pytest.raises(PaginationError, match="not an array"):
        await pages(nango, endpoint="/x", paginate={"type": "offset", "offset_name_in_request": "o"})


def test_paths_and_link_headers() -> None:
    data = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert get_path(data, "a.b[1].c") == 2
    assert get_path(data, "a.x.c") is None
    assert get_path(data, "a.b[5]") is None
    header = '<https://x.test/p?page=2>; rel="next", <https://x.test/p?page=9>; rel="last"'
    assert link_from_header(header, "next") == "https://x.test/p?page=2"
    assert link_from_header(header, "prev") is None
    assert link_from_header(None, "next") is None
