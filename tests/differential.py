"""Differential testing: run one scenario against two servers, compare transcripts.

A *scenario* is a plain function ``scenario(ctx: ScenarioContext) -> None``.  It
drives kazoo clients through ``ctx`` and records what it observes.  The same
scenario runs against the reference (Apache ZooKeeper) and against the server
under test; the two transcripts must be identical after normalisation.

What gets normalised, and why:

* Stats: every field is compared exactly except the ones whose *values* are
  legitimately server-specific.  czxid/mzxid/pzxid become their rank among all
  zxids seen in the transcript (``z0``, ``z1``, ...), so equality and order are
  compared but not the absolute numbers (a server may use zxids for sessions
  or failed writes differently).  ctime/mtime become ``t(zN)`` -- "the time of
  transaction zN" -- after checking that each zxid maps to one time, that times
  never go backwards as zxids increase, that zxid 0 has time 0 and that other
  times are plausible wall-clock milliseconds; violations are added to the
  transcript as a ``time-anomalies`` entry.  Comparing raw time ranks instead
  would be flaky, because two transactions may or may not fall into the same
  millisecond.  ephemeralOwner becomes the name of the client whose session
  owns the node.
* getChildren results are compared exactly, order included: ZooKeeper lists
  children in its HashSet's iteration order, and fastzk reproduces it.
* Exceptions become ``!<kazoo exception class name>``.
* The scenario's root path is shown as ``~``.

Raw frames: every frame the server sends on a recorded client's connection (replies,
notifications, auth replies, the handshake) is kept as bytes and shown in the wire log
(``wire:<client>``), one line per frame with the op it answers: header xid and err, then the
body field by field -- strings, buffers and vectors decoded (lengths checked, null shown as
``null``, so the text fixes the bytes), ints and anything unparsed as hex, Stats normalised as
above.  Only these are normalised: zxids (ranked; a reply header's zxid by the newest
transaction it covers), ctime/mtime, ephemeralOwner and the handshake's session id (client
name) and password (length only).  Differences from ZooKeeper that remain are named in
:data:`ALLOWED_DIFFERENCES` and applied where their name appears; README lists the same.
Ping replies come on kazoo's timer, so they are checked per frame (empty, xid -2, err 0, zxid
not older than the connection's last reply; a violation is a ``wire-anomalies`` entry) and
compared byte for byte in tests/test_conformance_sessions.py's raw session.

Watch notifications are captured twice per client, both in arrival order:
``ctx.watcher(tag)`` gives kazoo watch callbacks (what an application sees),
and every client's connection is instrumented so that the raw wire order of
notifications and replies is recorded (``wire:<client>`` at the end).  The wire
log catches what callbacks cannot: duplicate notifications (kazoo drops a
second event for an already-fired watch) and a notification that arrives after
the reply it should precede.  It also shows each handshake (negotiated
timeout; new / resumed / invalid session), so reconnects are visible.

Usage (see tests/test_conformance_*.py)::

    def test_something(differential):
        def scenario(ctx):
            ctx.op("create", ctx.path("a"), b"x")               # main client
            ctx.op("get", ctx.path("a"), watch=ctx.watcher("w"))
            ctx.op("set", ctx.path("a"), b"y", client="other")  # second session
            ctx.barrier()                                        # events flushed
            ctx.record_events()
        differential.run(scenario)              # shared servers
        differential.run(scenario, fresh=True)  # or a pristine pair / zoo.cfg keys

Set FASTZK_DIFF_PRINT=1 to print every reference transcript (with ``-s``).
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import itertools
import os
import re
import socket
import struct
import threading
import time
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wire as zkwire
from kazoo.client import KazooClient
from kazoo.exceptions import EXCEPTIONS
from kazoo.protocol.serialization import Connect, Create2, Watch
from kazoo.protocol.states import Callback, WatchedEvent, ZnodeStat
from kazoo.security import ACL

from fastzk.nemesis.servers import ServerProcess

__all__ = [
    "SUPER_CREDENTIALS",
    "SUPER_DIGEST",
    "CreateContainer",
    "CreateTTL",
    "ALLOWED_DIFFERENCES",
    "Differential",
    "Err",
    "RawFrame",
    "RawRequest",
    "ScenarioContext",
    "Scenario",
    "TranscriptMismatch",
    "compare_transcripts",
    "parse_frame",
    "run_scenario",
]

OP_TIMEOUT = 10.0
SCENARIO_TIMEOUT = 30.0
WAIT_TIMEOUT = 8.0

EVENT_NAMES = {1: "CREATED", 2: "DELETED", 3: "CHANGED", 4: "CHILD"}

#: The super digest both servers of a differential pair are configured with (conftest.py),
#: and the digest credentials that match it (password "admin", spec section 9.4).
SUPER_DIGEST = "super:xQJmxLMiHGwaqBvst5y6rkB6HQs="
SUPER_CREDENTIALS = "super:admin"

Scenario = Callable[["ScenarioContext"], None]


@dataclass(frozen=True)
class Err:
    """A recorded exception: only its class name is compared."""

    name: str

    def __repr__(self) -> str:
        return f"!{self.name}"


class CreateContainer(Create2):
    """Opcode 19 (createContainer), which kazoo cannot send; same body as create2."""

    type = 19


class CreateTTL(namedtuple("CreateTTL", "path data acl flags ttl")):
    """Opcode 21 (createTTL): a create2 body followed by a long ttl."""

    type = 21

    def serialize(self) -> bytearray:
        b = Create2(self.path, self.data, self.acl, self.flags).serialize()
        b.extend(struct.pack("!q", self.ttl))
        return b

    @classmethod
    def deserialize(cls, buffer: bytes, offset: int) -> Any:
        return Create2.deserialize(buffer, offset)


_STAT = struct.Struct("!qqqqiiiqiiq")


class _Reader:
    """Decodes jute fields from a reply body (plain struct; see tests/wire.py)."""

    def __init__(self, buffer: bytes, offset: int) -> None:
        self.buffer = bytes(buffer)
        self.offset = offset

    def int(self) -> int:
        (value,) = struct.unpack_from("!i", self.buffer, self.offset)
        self.offset += 4
        return int(value)

    def bool(self) -> bool:
        value = self.buffer[self.offset]
        self.offset += 1
        return value != 0

    def buffer_(self) -> bytes | None:
        value, self.offset = zkwire.parse_buffer(self.buffer, self.offset)
        return value

    def string(self) -> str | None:
        value = self.buffer_()
        return None if value is None else value.decode("utf-8")

    def strings(self) -> list[str]:
        return [str(self.string()) for _ in range(self.int())]

    def stat(self) -> ZnodeStat:
        value = ZnodeStat._make(_STAT.unpack_from(self.buffer, self.offset))
        self.offset += _STAT.size
        return value

    def rest(self) -> bytes:
        return self.buffer[self.offset :]


def error_name(code: int) -> str:
    """kazoo's exception class name for a ZooKeeper error code (``err<code>`` if unknown)."""
    cls = EXCEPTIONS.get(code)
    return cls.__name__ if cls is not None else f"err{code}"


