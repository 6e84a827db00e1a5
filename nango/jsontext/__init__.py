"""JSON text on hot paths: `json.dumps` builds a new encoder on every call that passes options; these
are built once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def json_encoder(*, ensure_ascii: bool, separators: tuple[str, str]) -> Callable[[Any], str]:
    """`json.dumps(value, default=str, ensure_ascii=..., separators=...)` with CPython's C encoder
    built once (a cycle raises RecursionError instead of ValueError)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(default=str, ensure_ascii=ensure_ascii, separators=separators).encode
    escape = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    item, key = separators
    chunks = make(None, str, escape, None, key, item, False, False, True)
    return lambda value: "".join(chunks(value, 0))


__all__ = ["json_encoder"]
