"""3-server ensembles for bench/compare.py: start, CPU of every member, leader failover.

The ensembles are fastzk/nemesis/cluster.py's (the same zoo.cfg for ZooKeeper's QuorumPeerMain and
``fastzk serve``; every process stopped by PID; every wait bounded). This module adds what a
benchmark needs on top:

* :func:`ensemble` starts one with the benchmark's zoo.cfg keys and ZooKeeper JVM flags.
* :class:`EnsembleCpu` samples the CPU of every member over a load run's measured window,
  through the load generator's per-interval progress callback (the load generator itself
  samples one server PID only).
* :func:`failover_round` SIGKILLs the leader under a writer session and idle sessions, all
  kazoo clients on the whole connect string, and times (a) the first successful write issued
  after the kill and (b) the moment every idle session is CONNECTED again with its own
  session id. Times are ``time.monotonic()`` taken in this process: the kill instant is just
  before the SIGKILL, a write's time is when its reply arrived (kazoo's completion callback).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from fastzk.load.cpu import machine_busy_seconds, proc_cpu_seconds
from fastzk.load.latency import Interval
from fastzk.nemesis.cluster import Cluster, ClusterTimeout, Kind, Member

#: Voting members of every benchmark ensemble.
VOTERS = 3
#: Requested session timeout of the failover clients (s); servers clamp it to 2-20 ticks,
#: so at tickTime 200 it is 4 s.
SESSION_TIMEOUT = 10.0
#: The writer waits this long for one setData before it issues the next one (s).
WRITE_WAIT = 0.5
#: Pause after a write failed at once (connection loss), so the writer does not spin (s).
RETRY_PAUSE = 0.01
#: kazoo's reconnect back-off: short and capped, so the clients measure the servers.
RECONNECT = {"max_tries": -1, "delay": 0.05, "max_delay": 0.25}
#: Bound of one failover (from the kill until every session is back), s.
ROUND_TIMEOUT = 60.0
#: Every session must stay CONNECTED this long before a failover counts as over (s).
STABLE = 1.0
#: Writes acknowledged before the leader is killed (the writer is warm and connected).
WARM_WRITES = 20
WRITE_PATH = "/bench-failover"
STARTED_BY_KAZOO = 30.0  # bound of one kazoo client's start (s)

logging.getLogger("kazoo").setLevel(logging.ERROR)  # "connection dropped" x 21 per round


@contextmanager
def ensemble(kind: str, tick: int, cfg: Mapping[str, Any],
             jvm_flags: Sequence[str]) -> Iterator[Cluster]:
    """A running 3-voter ensemble of *kind* at tickTime *tick* with zoo.cfg keys *cfg*;
    ZooKeeper's JVM gets *jvm_flags* instead of the test suite's start-up-tuned ones."""
    # start_server's base_jvm_flags reaches it through the members' start arguments
    # (Cluster passes cfg on to servers.start_server; ignored for fastzk).
    with Cluster(cast(Kind, kind), VOTERS, tick_time=tick,
                 cfg={**cfg, "tickTime": tick, "base_jvm_flags": list(jvm_flags)}) as cluster:
        yield cluster


def member_pids(cluster: Cluster) -> dict[int, int]:
    """{sid: pid} of the running members."""
    return {m.sid: m.process.pid for m in cluster.members if m.process is not None and m.running}


class EnsembleCpu:
    """CPU of every member and of the machine between a load run's first and last progress
    interval (the measured window less its first 0.5 s), in % of one core.

    Pass the instance as ``run_load(cfg, progress)``; read :meth:`result` afterwards.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.pids = member_pids(cluster)
        self.first: tuple[float, dict[int, float | None], float | None] | None = None
        self.last: tuple[float, dict[int, float | None], float | None] | None = None

    def _sample(self) -> tuple[float, dict[int, float | None], float | None]:
        return (time.monotonic(), {sid: proc_cpu_seconds(pid) for sid, pid in self.pids.items()},
                machine_busy_seconds())

    def __call__(self, _item: Interval) -> None:
        if self.first is None:
            self.first = self._sample()
        else:
            self.last = self._sample()

    def result(self) -> dict[str, Any] | None:
        """{"members": {sid: cpu %}, "servers": sum, "machine": machine %} or None when the
        window was too short (fewer than two intervals)."""
        if self.first is None or self.last is None:
            return None
        (t0, cpu0, m0), (t1, cpu1, m1) = self.first, self.last
        wall = max(t1 - t0, 1e-9)
        members: dict[int, float | None] = {}
        for sid, before in cpu0.items():
            after = cpu1.get(sid)
            members[sid] = (None if before is None or after is None
                            else round((after - before) / wall * 100, 1))
        known = [v for v in members.values() if v is not None]
        return {
            "members": members,
            "servers": round(sum(known), 1) if known else None,
            "machine": None if m0 is None or m1 is None else round((m1 - m0) / wall * 100, 1),
        }


