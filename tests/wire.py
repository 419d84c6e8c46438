"""A tiny raw-socket ZooKeeper client-protocol helper for tests.

It is written with nothing but ``struct`` on purpose: it must not share a single line with the
server's own codec (``fastzk.proto`` / ``fastzk._core``), so that a bug in that codec cannot be
mirrored here and cancel itself out.  It builds exactly the bytes described in
``shared/zk-protocol.md`` (sections 1-4) and lets a test send *wrong* bytes just as easily.

Every socket operation is bounded by an explicit timeout: a test that waits for a reply that
never comes must fail, never hang.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# --- opcodes (spec section 4) -------------------------------------------------------------
OP_NOTIFICATION = 0
OP_CREATE = 1
OP_DELETE = 2
OP_EXISTS = 3
OP_GET_DATA = 4
OP_SET_DATA = 5
OP_GET_ACL = 6
OP_SET_ACL = 7
OP_GET_CHILDREN = 8
OP_SYNC = 9
OP_PING = 11
OP_GET_CHILDREN2 = 12
OP_CHECK = 13
OP_MULTI = 14
OP_CREATE2 = 15
OP_MULTI_READ = 22
OP_AUTH = 100
OP_SET_WATCHES = 101
OP_SET_WATCHES2 = 105
OP_CLOSE_SESSION = -11

# --- special xids (spec section 3.3) --------------------------------------------------------
XID_NOTIFICATION = -1
XID_PING = -2
XID_AUTH = -4
XID_SET_WATCHES = -8

# --- error codes (spec section 5.1) ---------------------------------------------------------
OK = 0
MARSHALLING_ERROR = -5
UNIMPLEMENTED = -6
BAD_ARGUMENTS = -8
NO_NODE = -101
NODE_EXISTS = -110

# Permission bits and the world:anyone ACL every test node uses.
PERM_ALL = 31
DEFAULT_MAXBUFFER = 0xFFFFF

_INT = struct.Struct(">i")
_LONG = struct.Struct(">q")
_REPLY_HEADER = struct.Struct(">iqi")


class ConnectionClosed(ConnectionError):
    """The peer closed the connection (EOF or reset) before the expected bytes arrived."""


# --- primitive encoders (spec section 1.2) --------------------------------------------------


def p_int(value: int) -> bytes:
    """Encode a jute ``int`` (4-byte signed big-endian)."""
    return _INT.pack(value)


def p_long(value: int) -> bytes:
    """Encode a jute ``long`` (8-byte signed big-endian)."""
    return _LONG.pack(value)


def p_bool(value: bool) -> bytes:
    """Encode a jute ``boolean`` as exactly 0x00 or 0x01."""
    return b"\x01" if value else b"\x00"


def p_buffer(value: bytes | None) -> bytes:
    """Encode a jute ``buffer``: length then bytes, ``None`` as length -1."""
    if value is None:
        return p_int(-1)
    return p_int(len(value)) + value


def p_ustring(value: str | bytes | None) -> bytes:
    """Encode a jute ``ustring``.

    ``bytes`` are sent verbatim so that tests can send invalid UTF-8; ``None`` is length -1.
    """
    if value is None:
        return p_int(-1)
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return p_int(len(raw)) + raw


def p_vector_ustring(items: Sequence[str | bytes] | None) -> bytes:
    """Encode a ``vector<ustring>`` (``None`` is a null vector, count -1)."""
    if items is None:
        return p_int(-1)
    return p_int(len(items)) + b"".join(p_ustring(i) for i in items)


def p_acl(perms: int = PERM_ALL, scheme: str = "world", ident: str = "anyone") -> bytes:
    """Encode one ``ACL`` record: int perms, ustring scheme, ustring id."""
    return p_int(perms) + p_ustring(scheme) + p_ustring(ident)


OPEN_ACL: bytes = p_int(1) + p_acl()
"""``vector<ACL>`` holding the single world:anyone:cdrwa entry (ZooDefs.Ids.OPEN_ACL_UNSAFE)."""


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its 4-byte big-endian length."""
    return p_int(len(payload)) + payload


# --- handshake (spec section 2) -------------------------------------------------------------


def connect_request(
    *,
    protocol_version: int = 0,
    last_zxid_seen: int = 0,
    timeout_ms: int = 10_000,
    session_id: int = 0,
    passwd: bytes | None = b"\x00" * 16,
    read_only: bool | None = False,
) -> bytes:
    """Build a framed ConnectRequest.

    ``read_only=None`` leaves the optional trailing byte out (the 44-byte go-zookeeper shape);
    a bool appends it (the 45-byte Java/C/kazoo shape).
    """
    body = (
        p_int(protocol_version)
        + p_long(last_zxid_seen)
        + p_int(timeout_ms)
        + p_long(session_id)
        + p_buffer(passwd)
    )
    if read_only is not None:
        body += p_bool(read_only)
    return frame(body)


