"""Robustness: what the server does with malformed, hostile or excessive client input.

Every case runs against Apache ZooKeeper 3.8.0 *and* fastzk (the ``server`` fixture, or
``make_server`` over both kinds when a special zoo.cfg is needed) and asserts what the real
server does, byte for byte where the bytes matter to clients.  After each bad input the test
checks that the server still serves a brand-new client: a robustness bug typically shows up as
a crashed or wedged server rather than as a wrong reply on the offending connection.

The bytes are produced by ``tests/wire.py``, which is deliberately independent of the server's
own codec.  Where Apache ZooKeeper and ``shared/zk-protocol.md`` disagree, the test follows
ZooKeeper and says so in a comment marked "ZK vs spec".
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wire
from kazoo.client import KazooClient

from fastzk.nemesis.servers import ServerProcess

KINDS = ["zookeeper", "fastzk"]
MakeServer = Callable[..., ServerProcess]
KazooFactory = Callable[..., KazooClient]

ZERO_PASSWD = b"\x00" * 16


# --- helpers --------------------------------------------------------------------------------


def assert_still_serving(server: ServerProcess) -> None:
    """A fresh connection gets a session and a correct ping reply.

    This is the check made after every bad input: the offending connection may legitimately be
    closed, but the server must neither crash nor stop accepting other clients.
    """
    hdr = wire.fresh_session_ping(server.host, server.port)
    assert (hdr.xid, hdr.err) == (wire.XID_PING, wire.OK), hdr
    assert hdr.zxid > 0, f"ping reply zxid should be the last committed zxid, got {hdr}"


@contextlib.contextmanager
def session(
    server: ServerProcess, **kw: object
) -> Iterator[tuple[socket.socket, wire.ConnectResponse]]:
    """A raw connection with an established session; closed (not closeSession'd) on exit."""
    sock, resp = wire.handshake(server.host, server.port, **kw)  # type: ignore[arg-type]
    try:
        assert resp.timeout_ms > 0 and resp.session_id != 0, resp
        yield sock, resp
    finally:
        sock.close()


def open_session(sock: socket.socket) -> None:
    """Handshake on a raw socket, for cases that send their bad bytes after it."""
    sock.sendall(wire.connect_request())
    wire.parse_connect_response(wire.read_frame(sock))


@contextlib.contextmanager
def raw_connection(server: ServerProcess, timeout: float = 5.0) -> Iterator[socket.socket]:
    """A bare TCP connection to the server with nothing sent yet."""
    sock = wire.connect(server.host, server.port, timeout)
    try:
        yield sock
    finally:
        sock.close()


def tick_time(server: ServerProcess) -> int:
    """The tickTime the fixture wrote into zoo.cfg (servers.py defaults to 2000)."""
    return int(getattr(server, "cfg", {}).get("tickTime", 2000))


def expect_closed_silently(sock: socket.socket, timeout: float = 5.0) -> None:
    """The server must close this connection without sending a single byte."""
    closed, data = wire.recv_until_closed(sock, timeout)
    assert data == b"", f"expected no reply before the close, got {data.hex()}"
    assert closed, f"server kept the connection open for {timeout}s"


def expect_error_reply_then_open(sock: socket.socket, xid: int, err: int) -> None:
    """Next frame is exactly a 16-byte ReplyHeader{xid, _, err}; the connection stays usable.

    Exactly 16 bytes matters: clients never read a body after err != 0, so any extra bytes
    would corrupt the next reply they parse.
    """
    body = wire.read_frame(sock, 5.0)
    hdr, rest = wire.parse_reply_header(body)
    assert (hdr.xid, hdr.err) == (xid, err), hdr
    assert rest == b"", f"error reply must carry no body, got {rest.hex()}"
    ping = wire.ping(sock)
    assert (ping.xid, ping.err) == (wire.XID_PING, wire.OK), ping


def create_node(sock: socket.socket, path: str, data: bytes = b"", xid: int = 1) -> None:
    """Create ``path`` over a raw session and insist on success."""
    sock.sendall(wire.create_request(xid, path, data))
    hdr, _ = wire.read_reply_skipping_notifications(sock)
    assert (hdr.xid, hdr.err) == (xid, wire.OK), f"setup create {path!r} failed: {hdr}"


def invalid_reply_body(read_only: bool | None) -> bytes:
    """The exact ConnectResponse body of a refused resume: timeOut 0, sessionId 0, 16 zeros."""
    body = struct.pack(">iiq", 0, 0, 0) + wire.p_buffer(ZERO_PASSWD)
    if read_only is not None:
        body += b"\x00"
    return body


def _proc_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a server might fork workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in task.read_text().split())
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of a process tree in MiB, from /proc/<pid>/status VmRSS."""
    total_kb = 0
    for p in _proc_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def cpu_ticks(pid: int) -> int:
    """utime+stime of a process tree (clock ticks), to see when the server goes idle."""
    total = 0
    for p in _proc_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


class Flooder:
    """Writes a large pipelined burst on a connection from a thread and never reads.

    The writer uses a ``dup`` of the socket so that its timeout is independent of the reader's.
    """

    def __init__(self, sock: socket.socket, payload: bytes) -> None:
        self._wsock = sock.dup()
        self._wsock.settimeout(60.0)
        self._payload = payload
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flooder", daemon=True)

    def _run(self) -> None:
        try:
            self._wsock.sendall(self._payload)
        except OSError as exc:  # the test closed the socket, or the server dropped us
            self.error = exc
        finally:
            self.finished.set()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wsock.shutdown(socket.SHUT_RDWR)
        self._wsock.close()
        self._thread.join(10.0)


def drain_replies(
    sock: socket.socket, count: int, timeout: float
) -> tuple[list[int], dict[int, bytes]]:
    """Read ``count`` reply frames fast; return their xids in order and a sample of bodies.

    Errors are folded into the xid list as (xid, err) mismatches by the caller; bodies of every
    1000th reply are kept for content checks.
    """
    deadline = time.monotonic() + timeout
    buf = bytearray()
    pos = 0
    xids: list[int] = []
    errs: list[int] = []
    samples: dict[int, bytes] = {}
    while len(xids) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"only {len(xids)}/{count} replies within {timeout}s")
        sock.settimeout(remaining)
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise wire.ConnectionClosed(f"closed after {len(xids)}/{count} replies")
        buf += chunk
        while len(buf) - pos >= 4:
            (n,) = struct.unpack_from(">i", buf, pos)
            if len(buf) - pos - 4 < n:
                break
            xid, _zxid, err = struct.unpack_from(">iqi", buf, pos + 4)
            if xid != wire.XID_NOTIFICATION:
                if len(xids) % 1000 == 0:
                    samples[len(xids)] = bytes(buf[pos + 4 + 16 : pos + 4 + n])
                xids.append(xid)
                errs.append(err)
            pos += 4 + n
        if pos > (8 << 20):
            del buf[:pos]
            pos = 0
    assert set(errs) == {wire.OK}, f"error codes in flood replies: {sorted(set(errs))}"
    return xids, samples


# --- frame length ---------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["before_connect", "after_connect"])
def test_negative_frame_length_closes_connection_without_reply(
    server: ServerProcess, phase: str
) -> None:
    """A negative length can never be a frame: the server must hang up, not wait or reply."""
    with raw_connection(server) as sock:
        if phase == "after_connect":
            open_session(sock)
        wire.send_quietly(sock, wire.p_int(-5) + b"\x00" * 32)
        expect_closed_silently(sock)
    assert_still_serving(server)


@pytest.mark.parametrize("phase", ["before_connect", "after_connect"])
def test_frame_longer_than_default_maxbuffer_is_refused_on_the_length_alone(
    server: ServerProcess, phase: str
) -> None:
    """Only the 4-byte prefix is sent: the server must not wait for (or buffer) 1 MiB first."""
    with raw_connection(server) as sock:
        if phase == "after_connect":
            open_session(sock)
        wire.send_quietly(sock, wire.p_int(wire.DEFAULT_MAXBUFFER + 1))
        expect_closed_silently(sock)
    assert_still_serving(server)


def _create_frame_of_size(xid: int, path: str, size: int) -> bytes:
    """A create request whose frame body is exactly ``size`` bytes (padding in the data)."""
    empty = wire.create_request(xid, path, b"")
    pad = size - (len(empty) - 4)
    assert pad >= 0
    req = wire.create_request(xid, path, b"x" * pad)
    assert len(req) - 4 == size
    return req


def test_frame_of_exactly_default_maxbuffer_is_accepted_and_one_more_byte_is_not(
    server: ServerProcess, unique_path: str
) -> None:
    """The limit is inclusive (len > jute.maxbuffer is refused): 1,048,575 bytes must work."""
    with session(server) as (sock, _):
        sock.sendall(_create_frame_of_size(1, unique_path, wire.DEFAULT_MAXBUFFER))
        hdr, body = wire.read_reply(sock, 10.0)
        assert (hdr.xid, hdr.err) == (1, wire.OK), hdr
        sock.sendall(wire.delete_request(2, unique_path))
        hdr, _ = wire.read_reply(sock, 10.0)
        assert (hdr.xid, hdr.err) == (2, wire.OK), hdr
    with session(server) as (sock, _):
        wire.send_quietly(
            sock, _create_frame_of_size(1, unique_path + "x", wire.DEFAULT_MAXBUFFER + 1)
        )
        expect_closed_silently(sock)
    assert_still_serving(server)


@pytest.mark.parametrize("kind", KINDS)
def test_small_jute_maxbuffer_bounds_request_frames(
    make_server: MakeServer, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jute.maxbuffer=4096: a 4096-byte frame works, 4097 closes the connection silently.

    ZK vs spec: Apache ZooKeeper ignores ``jute.maxbuffer`` in zoo.cfg (it becomes the unused
    system property ``zookeeper.jute.maxbuffer``); only ``-Djute.maxbuffer`` takes effect, so
    the JVM gets it through JAVA_TOOL_OPTIONS here while fastzk reads the zoo.cfg key.
    """
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Djute.maxbuffer=4096")
    srv = make_server(kind, **{"jute.maxbuffer": 4096})
    with session(srv) as (sock, _):
        sock.sendall(_create_frame_of_size(1, "/fits", 4096))
        hdr, _ = wire.read_reply(sock)
        assert (hdr.xid, hdr.err) == (1, wire.OK), hdr
        wire.send_quietly(sock, _create_frame_of_size(2, "/toolong", 4097))
        expect_closed_silently(sock)
    with session(srv) as (sock, _):
        wire.send_quietly(sock, wire.p_int(4097))  # the length alone is enough
        expect_closed_silently(sock)
    assert_still_serving(srv)


