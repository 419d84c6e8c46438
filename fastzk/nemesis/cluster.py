"""Run a real ensemble (3 or 5 voters, optional observers) for replication tests.

One harness drives Apache ZooKeeper 3.8 (``QuorumPeerMain`` from the Debian
jar) and fastzk (``python -m fastzk serve zoo.cfg``) alike: both read the same
zoo.cfg (``server.N`` lines, ``dataDir/myid``) and both report their role in
``srvr``'s ``Mode:`` line, which is all the harness looks at.  So a scenario
written against ZooKeeper (tests/test_cluster_reference.py proves the harness
that way) runs unchanged against fastzk.

Processes are started and stopped through fastzk/nemesis/servers.py (own process
group, stopped by PID, atexit safety net).  With ``proxied=True`` every
server-to-server connection goes through fastzk/nemesis/netproxy.py: server *i*'s
zoo.cfg names server *j*'s quorum and election ports as the ports of the
directed links i->j, so a test can cut, black-hole or heal any direction or
isolate a member.  A directed link carries the connections that *i* opens to
*j* (both ways); ZooKeeper keeps only the election connection opened by the
larger id, so faults meant to separate two members should cut both
directions, as :meth:`Cluster.isolate` and :meth:`Cluster.partition` do.

Every wait is bounded and fails with :class:`ClusterTimeout`, whose message
holds every member's mode and log tail: a replication failure on a shared
2-core machine must be diagnosable from the test report alone.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from fastzk.nemesis.netproxy import Link, LinkState, NetProxy
from fastzk.nemesis.servers import (
    LOOPBACK,
    ZK_CLASSPATH,
    ServerProcess,
    four_letter_word,
    free_port,
    start_server,
)

__all__ = ["Cluster", "ClusterTimeout", "Kind", "Member", "zookeeper_installed"]

Kind = Literal["zookeeper", "fastzk"]

#: Bound for the first election: every member is a fresh process (a JVM each for ZooKeeper),
#: all starting at once on a possibly busy 2-core machine.
START_TIMEOUT = 120.0
#: Default bound for the waits a test makes (elections, catching up).
WAIT_TIMEOUT = 60.0
POLL_INTERVAL = 0.1
LOG_TAIL_LINES = 40

#: log4j configuration of ZooKeeper members: elections and learner sync are logged at INFO
#: (the suite's WARN default would leave a failed election undiagnosable), but not the
#: connections of the harness's own ``srvr`` polls, which would bury everything else.
ZK_LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n
log4j.logger.org.apache.zookeeper.server.NIOServerCnxn=WARN
log4j.logger.org.apache.zookeeper.server.NIOServerCnxnFactory=WARN
"""

_MODE_RE = re.compile(r"^Mode: *(\w+)", re.MULTILINE)


def zookeeper_installed() -> bool:
    """True when Apache ZooKeeper can be run (its jar and a ``java``), for skip marks."""
    jars = [p for p in ZK_CLASSPATH.split(":") if p.endswith(".jar")]
    return shutil.which("java") is not None and all(os.path.exists(p) for p in jars)


_PORTS = random.Random()  # which free ports a cluster gets does not reach any result


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out as the source port of outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _distinct_free_ports(count: int) -> list[int]:
    """*count* free ports, all different, below the kernel's ephemeral range when it leaves
    room: a port picked from inside it can be taken meanwhile as the source port of some
    outgoing connection, and ZooKeeper binds its quorum port only once it becomes leader (a
    reference test once failed with "Leader failed to initialize any of the following
    sockets")."""
    low = _ephemeral_low()
    ports: list[int] = []
    while len(ports) < count:
        if low > 12000:
            port = _PORTS.randrange(10000, low)
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        else:
            port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _parse_mode(srvr_reply: str) -> str | None:
    match = _MODE_RE.search(srvr_reply)
    return match.group(1) if match else None


class ClusterTimeout(AssertionError):
    """A bounded wait on the ensemble expired; the message describes every member."""


