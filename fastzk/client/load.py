"""`fastzk load`: load generator and correctness checker for ZooKeeper-protocol servers.

Model: N sessions (one TCP connection each, spread over the servers of the connect string),
each with up to D requests in flight, in one or several processes.

* **Closed loop** (default): every reply releases the next request; the rate is what the
  server sustains at that concurrency, latencies are service times under that load.
* **Open loop** (``--rate R``): requests are sent at a fixed total arrival rate whatever the
  server does; latency is measured from each request's *intended* send time, so a stall is
  charged to every request it delayed (no coordinated omission). The service time (from the
  actual send) is reported next to it.
* **Simple ops** (``--op``): get, set, exists, children, create[:seq|:eph|:eph-seq], delete,
  create-delete, multi and mixed:R (R % reads), over ``--keys`` keys of ``--value-size`` bytes;
  for a duration after a warm-up, or ``--ops N`` operations.
* **Presets** (``--preset``): kafka, lock, watch-fanout, session-churn: workloads modelled
  on real users, see ``presets.py``.
* **--history FILE**: a workload made to be checked for linearizability, recorded and
  checked (``history.py``).
* **--check**: every reply is verified (values carry their writer and a counter; see
  ``workload.py``), sequential names must be unique and increasing, watch events must arrive;
  violations make the exit status 1, like any error reply.

Why it is fast enough not to be the bottleneck: unchecked simple ops use pre-encoded frames
and parse only reply headers (``engine.FastSession``), latencies are folded into HDR
histograms in batches, and ``--processes`` spreads sessions over several processes. See the
README for the measured capacity of one process. The client codec is pure Python ``struct``
(``codec.py``); the server's Cython ``_core.WriteBuffer`` frames replies only, and keeping the
client independent of the server it measures means a shared codec bug cannot cancel out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import ssl
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fastzk.client.codec import (
    NO_NODE,
    NODE_EXISTS,
    NOT_EMPTY,
    ZKError,
    error_name,
)
from fastzk.client.engine import (
    INTERVAL,
    Checker,
    CpuWindow,
    FastSession,
    Interval,
    ModelSession,
    Pacer,
    PartResult,
    ProgressFn,
    Recorder,
    SessionBase,
    build_schedule,
    counts_summary,
    encode,
    histogram_summary,
    measure_window,
    merge_counts,
    merge_histograms,
    new_histogram,
    now_us,
    open_session,
)
from fastzk.client.protocol import ZKClient
from fastzk.client.workload import (
    CHECK_HEAD,
    PRESETS,
    SIMPLE_OPS,
    check_value,
    child_names,
    delete_parent,
    key_path,
    numbered,
    owner_of,
    parse_op_spec,
    plain_value,
)

__all__ = [
    "LoadConfig",
    "LoadResult",
    "add_arguments",
    "histogram_summary",
    "merge_histograms",
    "new_histogram",
    "parse_op",
    "run_from_args",
    "run_load",
    "run_load_async",
]

#: How long the end-of-run drain and the closing handshake may take, at most.
DRAIN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
#: Time limit of a run with --ops (or of a delete run), seconds.
OPS_TIME_LIMIT = 3600.0
#: Requests pipelined by the set-up and clean-up clients.
SETUP_WINDOW = 512

OPS = SIMPLE_OPS


def parse_op(op: str) -> tuple[str, int]:
    """(kind, read percent) of an ``--op``; get is mixed:100 and set mixed:0 underneath."""
    spec = parse_op_spec(op)
    return spec.kind, spec.reads


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
    #: TLS (the server's secureClientPort): CA file to verify it, and a client certificate
    #: and key for mutual TLS (empty: plaintext / no client certificate).
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    #: A connect string ``host:port[,host:port...]``; overrides host/port when set.
    servers: str = ""
    #: A workload preset (kafka, lock, watch-fanout, session-churn) instead of ``op``.
    preset: str | None = None
    #: Open loop: total arrival rate, requests/s (None: closed loop).
    rate: float | None = None
    #: Stop after this many operations (replies) instead of ``duration``.
    ops: int | None = None
    #: Verify every reply (see workload.py); violations fail the run.
    check: bool = False
    #: children op: children under each key; multi op: setData ops per multi.
    children: int = 10
    multi_size: int = 2
    #: Open loop: requests in flight per session at most (the rest wait, still timed).
    max_inflight: int = 10_000
    #: session-churn: percent of sessions that are abandoned to expire instead of closed.
    expire_pct: int = 10
    #: Test hook: corrupt every Nth value read before checking it (0: off).
    corrupt_every: int = 0
    #: Unique per run (names of created nodes); set automatically.
    run_tag: str = ""

    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) of every server sessions connect to (round-robin)."""
        if not self.servers:
            return [(self.host, self.port)]
        return parse_connect_string(self.servers)

    def validate(self) -> None:
        """Reject nonsense early, before any connection is made."""
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        else:
            spec = parse_op_spec(self.op)
            if self.check and spec.writes_keys and self.keys < self.sessions:
                raise ValueError(
                    "--check with writes needs --keys >= --sessions (each key has one owner)"
                )
        if self.sessions < 1 or self.depth < 1 or self.keys < 1 or self.processes < 1:
            raise ValueError("sessions, depth, keys and processes must be >= 1")
        if self.duration <= 0 or self.warmup < 0 or self.value_size < 0:
            raise ValueError("duration must be > 0, warmup and value size >= 0")
        if self.check and self.value_size < CHECK_HEAD:
            raise ValueError(f"--check needs --value-size >= {CHECK_HEAD} (values carry a tag)")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("--rate must be > 0")
        if self.ops is not None and self.ops < 1:
            raise ValueError("--ops must be >= 1")
        if not self.root.startswith("/") or self.root == "/" or self.root.endswith("/"):
            raise ValueError(f"root must be an absolute znode path other than /, got {self.root!r}")
        self.endpoints()

    @property
    def workload(self) -> str:
        return f"preset:{self.preset}" if self.preset else parse_op_spec(self.op).label


