"""Closed-loop load generator for ZooKeeper-protocol servers (the seed of ``fastzk load``).

Model: N sessions, each its own TCP connection, each keeping exactly D requests in flight.
Every reply immediately releases one new request (closed loop), so the measured rate is what
the server can sustain at that concurrency and the latencies are service times under that
load (a closed loop cannot see coordinated omission; use a rate-limited open loop for that).

Why it is built this way -- the tool must cost far less CPU than the server it measures,
because on a 2-core machine client and server share the cores:

* **Pre-encoded frames.** Each session has a cyclic schedule of L complete request frames
  (xids 1..L, then again from 1) concatenated into one ``bytes`` blob. Sending k requests is
  one slice of that blob and one ``transport.write``: no per-request encoding. Reusing xids is
  legal (the server echoes them opaquely, spec 3.3) because at most D < L are outstanding;
  replies are still checked against the expected xid, so an out-of-order reply is caught.
* **Header-only parsing.** Replies are read by a BufferedProtocol into a reusable buffer;
  every complete frame in a read is handled in one tight loop that unpacks just the
  20-byte length+ReplyHeader and skips the body.
* **Batched timestamps.** One clock read per received batch and one per sent batch; the
  per-reply work is a deque pop and a list append. Latencies (µs) are folded into an HDR
  histogram twice a second through a ``Counter`` (few distinct values), so the ~1 µs
  ``record_value`` cost is paid per distinct value, not per request.
* **Event driven, one task per session.** After the handshake a session needs no task
  wake-ups: sends happen inside ``buffer_updated``. The per-session coroutine only sets up,
  waits for the end and closes the session.

Optional multi-process mode (``processes > 1``) splits the sessions over spawned workers that
start together (a Barrier) and merge their encoded histograms; the default on a 2-core box is
one process. CPU time of the load process, of the server process (``server_pid``, from
/proc/<pid>/stat) and of the whole machine (/proc/stat) is sampled over the measured window,
so a report can show whether the client, the server or a neighbour was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from fastzk.client.codec import (
    INT,
    NO_NODE,
    NODE_EXISTS,
    NOT_EMPTY,
    OPEN_ACL_UNSAFE,
    REPLY_HEADER,
    REPLY_HEADER_SIZE,
    Op,
    ZKError,
    connect_request,
    create_body,
    decode_connect_response,
    delete_body,
    error_name,
    path_watch,
    set_body,
)
from fastzk.client.protocol import ReadBuffer, ZKClient

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

__all__ = [
    "LoadConfig",
    "LoadResult",
    "add_arguments",
    "parse_op",
    "run_from_args",
    "run_load",
    "run_load_async",
]

#: HDR histogram range in microseconds: 1 µs .. 60 s, 3 significant digits.
HIST_LOW, HIST_HIGH, HIST_DIGITS = 1, 60_000_000, 3
#: Upper bound of one session's pre-encoded schedule blob (bytes) and of its length.
MAX_BLOB = 4 * 1024 * 1024
MAX_SCHEDULE = 8192
#: How long the end-of-run drain and the closing handshake may take, at most.
DRAIN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
#: Fold latencies into the histogram this often (bounds memory on long runs).
FLUSH_INTERVAL = 0.5

OPS = ("get", "set", "create-delete", "mixed:R")


def parse_op(op: str) -> tuple[str, int]:
    """``get`` | ``set`` | ``create-delete`` | ``mixed:R`` (R% getData, rest setData).

    Returns (kind, read percent); get is mixed:100 and set is mixed:0 underneath.
    """
    op = op.strip().lower()
    if op == "get":
        return "get", 100
    if op == "set":
        return "set", 0
    if op in ("create-delete", "createdelete", "cd"):
        return "create-delete", 0
    if op.startswith("mixed"):
        _, _, pct = op.partition(":")
        reads = int(pct or 90)
        if not 0 <= reads <= 100:
            raise ValueError(f"mixed read percentage must be 0..100, got {reads}")
        return "mixed", reads
    raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")


@dataclass
class LoadConfig:
    """What to run. Defaults are the project's reference scenario (8 sessions x 32)."""

    host: str = "127.0.0.1"
    port: int = 2181
    sessions: int = 8
    depth: int = 32
    op: str = "get"
    value_size: int = 100
    keys: int = 1000
    duration: float = 10.0
    warmup: float = 2.0
    processes: int = 1
    root: str = "/fastzk-load"
    session_timeout_ms: int = 30_000
    seed: int = 1
    #: PID of the server process on this machine, to sample its CPU time (optional).
    server_pid: int | None = None
    #: Create the key space before the run (idempotent) / delete it afterwards.
    setup: bool = True
    cleanup: bool = True
    connect_timeout: float = 10.0

    def validate(self) -> None:
        """Reject nonsense early, before any connection is made."""
        parse_op(self.op)
        if self.sessions < 1 or self.depth < 1 or self.keys < 1 or self.processes < 1:
            raise ValueError("sessions, depth, keys and processes must be >= 1")
        if self.duration <= 0 or self.warmup < 0 or self.value_size < 0:
            raise ValueError("duration must be > 0, warmup and value size >= 0")
        if not self.root.startswith("/") or self.root == "/" or self.root.endswith("/"):
            raise ValueError(f"root must be an absolute znode path other than /, got {self.root!r}")


