from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import pytest

from nango.config import SettingsError, load
from nango.providers import (
    CatalogRef,
    InvalidProvidersFile,
    Provider,
    ProviderCatalog,
    ProvidersSettings,
    UnknownProvider,
    load_catalog,
)
from nango.providers.interpolate import connection_config_keys, render, template_values

REQUIRED = [
    "github", "github-app", "gitlab", "bitbucket", "google", "google-mail", "google-calendar", "google-drive",
    "google-sheets", "microsoft", "outlook", "microsoft-teams", "one-drive", "sharepoint-online", "slack", "discord",
    "notion", "linear", "jira", "confluence", "asana", "clickup", "monday", "trello", "airtable", "hubspot",
    "salesforce", "salesforce-sandbox", "pipedrive", "zoho-crm", "intercom", "zendesk", "freshdesk", "front",
    "shopify", "stripe", "quickbooks", "xero", "netsuite-tba", "gusto", "bamboohr-basic", "greenhouse-basic",
    "lever", "dropbox", "box", "zoom", "calendly", "docusign", "figma", "miro", "linkedin", "twitter-v2", "reddit",
    "twilio", "sendgrid", "mailchimp", "klaviyo", "openai", "anthropic",
]  # fmt: skip

CATEGORIES = {
    "accounting", "ai", "analytics", "ats", "banking", "cms", "communication", "crm", "design", "dev-tools",
    "e-commerce", "erp", "hr", "invoicing", "knowledge-base", "legal", "marketing", "other", "payment",
    "productivity", "search", "social", "sports", "storage", "support", "surveys", "ticketing", "video",
}  # fmt: skip


@pytest.fixture(scope="module")
def catalog() -> ProviderCatalog:
    return load_catalog()


def test_providers_yaml_ships_as_package_data() -> None:
    assert resources.files("nango.providers").joinpath("providers.yaml").is_file()


def test_packaged_catalog_has_every_listed_provider(catalog: ProviderCatalog) -> None:
    assert len(catalog) >= 110
    assert [name for name in REQUIRED if name not in catalog] == []


def test_every_entry_has_identity_fields(catalog: ProviderCatalog) -> None:
    for name in catalog.names():
        provider = catalog.get(name)
        assert provider is not None
        assert provider.display_name.strip(), name
        assert provider.categories, name
        assert set(provider.categories) <= CATEGORIES, name
        assert provider.docs.startswith("https://"), name
        assert provider.auth_mode, name


def test_every_oauth2_entry_has_authorization_and_token_urls(catalog: ProviderCatalog) -> None:
    for name in catalog.names():
        provider = catalog.get(name)
        assert provider is not None
        if provider.auth_mode == "OAUTH2":
            assert provider.authorization_url, name
            assert provider.token_url, name


def test_catalog_uses_every_common_auth_mode(catalog: ProviderCatalog) -> None:
    modes = {provider.auth_mode for provider in (catalog.get(name) for name in catalog.names()) if provider}
    assert {"OAUTH2", "OAUTH2_CC", "OAUTH1", "API_KEY", "BASIC", "APP", "JWT", "TBA", "NONE"} <= modes


def test_key_and_basic_entries_declare_their_credential_fields(catalog: ProviderCatalog) -> None:
    for name in catalog.names():
        provider = catalog.get(name)
        assert provider is not None
        if provider.auth_mode == "API_KEY":
            assert provider.credentials is not None, name
            assert "apiKey" in provider.credentials, name
            assert provider.proxy is not None, name
            assert provider.proxy.base_url, name
            used = json.dumps(provider.proxy.model_dump(mode="json", exclude_none=True))
            assert "${apiKey}" in used or "${credentials.apiKey}" in used, name
        if provider.auth_mode == "BASIC":
            assert provider.credentials is not None, name
            assert {"username", "password"} <= set(provider.credentials), name


