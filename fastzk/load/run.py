"""Running a `fastzk load`: set-up, the sessions of one process (or several spawned
processes that start together on a barrier), the measured window, clean-up, and the merge of
what every process measured into one :class:`~fastzk.load.config.LoadResult`."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from fastzk.client.codec import error_name
from fastzk.load.config import LoadConfig, LoadResult
from fastzk.load.cpu import CpuWindow
from fastzk.load.engine import (
    INTERVAL,
    Checker,
    FastSession,
    ModelSession,
    Pacer,
    PartResult,
    ProgressFn,
    SessionBase,
    build_schedule,
    measure_window,
    open_session,
)
from fastzk.load.keyspace import (
    cleanup_keyspace,
    client_tls,
    delete_pool_sizes,
    prepare_keyspace,
)
from fastzk.load.latency import (
    Interval,
    Recorder,
    counts_summary,
    encode,
    histogram_summary,
    merge_counts,
    merge_histograms,
    now_us,
)
from fastzk.load.presets import preset_setup, preset_verify, run_preset_part
from fastzk.load.workload import parse_op_spec

#: How long the end-of-run drain and the closing handshake may take, at most.
DRAIN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
#: Time limit of a run with --ops (or of a delete run), seconds.
OPS_TIME_LIMIT = 3600.0


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
                for kind, marks in s.take().items():
                    rec.add_marks(kind, marks, s.base, s.step)

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
        await preset_setup(cfg)
    else:
        await prepare_keyspace(cfg)


async def _finish(cfg: LoadConfig, parts: Sequence[PartResult]) -> tuple[dict[str, Any], list[str]]:
    """After the run (parent): the preset's cross-process verification, then clean-up."""
    extra: dict[str, Any] = {}
    violations: list[str] = []
    try:
        if cfg.preset and not any(p.failure for p in parts):
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