@dataclass
class LoadResult:
    """Outcome of one run. Latencies in microseconds; CPU in percent of one core."""

    config: dict[str, Any]
    ops: int  # replies received in the measured window (errors included)
    elapsed: float  # measured window, seconds
    ops_per_sec: float  # successful replies per second
    latency_us: dict[str, float]  # p50, p90, p99, p99.9, max, mean
    errors: dict[str, int]  # measured window, "NAME(code)" -> count
    errors_total: dict[str, int]  # whole run including warm-up and drain
    client_cpu: float | None = None
    server_cpu: float | None = None
    machine_cpu: float | None = None  # all processes on the machine
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    histogram: str = ""  # HDR histogram, encoded (base64), for merging runs

    @property
    def other_cpu(self) -> float | None:
        """CPU used by neither the load processes nor the server: noise from neighbours."""
        if self.machine_cpu is None or self.client_cpu is None:
            return None
        return round(max(self.machine_cpu - self.client_cpu - (self.server_cpu or 0.0), 0.0), 1)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (with the derived other_cpu)."""
        out = asdict(self)
        out["other_cpu"] = self.other_cpu
        return out


def new_histogram() -> HdrHistogram:
    """A latency histogram with the range every run and merge uses.

    hdrhistogram is imported here, not at module level, so that importing this module
    (``add_arguments`` for the CLI) costs nothing for the other ``fastzk`` commands.
    """
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(HIST_LOW, HIST_HIGH, HIST_DIGITS)


def histogram_summary(hist: HdrHistogram) -> dict[str, float]:
    """The percentiles the reports quote (µs)."""
    if hist.get_total_count() == 0:
        return {k: 0.0 for k in ("p50", "p90", "p99", "p99.9", "max", "mean")}
    return {
        "p50": float(hist.get_value_at_percentile(50)),
        "p90": float(hist.get_value_at_percentile(90)),
        "p99": float(hist.get_value_at_percentile(99)),
        "p99.9": float(hist.get_value_at_percentile(99.9)),
        "max": float(hist.get_max_value()),
        "mean": round(float(hist.get_mean_value()), 1),
    }


def merge_histograms(encoded: Sequence[str]) -> HdrHistogram:
    """Decode and add encoded histograms (from workers or repeated runs)."""
    hist = new_histogram()
    for item in encoded:
        if item:
            hist.decode_and_add(item.encode("ascii") if isinstance(item, str) else item)
    return hist


# --- CPU accounting ---------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime+stime of *pid* in seconds (all its threads), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _machine_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores; idle and iowait excluded)."""
    try:
        with open("/proc/stat", "rb") as f:
            parts = f.readline().split()
    except OSError:
        return None
    values = [int(v) for v in parts[1:]]
    busy = sum(values[:8]) - values[3] - values[4]  # up to steal; minus idle, iowait
    return busy / _CLK_TCK


class _CpuWindow:
    """Samples own/server/machine CPU at the start and end of the measured window."""

    def __init__(self, server_pid: int | None, machine: bool) -> None:
        self.server_pid = server_pid
        self.machine = machine
        self.t0 = self.own0 = 0.0
        self.srv0: float | None = None
        self.mach0: float | None = None
        self.result: tuple[float, float | None, float | None] = (0.0, None, None)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.own0 = time.process_time()
        self.srv0 = _proc_cpu_seconds(self.server_pid) if self.server_pid else None
        self.mach0 = _machine_busy_seconds() if self.machine else None

    def stop(self) -> None:
        wall = max(time.monotonic() - self.t0, 1e-9)
        own = (time.process_time() - self.own0) / wall * 100
        srv = None
        if self.server_pid and self.srv0 is not None:
            now = _proc_cpu_seconds(self.server_pid)
            srv = None if now is None else (now - self.srv0) / wall * 100
        mach = None
        if self.mach0 is not None:
            now_m = _machine_busy_seconds()
            mach = None if now_m is None else (now_m - self.mach0) / wall * 100
        self.result = (own, srv, mach)