def acl_bytes(acl: list[ACL] | bytes | None) -> bytes:
    """A vector<ACL>: kazoo ACL objects encoded verbatim (no "" -> null), or raw bytes."""
    if isinstance(acl, bytes | bytearray):
        return bytes(acl)
    if acl is None:
        return zkwire.p_int(-1)
    return zkwire.p_int(len(acl)) + b"".join(
        zkwire.p_acl(a.perms, a.id.scheme, a.id.id) for a in acl
    )


class RawRequest:
    """Any opcode with a hand-built body, sent through a kazoo client's connection.

    kazoo lacks most 3.6+ opcodes (multiRead, addWatch, removeWatches, setWatches2,
    getEphemerals, ...), so the body is built with tests/wire.py's encoders and the reply
    body decoded here; going through kazoo keeps the wire log, watch callbacks and
    transcript recording of the scenario.  An error reply raises kazoo's exception.
    ``name`` and ``args`` make the transcript label and the wire-log name.
    """

    _fields: tuple[str, ...] = ()

    def __init__(
        self,
        type: int,  # noqa: A002 - kazoo reads request.type
        name: str,
        args: tuple[Any, ...],
        body: bytes,
        decode: Callable[[_Reader], Any] | None = None,
    ) -> None:
        self.type = type
        self.name = name
        self.args = args
        self.body = body
        self.decode = decode

    def serialize(self) -> bytes:
        return self.body

    def deserialize(self, buffer: bytes, offset: int) -> Any:
        reader = _Reader(buffer, offset)
        return True if self.decode is None else self.decode(reader)

    def __repr__(self) -> str:
        return f"{self.name}{self.args!r}"


# --- builders for the opcodes kazoo lacks (spec section 4) ---------------------------------
#: Multi op specs: ("create", path, data, acl, flags), ("create2", ...),
#: ("createContainer", ...), ("createTTL", path, data, acl, flags, ttl),
#: ("delete", path, version), ("setData", path, data, version), ("check", path, version),
#: ("getData", path), ("getChildren", path).  ``acl`` may be None for OPEN_ACL_UNSAFE.
MULTI_OPS = {
    "create": 1,
    "create2": 15,
    "createContainer": 19,
    "createTTL": 21,
    "delete": 2,
    "setData": 5,
    "check": 13,
    "getData": 4,
    "getChildren": 8,
}


def _op_body(op: tuple[Any, ...]) -> bytes:
    name, path, *rest = op
    p = zkwire.p_ustring(path)
    if name in ("create", "create2", "createContainer", "createTTL"):
        data, acl, flags, *ttl = rest
        body = p + zkwire.p_buffer(data) + (zkwire.OPEN_ACL if acl is None else acl_bytes(acl))
        body += zkwire.p_int(flags)
        return body + b"".join(zkwire.p_long(t) for t in ttl)
    if name in ("delete", "check"):
        return p + zkwire.p_int(rest[0])
    if name == "setData":
        return p + zkwire.p_buffer(rest[0]) + zkwire.p_int(rest[1])
    if name in ("getData", "getChildren"):
        return p + zkwire.p_bool(bool(rest[0]) if rest else False)
    raise ValueError(f"unknown multi op {name!r}")


def _multi_results(r: _Reader) -> list[Any]:
    results: list[Any] = []
    while True:
        op_type, done, err = r.int(), r.bool(), r.int()
        if done:
            return results
        if op_type == 1:
            results.append(("create", r.string()))
        elif op_type == 15:
            results.append(("create2", r.string(), r.stat()))
        elif op_type == 2:
            results.append(("delete",))
        elif op_type == 5:
            results.append(("setData", r.stat()))
        elif op_type == 13:
            results.append(("check",))
        elif op_type == 4:
            data = r.buffer_()
            results.append(("getData", data, r.stat()))
        elif op_type == 8:
            results.append(("getChildren", r.strings()))
        elif op_type == -1:
            code = r.int()
            results.append(("error", error_name(code), "hdr-err-matches" if code == err else err))
        else:
            results.append(("unknown-type", op_type, err))
            return results


def multi_request(*ops: tuple[Any, ...], opcode: int = 14) -> RawRequest:
    """multi (14) or multiRead (22) with the given op specs (see MULTI_OPS)."""
    body = b"".join(
        zkwire.p_int(MULTI_OPS[op[0]]) + zkwire.p_bool(False) + zkwire.p_int(-1) + _op_body(op)
        for op in ops
    )
    body += zkwire.p_int(-1) + zkwire.p_bool(True) + zkwire.p_int(-1)
    name = "multi" if opcode == 14 else "multiRead" if opcode == 22 else f"op{opcode}"
    return RawRequest(opcode, name, tuple(ops), body, _multi_results)


def multi_read_request(*ops: tuple[Any, ...]) -> RawRequest:
    return multi_request(*ops, opcode=22)


def add_watch_request(path: str, mode: int) -> RawRequest:
    """addWatch (106): mode 0 persistent, 1 persistent recursive; reply body int 0."""
    return RawRequest(106, "addWatch", (path, mode), zkwire.p_ustring(path) + zkwire.p_int(mode),
                      lambda r: ("ErrorResponse", r.int(), len(r.rest())))


def check_watches_request(path: str, watcher_type: int) -> RawRequest:
    """checkWatches (17): 1 children, 2 data, 3 any, 4 persistent, 5 recursive."""
    body = zkwire.p_ustring(path) + zkwire.p_int(watcher_type)
    return RawRequest(17, "checkWatches", (path, watcher_type), body)


def remove_watches_request(path: str, watcher_type: int) -> RawRequest:
    """removeWatches (18): same body as checkWatches."""
    body = zkwire.p_ustring(path) + zkwire.p_int(watcher_type)
    return RawRequest(18, "removeWatches", (path, watcher_type), body)


def set_watches2_request(
    relative_zxid: int,
    data: tuple[str, ...] = (),
    exist: tuple[str, ...] = (),
    child: tuple[str, ...] = (),
    persistent: tuple[str, ...] = (),
    recursive: tuple[str, ...] = (),
) -> RawRequest:
    """setWatches2 (105); relative_zxid is left out of the label (it differs per server)."""
    lists = (data, exist, child, persistent, recursive)
    body = zkwire.p_long(relative_zxid) + b"".join(zkwire.p_vector_ustring(list(v)) for v in lists)
    return RawRequest(105, "setWatches2", lists, body)


def get_ephemerals_request(prefix: str | None) -> RawRequest:
    """getEphemerals (103): the caller's own ephemerals under a string prefix (sorted here)."""
    return RawRequest(103, "getEphemerals", (prefix,), zkwire.p_ustring(prefix),
                      lambda r: sorted(r.strings()))


