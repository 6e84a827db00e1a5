"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.items import ItemsApi, items_api


@pytest.fixture(scope="module")
async def api() -> AsyncIterator[ItemsApi]:
    """The paginated items API on loopback (tests/support/items.py), one per test module."""
    async with items_api() as served:
        yield served
