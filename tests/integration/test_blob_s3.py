"""The blob contract against a real S3-compatible server (moto_server)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from nango.blob import BlobNotFound, BlobStore, open_blob_store
from nango.blob.s3 import S3BlobStore
from nango.config import BlobSettings
from nango.errors import ServiceUnavailable
from tests.conftest import free_port
from tests.unit.blob.test_blob_contract import BlobContract

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def settings(bucket: str, endpoint: str) -> BlobSettings:
    return BlobSettings.model_validate(
        {"AWS_BUCKET_NAME": bucket, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_REGION": "us-east-1"}
    )


@pytest.fixture(scope="module")
def s3(s3_endpoint: str, s3_credentials: None) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture(scope="module")
def bucket(s3: Any) -> Iterator[str]:
    name = f"nango-test-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


class TestS3Blob(BlobContract):
    @pytest.fixture
    async def blobs(self, bucket: str, s3_endpoint: str, tmp_path: Path) -> AsyncIterator[BlobStore]:
        store = open_blob_store(settings(bucket, s3_endpoint), tmp_path)
        assert isinstance(store, S3BlobStore)
        yield store
        await store.close()


async def test_content_type_is_stored_with_the_object(s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    blobs = open_blob_store(settings(bucket, s3_endpoint), tmp_path)
    try:
        await blobs.put("typed/page.html", b"<p>hi</p>", content_type="text/html")
        assert s3.head_object(Bucket=bucket, Key="typed/page.html")["ContentType"] == "text/html"
    finally:
        await blobs.close()


async def test_missing_bucket_is_unavailable_not_a_missing_object(s3_endpoint: str, tmp_path: Path) -> None:
    blobs = open_blob_store(settings("no-such-bucket-" + uuid.uuid4().hex[:8], s3_endpoint), tmp_path)
    try:
        with pytest.raises(ServiceUnavailable, match="NoSuchBucket"):
            await blobs.get("anything")
        with pytest.raises(ServiceUnavailable):
            await blobs.put("anything", b"x")
    finally:
        await blobs.close()


async def test_unreachable_endpoint_is_service_unavailable(s3_credentials: None, tmp_path: Path) -> None:
    blobs = open_blob_store(settings("bucket", f"http://127.0.0.1:{free_port()}"), tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            await blobs.get("anything")
        assert not isinstance(raised.value, BlobNotFound)
        assert time.monotonic() - started < 10
        assert "testing" not in raised.value.message, "credentials never appear in errors"
    finally:
        await blobs.close()
