from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from nango.blob import (
    BlobKeyConflict,
    BlobNotFound,
    BlobStore,
    InvalidBlobKey,
    LocalBlobStore,
    open_blob_store,
)
from nango.blob.s3 import S3BlobStore
from nango.config import BlobSettings
from tests.unit.blob.test_blob_contract import HOSTILE_KEYS, BlobContract


class TestLocalBlob(BlobContract):
    @pytest.fixture
    def blobs(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "store")


def test_open_blob_store_uses_the_data_dir_unless_a_folder_or_bucket_is_set(tmp_path: Path) -> None:
    # model_validate reads no environment, so an AWS_BUCKET_NAME set around the test cannot leak in.
    default = open_blob_store(BlobSettings.model_validate({}), tmp_path)
    assert isinstance(default, LocalBlobStore)
    assert default.root == tmp_path / "blobs"
    chosen = open_blob_store(BlobSettings.model_validate({"NANGO_BLOB_DIR": str(tmp_path / "elsewhere")}), tmp_path)
    assert isinstance(chosen, LocalBlobStore)
    assert chosen.root == tmp_path / "elsewhere"
    s3 = open_blob_store(
        BlobSettings.model_validate({"AWS_BUCKET_NAME": "bucket", "AWS_REGION": "eu-west-1"}), tmp_path
    )
    assert isinstance(s3, S3BlobStore)
    assert s3.bucket == "bucket"


async def test_objects_are_files_under_the_root_and_no_partial_file_remains(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    await blobs.put("deployments/dev/sync.js", b"code")
    assert (tmp_path / "objects" / "deployments" / "dev" / "sync.js").read_bytes() == b"code"
    assert list((tmp_path / "partial").iterdir()) == []


async def test_hostile_keys_write_nothing_anywhere(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "store"
    blobs = LocalBlobStore(root)
    for key in HOSTILE_KEYS:
        with pytest.raises(InvalidBlobKey):
            await blobs.put(key, b"x")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_concurrent_writers_leave_one_whole_object(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    versions = [bytes([i]) * (100_000 + i) for i in range(20)]

    async def read_while_writing() -> None:
        for _ in range(20):
            with contextlib.suppress(BlobNotFound):  # until the first writer finishes
                assert await blobs.get("contended") in versions

    async with asyncio.timeout(10):
        await asyncio.gather(*(blobs.put("contended", v) for v in versions), read_while_writing())
    assert await blobs.get("contended") in versions
    assert list((tmp_path / "partial").iterdir()) == []


async def test_a_key_cannot_also_be_a_folder_until_the_other_is_deleted(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    await blobs.put("a", b"file")
    with pytest.raises(BlobKeyConflict):
        await blobs.put("a/b", b"nested")
    await blobs.delete("a")
    await blobs.put("a/b/c", b"nested")
    with pytest.raises(BlobKeyConflict):
        await blobs.put("a", b"file")
    await blobs.delete("a/b/c")
    assert not (tmp_path / "objects" / "a").exists(), "emptied folders are pruned"
    await blobs.put("a", b"file")
    assert await blobs.list() == ["a"]