def _sample_values(provider: Provider) -> dict[str, object]:
    config: dict[str, object] = {key: "sample" for key in provider.connection_config or {}}
    for key in [*(provider.token_response_metadata or []), *(provider.redirect_uri_metadata or [])]:
        config[key] = "sample"
    credentials = {key: "sample" for key in provider.credentials or {}}
    credentials.update(apiKey="k", username="u", password="p", access_token="t")
    return template_values(connection_config=config, credentials=credentials, client_id="id", client_secret="s")


def test_every_template_in_the_catalog_resolves_from_declared_fields(catalog: ProviderCatalog) -> None:
    for name in catalog.names():
        provider = catalog.get(name)
        assert provider is not None
        values = _sample_values(provider)
        templates: list[str] = []
        if provider.authorization_url:
            templates.append(provider.authorization_url)
        if isinstance(provider.token_url, str):
            templates.append(provider.token_url)
        elif provider.token_url:
            templates.extend(provider.token_url.values())
        if provider.proxy is not None:
            templates.extend([provider.proxy.base_url or "", *(provider.proxy.headers or {}).values()])
        for template in templates:
            rendered = render(template, values)
            assert rendered.unresolved == (), (name, template)
        # every connection config key a template mentions is one the connect form or the token response fills
        for template in templates:
            for key in connection_config_keys(template):
                assert key in values["connectionConfig"], (name, key)  # type: ignore[operator]


def test_raw_dict_is_json_and_round_trips(catalog: ProviderCatalog) -> None:
    raw = catalog.as_raw_dict()
    assert json.loads(json.dumps(raw)) == raw
    assert set(raw) == set(catalog.names())
    for name, entry in raw.items():
        assert Provider.model_validate(entry) == catalog.get(name)
    raw["github"]["display_name"] = "changed"
    assert catalog.as_raw_dict()["github"]["display_name"] == "GitHub"


def test_public_entry_adds_name_and_logo_url(catalog: ProviderCatalog) -> None:
    entry = catalog.public_entry("slack", logo_base_url="https://nango.example.com/images/template-logos/")
    assert entry["name"] == "slack"
    assert entry["logo_url"] == "https://nango.example.com/images/template-logos/slack.svg"
    assert entry["auth_mode"] == "OAUTH2"
    assert entry["scope_separator"] == ","
    with pytest.raises(UnknownProvider):
        catalog.public_entry("no-such-provider", logo_base_url="https://x")


def test_alias_inherits_every_field_and_overrides_what_it_sets() -> None:
    catalog = load_catalog(
        extra_yaml="""
my-gitlab:
  alias: gitlab
  display_name: Our GitLab
  authorization_url: https://git.example.com/oauth/authorize
  proxy:
    base_url: https://git.example.com/api/v4
"""
    )
    alias, target = catalog.get("my-gitlab"), catalog.get("gitlab")
    assert alias is not None
    assert target is not None
    assert alias.display_name == "Our GitLab"
    assert alias.authorization_url == "https://git.example.com/oauth/authorize"
    assert alias.token_url == target.token_url
    assert alias.auth_mode == "OAUTH2"
    assert alias.proxy is not None
    assert target.proxy is not None
    assert alias.proxy.base_url == "https://git.example.com/api/v4"
    assert alias.proxy.paginate == target.proxy.paginate
    assert alias.proxy.retry == target.proxy.retry


def test_packaged_aliases_resolve(catalog: ProviderCatalog) -> None:
    sandbox = catalog.get("salesforce-sandbox")
    assert sandbox is not None
    assert sandbox.token_response_metadata == ["instance_url"]
    assert sandbox.authorization_url is not None
    assert "test.salesforce.com" in sandbox.authorization_url
    outlook = catalog.get("outlook")
    assert outlook is not None
    assert outlook.proxy is not None
    assert outlook.proxy.base_url == "https://graph.microsoft.com"


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ("acme:\n  alias: no-such-provider\n  display_name: Acme\n", "alias", "unknown provider 'no-such-provider'"),
        ("a1:\n  alias: b1\nb1:\n  alias: a1\n", "alias", "alias cycle"),
    ],
)
def test_bad_alias_is_refused(extra: str, path: str, message: str) -> None:
    with pytest.raises(InvalidProvidersFile) as caught:
        load_catalog(extra_yaml=extra)
    assert caught.value.errors is not None
    assert any(e["path"] == path and message in e["message"] for e in caught.value.errors)


