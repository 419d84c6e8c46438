"""The faults of a nemesis run: a schedule decided by a seed, and how each is done and undone.

One fault at a time: it is injected, held, healed, then the cluster gets a gap before the
next.  Why not overlapping faults: with 3 servers two overlapping faults usually leave no
quorum at all, which tests only that nothing happens; one at a time every fault meets a
cluster that is trying to make progress.  The schedule is a pure function of the seed and
the run's shape, so a failing run's faults can be replayed (the timing of the clients
around them cannot).

Kinds (all between peers or on one server process; clients always reach every server):

* ``kill``: SIGKILL, restart on the same dataDir after the hold.
* ``pause``: SIGSTOP for longer than the session timeout, then SIGCONT (a zombie leader).
* ``partition``: a minority is separated from the majority, links cut (reset) or
  black-holed (silent), by the proxy.
* ``oneway``: one direction between two members cut or black-holed, the other way intact.
* ``delay``: every link to and from one member slowed by 50-400 ms per chunk.
* ``diskfull``: the disk member's tmpfs dataDir is filled, then freed (root only).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fastzk.nemesis.cluster import Cluster
from fastzk.nemesis.disk import SmallDisk

KINDS: tuple[str, ...] = ("kill", "pause", "partition", "oneway", "delay", "diskfull")


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: *targets* are server ids (``oneway``: source, destination;
    ``partition``: the minority)."""

    kind: str
    targets: tuple[int, ...]
    hold_s: float
    gap_s: float
    mode: str = ""
    delay_s: float = 0.0

    def describe(self) -> str:
        what = {
            "kill": "kill -9 server.{0}, restart",
            "pause": "SIGSTOP server.{0}, SIGCONT",
            "partition": "partition servers {all} from the rest ({mode})",
            "oneway": "link server.{0} -> server.{1} {mode}",
            "delay": "delay every link of server.{0} by {delay_ms} ms",
            "diskfull": "fill the disk of server.{0}, free it",
        }[self.kind]
        text = what.format(*self.targets, all=list(self.targets), mode=self.mode,
                           delay_ms=round(self.delay_s * 1000))
        return f"{text} after {self.hold_s:.1f}s"


def schedule(
    seed: int,
    sids: list[int],
    duration_s: float,
    session_timeout_s: float,
    kinds: tuple[str, ...] = KINDS,
    disk_sid: int | None = None,
) -> list[Fault]:
    """The faults of a run of *duration_s*: holds of 1.5-5 s (pauses: longer than the
    session timeout), gaps of 1-3 s.  ``diskfull`` needs *disk_sid*."""
    rng = random.Random(seed)
    usable = tuple(k for k in kinds if k != "diskfull" or disk_sid is not None)
    faults: list[Fault] = []
    elapsed_s = 0.0
    while elapsed_s < duration_s:
        kind = rng.choice(usable)
        hold_s = round(rng.uniform(1.5, 5.0), 2)
        gap_s = round(rng.uniform(1.0, 3.0), 2)
        mode, delay_s = "", 0.0
        if kind == "pause":
            hold_s = round(session_timeout_s + rng.uniform(1.0, 2.5), 2)
        if kind in ("kill", "pause", "delay"):
            targets: tuple[int, ...] = (rng.choice(sids),)
        elif kind == "diskfull":
            assert disk_sid is not None
            targets = (disk_sid,)
        elif kind == "oneway":
            targets = tuple(rng.sample(sids, 2))
        else:
            targets = tuple(sorted(rng.sample(sids, (len(sids) - 1) // 2)))
        if kind in ("partition", "oneway"):
            mode = rng.choice(("cut", "blackhole"))
        if kind == "delay":
            delay_s = round(rng.uniform(0.05, 0.4), 3)
        faults.append(Fault(kind, targets, hold_s, gap_s, mode, delay_s))
        elapsed_s += hold_s + gap_s
    return faults


class Nemesis:
    """Injects and heals :class:`Fault` s on one :class:`Cluster` (built ``proxied=True``)."""

    def __init__(self, cluster: Cluster, disk: SmallDisk | None = None) -> None:
        self.cluster = cluster
        self.disk = disk

    def inject(self, fault: Fault) -> None:
        cluster = self.cluster
        if fault.kind == "kill":
            cluster.member(fault.targets[0]).kill()
        elif fault.kind == "pause":
            cluster.member(fault.targets[0]).pause()
        elif fault.kind == "partition":
            rest = [m.sid for m in cluster.members if m.sid not in fault.targets]
            cluster.partition(list(fault.targets), rest, state=fault.mode)  # type: ignore[arg-type]
        elif fault.kind == "oneway":
            cluster.set_link(fault.targets[0], fault.targets[1], fault.mode)  # type: ignore[arg-type]
        elif fault.kind == "delay":
            sid = fault.targets[0]
            for other in cluster.members:
                if other.sid != sid:
                    cluster.delay(sid, other.sid, fault.delay_s)
                    cluster.delay(other.sid, sid, fault.delay_s)
        elif fault.kind == "diskfull":
            if self.disk is None:
                raise RuntimeError("a diskfull fault needs the disk member's SmallDisk")
            self.disk.fill()
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def heal(self, fault: Fault) -> list[str]:
        """Undo *fault*; returns notes on what was found (a server that exited meanwhile
        is restarted, and said so: on a full disk exiting is a legitimate reaction)."""
        cluster = self.cluster
        if fault.kind == "kill":
            cluster.member(fault.targets[0]).start()
        elif fault.kind == "pause":
            cluster.member(fault.targets[0]).resume()
        elif fault.kind in ("partition", "oneway", "delay"):
            cluster.heal()
        elif fault.kind == "diskfull" and self.disk is not None:
            self.disk.free()
        return self.restart_exited()

    def restart_exited(self) -> list[str]:
        """Start every member whose process has exited on its own; one note per member."""
        notes = []
        for member in self.cluster.members:
            if member.process is not None and not member.running:
                code = member.process.returncode
                notes.append(f"server.{member.sid} had exited (status {code}); restarted")
                member.start()
        return notes

    def heal_all(self) -> list[str]:
        """Every link up, every server resumed and running, the disk freed."""
        if self.disk is not None:
            self.disk.free()
        self.cluster.heal()
        for member in self.cluster.members:
            if member.paused:
                member.resume()
        return self.restart_exited()