def test_frame_shorter_than_a_request_header_closes_connection(server: ServerProcess) -> None:
    """0, 4 and 7-byte frames cannot hold {xid, type}: the real server hangs up silently."""
    for body in (b"", b"\x00\x00\x00\x01", b"\x00\x00\x00\x01\x00\x00\x00"):
        with session(server) as (sock, _):
            wire.send_quietly(sock, wire.frame(body))
            expect_closed_silently(sock)
    assert_still_serving(server)


@pytest.mark.parametrize("phase", ["before_connect", "after_connect"])
def test_truncated_frame_followed_by_close_is_dropped_cleanly(
    server: ServerProcess, phase: str
) -> None:
    """A peer that dies mid-frame must not leave the server stuck or crashed."""
    with raw_connection(server) as sock:
        if phase == "after_connect":
            open_session(sock)
            sock.sendall(wire.p_int(100) + b"abc")
        else:
            sock.sendall(wire.connect_request()[:20])
        sock.shutdown(socket.SHUT_WR)
        expect_closed_silently(sock)
    assert_still_serving(server)


def test_partial_frame_waits_for_the_rest_and_byte_by_byte_requests_work(
    server: ServerProcess,
) -> None:
    """Framing is by length, not by read boundaries: a request dribbled one byte at a time
    must be answered exactly like one written in a single segment, and nothing is answered
    before the frame is complete."""
    with session(server) as (sock, _):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = wire.get_data_request(7, "/zookeeper")
        sock.sendall(req[:10])
        closed, early = wire.recv_until_closed(sock, 0.5)
        assert (closed, early) == (False, b""), "server answered or closed on a partial frame"
        for i in range(10, len(req)):
            sock.sendall(req[i : i + 1])
            time.sleep(0.005)
        hdr, body = wire.read_reply(sock)
        assert (hdr.xid, hdr.err) == (7, wire.OK), hdr
        assert len(body) == 4 + wire.STAT_SIZE  # empty data buffer + Stat
    assert_still_serving(server)


