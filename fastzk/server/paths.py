"""ZooKeeper's path rules (spec section 12.1), applied to create, setData, setACL and check."""

from __future__ import annotations

import re

# Code points ZooKeeper refuses (it checks UTF-16 units: anything outside the BMP arrives as
# surrogates, so it is refused too), empty components, and "." or ".." components. One regular
# expression, so that validation runs at C speed on the write path.
_INVALID = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\uf8ff\ufff0-\U0010ffff]|//|/\\.\\.?(?=/|$)"
)


def valid_path(path: str) -> bool:
    if not path or path[0] != "/":
        return False
    if path == "/":
        return True
    if path[-1] == "/":
        return False
    return _INVALID.search(path) is None


def parent_of(path: str) -> str:
    """Everything before the last '/', with '/' for top-level nodes."""
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else "/"


def ancestors(path: str) -> list[str]:
    """Ancestors of `path` from its parent up to '/' (empty for '/')."""
    result = []
    while path != "/":
        path = parent_of(path)
        result.append(path)
    return result
