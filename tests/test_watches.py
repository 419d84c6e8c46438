"""WatchManager with real DataTree and Client objects: the order a trigger returns, each
connection once, one-shot consumption, and what closing a connection leaves behind
(nothing), including watches restored by setWatches."""

from __future__ import annotations

from fastzk._core import DataTree, WriteBuffer
from fastzk.node import Client
from fastzk.proto import SYNC_CONNECTED, Event
from fastzk.server.watches import CHILD, DATA, PERSISTENT, RECURSIVE, WatchManager

OPEN = [(31, "world", "anyone")]


def _tree(*paths: str) -> DataTree:
    tree = DataTree()
    for zxid, path in enumerate(paths, 2):
        tree.create(path, b"", OPEN, 0, zxid, 0, zxid)
    return tree


def test_trigger_order_each_connection_once_and_one_shot_consumed() -> None:
    watches = WatchManager()
    a, b, c, d = (Client(f"127.0.0.{i}") for i in range(1, 5))
    watches.add(RECURSIVE, "/x", d)
    watches.add(PERSISTENT, "/x/y", c)
    watches.add(CHILD, "/x/y", b)
    watches.add(DATA, "/x/y", a)
    watches.add(DATA, "/x/y", b)
    watches.add(RECURSIVE, "/", a)
    # data watchers, then child, persistent, recursive from the path up; each once
    assert list(watches.trigger("/x/y", Event.NODE_DELETED)) == [a, b, c, d]
    assert a.watches == {"/": 1 << RECURSIVE} and b.watches == {}
    assert list(watches.trigger("/x/y", Event.NODE_DELETED)) == [c, d, a]
    assert list(watches.trigger("/x/y", Event.NODE_CHILDREN_CHANGED)) == [c]


def test_closing_a_connection_leaves_no_watch_behind() -> None:
    tree = _tree("/a", "/b", "/c")
    watches = WatchManager()
    conn, other = Client("127.0.0.1"), Client("127.0.0.2")
    out = WriteBuffer()
    paths = ["/a", "/b", "/c", "/missing"]
    tree.restore_watches(paths, 10, 0, Event.NODE_DELETED, Event.NODE_DATA_CHANGED,
                         SYNC_CONNECTED, out, watches.tables[DATA], conn)
    watches.note_restored(DATA, paths, conn)
    assert len(out.take()) > 0  # /missing is gone: its event was written at once
    watches.add(DATA, "/b", other)
    watches.add(DATA, "/c", conn)  # also restored: one registration
    watches.add(CHILD, "/a", conn)
    assert watches.count(DATA) == 4
    assert list(watches.trigger("/a", Event.NODE_DATA_CHANGED)) == [conn]
    watches.drop_connection(conn)
    assert watches.tables[DATA] == {"/b": {other: None}}
    assert watches.total == 1
    watches.drop_connection(other)
    assert watches.tables == ({}, {}, {}, {}) and other.watches == {}