# --- undecodable bodies ---------------------------------------------------------------------

_UNDECODABLE: dict[str, bytes] = {
    # ustring length says 1000 but the frame ends after 4 bytes of it
    "getData_string_longer_than_frame": wire.request(
        1, wire.OP_GET_DATA, wire.p_int(1000) + b"/ab\x00"
    ),
    "create_string_longer_than_frame": wire.request(
        1, wire.OP_CREATE, wire.p_int(1000) + b"/ab\x00"
    ),
    "getChildren_string_length_2^31-1": wire.request(
        1, wire.OP_GET_CHILDREN, wire.p_int(2**31 - 1) + b"/\x00"
    ),
    "getChildren_negative_string_length": wire.request(
        1, wire.OP_GET_CHILDREN, wire.p_int(-7) + b"/\x00"
    ),
    "setData_buffer_length_2^31-1": wire.request(
        1, wire.OP_SET_DATA, wire.p_ustring("/zookeeper") + wire.p_int(2**31 - 1) + wire.p_int(-1)
    ),
    "setData_negative_buffer_length": wire.request(
        1, wire.OP_SET_DATA, wire.p_ustring("/zookeeper") + wire.p_int(-7) + wire.p_int(-1)
    ),
    "getData_header_only": wire.request(1, wire.OP_GET_DATA),
    "getData_missing_watch_flag": wire.request(1, wire.OP_GET_DATA, wire.p_ustring("/")),
    "create_null_path": wire.create_request(1, None),
    "getData_null_path": wire.get_data_request(1, None),
    "multi_without_end_marker": wire.request(1, wire.OP_MULTI, b""),
}