# --- workload: the key space and the per-session schedules ------------------------------------


def key_path(cfg: LoadConfig, index: int) -> str:
    """Path of key *index* of the shared key space."""
    return f"{cfg.root}/k{index:07d}"


def value_bytes(cfg: LoadConfig) -> bytes:
    """The value written by setup and by setData (fixed, so reads return a known size)."""
    return (b"fastzk-load-" * (cfg.value_size // 12 + 1))[: cfg.value_size]


def build_schedule(cfg: LoadConfig, session_index: int) -> list[bytes]:
    """The request frames of one session, in the order they are sent, xid = position + 1.

    get/set/mixed pick keys at random (seeded per session, so repeated runs send the same
    requests). create-delete alternates create and delete over a few names private to the
    session; the server applies one connection's requests in order, so every delete
    finds the node its create made, even with many pairs in flight.
    """
    kind, reads = parse_op(cfg.op)
    rng = random.Random(cfg.seed * 1_000_003 + session_index)
    value = value_bytes(cfg)
    bodies: list[bytes] = []
    if kind == "create-delete":
        one = len(create_body(f"{cfg.root}/cd/s{session_index}-0000", value, OPEN_ACL_UNSAFE, 0))
        pairs = max(cfg.depth, min(MAX_SCHEDULE // 2, MAX_BLOB // (2 * one + 64)))
        slots = max(cfg.depth, 64)
        for i in range(pairs):
            path = f"{cfg.root}/cd/s{session_index}-{i % slots:04d}"
            bodies.append(INT.pack(Op.CREATE) + create_body(path, value, OPEN_ACL_UNSAFE, 0))
            bodies.append(INT.pack(Op.DELETE) + delete_body(path, -1))
    else:
        one = len(set_body(key_path(cfg, 0), value, -1)) + 16
        length = max(2 * cfg.depth, min(MAX_SCHEDULE, MAX_BLOB // one))
        for _ in range(length):
            path = key_path(cfg, rng.randrange(cfg.keys))
            if reads == 100 or (reads and rng.randrange(100) < reads):
                bodies.append(INT.pack(Op.GET_DATA) + path_watch(path, False))
            else:
                bodies.append(INT.pack(Op.SET_DATA) + set_body(path, value, -1))
    return [
        INT.pack(4 + len(body)) + INT.pack(xid) + body for xid, body in enumerate(bodies, start=1)
    ]


async def prepare_keyspace(cfg: LoadConfig) -> None:
    """Create root, keys (value of value_size bytes) and the create-delete parent.

    Idempotent: existing keys are overwritten so that every get returns value_size bytes.
    Requests are pipelined in windows of 512 so setup of many keys stays quick.
    """
    client = await ZKClient.connect(
        cfg.host,
        cfg.port,
        session_timeout_ms=cfg.session_timeout_ms,
        connect_timeout=cfg.connect_timeout,
    )
    try:
        value = value_bytes(cfg)
        parts = cfg.root.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            with contextlib.suppress(ZKError):
                await client.create("/" + "/".join(parts[:i]), b"")
        kind, reads = parse_op(cfg.op)

        async def put(path: str) -> None:
            try:
                await client.create(path, value)
            except ZKError as e:
                if e.code != NODE_EXISTS:
                    raise
                await client.set(path, value)

        if kind != "create-delete":
            for lo in range(0, cfg.keys, 512):
                await asyncio.gather(
                    *(put(key_path(cfg, i)) for i in range(lo, min(lo + 512, cfg.keys)))
                )
        else:
            with contextlib.suppress(ZKError):
                await client.create(f"{cfg.root}/cd", b"")
    finally:
        await client.close()


async def cleanup_keyspace(cfg: LoadConfig) -> None:
    """Delete everything under root and root itself (best effort, pipelined)."""
    client = await ZKClient.connect(
        cfg.host,
        cfg.port,
        session_timeout_ms=cfg.session_timeout_ms,
        connect_timeout=cfg.connect_timeout,
    )

    async def remove(path: str) -> None:
        try:
            await client.delete(path)
        except ZKError as e:
            if e.code == NOT_EMPTY:
                await remove_tree(path)
            elif e.code != NO_NODE:
                raise

    async def remove_tree(path: str) -> None:
        try:
            children = await client.get_children(path)
        except ZKError as e:
            if e.code == NO_NODE:
                return
            raise
        for lo in range(0, len(children), 512):
            batch = children[lo : lo + 512]
            await asyncio.gather(*(remove(f"{path}/{c}") for c in batch))
        await remove(path)

    try:
        await remove_tree(cfg.root)
    finally:
        await client.close()


# --- one load session -------------------------------------------------------------------------


class LoadSession(asyncio.BufferedProtocol):
    """One connection of the load: handshake, then an event-driven closed loop.

    State kept per session is what the hot loop needs: the schedule blob and offsets,
    the next xid expected back, the send timestamps of outstanding requests (µs, FIFO),
    and the latencies recorded since the last histogram flush.
    """

    def __init__(self, frames: list[bytes], depth: int) -> None:
        self.depth = depth
        self.length = len(frames)
        offsets = [0]
        for f in frames:
            offsets.append(offsets[-1] + len(f))
        self.offsets = offsets
        self.blob = b"".join(frames)
        self.view = memoryview(self.blob)
        self.rb = ReadBuffer()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[bytes] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.session_id = 0
        self.tx_index = 0  # next schedule position to send
        self.rx_xid = 1  # xid of the oldest outstanding request
        #: send batches still (partly) unanswered, oldest first: [timestamp µs, count]
        self.sent: deque[list[int]] = deque()
        self.inflight = 0
        self.running = False
        self.recording = False
        #: (latency µs, count) pairs recorded since the last take_latencies()
        self.lat: list[tuple[int, int]] = []
        self.errors: Counter[int] = Counter()
        self.errors_total: Counter[int] = Counter()
        self.failure: str | None = None
        self.hot = False  # True between the handshake and close_session

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.running or self.inflight:
            self._fail(f"connection lost during the run: {exc or 'closed by server'}")
        for fut in (self.handshake, self.drained, self.lost):
            if not fut.done():
                if fut is self.handshake:
                    fut.set_exception(ConnectionError("closed during handshake"))
                else:
                    fut.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.rb.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        rb = self.rb
        end = rb.end + nbytes
        rb.end = end
        if not self.hot:  # handshake, or closing: nothing to measure
            if not self.handshake.done():
                self._read_handshake()
            else:
                rb.consumed(end)
            return
        now = time.perf_counter_ns() // 1000
        data = rb.data
        pos = rb.start
        unpack = REPLY_HEADER.unpack_from
        expect = self.rx_xid
        length = self.length
        recording = self.recording
        n = 0
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
                self.errors_total[err] += 1
                if recording:
                    self.errors[err] += 1
        self.rx_xid = expect
        rb.consumed(pos)
        if n:
            # Every reply of this read arrived at `now`; every request of a send batch left
            # at that batch's timestamp. So latencies are settled per batch, not per reply.
            sent = self.sent
            left = n
            while left and sent:
                batch = sent[0]
                ts, count = batch
                if count <= left:
                    sent.popleft()
                    left -= count
                else:
                    batch[1] = count - left
                    count, left = left, 0
                if recording:
                    self.lat.append((now - ts, count))
            self.inflight -= n
            if self.running:
                self.send(n)
            elif not self.inflight and not self.drained.done():
                self.drained.set_result(None)

    # sending
    def send(self, n: int) -> None:
        """Send the next *n* frames of the schedule in one write."""
        i = self.tx_index
        j = i + n
        offsets = self.offsets
        if j <= self.length:
            chunk: bytes | memoryview = self.view[offsets[i] : offsets[j]]
        else:
            j -= self.length
            chunk = self.view[offsets[i] :].tobytes() + self.view[: offsets[j]].tobytes()
        self.tx_index = j if j < self.length else 0
        now = time.perf_counter_ns() // 1000
        assert self.transport is not None
        self.transport.write(chunk)
        self.sent.append([now, n])
        self.inflight += n

    def start(self) -> None:
        """Fill the pipeline: D requests in flight from now on."""
        self.running = True
        self.send(self.depth)

    def stop(self) -> None:
        """Send nothing more; ``drained`` completes when the last reply is in."""
        self.running = False
        if not self.inflight and not self.drained.done():
            self.drained.set_result(None)

    def take_latencies(self) -> list[tuple[int, int]]:
        """Hand over the latencies recorded since the last call."""
        lat, self.lat = self.lat, []
        return lat

    def close_session(self) -> None:
        """closeSession (-11) with the next xid; the server replies and closes."""
        self.hot = False
        if self.transport is not None and not self.transport.is_closing():
            xid = self.rx_xid
            self.transport.write(INT.pack(8) + INT.pack(xid) + INT.pack(Op.CLOSE))

    # internals
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
            self.failure = why
        self.running = False
        if not self.drained.done():
            self.drained.set_result(None)
        if self.transport is not None:
            self.transport.abort()


async def _open_session(cfg: LoadConfig, index: int, frames: list[bytes]) -> LoadSession:
    loop = asyncio.get_running_loop()
    _, session = await asyncio.wait_for(
        loop.create_connection(lambda: LoadSession(frames, cfg.depth), cfg.host, cfg.port),
        cfg.connect_timeout,
    )
    assert session.transport is not None
    session.transport.write(connect_request(cfg.session_timeout_ms))
    try:
        body = await asyncio.wait_for(session.handshake, cfg.connect_timeout)
    except BaseException:
        session.transport.abort()
        raise
    resp = decode_connect_response(body)
    if resp.timeout_ms <= 0 or resp.session_id == 0:
        session.transport.abort()
        raise ConnectionError(f"session {index}: server refused the session")
    session.session_id = resp.session_id
    return session


def _fold(hist: HdrHistogram, latencies: list[tuple[int, int]]) -> None:
    """Add (latency µs, count) pairs to the histogram, one record per distinct value."""
    merged: dict[int, int] = {}
    get = merged.get
    for value, count in latencies:
        merged[value] = get(value, 0) + count
    for value, count in merged.items():
        hist.record_value(min(max(value, HIST_LOW), HIST_HIGH), count)


@dataclass
class _PartResult:
    """What one process measured (picklable, merged by the parent)."""

    ops: int
    elapsed: float
    errors: dict[int, int]
    errors_total: dict[int, int]
    histogram: str
    client_cpu: float
    server_cpu: float | None
    machine_cpu: float | None
    failure: str | None


async def _run_sessions(
    cfg: LoadConfig,
    session_indices: Sequence[int],
    measure_shared: bool,
    ready: Callable[[], Any] | None = None,
) -> _PartResult:
    """Open the sessions, run warm-up + measured window, drain, close. One event loop."""
    frames = {i: build_schedule(cfg, i) for i in session_indices}
    sessions: list[LoadSession] = []
    hist = new_histogram()
    cpu = _CpuWindow(cfg.server_pid if measure_shared else None, machine=measure_shared)
    try:
        sessions = list(
            await asyncio.gather(*(_open_session(cfg, i, frames[i]) for i in session_indices))
        )
        if ready is not None:
            await asyncio.get_running_loop().run_in_executor(None, ready)
        for s in sessions:
            s.start()

        async def flush_until(deadline: float) -> None:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                await asyncio.sleep(min(FLUSH_INTERVAL, left))
                for s in sessions:
                    _fold(hist, s.take_latencies())

        if cfg.warmup:
            await asyncio.sleep(cfg.warmup)
        for s in sessions:  # discard anything stray, then open the window
            s.take_latencies()
            s.recording = True
        t0 = time.monotonic()
        cpu.start()
        await flush_until(t0 + cfg.duration)
        for s in sessions:
            s.recording = False
            s.stop()
        elapsed = time.monotonic() - t0
        cpu.stop()
        for s in sessions:
            _fold(hist, s.take_latencies())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.drained for s in sessions)), DRAIN_TIMEOUT)
    finally:
        for s in sessions:
            s.stop()
            s.close_session()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.lost for s in sessions)), CLOSE_TIMEOUT)
        for s in sessions:
            if s.transport is not None:
                s.transport.abort()
    errors: Counter[int] = Counter()
    errors_total: Counter[int] = Counter()
    failure = None
    for s in sessions:
        errors.update(s.errors)
        errors_total.update(s.errors_total)
        failure = failure or s.failure
        if s.inflight and not failure:
            failure = f"{s.inflight} requests unanswered {DRAIN_TIMEOUT:.0f}s after the end"
    own, srv, mach = cpu.result
    return _PartResult(
        ops=hist.get_total_count(),
        elapsed=elapsed,
        errors=dict(errors),
        errors_total=dict(errors_total),
        histogram=hist.encode().decode("ascii"),
        client_cpu=own,
        server_cpu=srv,
        machine_cpu=mach,
        failure=failure,
    )