@dataclass(frozen=True)
class ConnectResponse:
    """A decoded ConnectResponse plus the raw body, so tests can check exact bytes."""

    protocol_version: int
    timeout_ms: int
    session_id: int
    passwd: bytes
    read_only: bool | None
    raw: bytes


def parse_connect_response(body: bytes) -> ConnectResponse:
    """Decode a ConnectResponse body (frame length already stripped).

    Raises ``ValueError`` on any layout that is not one of the two legal shapes: 36 bytes, or
    37 bytes ending with a 0/1 readOnly byte, each with a 16-byte password.
    """
    if len(body) < 20:
        raise ValueError(f"ConnectResponse too short: {len(body)} bytes")
    proto, to, sid, plen = struct.unpack_from(">iiqi", body, 0)
    if plen != 16:
        raise ValueError(f"password length {plen}, expected 16")
    passwd = body[20 : 20 + plen]
    rest = body[20 + plen :]
    if len(passwd) != 16 or len(rest) > 1:
        raise ValueError(f"bad ConnectResponse length {len(body)}")
    read_only: bool | None = None
    if rest:
        if rest not in (b"\x00", b"\x01"):
            raise ValueError(f"readOnly byte {rest!r} is not 0 or 1")
        read_only = rest == b"\x01"
    return ConnectResponse(proto, to, sid, passwd, read_only, body)


# --- requests (spec sections 3 and 4) -------------------------------------------------------


def request(xid: int, op: int, body: bytes = b"") -> bytes:
    """Build a framed request: RequestHeader{xid, type} followed by ``body``."""
    return frame(p_int(xid) + p_int(op) + body)


def ping_request() -> bytes:
    """The ping frame, always xid -2 / op 11 with no body."""
    return request(XID_PING, OP_PING)


def get_data_request(xid: int, path: str | bytes, watch: bool = False) -> bytes:
    """getData (4): ustring path, boolean watch."""
    return request(xid, OP_GET_DATA, p_ustring(path) + p_bool(watch))


def exists_request(xid: int, path: str | bytes, watch: bool = False) -> bytes:
    """exists (3): ustring path, boolean watch."""
    return request(xid, OP_EXISTS, p_ustring(path) + p_bool(watch))


def get_children_request(xid: int, path: str | bytes, watch: bool = False) -> bytes:
    """getChildren (8): ustring path, boolean watch."""
    return request(xid, OP_GET_CHILDREN, p_ustring(path) + p_bool(watch))


def create_request(
    xid: int,
    path: str | bytes,
    data: bytes | None = b"",
    acl: bytes = OPEN_ACL,
    flags: int = 0,
    op: int = OP_CREATE,
) -> bytes:
    """create (1) / create2 (15): ustring path, buffer data, vector<ACL> (pre-encoded), int flags."""
    return request(xid, op, p_ustring(path) + p_buffer(data) + acl + p_int(flags))


def delete_request(xid: int, path: str | bytes, version: int = -1) -> bytes:
    """delete (2): ustring path, int version."""
    return request(xid, OP_DELETE, p_ustring(path) + p_int(version))


def set_data_request(xid: int, path: str | bytes, data: bytes | None, version: int = -1) -> bytes:
    """setData (5): ustring path, buffer data, int version."""
    return request(xid, OP_SET_DATA, p_ustring(path) + p_buffer(data) + p_int(version))


def sync_request(xid: int, path: str | bytes) -> bytes:
    """sync (9): ustring path."""
    return request(xid, OP_SYNC, p_ustring(path))


def set_watches_request(
    xid: int,
    relative_zxid: int,
    data: Iterable[str] = (),
    exist: Iterable[str] = (),
    child: Iterable[str] = (),
) -> bytes:
    """setWatches (101): long relativeZxid and three vector<ustring>."""
    body = p_long(relative_zxid)
    for paths in (data, exist, child):
        body += p_vector_ustring(list(paths))
    return request(xid, OP_SET_WATCHES, body)


def close_session_request(xid: int) -> bytes:
    """closeSession (-11): no body."""
    return request(xid, OP_CLOSE_SESSION)


# --- replies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyHeader:
    """ReplyHeader{int xid, long zxid, int err} (16 bytes)."""

    xid: int
    zxid: int
    err: int


def parse_reply_header(body: bytes) -> tuple[ReplyHeader, bytes]:
    """Split a reply frame body into its header and the remaining response record bytes."""
    if len(body) < _REPLY_HEADER.size:
        raise ValueError(f"reply of {len(body)} bytes is shorter than a ReplyHeader")
    xid, zxid, err = _REPLY_HEADER.unpack_from(body, 0)
    return ReplyHeader(xid, zxid, err), body[_REPLY_HEADER.size :]