@pytest.mark.parametrize("case", sorted(_UNDECODABLE))
def test_undecodable_body_gives_marshalling_error_and_keeps_connection(
    server: ServerProcess, case: str
) -> None:
    """A body that does not decode is answered with err -5 (no body) and the session goes on.

    ZK vs spec: a null path (ustring length -1) is also -5 on ZooKeeper; the spec's
    "treat null like empty" advice would have made getData(null) return the root.
    """
    with session(server) as (sock, _):
        sock.sendall(_UNDECODABLE[case])
        expect_error_reply_then_open(sock, 1, wire.MARSHALLING_ERROR)
    assert_still_serving(server)


def _multi_create_with_acl_count(path: str, count: int) -> bytes:
    """multi [create path with an ACL vector claiming ``count`` entries but holding one]."""
    op = (
        wire.p_int(wire.OP_CREATE)
        + wire.p_bool(False)
        + wire.p_int(-1)
        + wire.p_ustring(path)
        + wire.p_buffer(b"")
        + wire.p_int(count)
        + wire.p_acl()
        + wire.p_int(0)
    )
    end = wire.p_int(-1) + wire.p_bool(True) + wire.p_int(-1)
    return wire.request(1, wire.OP_MULTI, op + end)


_HUGE_VECTORS: dict[str, bytes] = {
    "setWatches_count_2^31-1_one_element": wire.request(
        1, wire.OP_SET_WATCHES, wire.p_long(0) + wire.p_int(2**31 - 1) + wire.p_ustring("/a")
    ),
    "setWatches_count_2^31-1_no_elements": wire.request(
        1, wire.OP_SET_WATCHES, wire.p_long(0) + wire.p_int(2**31 - 1)
    ),
    "create_acl_count_2^31-1": wire.request(
        1,
        wire.OP_CREATE,
        wire.p_ustring("/hugeacl")
        + wire.p_buffer(b"")
        + wire.p_int(2**31 - 1)
        + wire.p_acl()
        + wire.p_int(0),
    ),
    "multi_create_acl_count_2^31-1": _multi_create_with_acl_count("/hugemulti", 2**31 - 1),
}


@pytest.mark.parametrize("case", sorted(_HUGE_VECTORS))
def test_huge_vector_count_is_a_marshalling_error_not_an_allocation(
    server: ServerProcess, case: str
) -> None:
    """A count of 2^31-1 must be checked against the bytes present, never pre-allocated."""
    with session(server) as (sock, _):
        sock.sendall(_HUGE_VECTORS[case])
        expect_error_reply_then_open(sock, 1, wire.MARSHALLING_ERROR)
        # nothing was created by the rejected writes
        for xid, path in enumerate(("/hugeacl", "/hugemulti"), start=10):
            sock.sendall(wire.exists_request(xid, path))
            hdr, _ = wire.read_reply(sock)
            assert (hdr.xid, hdr.err) == (xid, wire.NO_NODE), hdr
    assert_still_serving(server)


# --- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [b"/bad\xff\xfe", b"/bad\xc3", b"/cesu\xed\xa0\x80"],
    ids=["ff_fe", "truncated_sequence", "cesu8_surrogate"],
)
def test_invalid_utf8_path_is_bad_arguments_for_create_and_no_node_for_reads(
    server: ServerProcess, raw_path: bytes
) -> None:
    """ZooKeeper decodes paths leniently (U+FFFD), so a write fails path validation (-8) while
    a read simply finds no such node (-101); neither may close the connection."""
    with session(server) as (sock, _):
        sock.sendall(wire.create_request(1, raw_path))
        hdr, body = wire.read_reply(sock)
        assert (hdr.xid, hdr.err, body) == (1, wire.BAD_ARGUMENTS, b""), hdr
        for xid, req in (
            (2, wire.get_data_request(2, raw_path)),
            (3, wire.exists_request(3, raw_path)),
            (4, wire.get_children_request(4, raw_path)),
        ):
            sock.sendall(req)
            hdr, body = wire.read_reply(sock)
            assert (hdr.xid, hdr.err, body) == (xid, wire.NO_NODE, b""), hdr
        assert wire.ping(sock).err == wire.OK
    assert_still_serving(server)


