"""Outbound safety: `/proxy` never reaches loopback, private, link-local or metadata addresses unless
the operator's NANGO_OUTBOUND_URL_POLICY allows them, whether the address comes from a
Base-Url-Override, the provider's base URL, the connection's config, DNS or a redirect."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest

from nango.outbound import classify_address
from tests.support.proxy import Answer, ProxyClient, provider, proxy_server
from tests.support.upstream import Upstream, start_upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _loopback_name() -> str:
    """A host name (not `localhost`, which is on the denylist) that resolves to this machine."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        addresses = set()
    if not addresses or any(classify_address(address) is None for address in addresses):
        pytest.skip(f"{name!r} does not resolve to loopback or private addresses only here")
    return name


@dataclass
class Servers:
    default: ProxyClient
    loopback: ProxyClient
    permissive: ProxyClient
    up: Upstream
    up6: Upstream
    port: int
    ids: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)


def _providers(port: int, port6: int, hostname: str) -> dict[str, Any]:
    return {
        "s-loopback": provider("NONE", proxy={"base_url": f"http://127.0.0.1:{port}"}),
        "s-ipv6": provider("NONE", proxy={"base_url": f"http://[::1]:{port6}"}),
        "s-private": provider("NONE", proxy={"base_url": "http://10.0.0.1"}),
        "s-metadata": provider("NONE", proxy={"base_url": "http://169.254.169.254/latest"}),
        "s-config": provider("NONE", proxy={"base_url": "http://${connectionConfig.host}:" + str(port)}),
        "s-hostname": provider("NONE", proxy={"base_url": f"http://{hostname}:{port}"}),
    }


@pytest.fixture(scope="module")
async def servers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    tmp = tmp_path_factory.mktemp("proxy-ssrf")
    hostname = _loopback_name()
    async with start_upstream() as up, start_upstream("::1") as up6:
        port, port6 = int(up.url.rsplit(":", 1)[1]), int(up6.url.rsplit(":", 1)[1])
        catalog = _providers(port, port6, hostname)
        fast = {"NANGO_OUTBOUND_CONNECT_TIMEOUT_MS": "300"}
        async with (
            proxy_server(database_url, tmp, catalog, **fast) as default,
            proxy_server(database_url, tmp, catalog, NANGO_OUTBOUND_URL_POLICY='{"blockLoopback": false}') as lo,
            proxy_server(database_url, tmp, catalog, NANGO_OUTBOUND_URL_POLICY='{"mode": "permissive"}', **fast) as p,
        ):
            state = Servers(default, lo, p, up, up6, port)
            for label, client in (("default", default), ("loopback", lo), ("permissive", p)):
                for name in catalog:
                    integration = await client.integration(name)
                    config = {"host": "169.254.169.254"} if name == "s-config" else None
                    connection = await client.connection(integration, {"type": "NONE"}, connection_config=config)
                    state.ids[(label, name)] = (integration, connection)
            yield state


async def _call(servers: Servers, label: str, name: str, endpoint: str = "/echo/x", **headers: str) -> Answer:
    client: ProxyClient = getattr(servers, label)
    integration, connection = servers.ids[(label, name)]
    return await client.proxy("GET", endpoint, integration=integration, connection=connection, headers=headers)


