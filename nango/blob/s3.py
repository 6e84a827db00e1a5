"""Objects in an S3 bucket (or an S3-compatible server such as MinIO).

One boto3 client, made once; boto3 is blocking, so every call runs in a worker thread. Credentials
come from boto3's usual chain (environment, shared config, instance or pod role).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from nango.blob.base import BlobNotFound, check_key, check_prefix
from nango.errors import ServiceUnavailable
from nango.telemetry import redact_text

T = TypeVar("T")

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3BlobStore:
    def __init__(self, bucket: str, *, endpoint_url: str | None = None, region: str | None = None) -> None:
        self.bucket = bucket
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=60),
        )

    async def _run(self, key: str, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise BlobNotFound(f"object {key!r} does not exist") from None
            raise ServiceUnavailable(f"object storage refused a request on bucket {self.bucket!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"object storage is unreachable: {redact_text(str(exc))}") from exc

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        extra = {} if content_type is None else {"ContentType": content_type}
        check_key(key)
        await self._run(key, lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra))

    async def get(self, key: str) -> bytes:
        check_key(key)

        def fetch() -> bytes:
            return bytes(self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

        return await self._run(key, fetch)

    async def exists(self, key: str) -> bool:
        check_key(key)
        try:
            await self._run(key, lambda: self._client.head_object(Bucket=self.bucket, Key=key))
        except BlobNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._run(key, lambda: self._client.delete_object(Bucket=self.bucket, Key=key))

    async def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)

        def list_keys() -> list[str]:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

        return await self._run(prefix, list_keys)

    async def close(self) -> None:
        self._client.close()