# (path relative to a freshly created base node, or absolute if it starts with "!", expected err)
_CREATE_PATHS: list[tuple[str, int]] = [
    ("!relative", wire.BAD_ARGUMENTS),
    ("!", wire.BAD_ARGUMENTS),  # the empty string
    ("!//x", wire.BAD_ARGUMENTS),
    ("!/.", wire.BAD_ARGUMENTS),
    ("!/..", wire.BAD_ARGUMENTS),
    ("!/", wire.NODE_EXISTS),
    ("/", wire.BAD_ARGUMENTS),  # trailing slash, parent exists
    ("/.", wire.BAD_ARGUMENTS),
    ("/..", wire.BAD_ARGUMENTS),
    # parent "<base>/" does not exist, and the parent check comes before validation
    ("//x", wire.NO_NODE),
    ("/missing/", wire.NO_NODE),
    ("/a\x00b", wire.BAD_ARGUMENTS),
    ("/a\x01b", wire.BAD_ARGUMENTS),
    ("/a\x7fb", wire.BAD_ARGUMENTS),
    ("/a\u0085b", wire.BAD_ARGUMENTS),
    ("/a\ue000b", wire.BAD_ARGUMENTS),  # private use area
    ("/a\ufff5b", wire.BAD_ARGUMENTS),
    ("/a\U0001f600b", wire.BAD_ARGUMENTS),  # outside the BMP: surrogates in Java
    ("/...", wire.OK),
    ("/.a", wire.OK),
    ("/\u00e9", wire.OK),
    ("/\ud7ff", wire.OK),
]


def test_create_validates_paths_like_zookeeper(
    server: ServerProcess, unique_path: str, kazoo_factory: KazooFactory
) -> None:
    """Each invalid create path gets the error ZooKeeper gives, nothing invalid is created,
    and the valid-but-odd names in the same list are created (so the test can fail both ways).
    """
    with session(server) as (sock, _):
        create_node(sock, unique_path)
        got: dict[str, int] = {}
        for xid, (spec, _err) in enumerate(_CREATE_PATHS, start=10):
            path = spec[1:] if spec.startswith("!") else unique_path + spec
            sock.sendall(wire.create_request(xid, path))
            hdr, _ = wire.read_reply(sock)
            assert hdr.xid == xid
            got[spec] = hdr.err
        assert got == dict(_CREATE_PATHS)
    zk = kazoo_factory(server)
    children = set(zk.get_children(unique_path))
    assert children == {"...", ".a", "\u00e9", "\ud7ff"}


def test_path_validation_applies_to_writes_not_reads(server: ServerProcess) -> None:
    """setData validates (-8); getData/getChildren on an invalid path are just NoNode; the
    empty path reads as the root; exists rejects a NUL (-8) like ZooKeeper does."""
    with session(server) as (sock, _):
        cases = [
            (wire.set_data_request(1, "relative", b"x"), wire.BAD_ARGUMENTS),
            (wire.get_data_request(2, "relative"), wire.NO_NODE),
            (wire.get_children_request(3, "/a/"), wire.NO_NODE),
            (wire.exists_request(4, "/a\x00b"), wire.BAD_ARGUMENTS),
            (wire.get_data_request(5, ""), wire.OK),
        ]
        for req, err in cases:
            sock.sendall(req)
            hdr, body = wire.read_reply(sock)
            xid = struct.unpack_from(">i", req, 4)[0]
            assert (hdr.xid, hdr.err) == (xid, err), (req.hex(), hdr)
        # the root's data reply: empty buffer then the Stat of / (numChildren >= 1)
        data, off = wire.parse_buffer(body)
        assert data == b"" and len(body) - off == wire.STAT_SIZE
        num_children = struct.unpack_from(">i", body, off + 56)[0]
        assert num_children >= 1
    assert_still_serving(server)


# --- opcodes --------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [10, 0, 999, -77, 2**31 - 1])
def test_unknown_opcode_replies_unimplemented_then_closes(
    server: ServerProcess, opcode: int
) -> None:
    """Unknown opcodes get exactly {xid, _, -6} (16 bytes) and then the connection is closed.

    The reply zxid is -1 on ZooKeeper; the spec calls it unspecified, so it is not asserted.
    ZK vs spec: ZooKeeper answers -6 out of band (UnimplementedRequestProcessor), so with other
    requests pipelined around it the -6 can overtake earlier replies and a later request may
    still be answered before the close; only the unpipelined case is deterministic.
    """
    with session(server) as (sock, _):
        sock.sendall(wire.get_data_request(1, "/"))
        hdr, _ = wire.read_reply(sock)
        assert (hdr.xid, hdr.err) == (1, wire.OK)
        sock.sendall(wire.request(12345, opcode, b"\x00" * 8))
        closed, data = wire.recv_until_closed(sock, 5.0)
        assert closed, "connection must be closed after an unknown opcode"
        frames = wire.split_frames(data)
        assert len(frames) == 1 and len(frames[0]) == 16, data.hex()
        hdr, _ = wire.parse_reply_header(frames[0])
        assert (hdr.xid, hdr.err) == (12345, wire.UNIMPLEMENTED), hdr
    assert_still_serving(server)