def parse_connect_string(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (a ZooKeeper connect string without chroot)."""
    if "/" in text:
        raise ValueError("a chroot in the connect string is not supported; use --root")
    out = []
    for part in text.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"server must be host:port, got {part!r}")
        out.append((host.strip("[]"), int(port)))
    return out


@dataclass
class LoadResult:
    """Outcome of one run. Latencies in microseconds; CPU in percent of one core."""

    config: dict[str, Any]
    ops: int  # requests answered in the measured window (errors included)
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
    workload: str = ""
    mode: str = "closed"  # or "open"
    rate: float | None = None  # open loop: the intended arrival rate
    #: open loop: latency from the actual send (the main latency counts from the intended one)
    service_us: dict[str, float] | None = None
    #: per kind (requests like get/set/multi, events like notify/acquire/connect)
    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def other_cpu(self) -> float | None:
        """CPU used by neither the load processes nor the server: noise from neighbours."""
        if self.machine_cpu is None or self.client_cpu is None:
            return None
        return round(max(self.machine_cpu - self.client_cpu - (self.server_cpu or 0.0), 0.0), 1)

    @property
    def violations(self) -> int:
        return int(self.check.get("violations", 0))

    @property
    def clean(self) -> bool:
        """No error reply and no check violation in the whole run."""
        return not self.errors_total and not self.violations

    def to_json(self, histograms: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (with the derived other_cpu)."""
        out = asdict(self)
        out["other_cpu"] = self.other_cpu
        if not histograms:
            out.pop("histogram", None)
            for kind in out["by_kind"].values():
                kind.pop("histogram", None)
        return out


# --- set-up and clean-up ---------------------------------------------------------------------------


def client_tls(cfg: LoadConfig) -> ssl.SSLContext | None:
    """The client side of --tls-ca (verifying the server's certificate against that CA, not
    its host name: servers are given by address) and --tls-cert/--tls-key."""
    if not cfg.tls_ca:
        return None
    context = ssl.create_default_context(cafile=cfg.tls_ca)
    context.check_hostname = False
    if cfg.tls_cert:
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    return context


async def _connect(cfg: LoadConfig) -> ZKClient:
    host, port = cfg.endpoints()[0]
    return await ZKClient.connect(
        host, port, session_timeout_ms=cfg.session_timeout_ms, connect_timeout=cfg.connect_timeout,
        tls=client_tls(cfg))


async def ensure_path(client: ZKClient, path: str, data: bytes = b"") -> None:
    """Create *path* and its missing ancestors (existing nodes are left as they are)."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        with contextlib.suppress(ZKError):
            await client.create("/" + "/".join(parts[:i]), data if i == len(parts) else b"")


async def pipelined(items: Sequence[Any], fn: Callable[[Any], Any]) -> None:
    """Run ``fn(item)`` for every item, SETUP_WINDOW at a time."""
    for lo in range(0, len(items), SETUP_WINDOW):
        await asyncio.gather(*(fn(x) for x in items[lo : lo + SETUP_WINDOW]))


def delete_pool_sizes(cfg: LoadConfig) -> list[int]:
    """Nodes each session deletes in a delete run (--ops in all, or --keys)."""
    total = cfg.ops or cfg.keys
    return [total // cfg.sessions + (1 if i < total % cfg.sessions else 0)
            for i in range(cfg.sessions)]


async def prepare_keyspace(cfg: LoadConfig) -> None:
    """Create what the simple op needs (idempotent; keys get their initial value)."""
    spec = parse_op_spec(cfg.op)
    client = await _connect(cfg)
    try:
        await ensure_path(client, cfg.root)

        async def put(path: str, value: bytes) -> None:
            try:
                await client.create(path, value)
            except ZKError as e:
                if e.code != NODE_EXISTS:
                    raise
                await client.set(path, value)

        async def make(path: str) -> None:
            try:
                await client.create(path, b"")
            except ZKError as e:
                if e.code != NODE_EXISTS:
                    raise

        if spec.uses_keys:
            plain = plain_value(cfg.value_size)
            checked = cfg.check

            def value(i: int) -> bytes:
                if checked:
                    return check_value(owner_of(i, cfg.sessions), 0, cfg.value_size)
                return plain

            await pipelined(range(cfg.keys), lambda i: put(key_path(cfg.root, i), value(i)))
            if spec.kind == "children":
                names = child_names(cfg.children)
                paths = [f"{key_path(cfg.root, i)}/{n}" for i in range(cfg.keys) for n in names]
                await pipelined(paths, make)
        elif spec.kind == "create":
            await make(f"{cfg.root}/c")
            await pipelined(range(cfg.sessions), lambda i: make(f"{cfg.root}/c/{cfg.run_tag}s{i}"))
        elif spec.kind == "delete":
            await make(f"{cfg.root}/d")
            pools = delete_pool_sizes(cfg)
            await pipelined(range(cfg.sessions), lambda i: make(delete_parent(cfg.root, i)))
            paths = [numbered(delete_parent(cfg.root, i), n)
                     for i in range(cfg.sessions) for n in range(pools[i])]
            await pipelined(paths, make)
        elif spec.kind == "create-delete":
            await make(f"{cfg.root}/cd")
    finally:
        await client.close()


async def remove_tree(client: ZKClient, path: str, known: dict[str, int] | None = None) -> None:
    """Delete *path* and everything under it (best effort, pipelined).

    *known* maps parents to a count of numbered children (``n0000000000``...) to delete by
    name first, so that a parent with very many children is never listed in one reply.
    """
    for parent, count in (known or {}).items():
        names = [numbered(parent, n) for n in range(count)]

        async def drop(p: str) -> None:
            with contextlib.suppress(ZKError):
                await client.delete(p)

        await pipelined(names, drop)

    async def remove(p: str) -> None:
        try:
            await client.delete(p)
        except ZKError as e:
            if e.code == NOT_EMPTY:
                await tree(p)
            elif e.code != NO_NODE:
                raise

    async def tree(p: str) -> None:
        try:
            children = await client.get_children(p)
        except ZKError as e:
            if e.code == NO_NODE:
                return
            raise
        await pipelined([f"{p}/{c}" for c in children], remove)
        await remove(p)

    await tree(path)


async def cleanup_keyspace(cfg: LoadConfig, known: dict[str, int] | None = None) -> None:
    """Delete everything under root and root itself."""
    client = await _connect(cfg)
    try:
        await remove_tree(client, cfg.root, known)
    finally:
        await client.close()


# --- one process of a simple-op run -------------------------------------------------------------


def _make_session(cfg: LoadConfig, gidx: int, checker: Checker) -> SessionBase:
    spec = parse_op_spec(cfg.op)
    model = cfg.check or spec.kind == "delete" or (spec.kind == "create" and not spec.sequential)
    if model:
        pools = delete_pool_sizes(cfg) if spec.kind == "delete" else [0] * cfg.sessions
        s: SessionBase = ModelSession(
            gidx, spec, root=cfg.root, keys=cfg.keys, total_sessions=cfg.sessions,
            value_size=cfg.value_size, children=cfg.children, multi_size=cfg.multi_size,
            seed=cfg.seed, delete_pool=pools[gidx], checker=checker, run_tag=cfg.run_tag,
            corrupt_every=cfg.corrupt_every,
        )
    else:
        frames = build_schedule(
            spec, gidx, root=cfg.root, keys=cfg.keys, value_size=cfg.value_size,
            depth=cfg.depth, seed=cfg.seed, multi_size=cfg.multi_size, run_tag=cfg.run_tag,
        )
        s = FastSession(gidx, spec.label, frames)
    s.depth = cfg.depth
    if cfg.rate:
        s.max_inflight = cfg.max_inflight
    return s


def _quota(cfg: LoadConfig, gidx: int) -> int | None:
    if cfg.ops is None:
        return None
    return cfg.ops // cfg.sessions + (1 if gidx < cfg.ops % cfg.sessions else 0)


async def run_simple_part(
    cfg: LoadConfig,
    indices: Sequence[int],
    measure_shared: bool,
    ready: Callable[[], Any] | None = None,
    progress: ProgressFn | None = None,
) -> PartResult:
    """Open this process's sessions, run warm-up + measured window, drain, close."""
    spec = parse_op_spec(cfg.op)
    checker = Checker()
    rec = Recorder()
    cpu = CpuWindow(cfg.server_pid if measure_shared else None, machine=measure_shared)
    endpoints = cfg.endpoints()
    sessions: list[SessionBase] = [_make_session(cfg, i, checker) for i in indices]
    loop = asyncio.get_running_loop()
    pacer: Pacer | None = None
    elapsed = 0.0
    tls = client_tls(cfg)
    try:
        await asyncio.gather(*(
            open_session(*endpoints[s.gidx % len(endpoints)], s, cfg.session_timeout_ms,
                         cfg.connect_timeout, tls)
            for s in sessions
        ))
        models = [s for s in sessions if isinstance(s, ModelSession)]
        for m in models:
            m.start_init()
        if models:
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(m.init_done) for m in models)),
                cfg.connect_timeout + 30,
            )
            bad = [m.failure for m in models if m.failure]
            if bad:
                raise RuntimeError(bad[0])
        if ready is not None:
            await loop.run_in_executor(None, ready)
        if cfg.rate:
            rate = cfg.rate * len(sessions) / cfg.sessions  # this process's share
            t0 = now_us() + 1000.0
            step = len(sessions) * 1e6 / rate
            for k, s in enumerate(sessions):
                s.start(t0 + k * 1e6 / rate, step)
            if sys.getswitchinterval() > 0.0005:
                sys.setswitchinterval(0.0005)  # the pacer thread must get the GIL quickly
            pacer = Pacer(loop, sessions, rate, t0)
            pacer.start()
        else:
            for s in sessions:
                s.start()

        finished: asyncio.Future[Any] | None = None
        if cfg.ops is not None or spec.kind == "delete":
            finished = asyncio.ensure_future(asyncio.gather(*(asyncio.shield(s.drained)
                                                               for s in sessions)))

        def begin() -> None:
            for s in sessions:
                s.take()
                s.recording = True
                s.recorded = 0
                s.quota = _quota(cfg, s.gidx)
                if s.quota == 0:
                    s.stop()

        def end() -> None:
            for s in sessions:
                s.recording = False
                s.stop()

        def collect() -> None:
            for s in sessions:
                lat, svc = s.take()
                for kind, pairs in lat.items():
                    rec.add(kind, pairs)
                if svc:
                    rec.add_service(svc)

        def errors_now() -> int:
            return sum(sum(s.errors.values()) for s in sessions)

        timed = cfg.ops is None and spec.kind != "delete"
        elapsed = await measure_window(
            warmup=0.0 if spec.kind == "delete" else cfg.warmup,
            duration=cfg.duration if timed else None,
            limit=cfg.duration if spec.kind == "delete" and cfg.ops is None else OPS_TIME_LIMIT,
            rec=rec, cpu=cpu, begin=begin, end=end, collect=collect, errors_now=errors_now,
            finished=finished, progress=progress,
        )
        if pacer is not None:
            pacer.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(s.drained) for s in sessions)), DRAIN_TIMEOUT
            )
        if finished is not None and not finished.done():
            finished.cancel()
    finally:
        if pacer is not None:
            pacer.stop()
        for s in sessions:
            s.stop()
            s.close_session()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(s.lost) for s in sessions)), CLOSE_TIMEOUT
            )
        for s in sessions:
            if s.transport is not None:
                s.transport.abort()
    errors: Counter[int] = Counter()
    errors_total: Counter[int] = Counter()
    failure = None
    created: dict[str, int] = {}
    for s in sessions:
        errors.update(s.errors)
        errors_total.update(s.errors_total)
        failure = failure or s.failure
        if s.inflight and not failure:
            failure = f"{s.inflight} requests unanswered {DRAIN_TIMEOUT:.0f}s after the end"
        if spec.kind == "create" and not spec.ephemeral:
            parent = f"{cfg.root}/c/{cfg.run_tag}s{s.gidx}"
            if isinstance(s, FastSession):
                created[parent] = s.ok_replies
            elif isinstance(s, ModelSession):
                created[parent] = s.created
    own, srv, mach = cpu.result
    everything, service, kinds = rec.encoded()
    return PartResult(
        elapsed=elapsed,
        errors=dict(errors),
        errors_total=dict(errors_total),
        histogram=everything,
        service=service,
        kinds=kinds,
        request_kinds=sorted(rec.request_kinds),
        timeline=rec.timeline,
        client_cpu=own,
        server_cpu=srv,
        machine_cpu=mach,
        checked=checker.checked,
        violations=checker.violations,
        messages=checker.messages,
        failure=failure,
        extra={"created": created},
    )


