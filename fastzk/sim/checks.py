"""What must hold after every event of a simulated run (and at its end).

- at most one leader per epoch;
- one committed history: every server applies the same txns in the same order, each exactly
  once, none skipped (so no acknowledged write is lost across crashes and elections, and
  nothing is applied twice after a restart);
- equal tree digests at equal zxid (also after recovery and snapshot installs);
- no write acknowledged to a client before it is durable on a quorum of voters;
- sessions and ephemerals: no ephemeral whose owner is not a live session, none left by a
  session that was closed or expired;
- (clients check per-session FIFO, zxids that never go back, watch-before-data; the world
  checks liveness after the faults stop, and the history's linearizability at the end).
A violation raises `Violation`, which ends the run with its seed, step and trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fastzk._core import encode_value
from fastzk.server.prep import Txn
from fastzk.sim.parts import Scheduler
from fastzk.sim.server import SimServer


class ChecksWorld(Scheduler, Protocol):
    """The world as the checks see it."""

    servers: Mapping[int, SimServer]


class Violation(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def fingerprint(txn: Txn) -> bytes:
    return encode_value((txn.zxid, txn.time_ms, txn.session_id, txn.xid, txn.op, txn.changes))


class Checks:
    def __init__(self, world: ChecksWorld, voters: list[int]) -> None:
        self.world = world
        self.voters = voters
        self.quorum = len(voters) // 2 + 1
        self.zxids: list[int] = []  # the committed history, in apply order
        self.prints: list[bytes] = []
        self.index: dict[int, int] = {}  # zxid -> its place in the history
        self.position: dict[int, int] = {}  # server -> place of the last txn it applied
        self.digests: dict[int, int] = {}  # zxid -> tree digest there
        self.leaders: dict[int, int] = {}  # epoch -> its leader
        self.gone: list[int] = []  # sessions closed or expired, as clients learned

    def fail(self, kind: str, message: str) -> None:
        raise Violation(kind, message)

    def leader(self, epoch: int, sid: int) -> None:
        other = self.leaders.setdefault(epoch, sid)
        if other != sid:
            self.fail("two-leaders", f"server.{other} and server.{sid} both lead epoch {epoch}")

    def before_apply(self, sid: int, txns: list[Txn]) -> None:
        zxids, prints, index = self.zxids, self.prints, self.index
        place = self.position.get(sid, -1)
        for txn in txns:
            place += 1
            mark = fingerprint(txn)
            if place < len(zxids):
                if zxids[place] != txn.zxid or prints[place] != mark:
                    before = f"{zxids[place - 1]:#x}" if place else "the start"
                    self.fail("history", f"server.{sid} applies zxid {txn.zxid:#x} after "
                              f"{before}, where the committed history has "
                              f"{zxids[place]:#x}" + (" (another txn with the same zxid)"
                                                      if zxids[place] == txn.zxid else ""))
            else:
                if zxids and txn.zxid <= zxids[-1]:
                    self.fail("history", f"server.{sid} applies zxid {txn.zxid:#x} after "
                              f"{zxids[-1]:#x}")
                zxids.append(txn.zxid)
                prints.append(mark)
                index[txn.zxid] = place
        self.position[sid] = place

    def after_apply(self, sid: int, zxid: int, digest: int) -> None:
        known = self.digests.setdefault(zxid, digest)
        if known != digest:
            self.fail("digest", f"server.{sid} has digest {digest} at zxid {zxid:#x}, another "
                      f"server had {known}")

    def state_loaded(self, sid: int, zxid: int, digest: int) -> None:
        """A server recovered, or installed the leader's snapshot, at `zxid`."""
        if zxid == 0:
            self.position[sid] = -1
            return
        place = self.index.get(zxid)
        if place is None:
            self.fail("history", f"server.{sid} loaded a state at zxid {zxid:#x}, which no "
                      "server ever applied")
        self.position[sid] = place  # type: ignore[assignment]
        self.after_apply(sid, zxid, digest)

    def acknowledged(self, zxid: int) -> None:
        """A client got a successful reply to a write at `zxid`."""
        durable = [sid for sid in self.voters if self.world.servers[sid].disk.has(zxid)]
        if len(durable) < self.quorum:
            self.fail("durability", f"write {zxid:#x} acknowledged while durable only on "
                      f"{[f'server.{s}' for s in durable] or 'no server'}")

    def session_gone(self, session_id: int) -> None:
        self.gone.append(session_id)

    def ephemerals(self, final: bool) -> None:
        """Every ephemeral belongs to a live session; at the end, none to a gone one."""
        gone = set(self.gone)
        for sid, server in sorted(self.world.servers.items()):
            node = server.node
            if node is None:
                continue
            live = node.sessions.sessions
            for owner, paths in sorted(node.tree.sessions_with_ephemerals().items()):
                if owner not in live:
                    self.fail("ephemerals", f"server.{sid}: {sorted(paths)} owned by "
                              f"{owner:#x}, which is not a session there")
                if final and owner in gone:
                    self.fail("ephemerals", f"server.{sid}: {sorted(paths)} outlive session "
                              f"{owner:#x}, closed or expired")
