"""What every BlobStore must do. Each store's tests subclass `BlobContract` and provide a `blobs` fixture."""

from __future__ import annotations

import os
import uuid

import pytest

from nango.blob import BlobNotFound, BlobStore, InvalidBlobKey
from nango.errors import NotFound

HOSTILE_KEYS = [
    "",
    "/etc/passwd",
    "../escape",
    "a/../../escape",
    "a/./b",
    "a//b",
    "a/",
    "a\x00b",
    "a\\..\\b",
    "line\nbreak",
    "x" * 256,
    "a/" * 600 + "b",
]


def folder() -> str:
    """A key prefix of the test's own, so tests sharing one bucket never see each other's keys."""
    return f"t-{uuid.uuid4().hex[:8]}/"


@pytest.mark.timeout(30)
class BlobContract:
    async def test_put_then_get_returns_the_bytes(self, blobs: BlobStore) -> None:
        key = folder() + "bundle.js"
        await blobs.put(key, b"first", content_type="application/javascript")
        assert await blobs.get(key) == b"first"
        await blobs.put(key, b"second")
        assert await blobs.get(key) == b"second"

    async def test_binary_empty_and_large_objects_round_trip(self, blobs: BlobStore) -> None:
        base = folder()
        large = os.urandom(3 * 1024 * 1024)
        await blobs.put(base + "large.bin", large)
        await blobs.put(base + "empty", b"")
        assert await blobs.get(base + "large.bin") == large
        assert await blobs.get(base + "empty") == b""

    async def test_unicode_and_spaces_in_keys(self, blobs: BlobStore) -> None:
        key = folder() + "naïve dir/résumé 1.txt"
        await blobs.put(key, b"x")
        assert await blobs.get(key) == b"x"
        assert await blobs.list(key.split("/")[0] + "/") == [key]

    async def test_exists_follows_put_and_delete(self, blobs: BlobStore) -> None:
        key = folder() + "a/b/c"
        assert await blobs.exists(key) is False
        await blobs.put(key, b"x")
        assert await blobs.exists(key) is True
        assert await blobs.exists(key.rpartition("/")[0]) is False, "a folder is not an object"
        await blobs.delete(key)
        assert await blobs.exists(key) is False

    async def test_missing_object_is_blob_not_found(self, blobs: BlobStore) -> None:
        key = folder() + "missing"
        with pytest.raises(BlobNotFound) as raised:
            await blobs.get(key)
        assert isinstance(raised.value, NotFound)
        assert (raised.value.instance_code, raised.value.status) == ("blob_not_found", 404)

    async def test_delete_is_idempotent(self, blobs: BlobStore) -> None:
        key = folder() + "gone"
        await blobs.put(key, b"x")
        await blobs.delete(key)
        await blobs.delete(key)
        with pytest.raises(BlobNotFound):
            await blobs.get(key)

    async def test_list_is_sorted_and_filtered_by_string_prefix(self, blobs: BlobStore) -> None:
        base = folder()
        for key in ("b/1", "a/2", "a/1", "ab", "a/deep/er/3"):
            await blobs.put(base + key, b"x")
        assert await blobs.list(base + "a/") == [base + "a/1", base + "a/2", base + "a/deep/er/3"]
        assert await blobs.list(base + "a") == [base + k for k in ("a/1", "a/2", "a/deep/er/3", "ab")]
        assert await blobs.list(base) == [base + k for k in ("a/1", "a/2", "a/deep/er/3", "ab", "b/1")]
        assert await blobs.list(base + "zzz") == []
        assert set(await blobs.list()) >= {base + "ab", base + "b/1"}

    @pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
    async def test_hostile_keys_are_refused(self, blobs: BlobStore, key: str) -> None:
        for attempt in (blobs.put(key, b"x"), blobs.get(key), blobs.exists(key), blobs.delete(key)):
            with pytest.raises(InvalidBlobKey) as raised:
                await attempt
            assert (raised.value.instance_code, raised.value.status) == ("invalid_blob_key", 400)

    @pytest.mark.parametrize("prefix", ["../", "/", "/etc", "a//", "a/../", "a\x00"], ids=repr)
    async def test_hostile_prefixes_are_refused(self, blobs: BlobStore, prefix: str) -> None:
        with pytest.raises(InvalidBlobKey):
            await blobs.list(prefix)
