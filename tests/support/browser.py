"""A real headless browser for the suite: Debian's Chromium driven by Playwright's async API.

Import the fixture into a conftest (or a test module):

    from tests.support.browser import browser  # noqa: F401

Playwright never downloads a browser here (`playwright install` is not used): it launches /usr/bin/chromium, which
`scripts/test.sh` installs with apt when it is missing. Give each test its own context
(`await browser.new_context()`) so cookies and sessions never leak between tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Marker the authorization server's pages carry: <body data-oauth-as-page="login|consent|error">.
AS_PAGE_ATTRIBUTE = "data-oauth-as-page"


class LoginError(AssertionError):
    """The authorization server refused the username or password."""


class AuthorizationPageError(AssertionError):
    """The authorization server showed an error page instead of the consent page."""


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium, launched once per run."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium with apt)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield launched
        finally:
            await launched.close()


async def login_and_consent(
    page: Page, username: str, password: str, *, allow: bool = True, timeout: float = 15.0
) -> None:
    """Signs in on the authorization server's login page and answers its consent page (Authorize, or Cancel when
    `allow` is false).

    `page` may be the main page or a popup (for instance one opened by a Connect UI): the helper waits until the page
    shows the login or the consent page, so a popup still at about:blank is fine. A step the server skips is skipped
    (no login when the session is already signed in; no consent when the app has `skip_authorization`). The helper
    returns once the browser has left the consent page, or when the page closes itself (popups often do after the
    redirect). Every wait is bounded by `timeout` seconds.
    """
    timeout_ms = timeout * 1000
    await page.wait_for_selector(f"body[{AS_PAGE_ATTRIBUTE}]", state="attached", timeout=timeout_ms)
    kind = await _as_page_kind(page)

    if kind == "login":
        await page.fill("#id_username", username, timeout=timeout_ms)
        await page.fill("#id_password", password, timeout=timeout_ms)
        if not await _submit(page, "#login-submit", timeout_ms):
            return
        kind = await _as_page_kind(page)
        if kind == "login":
            message = await page.locator("#login-error").text_content(timeout=timeout_ms)
            raise LoginError(f"the authorization server refused {username!r}: {(message or '').strip()}")

    if kind == "consent":
        await _submit(page, "#authorize-allow" if allow else "#authorize-cancel", timeout_ms)
    elif kind == "error":
        text = await page.locator("body").inner_text(timeout=timeout_ms)
        raise AuthorizationPageError(f"the authorization server showed an error: {text.strip()}")


async def _submit(page: Page, selector: str, timeout_ms: float) -> bool:
    """Clicks a submit button and waits for the next document. False when the page closed meanwhile."""
    try:
        async with page.expect_navigation(wait_until="domcontentloaded", timeout=timeout_ms):
            await page.click(selector, timeout=timeout_ms)
    except PlaywrightError:
        if page.is_closed():
            return False
        raise
    return not page.is_closed()


async def _as_page_kind(page: Page) -> str | None:
    """'login', 'consent' or 'error' on an authorization server page; None elsewhere (e.g. the redirect target)."""
    if page.is_closed():
        return None
    try:
        kind = await page.evaluate(
            "(name) => document.body ? document.body.getAttribute(name) : null", AS_PAGE_ATTRIBUTE
        )
    except PlaywrightError:
        if page.is_closed():
            return None
        raise
    return kind if isinstance(kind, str) else None
