from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import Field

from nango.config import DatabaseSettings, Port, ServiceUrls, Settings, SettingsError, load
from nango.crypto import generate_key
from nango.server.settings import ServerSettings


class Example(Settings):
    port: Port = Field(3003, validation_alias="NANGO_EXAMPLE_PORT")


def test_defaults_follow_nango(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NANGO_DATABASE_URL", "NANGO_DB_HOST", "NANGO_DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert load(DatabaseSettings).main_database_url() == "postgresql://nango:nango@localhost:5432/nango"


def test_db_parts_are_url_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NANGO_DATABASE_URL", raising=False)
    monkeypatch.setenv("NANGO_DB_PASSWORD", "p@ss/word")
    monkeypatch.setenv("NANGO_DB_SSL", "true")
    url = load(DatabaseSettings).main_database_url()
    assert url == "postgresql://nango:p%40ss%2Fword@localhost:5432/nango?sslmode=require"


def test_service_urls_accept_nango_http_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_SERVICE_URL", "http://orchestrator:3008/")
    assert load(ServiceUrls).orchestrator_url == "orchestrator:3008"


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANGO_EXAMPLE_PORT", "99999")
    with pytest.raises(SettingsError) as caught:
        load(Example)
    assert str(caught.value) == (
        "invalid setting NANGO_EXAMPLE_PORT: input should be less than or equal to 65535 (got '99999')"
    )


def test_the_alias_actually_set_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVER_PORT", raising=False)
    monkeypatch.setenv("NANGO_PORT", "abc")
    monkeypatch.setenv("NANGO_INTERNAL_TOKEN", "x" * 32)
    with pytest.raises(SettingsError, match=r"^invalid setting NANGO_PORT: "):
        load(ServerSettings)


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANGO_INTERNAL_TOKEN", "x" * 32)
    monkeypatch.setenv("NANGO_ENCRYPTION_KEY", "c3VwZXItc2VjcmV0LWJ1dC10b28tc2hvcnQ=")
    with pytest.raises(SettingsError) as caught:
        load(ServerSettings)
    assert "NANGO_ENCRYPTION_KEY" in str(caught.value)
    assert "c3VwZXItc2VjcmV0" not in str(caught.value)


def test_secret_key_must_be_uuid_v4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANGO_INTERNAL_TOKEN", "x" * 32)
    monkeypatch.setenv("NANGO_ENCRYPTION_KEY", generate_key())
    monkeypatch.setenv("NANGO_SECRET_KEY_DEV", "not-a-uuid")
    with pytest.raises(SettingsError, match="NANGO_SECRET_KEY_DEV: value error, must be a UUID v4"):
        load(ServerSettings)


@pytest.mark.parametrize("service", ["server", "orchestrator", "jobs", "runner", "persist"])
def test_a_service_with_a_bad_setting_exits_2_with_one_line(service: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "NANGO_INTERNAL_TOKEN": "short"}
    done = subprocess.run(
        [sys.executable, "-m", f"nango.{service}"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "NANGO_INTERNAL_TOKEN" in lines[0]
    assert "Traceback" not in done.stderr
    assert "short" not in done.stderr