def test_operator_file_adds_a_provider_and_replaces_an_entry_whole(tmp_path: Path) -> None:
    operator = tmp_path / "providers.yaml"
    operator.write_text(
        """
acme-crm:
  display_name: Acme CRM
  categories: [crm]
  auth_mode: API_KEY
  docs: https://docs.acme.example
  proxy:
    base_url: https://api.acme.example
    headers:
      authorization: "Bearer ${apiKey}"
  credentials:
    apiKey: {type: string, title: API Key}
github:
  display_name: GitHub Enterprise
  categories: [dev-tools]
  auth_mode: OAUTH2
  docs: https://docs.github.com/en/enterprise-server
  authorization_url: https://ghe.example.com/login/oauth/authorize
  token_url: https://ghe.example.com/login/oauth/access_token
""",
        encoding="utf-8",
    )
    catalog = load_catalog(extra_file=operator)
    acme, github = catalog.get("acme-crm"), catalog.get("github")
    assert acme is not None
    assert acme.auth_mode == "API_KEY"
    assert github is not None
    assert github.display_name == "GitHub Enterprise"
    assert github.proxy is None  # replaced whole, not merged with the packaged entry
    assert catalog.get("gitlab") == load_catalog().get("gitlab")


def test_operator_alias_may_target_a_packaged_provider(tmp_path: Path) -> None:
    operator = tmp_path / "providers.yaml"
    operator.write_text("zendesk-eu:\n  alias: zendesk\n  display_name: Zendesk EU\n", encoding="utf-8")
    alias = load_catalog(extra_file=operator).get("zendesk-eu")
    assert alias is not None
    assert alias.auth_mode == "OAUTH2"


@pytest.mark.parametrize(
    ("extra", "provider", "path"),
    [
        ("bad1:\n  displayname: x\n  display_name: x\n  categories: [crm]\n  auth_mode: NONE\n"
         "  docs: https://x.example\n", "bad1", "displayname"),
        ("bad2:\n  display_name: x\n  categories: [crm]\n  auth_mode: NONE\n  docs: https://x.example\n"
         "  proxy:\n    retry:\n      at: {x: 1}\n", "bad2", "proxy.retry.at"),
        ("bad3:\n  display_name: x\n  categories: [crm]\n  auth_mode: NOT_A_MODE\n  docs: https://x.example\n",
         "bad3", "auth_mode"),
        ("bad4:\n  display_name: x\n  categories: [crm]\n  auth_mode: NONE\n", "bad4", "docs"),
        ("bad5:\n  display_name: x\n  categories: [crm]\n  auth_mode: NONE\n  docs: https://x.example\n"
         "  proxy:\n    paginate: {type: cursor, cursor_name_in_request: c}\n", "bad5", "proxy.paginate"),
    ],
)  # fmt: skip
def test_invalid_operator_file_names_provider_and_field(tmp_path: Path, extra: str, provider: str, path: str) -> None:
    operator = tmp_path / "providers.yaml"
    operator.write_text(extra, encoding="utf-8")
    with pytest.raises(InvalidProvidersFile) as caught:
        load_catalog(extra_file=operator)
    assert f"provider {provider!r} ({operator})" in caught.value.message
    assert path in caught.value.message
    assert caught.value.errors is not None
    assert any(e["provider"] == provider and e["path"].startswith(path) for e in caught.value.errors)


