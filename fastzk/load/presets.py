"""Workload presets of `fastzk load`, modelled on how real users drive ZooKeeper.

Every preset is coordination logic on fastzk's asyncio client (``ZKClient``): each step
awaits the reply it depends on, so these workloads measure what applications see
(acquisitions/s, notification latency) rather than raw request throughput. Each verifies its
own invariants as it runs (always; ``--check`` adds nothing to skip) and the parent process
verifies what spans processes after the run (``preset_verify``).

* **kafka** (ZooKeeper-mode Kafka): brokers register ephemeral ids under ``brokers/ids``;
  they race for the ephemeral ``controller`` node and the winner bumps ``controller_epoch``
  with ``multi[check(epoch, v), setData(epoch)]``. In the measured phase each broker, with
  ``--depth`` requests in flight, updates the state of the partitions it leads with
  ``multi[check(controller_epoch, version), setData(state, version)]`` (Kafka's fenced
  update) and reads other partitions' states; every 250 ms a broker that changed an ISR
  writes a sequential ``isr_change_notification/isr_change_`` node, which the controller
  sees through its child watch, reads and deletes (``isr-notify`` latency); an admin writes a
  sequential ``config/changes/config_change_`` node every 100 ms, which every broker sees
  through its child watch (``config-notify`` latency). Checks: state values and versions
  (each partition has one writer), no fenced update fails, every notification is seen (ISR:
  exactly once), and after the run a stale-epoch multi is rejected and leaves the state
  unchanged (zombie-controller fencing), and the brokers' ephemerals are gone.
* **lock**: ``--sessions`` contenders on ``--keys`` locks, the standard recipe (ephemeral
  sequential node, lowest wins, others watch their predecessor with ``exists``). Inside the
  lock: read a counter and write it back +1 with the version read (a BadVersion would mean
  two holders). Checks: mutual exclusion, names unique and increasing, every predecessor
  watch fires, and the final counters equal the number of acquisitions. ``acquire``: time
  from the create to holding the lock.
* **watch-fanout**: one writer (session 0) sets ``--keys`` nodes round-robin at ``--rate``
  writes/s (default 200); every other session watches all of them (getData with watch,
  re-armed on every event). ``notify``: from the writer's send to the event's arrival (the
  value carries the send times of the last writes, CLOCK_MONOTONIC, valid across processes).
  Checks: every event is a NodeDataChanged of a watched node, the re-read value is newer
  than the one the watch was set with, and in the end every watcher saw the final value.
* **session-churn**: ``--sessions`` slots, each repeatedly: connect, create two ephemerals,
  then close the session, or (``--expire-pct``) drop the connection without closing and
  let it expire. Checks: a closed session's ephemerals are gone at once, an expired one's
  within its timeout plus two ticks (an observer's exists-watch must fire). ``connect``,
  ``close`` (requests) and ``session``/``expire`` (events) latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastzk.client.codec import (
    BAD_VERSION,
    NO_NODE,
    NODE_EXISTS,
    CreateMode,
    EventType,
    WatchEvent,
    ZKError,
    multi_check,
    multi_set,
)
from fastzk.client.protocol import ZKClient
from fastzk.load.config import LoadConfig
from fastzk.load.cpu import CpuWindow
from fastzk.load.engine import Checker, PartResult, ProgressFn, measure_window
from fastzk.load.keyspace import client_tls, connect, ensure_path, pipelined, put
from fastzk.load.latency import Recorder, now_us
from fastzk.load.workload import CHECK_HEAD, check_value, owner_of, parse_check_value

T = TypeVar("T")

#: (sessions, keys) of each preset when --sessions/--keys are not given.
PRESET_DEFAULTS: dict[str, tuple[int, int]] = {
    "kafka": (8, 100),  # brokers, partitions
    "lock": (16, 2),  # contenders, locks
    "watch-fanout": (51, 1),  # writer + 50 watchers, watched nodes
    "session-churn": (16, 1),  # concurrent churning slots
}
#: How long a waiter waits for a watch event before calling it lost (s).
WATCH_TIMEOUT = 20.0
#: Bound on the end of a preset: loops finish their step, events arrive (s).
DRAIN_TIMEOUT = 15.0
ISR_INTERVAL = 0.25
CONFIG_INTERVAL = 0.1
CONFIG_KEEP = 5.0  # the admin deletes config changes older than this (s)
WATCH_FANOUT_RATE = 200.0


def _ns() -> int:
    return time.monotonic_ns()


class Ctx:
    """What a preset part works with: clients, the recorder, error and check accounting."""

    def __init__(self, cfg: LoadConfig, indices: Sequence[int]) -> None:
        self.cfg = cfg
        self.indices = list(indices)
        self.endpoints = cfg.endpoints()
        self.tls = client_tls(cfg)
        self.rec = Recorder()
        self.checker = Checker()
        self.errors: Counter[int] = Counter()
        self.errors_total: Counter[int] = Counter()
        self.running = False  # the loops go on while this is True
        self.budget: int | None = None  # --ops: iterations left in the measured window
        self.failure: str | None = None
        self.clients: list[ZKClient] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        loop = asyncio.get_running_loop()
        self.budget_done: asyncio.Future[None] = loop.create_future()

    async def connect(self, gidx: int, watcher: Callable[[WatchEvent], None] | None = None,
                      timeout_ms: int | None = None, track: bool = True) -> ZKClient:
        host, port = self.endpoints[gidx % len(self.endpoints)]
        c = await ZKClient.connect(
            host, port, watcher=watcher,
            session_timeout_ms=timeout_ms or self.cfg.session_timeout_ms,
            connect_timeout=self.cfg.connect_timeout, tls=self.tls,
        )
        if track:
            self.clients.append(c)
        return c

    def error(self, code: int) -> None:
        self.errors_total[code] += 1
        if self.rec.recording:
            self.errors[code] += 1

    def fail(self, message: str) -> None:
        self.checker.fail(message)

    async def call(self, kind: str, aw: Awaitable[T], expect: tuple[int, ...] = ()) -> T:
        """Await one request, record its latency under *kind*, count unexpected errors."""
        t = now_us()
        try:
            result = await aw
        except ZKError as e:
            self.rec.one(kind, now_us() - t)
            if e.code not in expect:
                self.error(e.code)
            raise
        self.rec.one(kind, now_us() - t)
        return result

    def take(self) -> bool:
        """May a loop start one more iteration? (--ops counts iterations in the window.)"""
        if not self.running:
            return False
        if self.budget is not None and self.rec.recording:
            if self.budget <= 0:
                return False
            self.budget -= 1
            if self.budget == 0 and not self.budget_done.done():
                self.budget_done.set_result(None)
        return True

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, ZKError) and self.running:
            # an unexpected error already counted by call(); the loop ends, say so
            self.fail(f"a {self.cfg.preset} loop stopped on {exc}")
        elif not isinstance(exc, ZKError) and self.failure is None:
            self.failure = f"{type(exc).__name__}: {exc}"

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Let the loops finish their current step; cancel what is still running after."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self.tasks), timeout=max(deadline - time.monotonic(), 0.01))
        still = set(self.tasks)
        for t in still:
            t.cancel()
        if still:
            await asyncio.wait(still, timeout=2)

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close(timeout=2.0) for c in self.clients),
                             return_exceptions=True)


class EventRouter:
    """Routes one client's watch events: waiters by path (one-shot) and handlers by path."""

    def __init__(self) -> None:
        self.waiters: dict[str, list[asyncio.Future[WatchEvent]]] = {}
        self.handlers: dict[str, Callable[[WatchEvent], None]] = {}
        self.unexpected: list[WatchEvent] = []

    def __call__(self, ev: WatchEvent) -> None:
        handler = self.handlers.get(ev.path)
        futs = self.waiters.pop(ev.path, None)
        if futs:
            for f in futs:
                if not f.done():
                    f.set_result(ev)
        if handler is not None:
            handler(ev)
        elif not futs:
            self.unexpected.append(ev)

    def expect(self, path: str) -> asyncio.Future[WatchEvent]:
        fut: asyncio.Future[WatchEvent] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(path, []).append(fut)
        return fut

    def forget(self, path: str, fut: asyncio.Future[WatchEvent]) -> None:
        lst = self.waiters.get(path)
        if lst and fut in lst:
            lst.remove(fut)
            if not lst:
                del self.waiters[path]


