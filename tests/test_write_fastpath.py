"""The host's write fast paths (`_core.serve_writes`, `_core.apply_plain`) against the host's
own per-request path, on random pipelined request streams.

Two nodes start identically. The reference takes every frame through `Node.handle_request`
and applies every committed txn with `Node._apply_one` and the Python applier; the other is driven the way the
runtime drives writes (`Node.serve_writes`, then `handle_request` for the frame it leaves). After each burst both are settled and
must agree byte for byte on every connection's output, and on the tree, the watch tables,
the FIFOs, the counters and the writes in flight. The streams mix the writes the fast path
takes with reads, watches (so that some writes fire them and some do not), failures, a
malformed body, a reused xid, non-world ACLs and a closeSession.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from durable import settle
from wire import (
    OP_CREATE,
    OP_CREATE2,
    OP_DELETE,
    OP_MULTI,
    OP_SET_ACL,
    OP_SET_DATA,
    OPEN_ACL,
    close_session_request,
    connect_request,
    create_request,
    delete_request,
    exists_request,
    get_children_request,
    get_data_request,
    p_acl,
    p_bool,
    p_buffer,
    p_int,
    p_ustring,
    request,
    set_data_request,
)

import fastzk.node as node_module
from fastzk._core import ReadBuffer
from fastzk.node import Client, Limits, Node, State
from fastzk.server.apply import Applier

TICK = 100
PATHS = ["/a", "/a/b", "/a/c", "/d", "/d/e", "/f"]
READ_ONLY_ACL = p_int(1) + p_acl(perms=1)  # world:anyone may only read
DIGEST_ACL = p_int(1) + p_acl(perms=31, scheme="digest", ident="u:x")  # nobody here


def make_node() -> Node:
    limits = Limits(tick_ms=TICK, min_session_timeout=2 * TICK, max_session_timeout=20 * TICK)
    node = Node(limits, random.Random(5), start_ms=1_000_000)
    node.start()
    settle(node)
    return node


@contextmanager
def host_apply_only() -> Iterator[None]:
    """The reference: every committed txn through `Node._apply_one` and the Python applier's
    `apply_changes` (which fires watches through WatchManager.trigger), never the core's."""
    real = node_module.apply_plain
    node_module.apply_plain = lambda applier, txns, start, node, replies: (start, 0, 0, 0)
    Applier.apply = Applier.apply_changes  # type: ignore[method-assign]
    try:
        yield
    finally:
        node_module.apply_plain = real
        del Applier.apply


