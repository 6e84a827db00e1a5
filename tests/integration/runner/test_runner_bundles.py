"""The runner's bundle cache over a real (local-folder) blob store: checked against the SHA-256,
unpacked once, reused, evicted least-recently-used first but never while a task holds it."""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from pathlib import Path

import pytest

from nango.blob import LocalBlobStore
from nango.runner.archive import InvalidBundle, unpack
from nango.runner.bundles import BundleCache, BundleUnavailable

pytestmark = pytest.mark.integration


def bundle(text: str) -> tuple[bytes, str]:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as files:
        files.writestr("a.py", text)
    data = archive.getvalue()
    return data, hashlib.sha256(data).hexdigest()


async def test_a_bundle_is_checked_unpacked_once_and_reused(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    cache = BundleCache(store, tmp_path / "cache", capacity=2, max_bytes=1 << 20)
    data, sha = bundle("X = 1\n")
    await store.put("bundles/1/crm/a.zip", data)
    async with cache.use("bundles/1/crm/a.zip", sha) as folder:
        assert (folder / "a.py").read_text() == "X = 1\n"
    await store.delete("bundles/1/crm/a.zip")
    async with cache.use("bundles/1/crm/a.zip", sha.upper()) as again:
        assert again == folder
    with pytest.raises(BundleUnavailable):
        async with cache.use("bundles/1/crm/missing.zip", "1" * 64):
            pass
    other, _ = bundle("Y = 2\n")
    await store.put("bundles/1/crm/b.zip", other)
    with pytest.raises(InvalidBundle, match="does not match its SHA-256"):
        async with cache.use("bundles/1/crm/b.zip", "2" * 64):
            pass
    await store.close()


async def test_the_least_recently_used_bundle_not_in_use_is_evicted(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    cache = BundleCache(store, tmp_path / "cache", capacity=1, max_bytes=1 << 20)
    first, first_sha = bundle("A = 1\n")
    second, second_sha = bundle("B = 2\n")
    await store.put("k/first.zip", first)
    await store.put("k/second.zip", second)
    async with cache.use("k/first.zip", first_sha) as held:
        async with cache.use("k/second.zip", second_sha):
            assert held.exists()
        assert held.exists()
    async with cache.use("k/second.zip", second_sha):
        pass
    assert not (tmp_path / "cache" / first_sha).exists()
    await store.close()


def test_unpacking_refuses_links_escapes_and_bombs(tmp_path: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as files:
        link = zipfile.ZipInfo("link.py")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        files.writestr(link, "/etc/passwd")
    with pytest.raises(InvalidBundle, match="symbolic link"):
        unpack(archive.getvalue(), tmp_path / "one", 1 << 20)
    assert not (tmp_path / "one").exists()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as files:
        files.writestr("big.py", "#" * (2 << 20))
    with pytest.raises(InvalidBundle, match="more than 1 MB"):
        unpack(archive.getvalue(), tmp_path / "two", 1 << 20)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as files:
        files.writestr("/abs.py", "")
    with pytest.raises(InvalidBundle, match="outside its folder"):
        unpack(archive.getvalue(), tmp_path / "three", 1 << 20)