# --- combining parts, processes --------------------------------------------------------------------


def _event_loop_runner() -> Callable[[Any], Any]:
    """uvloop when available (it is a project dependency), plain asyncio otherwise."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run


async def _run_part(
    cfg: LoadConfig,
    indices: Sequence[int],
    measure_shared: bool,
    ready: Callable[[], Any] | None = None,
    progress: ProgressFn | None = None,
) -> PartResult:
    if cfg.preset:
        from fastzk.client.presets import run_preset_part

        return await run_preset_part(cfg, indices, measure_shared, ready, progress)
    return await run_simple_part(cfg, indices, measure_shared, ready, progress)


def _worker(
    cfg_dict: dict[str, Any],
    indices: list[int],
    measure_shared: bool,
    barrier: Any,
    results: Any,
    index: int,
) -> None:
    """Entry point of a spawned load process: run its share and queue the outcome."""
    cfg = LoadConfig(**cfg_dict)

    def progress(item: Interval) -> None:
        with contextlib.suppress(Exception):
            results.put(("progress", index, item))

    try:
        part = _event_loop_runner()(
            _run_part(cfg, indices, measure_shared, lambda: barrier.wait(120), progress)
        )
        results.put(("ok", index, part))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        with contextlib.suppress(Exception):
            barrier.abort()
        results.put(("error", index, f"{type(e).__name__}: {e}"))


def _split(total: int, parts: int) -> list[list[int]]:
    return [list(range(total))[p::parts] for p in range(parts)]


def _merge_timelines(parts: Sequence[PartResult]) -> list[dict[str, float]]:
    out = []
    length = max((len(p.timeline) for p in parts), default=0)
    prev_t = 0.0
    for i in range(length):
        items = [p.timeline[i] for p in parts if i < len(p.timeline)]
        t = max(item[0] for item in items)
        counts = merge_counts([item[1] for item in items])
        span = max(t - prev_t, 1e-6)
        prev_t = t
        summary = counts_summary(counts)
        out.append({
            "t": t,
            "ops_per_sec": round(sum(counts.values()) / span, 1),
            "events_per_sec": round(sum(item[3] for item in items) / span, 1),
            "errors": sum(item[2] for item in items),
            "p50": summary["p50"],
            "p99": summary["p99"],
            "max": summary["max"],
        })
    return out


def combine(cfg: LoadConfig, parts: Sequence[PartResult], extra: dict[str, Any] | None = None,
            extra_violations: Sequence[str] = ()) -> LoadResult:
    """Merge the parts of all processes into one result."""
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
    request_kinds = {k for p in parts for k in p.request_kinds}
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({k for p in parts for k in p.kinds}):
        khist = merge_histograms([p.kinds[kind] for p in parts if kind in p.kinds])
        count = khist.get_total_count()
        by_kind[kind] = {
            "request": kind in request_kinds,
            "count": count,
            "per_sec": round(count / elapsed, 1) if elapsed > 0 else 0.0,
            "latency_us": histogram_summary(khist),
            "histogram": encode(khist),
        }
    service = None
    if cfg.rate:
        service = histogram_summary(merge_histograms([p.service for p in parts]))
    messages = [m for p in parts for m in p.messages] + list(extra_violations)
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
        histogram=encode(hist),
        workload=cfg.workload,
        mode="open" if cfg.rate else "closed",
        rate=cfg.rate,
        service_us=service,
        by_kind=by_kind,
        check={
            "enabled": cfg.check,
            "checked": sum(p.checked for p in parts),
            "violations": sum(p.violations for p in parts) + len(extra_violations),
            "messages": messages[:40],
        },
        timeline=_merge_timelines(parts),
        extra=extra or {},
    )


def _prepared(cfg: LoadConfig) -> LoadConfig:
    cfg.validate()
    if not cfg.run_tag:
        cfg.run_tag = uuid.uuid4().hex[:8]
    return cfg


async def _setup(cfg: LoadConfig) -> None:
    if not cfg.setup:
        return
    if cfg.preset:
        from fastzk.client.presets import preset_setup

        await preset_setup(cfg)
    else:
        await prepare_keyspace(cfg)


async def _finish(cfg: LoadConfig, parts: Sequence[PartResult]) -> tuple[dict[str, Any], list[str]]:
    """After the run (parent): the preset's cross-process verification, then clean-up."""
    extra: dict[str, Any] = {}
    violations: list[str] = []
    try:
        if cfg.preset and not any(p.failure for p in parts):
            from fastzk.client.presets import preset_verify

            extra, violations = await preset_verify(cfg, parts)
    finally:
        if cfg.cleanup:
            known: dict[str, int] = {}
            for p in parts:
                known.update(p.extra.get("created", {}))
            await cleanup_keyspace(cfg, known)
    return extra, violations


