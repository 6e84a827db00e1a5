"""Objects as files under a folder, for one machine without S3.

Layout: `<root>/objects/<key>`, and `<root>/partial/` for writes in flight. A write goes to a temp
file that is fsynced and then renamed over the target, so a reader sees the old object or the new
one, never half of one, and a crash leaves at most a stray file in `partial/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from nango.blob.base import BlobKeyConflict, BlobNotFound, check_key, check_prefix


class LocalBlobStore:
    """A key that is also the folder of other keys ("a" and "a/b") cannot exist here, unlike in S3:
    such a put raises BlobKeyConflict."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self._objects = self.root / "objects"
        self._partial = self.root / "partial"

    def _path(self, key: str) -> Path:
        return self._objects / check_key(key)

    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        await asyncio.to_thread(self._put, self._path(key), data)

    def _put(self, target: Path, data: bytes) -> None:
        self._partial.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self._partial)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            self._move_into_place(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_dir(target.parent)

    def _move_into_place(self, temp: str, target: Path) -> None:
        key = target.relative_to(self._objects).as_posix()
        for attempt in range(3):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temp, target)
                return
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise BlobKeyConflict(
                    f"object key {key!r} clashes with an existing key: locally a key cannot also be a folder"
                ) from None
            except FileNotFoundError:
                # A delete pruned the empty folder between mkdir and rename; make it again.
                if attempt == 2:
                    raise

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(f"object {key!r} does not exist") from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, self._path(key))

    def _delete(self, path: Path) -> None:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        # Empty folders left behind would block a later put of a key with the folder's name.
        parent = path.parent
        while parent != self._objects:
            try:
                parent.rmdir()
            except OSError:
                return
            parent = parent.parent

    async def list(self, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(_walk_keys, self._objects, check_prefix(prefix))

    async def close(self) -> None:
        return None


def _walk_keys(objects: Path, prefix: str) -> list[str]:
    # Only the folder the prefix names can hold matching keys.
    keys = []
    for folder, _, files in os.walk(objects / prefix.rpartition("/")[0]):
        relative = Path(folder).relative_to(objects).as_posix()
        for name in files:
            key = name if relative == "." else f"{relative}/{name}"
            if key.startswith(prefix):
                keys.append(key)
    return sorted(keys)


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable: without it a power loss can undo the rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