def get_all_children_number_request(path: str) -> RawRequest:
    """getAllChildrenNumber (104): count of all descendants."""
    return RawRequest(104, "getAllChildrenNumber", (path,), zkwire.p_ustring(path),
                      lambda r: r.int())


def who_am_i_request() -> RawRequest:
    """whoAmI (107): the connection's (scheme, user) identities, in the server's order.

    ZooKeeper keeps a connection's identities in a ConcurrentHashMap<Id>, so its order is the
    hash-table order (e.g. bob, ip, alice), which fastzk reproduces (acl.zookeeper_order).
    """

    def decode(r: _Reader) -> list[tuple[str | None, str | None]]:
        return [(r.string(), r.string()) for _ in range(r.int())]

    return RawRequest(107, "whoAmI", (), b"", decode)


def check_request(path: str, version: int) -> RawRequest:
    """A top-level check (13), outside any multi."""
    return RawRequest(13, "check", (path, version), zkwire.p_ustring(path) + zkwire.p_int(version))


# --- raw reply frames ------------------------------------------------------------------------
#: Differences from Apache ZooKeeper 3.8.0 that the raw frame comparison normalises away, by
#: name.  Each one is applied in exactly one place (grep its name) and listed, with the same
#: reason, in README's "Differences from Apache ZooKeeper 3.8.0".  Everything else in a reply
#: frame -- xid, err, body layout, strings, ACLs, Stat fields other than zxids/times/owner,
#: children order, multi results -- is compared byte for byte.
ALLOWED_DIFFERENCES: dict[str, str] = {
    "failed-write-zxid": (
        "reply header zxid: ZooKeeper gives every failed write (and failed multi) a zxid of its "
        "own, an error transaction, and every later reply carries it until the next write; "
        "fastzk's failed writes use no zxid, so its replies carry the last committed one.  A "
        "reply's zxid is therefore compared as the newest transaction it covers (the largest "
        "Stat or successful-write zxid not above it, 'zxid>=zN'), not as an exact rank."
    ),
}

#: Opcodes whose successful reply carries the zxid of the transaction they committed (spec
#: section 4); those zxids join the Stat zxids in the rank table.  closeSession is left out:
#: its zxid is a session transaction that no Stat shows.
_WRITE_OPS = frozenset({1, 2, 5, 7, 14, 15, 19, 21})

#: Reply body layout by request opcode (spec section 4).  An opcode missing here, an error
#: reply, or a body that does not parse exactly is rendered as raw hex, so still compared.
_LAYOUTS: dict[int, tuple[str, ...]] = {
    1: ("string",), 2: (), 3: ("stat",), 4: ("buffer", "stat"), 5: ("stat",),
    6: ("acls", "stat"), 7: ("stat",), 8: ("strings",), 9: ("string",),
    12: ("strings", "stat"), 13: (), 14: ("multi",), 15: ("string", "stat"), 17: (), 18: (),
    19: ("string", "stat"), 21: ("string", "stat"), 22: ("multi",), 100: (), 101: (),
    103: ("strings",), 104: ("int",), 105: (), 106: ("int",), 107: ("idents",), -11: (),
}  # fmt: skip

#: Multi result layouts by result type (spec section 4.14); -1 is an ErrorResult.
_MULTI_RESULTS: dict[int, tuple[str, ...]] = {
    1: ("string",), 15: ("string", "stat"), 19: ("string", "stat"), 21: ("string", "stat"),
    2: (), 5: ("stat",), 13: (), 4: ("buffer", "stat"), 8: ("strings",), -1: ("int",),
}  # fmt: skip

_REPLY_HEADER = struct.Struct("!iqi")


@dataclass(frozen=True)
class RawFrame:
    """One server frame as received, split into the parts the comparison treats differently.

    ``fields`` is the body in order: ``("hex", bytes)`` for bytes compared verbatim and
    ``("stat", ZnodeStat)`` for a Stat (its zxids, times and owner are normalised, every
    other field compared exactly).  ``committed`` is True for the reply of a write that
    committed a transaction, whose header zxid is that transaction's.
    """

    xid: int
    zxid: int
    err: int
    fields: tuple[tuple[str, Any], ...]
    committed: bool = False
    opcode: int | None = None

    def stats(self) -> list[ZnodeStat]:
        return [v for kind, v in self.fields if kind == "stat"]


class _LayoutError(ValueError):
    """A body does not have the layout its opcode promises."""


def _parse_layout(
    buf: bytes, offset: int, layout: tuple[str, ...], out: list[tuple[str, Any]]
) -> int:
    """Append *layout*'s fields of *buf* at *offset* to *out*; return the offset after them.

    Strings, buffers and vectors are kept decoded (``("val", ...)``): with every length
    checked against the bytes, the decoded value determines the bytes, null (-1) included.
    """
    for kind in layout:
        if kind == "stat":
            if offset + _STAT.size > len(buf):
                raise _LayoutError("short Stat")
            out.append(("stat", ZnodeStat._make(_STAT.unpack_from(buf, offset))))
            offset += _STAT.size
        elif kind == "int":
            if offset + 4 > len(buf):
                raise _LayoutError("short int")
            out.append(("hex", buf[offset : offset + 4]))
            offset += 4
        elif kind in ("string", "buffer"):
            value, offset = _read_buffer(buf, offset)
            out.append(("val", value))
        else:  # "strings", "acls" (int perms + two ustrings), "idents" (two ustrings)
            if offset + 4 > len(buf):
                raise _LayoutError(f"short {kind} count")
            (count,) = struct.unpack_from("!i", buf, offset)
            offset += 4
            items: list[Any] | None = None if count == -1 else []
            for _ in range(max(count, 0)):
                item: list[Any] = []
                if kind == "acls":
                    if offset + 4 > len(buf):
                        raise _LayoutError("short ACL")
                    item.append(struct.unpack_from("!i", buf, offset)[0])
                    offset += 4
                for _ in range(1 if kind == "strings" else 2):
                    value, offset = _read_buffer(buf, offset)
                    item.append(value)
                assert items is not None
                items.append(item[0] if kind == "strings" else tuple(item))
            if count < -1:
                raise _LayoutError(f"bad {kind} count {count}")
            out.append(("val", items))
    return offset


def _read_buffer(buf: bytes, offset: int) -> tuple[bytes | None, int]:
    """The jute buffer/ustring at *offset* (None for length -1) and the offset after it."""
    if offset + 4 > len(buf):
        raise _LayoutError("short length")
    (n,) = struct.unpack_from("!i", buf, offset)
    if n < -1 or offset + 4 + max(n, 0) > len(buf):
        raise _LayoutError(f"bad length {n}")
    if n == -1:
        return None, offset + 4
    return buf[offset + 4 : offset + 4 + n], offset + 4 + n


