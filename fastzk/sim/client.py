"""Simulated clients: ZooKeeper sessions speaking the real wire protocol to simulated servers.

Each client behaves as kazoo or the Java client does: it connects to a random server, keeps
its session alive with pings, notices a dead or silent connection after two thirds of the
session timeout, reconnects to another server with its session id, password and the last
zxid it saw, re-registers its watches (setWatches), and starts a new session once told its
old one expired. It issues the operations a coordination workload issues (create, conditional
setData and delete, getData and exists with watches, sync then read, multi, ephemerals,
getChildren2, closeSession), records the checked ones as a history for `fastzk check`'s
znode model, and checks what only a client can see:
- per-session FIFO: every reply answers the oldest outstanding request;
- a session never goes back in time (reply zxids never decrease, across reconnects);
- a watch fires before the client can read the data that triggered it.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from fastzk.client import codec
from fastzk.client.codec import Op
from fastzk.proto import Op as ServerOp
from fastzk.sim.checks import Checks
from fastzk.sim.parts import Scheduler
from fastzk.sim.server import SimConn, SimServer

KEYS = ("/k0", "/k1", "/k2", "/k3")
ABSENT = -1  # a watch set on a node that did not exist (exists)
ERRORS = {-110: "nodeexists", -103: "badversion", -101: "nonode", -111: "notempty"}
SESSION_EXPIRED = -112
REPLY = struct.Struct(">iqi")
ZERO_PASSWD = bytes(16)


class ClientWorld(Scheduler, Protocol):
    """The world as a client sees it."""

    checks: Checks
    servers: Mapping[int, SimServer]
    clients_stopped: bool

    def new_process(self) -> int:
        ...

    def record(self, client: SimClient, kind: str, f: str, key: str | None,
               value: Any) -> None:
        ...


class Request:
    __slots__ = ("xid", "kind", "key", "value", "watch", "recorded")

    def __init__(self, xid: int, kind: str, key: str | None, value: Any, watch: bool,
                 recorded: bool) -> None:
        self.xid = xid
        self.kind = kind
        self.key = key
        self.value = value
        self.watch = watch
        self.recorded = recorded


class SimClient:
    def __init__(self, world: ClientWorld, cid: int) -> None:
        self.world = world
        self.cid = cid
        self.process = world.new_process()
        self.session_id = 0
        self.passwd = ZERO_PASSWD
        self.timeout_ms = world.rng.randrange(1500, 4000)
        self.negotiated_ms = self.timeout_ms
        self.conn: SimConn | None = None
        self.server = 0
        self.connected = False
        self.inbox = bytearray()
        self.xid = 0
        self.pending: deque[Request] = deque()
        self.watches: dict[tuple[str, str], int] = {}
        self.versions: dict[str, int] = {}
        self.last_zxid = 0
        self.last_recv_us = 0
        self.last_send_us = 0
        self.send_at_us = 0  # FIFO on the client's connection
        self.recv_at_us = 0
        self.next_value = 0
        self.probe_done = False
        self.ops = 0

    # --- connection --------------------------------------------------------------------------
    def start(self) -> None:
        self._connect()

    def _connect(self) -> None:
        world = self.world
        choices = sorted(world.servers)
        if len(choices) > 1 and self.server in choices:
            choices.remove(self.server)
        self.server = world.rng.choice(choices)
        server = world.servers[self.server]
        world.at(world.rng.randrange(100, 1000), self._open, server.sid, target=server)

    def _open(self, sid: int) -> None:
        world = self.world
        conn = world.servers[sid].accept(self)
        if conn is None:  # refused: nobody listens there
            world.at(world.rng.randrange(20_000, 100_000), self._connect)
            return
        self.conn = conn
        self.connected = False
        self.inbox.clear()
        self.last_recv_us = world.now_us
        self.send_at_us = self.recv_at_us = world.now_us
        self._send(codec.connect_request(self.timeout_ms, self.session_id, self.passwd,
                                         self.last_zxid))
        world.at(self.timeout_ms * 1000 // 3, self._keepalive, conn)

    def _send(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        world = self.world
        when = max(world.now_us + world.rng.randrange(100, 1000), self.send_at_us + 1)
        self.send_at_us = when
        self.last_send_us = world.now_us
        world.at(when - world.now_us, conn.received, data, target=conn.server)

    def deliver(self, conn: SimConn, data: bytes) -> None:
        """The server wrote `data` on `conn` (called by the server's shell)."""
        world = self.world
        when = max(world.now_us + world.rng.randrange(100, 1000), self.recv_at_us + 1)
        self.recv_at_us = when
        world.at(when - world.now_us, self._received, conn, data)

    def connection_lost(self, conn: SimConn) -> None:
        if conn is self.conn:
            self._lost()

    def drop_connection(self) -> None:
        """The client gives up on its connection (silent server): closes it, goes elsewhere."""
        conn = self.conn
        assert conn is not None
        world = self.world
        world.at(world.rng.randrange(100, 1000), conn.server.disconnect, conn, target=conn.server)
        self._lost()

    def _lost(self) -> None:
        """Outcomes of outstanding requests are unknown; the session may live on elsewhere."""
        self.conn = None
        self.connected = False
        lost_write = False
        for request in self.pending:
            if request.recorded:
                if request.kind in ("get", "sync"):
                    self._complete(request, "fail", None)
                else:
                    self._complete(request, "info", None)
                    lost_write = True
        self.pending.clear()
        if lost_write:  # its outcome is unknown: later operations are another history process
            self.process = self.world.new_process()
        self.world.at(self.world.rng.randrange(10_000, 100_000), self._connect)

    def _keepalive(self, conn: SimConn) -> None:
        if conn is not self.conn:
            return
        world = self.world
        third_us = self.negotiated_ms * 1000 // 3
        if world.now_us - self.last_recv_us > 2 * third_us:
            self.drop_connection()
            return
        if self.connected and world.now_us - self.last_send_us >= third_us:
            self._send(codec.PING_FRAME)
        world.at(third_us, self._keepalive, conn)

    # --- replies -----------------------------------------------------------------------------
    def _received(self, conn: SimConn, data: bytes) -> None:
        if conn is not self.conn:
            return
        world = self.world
        self.last_recv_us = world.now_us
        inbox = self.inbox
        inbox += data
        while len(inbox) >= 4:
            (size,) = codec.INT.unpack_from(inbox, 0)
            if len(inbox) < 4 + size:
                break
            frame = bytes(inbox[4:4 + size])
            del inbox[:4 + size]
            if not self.connected:
                self._connected(codec.decode_connect_response(frame))
            else:
                self._reply(frame)
            if conn is not self.conn:
                return

    def _connected(self, response: codec.ConnectResponse) -> None:
        world = self.world
        if response.timeout_ms <= 0:  # the session expired: a new one, a new history process
            if self.session_id:
                world.checks.session_gone(self.session_id)
            self._new_session()
            assert self.conn is not None
            self._send(codec.connect_request(self.timeout_ms, 0, ZERO_PASSWD, self.last_zxid))
            return
        self.session_id = response.session_id
        self.passwd = response.passwd
        self.negotiated_ms = response.timeout_ms
        self.connected = True
        if self.watches:
            self._set_watches()
        self.schedule()

    def _new_session(self) -> None:
        self.session_id = 0
        self.passwd = ZERO_PASSWD
        self.watches.clear()
        self.process = self.world.new_process()

    def _reply(self, frame: bytes) -> None:
        world = self.world
        xid, zxid, err = REPLY.unpack_from(frame, 0)
        body = frame[16:]
        if xid == -1:
            self._event(codec.decode_watch_event(body))
            return
        if zxid < self.last_zxid and zxid != -1:
            world.checks.fail("session-time", f"client {self.cid} session {self.session_id:#x}"
                              f": reply zxid {zxid:#x} after {self.last_zxid:#x}")
        self.last_zxid = max(self.last_zxid, zxid)
        if xid in (-2, -8):  # ping, setWatches
            return
        if not self.pending or self.pending[0].xid != xid:
            world.checks.fail("fifo", f"client {self.cid}: reply to xid {xid}, expected "
                              f"{self.pending[0].xid if self.pending else None}")
        request = self.pending.popleft()
        if err == SESSION_EXPIRED:
            if request.recorded:
                self._complete(request, "fail", None)
            return
        self._outcome(request, zxid, err, body)

    def _outcome(self, request: Request, zxid: int, err: int, body: bytes) -> None:
        world = self.world
        kind, key = request.kind, request.key
        result: Any
        if kind == "get":
            if err == 0:
                data, off = codec.read_buffer(body, 0)
                stat, _ = codec.read_stat(body, off)
                self._saw(key, stat)
                self.versions[key] = stat.version
                result = [(data or b"").decode(), stat.version]
                if request.watch:
                    self.watches["data", key] = stat.mzxid
            else:
                self._require(err, (-101,), request)
                self._saw(key, None)
                result = None
        elif kind == "exists":
            if err == 0:
                stat, _ = codec.read_stat(body, 0)
                self._saw(key, stat)
                self.watches["data", key] = stat.mzxid
            else:
                self._require(err, (-101,), request)
                self._saw(key, None)
                self.watches["data", key] = ABSENT
        elif kind == "children":
            self._require(err, (0,), request)
            _, off = codec.read_string_vector(body, 0)
            stat, _ = codec.read_stat(body, off)
            basis = self.watches.get(("child", "/"))
            if basis is not None and stat.pzxid > basis:
                world.checks.fail("watch", f"client {self.cid}: children of / changed at "
                                  f"{stat.pzxid:#x} before the watch set at {basis:#x} fired")
            self.watches["child", "/"] = stat.pzxid
        elif kind in ("create", "delete"):
            result = True if err == 0 else self._require(err, (-110, -101, -103), request)
            if kind == "create" and err == 0:
                self.versions[key] = 0
        elif kind == "set":
            if err == 0:
                stat, _ = codec.read_stat(body, 0)
                result = stat.version
                self.versions[key] = stat.version
            else:
                result = self._require(err, (-103, -101), request)
        elif kind == "multi":  # a failed multi has header err 0 and its errors in the body
            self._require(err, (0,), request)
            failed = [r for r in codec.decode_multi(body)
                      if isinstance(r, codec.ZKError) and r.code != 0]
            result = self._require(failed[0].code, (-110, -101, -103), request) if failed \
                else True
        elif kind == "sync":
            self._require(err, (0,), request)
            self._complete(request, "ok", True)
            # the read it was for: it must see every write completed before the sync began
            self._request("get", key, Op.GET_DATA, codec.path_watch(key or "/", False))
            return
        elif kind == "ephemeral":
            self._require(err, (0, -110), request)
        elif kind == "probe":
            self._require(err, (0, -110), request)
            self.probe_done = True
        elif kind == "close":
            self._require(err, (0,), request)
            world.checks.session_gone(self.session_id)
            self._new_session()
        if request.recorded:
            self._complete(request, "ok", result)
            if kind in ("create", "set", "delete", "multi") and err == 0:
                world.checks.acknowledged(zxid)
        self.schedule()

    def _require(self, err: int, allowed: tuple[int, ...], request: Request) -> str | None:
        if err not in allowed:
            self.world.checks.fail("reply", f"client {self.cid}: {request.kind} "
                                   f"{request.key}: unexpected error {err}")
        return ERRORS.get(err)

    def _saw(self, key: str | None, stat: codec.Stat | None) -> None:
        """A read showed `key` as it is now: a data watch set on an older state must have
        fired first (ZooKeeper: a client sees the event before the data that follows it)."""
        basis = self.watches.get(("data", key)) if key is not None else None
        if basis is None:
            return
        if stat is None or basis == ABSENT or stat.mzxid > basis:
            if stat is None and basis == ABSENT:
                return
            self.world.checks.fail(
                "watch", f"client {self.cid}: read {key} "
                f"({'absent' if stat is None else f'mzxid {stat.mzxid:#x}'}) before the watch "
                f"set at {'absence' if basis == ABSENT else f'{basis:#x}'} fired")

    def _event(self, event: codec.WatchEvent) -> None:
        path = event.path
        if event.type == codec.EventType.NODE_CHILDREN_CHANGED:
            self.watches.pop(("child", path), None)
            return
        self.watches.pop(("data", path), None)
        if event.type == codec.EventType.NODE_DELETED:
            self.watches.pop(("child", path), None)

    def _set_watches(self) -> None:
        data = sorted(p for (kind, p), basis in self.watches.items()
                      if kind == "data" and basis != ABSENT)
        exist = sorted(p for (kind, p), basis in self.watches.items()
                       if kind == "data" and basis == ABSENT)
        child = sorted(p for (kind, p) in self.watches if kind == "child")
        body = codec.LONG.pack(self.last_zxid) + b"".join(
            codec.INT.pack(len(paths)) + b"".join(codec.ustring(p) for p in paths)
            for paths in (data, exist, child))
        self._send(codec.frame(-8, ServerOp.SET_WATCHES, body))

    # --- operations -------------------------------------------------------------------------
    def schedule(self) -> None:
        """The next operation, once every earlier one is answered (one history operation per
        process at a time; only an unrecorded read is ever pipelined behind a write)."""
        if self.connected and not self.pending:
            world = self.world
            world.at(world.rng.randrange(0, 20_000), self._next, self.conn)

    def _request(self, kind: str, key: str | None, op: int, body: bytes, value: Any = None,
                 watch: bool = False, recorded: bool = True) -> None:
        self.xid += 1
        request = Request(self.xid, kind, key, value, watch, recorded)
        self.pending.append(request)
        if recorded:
            self.world.record(self, "invoke", kind, key, value)
        self._send(codec.frame(self.xid, op, body))

    def _complete(self, request: Request, outcome: str, value: Any) -> None:
        self.world.record(self, outcome, request.kind, request.key, value)
        self.ops += 1

    def _value(self) -> str:
        self.next_value += 1
        return f"{self.cid}.{self.next_value}"

    def _version(self, key: str) -> int:
        rng = self.world.rng
        roll = rng.random()
        if roll < 0.4:
            return -1
        if roll < 0.9:
            return self.versions.get(key, 0)
        return rng.randrange(0, 5)

    def _next(self, conn: SimConn) -> None:
        if conn is not self.conn or not self.connected or self.pending:
            return
        world = self.world
        rng = world.rng
        if world.clients_stopped:
            if not self.probe_done:
                path = f"/probe{self.cid}"
                self._request("probe", path, Op.CREATE,
                              codec.create_body(path, b"", codec.OPEN_ACL_UNSAFE, 0),
                              recorded=False)
            return
        key = rng.choice(KEYS)
        roll = rng.random()
        if roll < 0.25:
            watch = rng.random() < 0.5
            self._request("get", key, Op.GET_DATA, codec.path_watch(key, watch), watch=watch)
        elif roll < 0.48:
            value = [self._version(key), self._value()]
            self._request("set", key, Op.SET_DATA,
                          codec.set_body(key, value[1].encode(), value[0]), value)
            if rng.random() < 0.3:  # pipelined behind the write: FIFO and read-your-writes
                self._request("exists", key, Op.EXISTS, codec.path_watch(key, True),
                              watch=True, recorded=False)
        elif roll < 0.60:
            data = self._value()
            self._request("create", key, Op.CREATE,
                          codec.create_body(key, data.encode(), codec.OPEN_ACL_UNSAFE, 0), data)
        elif roll < 0.70:
            version = self._version(key)
            self._request("delete", key, Op.DELETE, codec.delete_body(key, version), version)
        elif roll < 0.78:
            self._request("sync", key, Op.SYNC, codec.ustring(key))
        elif roll < 0.86:
            self._multi()
        elif roll < 0.91:
            self._request("exists", key, Op.EXISTS, codec.path_watch(key, True), watch=True,
                          recorded=False)
        elif roll < 0.95:
            self._request("children", "/", Op.GET_CHILDREN2, codec.path_watch("/", True),
                          watch=True, recorded=False)
        elif roll < 0.99:
            path = f"/e{self.cid}.{self.next_value}"
            self.next_value += 1
            self._request("ephemeral", path, Op.CREATE,
                          codec.create_body(path, b"", codec.OPEN_ACL_UNSAFE,
                                            codec.CreateMode.EPHEMERAL), recorded=False)
        else:
            self._request("close", None, Op.CLOSE, b"", recorded=False)

    def _multi(self) -> None:
        rng = self.world.rng
        ops: list[codec.MultiOp] = []
        described: list[dict[str, Any]] = []
        for key in rng.sample(KEYS, rng.randrange(1, 4)):
            roll = rng.random()
            if roll < 0.3:
                data = self._value()
                ops.append(codec.multi_create(key, data.encode()))
                described.append({"f": "create", "key": key, "value": data})
            elif roll < 0.7:
                version, data = self._version(key), self._value()
                ops.append(codec.multi_set(key, data.encode(), version))
                described.append({"f": "set", "key": key, "value": [version, data]})
            elif roll < 0.85:
                version = self._version(key)
                ops.append(codec.multi_delete(key, version))
                described.append({"f": "delete", "key": key, "value": version})
            else:
                version = self._version(key)
                ops.append(codec.multi_check(key, version))
                described.append({"f": "check", "key": key, "value": version})
        self._request("multi", None, Op.MULTI, codec.multi_body(ops), described)