# --- failover ---------------------------------------------------------------------------------


def _client(hosts: Sequence[str]) -> KazooClient:
    """A started kazoo session that tries *hosts* in this order (no shuffling)."""
    zk = KazooClient(hosts=",".join(hosts), timeout=SESSION_TIMEOUT, randomize_hosts=False,
                     connection_retry=KazooRetry(**RECONNECT))
    try:
        zk.start(timeout=STARTED_BY_KAZOO)
    except BaseException:
        _close(zk)  # a start that timed out leaves kazoo's connection thread trying
        raise
    return zk


def _rotated(cluster: Cluster, first: int) -> list[str]:
    """The ensemble's client addresses, starting with member index *first*."""
    addrs = [m.connect_string() for m in cluster.members]
    return addrs[first:] + addrs[:first]


@dataclass
class Watched:
    """An idle session and the (monotonic time, state) of each of its state changes."""

    zk: KazooClient
    session_id: int
    events: list[tuple[float, str]] = field(default_factory=list)

    def listen(self, state: str) -> None:
        self.events.append((time.monotonic(), state))

    def back_at(self, since: float) -> float | None:
        """When the session was CONNECTED again after its last disconnection after *since*
        (*since* itself if it never disconnected); None while it is disconnected."""
        mine = [(t, s) for t, s in list(self.events) if t >= since]
        if not mine:
            return since
        t, state = mine[-1]  # kazoo reports transitions only
        return t if state == KazooState.CONNECTED else None

    def disconnected_after(self, since: float) -> bool:
        return any(t >= since and s != KazooState.CONNECTED for t, s in list(self.events))

    @property
    def same_session(self) -> bool:
        cid = self.zk.client_id
        return cid is not None and cid[0] == self.session_id

    @property
    def lost(self) -> bool:
        """The session expired (or kazoo replaced it by a new one)."""
        return any(s == KazooState.LOST for _, s in list(self.events)) or (
            self.zk.connected and not self.same_session)