class Member:
    """One ensemble member: its ports, directories and (once started) process.

    The process object lives across restarts, so the PID changes but the log
    file, config and dataDir stay the same.
    """

    def __init__(
        self, kind: Kind, sid: int, observer: bool, root: Path, ports: Iterator[int]
    ) -> None:
        self.kind = kind
        self.sid = sid
        self.observer = observer
        self.dir = root / f"server{sid}"
        self.data_dir = self.dir / "data"
        self.client_port = next(ports)
        self.quorum_port = next(ports)
        self.election_port = next(ports)
        self.admin_port = next(ports)
        self.process: ServerProcess | None = None
        self.paused = False
        self._start_args: dict[str, Any] = {}

    def __repr__(self) -> str:
        role = "observer" if self.observer else "voter"
        pid = self.process.pid if self.process else None
        return f"<Member {self.sid} {role} {self.connect_string()} pid={pid} {self.state}>"

    # -- lifecycle -----------------------------------------------------------------------

    def _prepare(self, cfg: Mapping[str, Any], jvm_flags: Iterable[str]) -> None:
        """Record the zoo.cfg keys and write ``myid``; the start happens in :meth:`start`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "myid").write_text(f"{self.sid}\n")
        self._start_args = {"jvm_flags": list(jvm_flags), **cfg}

    def start(self) -> None:
        """Spawn the process without waiting: a member serves only once a quorum is up."""
        if self.process is None:
            self.process = start_server(self.kind, self.dir, wait=False, **self._start_args)
        else:
            self.process.restart(wait=False)
        self.paused = False

    def restart(self) -> None:
        """SIGTERM (if running), then start again on the same config and dataDir."""
        self.start()

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after servers.py's bound): a clean shutdown."""
        if self.process is not None:
            self.process.stop()
        self.paused = False

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed beyond what the server already synced."""
        if self.process is not None:
            self.process.kill()
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: sockets stay open but nothing answers (a hung or GC-stalled server)."""
        if self.process is not None and self.process.running:
            self.process.pause()
            self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.process is not None:
            self.process.resume()
        self.paused = False

    def wipe(self) -> None:
        """Delete the dataDir's contents except ``myid`` (a replaced disk); must be down."""
        if self.running:
            raise RuntimeError(f"wipe() of running server {self.sid}: kill() or stop() it first")
        for entry in self.data_dir.iterdir():
            if entry.name == "myid":
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    # -- probes --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The process exists and has not exited (paused counts as running)."""
        return self.process is not None and self.process.running

    @property
    def state(self) -> str:
        """``running``, ``paused`` or ``down``, for messages."""
        if not self.running:
            return "down"
        return "paused" if self.paused else "running"

    def connect_string(self) -> str:
        """``127.0.0.1:clientPort`` of this member alone."""
        return f"{LOOPBACK}:{self.client_port}"

    def srvr(self, timeout: float = 1.0) -> str:
        """The raw ``srvr`` reply, or ``""`` when the member does not answer."""
        if not self.running or self.paused:
            return ""
        try:
            return four_letter_word(LOOPBACK, self.client_port, "srvr", timeout).decode(
                errors="replace"
            )
        except OSError:
            return ""

    def mode(self) -> str | None:
        """``leader``/``follower``/``observer`` (or ``standalone``) from ``srvr``.

        None when the member is down, paused, or answers without a ``Mode:``
        line -- which is what a member without a quorum does ("This ZooKeeper
        instance is not currently serving requests").
        """
        return _parse_mode(self.srvr())

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last *lines* lines of the member's stdout+stderr."""
        if self.process is None:
            return "<never started>"
        return "\n".join(self.process.log_text().splitlines()[-lines:])


