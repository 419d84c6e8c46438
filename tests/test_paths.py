"""Path validation (spec 12.1): the rules create, setData, setACL and check apply."""

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
