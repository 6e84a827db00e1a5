"""The `BlobStore` contract, its errors, and the key rules both stores enforce."""

from __future__ import annotations

from typing import Final, Protocol

from nango.errors import Conflict, InvalidRequest, NotFound

MAX_KEY_BYTES: Final = 1024  # S3's limit
MAX_SEGMENT_BYTES: Final = 255  # the usual filesystem limit on one name


class BlobNotFound(NotFound):
    code = "blob_not_found"
    default_message = "The object does not exist"


class InvalidBlobKey(InvalidRequest):
    code = "invalid_blob_key"
    default_message = "The object key is not valid"


class BlobKeyConflict(Conflict):
    code = "blob_key_conflict"
    default_message = "The object key clashes with an existing key"


class BlobStore(Protocol):
    """Objects by `/`-separated key. Both stores accept the same keys (see `check_key`), so code that
    works against the local folder works against S3."""

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store `data` under `key`, replacing any previous object; `content_type` is kept by S3 only."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes, or BlobNotFound."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    async def list(self, prefix: str = "") -> list[str]:
        """Every key starting with `prefix` (a plain string prefix, as in S3), sorted."""
        ...

    async def close(self) -> None: ...


def _key_problem(key: str) -> str | None:
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    if not key:
        return "is empty"
    if size > MAX_KEY_BYTES:
        return f"is longer than {MAX_KEY_BYTES} bytes"
    if any(ord(char) < 0x20 or char == "\x7f" for char in key):
        return "contains a control character"
    if "\\" in key:
        return "contains a backslash (the separator is /)"
    if key.startswith("/"):
        return "is absolute (keys are relative)"
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            return "has an empty, '.' or '..' segment"
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            return f"has a segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def check_key(key: str) -> str:
    """`key` if it is a valid object key, else InvalidBlobKey."""
    problem = _key_problem(key)
    if problem is not None:
        raise InvalidBlobKey(f"object key {key[:200]!r} {problem}")
    return key


def check_prefix(prefix: str) -> str:
    """`prefix` if some valid key could start with it, else InvalidBlobKey."""
    # A prefix is valid when completing it gives a valid key: "a/" and "a/b" are, "../" and "/a" are not.
    if prefix and _key_problem(prefix + "_") is not None:
        raise InvalidBlobKey(f"object key prefix {prefix[:200]!r} {_key_problem(prefix + '_')}")
    return prefix