class Cluster:
    """An ensemble of ``voters`` voting members plus ``observers`` observers of one kind.

    ``with Cluster("zookeeper", 3) as cluster:`` starts every member, waits for
    a leader with everyone else following, and on exit stops every process by
    PID and the proxy.  The member directories (config, log, dataDir) live in
    one temporary directory, removed on a clean exit; when the block exits
    with an exception (a failed assertion, a pytest-timeout) or ``keep=True``
    it is kept and its path printed.  Members are numbered from 1 (``myid``);
    observers come after the voters.
    """

    def __init__(
        self,
        kind: Kind = "zookeeper",
        voters: int = 3,
        observers: int = 0,
        *,
        proxied: bool = False,
        tick_time: int = 200,
        init_limit: int = 10,
        sync_limit: int = 5,
        cfg: Mapping[str, Any] | None = None,
        jvm_flags: Iterable[str] = (),
        keep: bool = False,
        start_timeout: float = START_TIMEOUT,
        parent_dir: Path | None = None,
    ) -> None:
        """*cfg* adds or overrides zoo.cfg keys on every member; *jvm_flags* are extra
        ZooKeeper JVM arguments (ignored for fastzk); the member directories go in a new
        directory under *parent_dir* (default: the system's temporary directory)."""
        if voters < 1 or observers < 0:
            raise ValueError("need at least one voter and a non-negative number of observers")
        self.kind = kind
        self.root = Path(tempfile.mkdtemp(prefix=f"cluster-{kind}-", dir=parent_dir))
        self.keep = keep
        self.start_timeout = start_timeout
        count = voters + observers
        ports = iter(_distinct_free_ports(4 * count))
        self.members = [
            Member(kind, sid, sid > voters, self.root, ports) for sid in range(1, count + 1)
        ]
        self.proxy: NetProxy | None = NetProxy() if proxied else None
        #: (src, dst) -> the quorum and election links of the connections src opens to dst.
        self.links: dict[tuple[int, int], tuple[Link, Link]] = {}
        self._cut_off: set[int] = set()
        base_cfg: dict[str, Any] = {
            "tickTime": tick_time,
            "initLimit": init_limit,
            "syncLimit": sync_limit,
        }
        log4j = self.root / "log4j.properties"
        log4j.write_text(ZK_LOG4J_PROPERTIES)
        # servers.py ignores JVM flags for fastzk.
        flags = [f"-Dlog4j.configuration=file:{log4j}", *jvm_flags]
        try:
            for member in self.members:
                member_cfg = {
                    **base_cfg,
                    "dataDir": member.data_dir,
                    "clientPort": member.client_port,
                    "admin.serverPort": member.admin_port,
                    **self._server_lines(member),
                    **({"peerType": "observer"} if member.observer else {}),
                    **(cfg or {}),
                }
                member._prepare(member_cfg, flags)
        except BaseException:
            self.close(failed=True)
            raise

    def _server_lines(self, member: Member) -> dict[str, str]:
        """``server.N`` keys as *member* sees them: its own real ports, proxies for the rest."""
        lines: dict[str, str] = {}
        for peer in self.members:
            quorum, election = peer.quorum_port, peer.election_port
            if self.proxy is not None and peer is not member:
                target_q, target_e = (LOOPBACK, quorum), (LOOPBACK, election)
                link_q = self.proxy.add_link(f"{member.sid}->{peer.sid} quorum", target_q)
                link_e = self.proxy.add_link(f"{member.sid}->{peer.sid} election", target_e)
                self.links[(member.sid, peer.sid)] = (link_q, link_e)
                quorum, election = link_q.port, link_e.port
            suffix = ":observer" if peer.observer else ""
            lines[f"server.{peer.sid}"] = f"{LOOPBACK}:{quorum}:{election}{suffix}"
        return lines

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(failed=exc_type is not None)

    def start(self) -> None:
        """Start every member, then wait for a leader with all others following."""
        for member in self.members:
            member.start()
        self.wait_for_leader(self.start_timeout)

    def close(self, failed: bool = False) -> None:
        """Stop every process (by PID) and the proxy; remove the files unless kept."""
        for member in self.members:
            member.stop()
        if self.proxy is not None:
            self.proxy.stop()
        if failed or self.keep:
            print(f"cluster files kept in {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def member(self, sid: int) -> Member:
        """The member whose ``myid`` is *sid*."""
        return self.members[sid - 1]

    def connect_string(self) -> str:
        """Every member's client address, for a client that may use any of them."""
        return ",".join(m.connect_string() for m in self.members)

    # -- network faults (proxied=True) -------------------------------------------------------

    def _links(self, src: int, dst: int) -> tuple[Link, Link]:
        if self.proxy is None:
            raise RuntimeError("network faults need Cluster(..., proxied=True)")
        return self.links[(src, dst)]

    def set_link(self, src: int, dst: int, state: LinkState) -> None:
        """Put both links (quorum, election) of the direction src->dst in *state*."""
        for link in self._links(src, dst):
            {"up": link.heal, "cut": link.cut, "blackhole": link.blackhole}[state]()

    def delay(self, src: int, dst: int, delay_s: float) -> None:
        """Slow both links of the direction src->dst by *delay_s* per chunk (until heal)."""
        for link in self._links(src, dst):
            link.delay(delay_s)

    def isolate(self, sid: int, state: LinkState = "cut") -> None:
        """Cut (or black-hole) every link to and from member *sid*; clients still reach it."""
        self.partition([sid], [m.sid for m in self.members if m.sid != sid], state=state)

    def partition(self, *groups: Iterable[int], state: LinkState = "cut") -> None:
        """Separate the groups from each other (links inside a group stay as they are).

        Members of no group keep their links.  The members outside the group
        holding most voters no longer count for :meth:`wait_for_leader` and
        :meth:`reachable` until :meth:`heal`.
        """
        sets = [set(group) for group in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for src in a:
                    for dst in b:
                        self.set_link(src, dst, state)
                        self.set_link(dst, src, state)
        majority = max(sets, key=lambda g: sum(not self.member(s).observer for s in g))
        self._cut_off |= set().union(*sets) - majority

    def heal(self) -> None:
        """Every link back up and undelayed (connections that lost bytes in a black hole are
        reset)."""
        for src, dst in self.links:
            self.set_link(src, dst, "up")
        self._cut_off.clear()

    # -- state ---------------------------------------------------------------------------

    def reachable(self) -> list[Member]:
        """Members that are up, not paused and not cut off by isolate()/partition()."""
        return [
            m for m in self.members if m.running and not m.paused and m.sid not in self._cut_off
        ]

    def modes(self) -> dict[int, str | None]:
        """``{sid: mode}`` of every member (None: down, paused or not serving)."""
        return {m.sid: m.mode() for m in self.members}

    def leader(self) -> Member | None:
        """The member that reports ``Mode: leader`` now (the first, if several do)."""
        return next((m for m in self.members if m.mode() == "leader"), None)

    def followers(self) -> list[Member]:
        """Members that report ``Mode: follower`` now."""
        return [m for m in self.members if m.mode() == "follower"]

    def describe(self) -> str:
        """Every member's state, mode, ports and log tail, and the faulty links."""
        parts = []
        for m in self.members:
            role = "observer" if m.observer else "voter"
            reply = m.srvr()
            # A member without a mode says why in its reply ("...not currently serving...").
            mode = _parse_mode(reply) or f"None (srvr: {reply.strip()[:100]!r})"
            pid = m.process.pid if m.process else None
            parts.append(
                f"--- server.{m.sid} ({role}) {m.state} pid={pid} mode={mode} "
                f"client={m.client_port} quorum={m.quorum_port} election={m.election_port} "
                f"dir={m.dir}\n{m.log_tail()}"
            )
        faulty = [
            repr(link)
            for pair in self.links.values()
            for link in pair
            if link.state != "up" or link.delay_s
        ]
        if faulty:
            parts.append("--- links not up: " + ", ".join(faulty))
        return "\n".join(parts)

    # -- waits ---------------------------------------------------------------------------

    def wait_until(
        self, predicate: Callable[[], Any], what: str, timeout: float = WAIT_TIMEOUT
    ) -> Any:
        """Poll *predicate* until it returns something truthy, and return that.

        On timeout raise :class:`ClusterTimeout` saying *what* was awaited,
        with :meth:`describe`.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise ClusterTimeout(
                    f"{what}: not reached within {timeout:.0f}s\n{self.describe()}"
                )
            time.sleep(POLL_INTERVAL)

    def wait_for_leader(
        self, timeout: float = WAIT_TIMEOUT, members: Iterable[Member] | None = None
    ) -> Member:
        """Wait until exactly one of *members* leads and the others follow or observe.

        *members* defaults to :meth:`reachable` (down, paused and cut-off
        members are not expected to take part).  Returns the leader.
        """
        chosen = list(members) if members is not None else None

        def settled() -> Member | None:
            if not any(m.running for m in self.members):
                raise ClusterTimeout(f"every member has exited\n{self.describe()}")
            group = chosen if chosen is not None else self.reachable()
            modes = {m.sid: m.mode() for m in group}
            leaders = [m for m in group if modes[m.sid] == "leader"]
            others_ok = all(
                modes[m.sid] == ("observer" if m.observer else "follower")
                for m in group
                if m not in leaders
            )
            return leaders[0] if len(leaders) == 1 and others_ok else None

        what = f"one leader among servers {[m.sid for m in chosen or self.reachable()]}"
        leader: Member = self.wait_until(settled, what, timeout)
        return leader

    def wait_serving(self, member: Member, timeout: float = WAIT_TIMEOUT) -> str:
        """Wait until *member* reports a mode (it has joined a quorum); return the mode."""
        mode: str = self.wait_until(member.mode, f"server.{member.sid} serving", timeout)
        return mode
