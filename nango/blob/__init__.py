"""Object storage: deployed function bundles and other files too big or too opaque for Postgres.

`open_blob_store` returns an S3 store when a bucket is configured (`AWS_BUCKET_NAME`) and a local
folder otherwise (`NANGO_BLOB_DIR`, default `<data dir>/blobs`). Keys are `/`-separated relative
paths; both stores refuse the same malformed or hostile keys with InvalidBlobKey, so nothing that
works locally fails on S3 for its key alone. Like the in-process KV store, the local folder serves
one machine: replicas on several machines need S3.
"""

from __future__ import annotations

from pathlib import Path

from nango.blob.base import BlobKeyConflict, BlobNotFound, BlobStore, InvalidBlobKey, check_key, check_prefix
from nango.blob.local import LocalBlobStore
from nango.config import BlobSettings


def open_blob_store(settings: BlobSettings, data_dir: Path) -> BlobStore:
    """S3 when `settings.bucket_name` is set, else the folder `settings.blob_dir` or `<data_dir>/blobs`."""
    if settings.bucket_name:
        # boto3 takes a fifth of a second to import: only processes that use S3 pay for it
        from nango.blob.s3 import S3BlobStore

        return S3BlobStore(settings.bucket_name, endpoint_url=settings.s3_endpoint_url, region=settings.aws_region)
    return LocalBlobStore(settings.blob_dir or data_dir / "blobs")


__all__ = [
    "BlobKeyConflict",
    "BlobNotFound",
    "BlobStore",
    "InvalidBlobKey",
    "LocalBlobStore",
    "check_key",
    "check_prefix",
    "open_blob_store",
]