# --- handshake ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first_frame",
    [
        pytest.param(wire.get_data_request(1, "/"), id="getData"),
        pytest.param(wire.ping_request(), id="ping"),
        pytest.param(wire.frame(b"\xab" * 45), id="45_bytes_of_0xab"),
        pytest.param(wire.frame(b"\x00" * 20), id="20_zero_bytes"),
    ],
)
def test_first_frame_is_read_as_connect_request_and_garbage_is_dropped(
    server: ServerProcess, first_frame: bytes
) -> None:
    """Before the handshake every frame IS a ConnectRequest: a request frame is too short to
    be one, and 0xAB garbage has a negative password length, so both close silently."""
    with raw_connection(server) as sock:
        wire.send_quietly(sock, first_frame)
        expect_closed_silently(sock)
    assert_still_serving(server)


def test_all_zero_connect_sized_frame_is_a_valid_new_session_request(server: ServerProcess) -> None:
    """45 zero bytes parse as {proto 0, zxid 0, timeOut 0, sid 0, passwd "", readOnly 0}: a
    new session whose timeout is clamped up to 2 x tickTime, with the readOnly byte echoed."""
    with raw_connection(server) as sock:
        sock.sendall(wire.frame(b"\x00" * 45))
        body = wire.read_frame(sock)
        resp = wire.parse_connect_response(body)
        assert len(body) == 37
        assert resp.protocol_version == 0
        assert resp.timeout_ms == 2 * tick_time(server)
        assert resp.session_id != 0 and resp.read_only is False
        assert wire.ping(sock).err == wire.OK
    assert_still_serving(server)


def test_connect_request_fields_protocol_version_and_timeout_are_normalised(
    server: ServerProcess,
) -> None:
    """protocolVersion is ignored (reply says 0) and the timeout is clamped to
    [2, 20] x tickTime, including negative and 2^31-1 requests."""
    tick = tick_time(server)
    for requested, expected in ((-5, 2 * tick), (1, 2 * tick), (2**31 - 1, 20 * tick)):
        with raw_connection(server) as sock:
            sock.sendall(wire.connect_request(protocol_version=7, timeout_ms=requested))
            resp = wire.parse_connect_response(wire.read_frame(sock))
            assert (resp.protocol_version, resp.timeout_ms) == (0, expected), requested
    assert_still_serving(server)


def test_second_connect_request_on_established_connection_is_unimplemented_then_close(
    server: ServerProcess,
) -> None:
    """After the handshake a ConnectRequest is parsed as a request header: protocolVersion 0
    becomes xid 0 and the high half of lastZxidSeen becomes opcode 0 -> -6, then close."""
    with session(server) as (sock, _):
        sock.sendall(wire.connect_request())
        body = wire.read_frame(sock)
        hdr, rest = wire.parse_reply_header(body)
        assert (hdr.xid, hdr.err, rest) == (0, wire.UNIMPLEMENTED, b""), hdr
        expect_closed_silently(sock)
    assert_still_serving(server)


@pytest.mark.parametrize("read_only", [False, None], ids=["45_byte_request", "44_byte_request"])
def test_wrong_password_resume_gets_exact_invalid_reply_then_close(
    server: ServerProcess, read_only: bool | None
) -> None:
    """Refused resume = timeOut 0, sessionId 0, 16 zero bytes (+ readOnly byte iff sent), then
    close; the session itself survives and resumes with the right password.

    ZK vs spec: ZooKeeper 3.8.0 also closes the session's *current* connection before it checks
    the password (spec 2.3 step 8 says only on success); that is not asserted here.
    """
    sock, resp = wire.handshake(server.host, server.port)
    sock.close()
    with raw_connection(server) as bad:
        bad.sendall(
            wire.connect_request(
                session_id=resp.session_id, passwd=b"\x01" * 16, read_only=read_only
            )
        )
        n = struct.unpack(">i", wire.recv_exact(bad, 4))[0]
        body = wire.recv_exact(bad, n)
        assert body == invalid_reply_body(read_only), body.hex()
        assert n == (37 if read_only is not None else 36)
        expect_closed_silently(bad)
    with session(server, session_id=resp.session_id, passwd=resp.passwd, read_only=read_only) as (
        good,
        resumed,
    ):
        assert resumed.session_id == resp.session_id and resumed.passwd == resp.passwd
        assert resumed.read_only == (False if read_only is not None else None)
        assert wire.ping(good).err == wire.OK
        good.sendall(wire.close_session_request(1))
        wire.recv_until_closed(good, 2.0)


