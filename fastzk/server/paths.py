"""ZooKeeper's path rules (spec section 12.1), applied to create, setData, setACL and check."""

from __future__ import annotations


def _bad_char(ch: str) -> bool:
    c = ord(ch)
    return (
        c <= 0x1F
        or 0x7F <= c <= 0x9F
        or 0xD800 <= c <= 0xF8FF
        or 0xFFF0 <= c <= 0xFFFF
        or c > 0xFFFF  # outside the BMP: surrogate pairs in UTF-16, which ZooKeeper rejects
    )


def valid_path(path: str) -> bool:
    if not path or path[0] != "/":
        return False
    if path == "/":
        return True
    if path[-1] == "/":
        return False
    for component in path[1:].split("/"):
        if component in ("", ".", ".."):
            return False
    return not any(_bad_char(ch) for ch in path)


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
