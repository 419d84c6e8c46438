"""ZooKeeper's path rules (spec section 12.1), applied to create, setData, setACL and check.

`valid_path` and `parent_of` run on every write inside prep, so they are C (core/prep.pxi);
tests/test_paths.py holds them to the rules written as a regular expression."""

from __future__ import annotations

from fastzk._core import parent_of, valid_path

__all__ = ["ancestors", "parent_of", "valid_path"]


def ancestors(path: str) -> list[str]:
    """Ancestors of `path` from its parent up to '/' (empty for '/')."""
    result = []
    while path != "/":
        path = parent_of(path)
        result.append(path)
    return result