def _parse_multi(buf: bytes, offset: int, out: list[tuple[str, Any]]) -> tuple[int, bool]:
    """Parse multi/multiRead results; return (end offset, whether no result is an error)."""
    ok = True
    while True:
        if offset + 9 > len(buf):
            raise _LayoutError("short MultiHeader")
        op_type, done = struct.unpack_from("!ib", buf, offset)
        out.append(("hex", buf[offset : offset + 9]))
        offset += 9
        if done:
            return offset, ok
        if op_type not in _MULTI_RESULTS:
            raise _LayoutError(f"unknown multi result type {op_type}")
        ok = ok and op_type != -1
        offset = _parse_layout(buf, offset, _MULTI_RESULTS[op_type], out)


def parse_frame(frame: bytes, opcode: int | None) -> RawFrame:
    """Split a reply/notification frame (length prefix removed) for the comparison.

    *opcode* is the request's type for a reply (None for notifications, pings, auth and
    unknown xids).  Bodies are parsed strictly; anything that does not parse exactly
    (trailing bytes included) is kept whole as hex.
    """
    xid, zxid, err = _REPLY_HEADER.unpack_from(frame, 0)
    body = frame[_REPLY_HEADER.size :]
    layout = _LAYOUTS.get(opcode) if opcode is not None and err == 0 else None
    if layout is None:
        return RawFrame(xid, zxid, err, (("hex", body),) if body else ())
    fields: list[tuple[str, Any]] = []
    ok = True
    try:
        if layout == ("multi",):
            end, ok = _parse_multi(body, 0, fields)
        else:
            end = _parse_layout(body, 0, layout, fields)
        if end != len(body):
            raise _LayoutError("trailing bytes")
    except (_LayoutError, struct.error):
        return RawFrame(xid, zxid, err, (("unparsed", body),))
    committed = ok and opcode in _WRITE_OPS
    return RawFrame(xid, zxid, err, tuple(fields), committed=committed, opcode=opcode)


def _connect_fields(body: bytes) -> tuple[Any, ...]:
    """A ConnectResponse body as (hex prefix, session id, password length, hex rest).

    The session id and password are server-chosen; their values are left out (the session
    id becomes the owning client's name when rendered), everything else stays bytes.
    """
    if len(body) < 20:
        return (body, 0, None, b"")
    (sid,) = struct.unpack_from("!q", body, 8)
    try:
        passwd, end = _read_buffer(body, 16)
    except _LayoutError:
        return (body[:8], sid, None, body[16:])
    return (body[:8], sid, None if passwd is None else len(passwd), body[end:])


class _Watcher:
    """A kazoo watch callback that logs the event under a tag, per client."""

    def __init__(self, ctx: ScenarioContext, client: str, tag: str) -> None:
        self.ctx = ctx
        self.client = client
        self.tag = tag

    def __call__(self, event: WatchedEvent) -> None:
        if event.type == "NONE":
            # kazoo itself calls pending watchers with a NONE event when its session closes;
            # whether it does depends on whether it notices the socket close before it
            # handles the close reply (a client-side race, not a server frame: the wire log
            # holds what the server sent), so it is not part of the comparison
            return
        self.ctx._append_callback(self.client, ("watch", self.tag, event))

    def __repr__(self) -> str:
        return f"watch:{self.tag}"


class TranscriptMismatch(AssertionError):
    """The server under test behaved differently from the reference."""