# --- kafka -----------------------------------------------------------------------------------------


def _kafka_paths(root: str) -> dict[str, str]:
    return {
        "ids": f"{root}/brokers/ids",
        "parts": f"{root}/brokers/topics/t0/partitions",
        "controller": f"{root}/controller",
        "epoch": f"{root}/controller_epoch",
        "isr": f"{root}/isr_change_notification",
        "config": f"{root}/config/changes",
    }


def _state_path(root: str, p: int) -> str:
    return f"{_kafka_paths(root)['parts']}/{p}/state"


NOTE = struct.Struct(">qi")  # notification payload: send time (monotonic ns), writer


async def kafka_setup(cfg: LoadConfig, client: ZKClient) -> None:
    paths = _kafka_paths(cfg.root)
    for key in ("ids", "parts", "isr", "config"):
        await ensure_path(client, paths[key])
    await put(client, paths["epoch"], b"0")
    size = max(cfg.value_size, CHECK_HEAD)

    async def part(p: int) -> None:
        await ensure_path(client, f"{paths['parts']}/{p}")
        await put(client, _state_path(cfg.root, p), check_value(owner_of(p, cfg.sessions), 0,
                                                                    size))

    await pipelined(range(cfg.keys), part)


class Kafka:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        cfg = ctx.cfg
        self.cfg = cfg
        self.paths = _kafka_paths(cfg.root)
        self.size = max(cfg.value_size, CHECK_HEAD)
        self.brokers: dict[int, ZKClient] = {}
        self.routers: dict[int, EventRouter] = {}
        self.controller: int | None = None
        self.epoch_version = 0
        # partition model (per process: partitions are owned by one broker each)
        self.version: dict[int, int] = {}
        self.counter: dict[int, int] = {}
        self.busy: set[int] = set()
        self.seen: dict[tuple[int, int], tuple[int, int]] = {}  # (broker, p) -> (counter, off)
        self.changed: dict[int, int] = Counter()  # broker -> ISR updates since last notification
        self.isr_created = 0
        self.isr_processed: set[str] = set()
        self.isr_busy = False
        self.isr_again = False
        self.config_created: list[tuple[str, float]] = []
        self.config_seen: dict[int, set[str]] = {}
        self.config_busy: dict[int, bool] = {}
        self.config_again: dict[int, bool] = {}

    async def open(self) -> None:
        ctx = self.ctx
        for gidx in ctx.indices:
            router = EventRouter()
            self.routers[gidx] = router
            self.brokers[gidx] = await ctx.connect(gidx, router)
        # registration
        await asyncio.gather(*(
            self.brokers[g].create(f"{self.paths['ids']}/{g}", b'{"host":"127.0.0.1"}',
                                   CreateMode.EPHEMERAL)
            for g in ctx.indices
        ))
        # election: everybody watches /controller and tries to create it
        for g in ctx.indices:
            c = self.brokers[g]
            self.routers[g].handlers[self.paths["controller"]] = lambda ev: None
            await c.exists(self.paths["controller"], watch=True)
            try:
                await c.create(self.paths["controller"], str(g).encode(), CreateMode.EPHEMERAL)
            except ZKError as e:
                if e.code != NODE_EXISTS:
                    raise
                continue
            self.controller = g
            data, stat = await c.get(self.paths["epoch"])
            epoch = int(data or b"0") + 1
            res = await c.multi([multi_check(self.paths["epoch"], stat.version),
                                 multi_set(self.paths["epoch"], str(epoch).encode())])
            if any(isinstance(r, ZKError) for r in res):
                ctx.fail(f"kafka: the new controller {g} could not bump the epoch: {res}")
        # child watches: brokers on config changes, the controller on ISR notifications
        for g in ctx.indices:
            self.config_seen[g] = set()
            self.config_busy[g] = False
            self.config_again[g] = False
            self.routers[g].handlers[self.paths["config"]] = self._config_event(g)
            await self.brokers[g].get_children(self.paths["config"], watch=True)
        if self.controller is not None:
            c = self.brokers[self.controller]
            self.routers[self.controller].handlers[self.paths["isr"]] = self._isr_event
            await c.get_children(self.paths["isr"], watch=True)

    async def after_ready(self) -> None:
        """Every process has elected: read the epoch and the owned partitions' versions."""
        g0 = self.ctx.indices[0]
        c = self.brokers[g0]
        _, stat = await c.get(self.paths["epoch"])
        self.epoch_version = stat.version
        owned = [p for p in range(self.cfg.keys) if owner_of(p, self.cfg.sessions)
                 in self.brokers]

        async def learn(p: int) -> None:
            data, st = await c.get(_state_path(self.cfg.root, p))
            parsed = parse_check_value(data, self.size)
            if parsed is None:
                raise RuntimeError(f"partition {p} state is not a value of the load")
            self.version[p] = st.version
            self.counter[p] = parsed[1]

        await pipelined(owned, learn)

    def start(self) -> None:
        ctx = self.ctx
        for g in ctx.indices:
            owned = [p for p in range(self.cfg.keys) if owner_of(p, self.cfg.sessions) == g]
            rng = random.Random(self.cfg.seed * 7919 + g)
            for _ in range(self.cfg.depth):
                ctx.spawn(self._worker(g, owned, rng))
            ctx.spawn(self._isr_notifier(g))
        if 0 in self.brokers:
            ctx.spawn(self._admin(self.brokers[0]))

    async def _worker(self, g: int, owned: list[int], rng: random.Random) -> None:
        ctx = self.ctx
        c = self.brokers[g]
        parts = self.cfg.keys
        while ctx.take():
            free = [p for p in owned if p not in self.busy] if owned else []
            if free and rng.random() < 0.5:
                p = free[rng.randrange(len(free))]
                self.busy.add(p)
                try:
                    await self._update(g, c, p)
                finally:
                    self.busy.discard(p)
            else:
                await self._read(g, c, rng.randrange(parts))

    async def _update(self, g: int, c: ZKClient, p: int) -> None:
        ctx = self.ctx
        counter = self.counter[p] + 1
        version = self.version[p]
        path = _state_path(self.cfg.root, p)
        res = await ctx.call("isr-update", c.multi([
            multi_check(self.paths["epoch"], self.epoch_version),
            multi_set(path, check_value(g, counter, self.size), version),
        ]))
        if any(isinstance(r, ZKError) for r in res):
            codes = [r.code for r in res if isinstance(r, ZKError)]
            for code in codes:
                if code:
                    ctx.error(code)
            ctx.fail(f"kafka: broker {g}: fenced update of partition {p} (epoch version "
                     f"{self.epoch_version}, state version {version}) failed: {codes}")
            return
        stat = res[1]
        if getattr(stat, "version", None) != version + 1:
            ctx.fail(f"kafka: partition {p} state version {getattr(stat, 'version', None)} "
                     f"after a conditional update of version {version}")
        self.version[p] = version + 1
        self.counter[p] = counter
        self.changed[g] += 1

    async def _read(self, g: int, c: ZKClient, p: int) -> None:
        ctx = self.ctx
        data, stat = await ctx.call("state-read", c.get(_state_path(self.cfg.root, p)))
        ctx.checker.checked += 1
        parsed = parse_check_value(data, self.size)
        if parsed is None or parsed[0] != owner_of(p, self.cfg.sessions):
            ctx.fail(f"kafka: broker {g} read partition {p} state {data[:24] if data else data!r}"
                     f" not written by its leader {owner_of(p, self.cfg.sessions)}")
            return
        counter = parsed[1]
        off = stat.version - counter
        prev = self.seen.get((g, p))
        if prev is not None:
            if counter < prev[0]:
                ctx.fail(f"kafka: broker {g}: partition {p} state went backwards "
                         f"({prev[0]} -> {counter})")
            if off != prev[1]:
                ctx.fail(f"kafka: partition {p}: version {stat.version} with counter {counter} "
                         f"(version-counter was {prev[1]}): a write not made by the leader")
        self.seen[(g, p)] = (max(counter, prev[0] if prev else counter), off)

    async def _isr_notifier(self, g: int) -> None:
        """A broker that changed ISRs tells the controller, batched every ISR_INTERVAL."""
        ctx = self.ctx
        c = self.brokers[g]
        while ctx.running:
            await asyncio.sleep(ISR_INTERVAL)
            if not self.changed.get(g):
                continue
            self.changed[g] = 0
            await ctx.call("notify-create", c.create(
                f"{self.paths['isr']}/isr_change_", NOTE.pack(_ns(), g),
                CreateMode.PERSISTENT_SEQUENTIAL))
            self.isr_created += 1

    def _isr_event(self, ev: WatchEvent) -> None:
        if ev.type != EventType.NODE_CHILDREN_CHANGED:
            self.ctx.fail(f"kafka: controller got {ev} on the ISR notification node")
        if self.isr_busy:
            self.isr_again = True
            return
        self.isr_busy = True
        self.ctx.spawn(self._isr_process())

    async def _isr_process(self, watch: bool = True) -> None:
        """Controller: list, read, record, delete the ISR notifications (and re-watch)."""
        ctx = self.ctx
        assert self.controller is not None
        c = self.brokers[self.controller]
        try:
            while True:
                self.isr_again = False
                names = await ctx.call("children", c.get_children(self.paths["isr"],
                                                                  watch=watch))
                new = [f"{self.paths['isr']}/{n}" for n in sorted(names)
                       if n not in self.isr_processed]
                # read them all (pipelined), then delete them all, as the controller does
                got = await asyncio.gather(*(ctx.call("notify-read", c.get(p)) for p in new))
                t_seen = _ns()
                for data, _ in got:
                    sent, _writer = NOTE.unpack_from(data or b"\0" * NOTE.size, 0)
                    ctx.rec.one("isr-notify", (t_seen - sent) // 1000, request=False)
                await asyncio.gather(*(ctx.call("delete", c.delete(p)) for p in new))
                self.isr_processed.update(p.rsplit("/", 1)[1] for p in new)
                if not self.isr_again:
                    return
        finally:
            self.isr_busy = False

    def _config_event(self, g: int) -> Callable[[WatchEvent], None]:
        def handler(ev: WatchEvent) -> None:
            if ev.type != EventType.NODE_CHILDREN_CHANGED:
                self.ctx.fail(f"kafka: broker {g} got {ev} on the config changes node")
            if self.config_busy[g]:
                self.config_again[g] = True
                return
            self.config_busy[g] = True
            self.ctx.spawn(self._config_process(g))

        return handler

    async def _config_process(self, g: int, watch: bool = True) -> None:
        ctx = self.ctx
        c = self.brokers[g]
        seen = self.config_seen[g]
        try:
            while True:
                self.config_again[g] = False
                names = await ctx.call("children", c.get_children(self.paths["config"],
                                                                  watch=watch))
                new = [n for n in sorted(names) if n not in seen]
                seen.update(new)

                async def read(name: str) -> None:
                    try:
                        data, _ = await ctx.call("notify-read",
                                                 c.get(f"{self.paths['config']}/{name}"),
                                                 expect=(NO_NODE,))
                    except ZKError:
                        return  # deleted by the admin meanwhile: seen by name, no latency
                    sent, _ = NOTE.unpack_from(data or b"\0" * NOTE.size, 0)
                    ctx.rec.one("config-notify", (_ns() - sent) // 1000, request=False)

                await asyncio.gather(*(read(n) for n in new))
                if not self.config_again[g]:
                    return
        finally:
            self.config_busy[g] = False

    async def _admin(self, c: ZKClient) -> None:
        """An admin client writes a config change every CONFIG_INTERVAL and purges old ones."""
        ctx = self.ctx
        while ctx.running:
            await asyncio.sleep(CONFIG_INTERVAL)
            if not ctx.running:
                break
            path = await ctx.call("notify-create", c.create(
                f"{self.paths['config']}/config_change_", NOTE.pack(_ns(), -1),
                CreateMode.PERSISTENT_SEQUENTIAL))
            now = time.monotonic()
            self.config_created.append((path.rsplit("/", 1)[1], now))
            for name, t in self.config_created:
                if t > now - CONFIG_KEEP:
                    break
                if t > 0:
                    with contextlib.suppress(ZKError):
                        await ctx.call("delete", c.delete(f"{self.paths['config']}/{name}"),
                                       expect=(NO_NODE,))
            self.config_created = [(n, t if t > now - CONFIG_KEEP else 0.0)
                                   for n, t in self.config_created]

    async def finish(self) -> dict[str, Any]:
        """After the loops: a last look at the config changes, then the facts to verify."""
        await asyncio.sleep(0.5)
        await self.ctx.drain(DRAIN_TIMEOUT)  # event handling spawned after the loops ended
        for g in self.brokers:
            self.config_busy[g] = True
            await self._config_process(g, watch=False)
        if self.controller is not None:
            self.isr_busy = True
            await self._isr_process(watch=False)
        return {
            "controller": self.controller,
            "isr_created": self.isr_created,
            "isr_processed": len(self.isr_processed),
            "config_created": [n for n, _ in self.config_created],
            "config_seen": {g: sorted(s) for g, s in self.config_seen.items()},
        }


async def kafka_verify(cfg: LoadConfig, client: ZKClient, facts: list[dict[str, Any]]
                       ) -> tuple[dict[str, Any], list[str]]:
    paths = _kafka_paths(cfg.root)
    bad: list[str] = []
    controllers = [f["controller"] for f in facts if f.get("controller") is not None]
    if len(controllers) != 1:
        bad.append(f"kafka: {len(controllers)} controllers elected (expected exactly 1)")
    created = sum(f["isr_created"] for f in facts)
    processed = sum(f["isr_processed"] for f in facts)
    left = len(await client.get_children(paths["isr"]))
    if processed + left != created:
        bad.append(f"kafka: {created} ISR notifications written, {processed} processed by the "
                   f"controller and {left} left: notifications lost or duplicated")
    config_created = [n for f in facts for n in f.get("config_created", [])]
    for f in facts:
        for g, seen in f["config_seen"].items():
            missing = set(config_created) - set(seen)
            if missing:
                bad.append(f"kafka: broker {g} never saw {len(missing)} of {len(config_created)}"
                           f" config changes (e.g. {sorted(missing)[0]})")
    # ephemerals of the closed broker sessions are gone
    if await client.exists(paths["controller"]) is not None:
        bad.append("kafka: /controller still exists after every broker closed its session")
    ids = await client.get_children(paths["ids"])
    if ids:
        bad.append(f"kafka: broker registrations left after close: {ids[:5]}")
    # zombie controller: a stale epoch must fence the update, atomically
    data, stat = await client.get(paths["epoch"])
    state = _state_path(cfg.root, 0)
    before, st_before = await client.get(state)
    res = await client.multi([multi_check(paths["epoch"], stat.version - 1),
                              multi_set(state, b"zombie-controller-write")])
    codes = [r.code if isinstance(r, ZKError) else "ok" for r in res]
    if codes != [BAD_VERSION, -2]:
        bad.append(f"kafka: a stale-epoch multi returned {codes}, expected "
                   f"[{BAD_VERSION}, -2] (BadVersion, then rolled back)")
    after, st_after = await client.get(state)
    if after != before or st_after.version != st_before.version:
        bad.append("kafka: a failed stale-epoch multi changed the partition state")
    return {
        "controller_epoch": int(data or b"0"),
        "isr_notifications": created,
        "config_changes": len(config_created),
    }, bad


# --- lock ------------------------------------------------------------------------------------------


def _lock_dir(root: str, i: int) -> str:
    return f"{root}/locks/l{i}"


def _counter_path(root: str, i: int) -> str:
    return f"{root}/counters/l{i}"


async def lock_setup(cfg: LoadConfig, client: ZKClient) -> None:
    await ensure_path(client, f"{cfg.root}/locks")
    await ensure_path(client, f"{cfg.root}/counters")
    for i in range(cfg.keys):
        await ensure_path(client, _lock_dir(cfg.root, i))
        await put(client, _counter_path(cfg.root, i), b"0")


class Lock:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.clients: dict[int, ZKClient] = {}
        self.routers: dict[int, EventRouter] = {}
        self.holders: Counter[int] = Counter()
        self.acquired: Counter[int] = Counter()  # per lock, whole run
        self.names: dict[int, set[str]] = {}

    async def open(self) -> None:
        for g in self.ctx.indices:
            router = EventRouter()
            self.routers[g] = router
            self.clients[g] = await self.ctx.connect(g, router)

    async def after_ready(self) -> None:
        pass

    def start(self) -> None:
        for g in self.ctx.indices:
            self.ctx.spawn(self._contend(g, g % self.cfg.keys))

    async def _contend(self, g: int, lock: int) -> None:
        ctx = self.ctx
        c = self.clients[g]
        router = self.routers[g]
        ldir = _lock_dir(self.cfg.root, lock)
        counter = _counter_path(self.cfg.root, lock)
        names = self.names.setdefault(lock, set())
        last_seq = -1
        while ctx.take():
            t0 = now_us()
            mine = await ctx.call("create", c.create(f"{ldir}/lock-", str(g).encode(),
                                                     CreateMode.EPHEMERAL_SEQUENTIAL))
            name = mine.rsplit("/", 1)[1]
            seq = int(name[-10:])
            if seq <= last_seq or name in names:
                ctx.fail(f"lock: sequential name {name} not unique/increasing (last {last_seq})")
            last_seq = seq
            names.add(name)
            while True:
                children = await ctx.call("children", c.get_children(ldir))
                children.sort(key=lambda n: n[-10:])
                if name not in children:
                    ctx.fail(f"lock: contender {g}'s node {name} vanished from {ldir}")
                    return
                i = children.index(name)
                if i == 0:
                    break
                pred = f"{ldir}/{children[i - 1]}"
                fut = router.expect(pred)
                st = await ctx.call("exists", c.exists(pred, watch=True))
                if st is None:
                    router.forget(pred, fut)
                    continue
                try:
                    ev = await asyncio.wait_for(fut, WATCH_TIMEOUT)
                except TimeoutError:
                    ctx.fail(f"lock: contender {g}: the watch on its predecessor {pred} never "
                             f"fired ({WATCH_TIMEOUT:.0f}s)")
                    router.forget(pred, fut)
                    continue
                if ev.type != EventType.NODE_DELETED:
                    ctx.fail(f"lock: predecessor watch delivered {ev}, expected NodeDeleted")
            ctx.rec.one("acquire", now_us() - t0, request=False)
            self.holders[lock] += 1
            if self.holders[lock] > 1:
                ctx.fail(f"lock: {self.holders[lock]} holders of {ldir} in one process")
            try:
                data, stat = await ctx.call("get", c.get(counter))
                try:
                    await ctx.call("set", c.set(counter, str(int(data or b"0") + 1).encode(),
                                                stat.version), expect=(BAD_VERSION,))
                except ZKError as e:
                    if e.code != BAD_VERSION:
                        raise
                    ctx.fail(f"lock: counter {counter} changed while {g} held the lock "
                             "(BadVersion): mutual exclusion violated")
                else:
                    self.acquired[lock] += 1
            finally:
                self.holders[lock] -= 1
            ctx.checker.checked += 1
            await ctx.call("delete", c.delete(mine))

    async def finish(self) -> dict[str, Any]:
        return {"acquired": dict(self.acquired)}


async def lock_verify(cfg: LoadConfig, client: ZKClient, facts: list[dict[str, Any]]
                      ) -> tuple[dict[str, Any], list[str]]:
    bad: list[str] = []
    total = 0
    for i in range(cfg.keys):
        want = sum(f["acquired"].get(i, f["acquired"].get(str(i), 0)) for f in facts)
        data, _ = await client.get(_counter_path(cfg.root, i))
        got = int(data or b"0")
        total += want
        if got != want:
            bad.append(f"lock: counter of lock {i} is {got} after {want} acquisitions")
        left = await client.get_children(_lock_dir(cfg.root, i))
        if left:
            bad.append(f"lock: nodes left in lock {i} after every session closed: {left[:3]}")
    return {"acquisitions": total}, bad


# --- watch-fanout --------------------------------------------------------------------------------


WF_OPEN_CONCURRENCY = 200  # watchers connecting at once
WF_HEAD = struct.Struct(">4siqq")  # magic, key, counter, send time of this write (ns)
WF_MAGIC = b"WFv2"


def _wf_path(root: str, k: int) -> str:
    return f"{root}/w/k{k}"


def _wf_history(size: int) -> int:
    """Send times a value carries: its own plus (size - head) / 4 older ones (µs deltas)."""
    return 1 + max(0, (size - WF_HEAD.size) // 4)


def wf_value(key: int, counter: int, history: Sequence[int], size: int) -> bytes:
    """history: send times (monotonic ns) of this key's writes, newest (this one) first."""
    n = _wf_history(size) - 1
    newest = history[0] if history else 0
    deltas = [min((newest - t) // 1000, 0xFFFFFFFF) for t in history[1 : n + 1]]
    deltas += [0xFFFFFFFF] * (n - len(deltas))
    out = WF_HEAD.pack(WF_MAGIC, key, counter, newest) + struct.pack(f">{n}I", *deltas)
    return out + b"." * max(0, size - len(out))


def wf_parse(data: bytes | None, size: int) -> tuple[int, int, list[int]] | None:
    """(key, counter, send times newest first; 0 where unknown) of a watch-fanout value."""
    n = _wf_history(size) - 1
    if data is None or len(data) < WF_HEAD.size + 4 * n:
        return None
    magic, key, counter, newest = WF_HEAD.unpack_from(data, 0)
    if magic != WF_MAGIC:
        return None
    deltas = struct.unpack_from(f">{n}I", data, WF_HEAD.size)
    return key, counter, [newest] + [0 if d == 0xFFFFFFFF else newest - d * 1000 for d in deltas]


async def watch_setup(cfg: LoadConfig, client: ZKClient) -> None:
    await ensure_path(client, f"{cfg.root}/w")
    size = max(cfg.value_size, WF_HEAD.size)
    for k in range(cfg.keys):
        await put(client, _wf_path(cfg.root, k), wf_value(k, 0, [], size))


class WatchFanout:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.size = max(self.cfg.value_size, WF_HEAD.size)
        self.clients: dict[int, ZKClient] = {}
        self.armed: dict[int, dict[int, int]] = {}  # watcher -> key -> counter watched
        self.busy: set[tuple[int, int]] = set()
        self.again: dict[tuple[int, int], int] = {}
        self.final: dict[int, int] = {}
        self.unknown = 0  # notifications whose send time fell out of the value's history
        self.events = 0
        self.last_event = time.monotonic()

    async def open(self) -> None:
        """Connects and arms the watchers WF_OPEN_CONCURRENCY at a time (10,000 of them one
        after the other would take minutes)."""
        gate = asyncio.Semaphore(WF_OPEN_CONCURRENCY)

        async def one(g: int) -> None:
            async with gate:
                await self._open_one(g)

        await asyncio.gather(*(one(g) for g in self.ctx.indices))

    async def _open_one(self, g: int) -> None:
        ctx = self.ctx
        if g == 0:
            self.clients[g] = await ctx.connect(g)
            return
        self.clients[g] = await ctx.connect(g, self._handler(g))
        self.armed[g] = {}
        for k in range(self.cfg.keys):
            data, _ = await self.clients[g].get(_wf_path(self.cfg.root, k), watch=True)
            parsed = wf_parse(data, self.size)
            if parsed is None:
                raise RuntimeError(f"watch-fanout: {_wf_path(self.cfg.root, k)} holds no "
                                   "value of the load")
            self.armed[g][k] = parsed[1]

    async def after_ready(self) -> None:
        pass

    def _handler(self, g: int) -> Callable[[WatchEvent], None]:
        prefix = f"{self.cfg.root}/w/k"

        def handler(ev: WatchEvent) -> None:
            t_ev = _ns()
            self.events += 1
            self.last_event = time.monotonic()
            if ev.type != EventType.NODE_DATA_CHANGED or not ev.path.startswith(prefix):
                self.ctx.fail(f"watch-fanout: watcher {g} got an unexpected event {ev}")
                return
            k = int(ev.path[len(prefix):])
            if (g, k) in self.busy:
                # The re-arming getData's reply (which set a new watch) may be in the same
                # read as this event; the coroutine has not resumed yet. One such event is
                # legitimate; a second one means a watch fired twice.
                if (g, k) in self.again:
                    self.ctx.fail(f"watch-fanout: watcher {g} got more events for {ev.path} "
                                  "than it had watches set")
                    return
                self.again[(g, k)] = t_ev
                return
            self.busy.add((g, k))
            self.ctx.spawn(self._rearm(g, k, t_ev))

        return handler

    async def _rearm(self, g: int, k: int, t_ev: int) -> None:
        """Read with a new watch after an event; handle an event of that new watch that
        arrived before this coroutine resumed."""
        try:
            while True:
                await self._rearm_once(g, k, t_ev)
                pending = self.again.pop((g, k), None)
                if pending is None:
                    return
                t_ev = pending
        finally:
            self.busy.discard((g, k))

    async def _rearm_once(self, g: int, k: int, t_ev: int) -> None:
        ctx = self.ctx
        data, _ = await ctx.call("get", self.clients[g].get(_wf_path(self.cfg.root, k),
                                                           watch=True))
        ctx.checker.checked += 1
        parsed = wf_parse(data, self.size)
        armed = self.armed[g][k]
        if parsed is None or parsed[0] != k:
            ctx.fail(f"watch-fanout: watcher {g} read {data[:16] if data else data!r} from key {k}")
            return
        _, counter, history = parsed
        trigger = armed + 1  # the first write after the watch was set fired it
        if counter < trigger:
            ctx.fail(f"watch-fanout: watcher {g} was notified for key {k} but read counter "
                     f"{counter}, not newer than {armed} (the value it watched)")
            return
        i = counter - trigger
        if i < len(history) and history[i]:
            ctx.rec.one("notify", (t_ev - history[i]) // 1000, request=False)
        else:
            # the trigger's send time fell out of the value's history: record the lower
            # bound (send time of the oldest write it carries) and count it
            known = [t for t in history if t]
            if known:
                ctx.rec.one("notify", (t_ev - known[-1]) // 1000, request=False)
            if ctx.rec.recording:
                self.unknown += 1
        self.armed[g][k] = counter

    def start(self) -> None:
        if 0 in self.clients:
            self.ctx.spawn(self._writer(self.clients[0]))

    async def _writer(self, c: ZKClient) -> None:
        ctx = self.ctx
        rate = self.cfg.rate or WATCH_FANOUT_RATE
        keys = self.cfg.keys
        counters = [0] * keys
        histories: list[list[int]] = [[] for _ in range(keys)]
        n = _wf_history(self.size)
        inflight: set[asyncio.Task[Any]] = set()
        t0 = time.monotonic()
        i = 0
        while ctx.take():
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            k = i % keys
            i += 1
            counters[k] += 1
            histories[k].insert(0, _ns())
            del histories[k][n:]
            value = wf_value(k, counters[k], histories[k], self.size)
            task = asyncio.ensure_future(ctx.call("set", c.set(_wf_path(self.cfg.root, k), value)))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=DRAIN_TIMEOUT)
        self.final = {k: counters[k] for k in range(keys)}

    async def finish(self) -> dict[str, Any]:
        """Wait until the watchers are quiet (every event handled), then report."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if not self.busy and time.monotonic() - self.last_event > 1.0:
                break
        return {
            "final": self.final,
            "armed": {g: dict(a) for g, a in self.armed.items()},
            "unknown": self.unknown,
        }


async def watch_verify(cfg: LoadConfig, client: ZKClient, facts: list[dict[str, Any]]
                       ) -> tuple[dict[str, Any], list[str]]:
    bad: list[str] = []
    final: dict[int, int] = {}
    for f in facts:
        if f["final"]:
            final = {int(k): v for k, v in f["final"].items()}
    missed = 0
    for f in facts:
        for g, armed in f["armed"].items():
            for k, counter in armed.items():
                want = final.get(int(k), 0)
                if counter != want:
                    missed += 1
                    if missed <= 5:
                        bad.append(f"watch-fanout: watcher {g} last saw counter {counter} of key "
                                   f"{k}, the writer's last is {want}: a watch event was lost")
    writes = sum(final.values())
    return {"writes": writes, "notify_lower_bounds": sum(f["unknown"] for f in facts)}, bad


# --- session-churn ---------------------------------------------------------------------------------


#: Session timeout asked for by sessions that will be left to expire (the server rounds it up
#: to its minimum, 2 ticks).
EXPIRE_TIMEOUT_MS = 4000


async def churn_setup(cfg: LoadConfig, client: ZKClient) -> None:
    await ensure_path(client, f"{cfg.root}/churn")


class Churn:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.router = EventRouter()
        self.observer: ZKClient | None = None
        self.expiring: set[asyncio.Task[Any]] = set()
        self.closed = 0
        self.expired = 0
        self.tick_ms = 2000

    async def open(self) -> None:
        self.observer = await self.ctx.connect(self.ctx.indices[0], self.router)

    async def after_ready(self) -> None:
        pass

    def start(self) -> None:
        for g in self.ctx.indices:
            self.ctx.spawn(self._slot(g))

    async def _slot(self, g: int) -> None:
        ctx = self.ctx
        obs = self.observer
        assert obs is not None
        rng = random.Random(self.cfg.seed * 104729 + g)
        n = 0
        while ctx.take():
            n += 1
            t0 = now_us()
            expire = rng.randrange(100) < self.cfg.expire_pct
            c = await self._connect(g, EXPIRE_TIMEOUT_MS if expire else None)
            paths = [f"{self.cfg.root}/churn/s{g}-{n}-{i}" for i in range(2)]
            made = await asyncio.gather(*(
                ctx.call("create", c.create(p, b"x", CreateMode.EPHEMERAL)) for p in paths
            ))
            if made != paths:
                ctx.fail(f"session-churn: creates returned {made}, expected {paths}")
            if expire:
                futs = [self.router.expect(p) for p in paths]
                stats = await asyncio.gather(*(ctx.call("exists", obs.exists(p, watch=True))
                                               for p in paths))
                if any(s is None or s.ephemeralOwner != c.session_id for s in stats):
                    ctx.fail(f"session-churn: ephemerals {paths} not owned by session "
                             f"{c.session_id:#x}: {stats}")
                timeout = c.timeout_ms
                assert c._transport is not None
                c._transport.abort()  # a crash: no closeSession, the session must expire
                c._shutdown(ZKError(-4, "abandoned"))
                task = asyncio.ensure_future(self._expiry(paths, futs, timeout, now_us()))
                self.expiring.add(task)
                task.add_done_callback(self.expiring.discard)
            else:
                await ctx.call("close", c.close())
                self.closed += 1
                stats = await asyncio.gather(*(ctx.call("exists", obs.exists(p)) for p in paths))
                ctx.checker.checked += 1
                if any(s is not None for s in stats):
                    ctx.fail(f"session-churn: ephemerals {paths} still exist after their "
                             "session's closeSession was answered")
            ctx.rec.one("session", now_us() - t0, request=False)

    async def _connect(self, g: int, timeout_ms: int | None) -> ZKClient:
        t = now_us()
        try:
            c = await self.ctx.connect(g, None, timeout_ms, track=False)
        except ZKError as e:
            self.ctx.error(e.code)
            raise
        self.ctx.rec.one("connect", now_us() - t)
        return c

    async def _expiry(self, paths: list[str], futs: list[asyncio.Future[WatchEvent]],
                      timeout_ms: int, t0: int) -> None:
        """The observer's watches must fire NodeDeleted within timeout + 2 ticks (+ slack)."""
        ctx = self.ctx
        limit = (timeout_ms + 2 * self.tick_ms) / 1000 * 1.5 + 2.0
        try:
            events = await asyncio.wait_for(asyncio.gather(*futs), limit)
        except TimeoutError:
            ctx.fail(f"session-churn: ephemerals {paths} of an abandoned session (timeout "
                     f"{timeout_ms} ms) were not deleted within {limit:.1f}s")
            return
        ctx.checker.checked += 1
        if any(ev.type != EventType.NODE_DELETED for ev in events):
            ctx.fail(f"session-churn: expiry delivered {events}, expected NodeDeleted")
        self.expired += 1
        ctx.rec.one("expire", now_us() - t0, request=False)

    async def finish(self) -> dict[str, Any]:
        if self.expiring:
            await asyncio.wait(set(self.expiring), timeout=30)
        return {"closed": self.closed, "expired": self.expired}


async def churn_verify(cfg: LoadConfig, client: ZKClient, facts: list[dict[str, Any]]
                       ) -> tuple[dict[str, Any], list[str]]:
    bad: list[str] = []
    left = await client.get_children(f"{cfg.root}/churn")
    if left:
        bad.append(f"session-churn: {len(left)} ephemerals left after every session ended, "
                   f"e.g. {left[:3]}")
    return {
        "sessions_closed": sum(f["closed"] for f in facts),
        "sessions_expired": sum(f["expired"] for f in facts),
    }, bad


# --- dispatch --------------------------------------------------------------------------------------


IMPL: dict[str, Any] = {
    "kafka": (Kafka, kafka_setup, kafka_verify),
    "lock": (Lock, lock_setup, lock_verify),
    "watch-fanout": (WatchFanout, watch_setup, watch_verify),
    "session-churn": (Churn, churn_setup, churn_verify),
}


async def preset_setup(cfg: LoadConfig) -> None:
    """Create the preset's nodes (idempotent)."""
    if cfg.preset == "watch-fanout" and cfg.ops is not None and cfg.processes > 1:
        raise ValueError("watch-fanout with --ops runs in one process (the writer's)")
    client = await connect(cfg)
    try:
        await ensure_path(client, cfg.root)
        await IMPL[str(cfg.preset)][1](cfg, client)
    finally:
        await client.close()


async def preset_verify(cfg: LoadConfig, parts: Sequence[PartResult]
                        ) -> tuple[dict[str, Any], list[str]]:
    """Cross-process checks after the run (every load session is closed by now)."""
    client = await connect(cfg)
    try:
        facts = [p.extra for p in parts]
        return await IMPL[str(cfg.preset)][2](cfg, client, facts)
    finally:
        await client.close()


async def run_preset_part(
    cfg: LoadConfig,
    indices: Sequence[int],
    measure_shared: bool,
    ready: Callable[[], Any] | None = None,
    progress: ProgressFn | None = None,
) -> PartResult:
    """One process's share of a preset: open, (barrier), run the window, drain, close."""
    ctx = Ctx(cfg, indices)
    impl = IMPL[str(cfg.preset)][0](ctx)
    cpu = CpuWindow(cfg.server_pid if measure_shared else None, machine=measure_shared)
    loop = asyncio.get_running_loop()
    elapsed = 0.0
    facts: dict[str, Any] = {}
    try:
        await impl.open()
        if ready is not None:
            await loop.run_in_executor(None, ready)
        await impl.after_ready()
        ctx.running = True
        impl.start()

        def begin() -> None:
            if cfg.ops is not None:
                share = cfg.ops * len(indices) // cfg.sessions
                if cfg.preset == "watch-fanout":
                    share = cfg.ops if 0 in indices else 0
                ctx.budget = max(share, 1 if 0 in indices else 0)

        def end() -> None:
            ctx.running = False

        def errors_now() -> int:
            return sum(ctx.errors.values())

        elapsed = await measure_window(
            warmup=cfg.warmup,
            duration=None if cfg.ops is not None else cfg.duration,
            limit=3600.0,
            rec=ctx.rec, cpu=cpu, begin=begin, end=end, collect=lambda: None,
            errors_now=errors_now,
            finished=ctx.budget_done if cfg.ops is not None else None,
            progress=progress,
        )
        ctx.running = False
        await ctx.drain()
        facts = await asyncio.wait_for(impl.finish(), DRAIN_TIMEOUT * 3)
        for router in getattr(impl, "routers", {}).values():
            for ev in router.unexpected:
                ctx.fail(f"{cfg.preset}: unexpected watch event {ev}")
    finally:
        ctx.running = False
        for t in ctx.tasks:
            if not t.done():
                t.cancel()
        await ctx.close_all()
    own, srv, mach = cpu.result
    rec = ctx.rec
    everything, _service, kinds = rec.encoded()
    return PartResult(
        elapsed=elapsed,
        errors=dict(ctx.errors),
        errors_total=dict(ctx.errors_total),
        histogram=everything,
        service="",
        kinds=kinds,
        request_kinds=sorted(rec.request_kinds),
        timeline=rec.timeline,
        client_cpu=own,
        server_cpu=srv,
        machine_cpu=mach,
        checked=ctx.checker.checked,
        violations=ctx.checker.violations,
        messages=ctx.checker.messages,
        failure=ctx.failure,
        extra=facts,
    )
