"""The measuring engine of `fastzk load`: pacing, the two session kinds and the measured window.

* :class:`FastSession` sends pre-encoded frames and parses only reply headers (no per-request
  Python object): the closed-loop throughput path, and the open-loop path of simple ops.
* :class:`ModelSession` encodes every request and decodes and verifies every reply against a
  model of what the server must answer (``--check``); it also runs the ops whose frames cannot
  be precomputed (creates of unique names, deletes of set-up nodes).
* Pacing is shared: **closed loop** (every reply releases one request, ``depth`` in flight),
  or **open loop**: request j of a session is *intended* at ``base + j * step`` (the process's
  share of ``--rate``, spread round-robin over its sessions); a pacer thread wakes the event
  loop when requests are due, and latency is measured from the intended time, so a stall that
  delays sending is charged to the requests it delayed (no coordinated omission). The service
  time (from the actual send) is recorded too. ``--ops N`` gives every session a quota.
* :func:`measure_window` runs warm-up and the measured window, moving the sessions'
  latencies into a :class:`~fastzk.load.latency.Recorder` in small steps.

Latencies are integer microseconds of :func:`~fastzk.load.latency.now_us`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastzk.client.codec import (
    INT,
    OPEN_ACL_UNSAFE,
    REPLY_HEADER,
    REPLY_HEADER_SIZE,
    STAT,
    MultiOp,
    Op,
    ZKError,
    connect_request,
    create_body,
    decode_connect_response,
    decode_multi,
    delete_body,
    multi_body,
    path_watch,
    read_string_vector,
    read_ustring,
    set_body,
)
from fastzk.client.protocol import ReadBuffer
from fastzk.load.cpu import CpuWindow
from fastzk.load.latency import Interval, Mark, Recorder, now_us
from fastzk.load.workload import (
    OpSpec,
    check_value,
    child_names,
    create_parent,
    delete_parent,
    key_path,
    numbered,
    owner_of,
    parse_check_value,
    plain_value,
)

#: Upper bound of one session's pre-encoded schedule blob (bytes) and of its length.
MAX_BLOB = 4 * 1024 * 1024
MAX_SCHEDULE = 8192
#: Length of the timeline intervals (s): the live line and the latency-over-time plot.
INTERVAL = 0.5
#: Open loop: the pacer thread wakes the loop at most this often (s).
PACER_MIN_TICK = 0.0002
#: Violation messages kept per process (the count is exact).
MAX_MESSAGES = 20

K_GET, K_SET, K_EXISTS, K_CHILDREN, K_CREATE, K_DELETE, K_MULTI, K_INIT = range(8)
KIND_NAMES = ("get", "set", "exists", "children", "create", "delete", "multi", "init")


class Checker:
    """Violations found by --check (and the count of replies verified)."""

    def __init__(self) -> None:
        self.checked = 0
        self.violations = 0
        self.messages: list[str] = []

    def fail(self, message: str) -> None:
        self.violations += 1
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)


@dataclass
class PartResult:
    """What one process measured (picklable; the parent merges the parts)."""

    elapsed: float
    errors: dict[int, int]
    errors_total: dict[int, int]
    histogram: str
    service: str
    kinds: dict[str, str]
    request_kinds: list[str]
    timeline: list[Interval]
    client_cpu: float
    server_cpu: float | None
    machine_cpu: float | None
    checked: int = 0
    violations: int = 0
    messages: list[str] = field(default_factory=list)
    failure: str | None = None
    #: workload-specific facts for the parent (created node counts, preset tallies)
    extra: dict[str, Any] = field(default_factory=dict)


# --- sessions ------------------------------------------------------------------------------------


class SessionBase(asyncio.BufferedProtocol):
    """Connection, handshake, pacing and error counting shared by both session kinds."""

    def __init__(self, gidx: int, label: str) -> None:
        self.gidx = gidx  # global session index (over all processes)
        self.label = label  # latency kind of the fast path
        self.rb = ReadBuffer()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[bytes] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.session_id = 0
        self.hot = False  # between the handshake and close_session
        self.running = False  # may send new requests
        self.recording = False
        self.inflight = 0
        self.sent_count = 0  # requests sent since start(): open-loop index j
        self.recorded = 0  # replies recorded in the window
        self.quota: int | None = None  # --ops: replies to record in the window
        self.max_inflight = 1 << 30
        self.depth = 1
        # open loop: request j is intended at base + j * step (µs); step 0 = closed loop
        self.base = 0.0
        self.step = 0.0
        #: reply batches recorded since the last take(), per kind (Recorder.add_marks)
        self.marks: dict[str, list[Mark]] = {}
        self.errors: Counter[int] = Counter()
        self.errors_total: Counter[int] = Counter()
        self.failure: str | None = None
        self.xid_next = 1

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.running or self.inflight:
            self._fail(f"connection lost during the run: {exc or 'closed by server'}")
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("closed during handshake"))
        for fut in (self.drained, self.lost):
            if not fut.done():
                fut.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.rb.get_buffer(sizehint)

    def _read_handshake(self) -> None:
        rb = self.rb
        if rb.end - rb.start < 4:
            return
        (flen,) = INT.unpack_from(rb.data, rb.start)
        if rb.end - rb.start - 4 < flen:
            return
        body = bytes(rb.data[rb.start + 4 : rb.start + 4 + flen])
        rb.consumed(rb.start + 4 + flen)
        self.hot = True
        self.handshake.set_result(body)

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = f"session {self.gidx}: {why}"
        self.running = False
        if not self.drained.done():
            self.drained.set_result(None)
        if self.transport is not None:
            self.transport.abort()

    # pacing
    def allowed(self) -> int:
        """How many requests may be sent now (quota, in-flight cap, open-loop schedule)."""
        if not self.running:
            return 0
        n = self.max_inflight - self.inflight
        if self.step:
            due = int((now_us() - self.base) / self.step) + 1 - self.sent_count
            n = min(n, due)
        else:
            n = min(n, self.depth - self.inflight)
        if self.quota is not None and self.recording:
            n = min(n, self.quota - self.recorded - self.inflight)
        return n

    def pump(self) -> None:
        """Send what is allowed now (open loop: called by the pacer and after replies)."""
        n = self.allowed()
        if n > 0:
            self.emit(n)

    def after_replies(self, n: int) -> None:
        """Bookkeeping after *n* replies: next sends, end of quota, drain."""
        self.inflight -= n
        if self.recording:
            self.recorded += n
        if self.running:
            if self.quota is not None and self.recording and self.recorded >= self.quota:
                self.running = False
            else:
                self.pump()
        if not self.running and not self.inflight and not self.drained.done():
            self.drained.set_result(None)

    def start(self, base_us: float = 0.0, step_us: float = 0.0) -> None:
        """Begin sending: closed loop fills the pipeline, open loop waits for the pacer."""
        self.running = True
        self.base, self.step = base_us, step_us
        self.pump()

    def stop(self) -> None:
        """Send nothing more; ``drained`` completes when the last reply is in."""
        self.running = False
        if not self.inflight and not self.drained.done():
            self.drained.set_result(None)

    def take(self) -> dict[str, list[Mark]]:
        """Hand over the reply batches recorded since the last call."""
        marks, self.marks = self.marks, {}
        return marks

    def close_session(self) -> None:
        """closeSession (-11) with the next xid; the server replies and closes."""
        self.hot = False
        self.running = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(INT.pack(8) + INT.pack(self.xid_next) + INT.pack(Op.CLOSE))

    def emit(self, n: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class FastSession(SessionBase):
    """Pre-encoded cyclic schedule, header-only parsing (the throughput path).

    Each session has L complete request frames (xids 1..L, then again from 1) in one
    ``bytes`` blob; sending k requests is one slice and one ``transport.write``. Reusing
    xids is legal (the server echoes them, spec 3.3) because fewer than L are outstanding;
    replies are still matched against the expected xid. One clock read per received batch,
    one per sent batch: latencies are settled per send batch, not per reply.
    """

    def __init__(self, gidx: int, label: str, frames: list[bytes]) -> None:
        super().__init__(gidx, label)
        self.length = len(frames)
        offsets = [0]
        for f in frames:
            offsets.append(offsets[-1] + len(f))
        self.offsets = offsets
        self.blob = b"".join(frames)
        self.view = memoryview(self.blob)
        self.tx_index = 0  # next schedule position to send
        self.rx_xid = 1  # xid of the oldest outstanding request
        #: send batches still (partly) unanswered: [timestamp µs, count, open-loop j or -1]
        self.sent: deque[list[int]] = deque()
        self.ok_replies = 0  # successful replies of the whole run (created-node counts)

    def buffer_updated(self, nbytes: int) -> None:
        rb = self.rb
        end = rb.end + nbytes
        rb.end = end
        if not self.hot:
            if not self.handshake.done():
                self._read_handshake()
            else:
                rb.consumed(end)
            return
        now = now_us()
        data = rb.data
        pos = rb.start
        unpack = REPLY_HEADER.unpack_from
        expect = self.rx_xid
        length = self.length
        n = 0
        bad = 0
        while end - pos >= REPLY_HEADER_SIZE:
            flen, xid, _zxid, err = unpack(data, pos)
            nxt = pos + 4 + flen
            if nxt > end:
                break
            pos = nxt
            if xid != expect:
                if xid < 0:  # ping reply or notification: not ours to match
                    continue
                self._fail(f"xid out of order: got {xid}, expected {expect}")
                return
            expect = expect + 1 if expect < length else 1
            n += 1
            if err:
                bad += 1
                self.errors_total[err] += 1
                if self.recording:
                    self.errors[err] += 1
        self.rx_xid = expect
        rb.consumed(pos)
        if n:
            self.ok_replies += n - bad
            if self.recording:
                marks = self.marks.get(self.label)
                if marks is None:
                    marks = self.marks[self.label] = []
                sent = self.sent
                left = n
                while left and sent:
                    batch = sent[0]
                    ts, count, j = batch
                    if count <= left:
                        sent.popleft()
                        left -= count
                    else:
                        batch[1] = count - left
                        if j >= 0:
                            batch[2] = j + left
                        count, left = left, 0
                    marks.append((now, ts, count, j))
            else:
                self._discard(n)
            self.after_replies(n)

    def _discard(self, n: int) -> None:
        sent = self.sent
        while n and sent:
            batch = sent[0]
            if batch[1] <= n:
                n -= batch[1]
                sent.popleft()
            else:
                batch[1] -= n
                if batch[2] >= 0:
                    batch[2] += n
                n = 0

    def emit(self, n: int) -> None:
        """Send the next *n* frames of the schedule in one write."""
        i = self.tx_index
        offsets = self.offsets
        length = self.length
        chunks: list[bytes | memoryview] = []
        left = n
        while left:
            take = min(left, length - i)
            chunks.append(self.view[offsets[i] : offsets[i + take]])
            i += take
            left -= take
            if i >= length:
                i = 0
        self.tx_index = i
        assert self.transport is not None
        self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        self.sent.append([now_us(), n, self.sent_count if self.step else -1])
        self.sent_count += n
        self.inflight += n
        if self.sent_count + length // 2 >= 0x7FFFFFFF:  # pragma: no cover - years of load
            self._fail("xid space exhausted")


def build_schedule(
    spec: OpSpec, gidx: int, *, root: str, keys: int, value_size: int, depth: int,
    seed: int, multi_size: int, run_tag: str,
) -> list[bytes]:
    """The request frames of one fast session, in send order, xid = position + 1.

    get/set/exists/children/mixed/multi pick keys at random (seeded per session, so repeated
    runs send the same requests). create-delete alternates create and delete over a few
    names private to the session (one connection's requests are applied in order, so every
    delete finds the node its create made, even with many pairs in flight). create:seq and
    create:eph-seq repeat one body: the server makes every name unique.
    """
    rng = random.Random(seed * 1_000_003 + gidx)
    value = plain_value(value_size)
    bodies: list[bytes] = []
    kind = spec.kind
    if kind == "create-delete":
        one = len(create_body(f"{root}/cd/s{gidx}-0000", value, OPEN_ACL_UNSAFE, 0))
        pairs = max(depth, min(MAX_SCHEDULE // 2, MAX_BLOB // (2 * one + 64)))
        slots = max(depth, 64)
        for i in range(pairs):
            path = f"{root}/cd/s{gidx}-{i % slots:04d}"
            bodies.append(INT.pack(Op.CREATE) + create_body(path, value, OPEN_ACL_UNSAFE, 0))
            bodies.append(INT.pack(Op.DELETE) + delete_body(path, -1))
    elif kind == "create":
        parent = create_parent(root, gidx) if not run_tag else f"{root}/c/{run_tag}s{gidx}"
        body = INT.pack(Op.CREATE) + create_body(parent + "/n", value, OPEN_ACL_UNSAFE, spec.flags)
        bodies = [body] * max(2 * depth, 64)
    else:
        one = len(set_body(key_path(root, 0), value, -1)) * max(multi_size, 1) + 32
        length = max(2 * depth, min(MAX_SCHEDULE, MAX_BLOB // one))
        for _ in range(length):
            path = key_path(root, rng.randrange(keys))
            if kind == "exists":
                bodies.append(INT.pack(Op.EXISTS) + path_watch(path, False))
            elif kind == "children":
                bodies.append(INT.pack(Op.GET_CHILDREN) + path_watch(path, False))
            elif kind == "multi":
                ops = [MultiOp(Op.SET_DATA, set_body(path, value, -1))]
                for _ in range(multi_size - 1):
                    ops.append(
                        MultiOp(Op.SET_DATA, set_body(key_path(root, rng.randrange(keys)), value, -1))
                    )
                bodies.append(INT.pack(Op.MULTI) + multi_body(ops))
            elif spec.reads == 100 or (spec.reads and rng.randrange(100) < spec.reads):
                bodies.append(INT.pack(Op.GET_DATA) + path_watch(path, False))
            else:
                bodies.append(INT.pack(Op.SET_DATA) + set_body(path, value, -1))
    return [
        INT.pack(4 + len(body)) + INT.pack(xid) + body for xid, body in enumerate(bodies, start=1)
    ]


class _KeyModel:
    """What one session knows about the keys (see workload.py's module docstring)."""

    __slots__ = ("issued", "offset", "seen_counter", "seen_version", "seen_offset")

    def __init__(self) -> None:
        self.issued: dict[int, int] = {}  # own keys: counter of the last set sent
        self.offset: dict[int, int] = {}  # own keys: version - counter
        self.seen_counter: dict[int, int] = {}
        self.seen_version: dict[int, int] = {}
        self.seen_offset: dict[int, int] = {}


class ModelSession(SessionBase):
    """Encodes each request and checks each reply against a model (``--check``)."""

    def __init__(
        self,
        gidx: int,
        spec: OpSpec,
        *,
        root: str,
        keys: int,
        total_sessions: int,
        value_size: int,
        children: int,
        multi_size: int,
        seed: int,
        delete_pool: int,
        checker: Checker,
        run_tag: str,
        corrupt_every: int = 0,
    ) -> None:
        super().__init__(gidx, spec.kind)
        self.spec = spec
        self.root = root
        self.keys = keys
        self.total = total_sessions
        self.size = value_size
        self.children = child_names(children)
        self.multi_size = multi_size
        self.rng = random.Random(seed * 1_000_003 + gidx)
        self.checker = checker
        self.model = _KeyModel()
        self.owned = list(range(gidx, keys, total_sessions))
        self.kpath: dict[int, bytes] = {}
        self.pending: deque[tuple[Any, ...]] = deque()
        self.plain = plain_value(value_size)
        self.cparent = f"{root}/c/{run_tag}s{gidx}"
        self.dparent = delete_parent(root, gidx)
        self.created = 0  # creates sent (names n0..n{created-1} under cparent)
        self.last_seq = -1
        self.cd_slot = 0
        self.cd_phase = 0
        self.delete_next = 0
        self.delete_pool = delete_pool
        self.init_left = 0
        self.init_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: fault injection for the negative test: corrupt every Nth value read before checking
        self.corrupt_every = corrupt_every
        self.reads_seen = 0

    # --- requests --------------------------------------------------------------------------

    def _path(self, key: int) -> bytes:
        p = self.kpath.get(key)
        if p is None:
            raw = key_path(self.root, key).encode()
            p = self.kpath[key] = INT.pack(len(raw)) + raw
        return p

    def _frame(self, op: int, body: bytes) -> bytes:
        xid = self.xid_next
        self.xid_next = xid % 0x7FFFFFFF + 1
        return INT.pack(8 + len(body)) + INT.pack(xid) + INT.pack(op) + body

    def _next(self, now: int, j: int) -> bytes:
        """Encode one request of the workload and queue its expectation."""
        spec = self.spec
        kind = spec.kind
        rng = self.rng
        model = self.model
        if kind in ("get", "mixed", "set"):
            if kind == "set" or (kind == "mixed" and rng.randrange(100) >= spec.reads):
                kind = "set"
            else:
                kind = "get"
        if kind == "get" or kind == "exists":
            key = rng.randrange(self.keys)
            expect = model.issued.get(key)
            op = Op.GET_DATA if kind == "get" else Op.EXISTS
            self.pending.append((K_GET if kind == "get" else K_EXISTS, key, expect, now, j))
            return self._frame(op, self._path(key) + b"\x00")
        if kind == "set":
            key = self.owned[rng.randrange(len(self.owned))]
            counter = model.issued[key] + 1
            model.issued[key] = counter
            value = check_value(self.gidx, counter, self.size)
            self.pending.append((K_SET, key, counter, now, j))
            return self._frame(
                Op.SET_DATA, self._path(key) + INT.pack(len(value)) + value + INT.pack(-1)
            )
        if kind == "children":
            key = rng.randrange(self.keys)
            self.pending.append((K_CHILDREN, key, None, now, j))
            return self._frame(Op.GET_CHILDREN, self._path(key) + b"\x00")
        if kind == "multi":
            ops = []
            expect = []
            for _ in range(self.multi_size):
                key = self.owned[rng.randrange(len(self.owned))]
                counter = model.issued[key] + 1
                model.issued[key] = counter
                value = check_value(self.gidx, counter, self.size)
                ops.append(MultiOp(Op.SET_DATA, set_body(key_path(self.root, key), value, -1)))
                expect.append((key, counter))
            self.pending.append((K_MULTI, None, expect, now, j))
            return self._frame(Op.MULTI, multi_body(ops))
        if kind == "create":
            if spec.sequential:
                path = self.cparent + "/n"
            else:
                path = numbered(self.cparent, self.created)
            self.created += 1
            self.pending.append((K_CREATE, None, path, now, j))
            return self._frame(Op.CREATE, create_body(path, self.plain, OPEN_ACL_UNSAFE, spec.flags))
        if kind == "delete":
            path = numbered(self.dparent, self.delete_next)
            self.delete_next += 1
            self.pending.append((K_DELETE, None, path, now, j))
            return self._frame(Op.DELETE, delete_body(path, -1))
        # create-delete
        path = f"{self.root}/cd/s{self.gidx}-{self.cd_slot:04d}"
        if self.cd_phase == 0:
            self.cd_phase = 1
            self.pending.append((K_CREATE, None, path, now, j))
            return self._frame(Op.CREATE, create_body(path, self.plain, OPEN_ACL_UNSAFE, 0))
        self.cd_phase = 0
        self.cd_slot = (self.cd_slot + 1) % max(self.depth, 64)
        self.pending.append((K_DELETE, None, path, now, j))
        return self._frame(Op.DELETE, delete_body(path, -1))

    def allowed(self) -> int:
        n = super().allowed()
        if self.spec.kind == "delete":
            n = min(n, self.delete_pool - self.delete_next)
            if self.running and self.delete_next >= self.delete_pool:
                self.stop()  # the pool is used up: this session is done
        return n

    def _fail(self, why: str) -> None:
        super()._fail(why)
        if not self.init_done.done():
            self.init_done.set_result(None)

    def emit(self, n: int) -> None:
        now = now_us()
        j = self.sent_count if self.step else -1
        frames = []
        for i in range(n):
            frames.append(self._next(now, j + i if j >= 0 else -1))
        assert self.transport is not None
        self.transport.write(b"".join(frames))
        self.sent_count += n
        self.inflight += n

    def start_init(self) -> None:
        """Read every own key once to learn its counter and version (before the run)."""
        if not self.spec.writes_keys or not self.owned:
            self.init_done.set_result(None)
            return
        frames = []
        now = now_us()
        for key in self.owned:
            self.pending.append((K_INIT, key, None, now, -1))
            frames.append(self._frame(Op.GET_DATA, self._path(key) + b"\x00"))
        self.init_left = len(self.owned)
        assert self.transport is not None
        self.transport.write(b"".join(frames))

    # --- replies ---------------------------------------------------------------------------

    def buffer_updated(self, nbytes: int) -> None:
        rb = self.rb
        end = rb.end + nbytes
        rb.end = end
        if not self.hot:
            if not self.handshake.done():
                self._read_handshake()
            else:
                rb.consumed(end)
            return
        now = now_us()
        data = rb.data
        pos = rb.start
        unpack = REPLY_HEADER.unpack_from
        pending = self.pending
        recording = self.recording
        marks = self.marks
        n = 0
        while end - pos >= REPLY_HEADER_SIZE:
            flen, xid, _zxid, err = unpack(data, pos)
            nxt = pos + 4 + flen
            if nxt > end:
                break
            body = bytes(data[pos + 20 : nxt])
            pos = nxt
            if xid < 0:
                continue
            if not pending:
                self._fail(f"reply xid {xid} with no request outstanding")
                return
            rec = pending.popleft()
            kind, key, expect, t_sent, j = rec
            if kind == K_INIT:
                self._init_reply(key, err, body)
                continue
            n += 1
            if err:
                self.errors_total[err] += 1
                if recording:
                    self.errors[err] += 1
            else:
                try:
                    self._verify(kind, key, expect, body)
                except Exception as e:  # noqa: BLE001 - an undecodable reply is a violation
                    self.checker.fail(f"session {self.gidx}: cannot decode {KIND_NAMES[kind]} "
                                      f"reply: {e!r}")
            if recording:
                name = KIND_NAMES[kind]
                lst = marks.get(name)
                if lst is None:
                    lst = marks[name] = []
                lst.append((now, t_sent, 1, j))
        rb.consumed(pos)
        if n:
            self.after_replies(n)

    def _init_reply(self, key: int, err: int, body: bytes) -> None:
        if err:
            self._fail(f"cannot read own key {key}: error {err}")
            return
        dlen = INT.unpack_from(body, 0)[0]
        value = body[4 : 4 + dlen] if dlen >= 0 else None
        version = STAT.unpack_from(body, 4 + max(dlen, 0))[4]
        parsed = parse_check_value(value, self.size)
        if parsed is None or parsed[0] != owner_of(key, self.total):
            self._fail(
                f"key {key_path(self.root, key)} does not hold a --check value of its owner "
                "(run with the set-up, without --no-setup, and the same --sessions/--value-size)"
            )
            return
        self.model.issued[key] = parsed[1]
        self.model.offset[key] = version - parsed[1]
        self.init_left -= 1
        if self.init_left == 0 and not self.init_done.done():
            self.init_done.set_result(None)

    def _verify(self, kind: int, key: Any, expect: Any, body: bytes) -> None:
        checker = self.checker
        checker.checked += 1
        where = f"session {self.gidx}"
        if kind == K_GET:
            dlen = INT.unpack_from(body, 0)[0]
            value = body[4 : 4 + dlen] if dlen >= 0 else None
            stat = STAT.unpack_from(body, 4 + max(dlen, 0))
            self.reads_seen += 1
            if self.corrupt_every and self.reads_seen % self.corrupt_every == 0 and value:
                value = b"X" + value[1:]  # fault injection: the checker must notice
            self._check_key(key, value, stat[4], stat[8], expect, where)
        elif kind == K_EXISTS:
            stat = STAT.unpack_from(body, 0)
            self._check_key(key, None, stat[4], stat[8], expect, where)
        elif kind == K_SET:
            version = STAT.unpack_from(body, 0)[4]
            want = self.model.offset[key] + expect
            if version != want:
                checker.fail(
                    f"{where}: setData {key_path(self.root, key)} -> version {version}, "
                    f"expected {want} (another writer on a key this session owns?)"
                )
            self._saw(key, expect, version, where)
        elif kind == K_MULTI:
            results = decode_multi(body)
            if len(results) != len(expect):
                checker.fail(f"{where}: multi returned {len(results)} results for {len(expect)} ops")
                return
            for (mkey, counter), res in zip(expect, results, strict=True):
                if isinstance(res, ZKError) or res is None or isinstance(res, str):
                    checker.fail(f"{where}: multi setData {mkey} result {res!r}")
                    continue
                want = self.model.offset[mkey] + counter
                if res.version != want:
                    checker.fail(
                        f"{where}: multi setData {key_path(self.root, mkey)} -> version "
                        f"{res.version}, expected {want}"
                    )
                self._saw(mkey, counter, res.version, where)
        elif kind == K_CHILDREN:
            names, _ = read_string_vector(body, 0)
            if sorted(names) != self.children:
                checker.fail(
                    f"{where}: getChildren {key_path(self.root, key)} = {sorted(names)[:5]}..., "
                    f"expected {len(self.children)} children c000.."
                )
        elif kind == K_CREATE:
            path, _ = read_ustring(body, 0)
            if self.spec.sequential:
                prefix = expect
                suffix = path[len(prefix) :]
                if not path.startswith(prefix) or len(suffix) != 10 or not suffix.isdigit():
                    checker.fail(f"{where}: sequential create {prefix} returned {path!r}")
                    return
                seq = int(suffix)
                if seq <= self.last_seq:
                    checker.fail(
                        f"{where}: sequential name {path} not after the previous "
                        f"({self.last_seq:010d}): names must be unique and increasing"
                    )
                self.last_seq = seq
            elif path != expect:
                checker.fail(f"{where}: create {expect} returned {path!r}")
        # K_DELETE: success is all there is to check

    def _check_key(
        self, key: int, value: bytes | None, version: int, dlen: int, expect: int | None, where: str
    ) -> None:
        """A read of key (value None for exists): see workload.py for the rules."""
        checker = self.checker
        path = key_path(self.root, key)
        if dlen != self.size:
            checker.fail(f"{where}: {path} has {dlen} bytes, expected {self.size}")
            return
        if value is not None:
            parsed = parse_check_value(value, self.size)
            if parsed is None:
                checker.fail(f"{where}: {path} holds {value[:24]!r}..., not a value of the load")
                return
            writer, counter = parsed
            if writer != owner_of(key, self.total):
                checker.fail(f"{where}: {path} written by session {writer}, owner is "
                             f"{owner_of(key, self.total)}")
                return
        else:
            counter = None
        if expect is not None:  # own key: exact value and version
            want = self.model.offset[key] + expect
            if counter is not None and counter != expect:
                checker.fail(
                    f"{where}: read {path} -> counter {counter}, expected {expect} "
                    "(this session's last write before the read)"
                )
            if version != want:
                checker.fail(f"{where}: read {path} -> version {version}, expected {want}")
            self._saw(key, expect, version, where)
            return
        self._saw(key, counter, version, where)

    def _saw(self, key: int, counter: int | None, version: int, where: str) -> None:
        """Monotonic reads: versions and counters of a key never go backwards for a session,
        and version - counter is constant (only the owner writes)."""
        model = self.model
        path = key_path(self.root, key)
        prev_v = model.seen_version.get(key, -1)
        if version < prev_v:
            self.checker.fail(f"{where}: {path} version went backwards: {prev_v} -> {version}")
        else:
            model.seen_version[key] = version
        if counter is None:
            return
        prev_c = model.seen_counter.get(key, -1)
        if counter < prev_c:
            self.checker.fail(f"{where}: {path} counter went backwards: {prev_c} -> {counter}")
        else:
            model.seen_counter[key] = counter
        off = version - counter
        known = model.seen_offset.get(key)
        if known is None:
            model.seen_offset[key] = off
        elif off != known:
            self.checker.fail(
                f"{where}: {path} version {version} with counter {counter}: version-counter "
                f"was {known} before (a write not made by the owner?)"
            )


# --- the pacer -------------------------------------------------------------------------------------


class Pacer:
    """Open loop: a thread that wakes the event loop when requests are due.

    Event-loop timers have millisecond resolution, too coarse for sub-millisecond
    latencies. The thread sleeps (with the kernel's tens-of-µs precision) until the next
    intended send time of the process's schedule (request k at ``t0 + k / rate``), but
    wakes the loop at most every PACER_MIN_TICK; the loop then pumps every session. What
    lateness remains is measured: latency counts from the intended time.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sessions: Sequence[SessionBase],
                 rate: float, t0_us: float) -> None:
        self.loop = loop
        self.sessions = list(sessions)
        self.rate = rate
        self.t0 = t0_us / 1e6  # perf_counter seconds
        self.stopping = threading.Event()
        self.pending = False
        self.thread = threading.Thread(target=self._run, name="fastzk-pacer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2)

    def _pump(self) -> None:
        self.pending = False
        for s in self.sessions:
            if s.running:
                s.pump()

    def _run(self) -> None:
        rate, t0 = self.rate, self.t0
        wake = t0
        while not self.stopping.is_set():
            delay = wake - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            now = time.perf_counter()
            if not self.pending:
                self.pending = True
                try:
                    self.loop.call_soon_threadsafe(self._pump)
                except RuntimeError:  # loop closed
                    return
            due = int((now - t0) * rate) + 1  # requests intended up to now
            wake = max(t0 + due / rate, now + PACER_MIN_TICK)


# --- opening sessions ---------------------------------------------------------------------------


async def open_session(
    host: str, port: int, session: SessionBase, timeout_ms: int, connect_timeout: float,
    tls: ssl.SSLContext | None = None,
) -> SessionBase:
    """Connect *session* (a protocol instance; over TLS with `tls`) and run the handshake."""
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.create_connection(lambda: session, host, port, ssl=tls),
                           connect_timeout)
    assert session.transport is not None
    session.transport.write(connect_request(timeout_ms))
    try:
        body = await asyncio.wait_for(session.handshake, connect_timeout)
    except BaseException:
        session.transport.abort()
        raise
    resp = decode_connect_response(body)
    if resp.timeout_ms <= 0 or resp.session_id == 0:
        session.transport.abort()
        raise ConnectionError(f"session {session.gidx}: server refused the session")
    session.session_id = resp.session_id
    return session


ProgressFn = Callable[[Interval], None]
#: How often the window moves the sessions' latencies into the recorder (s): small steps,
#: so that no single step delays the loop noticeably.
COLLECT_EVERY = 0.1


async def measure_window(
    *,
    warmup: float,
    duration: float | None,
    limit: float,
    rec: Recorder,
    cpu: CpuWindow,
    begin: Callable[[], None],
    end: Callable[[], None],
    collect: Callable[[], None],
    errors_now: Callable[[], int],
    finished: asyncio.Future[Any] | None = None,
    progress: ProgressFn | None = None,
) -> float:
    """Warm-up, then the measured window in INTERVAL steps; returns its length (s).

    The window ends after *duration* seconds, or (``duration=None``) when *finished* is
    done, and in any case after *limit* seconds. *begin*/*end* switch recording on and off
    in the sessions; *collect* moves their latencies into *rec*.
    """
    if warmup > 0:
        if finished is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(finished), warmup)
        else:
            await asyncio.sleep(warmup)
    collect()  # nothing is recorded before begin(); this only empties buffers
    # No cyclic-GC pauses inside the window: a client pause would be charged to the server
    # (in open loop it delays sends). Garbage of a window is small; collected right after.
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    rec.recording = True
    rec.t0 = t0 = time.monotonic()
    begin()
    cpu.start()
    last_errors = errors_now()
    stop_at = t0 + (duration if duration is not None else limit)
    stop_at = min(stop_at, t0 + limit)
    next_tick = t0 + INTERVAL
    while True:
        now = time.monotonic()
        wait = min(next_tick, stop_at, now + COLLECT_EVERY) - now
        if wait > 0:
            if finished is not None and not finished.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(finished), wait)
            else:
                await asyncio.sleep(wait)
        now = time.monotonic()
        over = now >= stop_at or (finished is not None and finished.done())
        collect()
        if now >= next_tick or over:
            errs = errors_now()
            item = rec.close_interval(errs - last_errors)
            last_errors = errs
            if progress is not None:
                progress(item)
            next_tick += INTERVAL
        if over:
            break
    end()
    elapsed = time.monotonic() - t0
    cpu.stop()
    rec.recording = False
    if gc_was_enabled:
        gc.enable()
    collect()
    return elapsed
