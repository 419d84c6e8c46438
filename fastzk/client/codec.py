"""Client-side jute codec: request encoders and reply decoders built on precompiled Structs.

Why a separate codec from the server's Cython one: the client must stay independent of the
code it measures (a shared encoder bug would cancel out in a differential run), and a
pure-Python codec is fast enough because the load path pre-encodes its frames and only
parses reply headers (see ``load.py``). Layouts follow shared/zk-protocol.md sections 1-4
and 10; every integer is big-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

# --- opcodes (spec section 4) ----------------------------------------------------------------


class Op(IntEnum):
    """Request types used by this client."""

    NOTIFICATION = 0
    CREATE = 1
    DELETE = 2
    EXISTS = 3
    GET_DATA = 4
    SET_DATA = 5
    GET_CHILDREN = 8
    SYNC = 9
    PING = 11
    GET_CHILDREN2 = 12
    CHECK = 13
    MULTI = 14
    CREATE2 = 15
    CLOSE = -11
    ERROR = -1


#: Special xids (spec 3.3): these replies are not matched against the pending queue.
XID_NOTIFICATION = -1
XID_PING = -2

# --- error codes (spec section 5) ------------------------------------------------------------

ERROR_NAMES: dict[int, str] = {
    0: "OK",
    -1: "SYSTEMERROR",
    -2: "RUNTIMEINCONSISTENCY",
    -3: "DATAINCONSISTENCY",
    -4: "CONNECTIONLOSS",
    -5: "MARSHALLINGERROR",
    -6: "UNIMPLEMENTED",
    -7: "OPERATIONTIMEOUT",
    -8: "BADARGUMENTS",
    -12: "UNKNOWNSESSION",
    -13: "NEWCONFIGNOQUORUM",
    -14: "RECONFIGINPROGRESS",
    -100: "APIERROR",
    -101: "NONODE",
    -102: "NOAUTH",
    -103: "BADVERSION",
    -108: "NOCHILDRENFOREPHEMERALS",
    -110: "NODEEXISTS",
    -111: "NOTEMPTY",
    -112: "SESSIONEXPIRED",
    -113: "INVALIDCALLBACK",
    -114: "INVALIDACL",
    -115: "AUTHFAILED",
    -118: "SESSIONMOVED",
    -119: "NOTREADONLY",
    -120: "EPHEMERALONLOCALSESSION",
    -121: "NOWATCHER",
    -122: "REQUESTTIMEOUT",
    -123: "RECONFIGDISABLED",
    -124: "SESSIONCLOSEDREQUIRESASLAUTH",
    -125: "QUOTAEXCEEDED",
    -127: "THROTTLEDOP",
}

CONNECTION_LOSS = -4
OPERATION_TIMEOUT = -7
NO_NODE = -101
BAD_VERSION = -103
NODE_EXISTS = -110
NOT_EMPTY = -111
SESSION_EXPIRED = -112


def error_name(code: int) -> str:
    """Symbolic name of a ZooKeeper error code (``"E<code>"`` for codes we do not know)."""
    return ERROR_NAMES.get(code, f"E{code}")


class ZKError(Exception):
    """A request failed with a ZooKeeper error code.

    One exception type carrying the numeric code (rather than a class per code) keeps
    the load generator's error accounting trivial: ``errors[e.code] += 1``. Code 0 only
    appears inside multi results, where it means "rolled back" (spec 10.4).
    """

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        self.name = error_name(code)
        super().__init__(f"{self.name} ({code})" + (f": {message}" if message else ""))


# --- events (spec section 7) -----------------------------------------------------------------


class EventType(IntEnum):
    """WatcherEvent.type values."""

    NONE = -1
    NODE_CREATED = 1
    NODE_DELETED = 2
    NODE_DATA_CHANGED = 3
    NODE_CHILDREN_CHANGED = 4


class WatchEvent(NamedTuple):
    """A watch notification (reply xid -1) as delivered to the watcher callback."""

    type: int
    state: int
    path: str


# --- create modes (spec 6.4) -----------------------------------------------------------------


class CreateMode(IntEnum):
    """CreateRequest.flags."""

    PERSISTENT = 0
    EPHEMERAL = 1
    PERSISTENT_SEQUENTIAL = 2
    EPHEMERAL_SEQUENTIAL = 3
    CONTAINER = 4


# --- precompiled structs ---------------------------------------------------------------------

INT = struct.Struct(">i")
LONG = struct.Struct(">q")
#: frame length + RequestHeader{xid, type}
REQ_HEADER = struct.Struct(">iii")
#: frame length + ReplyHeader{xid, zxid, err}: 20 bytes, the only thing the load path parses
REPLY_HEADER = struct.Struct(">iiqi")
REPLY_HEADER_SIZE = REPLY_HEADER.size
#: ReplyHeader alone (16 bytes), for payloads whose length prefix was already stripped
REPLY = struct.Struct(">iqi")
#: ConnectRequest{protocolVersion, lastZxidSeen, timeOut, sessionId, passwd len} + passwd + readOnly
CONNECT_REQ = struct.Struct(">iqiqi16s?")
#: ConnectResponse{protocolVersion, timeOut, sessionId, passwd len} (+16 bytes, +readOnly)
CONNECT_RESP = struct.Struct(">iiqi")
STAT = struct.Struct(">qqqqiiiqiiq")
MULTI_HEADER = struct.Struct(">i?i")
WATCHER_EVENT = struct.Struct(">iii")  # type, state, path length

PING_FRAME = REQ_HEADER.pack(8, XID_PING, Op.PING)


class Stat(NamedTuple):
    """The 68-byte Stat record (spec 6.1)."""

    czxid: int
    mzxid: int
    ctime: int
    mtime: int
    version: int
    cversion: int
    aversion: int
    ephemeralOwner: int  # noqa: N815 - the wire/Java field name, kept for familiarity
    dataLength: int  # noqa: N815
    numChildren: int  # noqa: N815
    pzxid: int


class ACL(NamedTuple):
    """One ACL entry: permission bits and an (scheme, id) identity."""

    perms: int
    scheme: str
    id: str


#: world:anyone with all permissions, the default of every client.
OPEN_ACL_UNSAFE: tuple[ACL, ...] = (ACL(31, "world", "anyone"),)


# --- encoding helpers ------------------------------------------------------------------------


def ustring(value: str | None) -> bytes:
    """Encode a jute ustring (null as length -1)."""
    if value is None:
        return INT.pack(-1)
    raw = value.encode("utf-8")
    return INT.pack(len(raw)) + raw


def buffer(value: bytes | None) -> bytes:
    """Encode a jute buffer (null as length -1, distinct from empty)."""
    if value is None:
        return INT.pack(-1)
    return INT.pack(len(value)) + bytes(value)


def acl_vector(acl: Sequence[ACL]) -> bytes:
    """Encode vector<ACL>."""
    parts = [INT.pack(len(acl))]
    for entry in acl:
        parts.append(INT.pack(entry.perms))
        parts.append(ustring(entry.scheme))
        parts.append(ustring(entry.id))
    return b"".join(parts)


def path_watch(path: str, watch: bool) -> bytes:
    """Body of exists/getData/getChildren: ustring path, boolean watch."""
    return ustring(path) + (b"\x01" if watch else b"\x00")


def create_body(path: str, data: bytes | None, acl: Sequence[ACL], flags: int) -> bytes:
    """CreateRequest body."""
    return ustring(path) + buffer(data) + acl_vector(acl) + INT.pack(int(flags))


def set_body(path: str, data: bytes | None, version: int) -> bytes:
    """SetDataRequest body."""
    return ustring(path) + buffer(data) + INT.pack(version)


def delete_body(path: str, version: int) -> bytes:
    """DeleteRequest body (also CheckVersionRequest)."""
    return ustring(path) + INT.pack(version)


def frame(xid: int, op: int, body: bytes = b"") -> bytes:
    """A whole request frame: length, RequestHeader, body."""
    return REQ_HEADER.pack(8 + len(body), xid, op) + body


def connect_request(
    timeout_ms: int,
    session_id: int = 0,
    passwd: bytes = b"\x00" * 16,
    last_zxid: int = 0,
    read_only: bool = False,
) -> bytes:
    """The 45-byte ConnectRequest frame (with the readOnly byte, as Java/kazoo send it)."""
    return INT.pack(CONNECT_REQ.size) + CONNECT_REQ.pack(
        0, last_zxid, timeout_ms, session_id, 16, passwd, read_only
    )


class ConnectResponse(NamedTuple):
    """Decoded ConnectResponse; ``timeout_ms <= 0`` means the session is invalid/expired."""

    timeout_ms: int
    session_id: int
    passwd: bytes
    read_only: bool


def decode_connect_response(body: bytes | memoryview) -> ConnectResponse:
    """Decode a ConnectResponse payload (without the frame length)."""
    _proto, timeout_ms, session_id, plen = CONNECT_RESP.unpack_from(body, 0)
    off = CONNECT_RESP.size
    passwd = bytes(body[off : off + max(plen, 0)])
    off += max(plen, 0)
    read_only = len(body) > off and body[off] != 0
    return ConnectResponse(timeout_ms, session_id, passwd, read_only)


# --- decoding helpers (all take a buffer and an offset, return value + new offset) ----------


def read_buffer(buf: bytes | memoryview, off: int) -> tuple[bytes | None, int]:
    """Decode a jute buffer at *off*."""
    (n,) = INT.unpack_from(buf, off)
    off += 4
    if n < 0:
        return None, off
    return bytes(buf[off : off + n]), off + n


def read_ustring(buf: bytes | memoryview, off: int) -> tuple[str, int]:
    """Decode a jute ustring at *off* (null decodes as "")."""
    (n,) = INT.unpack_from(buf, off)
    off += 4
    if n < 0:
        return "", off
    return bytes(buf[off : off + n]).decode("utf-8", "surrogateescape"), off + n


def read_stat(buf: bytes | memoryview, off: int) -> tuple[Stat, int]:
    """Decode a Stat at *off*."""
    return Stat._make(STAT.unpack_from(buf, off)), off + STAT.size


def read_string_vector(buf: bytes | memoryview, off: int) -> tuple[list[str], int]:
    """Decode vector<ustring>."""
    (count,) = INT.unpack_from(buf, off)
    off += 4
    items: list[str] = []
    for _ in range(max(count, 0)):
        item, off = read_ustring(buf, off)
        items.append(item)
    return items, off


def decode_watch_event(body: bytes | memoryview) -> WatchEvent:
    """WatcherEvent payload (after the 16-byte ReplyHeader)."""
    etype, state, _n = WATCHER_EVENT.unpack_from(body, 0)
    path, _ = read_ustring(body, 8)
    return WatchEvent(etype, state, path)


# --- multi (spec section 10) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MultiOp:
    """One operation of a multi transaction; build with the helpers below."""

    type: int
    body: bytes


def multi_create(
    path: str,
    data: bytes | None = b"",
    mode: int = CreateMode.PERSISTENT,
    acl: Sequence[ACL] = OPEN_ACL_UNSAFE,
) -> MultiOp:
    """A create inside a multi (type 1: result is the created path)."""
    return MultiOp(Op.CREATE, create_body(path, data, acl, mode))


def multi_delete(path: str, version: int = -1) -> MultiOp:
    """A delete inside a multi."""
    return MultiOp(Op.DELETE, delete_body(path, version))


def multi_set(path: str, data: bytes | None, version: int = -1) -> MultiOp:
    """A setData inside a multi (result: Stat)."""
    return MultiOp(Op.SET_DATA, set_body(path, data, version))


def multi_check(path: str, version: int) -> MultiOp:
    """A version check inside a multi."""
    return MultiOp(Op.CHECK, delete_body(path, version))


_MULTI_END = MULTI_HEADER.pack(-1, True, -1)

#: One result of a multi: created path, Stat, None (delete/check) or a ZKError (code 0 means
#: "rolled back because another op failed", spec 10.4).
MultiResult = str | Stat | None | ZKError


def multi_body(ops: Sequence[MultiOp]) -> bytes:
    """MultiOperationRecord: headers with done=false, err=-1, then the terminator."""
    parts = []
    for op in ops:
        parts.append(MULTI_HEADER.pack(op.type, False, -1))
        parts.append(op.body)
    parts.append(_MULTI_END)
    return b"".join(parts)


def decode_multi(body: bytes | memoryview) -> list[MultiResult]:
    """Decode a MultiResponse into one result per op."""
    results: list[MultiResult] = []
    off = 0
    while off + MULTI_HEADER.size <= len(body):
        rtype, done, _err = MULTI_HEADER.unpack_from(body, off)
        off += MULTI_HEADER.size
        if done:
            break
        if rtype == Op.ERROR:
            (code,) = INT.unpack_from(body, off)
            off += 4
            results.append(ZKError(code, "rolled back" if code == 0 else ""))
        elif rtype == Op.CREATE:
            path, off = read_ustring(body, off)
            results.append(path)
        elif rtype == Op.CREATE2:
            path, off = read_ustring(body, off)
            off += STAT.size
            results.append(path)
        elif rtype == Op.SET_DATA:
            stat, off = read_stat(body, off)
            results.append(stat)
        elif rtype in (Op.DELETE, Op.CHECK):
            results.append(None)
        else:
            raise ZKError(-5, f"unexpected multi result type {rtype}")
    return results
