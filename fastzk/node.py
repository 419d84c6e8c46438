"""The host: glues the pipeline stages together for one server.

It owns the tree, sessions, watches and every connection's reply FIFO, and it is driven only by
calls from the runtime (a frame arrived, a connection went away, time passed, a log batch became
durable). Its outputs are bytes appended to each connection's WriteBuffer plus flags the runtime
acts on (`dirty`, `Client.closing`, `Client.state`), so a simulator can drive it exactly as the
asyncio runtime does.

Request flow: decode -> (read: answer from the tree, unless the connection still waits for one
of its own writes) / (write: prep -> txn appended to `log_batch`) ... the runtime makes the
batch durable and calls `commit` -> apply -> notifications, then the reply, then every read that
was queued behind that write.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastzk._core import DataTree, JuteError, WriteBuffer, decode_connect, decode_request
from fastzk.proto import (
    OP_NAMES,
    READ_OPS,
    WRITE_OPS,
    AddWatchMode,
    Err,
    Event,
    Op,
    Xid,
)
from fastzk.server import acl as acls
from fastzk.server.apply import Applier, write_multi_failure, write_notification, write_reply
from fastzk.server.prep import Prep, Txn
from fastzk.server.reads import Reads
from fastzk.server.sessions import Session, SessionTable
from fastzk.server.stats import FAST_READ, RequestStats
from fastzk.server.watches import CHILD, DATA, PERSISTENT, RECURSIVE, WatchManager

NO_PASSWORD = bytes(16)


class State:
    HANDSHAKE = 0  # waiting for the ConnectRequest
    CONNECTING = 1  # createSession txn in the log; further frames stay buffered
    READY = 2
    CLOSED = 3


class Client:
    """Per-connection state. The runtime's protocol object holds one and flushes `out`."""

    __slots__ = (
        "address", "out", "state", "session", "identities", "watches", "fifo", "closing",
        "read_only_byte", "received", "sent", "established_ms", "last_op", "last_xid",
        "last_zxid", "last_response_ms", "last_latency_ms", "min_latency_ms", "max_latency_ms",
        "total_latency_ms", "replies", "fifo_sizes", "fifo_bytes", "unsent_bytes",
    )

    def __init__(self, address: str) -> None:
        self.address = address
        self.out = WriteBuffer()
        self.state = State.HANDSHAKE
        self.session: Session | None = None
        self.identities: set[tuple[str, str]] = {("ip", address)}
        self.watches: set[tuple[int, str]] = set()
        # replies not yet sendable: a Txn waits for its commit; a callable writes its reply
        self.fifo: deque[Txn | Callable[[], None]] = deque()
        self.fifo_sizes: deque[int] = deque()  # request bytes of each FIFO entry
        self.fifo_bytes = 0  # their sum: what the connection's in-flight requests hold
        # replies handed to the transport but not yet sent (set by the runtime): with `out`,
        # the connection's pending output, which the node keeps under Limits.output_limit_bytes
        self.unsent_bytes = 0
        self.closing = False  # the runtime closes the connection once `out` is flushed
        self.read_only_byte: bool | None = None
        self.established_ms = 0
        self.last_op = "NA"
        self.last_xid = 0
        self.last_zxid = 0
        self.last_response_ms = 0
        self.reset_stats()

    def reset_stats(self) -> None:
        """`crst`: per-connection counters and latencies back to zero."""
        self.received = self.sent = self.replies = 0
        self.last_latency_ms = self.min_latency_ms = self.max_latency_ms = 0
        self.total_latency_ms = 0

    @property
    def avg_latency_ms(self) -> int:
        return self.total_latency_ms // self.replies if self.replies else 0

    def record_reply(self, zxid: int, now_ms: int, latency_ms: int) -> None:
        self.last_zxid = zxid
        self.last_response_ms = now_ms
        self.last_latency_ms = latency_ms
        if not self.replies or latency_ms < self.min_latency_ms:
            self.min_latency_ms = latency_ms
        self.max_latency_ms = max(self.max_latency_ms, latency_ms)
        self.total_latency_ms += latency_ms
        self.replies += 1

    @property
    def session_id(self) -> int:
        return self.session.session_id if self.session is not None else 0


