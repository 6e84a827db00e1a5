"""Group key patterns: a glob where only `*` is special, as SQL LIKE and as an in-process matcher."""

from __future__ import annotations

import re

LIKE_ESCAPE = "\\"


class GroupPattern:
    """`sync:*` matches every group key starting with `sync:`; any other character is literal."""

    __slots__ = ("_regex", "glob", "like")

    def __init__(self, glob: str) -> None:
        self.glob = glob
        self.like = "%".join(_escape_like(part) for part in glob.split("*"))
        self._regex = re.compile(".*".join(re.escape(part) for part in glob.split("*")), re.DOTALL)

    def matches(self, group_key: str) -> bool:
        return self._regex.fullmatch(group_key) is not None

    def __repr__(self) -> str:
        return f"GroupPattern({self.glob!r})"


def _escape_like(text: str) -> str:
    return text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")