REFUSED_BY_DEFAULT = [
    (
        "Base-Url-Override 127.0.0.1",
        "s-metadata",
        {"Base-Url-Override": "http://127.0.0.1:{port}"},
        "base_url_override_not_allowed",
    ),
    (
        "Base-Url-Override 169.254.169.254",
        "s-metadata",
        {"Base-Url-Override": "http://169.254.169.254"},
        "base_url_override_not_allowed",
    ),
    (
        "Base-Url-Override 10.0.0.1",
        "s-metadata",
        {"Base-Url-Override": "http://10.0.0.1"},
        "base_url_override_not_allowed",
    ),
    (
        "Base-Url-Override [::1]",
        "s-metadata",
        {"Base-Url-Override": "http://[::1]:{port}"},
        "base_url_override_not_allowed",
    ),
    (
        "Base-Url-Override IPv4-mapped loopback",
        "s-metadata",
        {"Base-Url-Override": "http://[::ffff:7f00:1]:{port}"},
        "base_url_override_not_allowed",
    ),
    ("provider URL 127.0.0.1", "s-loopback", {}, "outbound_url_denied"),
    ("provider URL [::1]", "s-ipv6", {}, "outbound_url_denied"),
    ("provider URL 10.0.0.1", "s-private", {}, "outbound_url_denied"),
    ("provider URL 169.254.169.254", "s-metadata", {}, "outbound_url_denied"),
    ("connection config pointing at 169.254.169.254", "s-config", {}, "outbound_url_denied"),
    ("host name resolving to loopback", "s-hostname", {}, "outbound_url_denied"),
]


@pytest.mark.parametrize(
    ("case", "name", "headers", "code"), REFUSED_BY_DEFAULT, ids=[c[0] for c in REFUSED_BY_DEFAULT]
)
async def test_refused_by_the_default_policy(
    servers: Servers, case: str, name: str, headers: dict[str, str], code: str
) -> None:
    sent = {k: v.format(port=servers.port) for k, v in headers.items()}
    answer = await _call(servers, "default", name, **sent)
    assert (answer.status, answer.code) == (400, code), answer.body
    assert answer.json()["error"]["payload"]["reason"] in {"denied_hostname", "denied_ip", "denied_dns"}


async def test_host_name_is_checked_after_resolution(servers: Servers) -> None:
    answer = await _call(servers, "default", "s-hostname")
    assert answer.json()["error"]["payload"]["reason"] == "denied_dns"


async def test_loopback_allowed_on_purpose_but_nothing_else(servers: Servers) -> None:
    for name in ("s-loopback", "s-ipv6", "s-hostname"):
        answer = await _call(servers, "loopback", name)
        assert answer.status == 200, (name, answer.body)
    for name in ("s-private", "s-metadata", "s-config"):
        answer = await _call(servers, "loopback", name)
        assert (answer.status, answer.code) == (400, "outbound_url_denied"), (name, answer.body)
    override = await _call(servers, "loopback", "s-metadata", **{"Base-Url-Override": servers.up.url})
    assert override.status == 200


@pytest.mark.parametrize(
    "target", ["http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[fd00::1]/"]
)
async def test_a_redirect_into_a_refused_address_is_not_followed(servers: Servers, target: str) -> None:
    answer = await _call(servers, "loopback", "s-loopback", f"/redirect?to={quote(target, safe='')}")
    assert (answer.status, answer.code) == (400, "outbound_url_denied"), answer.body
    assert answer.json()["error"]["payload"]["reason"] == "redirect_denied"


async def test_a_redirect_chain_is_capped(servers: Servers) -> None:
    target = "/echo/end"
    for _ in range(6):
        target = f"{servers.up.url}/redirect?to={quote(target, safe='')}"
    answer = await _call(servers, "loopback", "s-loopback", target.removeprefix(servers.up.url))
    assert (answer.status, answer.code) == (502, "too_many_redirects"), answer.body
    within = f"/redirect?to={quote(servers.up.url + '/echo/end', safe='')}"
    assert (await _call(servers, "loopback", "s-loopback", within)).status == 200


async def test_permissive_mode_allows_every_address(servers: Servers) -> None:
    for name in ("s-loopback", "s-ipv6", "s-hostname"):
        answer = await _call(servers, "permissive", name)
        assert answer.status == 200, (name, answer.body)
    # whatever answers there (or does not), the call went out: it is not refused by the policy
    for name in ("s-private", "s-metadata"):
        answer = await _call(servers, "permissive", name)
        assert answer.code not in {"outbound_url_denied", "base_url_override_not_allowed"}, (name, answer.body)
        assert answer.status != 400, (name, answer.body)
