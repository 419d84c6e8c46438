"""Reads with the watch flag on the fast path (`_core.serve_reads` with the watch tables)
against the slow path (decode_request -> Reads.answer -> WatchManager.add): the same replies,
and the same registrations, in the same order, in the tables and in each connection's masks
(what notifications, admin listings and closing a connection depend on)."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fastzk._core import DataTree, ReadBuffer, WriteBuffer, decode_request, serve_reads
from fastzk.node import Client
from fastzk.proto import Event
from fastzk.server.reads import Reads
from fastzk.server.watches import CHILD, DATA, WatchManager

OPEN = [(31, "world", "anyone")]
ZXID = 0x500000007

# raw path encodings: world-readable nodes, missing ones, a node only bob may read, a
# non-ASCII name, and bytes that are not UTF-8 (left to the slow path)
PATHS = [b"/a", b"/a/x", b"/nope", b"/a/nope", b"/secret", "/é".encode(), b"/\xff", b"/"]


def tree() -> DataTree:
    t = DataTree()
    t.create("/a", b"hello", OPEN, 0, 5, 1000, 1)
    t.create("/a/x", None, OPEN, 0, 6, 1001, 1)
    t.create("/secret", b"s", [(31, "digest", "bob:xyz")], 0, 7, 1002, 2)
    t.create("/é", b"u", OPEN, 0, 8, 1003, 3)
    return t


def frame(xid: int, op: int, path: bytes, watch: bool) -> bytes:
    payload = struct.pack(">iii", xid, op, len(path)) + path + (b"\x01" if watch else b"\x00")
    return struct.pack(">i", len(payload)) + payload


class Side:
    """One server's state: the tree, its watches, two connections."""

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.tree = tree()
        self.watches = WatchManager()
        self.reads = Reads(self.tree, self.watches)
        self.clients = [Client("127.0.0.1"), Client("127.0.0.2")]
        self.served = 0

    def feed(self, who: int, frames: list[bytes]) -> bytes:
        """Answers a pipelined batch as the runtime does: the fast path first, each frame it
        stops at through the slow path, then the fast path again."""
        client = self.clients[who]
        rb = ReadBuffer(0xFFFFF)
        data = b"".join(frames)
        view = rb.get_buffer(len(data))
        view[: len(data)] = data
        del view
        rb.buffer_updated(len(data))
        while True:
            if self.fast:
                self.served += serve_reads(rb, self.tree, client.out, ZXID, 1000, 1 << 30,
                                           self.watches.tables, client)
            payload = rb.pop_frame()
            if payload is None:
                return client.out.take()
            xid, op, body = decode_request(payload)
            self.reads.answer(client, xid, op, body, ZXID)

    def registrations(self) -> Any:
        names = {client: i for i, client in enumerate(self.clients)}
        tables = [[(path, [names[c] for c in conns]) for path, conns in table.items()]
                  for table in self.watches.tables]
        return tables, [list(client.watches.items()) for client in self.clients]


REQUEST = st.tuples(st.integers(0, 1), st.sampled_from([3, 4, 8, 12]),
                    st.sampled_from(PATHS), st.booleans())
STEP = st.one_of(
    st.lists(REQUEST, min_size=1, max_size=12),  # a pipelined batch (one client each)
    st.tuples(st.sampled_from(["/a", "/a/x", "/nope", "/secret", "/é"]),
              st.sampled_from([Event.NODE_DATA_CHANGED, Event.NODE_CHILDREN_CHANGED,
                               Event.NODE_DELETED, Event.NODE_CREATED])),
    st.integers(0, 1),  # a connection closes (and is replaced)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=12))
def test_fast_path_registers_watches_as_the_slow_path_does(steps):
    fast, slow = Side(True), Side(False)
    xid = 0
    for step in steps:
        if isinstance(step, list):
            who = step[0][0]
            frames = []
            for _, op, path, watch in step:
                xid += 1
                frames.append(frame(xid, op, path, watch))
            assert fast.feed(who, frames) == slow.feed(who, frames)
        elif isinstance(step, tuple):
            path, event = step
            names_fast = [fast.clients.index(c) for c in fast.watches.trigger(path, event)]
            names_slow = [slow.clients.index(c) for c in slow.watches.trigger(path, event)]
            assert names_fast == names_slow
        else:
            for side in (fast, slow):
                side.watches.drop_connection(side.clients[step])
                side.clients[step] = Client("127.0.0.9")
        assert fast.registrations() == slow.registrations()


def test_watch_reads_are_served_on_the_fast_path():
    """Each of these is answered in C (served counts it) and leaves the slow path's
    registration: exists registers an exist watch on a missing node, getData and
    getChildren nothing there."""
    side = Side(True)
    frames = [frame(1, 4, b"/a", True), frame(2, 3, b"/nope", True), frame(3, 8, b"/a", True),
              frame(4, 12, b"/a/x", True), frame(5, 4, b"/nope", True),
              frame(6, 8, b"/nope", True), frame(7, 3, "/é".encode(), True)]
    side.feed(1, frames)
    assert side.served == len(frames)
    client = side.clients[1]
    assert {p: list(c) for p, c in side.watches.tables[DATA].items()} == {
        "/a": [client], "/nope": [client], "/é": [client]}
    assert {p: list(c) for p, c in side.watches.tables[CHILD].items()} == {
        "/a": [client], "/a/x": [client]}
    assert client.watches == {"/a": 0b11, "/nope": 0b01, "/a/x": 0b10, "/é": 0b01}


def test_watch_reads_the_fast_path_leaves_to_the_slow_path():
    """Not world-readable, or a path that is not UTF-8: stopped at, nothing registered by C."""
    for stopper in (frame(1, 4, b"/secret", True), frame(1, 3, b"/\xff", True)):
        side = Side(True)
        rb = ReadBuffer(0xFFFFF)
        view = rb.get_buffer(len(stopper))
        view[: len(stopper)] = stopper
        del view
        rb.buffer_updated(len(stopper))
        client = side.clients[0]
        out = WriteBuffer()
        assert serve_reads(rb, side.tree, out, ZXID, 10, 1 << 30, side.watches.tables,
                           client) == 0
        assert len(out) == 0 and rb.pending == len(stopper)
        assert side.watches.tables[DATA] == {} and client.watches == {}