class Writer:
    """One kazoo session writing setData synchronously in a loop (each wait bounded by
    WRITE_WAIT), recording (issued, answered, ok) of every write."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.zk = _client(hosts)
        try:
            self.zk.ensure_path(WRITE_PATH)
        except BaseException:
            _close(self.zk)
            raise
        self.session_id: int = self.zk.client_id[0]
        self.done: list[tuple[float, float, bool]] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="failover-writer", daemon=True)
        self.thread.start()

    def _record(self, issued: float, result: IAsyncResult) -> None:
        answered = time.monotonic()
        with self.lock:
            self.done.append((issued, answered, result.successful()))

    def _run(self) -> None:
        value = b"x" * 100
        while not self.stop_event.is_set():
            issued = time.monotonic()
            result = self.zk.set_async(WRITE_PATH, value)
            result.rawlink(lambda r, t=issued: self._record(t, r))
            try:
                result.get(timeout=WRITE_WAIT)
            except KazooTimeoutError:
                continue  # still queued or in flight: its answer is recorded when it comes
            except KazooException:
                self.stop_event.wait(RETRY_PAUSE)

    def acked(self, since: float = 0.0) -> int:
        """Successful writes issued at or after *since*."""
        with self.lock:
            return sum(ok for issued, _, ok in self.done if issued >= since)

    def first_ok_after(self, since: float) -> float | None:
        """Answer time of the first successful write issued at or after *since*."""
        with self.lock:
            times = [answered for issued, answered, ok in self.done if ok and issued >= since]
        return min(times) if times else None

    @property
    def same_session(self) -> bool:
        cid = self.zk.client_id
        return cid is not None and cid[0] == self.session_id

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(WRITE_WAIT + 5)
        _close(self.zk)


def _close(zk: KazooClient) -> None:
    try:
        zk.stop()  # bounded by kazoo (10 s at most for its connection thread here)
    except KazooException:
        pass
    zk.close()


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ClusterTimeout(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.01)


def _recovery(watched: list[Watched], writer: Writer, t_kill: float) -> dict[str, Any]:
    """Wait (bounded) until the writer wrote again and every idle session is CONNECTED with
    its own session id, unbroken for STABLE s; seconds from *t_kill*, or ``failed``."""
    deadline = t_kill + ROUND_TIMEOUT
    settled: tuple[float, list[float | None]] | None = None
    while True:
        now = time.monotonic()
        back = [w.back_at(t_kill) for w in watched]
        write_at = writer.first_ok_after(t_kill)
        whole = all(b is not None and w.same_session for w, b in zip(watched, back, strict=True))
        if whole and write_at is not None:
            if settled is None or settled[1] != back:
                settled = (now, back)
            elif now - settled[0] >= STABLE:
                return {"write_s": round(write_at - t_kill, 3),
                        "sessions_s": round(max(b for b in back if b is not None) - t_kill, 3)}
        else:
            settled = None
        lost = sum(w.lost for w in watched)
        if lost or now > deadline:
            missing = [f"{w.session_id:#x}:{w.zk.state}" for w, b in zip(watched, back, strict=True)
                       if b is None or not w.same_session]
            return {
                "write_s": None if write_at is None else round(write_at - t_kill, 3),
                "sessions_s": None,
                "failed": (f"{lost} session(s) expired or replaced" if lost else
                           f"not over within {ROUND_TIMEOUT:.0f}s")
                + ("; no successful write after the kill" if write_at is None else "")
                + (f"; sessions not back: {missing[:10]}" if missing else ""),
            }
        time.sleep(0.01)


def failover_round(cluster: Cluster, sessions: int) -> dict[str, Any]:
    """SIGKILL the leader with a writer and *sessions* idle sessions connected; restart it.

    The writer tries the leader first (it loses its own server); idle session *i* tries
    member ``i % 3`` first, so about a third of them sit on the leader. Returns seconds from
    the kill to: ``write_s`` (first successful write issued after the kill), ``sessions_s``
    (every idle session CONNECTED with its own session id, unbroken for STABLE s) and
    ``election_s`` (the survivors report leader and follower in ``srvr``, polled every
    0.1 s); ``failed`` says what was seen instead when the round did not complete. Raises
    ClusterTimeout when the ensemble does not come back whole (the killed member restarted
    and following) within the bounds.
    """
    leader = cluster.wait_for_leader()
    index = cluster.members.index(leader)
    survivors: list[Member] = [m for m in cluster.members if m is not leader]
    watched: list[Watched] = []
    writer: Writer | None = None
    rec: dict[str, Any] = {"leader": leader.sid, "sessions": sessions,
                           "sessions_on_leader": sum(i % VOTERS == index for i in range(sessions))}
    try:
        for i in range(sessions):
            zk = _client(_rotated(cluster, i % VOTERS))
            w = Watched(zk, zk.client_id[0])
            watched.append(w)
            zk.add_listener(w.listen)
        writer = Writer(_rotated(cluster, index))
        warm = writer
        _wait_for(lambda: warm.acked() >= WARM_WRITES, 30, "writer warm-up")
        t_kill = time.monotonic()
        leader.kill()
        rec["new_leader"] = cluster.wait_for_leader(ROUND_TIMEOUT, members=survivors).sid
        rec["election_s"] = round(time.monotonic() - t_kill, 3)
        rec.update(_recovery(watched, writer, t_kill))
        rec["writes_after_kill"] = writer.acked(t_kill)
        rec["sessions_disconnected"] = sum(w.disconnected_after(t_kill) for w in watched)
        rec["writer_kept_session"] = writer.same_session
    finally:
        if writer is not None:
            writer.close()
        for w in watched:
            _close(w.zk)
    leader.restart()
    cluster.wait_for_leader(ROUND_TIMEOUT)  # all three back before the next round
    return rec
