"""The simulated world: servers, clients, network, disks and clocks, driven by one seed.

Everything happens as events on one queue ordered by simulated time (then by the order they
were scheduled), and every random choice comes from the seeded generator, so a seed replays
a run exactly. A run has three phases: faults (for `steps` events: crashes, torn writes,
pauses longer than session timeouts, partitions of any shape, one-way cuts, black holes, slow
links and disks, failing disks, clock drift and jumps, dropped client connections, crashes
at chosen points such as right after a truncation or a snapshot install), healing (every
fault is undone; the ensemble must elect a leader and every client must complete a write
within LIVENESS_US), and the final checks (one committed state everywhere, ephemerals, and
the clients' history checked for linearizability).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastzk.node import Limits
from fastzk.quorum.replica import LEADER, QuorumConfig
from fastzk.sim.bugs import split
from fastzk.sim.checks import Checks, Violation
from fastzk.sim.client import SimClient
from fastzk.sim.network import Network
from fastzk.sim.server import TICK_MS, SimServer

LIVENESS_US = 60_000_000  # after healing, everything must work again within this
TRACE_EVENTS = 200
MAX_SESSION_TICKS = 20  # maxSessionTimeout in ticks


@dataclass
class Result:
    seed: int
    ok: bool
    kind: str = ""
    message: str = ""
    step: int = 0
    events: int = 0
    ops: int = 0
    faults: int = 0
    sim_s: float = 0.0
    wall_s: float = 0.0
    digest: str = ""
    linearizability: str = "not checked"
    trace: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        status = "ok" if self.ok else f"VIOLATION {self.kind} at step {self.step}"
        return (f"seed {self.seed}: {status}; {self.events} events, {self.ops} client ops, "
                f"{self.faults} faults, {self.sim_s:.1f} s simulated in {self.wall_s:.2f} s; "
                f"history {self.linearizability}; run digest {self.digest[:16]}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class World:
    def __init__(self, seed: int, servers: int = 3, steps: int = 20_000, clients: int = 5,
                 bugs: frozenset[str] = frozenset()) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.steps = steps
        self.now_us = 0
        self.queue: list[tuple[int, int, Callable[..., Any], tuple[Any, ...], Any]] = []
        self.seq = 0
        self.events = 0
        self.faults = 0
        self.trace: deque[tuple[int, Any, tuple[Any, ...]]] = deque(maxlen=TRACE_EVENTS)
        self.history: list[dict[str, Any]] = []
        self.processes = 0
        self.clients_stopped = False
        ids = list(range(1, servers + 1))
        quorum_bugs, node_bugs, shell_bugs = split(bugs)
        self.membership = "\n".join(
            f"server.{i}=127.0.0.1:{2887 + i}:{3887 + i}:participant;127.0.0.1:{2180 + i}"
            for i in ids).encode()
        self.checks = Checks(self, ids)
        self.net = Network(self, ids)
        rng = self.rng
        if rng.random() < 0.5:
            self.net.duplicate_rate = 0.02
        if rng.random() < 0.5:
            self.net.stale_rate = 0.3
        sync_window = rng.choice((4, 30, 1000))  # small: followers often need a snapshot
        self.servers = {
            sid: SimServer(
                self, sid,
                QuorumConfig(sid, tuple(ids), election_ticks=10, looking_ticks=3,
                             check_quorum_ticks=10, snapshot_ticks=40, max_batch_entries=16,
                             bugs=quorum_bugs),
                Limits(tick_ms=TICK_MS, min_session_timeout=2 * TICK_MS,
                       max_session_timeout=MAX_SESSION_TICKS * TICK_MS, sync_window_txns=sync_window,
                       sync_window_bytes=1 << 20, bugs=node_bugs),
                shell_bugs)
            for sid in ids}
        self.clients = [SimClient(self, cid) for cid in range(clients)]

    # --- the event queue -----------------------------------------------------------------
    def at(self, delay_us: int, fn: Callable[..., Any], *args: Any,
           target: SimServer | None = None) -> None:
        """Runs fn(*args) `delay_us` from now; an event for a paused `target` waits for it."""
        self.seq += 1
        heapq.heappush(self.queue, (self.now_us + delay_us, self.seq, fn, args, target))

    def _one(self) -> None:
        when, _, fn, args, target = heapq.heappop(self.queue)
        if target is not None and target.paused_until_us > when:
            self.seq += 1
            heapq.heappush(self.queue, (target.paused_until_us, self.seq, fn, args, target))
            return
        self.now_us = when
        self.events += 1
        self.trace.append((when, fn, args))
        fn(*args)

    def trace_event(self, what: str, sid: int, detail: str = "") -> None:
        self.trace.append((self.now_us, f"** {what} server.{sid} {detail}", ()))

    def _trace_lines(self) -> list[str]:
        """The last events, readable (formatted only when a run fails)."""
        lines = []
        for when, fn, args in self.trace:
            if isinstance(fn, str):
                lines.append(f"{when / 1e6:.6f} {fn}")
                continue
            name = getattr(fn, "__qualname__", repr(fn))
            detail = self.net.describe(args) if name == "Network._deliver" else ", ".join(
                _short(a) for a in args)
            lines.append(f"{when / 1e6:.6f} {name} {detail}")
        return lines

    # --- clients' history ----------------------------------------------------------------
    def new_process(self) -> int:
        self.processes += 1
        return self.processes

    def record(self, client: SimClient, kind: str, f: str, key: str | None,
               value: Any) -> None:
        event: dict[str, Any] = {"process": client.process, "type": kind, "f": f}
        if key is not None:
            event["key"] = key
        event["value"] = value
        event["session"] = f"{client.session_id:#x}"
        event["server"] = client.server
        event["time"] = self.now_us / 1e6
        self.history.append(event)

    # --- faults ----------------------------------------------------------------------------
    def restart(self, sid: int) -> None:
        server = self.servers[sid]
        if server.node is None:
            self.trace_event("restart", sid)
            server.start()

    def _down(self) -> int:
        return sum(1 for s in self.servers.values() if s.node is None)

    def _fault(self) -> None:
        if self.clients_stopped:
            return
        rng = self.rng
        self.faults += 1
        ids = sorted(self.servers)
        sid = rng.choice(ids)
        server = self.servers[sid]
        kind = rng.choices(
            ("crash", "crash-at", "pause", "isolate", "split", "one-way", "black-hole",
             "slow-link", "slow-disk", "disk-error", "clock", "client-drop"),
            (4, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 2))[0]
        minority = (len(ids) - 1) // 2
        self.trace_event(kind, sid)
        if kind in ("crash", "crash-at", "disk-error") and server.node is not None \
                and self._down() >= minority and rng.random() < 0.8:
            kind = "client-drop"  # mostly keep a quorum up while faults go on
        if kind == "crash" and server.node is not None:
            server.crash(torn=rng.random() < 0.5)
            self.at(rng.randrange(100_000, 3_000_000), self.restart, sid)
        elif kind == "crash-at":
            server.crash_at = rng.choice(("append", "truncate", "install", "snapshot"))
        elif kind == "pause" and server.node is not None:
            # SIGSTOP: events for it wait (max: a later pause never cuts an earlier one short,
            # which would reorder what waited behind it)
            server.paused_until_us = max(server.paused_until_us,
                                         self.now_us + rng.randrange(200_000, 5_000_000))
        elif kind == "isolate":
            links = [link for (i, j), link in sorted(self.net.links.items()) if sid in (i, j)]
            self._cut(links)
        elif kind == "split":
            group = set(rng.sample(ids, rng.randrange(1, len(ids))))
            self._cut([link for (i, j), link in sorted(self.net.links.items())
                       if (i in group) != (j in group)])
        elif kind == "one-way":
            self._cut([self.net.links[sid, rng.choice([i for i in ids if i != sid])]])
        elif kind == "black-hole":
            link = self.net.links[sid, rng.choice([i for i in ids if i != sid])]
            self.net.set_hold(link, True)
            self.at(rng.randrange(100_000, 3_000_000), self.net.set_hold, link, False)
        elif kind == "slow-link":
            link = self.net.links[sid, rng.choice([i for i in ids if i != sid])]
            link.delay_us = rng.randrange(5_000, 200_000)
            self.at(rng.randrange(500_000, 3_000_000), setattr, link, "delay_us", 0)
        elif kind == "slow-disk":
            server.disk.slow = rng.choice((10, 50))
            self.at(rng.randrange(500_000, 3_000_000), setattr, server.disk, "slow", 1)
        elif kind == "disk-error":
            server.disk.fail_next = rng.choice(("EIO", "ENOSPC"))
        elif kind == "clock":
            if rng.random() < 0.5:
                server.set_rate(rng.uniform(0.9, 1.1))
            else:  # the wall clock jumps: only txn times may change
                server.wall_offset_ms += rng.randrange(-3_600_000, 3_600_000)
        else:
            client = rng.choice(self.clients)
            if client.conn is not None:
                client.drop_connection()
        self.at(rng.randrange(100_000, 1_500_000), self._fault)

    def _cut(self, links: list[Any]) -> None:
        for link in links:
            self.net.set_cut(link, True)
        self.at(self.rng.randrange(200_000, 3_000_000), self._uncut, links)

    def _uncut(self, links: list[Any]) -> None:
        for link in links:
            link.cut = False

    def _heal(self) -> None:
        self.clients_stopped = True
        self.net.heal()
        self.net.duplicate_rate = self.net.stale_rate = 0.0
        for sid, server in sorted(self.servers.items()):
            server.crash_at = None  # pauses end by themselves (within 5 s)
            server.disk.slow = 1
            server.disk.fail_next = None
            if server.node is None:
                self.restart(sid)
        for client in self.clients:
            client.schedule()

    def _settled(self) -> bool:
        nodes = [s.node for s in self.servers.values()]
        if any(node is None or not node.serving for node in nodes):
            return False
        leaders = [n for n in nodes if n is not None and n.replica.role == LEADER]
        if len(leaders) != 1:
            return False
        applied = {n.applied_zxid for n in nodes if n is not None}
        if len(applied) != 1 or leaders[0].replica.commit != leaders[0].replica.log.last:
            return False
        return all(c.probe_done and not c.pending for c in self.clients)

    # --- the run -----------------------------------------------------------------------------
    def run(self, check_history: bool = True) -> Result:
        started = time.perf_counter()
        result = Result(self.seed, True)
        try:
            for sid in sorted(self.servers):
                self.servers[sid].start()
            for client in self.clients:
                self.at(self.rng.randrange(0, 100_000), client.start)
            self.at(self.rng.randrange(300_000, 1_000_000), self._fault)
            checked_at = 0
            while self.events < self.steps and self.queue:
                self._one()
                if self.events - checked_at >= 500:
                    checked_at = self.events
                    self.checks.ephemerals(final=False)
            self._heal()
            self._until_settled()
            # sessions whose clients gave up on them expire within their timeout: only
            # then must their ephemerals be gone everywhere
            self._until_settled(self._sessions_gone)
            self._final(result, check_history)
        except Violation as violation:
            self._failed(result, violation.kind, violation.message)
        except Exception as error:  # noqa: BLE001 - production code raised: a finding too
            where = traceback.extract_tb(error.__traceback__)[-1]
            self._failed(result, "exception", f"{type(error).__name__}: {error} (at "
                         f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno})")
        result.events = self.events
        result.ops = sum(c.ops for c in self.clients)
        result.faults = self.faults
        result.sim_s = self.now_us / 1e6
        result.wall_s = time.perf_counter() - started
        result.history = self.history
        result.digest = self._digest()
        return result

    def _until_settled(self, also: Callable[[], bool] | None = None) -> None:
        deadline = self.now_us + LIVENESS_US
        while True:
            for _ in range(200):
                self._one()
            if self._settled() and (also is None or also()):
                return
            if self.now_us > deadline:
                self.checks.fail("liveness", "the ensemble did not recover within "
                                 f"{LIVENESS_US / 1e6:.0f} s of the faults ending: "
                                 + self._describe())

    def _failed(self, result: Result, kind: str, message: str) -> None:
        result.ok = False
        result.kind = kind
        result.message = message
        result.step = self.events
        result.trace = self._trace_lines()

    def _final(self, result: Result, check_history: bool) -> None:
        nodes = {sid: s.node for sid, s in sorted(self.servers.items())}
        digests = {sid: (n.applied_zxid, n.tree.digest()) for sid, n in nodes.items()
                   if n is not None}
        if len(set(digests.values())) != 1:
            self.checks.fail("digest", f"servers differ after healing: {digests}")
        self.checks.ephemerals(final=True)
        if not check_history:
            return
        try:
            from fastzk.check import check_history as check
        except ImportError:  # the checker is not part of this build
            return
        verdict = check(self.history, "znode", time_limit_s=30.0)
        result.linearizability = verdict.verdict
        if verdict.verdict == "not linearizable":
            self.checks.fail("linearizability", verdict.report())

    def _sessions_gone(self) -> bool:
        """Sessions whose clients were told they are closed or expired are gone everywhere
        (an expiry the clients learned before the ensemble committed it takes up to a
        session timeout after a new leader is elected)."""
        gone = self.checks.gone
        return not any(server.node is not None and any(s in server.node.sessions for s in gone)
                       for server in self.servers.values())

    def _describe(self) -> str:
        parts = []
        for sid, server in sorted(self.servers.items()):
            node = server.node
            if node is None:
                parts.append(f"server.{sid} down")
                continue
            parts.append(f"server.{sid} {node.role} epoch {node.replica.epoch} applied "
                         f"{node.applied_zxid:#x} serving {node.serving}")
        stuck = [c.cid for c in self.clients if not c.probe_done or c.pending]
        alive = sorted({f"{s:#x}" for s in self.checks.gone for server in self.servers.values()
                        if server.node is not None and s in server.node.sessions})
        return "; ".join(parts) + f"; clients not done: {stuck}; sessions said to be gone " \
            f"but alive: {alive}"

    def _digest(self) -> str:
        """Identifies the run: the same seed must give the same digest, on any machine."""
        h = hashlib.sha256()
        for event in self.history:
            h.update(json.dumps(event, sort_keys=True).encode())
        for sid, server in sorted(self.servers.items()):
            node = server.node
            state = (sid, node.applied_zxid, node.tree.digest()) if node is not None else (sid,)
            h.update(repr(state).encode())
        h.update(repr((self.events, self.now_us)).encode())
        return h.hexdigest()