@pytest.mark.parametrize("read_only", [False, None], ids=["45_byte_request", "44_byte_request"])
def test_resume_of_unknown_session_gets_exact_invalid_reply_then_close(
    server: ServerProcess, read_only: bool | None
) -> None:
    """An id the server never issued is refused exactly like a wrong password; a request
    pipelined behind the ConnectRequest must not be answered."""
    with raw_connection(server) as sock:
        sock.sendall(
            wire.connect_request(
                session_id=0x01000000DEAD0001, passwd=b"a" * 16, read_only=read_only
            )
            + wire.get_data_request(1, "/")
        )
        closed, data = wire.recv_until_closed(sock, 5.0)
        assert closed
        assert data == wire.frame(invalid_reply_body(read_only)), data.hex()
    assert_still_serving(server)


def test_last_zxid_seen_ahead_of_server_is_closed_without_reply(server: ServerProcess) -> None:
    """A client "from the future" (lastZxidSeen > last committed zxid) is refused with no
    ConnectResponse at all, even with requests pipelined behind the ConnectRequest."""
    with raw_connection(server) as sock:
        sock.sendall(wire.connect_request(last_zxid_seen=1 << 40) + wire.get_data_request(1, "/"))
        expect_closed_silently(sock)
    assert_still_serving(server)


def test_c_client_handshake_reply_is_exactly_41_bytes(server: ServerProcess) -> None:
    """The C client reads the handshake reply into a fixed 4+37 byte buffer: the length must
    be 37, the password exactly 16 bytes, and nothing else may follow before a request."""
    with raw_connection(server) as sock:
        sock.sendall(wire.connect_request(timeout_ms=10_000, read_only=False))
        raw = wire.recv_exact(sock, 41)
        assert raw[:4] == b"\x00\x00\x00\x25"
        proto, timeout, sid, plen = struct.unpack_from(">iiqi", raw, 4)
        assert (proto, timeout, plen) == (0, 10_000, 16)
        assert sid != 0 and sid != 0x8000000000000000
        assert raw[40:] == b"\x00"
        closed, extra = wire.recv_until_closed(sock, 0.3)
        assert (closed, extra) == (False, b"")
    assert_still_serving(server)


@pytest.mark.parametrize(
    ("read_only", "body_len", "echoed"),
    [(False, 37, False), (True, 37, False), (None, 36, None)],
    ids=["ro_false", "ro_true", "no_ro_byte"],
)
def test_read_only_byte_is_echoed_only_when_sent(
    server: ServerProcess, read_only: bool | None, body_len: int, echoed: bool | None
) -> None:
    """45-byte request -> 37-byte reply, 44 -> 36; on a read-write server the echoed byte is 0
    even when the client said it accepts read-only.  Also holds for a resumed session."""
    with raw_connection(server) as sock:
        sock.sendall(wire.connect_request(read_only=read_only))
        body = wire.read_frame(sock)
        resp = wire.parse_connect_response(body)
        assert (len(body), resp.read_only) == (body_len, echoed)
        assert len(resp.passwd) == 16
    with raw_connection(server) as sock:
        sock.sendall(
            wire.connect_request(
                session_id=resp.session_id, passwd=resp.passwd, read_only=read_only
            )
        )
        body = wire.read_frame(sock)
        again = wire.parse_connect_response(body)
        assert (len(body), again.read_only, again.session_id) == (body_len, echoed, resp.session_id)
        sock.sendall(wire.close_session_request(1))
        wire.recv_until_closed(sock, 2.0)


# --- connection limits ----------------------------------------------------------------------


def expect_refused_at_accept(server: ServerProcess, payload: bytes) -> None:
    """Connect, send ``payload`` and see the connection closed without a byte.

    A server that closes right at accept may also make the client's connect() itself fail
    (reset / EPIPE, seen with ZooKeeper), which is the same outcome seen from a client.
    """
    try:
        sock = wire.connect(server.host, server.port)
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return
    with contextlib.closing(sock):
        wire.send_quietly(sock, payload)
        expect_closed_silently(sock)