def _event_loop_runner() -> Callable[[Any], Any]:
    """uvloop when available (it is a project dependency), plain asyncio otherwise."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run


def _worker(
    cfg_dict: dict[str, Any],
    session_indices: list[int],
    measure_shared: bool,
    barrier: Any,
    results: Any,
) -> None:
    """Entry point of a spawned load process: run its share and queue the outcome."""
    cfg = LoadConfig(**cfg_dict)
    try:
        part = _event_loop_runner()(
            _run_sessions(cfg, session_indices, measure_shared, lambda: barrier.wait(60))
        )
        results.put(("ok", part))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        with contextlib.suppress(Exception):
            barrier.abort()
        results.put(("error", f"{type(e).__name__}: {e}"))


def _split(total: int, parts: int) -> list[list[int]]:
    return [list(range(total))[p::parts] for p in range(parts)]


def _combine(cfg: LoadConfig, parts: Sequence[_PartResult]) -> LoadResult:
    failures = [p.failure for p in parts if p.failure]
    if failures:
        raise RuntimeError("load run failed: " + "; ".join(failures))
    hist = merge_histograms([p.histogram for p in parts])
    errors: Counter[int] = Counter()
    errors_total: Counter[int] = Counter()
    for p in parts:
        errors.update(p.errors)
        errors_total.update(p.errors_total)
    elapsed = max(p.elapsed for p in parts)
    ops = hist.get_total_count()
    ok = ops - sum(errors.values())
    server = [p.server_cpu for p in parts if p.server_cpu is not None]
    machine = [p.machine_cpu for p in parts if p.machine_cpu is not None]
    return LoadResult(
        config=asdict(cfg),
        ops=ops,
        elapsed=round(elapsed, 4),
        ops_per_sec=round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        latency_us=histogram_summary(hist),
        errors={f"{error_name(c)}({c})": n for c, n in sorted(errors.items())},
        errors_total={f"{error_name(c)}({c})": n for c, n in sorted(errors_total.items())},
        client_cpu=round(sum(p.client_cpu for p in parts), 1),
        server_cpu=round(server[0], 1) if server else None,
        machine_cpu=round(machine[0], 1) if machine else None,
        histogram=hist.encode().decode("ascii"),
    )


async def run_load_async(cfg: LoadConfig) -> LoadResult:
    """Run one load in the current event loop (single process; ``processes`` is ignored)."""
    cfg.validate()
    if cfg.setup:
        await prepare_keyspace(cfg)
    try:
        part = await _run_sessions(cfg, list(range(cfg.sessions)), measure_shared=True)
    finally:
        if cfg.cleanup:
            await cleanup_keyspace(cfg)
    return _combine(cfg, [part])


def run_load(cfg: LoadConfig) -> LoadResult:
    """Run one load (blocking). With ``processes > 1`` the sessions are split over
    spawned workers that start together and whose histograms are merged."""
    cfg.validate()
    runner = _event_loop_runner()
    nproc = min(cfg.processes, cfg.sessions)
    if nproc <= 1:
        return runner(run_load_async(cfg))
    if cfg.setup:
        runner(prepare_keyspace(cfg))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(nproc)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(asdict(cfg), share, p == 0, barrier, results),
            name=f"fastzk-load-{p}",
            daemon=True,
        )
        for p, share in enumerate(_split(cfg.sessions, nproc))
    ]
    parts: list[_PartResult] = []
    errors: list[str] = []
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + cfg.warmup + cfg.duration + DRAIN_TIMEOUT + 90
        for _ in procs:
            left = max(deadline - time.monotonic(), 0.1)
            try:
                status, payload = results.get(timeout=left)
            except queue.Empty:
                raise RuntimeError("load workers did not report in time") from None
            if status == "ok":
                parts.append(payload)
            else:
                errors.append(payload)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        if cfg.cleanup:
            runner(cleanup_keyspace(cfg))
    if errors:
        raise RuntimeError("load worker failed: " + "; ".join(errors))
    return _combine(cfg, parts)


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fastzk load`` (the lead wires this into fastzk/cli.py)."""
    d = LoadConfig()
    parser.add_argument(
        "--server",
        default=f"{d.host}:{d.port}",
        help="host:port of the server (default %(default)s)",
    )
    parser.add_argument(
        "--sessions",
        "-c",
        type=int,
        default=d.sessions,
        help="sessions = connections (default %(default)s)",
    )
    parser.add_argument(
        "--depth",
        "-d",
        type=int,
        default=d.depth,
        help="requests in flight per session (default %(default)s)",
    )
    parser.add_argument(
        "--op",
        default=d.op,
        help="get | set | create-delete | mixed:R (R%% reads; default %(default)s)",
    )
    parser.add_argument(
        "--value-size", type=int, default=d.value_size, help="bytes per value (default %(default)s)"
    )
    parser.add_argument(
        "--keys", type=int, default=d.keys, help="distinct keys read/written (default %(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=d.duration, help="measured seconds (default %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=d.warmup,
        help="unmeasured seconds before (default %(default)s)",
    )
    parser.add_argument(
        "--processes",
        "-p",
        type=int,
        default=d.processes,
        help="load processes; sessions are split among them (default %(default)s)",
    )
    parser.add_argument(
        "--root", default=d.root, help="znode under which keys live (default %(default)s)"
    )
    parser.add_argument(
        "--session-timeout",
        type=int,
        default=d.session_timeout_ms,
        help="requested session timeout, ms (default %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=d.seed, help="workload seed (default %(default)s)"
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="PID of a local server process, to report its CPU usage",
    )
    parser.add_argument(
        "--no-setup", action="store_true", help="do not create the keys first (they must exist)"
    )
    parser.add_argument("--keep", action="store_true", help="do not delete the keys afterwards")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    """LoadConfig from parsed ``add_arguments`` options."""
    host, _, port = str(args.server).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--server must be host:port, got {args.server!r}")
    return LoadConfig(
        host=host.strip("[]"),
        port=int(port),
        sessions=args.sessions,
        depth=args.depth,
        op=args.op,
        value_size=args.value_size,
        keys=args.keys,
        duration=args.duration,
        warmup=args.warmup,
        processes=args.processes,
        root=args.root,
        session_timeout_ms=args.session_timeout,
        seed=args.seed,
        server_pid=args.server_pid,
        setup=not args.no_setup,
        cleanup=not args.keep,
    )


def _fmt_us(value: float) -> str:
    return f"{value / 1000:.3f}"


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def print_table(result: LoadResult, title: str = "fastzk load") -> None:
    """The final human-readable table (rich), one metric per row so it fits any terminal."""
    from rich.console import Console
    from rich.table import Table

    c = result.config
    lat = result.latency_us
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("server", f"{c['host']}:{c['port']}"),
        ("workload", f"{c['op']}, {c['value_size']} B values, {c['keys']} keys"),
        (
            "concurrency",
            f"{c['sessions']} sessions x {c['depth']} in flight"
            + (f", {c['processes']} processes" if c["processes"] > 1 else ""),
        ),
        ("measured", f"{result.elapsed:.2f} s after {c['warmup']:g} s warm-up"),
        ("throughput", f"{result.ops_per_sec:,.0f} ops/s"),
        ("replies", f"{result.ops:,}"),
    ]
    for name in ("p50", "p90", "p99", "p99.9", "max", "mean"):
        rows.append((f"latency {name}", f"{_fmt_us(lat[name])} ms"))
    rows.append(("errors (window)", _fmt_errors(result.errors)))
    rows.append(("errors (whole run)", _fmt_errors(result.errors_total)))
    rows.append(
        (
            "CPU load / server / other",
            " / ".join(
                _fmt_pct(v) for v in (result.client_cpu, result.server_cpu, result.other_cpu)
            )
            + f" (of one core; {result.cores} cores)",
        )
    )
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def _fmt_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "0"


def run_from_args(args: argparse.Namespace) -> int:
    """``fastzk load``: 0 on a clean run, 1 if any request failed, 2 if the run could not run."""
    try:
        cfg = config_from_args(args)
        result = run_load(cfg)
    except (OSError, ValueError, RuntimeError, TimeoutError, ZKError) as e:
        print(f"fastzk load: {type(e).__name__}: {e}", flush=True)
        return 2
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_table(result)
    return 1 if result.errors_total else 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m fastzk.client.load``) until the CLI is wired."""
    parser = argparse.ArgumentParser(prog="fastzk load", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