async def run_load_async(cfg: LoadConfig, progress: ProgressFn | None = None) -> LoadResult:
    """Run one load in the current event loop (single process; ``processes`` is ignored)."""
    cfg = _prepared(cfg)
    await _setup(cfg)
    parts: list[PartResult] = []
    try:
        parts.append(await _run_part(cfg, list(range(cfg.sessions)), True, None, progress))
    finally:
        extra, violations = await _finish(cfg, parts)
    return combine(cfg, parts, extra, violations)


def run_load(cfg: LoadConfig, progress: ProgressFn | None = None) -> LoadResult:
    """Run one load (blocking). With ``processes > 1`` the sessions are split over
    spawned workers that start together and whose histograms are merged; *progress* gets
    every interval (merged over the workers)."""
    cfg = _prepared(cfg)
    runner = _event_loop_runner()
    nproc = min(cfg.processes, cfg.sessions)
    if nproc <= 1:
        return runner(run_load_async(cfg, progress))
    runner(_setup(cfg))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(nproc)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(asdict(cfg), share, p == 0, barrier, results, p),
            name=f"fastzk-load-{p}",
            daemon=True,
        )
        for p, share in enumerate(_split(cfg.sessions, nproc))
    ]
    parts: list[PartResult] = []
    errors: list[str] = []
    pending: dict[int, list[Interval]] = {}
    try:
        for proc in procs:
            proc.start()
        limit = OPS_TIME_LIMIT if cfg.ops else cfg.duration
        deadline = time.monotonic() + cfg.warmup + limit + DRAIN_TIMEOUT + 180
        done = 0
        while done < nproc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("load workers did not report in time")
            try:
                status, index, payload = results.get(timeout=min(left, 1.0))
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise RuntimeError("load workers exited without a result") from None
                continue
            if status == "progress":
                items = pending.setdefault(round(payload[0] / INTERVAL), [])
                items.append(payload)
                if len(items) == nproc and progress is not None:
                    merged = merge_counts([it[1] for it in items])
                    progress((max(it[0] for it in items), list(merged.items()),
                              sum(it[2] for it in items), sum(it[3] for it in items)))
                continue
            done += 1
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
        if errors or len(parts) < nproc:
            if cfg.cleanup:
                with contextlib.suppress(Exception):
                    runner(cleanup_keyspace(cfg))
    if errors:
        raise RuntimeError("load worker failed: " + "; ".join(errors))
    extra, violations = runner(_finish(cfg, parts))
    return combine(cfg, parts, extra, violations)