def multi_request(xid: int, ops: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(p_int(op) + p_bool(False) + p_int(-1) + sub for op, sub in ops)
    return request(xid, OP_MULTI, body + p_int(-1) + p_bool(True) + p_int(-1))


def random_frame(rng: random.Random, xid: int, in_flight: list[int]) -> bytes:
    path = rng.choice(PATHS)
    version = rng.choice([-1, -1, 0, 1, 2])
    roll = rng.random()
    if roll < 0.22:
        return set_data_request(xid, path, rng.randbytes(rng.choice([0, 3, 100])), version)
    if roll < 0.40:
        acl = rng.choice([OPEN_ACL, OPEN_ACL, OPEN_ACL, READ_ONLY_ACL, DIGEST_ACL])
        return create_request(xid, path, rng.randbytes(4), acl=acl, flags=rng.choice([0, 0, 1, 2, 3]),
                              op=rng.choice([OP_CREATE, OP_CREATE2]))
    if roll < 0.52:
        return delete_request(xid, path, version)
    if roll < 0.57:
        return request(xid, OP_SET_ACL, p_ustring(path) + rng.choice([OPEN_ACL, READ_ONLY_ACL])
                       + p_int(version))
    if roll < 0.62:
        sub = [(OP_CREATE, p_ustring(path) + p_buffer(b"m") + OPEN_ACL + p_int(0)),
               (OP_SET_DATA, p_ustring(rng.choice(PATHS)) + p_buffer(b"n") + p_int(-1)),
               (OP_DELETE, p_ustring(rng.choice(PATHS)) + p_int(-1))]
        return multi_request(xid, rng.sample(sub, rng.randint(1, 3)))
    if roll < 0.72:
        return get_data_request(xid, path, watch=rng.random() < 0.5)
    if roll < 0.79:
        return exists_request(xid, path, watch=rng.random() < 0.5)
    if roll < 0.86:
        return get_children_request(xid, rng.choice(["/a", "/d", "/a/b"]), watch=rng.random() < 0.8)
    if roll < 0.89:  # a setData whose body ends early: MarshallingError, in order
        good = set_data_request(xid, path, b"xyz")
        body = good[4:-6]
        return len(body).to_bytes(4, "big") + body
    if roll < 0.897 and in_flight:  # an xid still in flight: the connection is closed
        return set_data_request(rng.choice(in_flight), path, b"again")
    if roll < 0.9:
        return close_session_request(xid)
    return set_data_request(xid, "bad//path", b"")


def burst(rng: random.Random, xids: list[int], in_flight: list[list[int]], index: int,
          most: int) -> bytes:
    """1 to `most` random frames of connection `index`, pipelined."""
    frames = []
    for _ in range(rng.randint(1, most)):
        frames.append(random_frame(rng, xids[index], in_flight[index]))
        in_flight[index].append(xids[index])
        xids[index] += 1
    return b"".join(frames)


def feed(buf: ReadBuffer, data: bytes) -> None:
    """Bytes arriving as the transport hands them over."""
    view = buf.get_buffer(len(data))
    view[:len(data)] = data
    del view
    buf.buffer_updated(len(data))


def connect(node: Node) -> Client:
    client = Client("127.0.0.1")
    node.connection_made(client)
    node.handle_connect(client, connect_request(timeout_ms=2000)[4:])
    settle(node)
    assert client.state == State.READY
    return client


def run_reference(node: Node, client: Client, buf: ReadBuffer) -> None:
    while client.state == State.READY and not client.closing:
        frame = buf.pop_frame()
        if frame is None:
            return
        node.handle_request(client, frame)


def run_fast(node: Node, client: Client, buf: ReadBuffer) -> None:
    """What runtime/server.py's ClientProtocol._serve does for writes, without the output
    limits (reads take the host's path on both nodes: the read fast path keeps no
    per-connection latency figures, by design)."""
    while client.state == State.READY and not client.closing:
        if node.serve_writes(client, buf, 256, 1 << 30, 1 << 30):
            continue
        frame = buf.pop_frame()
        if frame is None:
            return
        node.handle_request(client, frame)


def state_of(node: Node, clients: list[Client]) -> tuple:
    def conn_index(conn: object) -> int:
        return next(i for i, c in enumerate(clients) if c is conn)

    tables = tuple(
        sorted((path, tuple(conn_index(c) for c in conns)) for path, conns in table.items())
        for table in node.watches.tables)
    per_client = tuple(
        (c.state, c.closing, len(c.fifo), c.fifo_bytes, c.received, c.sent, c.last_zxid,
         c.last_xid, c.last_op, dict(c.watches), c.latency_ms.count)
        for c in clients)
    return (node.tree.digest(), node.applied_zxid, node.prep.last_zxid, node.inflight_writes,
            node.inflight_write_bytes, len(node.waiting), tables, per_client,
            node.stats.packets_received, node.stats.packets_sent)


@pytest.mark.parametrize("seed", range(40))
def test_fast_paths_answer_exactly_as_the_host(seed: int) -> None:
    rng = random.Random(seed)
    fast, ref = make_node(), make_node()
    clients: dict[Node, list[Client]] = {fast: [], ref: []}
    bufs: dict[Node, list[ReadBuffer]] = {fast: [], ref: []}
    for n in (fast, ref):
        for _ in range(3):
            clients[n].append(connect(n))
            bufs[n].append(ReadBuffer(1 << 20))
        for xid, path in enumerate(("/a", "/d", "/f"), 1):
            n.handle_request(clients[n][0], create_request(xid, path)[4:])
        settle(n)
        clients[n][0].out.take()
    xids = [10, 1, 1]
    in_flight: list[list[int]] = [[], [], []]
    for _ in range(40):
        for index in rng.sample(range(3), 3):
            data = burst(rng, xids, in_flight, index, 12)
            for n in (fast, ref):
                feed(bufs[n][index], data)
        for index in range(3):
            run_fast(fast, clients[fast][index], bufs[fast][index])
            run_reference(ref, clients[ref][index], bufs[ref][index])
        settle(fast)
        with host_apply_only():
            settle(ref)
        for index in range(3):
            assert clients[fast][index].out.take() == clients[ref][index].out.take(), index
            in_flight[index] = in_flight[index][-3:]
        assert state_of(fast, clients[fast]) == state_of(ref, clients[ref])
        for index in range(3):  # a closed connection is replaced, on both
            if clients[fast][index].closing or clients[fast][index].state == State.CLOSED:
                for n in (fast, ref):
                    n.connection_lost(clients[n][index])
                    clients[n][index] = connect(n)
                    bufs[n][index] = ReadBuffer(1 << 20)
                xids[index], in_flight[index] = 1, []
    assert fast.stats.packets_sent > 300
