"""The outbound URL policy: Nango's JSON and defaults, address classes, URL checks."""

from __future__ import annotations

import pytest
from yarl import URL

from nango.outbound import OutboundDenied, OutboundPolicy, PolicyInput, classify_address, oauth_policy, server_policy
from nango.outbound.policy import parse_denylist_env, parse_policy_json


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("[::1]", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a00:1", "private"),
        ("2002:a00:1::", "private"),
        ("2001:0:4136:e378::1", "private"),
        ("169.254.169.254", "link_local"),
        ("fe80::1", "link_local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "private"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("api.github.com", None),
    ],
)
def test_address_classes(address: str, kind: str | None) -> None:
    assert classify_address(address) == kind


def test_defaults_block_metadata_loopback_private_and_link_local() -> None:
    policy = server_policy(None, None)
    assert policy.mode == "denylist"
    assert {"169.254.169.254", "metadata.google.internal", "localhost", "127.0.0.1", "::1"} <= policy.denylist
    for url, reason in [
        ("http://localhost:8080/", "denied_hostname"),
        ("http://METADATA.google.internal./computeMetadata", "denied_hostname"),
        ("http://10.1.2.3/", "denied_ip"),
        ("http://[fe80::1]/", "denied_ip"),
        ("http://127.1.1.1/", "denied_ip"),
        ("file:///etc/passwd", "invalid_url"),
        ("ftp://example.com/", "invalid_scheme"),
    ]:
        with pytest.raises(OutboundDenied) as denied:
            policy.check_url(URL(url))
        assert denied.value.reason == reason, url
    policy.check_url(URL("https://api.github.com/user"))
    policy.check_url(URL("http://93.184.216.34/"))


def test_allowing_loopback_on_purpose_keeps_everything_else_blocked() -> None:
    policy = server_policy('{"blockLoopback": false}', None)
    policy.check_url(URL("http://127.0.0.1:3000/"))
    policy.check_url(URL("http://localhost:3000/"))
    policy.check_url(URL("http://[::1]:3000/"))
    for url in ("http://169.254.169.254/", "http://10.0.0.1/", "http://metadata.google.internal/"):
        with pytest.raises(OutboundDenied):
            policy.check_url(URL(url))


def test_permissive_allows_every_address_but_not_every_scheme() -> None:
    policy = server_policy('{"mode": "permissive"}', None)
    assert policy.denylist == frozenset()
    for url in ("http://127.0.0.1/", "http://169.254.169.254/", "http://10.0.0.1/", "http://localhost/"):
        policy.check_url(URL(url))
    with pytest.raises(OutboundDenied):
        policy.check_url(URL("gopher://127.0.0.1/"))


def test_allowlist_mode() -> None:
    policy = server_policy('{"mode": "allowlist", "allowlist": ["github.com", ".slack.com"]}', None)
    policy.check_url(URL("https://api.github.com/"))
    policy.check_url(URL("https://github.com/"))
    policy.check_url(URL("https://hooks.slack.com/"))
    with pytest.raises(OutboundDenied) as denied:
        policy.check_url(URL("https://notgithub.com/"))
    assert denied.value.reason == "allowlist_miss"


def test_denylist_env_as_nango_reads_it() -> None:
    assert parse_denylist_env(None) is None
    assert parse_denylist_env("") == []
    assert parse_denylist_env("[]") == []
    merged = parse_denylist_env('["internal.example.com", "https://evil.example/x"]')
    assert merged is not None
    assert {"127.0.0.1", "internal.example.com"} <= set(merged)
    policy = server_policy(None, '["internal.example.com", "https://evil.example/x"]')
    assert {"internal.example.com", "evil.example", "169.254.169.254"} <= policy.denylist
    # an operator who empties the denylist opts out of it, and with no mode the policy is permissive
    assert server_policy(None, "[]").mode == "permissive"
    with pytest.raises(ValueError, match="JSON array"):
        parse_denylist_env('{"not": "a list"}')


def test_policy_json_is_validated() -> None:
    with pytest.raises(ValueError, match="NANGO_OUTBOUND_URL_POLICY"):
        parse_policy_json("{nope", "NANGO_OUTBOUND_URL_POLICY")
    with pytest.raises(ValueError, match="blockEverything"):
        parse_policy_json('{"blockEverything": true}', "NANGO_OUTBOUND_URL_POLICY")
    with pytest.raises(ValueError, match="maxRedirects"):
        parse_policy_json('{"maxRedirects": 100}', "NANGO_OUTBOUND_URL_POLICY")
    assert parse_policy_json("  ", "X") == PolicyInput()
    policy = server_policy('{"maxRedirects": 2, "denylist": ["a.example"], "blockPrivateIps": false}', None)
    assert (policy.max_redirects, policy.block_private) == (2, False)
    assert {"a.example", "169.254.169.254"} <= policy.denylist


def test_token_endpoint_overlay_allows_private_addresses_only() -> None:
    policy = oauth_policy(None, None)
    policy.check_url(URL("https://10.0.0.5/oauth/token"))
    for url in ("http://127.0.0.1/token", "http://169.254.169.254/", "http://localhost/"):
        with pytest.raises(OutboundDenied):
            policy.check_url(URL(url))
    # the overlay wins over the base policy, which wins over the token-endpoint defaults
    assert oauth_policy('{"blockPrivateIps": true}', None).block_private is True
    assert oauth_policy('{"blockPrivateIps": true}', '{"blockPrivateIps": false}').block_private is False
    assert oauth_policy(None, '{"blockLoopback": false}').denies_host("localhost") is False


def test_policies_are_hashable_keys() -> None:
    assert server_policy(None, None) == server_policy(None, None)
    assert len({server_policy(None, None), oauth_policy(None, None), OutboundPolicy()}) == 2