# --- command line -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fastzk load`` (wired into fastzk/cli.py)."""
    d = LoadConfig()
    parser.add_argument(
        "--server", default=f"{d.host}:{d.port}",
        help="connect string host:port[,host:port...]; sessions are spread over the servers "
        "(default %(default)s)",
    )
    tls = parser.add_argument_group("TLS (a server's secureClientPort)")
    tls.add_argument("--tls-ca", default="", metavar="FILE",
                     help="connect over TLS, verifying the server against this CA (PEM)")
    tls.add_argument("--tls-cert", default="", metavar="FILE",
                     help="client certificate (PEM; with its key, or see --tls-key)")
    tls.add_argument("--tls-key", default="", metavar="FILE", help="client key (PEM)")
    g = parser.add_argument_group("workload")
    g.add_argument(
        "--op", default=d.op,
        help="get | set | exists | children | create | create:seq | create:eph | create:eph-seq "
        "| delete | create-delete | multi | mixed:R (R%% getData, rest setData) "
        "(default %(default)s)",
    )
    g.add_argument("--preset", choices=PRESETS, default=None,
                   help="a workload modelled on real users instead of --op (see README)")
    g.add_argument("--keys", type=int, default=None,
                   help=f"distinct keys (default {d.keys}; presets: partitions, locks, watched "
                   "nodes)")
    g.add_argument("--value-size", type=int, default=d.value_size,
                   help="bytes per value (default %(default)s)")
    g.add_argument("--children", type=int, default=d.children,
                   help="children op: children under each key (default %(default)s)")
    g.add_argument("--multi-size", type=int, default=d.multi_size,
                   help="multi op: setData ops per multi (default %(default)s)")
    g.add_argument("--expire-pct", type=int, default=d.expire_pct,
                   help="session-churn: %% of sessions left to expire (default %(default)s)")
    g = parser.add_argument_group("load shape")
    g.add_argument("--sessions", "-c", type=int, default=None,
                   help=f"sessions = connections (default {d.sessions})")
    g.add_argument("--depth", "-d", type=int, default=d.depth,
                   help="closed loop: requests in flight per session (default %(default)s)")
    g.add_argument("--rate", type=float, default=None,
                   help="open loop: total requests/s, latency from the intended send time "
                   "(presets: watch-fanout writes/s)")
    g.add_argument("--max-inflight", type=int, default=d.max_inflight,
                   help="open loop: requests in flight per session at most (default %(default)s)")
    g.add_argument("--duration", type=float, default=d.duration,
                   help="measured seconds (default %(default)s)")
    g.add_argument("--warmup", type=float, default=d.warmup,
                   help="unmeasured seconds before (default %(default)s)")
    g.add_argument("--ops", type=int, default=None,
                   help="measure this many operations instead of --duration")
    g.add_argument("--processes", "-p", type=int, default=d.processes,
                   help="load processes; sessions are split among them (default %(default)s)")
    g = parser.add_argument_group("checking and output")
    g.add_argument("--check", action="store_true",
                   help="verify every reply; exit 1 on any violation")
    g.add_argument("--history", metavar="FILE.jsonl", default=None,
                   help="run a checkable workload (its own op mix over --keys keys, default 5, "
                   "with --sessions sessions, default 4), record every operation in FILE and "
                   "check it for linearizability; exit 1 if it is not linearizable")
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    g.add_argument("--plot", metavar="FILE.png", default=None,
                   help="latency-over-time and latency-distribution figure (needs matplotlib)")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="live progress line on stderr (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    g = parser.add_argument_group("environment")
    g.add_argument("--root", default=d.root, help="znode under which keys live (default %(default)s)")
    g.add_argument("--session-timeout", type=int, default=d.session_timeout_ms,
                   help="requested session timeout, ms (default %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="workload seed (default %(default)s)")
    g.add_argument("--server-pid", type=int, default=None,
                   help="PID of a local server process, to report its CPU usage")
    g.add_argument("--no-setup", action="store_true",
                   help="do not create the keys first (they must exist)")
    g.add_argument("--keep", action="store_true", help="do not delete the keys afterwards")
    g.add_argument("--corrupt-every", type=int, default=0, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    """LoadConfig from parsed ``add_arguments`` options (presets bring their own defaults
    for --sessions and --keys when those are not given)."""
    endpoints = parse_connect_string(str(args.server))
    d = LoadConfig()
    sessions, keys = args.sessions, args.keys
    if args.preset:
        from fastzk.client.presets import PRESET_DEFAULTS

        ps, pk = PRESET_DEFAULTS[args.preset]
        sessions = ps if sessions is None else sessions
        keys = pk if keys is None else keys
    return LoadConfig(
        host=endpoints[0][0],
        port=endpoints[0][1],
        servers=str(args.server) if len(endpoints) > 1 else "",
        sessions=d.sessions if sessions is None else sessions,
        depth=args.depth,
        op=args.op,
        preset=args.preset,
        value_size=args.value_size,
        keys=d.keys if keys is None else keys,
        duration=args.duration,
        warmup=args.warmup,
        ops=args.ops,
        rate=args.rate,
        max_inflight=args.max_inflight,
        processes=args.processes,
        root=args.root,
        session_timeout_ms=args.session_timeout,
        seed=args.seed,
        server_pid=args.server_pid,
        setup=not args.no_setup,
        cleanup=not args.keep,
        check=args.check,
        children=args.children,
        multi_size=args.multi_size,
        expire_pct=args.expire_pct,
        corrupt_every=args.corrupt_every,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """``fastzk load``: 0 on a clean run, 1 if a request failed or a check was violated,
    2 if the run could not run."""
    from fastzk.client import report

    if args.history:
        from fastzk.client.history import run_from_load_args

        return run_from_load_args(args)
    try:
        cfg = config_from_args(args)
        cfg.validate()
    except ValueError as e:
        print(f"fastzk load: {e}", file=sys.stderr, flush=True)
        return 2
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    live = report.LiveLine(cfg) if show else None
    try:
        if live is not None:
            live.start()
        try:
            result = run_load(cfg, live.update if live is not None else None)
        finally:
            if live is not None:
                live.stop()
    except (OSError, ValueError, RuntimeError, TimeoutError, ZKError) as e:
        print(f"fastzk load: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 2
    if args.json:
        print(json.dumps(result.to_json(histograms=False), indent=2))
    else:
        report.print_table(result)
    if args.plot:
        try:
            report.plot(result, args.plot)
        except ImportError:
            print("fastzk load: --plot needs matplotlib (pip install 'fastzk[bench]')",
                  file=sys.stderr)
            return 2
    return 0 if result.clean else 1


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m fastzk.client.load``)."""
    parser = argparse.ArgumentParser(prog="fastzk load", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