@pytest.mark.parametrize("kind", KINDS)
def test_max_client_cnxns_closes_the_extra_connection_at_accept(
    make_server: MakeServer, kind: str
) -> None:
    """With maxClientCnxns=5 the 6th connection from 127.0.0.1 (even a four-letter word) is
    closed without a byte, the 5 existing sessions keep working, and a slot freed by a close
    can be reused."""
    srv = make_server(kind, maxClientCnxns=5)
    socks: list[socket.socket] = []
    try:
        for _ in range(5):
            sock, resp = wire.handshake(srv.host, srv.port)
            socks.append(sock)
            assert resp.session_id != 0
        expect_refused_at_accept(srv, wire.connect_request())
        expect_refused_at_accept(srv, b"ruok")
        for sock in socks:
            assert wire.ping(sock).err == wire.OK
        socks.pop().close()
        deadline = time.monotonic() + 5.0
        while True:  # the server notices the close asynchronously
            try:
                hdr = wire.fresh_session_ping(srv.host, srv.port, timeout=2.0)
                break
            except (wire.ConnectionClosed, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert hdr.err == wire.OK
    finally:
        for sock in socks:
            sock.close()


# --- flood / back-pressure -----------------------------------------------------------------

FLOOD_REQUESTS = 100_000


def _flood_payload(path: str, count: int) -> bytes:
    """``count`` pipelined getData frames with xids 2..count+1."""
    return b"".join(wire.get_data_request(xid, path) for xid in range(2, count + 2))


def test_pipelined_flood_is_answered_in_order_and_others_are_served_meanwhile(
    server: ServerProcess, unique_path: str, kazoo_factory: KazooFactory
) -> None:
    """100k getData frames written without reading: other clients keep being served while the
    flooding connection is backed up, and when it finally reads, every reply is there, in
    request order, with the right data."""
    data = bytes(range(256)) * 2
    with session(server) as (sock, _):
        create_node(sock, unique_path, data)
        flooder = Flooder(sock, _flood_payload(unique_path, FLOOD_REQUESTS))
        try:
            flooder.start()
            flooder.finished.wait(1.5)
            other = kazoo_factory(server)
            t0 = time.monotonic()
            assert other.get("/zookeeper")[1].numChildren >= 1
            assert other.exists(unique_path) is not None
            assert time.monotonic() - t0 < 5.0, "other clients starved by the flood"
            xids, samples = drain_replies(sock, FLOOD_REQUESTS, timeout=60.0)
            assert flooder.finished.wait(10.0) and flooder.error is None, flooder.error
        finally:
            flooder.close()
    assert xids == list(range(2, FLOOD_REQUESTS + 2)), "replies out of order or missing"
    for index, body in samples.items():
        got, off = wire.parse_buffer(body)
        assert got == data, f"reply #{index} carries wrong data"
        assert len(body) - off == wire.STAT_SIZE


def test_fastzk_memory_stays_bounded_under_a_pipelined_flood(make_server: MakeServer) -> None:
    """fastzk only (the JVM's heap cannot be compared): while a client pipelines 100k getData
    of a 4 KiB node (~420 MB of replies) and reads nothing, the server must stop reading from
    that socket instead of buffering the replies: RSS growth stays under 300 MB."""
    srv = make_server("fastzk")
    path = "/flood"
    with session(srv) as (sock, _):
        create_node(sock, path, b"z" * 4096)
        base = rss_mb(srv.pid)
        peak = base
        flooder = Flooder(sock, _flood_payload(path, FLOOD_REQUESTS))
        try:
            flooder.start()
            # Watch until the server goes idle (back-pressured, or done buffering) or 10 s.
            deadline = time.monotonic() + 10.0
            last_cpu, idle_since = cpu_ticks(srv.pid), time.monotonic()
            while time.monotonic() < deadline:
                time.sleep(0.1)
                peak = max(peak, rss_mb(srv.pid))
                cpu = cpu_ticks(srv.pid)
                if cpu != last_cpu:
                    last_cpu, idle_since = cpu, time.monotonic()
                elif time.monotonic() - idle_since > 0.6:
                    break
            assert_still_serving(srv)
            peak = max(peak, rss_mb(srv.pid))
        finally:
            flooder.close()
    assert peak - base < 300, f"server RSS grew from {base:.0f} MB to {peak:.0f} MB"
    assert_still_serving(srv)


# --- four-letter words ----------------------------------------------------------------------


def test_ruok_answers_imok_and_closes(server: ServerProcess) -> None:
    """With ruok whitelisted (the fixtures use "*") the answer is exactly b"imok", no newline."""
    with raw_connection(server) as sock:
        sock.sendall(b"ruok")
        closed, data = wire.recv_until_closed(sock, 5.0)
    assert (closed, data) == (True, b"imok")


def test_unknown_four_letter_word_closes_silently(server: ServerProcess) -> None:
    """ "xyzw" is read as a frame length of 0x78797a77 (> jute.maxbuffer): silent close."""
    with raw_connection(server) as sock:
        sock.sendall(b"xyzw")
        expect_closed_silently(sock)
    assert_still_serving(server)


@pytest.mark.parametrize("kind", KINDS)
def test_non_whitelisted_four_letter_word_gets_the_whitelist_message(
    make_server: MakeServer, kind: str
) -> None:
    """With the 3.5.3+ default whitelist (srvr only), ruok is refused with one fixed line."""
    srv = make_server(kind, **{"4lw.commands.whitelist": "srvr"})
    with raw_connection(srv) as sock:
        sock.sendall(b"ruok")
        closed, data = wire.recv_until_closed(sock, 5.0)
    assert (closed, data) == (True, b"ruok is not executed because it is not in the whitelist.\n")
    with raw_connection(srv) as sock:
        sock.sendall(b"srvr")
        closed, data = wire.recv_until_closed(sock, 5.0)
    assert closed and data.startswith(b"Zookeeper version: "), data[:200]