def parse_buffer(data: bytes, offset: int = 0) -> tuple[bytes | None, int]:
    """Decode a jute buffer at ``offset``; return (value or None, offset after it)."""
    (n,) = _INT.unpack_from(data, offset)
    offset += 4
    if n == -1:
        return None, offset
    if n < 0 or offset + n > len(data):
        raise ValueError(f"bad buffer length {n}")
    return data[offset : offset + n], offset + n


STAT_SIZE = 68


# --- socket helpers -------------------------------------------------------------------------


def connect(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """Open a TCP connection with ``timeout`` applied to connect and every later operation."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def recv_exact(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    """Read exactly ``n`` bytes within ``timeout`` seconds in total.

    Raises ``ConnectionClosed`` on EOF/reset and ``TimeoutError`` when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    got = 0
    while got < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {got}/{n} bytes")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except TimeoutError as exc:
            raise TimeoutError(f"timed out after {got}/{n} bytes") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ConnectionClosed(f"connection reset after {got}/{n} bytes") from exc
        if not chunk:
            raise ConnectionClosed(f"connection closed after {got}/{n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, timeout: float = 5.0, max_len: int = 16 << 20) -> bytes:
    """Read one length-prefixed frame and return its body (without the 4-byte length)."""
    deadline = time.monotonic() + timeout
    (n,) = _INT.unpack(recv_exact(sock, 4, timeout))
    if n < 0 or n > max_len:
        raise ValueError(f"server sent an absurd frame length {n}")
    return recv_exact(sock, n, max(0.001, deadline - time.monotonic()))


def read_reply(sock: socket.socket, timeout: float = 5.0) -> tuple[ReplyHeader, bytes]:
    """Read one reply frame and split it into header and body."""
    return parse_reply_header(read_frame(sock, timeout))


def read_reply_skipping_notifications(
    sock: socket.socket, timeout: float = 5.0
) -> tuple[ReplyHeader, bytes]:
    """Read the next reply that is not a watch notification (xid -1)."""
    deadline = time.monotonic() + timeout
    while True:
        hdr, body = read_reply(sock, max(0.001, deadline - time.monotonic()))
        if hdr.xid != XID_NOTIFICATION:
            return hdr, body


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> tuple[bool, bytes]:
    """Drain the socket until the peer closes it or ``timeout`` passes.

    Returns ``(closed, data)``: ``closed`` is True when EOF (or a reset) was seen, False when the
    connection was still open at the deadline. ``data`` is everything received meanwhile.
    """
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, b"".join(chunks)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return False, b"".join(chunks)
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            return True, b"".join(chunks)
        if not chunk:
            return True, b"".join(chunks)
        chunks.append(chunk)


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; return False instead of raising if the server already closed the socket.

    Tests that send garbage cannot know whether the server hangs up before or after the last
    byte arrives, and both are fine; what they assert on is the reply (or its absence).
    """
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
        return False
    return True


def split_frames(data: bytes) -> list[bytes]:
    """Split a byte string of back-to-back frames into bodies; a trailing partial frame is kept
    as-is at the end so tests can notice it."""
    out: list[bytes] = []
    pos = 0
    while pos + 4 <= len(data):
        (n,) = _INT.unpack_from(data, pos)
        if n < 0 or pos + 4 + n > len(data):
            break
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    if pos < len(data):
        out.append(data[pos:])
    return out


def handshake(
    host: str,
    port: int,
    *,
    timeout: float = 5.0,
    read_only: bool | None = False,
    timeout_ms: int = 10_000,
    session_id: int = 0,
    passwd: bytes = b"\x00" * 16,
    last_zxid_seen: int = 0,
) -> tuple[socket.socket, ConnectResponse]:
    """Connect, send a ConnectRequest and read the ConnectResponse."""
    sock = connect(host, port, timeout)
    try:
        sock.sendall(
            connect_request(
                timeout_ms=timeout_ms,
                session_id=session_id,
                passwd=passwd,
                read_only=read_only,
                last_zxid_seen=last_zxid_seen,
            )
        )
        resp = parse_connect_response(read_frame(sock, timeout))
    except BaseException:
        sock.close()
        raise
    return sock, resp


def ping(sock: socket.socket, timeout: float = 5.0) -> ReplyHeader:
    """Send a ping and return its reply header (asserting nothing)."""
    sock.sendall(ping_request())
    hdr, _ = read_reply_skipping_notifications(sock, timeout)
    return hdr


def fresh_session_ping(host: str, port: int, timeout: float = 5.0) -> ReplyHeader:
    """Open a brand-new session, ping it, close it: proof the server still serves clients."""
    sock, resp = handshake(host, port, timeout=timeout)
    try:
        if resp.timeout_ms <= 0 or resp.session_id == 0:
            raise AssertionError(f"server refused a fresh session: {resp}")
        return ping(sock, timeout)
    finally:
        try:
            sock.sendall(close_session_request(1))
            recv_until_closed(sock, 1.0)
        except OSError:
            pass
        sock.close()