class ScenarioContext:
    """What a scenario sees: clients, recording, watches, raw requests.

    Every method that talks to the server is bounded in time.  Client names
    identify sessions in the transcript ("main", "a", "b", ...).
    """

    def __init__(self, server: ServerProcess, root: str, side: str) -> None:
        self.server = server
        self.root = root
        self.side = side
        self.entries: list[tuple[str, Any]] = []
        self.started_ms = int(time.time() * 1000)
        self._clients: dict[str, KazooClient] = {}
        self._sessions: dict[int, str] = {}
        self._callbacks: dict[str, list[Any]] = {}
        self._wire: dict[str, list[tuple[Any, ...]]] = {}
        self._states: dict[str, list[str]] = {}
        self._negotiated: dict[str, list[int]] = {}
        #: When a session ends, the order in which its ephemerals are deleted
        #: (and so their notifications) is unspecified.  Scenarios that close
        #: sessions with several watched ephemerals set this: runs of
        #: back-to-back notifications in the wire logs, and the callback logs,
        #: are then compared as multisets.  Notification-vs-reply order is
        #: still compared exactly.
        self.unordered_notifications = False
        self._unrecorded_wire: set[str] = set()
        self._wire_anomalies: list[str] = []
        self._cond = threading.Condition()
        self._marks = itertools.count()

    # ---------------------------------------------------------------- clients
    def client(
        self, name: str = "main", *, timeout: float = 10.0, record_wire: bool = True, **kw: Any
    ) -> KazooClient:
        """The started KazooClient called *name* (created and connected on first use).

        ``timeout`` is kazoo's requested session timeout in seconds; other
        keywords go to KazooClient (e.g. ``client_id=(sid, passwd)`` to resume
        another client's session).  ``record_wire=False`` leaves the client's
        frame log out of the transcript: needed when kazoo recipes send
        requests from the callback thread concurrently with the scenario, so
        that the interleaving of replies is not deterministic.
        """
        existing = self._clients.get(name)
        if existing is not None:
            return existing
        if not record_wire:
            self._unrecorded_wire.add(name)
        client = KazooClient(hosts=self.server.connect_string, timeout=timeout, **kw)
        self._clients[name] = client
        self._callbacks[name] = []
        self._wire[name] = []
        self._states[name] = []
        self._instrument(name, client)
        client.add_listener(lambda state, n=name: self._states[n].append(str(state)))
        client.start(timeout=OP_TIMEOUT)
        self._note_sessions()
        return client

    def _instrument(self, name: str, client: KazooClient) -> None:
        """Log every frame the server sends, raw, in wire order, from kazoo's reader thread.

        Each reply and notification is kept as its raw bytes (RawFrame), rendered at the end
        with only zxids, times, session ids and passwords normalised.  Besides the frame
        order this checks, per connection, that reply zxids never go backwards (clients send
        the highest one back as lastZxidSeen) and that every ping reply is an empty frame
        with xid -2, err 0 and a zxid no older than the connection's last reply: pings go out
        on kazoo's timer, so their number and position are not compared, only their bytes.
        """
        conn = client._connection
        wire = self._wire[name]
        orig_event = conn._read_watch_event
        orig_response = conn._read_response
        orig_header = conn._read_header
        orig_read = conn._read
        last: dict[str, Any] = {"frame": b"", "read": b"", "max_zxid": 0}

        def read(length: int, timeout: float) -> Any:
            data = orig_read(length, timeout)
            last["read"] = data
            return data

        def read_header(timeout: float) -> Any:
            result = orig_header(timeout)
            header, frame = result[0], bytes(result[1])
            last["frame"] = frame
            if header.xid == -2:
                ping = parse_frame(frame, 11)
                if ping.err or ping.fields or ping.zxid < last["max_zxid"]:
                    self._wire_anomalies.append(f"{name}: ping reply {ping}")
            elif header.xid == -4:
                wire.append(("auth", parse_frame(frame, 100)))
            return result

        def read_watch_event(buffer: bytes, offset: int) -> Any:
            try:
                watch, _ = Watch.deserialize(buffer, offset)
                etype = EVENT_NAMES.get(watch.type, watch.type)
                raw = parse_frame(last["frame"], None)
                wire.append(("event", etype, watch.state, watch.path, raw))
            except Exception as e:  # noqa: BLE001 - log undecodable events too
                wire.append(("event-undecodable", type(e).__name__))
            return orig_event(buffer, offset)

        def read_response(header: Any, buffer: bytes, offset: int) -> Any:
            try:
                request = client._pending[0][0]
                rname = request.name if isinstance(request, RawRequest) else None
                raw = parse_frame(last["frame"], request.type)
                wire.append(("reply", rname or type(request).__name__, header.err, raw))
            except IndexError:
                wire.append(("reply-unexpected", header.xid, header.err))
            if header.zxid > 0:
                if header.zxid < last["max_zxid"]:
                    self._wire_anomalies.append(f"{name}: reply zxid went backwards")
                last["max_zxid"] = max(last["max_zxid"], header.zxid)
            return orig_response(header, buffer, offset)

        conn._read = read
        conn._read_header = read_header
        orig_invoke = conn._invoke
        negotiated = self._negotiated.setdefault(name, [])

        def invoke(timeout: float, request: Any, xid: int | None = None) -> Any:
            result = orig_invoke(timeout, request, xid)
            if isinstance(request, Connect):
                reply = result[0]
                if reply.time_out <= 0:
                    outcome = "invalid"
                elif request.session_id == 0:
                    outcome = "new"
                elif reply.session_id == request.session_id:
                    outcome = "resumed"
                else:
                    outcome = "other-session"
                wire.append(("connect", reply.time_out, outcome, _connect_fields(last["read"])))
                negotiated.append(reply.time_out)
            return result

        conn._read_watch_event = read_watch_event
        conn._read_response = read_response
        conn._invoke = invoke

    def _note_sessions(self) -> None:
        for name, client in self._clients.items():
            sid = client.client_id[0] if client.client_id else 0
            if sid:
                self._sessions.setdefault(sid, name)

    def negotiated_timeout(self, name: str = "main") -> int | None:
        """Session timeout (ms) from *name*'s last handshake reply (kazoo does not keep it)."""
        values = self._negotiated.get(name) or [None]
        return values[-1]

    def session_id(self, name: str = "main") -> int:
        """Session id of client *name* (for takeover; never record it: it differs per server)."""
        return int(self.client(name).client_id[0])

    def stop_client(self, name: str, close_session: bool = True) -> None:
        """Stop client *name*: with close_session, a clean closeSession (ephemerals go now).

        Without close_session the socket is simply dropped and the session is left to
        expire on the server; kazoo has no public way to do that, so the
        connection thread is told to stop without sending closeSession.
        """
        client = self._clients[name]
        self._note_sessions()
        if close_session:
            _bounded(client.stop, OP_TIMEOUT)
        else:
            _drop_without_close(client)

    def close_all(self) -> None:
        """Stop and close every client (bounded); used at the end of a run."""
        self._note_sessions()
        threads = []
        for client in self._clients.values():

            def stop(c: KazooClient = client) -> None:
                try:
                    c.stop()
                except Exception:  # noqa: BLE001 - teardown
                    pass
                try:
                    c.close()
                except Exception:  # noqa: BLE001
                    pass

            t = threading.Thread(target=stop, daemon=True)
            t.start()
            threads.append(t)
        deadline = time.monotonic() + OP_TIMEOUT + 5
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))

    # -------------------------------------------------------------- recording
    def record(self, label: str, value: Any) -> None:
        """Add one transcript entry; the value is normalised at the end of the run."""
        self._note_sessions()
        if isinstance(value, BaseException):
            value = Err(type(value).__name__)
        self.entries.append((label, value))

    def call(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call *fn*, record its result or the exception class name; return either."""
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the exception *is* the observation
            self.record(label, Err(type(e).__name__))
            return e
        self.record(label, result)
        return result

    def op(
        self, method: str, *args: Any, client: str = "main", label: str | None = None, **kwargs: Any
    ) -> Any:
        """Run a kazoo client method (bounded) and record the outcome.

        Uses the ``<method>_async`` variant when kazoo has one so that a server
        that never answers costs OP_TIMEOUT, not the whole test timeout.
        """
        c = self.client(client)
        if label is None:
            label = f"{client}.{method}({self._fmt_args(args, kwargs)})"
        async_fn = getattr(c, f"{method}_async", None)

        def run() -> Any:
            if async_fn is not None:
                return async_fn(*args, **kwargs).get(timeout=OP_TIMEOUT)
            return getattr(c, method)(*args, **kwargs)

        return self.call(label, run)

    def raw(self, request: Any, *, client: str = "main", label: str | None = None) -> Any:
        """Send a kazoo protocol request object as is (no client-side path checks)."""
        c = self.client(client)
        if label is None and isinstance(request, RawRequest):
            label = f"{client}.{request.name}({self._fmt_args(request.args, {})})"
        elif label is None:
            label = f"{client}.raw {type(request).__name__}{self._fmt_request(request)}"

        def run() -> Any:
            result = c.handler.async_result()
            c._call(request, result)
            return result.get(timeout=OP_TIMEOUT)

        return self.call(label, run)

    def _fmt_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        parts = [self._short(a) for a in args]
        parts += [f"{k}={self._short(v)}" for k, v in kwargs.items()]
        return ", ".join(parts)

    def _fmt_request(self, request: Any) -> str:
        fields = getattr(request, "_fields", ())
        return "(" + ", ".join(f"{f}={self._short(getattr(request, f))}" for f in fields) + ")"

    def _short(self, value: Any) -> str:
        if isinstance(value, bytes | bytearray):
            return _bytes_repr(value)
        if isinstance(value, list) and value and all(isinstance(v, ACL) for v in value):
            return "[" + ", ".join(f"{a.id.scheme}:{a.id.id}:{a.perms}" for a in value) + "]"
        if isinstance(value, str):
            return repr(_unroot(value, self.root))
        if isinstance(value, tuple):
            inner = ", ".join(self._short(v) for v in value)
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        if callable(value) and not isinstance(value, _Watcher):
            return getattr(value, "__name__", "fn")
        return repr(value)

    def path(self, *parts: str) -> str:
        """Absolute path under this run's root: ``ctx.path("a", "b")`` -> ``<root>/a/b``."""
        return "/".join([self.root, *parts]) if parts else self.root

    # ---------------------------------------------------------------- watches
    def watcher(self, tag: str, client: str = "main") -> _Watcher:
        """A fresh watch callback logging events under *tag* in *client*'s event list."""
        self.client(client)
        return _Watcher(self, client, tag)

    def _append_callback(self, client: str, item: Any) -> None:
        with self._cond:
            self._callbacks[client].append(item)
            self._cond.notify_all()

    def mark(self, label: str, client: str = "main") -> None:
        """Queue a marker behind everything kazoo has dispatched to callbacks so far.

        kazoo hands watch callbacks to one FIFO worker in wire-arrival order,
        so after ``c.set(p)`` returns, ``ctx.mark("after set")`` lands after the
        NodeDataChanged callback exactly when the notification arrived before
        the reply.  Waits (bounded) until the marker itself has run.
        """
        c = self.client(client)
        done = threading.Event()

        def marker() -> None:
            self._append_callback(client, ("mark", label))
            done.set()

        c.handler.dispatch_callback(Callback("marker", marker, ()))
        if not done.wait(WAIT_TIMEOUT):
            self.record(f"{client}.mark({label!r})", Err("MarkerTimeout"))

    def barrier(self, client: str = "main") -> None:
        """A round trip on *client* then a callback-queue flush.

        Any notification caused by a write that completed before this call
        arrives before the round trip's reply (ordering guarantee), so after
        the barrier all such callbacks have run: "no event" can be asserted
        without sleeping.
        """
        c = self.client(client)
        try:
            # The run's own root, not "/": the raw reply's Stat is compared, and "/"'s
            # cversion and pzxid depend on what earlier tests did on the shared servers.
            c.exists_async(self.root).get(timeout=OP_TIMEOUT)
        except Exception as e:  # noqa: BLE001
            self.record(f"{client}.barrier", Err(type(e).__name__))
        self.mark("barrier", client)
        with self._cond:
            items = self._callbacks[client]
            if items and items[-1] == ("mark", "barrier"):
                items.pop()

    def wait_events(self, n: int, client: str = "main", timeout: float = WAIT_TIMEOUT) -> bool:
        """Wait until *client* has seen at least *n* watch callbacks; record a timeout."""
        self.client(client)
        deadline = time.monotonic() + timeout

        def count() -> int:
            return sum(1 for item in self._callbacks[client] if item[0] == "watch")

        with self._cond:
            while count() < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.record(f"{client}.wait_events({n})", f"timeout: got {count()}")
                    return False
                self._cond.wait(remaining)
        return True

    def record_events(
        self, client: str = "main", label: str | None = None, *, unordered: bool = False
    ) -> None:
        """Record *client*'s callbacks and marks so far (arrival order) and clear them.

        kazoo keeps the watchers of a path in a set and calls all of them for
        one notification in set order, which varies from run to run; so
        consecutive callbacks for the same event are ordered by tag.  (The
        wire log still shows how many notification frames there were.)
        """
        with self._cond:
            items = list(self._callbacks[client])
            self._callbacks[client].clear()
        ordered: list[Any] = []
        for item in items:
            run_start = len(ordered)
            while (
                item[0] == "watch"
                and run_start > 0
                and ordered[run_start - 1][0] == "watch"
                and ordered[run_start - 1][2] == item[2]
            ):
                run_start -= 1
            ordered.append(item)
            if run_start < len(ordered) - 1:
                ordered[run_start:] = sorted(ordered[run_start:], key=lambda it: it[1])
        if unordered or self.unordered_notifications:
            ordered.sort(key=repr)
        self.record(label or f"{client}.events", ordered)

    def events(self, client: str = "main") -> list[Any]:
        """The callback log of *client* (not recorded; for waiting/inspection)."""
        with self._cond:
            return list(self._callbacks[client])

    def record_states(self, client: str = "main", label: str | None = None) -> None:
        """Record the kazoo connection states *client* went through, then clear them."""
        states = list(self._states[client])
        self._states[client].clear()
        self.record(label or f"{client}.states", states)

    def wait_state(
        self, state: str, client: str = "main", timeout: float = WAIT_TIMEOUT, quiet: bool = False
    ) -> bool:
        """Wait (bounded) until *client*'s listener has seen *state* (e.g. "LOST").

        States seen so far count, so call record_states() first to wait for a
        *new* transition.  A timeout is recorded unless quiet=True.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if state in self._states[client]:
                return True
            time.sleep(0.02)
        if not quiet:
            self.record(f"{client}.wait_state({state})", "timeout")
        return False

    def sleep(self, seconds: float) -> None:
        """Plain sleep; only for letting server-side timers (session expiry) run."""
        time.sleep(seconds)

    # ------------------------------------------------------------ transcript
    def transcript(self) -> list[str]:
        """Normalised transcript lines, wire logs last."""
        self._note_sessions()
        entries = list(self.entries)
        for name, wire in self._wire.items():
            if name in self._unrecorded_wire:
                continue
            frames = list(wire)
            if self.unordered_notifications:
                frames = _sort_notification_runs(frames)
            entries.append((f"wire:{name}", _WireLog(frames)))
        if self._wire_anomalies:
            entries.append(("wire-anomalies", sorted(set(self._wire_anomalies))))
        return _Normaliser(self).lines(entries)


def _sort_notification_runs(frames: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Sort each run of consecutive notification frames (replies stay in place)."""
    out: list[tuple[Any, ...]] = []
    run: list[tuple[Any, ...]] = []
    for frame in [*frames, ("end",)]:
        if frame[0] == "event":
            run.append(frame)
            continue
        out += sorted(run, key=repr)
        run = []
        if frame[0] != "end":
            out.append(frame)
    return out


class _WireLog(list):  # type: ignore[type-arg]
    """Marker type: a client's frames in arrival order (rendered one per line)."""


def _bytes_repr(data: bytes | bytearray) -> str:
    """Short, exact-enough rendering: long values as length + SHA-1 prefix."""
    if len(data) <= 48:
        return repr(bytes(data))
    return f"<{len(data)} bytes sha1={hashlib.sha1(data).hexdigest()[:12]}>"


def _hex(data: bytes) -> str:
    """Hex for a body field; long fields as length + SHA-1 prefix (still compared)."""
    if len(data) <= 64:
        return data.hex() or "''"
    return f"<{len(data)} bytes sha1={hashlib.sha1(data).hexdigest()[:12]}>"


def _unroot(s: Any, root: str) -> Any:
    if not isinstance(s, str):
        return s
    if root and (s == root or s.startswith(root + "/")):
        return "~" + s[len(root) :]
    return s


class _Normaliser:
    """Turns recorded values into comparable text (see the module docstring)."""

    def __init__(self, ctx: ScenarioContext) -> None:
        self.ctx = ctx
        self.root = ctx.root
        self.sessions = dict(ctx._sessions)
        self.unknown_sessions: dict[int, str] = {}
        self.zxid_rank: dict[int, int] = {}
        self.anomalies: list[str] = []
        self.ranked: list[int] = []

    def lines(self, entries: list[tuple[str, Any]]) -> list[str]:
        stats: list[ZnodeStat] = []
        committed: list[int] = []
        for _, value in entries:
            _collect_stats(value, stats)
            if isinstance(value, _WireLog):
                for frame in value:
                    raw = frame[-1] if frame[0] in ("reply", "event", "auth") else None
                    if isinstance(raw, RawFrame):
                        stats += raw.stats()
                        if raw.committed:
                            committed.append(raw.zxid)
        self._analyse(stats, committed)
        out: list[str] = []
        for label, value in entries:
            if isinstance(value, _WireLog):
                # One line per frame so that a diff points at the exact frame.
                out.append(f"{label} => {len(value)} frames")
                out += [f"  {label} {self._wire_item(item)}" for item in value]
            else:
                out.append(f"{label} => {self.render(value)}")
        if self.anomalies:
            out.append("time-anomalies => " + "; ".join(sorted(set(self.anomalies))))
        return out

    def _analyse(self, stats: list[ZnodeStat], committed: list[int]) -> None:
        """Rank every transaction zxid seen (Stats, committed writes' replies); check times."""
        zxids = sorted({z for s in stats for z in (s.czxid, s.mzxid, s.pzxid)} | set(committed))
        self.zxid_rank = {z: i for i, z in enumerate(zxids)}
        self.ranked = zxids
        times: dict[int, set[int]] = {}
        for s in stats:
            times.setdefault(s.czxid, set()).add(s.ctime)
            times.setdefault(s.mzxid, set()).add(s.mtime)
        lo = self.ctx.started_ms - 60_000
        hi = int(time.time() * 1000) + 60_000
        previous: tuple[int, int] | None = None
        for z in sorted(times):
            ts = times[z]
            rank = self.zxid_rank[z]
            if len(ts) > 1:
                self.anomalies.append(f"z{rank} has {len(ts)} different times")
            for t in ts:
                if z == 0 and t != 0:
                    self.anomalies.append(f"zxid 0 with non-zero time {t}")
                elif z != 0 and not lo <= t <= hi:
                    self.anomalies.append(f"z{rank} time {t} is not a current epoch-ms time")
            t_min = min(ts)
            if previous is not None and t_min < previous[1]:
                self.anomalies.append(f"time goes backwards from z{previous[0]} to z{rank}")
            if previous is None or max(ts) >= previous[1]:
                previous = (rank, max(ts))

    def _wire_item(self, item: tuple[Any, ...]) -> str:
        if item[0] == "event":
            _, etype, state, path, raw = item
            return (
                f"<- notification {etype} {_unroot(path, self.root)!r} state={state} "
                f"{self.frame(raw)}"
            )
        if item[0] == "reply":
            return f"<- reply {item[1]} {self.frame(item[3])}"
        if item[0] == "auth":
            return f"<- auth {self.frame(item[1])}"
        if item[0] == "connect":
            _, timeout, outcome, (head, sid, pw_len, rest) = item
            return (
                f"<- handshake timeout={timeout} session={outcome} "
                f"raw={head.hex()} sid={self.owner(sid)} passwd={pw_len}B {rest.hex() or '-'}"
            )
        return "<- " + " ".join(str(x) for x in item)

    def frame(self, raw: RawFrame) -> str:
        """A frame's bytes: header, then body fields (hex, or a normalised Stat)."""
        parts = [f"xid={raw.xid} zxid={self.header_zxid(raw.zxid)} err={raw.err}"]
        for kind, value in raw.fields:
            if kind == "stat":
                parts.append(self.stat(value))
            elif kind == "hex":
                parts.append(_hex(value))
            elif kind == "val":
                parts.append(self.value(value))
            else:
                parts.append(f"{kind}:{_hex(value)}")
        return " | ".join(parts)

    def value(self, value: Any) -> str:
        """A decoded string/buffer/vector field: bytes shown exactly, null as ``null``."""
        if value is None:
            return "null"
        if isinstance(value, bytes):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                return _hex(value)
            return repr(_unroot(text, self.root)) if len(value) <= 64 else _hex(value)
        if isinstance(value, int):
            return str(value)
        inner = ", ".join(self.value(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"

    def header_zxid(self, zxid: int) -> str:
        """A reply header's zxid as the newest ranked transaction it covers.

        Allowed difference "failed-write-zxid" (ALLOWED_DIFFERENCES): the exact value is not
        compared, only which transactions it covers.  -1 and 0 are shown as they are.
        """
        if zxid in (-1, 0):
            return str(zxid)
        covered = bisect.bisect_right(self.ranked, zxid)
        return f">=z{covered - 1}" if covered else ">=nothing"

    def owner(self, sid: int) -> Any:
        if sid == 0:
            return 0
        if sid in self.sessions:
            return f"session:{self.sessions[sid]}"
        if sid not in self.unknown_sessions:
            self.unknown_sessions[sid] = f"session:?{len(self.unknown_sessions)}"
        return self.unknown_sessions[sid]

    def stat(self, s: ZnodeStat) -> str:
        def z(v: int) -> str:
            return f"z{self.zxid_rank[v]}"

        return (
            f"Stat(cz={z(s.czxid)} mz={z(s.mzxid)} pz={z(s.pzxid)} "
            f"ct=t({z(s.czxid)}) mt=t({z(s.mzxid)}) v={s.version} cv={s.cversion} "
            f"av={s.aversion} eo={self.owner(s.ephemeralOwner)} dl={s.dataLength} "
            f"nc={s.numChildren})"
        )

    def render(self, value: Any) -> str:
        if isinstance(value, ZnodeStat):
            return self.stat(value)
        if isinstance(value, WatchedEvent):
            return f"{value.type}({_unroot(value.path, self.root)!r}, {value.state})"
        if isinstance(value, Err):
            return repr(value)
        if isinstance(value, BaseException):
            return f"!{type(value).__name__}"
        if isinstance(value, str):
            return repr(_unroot(value, self.root))
        if isinstance(value, bytes | bytearray):
            return _bytes_repr(value)
        if isinstance(value, list):
            return "[" + ", ".join(self.render(v) for v in value) + "]"
        if isinstance(value, tuple):
            inner = ", ".join(self.render(v) for v in value)
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {self.render(v)}" for k, v in value.items()) + "}"
        return repr(value)


def _collect_stats(value: Any, out: list[ZnodeStat]) -> None:
    if isinstance(value, ZnodeStat):
        out.append(value)
    elif isinstance(value, list | tuple):
        for v in value:
            _collect_stats(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_stats(v, out)


def _bounded(fn: Callable[[], Any], timeout: float) -> None:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(timeout)


def _drop_without_close(client: KazooClient) -> None:
    """Make kazoo drop its TCP connection without sending closeSession.

    kazoo only sends closeSession for a ``Close`` request queued by stop().
    Here its stop flag is set first (so it will not reconnect) and then the
    socket is shut down under it: the reader sees EOF, treats it as a dropped
    connection and the loop exits because the client is stopped.  The server
    sees a vanished TCP peer, so the session and its ephemerals live on until
    the session times out -- exactly what a crashed client looks like.
    """
    client._stopped.set()
    conn = client._connection
    sock = getattr(conn, "_socket", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    conn.connection_stopped.wait(OP_TIMEOUT)
    try:
        client.handler.stop()
    except Exception:  # noqa: BLE001 - best effort
        pass


def run_scenario(
    scenario: Scenario,
    server: ServerProcess,
    root: str,
    *,
    side: str,
    make_root: bool = True,
    timeout: float = SCENARIO_TIMEOUT,
) -> tuple[list[str], BaseException | None]:
    """Run *scenario* on *server*; return its transcript and the exception it raised.

    The scenario runs in a worker thread with a deadline: if a server stops
    answering, every client is closed (which fails its pending calls) and the
    transcript records the timeout instead of hanging the test run.
    """
    if make_root:
        _admin(server, lambda c: c.ensure_path(root))
    ctx = ScenarioContext(server, root, side)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            scenario(ctx)
        except BaseException as e:  # noqa: BLE001 - reported below
            failure.append(e)

    worker = threading.Thread(target=target, name=f"scenario-{side}", daemon=True)
    worker.start()
    worker.join(timeout)
    timed_out = worker.is_alive()
    if timed_out:
        ctx.record("!scenario", f"timed out after {timeout:.0f}s")
    try:
        lines = ctx.transcript()
    finally:
        ctx.close_all()
        worker.join(5)
        if make_root and server.running:
            _admin(server, lambda c: c.delete(root, recursive=True), ignore_errors=True)
    error = failure[0] if failure else None
    if error is not None:
        lines.append(f"!scenario-error => {type(error).__name__}")
    return lines, error


def _admin(
    server: ServerProcess, fn: Callable[[KazooClient], Any], ignore_errors: bool = False
) -> None:
    """Run *fn* with a short-lived client (root setup and cleanup)."""
    client = KazooClient(hosts=server.connect_string, timeout=10.0)
    try:
        client.start(timeout=OP_TIMEOUT)
        fn(client)
    except Exception:
        if not ignore_errors:
            raise
    finally:
        _bounded(client.stop, OP_TIMEOUT)
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass


_ZXID_TOKEN = re.compile(r"\bz\d+\b")
FULL_TRANSCRIPT_LINES = 150


def compare_transcripts(
    reference: list[str], candidate: list[str], ref_name: str, cand_name: str
) -> str | None:
    """None if equal, else a readable report.

    The comparison is exact, but one extra or missing zxid renumbers every
    later rank, so the report first shows a diff with zxid ranks masked (the
    behavioural differences); only when that is empty -- the difference *is*
    in the zxid relations -- is the exact diff shown.
    """
    if reference == candidate:
        return None

    def diff(a: list[str], b: list[str]) -> list[str]:
        return list(
            difflib.unified_diff(a, b, fromfile=ref_name, tofile=cand_name, lineterm="", n=2)
        )

    masked = diff(
        [_ZXID_TOKEN.sub("z#", line) for line in reference],
        [_ZXID_TOKEN.sub("z#", line) for line in candidate],
    )
    if masked:
        head = "transcripts differ (zxid ranks masked as z# in this diff):"
        body = masked
    else:
        head = "transcripts differ only in zxid order/equality relations:"
        body = diff(reference, candidate)
    report = [head, *body]
    if max(len(reference), len(candidate)) <= FULL_TRANSCRIPT_LINES:
        report += [f"--- full {ref_name} transcript ---", *reference]
        report += [f"--- full {cand_name} transcript ---", *candidate]
    return "\n".join(report)


_ROOT_COUNTERS: dict[str, itertools.count[int]] = {}


class Differential:
    """Runs scenarios on (reference, candidate) server pairs and asserts equality."""

    def __init__(
        self,
        name: str,
        shared: Callable[[], tuple[ServerProcess, ServerProcess]],
        fresh: Callable[..., tuple[ServerProcess, ServerProcess]],
    ) -> None:
        self.name = name
        self._shared = shared
        self._fresh = fresh
        self.last: tuple[list[str], list[str]] | None = None

    def new_root(self) -> str:
        """A root path unique in this test run, identical for both sides."""
        counter = _ROOT_COUNTERS.setdefault(self.name, itertools.count())
        return f"/d-{self.name}-{next(counter)}"

    def run(
        self,
        scenario: Scenario,
        *,
        fresh: bool = False,
        make_root: bool = True,
        parallel: bool = False,
        timeout: float = SCENARIO_TIMEOUT,
        **cfg: Any,
    ) -> list[str]:
        """Run on both servers, raise TranscriptMismatch if they differ, return the transcript.

        ``fresh=True`` (implied by any zoo.cfg keyword) uses a new server pair.
        ``make_root=False`` leaves the tree untouched (for root/built-in stats).
        ``parallel=True`` runs the two sides at the same time: for scenarios
        that mostly wait on server timers (session expiry).
        A scenario that raises on the *reference* is a broken scenario: that
        exception is re-raised rather than reported as a mismatch.
        """
        reference, candidate = self._fresh(**cfg) if (fresh or cfg) else self._shared()
        root = self.new_root()
        results: dict[str, tuple[list[str], BaseException | None]] = {}

        def side(label: str, srv: ServerProcess) -> None:
            results[label] = run_scenario(
                scenario, srv, root, side=label, make_root=make_root, timeout=timeout
            )

        ref_label = f"reference[{reference.kind}]"
        cand_label = f"candidate[{candidate.role}" + (
            "]" if candidate.kind == candidate.role else f"={candidate.kind}]"
        )
        if parallel:
            threads = [
                threading.Thread(target=side, args=(ref_label, reference), daemon=True),
                threading.Thread(target=side, args=(cand_label, candidate), daemon=True),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout + 30)
        else:
            side(ref_label, reference)
            ref_error = results[ref_label][1]
            if ref_error is not None:
                raise ref_error
            side(cand_label, candidate)
        unfinished: tuple[list[str], BaseException | None] = (["!side did not finish"], None)
        ref_lines, ref_error = results.get(ref_label, unfinished)
        if ref_error is not None:
            raise ref_error
        cand_lines, _ = results.get(cand_label, unfinished)
        self.last = (ref_lines, cand_lines)
        if os.environ.get("FASTZK_DIFF_PRINT"):
            print(f"\n=== {self.name} {root} {ref_label} ===\n" + "\n".join(ref_lines))
        report = compare_transcripts(ref_lines, cand_lines, ref_label, cand_label)
        if report is not None:
            if not candidate.running:
                report += (
                    f"\n\n{cand_label} process exited; log tail:\n{candidate.log_text()[-4000:]}"
                )
            raise TranscriptMismatch(report)
        return ref_lines
