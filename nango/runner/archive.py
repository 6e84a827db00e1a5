"""Unpacking a bundle zip safely: no links, no path outside the target, a cap on what it unpacks to.
Kept apart from the bundle cache so that workers (which unpack bundles to inspect) need no blob store."""

from __future__ import annotations

import io
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from nango.errors import InvalidRequest

MAX_FILES = 10_000


class InvalidBundle(InvalidRequest):
    code = "invalid_bundle"
    default_message = "The bundle is not a valid zip of Python files"


def unpack(data: bytes, target: Path, max_bytes: int) -> None:
    """Extract a zip into `target` (which must not exist), refusing links, paths that leave it and
    more than `max_bytes` unpacked; nothing is left behind on failure."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidBundle("the bundle is not a zip file") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_FILES:
            raise InvalidBundle(f"the bundle holds more than {MAX_FILES} files")
        if sum(m.file_size for m in members) > max_bytes:
            raise InvalidBundle(f"the bundle unpacks to more than {max_bytes // (1024 * 1024)} MB")
        target.mkdir(parents=True)
        try:
            for member in members:
                path = PurePosixPath(member.filename)
                if "\\" in member.filename or path.is_absolute() or ".." in path.parts:
                    raise InvalidBundle(f"the bundle holds a path outside its folder: {member.filename[:200]!r}")
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise InvalidBundle(f"the bundle holds a symbolic link: {member.filename[:200]!r}")
                destination = target.joinpath(*path.parts)
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise InvalidBundle(f"the bundle cannot be unpacked: {exc}") from None
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise


__all__ = ["MAX_FILES", "InvalidBundle", "unpack"]