@dataclass(frozen=True, slots=True)
class Limits:
    tick_ms: int
    min_session_timeout: int
    max_session_timeout: int
    super_digest: str | None = None  # "super:<base64 sha1>" as in ZooKeeper's superDigest
    ttl_enabled: bool = False
    # replies queued behind a write are written only while the connection's pending output is
    # below this (0: unbounded); the runtime asks for the rest once the client reads (`drain`)
    output_limit_bytes: int = 0
    large_request_threshold: int = -1  # only larger writes count in Node.inflight_write_bytes


class Node:
    def __init__(self, limits: Limits, rng: random.Random, server_id: int = 1,
                 start_ms: int = 0) -> None:
        self.limits = limits
        self.tree = DataTree()
        self.watches = WatchManager()
        self.sessions = SessionTable(limits.tick_ms, server_id, start_ms, rng)
        self.prep = Prep(self.tree, 0, limits.ttl_enabled)
        self.applier = Applier(self.tree, self.watches, self.sessions)
        self.reads = Reads(self.tree, self.watches)
        self.applied_zxid = 0
        self.log_batch: list[Txn] = []
        self.waiting: dict[int, Client] = {}  # zxid -> connection that awaits its reply
        self.dirty: set[Client] = set()
        self.clients: set[Client] = set()
        self.now_ms = start_ms  # wall clock: txn times (ctime/mtime)
        self.mono_ms = 0  # monotonic clock: session deadlines
        self.stats = RequestStats()
        # writes in every connection's FIFO (waiting for the log), and the bytes of those larger
        # than Limits.large_request_threshold: what the runtime's server-wide bounds limit.
        # Reads queued behind them are not counted: a client that does not read its replies
        # holds them back, and must not use up the server's budget (they count per connection)
        self.inflight_writes = 0
        self.inflight_write_bytes = 0
        self._request_bytes = 0  # size of the request being handled

    # --- time --------------------------------------------------------------------------------
    def set_time(self, now_ms: int, mono_ms: int) -> None:
        self.now_ms = now_ms
        self.mono_ms = mono_ms

    def tick(self) -> None:
        """Expires the sessions whose deadline has passed (one closeSession txn each)."""
        for session in self.sessions.due(self.mono_ms):
            self._log(self.prep.close_session(session.session_id, 0, self.now_ms), None)

    def reap(self, limit: int) -> int:
        """Deletes up to `limit` expired containers and TTL nodes; returns how many."""
        reaped = 0
        for path in sorted(self.tree.containers_and_ttls()):
            if reaped >= limit:
                break
            txn = self.prep.reap(path, self.now_ms)
            if txn is not None:
                self._log(txn, None)
                reaped += 1
        return reaped

    # --- connections -------------------------------------------------------------------------
    def connection_made(self, client: Client) -> None:
        self.clients.add(client)

    def connection_lost(self, client: Client) -> None:
        client.state = State.CLOSED
        self._clear_fifo(client)
        self.clients.discard(client)
        self.dirty.discard(client)
        self.watches.drop_connection(client)
        session = client.session
        if session is not None and session.conn is client:
            session.conn = None

    def _close(self, client: Client) -> None:
        client.closing = True
        self.dirty.add(client)

    def handle_connect(self, client: Client, payload: bytes) -> None:
        try:
            _, last_zxid_seen, timeout, session_id, passwd, read_only = decode_connect(payload)
        except JuteError:
            self._close(client)
            return
        self.stats.packets_received += 1
        client.read_only_byte = read_only
        if last_zxid_seen > self.applied_zxid:
            # the client has seen a newer state than ours: it must try another server
            self._close(client)
            return
        limits = self.limits
        timeout = min(max(timeout, limits.min_session_timeout), limits.max_session_timeout)
        if session_id == 0:
            session_id, passwd = self.sessions.allocate()
            client.state = State.CONNECTING
            self._log(self.prep.create_session(session_id, timeout, passwd, self.now_ms), client)
            return
        session = self.sessions.get(session_id)
        if session is None or session.closing or session.passwd != passwd:
            self._reply_connect(client, 0, 0, NO_PASSWORD)
            self._close(client)
            return
        previous = session.conn
        if previous is not None and previous is not client:
            previous.closing = True  # taken over: closed with no message
            previous.out.take()
            self.dirty.add(previous)
        session.timeout = timeout
        self.sessions.touch(session, self.mono_ms)
        self._bind(client, session)

    def _bind(self, client: Client, session: Session) -> None:
        session.conn = client
        client.session = session
        client.state = State.READY
        client.established_ms = self.now_ms
        self._reply_connect(client, session.timeout, session.session_id, session.passwd)

    def _reply_connect(self, client: Client, timeout: int, session_id: int,
                       passwd: bytes) -> None:
        read_only = None if client.read_only_byte is None else False
        client.out.connect_response(timeout, session_id, passwd, read_only)
        self._sent(client)

    def _sent(self, client: Client) -> None:
        client.sent += 1
        self.stats.packets_sent += 1
        self.dirty.add(client)

    # --- requests ----------------------------------------------------------------------------
    def touch(self, client: Client, requests: int) -> None:
        """Accounts requests answered by the runtime's fast path: they refresh the session."""
        client.received += requests
        client.sent += requests
        stats = self.stats
        stats.packets_received += requests
        stats.packets_sent += requests
        stats.record(FAST_READ, 0, requests)
        session = client.session
        if session is not None:
            self.sessions.touch(session, self.mono_ms)

    def handle_request(self, client: Client, payload: bytes) -> None:
        self._request_bytes = len(payload)
        client.received += 1
        self.stats.packets_received += 1
        session = client.session
        if session is not None:
            self.sessions.touch(session, self.mono_ms)
        try:
            xid, op, body = decode_request(payload)
        except JuteError as error:
            if not error.args:
                self._close(client)
                return
            xid, op = error.args
            self._in_order(client, lambda: self._error(client, xid, Err.MARSHALLING_ERROR))
            return
        client.last_xid = xid
        client.last_op = OP_CODES.get(op, "NA")
        if op == Op.PING:
            client.out.reply_header(Xid.PING, self.applied_zxid, Err.OK)
            self._sent(client)
        elif op in WRITE_OPS:
            self._write(client, xid, op, body)
        elif op in READ_OPS:
            if client.fifo:
                self._queue(client, lambda: self._read(client, xid, op, body))
            else:
                self._read(client, xid, op, body)
        else:
            self._special(client, xid, op, body)

    def _read(self, client: Client, xid: int, op: int, body: Any) -> None:
        self.reads.answer(client, xid, op, body, self.applied_zxid)
        self._sent(client)
        self.stats.record(OP_NAMES[op], 0)
        client.record_reply(self.applied_zxid, self.now_ms, 0)

    def _error(self, client: Client, xid: int, err: int, zxid: int | None = None) -> None:
        client.out.reply_header(xid, self.applied_zxid if zxid is None else zxid, err)
        self._sent(client)

    def _in_order(self, client: Client, reply: Callable[[], None]) -> None:
        """Runs `reply` now, or once every earlier request of the connection is answered."""
        if client.fifo:
            self._queue(client, reply)
        else:
            reply()

    def _write(self, client: Client, xid: int, op: int, body: Any) -> None:
        session = client.session
        assert session is not None
        if session.closing:
            # its closeSession txn is decided: a write now (an ephemeral above all) would
            # outlive the session
            self._in_order(client, lambda: self._error(client, xid, Err.SESSION_EXPIRED))
            return
        if op == Op.CLOSE_SESSION:
            session.closing = True
            self._log(self.prep.close_session(session.session_id, xid, self.now_ms), client)
            return
        if op == Op.RECONFIG:
            self._in_order(client, lambda: self._error(client, xid, Err.RECONFIG_DISABLED))
            return
        if op == Op.DELETE_CONTAINER:
            self._unimplemented(client, xid)
            return
        outcome = self.prep.write(session.session_id, xid, op, body, client.identities,
                                  self.now_ms)
        if isinstance(outcome, Txn):
            self._log(outcome, client)
        elif isinstance(outcome, list):
            self._in_order(client, lambda: self._multi_failed(client, xid, outcome))
        else:
            self._in_order(client, lambda: self._error(client, xid, outcome))

    def _multi_failed(self, client: Client, xid: int, errors: list[int]) -> None:
        write_multi_failure(client.out, xid, self.applied_zxid, errors)
        self._sent(client)

    def _unimplemented(self, client: Client, xid: int) -> None:
        def reply() -> None:
            self._error(client, xid, Err.UNIMPLEMENTED, zxid=-1)
            self._close(client)
        self._in_order(client, reply)

    def _special(self, client: Client, xid: int, op: int, body: Any) -> None:
        """Connection-level requests: auth, sasl, watch management."""
        if op == Op.AUTH:
            self._auth(client, xid, body)
        elif op == Op.SASL:
            def reply() -> None:
                client.out.begin(xid, 0, Err.OK)
                client.out.write_buffer(None)
                client.out.end()
                self._sent(client)
            self._in_order(client, reply)
        elif op in (Op.SET_WATCHES, Op.SET_WATCHES2):
            self._in_order(client, lambda: self._set_watches(client, xid, body))
        elif op == Op.ADD_WATCH:
            self._in_order(client, lambda: self._add_watch(client, xid, body))
        elif op in (Op.CHECK_WATCHES, Op.REMOVE_WATCHES):
            self._in_order(client, lambda: self._check_watches(client, xid, op, body))
        else:
            self._unimplemented(client, xid)

    def _auth(self, client: Client, xid: int, body: Any) -> None:
        _, scheme, auth = body
        if scheme == "digest":
            identity = acls.digest_id((auth or b"").decode("utf-8", "replace"))
            client.identities.add(("digest", identity))
            if self.limits.super_digest is not None and identity == self.limits.super_digest:
                client.identities.add(("super", ""))
            self._in_order(client, lambda: self._error(client, xid, Err.OK, zxid=0))
        elif scheme == "ip":
            self._in_order(client, lambda: self._error(client, xid, Err.OK, zxid=0))
        else:
            def reply() -> None:
                self._error(client, xid, Err.AUTH_FAILED, zxid=0)
                self._close(client)
            self._in_order(client, reply)

    def _set_watches(self, client: Client, xid: int, body: Any) -> None:
        rel_zxid, data_paths, exist_paths, child_paths = body[:4]
        persistent_paths, recursive_paths = body[4:] if len(body) == 6 else ([], [])
        tree, watches, out = self.tree, self.watches, client.out
        for path in data_paths:
            stat = tree.stat(path)
            if stat is None:
                write_notification(out, Event.NODE_DELETED, path)
            elif stat[1] > rel_zxid:
                write_notification(out, Event.NODE_DATA_CHANGED, path)
            else:
                watches.add(DATA, path, client)
        for path in exist_paths:
            if tree.exists(path):
                write_notification(out, Event.NODE_CREATED, path)
            else:
                watches.add(DATA, path, client)
        for path in child_paths:
            stat = tree.stat(path)
            if stat is None:
                write_notification(out, Event.NODE_DELETED, path)
            elif stat[10] > rel_zxid:
                write_notification(out, Event.NODE_CHILDREN_CHANGED, path)
            else:
                watches.add(CHILD, path, client)
        for path in persistent_paths:
            watches.add(PERSISTENT, path, client)
        for path in recursive_paths:
            watches.add(RECURSIVE, path, client)
        self._error(client, xid, Err.OK)

    def _add_watch(self, client: Client, xid: int, body: Any) -> None:
        path, mode = body
        if mode == AddWatchMode.PERSISTENT:
            self.watches.add(PERSISTENT, path, client)
        elif mode == AddWatchMode.PERSISTENT_RECURSIVE:
            self.watches.add(RECURSIVE, path, client)
        else:
            self._error(client, xid, Err.MARSHALLING_ERROR)
            return
        client.out.begin(xid, self.applied_zxid, Err.OK)
        client.out.write_int(0)
        client.out.end()
        self._sent(client)

    def _check_watches(self, client: Client, xid: int, op: int, body: Any) -> None:
        path, watcher_type = body
        if op == Op.CHECK_WATCHES:
            found = self.watches.check(path, watcher_type, client)
        else:
            found = self.watches.remove(path, watcher_type, client)
        if found is None:
            err = Err.MARSHALLING_ERROR
        else:
            err = Err.OK if found else Err.NO_WATCHER
        self._error(client, xid, err)

    # --- log and commit ----------------------------------------------------------------------
    def _log(self, txn: Txn, client: Client | None) -> None:
        self.log_batch.append(txn)
        if client is not None:
            self.waiting[txn.zxid] = client
            if client.state == State.READY:
                self._queue(client, txn)

    def take_log_batch(self) -> list[Txn]:
        batch, self.log_batch = self.log_batch, []
        return batch

    def commit(self, txns: list[Txn]) -> None:
        """Applies durable txns in zxid order and writes their notifications and replies."""
        if not txns:
            return
        apply = self.applier.apply
        waiting = self.waiting
        dirty = self.dirty
        for txn in txns:
            op = txn.op
            expiring = None
            if op == Op.CLOSE_SESSION:
                closing_session = self.sessions.get(txn.session_id)
                expiring = closing_session.conn if closing_session is not None else None
            result, notifications = apply(txn)
            self.applied_zxid = txn.zxid
            for conn, event, path in notifications:
                if conn.state != State.CLOSED:
                    write_notification(conn.out, event, path)
                    dirty.add(conn)
            client = waiting.pop(txn.zxid, None)
            if op == Op.CREATE_SESSION:
                session = self.sessions.get(txn.session_id)
                assert session is not None
                # the txn carries wall-clock time; deadlines run on the monotonic clock
                self.sessions.touch(session, self.mono_ms)
                if client is not None and client.state == State.CONNECTING:
                    self._bind(client, session)
                continue
            if client is None:
                if expiring is not None:  # expired: its connection is closed with no message
                    self._close(expiring)
                continue
            if client.state != State.READY:
                continue
            fifo = client.fifo
            if fifo[0] is not txn:
                self._reply_in_place(client, txn, result)
                continue
            self._dequeue(client)
            self._reply(client, txn, result)
            if fifo and not isinstance(fifo[0], Txn):
                self.drain(client)
        # prep's overlay only serves later preps, so one cleanup per batch suffices
        self.prep.applied(self.applied_zxid)

    def _reply(self, client: Client, txn: Txn, result: Any) -> None:
        write_reply(client.out, txn, result)
        client.sent += 1
        self.stats.packets_sent += 1
        self.dirty.add(client)
        latency = max(0, self.now_ms - txn.time_ms)
        self.stats.record(OP_NAMES[txn.op], latency)
        client.record_reply(txn.zxid, self.now_ms, latency)
        if txn.op == Op.CLOSE_SESSION:
            self._close(client)

    def _reply_in_place(self, client: Client, txn: Txn, result: Any) -> None:
        """A committed txn whose connection still holds earlier replies back (`drain` stopped
        at the output limit): its reply takes its place in the FIFO and leaves in order. It no
        longer waits for the log, so it leaves the server-wide count."""
        fifo = client.fifo
        index = next(i for i, entry in enumerate(fifo) if entry is txn)
        fifo[index] = lambda: self._reply(client, txn, result)
        self.inflight_writes -= 1
        if client.fifo_sizes[index] > self.limits.large_request_threshold:
            self.inflight_write_bytes -= client.fifo_sizes[index]

    def drain(self, client: Client) -> None:
        """Writes the replies queued at the head of the connection's FIFO (reads and errors
        behind a committed write) while its pending output stays under the limit: a client
        that pipelines large reads behind a write and reads nothing must not make the server
        buffer all of their replies. The runtime calls it again once the client has read."""
        fifo = client.fifo
        limit = self.limits.output_limit_bytes
        while fifo and not isinstance(fifo[0], Txn):
            if limit and len(client.out) + client.unsent_bytes >= limit:
                return
            self._dequeue(client)()

    def _queue(self, client: Client, entry: Txn | Callable[[], None]) -> None:
        """Appends to the connection's FIFO, accounting the bytes of the current request."""
        size = self._request_bytes
        client.fifo.append(entry)
        client.fifo_sizes.append(size)
        client.fifo_bytes += size
        if isinstance(entry, Txn):
            self.inflight_writes += 1
            if size > self.limits.large_request_threshold:
                self.inflight_write_bytes += size

    def _dequeue(self, client: Client) -> Txn | Callable[[], None]:
        size = client.fifo_sizes.popleft()
        client.fifo_bytes -= size
        entry = client.fifo.popleft()
        if isinstance(entry, Txn):
            self.inflight_writes -= 1
            if size > self.limits.large_request_threshold:
                self.inflight_write_bytes -= size
        return entry

    def _clear_fifo(self, client: Client) -> None:
        while client.fifo:
            self._dequeue(client)

    # --- durability: start-up and log failure (runtime/storage.py) -------------------------
    def recover(self, zxid: int, sessions: Iterable[tuple[int, int, bytes]],
                txns: Iterable[Txn], fuzzy_until: int = 0) -> int:
        """Brings a fresh node to its durable state before it serves anyone. The runtime has
        loaded the snapshot's nodes into `self.tree`; `zxid` is the snapshot's start zxid (0
        without one) and `sessions` the (id, timeout, passwd) it recorded. Then every logged
        txn after `zxid` is applied in order: over a fuzzy snapshot (walked until zxid
        `fuzzy_until`) some are already partly there, which is fine because txns carry
        absolute values (server/prep.py; Applier.replay). Raises ValueError when a txn after
        `fuzzy_until` does not apply (the log does not belong to the snapshot). Restored
        sessions get a fresh deadline (now + timeout): a client that resumes its session keeps
        its ephemerals, one that does not come back expires. Returns the txns replayed."""
        assert self.applied_zxid == 0 and not self.clients and not self.log_batch
        for session_id, timeout, passwd in sessions:
            self.sessions.add(session_id, timeout, passwd, self.mono_ms)
        self.applied_zxid = zxid
        replay = self.applier.replay
        replayed = 0
        for txn in txns:
            try:
                replay(txn, txn.zxid <= fuzzy_until)
            except (KeyError, ValueError) as error:
                raise ValueError(f"txn {txn.zxid:#x} does not apply: {error}") from None
            self.applied_zxid = txn.zxid
            replayed += 1
        self.prep.last_zxid = self.applied_zxid
        for session in list(self.sessions.sessions.values()):
            self.sessions.touch(session, self.mono_ms)
            self.sessions.reserve(session.session_id)
        return replayed

    def abandon(self, txns: list[Txn]) -> None:
        """Txns the log could not make durable (a disk error): they are never applied nor
        acknowledged. Each waiting connection is closed, so its client sees a connection loss,
        ZooKeeper's "outcome unknown" (a failed fsync may or may not have reached the disk)."""
        for txn in txns:
            client = self.waiting.pop(txn.zxid, None)
            if client is not None and client.state != State.CLOSED:
                self._clear_fifo(client)
                self._close(client)


OP_CODES = {
    Op.PING: "PING", Op.CREATE: "CREA", Op.CREATE2: "CREA", Op.CREATE_CONTAINER: "CREA",
    Op.CREATE_TTL: "CREA", Op.DELETE: "DELE", Op.SET_DATA: "SETD", Op.SET_ACL: "SETA",
    Op.GET_DATA: "GETD", Op.GET_ACL: "GETA", Op.GET_CHILDREN: "GETC", Op.GET_CHILDREN2: "GETC",
    Op.EXISTS: "EXIS", Op.SYNC: "SYNC", Op.MULTI: "MULT", Op.MULTI_READ: "MLTR",
    Op.SET_WATCHES: "SETW", Op.SET_WATCHES2: "STW2", Op.ADD_WATCH: "ADDW",
    Op.CHECK_WATCHES: "CHKW", Op.REMOVE_WATCHES: "REMW", Op.GET_EPHEMERALS: "GETE",
    Op.GET_ALL_CHILDREN_NUMBER: "GETACN", Op.WHO_AM_I: "HOMI", Op.CHECK: "CHEC",
    Op.RECONFIG: "RECO", Op.CLOSE_SESSION: "CLOS",
}
