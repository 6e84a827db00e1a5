"""Pytest fixtures of the test support servers.

Use them from a conftest (or a test module) by importing them: `from tests.support.fixtures import oauth_server`
(add `# noqa: F401`, or list the name in `__all__`, so the linter keeps the import).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.oauth_server.harness import OAuthServer


@pytest.fixture(scope="session")
def oauth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServer]:
    """A real, strict OAuth 2.0 authorization server (django-oauth-toolkit, PKCE required, refresh-token rotation)
    on loopback, for the whole run. Each test should register its own app (`create_app`) so grant stats and
    revocations never leak between tests."""
    server = OAuthServer.start(tmp_path_factory.mktemp("oauth-as"))
    try:
        yield server
    finally:
        server.stop()
