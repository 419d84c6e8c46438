"""Path validation (spec 12.1): the rules create, setData, setACL and check apply."""

import random
import re

import pytest

from fastzk.server.paths import ancestors, parent_of, valid_path


@pytest.mark.parametrize(
    "path",
    ["/", "/a", "/a/b", "/...", "/.a", "/a./b", "/é", "/中文", "/a b", "/\u00a0", "/\ufeff",
     "/\uf900", "/a/0000000001"],
)
def test_valid_paths(path: str) -> None:
    assert valid_path(path)


@pytest.mark.parametrize(
    "path",
    ["", "a", "a/b", "/a/", "//", "/a//b", "/.", "/..", "/a/.", "/a/..", "/a/./b", "/a/../b",
     "/a\x00", "/a\x01", "/a\x1f", "/a\x7f", "/a\x9f", "/a\ud800", "/a\ue000", "/a\uf8ff",
     "/a\ufff0", "/a\uffff", "/a\U0001f600"],
)
def test_invalid_paths(path: str) -> None:
    assert not valid_path(path)


def test_parent_and_ancestors() -> None:
    assert parent_of("/a") == "/" and parent_of("/a/b/c") == "/a/b"
    assert ancestors("/a/b/c") == ["/a/b", "/a", "/"]
    assert ancestors("/") == []


# The rules as a regular expression (the implementation before the C one): code points
# ZooKeeper refuses, empty components, "." and ".." components.
_INVALID = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\uf8ff\ufff0-\U0010ffff]|//|/\\.\\.?(?=/|$)")


def _reference(path: str) -> bool:
    if not path or path[0] != "/":
        return False
    if path == "/":
        return True
    if path[-1] == "/":
        return False
    return _INVALID.search(path) is None


def test_valid_path_matches_the_rules_on_random_strings() -> None:
    """The C validation equals the regular expression on 200,000 random strings drawn from
    an alphabet rich in the characters the rules are about, boundaries of every refused range
    and code points outside the BMP included."""
    rng = random.Random(12)
    special = "/./../" * 3 + "a.b"
    edges = [0x00, 0x1F, 0x20, 0x7E, 0x7F, 0x9F, 0xA0, 0xD7FF, 0xD800, 0xDBFF, 0xDC00, 0xF8FF,
             0xF900, 0xFFEF, 0xFFF0, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF, 0xE9, 0x4E2D, 0x0A]
    alphabet = list(special) + [chr(c) for c in edges]
    mismatches = []
    for _ in range(200_000):
        n = rng.randint(0, 8)
        path = "".join(rng.choice(alphabet) for _ in range(n))
        if rng.random() < 0.7:
            path = "/" + path
        if rng.random() < 0.1:
            path += chr(rng.randint(0, 0x10FFFF))
        if valid_path(path) != _reference(path):
            mismatches.append(path)
    assert mismatches == []


def test_valid_path_of_a_null_path() -> None:
    assert not valid_path(None)  # type: ignore[arg-type]