def test_mode_specific_fields_are_required() -> None:
    with pytest.raises(InvalidProvidersFile) as caught:
        load_catalog(
            extra_yaml="o1:\n  display_name: x\n  categories: [crm]\n  auth_mode: OAUTH1\n  docs: https://x.example\n"
            "  authorization_url: https://x.example/a\n  token_url: https://x.example/t\n"
        )
    assert "provider 'o1'" in caught.value.message
    assert "request_url" in caught.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1, 2", "not valid YAML"),
        ("- just\n- a list\n", "expected a map"),
        ("acme: just text\n", "must be a map"),
        ("x:\n  display_name: a\nx:\n  display_name: b\n", "duplicate key 'x'"),
    ],
)
def test_malformed_file_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidProvidersFile, match=message):
        load_catalog(extra_yaml=text)


def test_unreadable_operator_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidProvidersFile, match="cannot read"):
        load_catalog(extra_file=tmp_path / "missing.yaml")


def test_empty_operator_file_changes_nothing(tmp_path: Path, catalog: ProviderCatalog) -> None:
    operator = tmp_path / "providers.yaml"
    operator.write_text("# nothing yet\n", encoding="utf-8")
    assert load_catalog(extra_file=operator).names() == catalog.names()


@pytest.mark.parametrize(
    ("pattern", "included", "excluded"),
    [
        ("git", ["github", "github-app", "gitlab"], ["slack"]),
        ("GITHUB", ["github"], ["gitlab"]),
        ("^google-", ["google-mail", "google-drive"], ["google"]),
        ("gmail", ["google-mail"], ["google"]),  # display name
        ("sales(force|loft)$", ["salesforce", "salesloft"], ["salesforce-sandbox"]),
        ("", ["slack", "zoom"], []),
    ],
)
def test_search_is_a_case_insensitive_regex_on_slug_and_display_name(
    catalog: ProviderCatalog, pattern: str, included: list[str], excluded: list[str]
) -> None:
    found = catalog.search(pattern)
    assert set(included) <= set(found)
    assert not set(excluded) & set(found)


def test_search_treats_an_invalid_regex_as_text(catalog: ProviderCatalog) -> None:
    assert catalog.search("[") == []
    assert catalog.search("monday.com(") == []
    assert catalog.search("aha!") == ["aha"]


def test_search_refuses_catastrophic_backtracking(catalog: ProviderCatalog) -> None:
    started = time.monotonic()
    assert catalog.search("(.+)+x$") == []
    assert time.monotonic() - started < 1


def test_catalog_ref_swaps_whole_catalogs(catalog: ProviderCatalog) -> None:
    ref = CatalogRef(catalog)
    replacement = load_catalog(extra_yaml="hn2:\n  alias: hacker-news\n")
    ref.swap(replacement)
    assert ref.current is replacement
    assert "hn2" in ref.current


def test_settings_read_nango_variable_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NANGO_PROVIDERS_FILE", str(tmp_path / "p.yaml"))
    monkeypatch.setenv("PROVIDERS_URL", "https://config.example.com/providers.yaml")
    monkeypatch.setenv("PROVIDERS_RELOAD_INTERVAL", "120000")
    settings = load(ProvidersSettings)
    assert settings.providers_file == tmp_path / "p.yaml"
    assert settings.providers_url == "https://config.example.com/providers.yaml"
    assert settings.reload_interval_seconds == 120


def test_settings_defaults_and_blank_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDERS_URL", "")
    monkeypatch.setenv("NANGO_PROVIDERS_FILE", " ")
    monkeypatch.delenv("PROVIDERS_RELOAD_INTERVAL", raising=False)
    settings = load(ProvidersSettings)
    assert settings.providers_url is None
    assert settings.providers_file is None
    assert settings.providers_reload_interval_ms == 60_000


@pytest.mark.parametrize(("name", "value"), [("PROVIDERS_URL", "ftp://x/p.yaml"), ("PROVIDERS_RELOAD_INTERVAL", "5")])
def test_settings_refuse_bad_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load(ProvidersSettings)
