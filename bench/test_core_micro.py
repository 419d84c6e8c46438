"""Micro benchmarks of fastzk._core: the per-request costs the server pays on its hot paths.

Run: pytest bench/test_core_micro.py --benchmark-only
"""

import struct

import pytest

from fastzk._core import DataTree, ReadBuffer, WriteBuffer, decode_request, serve_reads
from fastzk.node import Client
from fastzk.server.reads import Reads
from fastzk.server.watches import DATA, WatchManager

OPEN = [(31, "world", "anyone")]
STAT = (5, 6, 1700000000000, 1700000000001, 3, 2, 0, 0, 64, 2, 7)
N_NODES = 100_000


def ustr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">i", len(b)) + b


GET_DATA = struct.pack(">ii", 7, 4) + ustr("/app/service/node-00042") + b"\x00"
CREATE = (
    struct.pack(">ii", 8, 1) + ustr("/app/service/node-00042") + struct.pack(">i", 64) + b"d" * 64
    + struct.pack(">i", 1) + struct.pack(">i", 31) + ustr("world") + ustr("anyone")
    + struct.pack(">i", 0)
)


@pytest.fixture(scope="module")
def big_tree():
    """100k znodes in 100 directories of 1000."""
    tree = DataTree()
    zxid = 1
    for d in range(100):
        tree.create(f"/d{d}", b"", OPEN, 0, zxid, 0, d + 1)
        zxid += 1
        for i in range(N_NODES // 100 - 1):
            tree.create(f"/d{d}/n{i:05d}", b"v" * 32, OPEN, 0, zxid, 0, i + 1)
            zxid += 1
    return tree


def test_decode_get_data_request(benchmark):
    assert benchmark(decode_request, GET_DATA)[1] == 4


def test_decode_create_request(benchmark):
    assert benchmark(decode_request, CREATE)[1] == 1


def test_encode_get_data_reply(benchmark):
    out = WriteBuffer()
    data = b"x" * 64

    def encode():
        out.begin(7, 0x100000005, 0)
        out.write_buffer(data)
        out.write_stat(STAT)
        out.end()
        if len(out) > 1 << 20:
            out.take()

    benchmark(encode)


def test_tree_get_data_in_100k_tree(benchmark, big_tree):
    paths = [f"/d{d}/n{i:05d}" for d in range(0, 100, 7) for i in range(0, 999, 97)]
    it = iter(range(10**9))

    def lookup():
        return big_tree.get_data(paths[next(it) % len(paths)])

    assert benchmark(lookup) is not None


def test_tree_create(benchmark):
    tree = DataTree()
    tree.create("/c", b"", OPEN, 0, 1, 0, 1)
    names = iter(range(10**8))
    zxids = iter(range(2, 10**8))

    def create():
        i = next(names)
        tree.create(f"/c/n{i}", b"x" * 32, OPEN, 0, next(zxids), 0, i + 1)

    benchmark.pedantic(create, rounds=20_000, iterations=1, warmup_rounds=100)


def test_tree_set_data(benchmark, big_tree):
    zxids = iter(range(10**7, 10**9))
    data = b"y" * 32

    def set_data():
        zxid = next(zxids)
        big_tree.set_data("/d3/n00500", data, zxid & 0x7FFFFFFF, zxid, 0)

    benchmark(set_data)


def test_serve_reads_64_pipelined_get_data(benchmark, big_tree):
    requests = [struct.pack(">ii", i, 4) + ustr(f"/d5/n{i:05d}") + b"\x00" for i in range(64)]
    batch = b"".join(struct.pack(">i", len(r)) + r for r in requests)
    rb = ReadBuffer(0xFFFFF)
    out = WriteBuffer()

    def serve():
        mv = rb.get_buffer(len(batch))
        mv[: len(batch)] = batch
        del mv
        rb.buffer_updated(len(batch))
        served = serve_reads(rb, big_tree, out, 0x100000005, 1000, 1 << 30)
        out.take()
        return served

    assert benchmark(serve) == 64


def _serve_batch(tree, requests):
    """A benchmark body that answers one pipelined batch of requests through serve_reads."""
    batch = b"".join(struct.pack(">i", len(r)) + r for r in requests)
    rb = ReadBuffer(0xFFFFF)
    out = WriteBuffer()

    def serve():
        mv = rb.get_buffer(len(batch))
        mv[: len(batch)] = batch
        del mv
        rb.buffer_updated(len(batch))
        served = serve_reads(rb, tree, out, 0x100000005, 1000, 1 << 30)
        out.take()
        return served

    return serve


def _watch_batch(tree, fast):
    """64 pipelined getData(watch=true) of distinct nodes from one connection, the watches
    gone before each batch (as after the notification a watcher re-arms after): through
    serve_reads with the watch tables (`fast`), or as the slow path answers them (pop_frame,
    decode_request, Reads.answer, WatchManager.add), which is where they went before."""
    requests = [struct.pack(">ii", i, 4) + ustr(f"/d5/n{i:05d}") + b"\x01" for i in range(64)]
    batch = b"".join(struct.pack(">i", len(r)) + r for r in requests)
    rb = ReadBuffer(0xFFFFF)
    watches = WatchManager()
    reads = Reads(tree, watches)
    client = Client("127.0.0.1")
    out = client.out

    def serve():
        watches.tables[DATA].clear()
        client.watches.clear()
        mv = rb.get_buffer(len(batch))
        mv[: len(batch)] = batch
        del mv
        rb.buffer_updated(len(batch))
        if fast:
            served = serve_reads(rb, tree, out, 0x100000005, 1000, 1 << 30, watches.tables,
                                 client)
        else:
            served = 0
            while (payload := rb.pop_frame()) is not None:
                xid, op, body = decode_request(payload)
                reads.answer(client, xid, op, body, 0x100000005)
                served += 1
        out.take()
        return served

    return serve


def test_serve_reads_64_pipelined_get_data_watch(benchmark, big_tree):
    assert benchmark(_watch_batch(big_tree, True)) == 64


def test_slow_path_64_pipelined_get_data_watch(benchmark, big_tree):
    assert benchmark(_watch_batch(big_tree, False)) == 64


@pytest.fixture(scope="module")
def small_dirs():
    """100 directories of 10 children each: the common shape of a getChildren target."""
    tree = DataTree()
    zxid = 1
    for d in range(100):
        tree.create(f"/s{d}", b"", OPEN, 0, zxid, 0, d + 1)
        zxid += 1
        for i in range(10):
            tree.create(f"/s{d}/member-{i:010d}", b"", OPEN, 0, zxid, 0, i + 1)
            zxid += 1
    return tree


def test_serve_reads_64_pipelined_get_children_10(benchmark, small_dirs):
    requests = [struct.pack(">ii", i, 8) + ustr(f"/s{i}") + b"\x00" for i in range(64)]
    assert benchmark(_serve_batch(small_dirs, requests)) == 64


def test_serve_reads_get_children_1000(benchmark, big_tree):
    """One getChildren2 of a directory of 999 children (about 8 KB of reply)."""
    requests = [struct.pack(">ii", 1, 12) + ustr("/d7") + b"\x00"]
    assert benchmark(_serve_batch(big_tree, requests)) == 1


def test_tree_get_children_1000(benchmark, big_tree):
    assert len(benchmark(big_tree.get_children, "/d9")) == 999


def test_tree_create_delete_churn(benchmark):
    """A queue's pattern: create one child and delete the oldest, 1000 children live."""
    tree = DataTree()
    tree.create("/q", b"", OPEN, 0, 1, 0, 1)
    for i in range(1000):
        tree.create(f"/q/item-{i:010d}", b"x" * 32, OPEN, 0, i + 2, 0, i + 1)
    counter = iter(range(1000, 10**8))

    def churn():
        i = next(counter)
        tree.create(f"/q/item-{i:010d}", b"x" * 32, OPEN, 0, i + 2, 0, i + 1)
        tree.delete(f"/q/item-{i - 1000:010d}", i + 2)

    benchmark.pedantic(churn, rounds=20_000, iterations=1, warmup_rounds=100)


# --- the write pipeline: prep (request -> txn) and apply + reply (txn -> tree, reply frame) ---
# A connection's identities as the node keeps them (an ip identity from accept time).
IDENTITIES = {("ip", "127.0.0.1"): None}
SESSION = 0x100000000000001
NOW_MS = 1_700_000_000_000


def _write_pipeline():
    from random import Random

    from fastzk.server.apply import Applier
    from fastzk.server.prep import Prep
    from fastzk.server.sessions import SessionTable
    from fastzk.server.watches import WatchManager

    tree = DataTree()
    tree.create("/app", b"", OPEN, 0, 1, 0, 1)
    tree.create("/app/n", b"x" * 64, OPEN, 0, 2, 0, 1)
    prep = Prep(tree, 2, True)
    applier = Applier(tree, WatchManager(), SessionTable(2000, 1, 0, Random(1)))
    return tree, prep, applier


def test_prep_set_data(benchmark):
    from fastzk.proto import Op

    _, prep, _ = _write_pipeline()
    body = ("/app/n", b"y" * 64, -1)

    def one():
        txn = prep.write(SESSION, 1, Op.SET_DATA, body, IDENTITIES, NOW_MS)
        prep.applied(txn.zxid)

    benchmark(one)


def test_prep_create(benchmark):
    from fastzk.proto import Op

    _, prep, _ = _write_pipeline()
    names = iter(range(10**9))
    data = b"y" * 64

    def one():
        body = (f"/app/c{next(names)}", data, OPEN, 0)
        txn = prep.write(SESSION, 1, Op.CREATE, body, IDENTITIES, NOW_MS)
        prep.applied(txn.zxid)

    benchmark(one)


def test_prep_delete(benchmark):
    from fastzk.proto import Op

    _, prep, _ = _write_pipeline()
    body = ("/app/n", -1)

    def one():
        txn = prep.write(SESSION, 1, Op.DELETE, body, IDENTITIES, NOW_MS)
        prep.applied(txn.zxid)

    benchmark(one)


def test_apply_reply_set_data(benchmark):
    from fastzk.proto import Op
    from fastzk.server.apply import write_reply

    _, prep, applier = _write_pipeline()
    txn = prep.write(SESSION, 1, Op.SET_DATA, ("/app/n", b"y" * 64, -1), IDENTITIES, NOW_MS)
    out = WriteBuffer()

    def one():
        result, _ = applier.apply(txn)
        write_reply(out, txn, result)
        if len(out) > 1 << 20:
            out.take()

    benchmark(one)


def test_apply_reply_create_delete(benchmark):
    """One create2 and one delete of the same node (the create-delete load's pair)."""
    from fastzk.proto import Op
    from fastzk.server.apply import write_reply

    _, prep, applier = _write_pipeline()
    create = prep.write(SESSION, 1, Op.CREATE2, ("/app/c", b"y" * 64, OPEN, 0), IDENTITIES,
                        NOW_MS)
    delete = prep.write(SESSION, 2, Op.DELETE, ("/app/c", -1), IDENTITIES, NOW_MS)
    out = WriteBuffer()

    def one():
        result, _ = applier.apply(create)
        write_reply(out, create, result)
        result, _ = applier.apply(delete)
        write_reply(out, delete, result)
        if len(out) > 1 << 20:
            out.take()

    benchmark(one)


def _host_with_client():
    """A standalone host (its log durable at once) with one connection and /app/n, /app."""
    import random

    from fastzk.node import Limits, Node

    node = Node(Limits(tick_ms=100, min_session_timeout=200, max_session_timeout=2000),
                random.Random(1), start_ms=NOW_MS)
    node.start()
    _settle(node)
    client = Client("127.0.0.1")
    node.connection_made(client)
    connect = struct.pack(">iqiq", 0, 0, 1000, 0) + struct.pack(">i", 16) + bytes(16) + b"\x00"
    node.handle_connect(client, connect)
    _settle(node)
    node.handle_request(client, struct.pack(">ii", 1, 1) + ustr("/app") + struct.pack(">i", 0)
                        + struct.pack(">i", 1) + struct.pack(">i", 31) + ustr("world")
                        + ustr("anyone") + struct.pack(">i", 0))
    _settle(node)
    client.out.take()
    return node, client


def _settle(node) -> None:
    """The runtime's step with a log that is durable at once."""
    while True:
        out = node.take_output()
        if not out:
            return
        appended = [z for op, arg in out.log_ops if op == "append" for z, _ in arg]
        if appended:
            node.persisted(out.gen, appended[-1])


def _host_round(benchmark, frames: bytes) -> None:
    """Frames into the receive buffer -> Node.serve_writes -> log -> commit -> replies: the
    host's whole per-write cost for a pipelining connection, sockets and disk aside."""
    node, client = _host_with_client()
    buf = ReadBuffer(1 << 20)

    def one():
        view = buf.get_buffer(len(frames))
        view[:len(frames)] = frames
        del view
        buf.buffer_updated(len(frames))
        while node.serve_writes(client, buf, 256, 1 << 30, 1 << 30):
            pass
        _settle(node)
        client.out.take()

    benchmark(one)
    assert client.fifo_bytes == 0 and not client.fifo


def _framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def test_host_64_pipelined_set_data(benchmark):
    frames = b"".join(
        _framed(struct.pack(">ii", 100 + i, 5) + ustr("/app") + struct.pack(">i", 100)
                + b"v" * 100 + struct.pack(">i", -1)) for i in range(64))
    _host_round(benchmark, frames)


def test_host_32_pipelined_create_delete(benchmark):
    """create2 + delete of 32 nodes: 64 writes."""
    creates = [_framed(struct.pack(">ii", 100 + i, 15) + ustr(f"/app/c{i}")
                       + struct.pack(">i", 100) + b"v" * 100 + struct.pack(">i", 1)
                       + struct.pack(">i", 31) + ustr("world") + ustr("anyone")
                       + struct.pack(">i", 0)) for i in range(32)]
    deletes = [_framed(struct.pack(">ii", 200 + i, 2) + ustr(f"/app/c{i}")
                       + struct.pack(">i", -1)) for i in range(32)]
    _host_round(benchmark, b"".join(creates + deletes))
