"""A simulated disk: what survives a crash is exactly what was fsynced, nothing more.

It holds a server's durable state as the runtime's storage would (fastzk/runtime/storage.py):
the epoch file, the log of txns, and snapshots (the same bytes the runtime writes). Writes go
through a queue in submission order, as the WAL writer's are; the server's shell flushes the
queue as one group commit and reports completion after a simulated fsync latency. A crash
keeps what completed, plus optionally a torn prefix of the write in progress, and drops the
rest.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Any

from fastzk.server.prep import Txn


@dataclass
class Snap:
    zxid: int  # where the walk began (the header's zxid)
    end_zxid: int  # where it ended: the log must reach this for the snapshot to be used
    data: bytes


@dataclass
class DiskOp:
    """One queued write: ("append", entries, gen) | ("truncate", zxid) | ("snapshot", Snap) |
    ("install", Snap) (a leader's snapshot replacing the whole log)."""

    kind: str
    args: tuple[Any, ...]
    done: Any = None  # what the shell calls once the op is durable


@dataclass
class SimDisk:
    hard_state: tuple[int, int] = (0, 0)
    zxids: list[int] = field(default_factory=list)  # the durable log, in order
    txns: list[Txn] = field(default_factory=list)
    snapshots: list[Snap] = field(default_factory=list)  # by zxid, oldest first
    queue: list[DiskOp] = field(default_factory=list)  # submitted, not yet being written
    writing: list[DiskOp] = field(default_factory=list)  # the group commit in progress
    fail_next: str | None = None  # "EIO" or "ENOSPC": the next group commit fails
    slow: int = 1  # fsync latency multiplier
    retain: int = 2  # snapshots kept; the log before the oldest kept one is purged

    def complete(self, ops: list[DiskOp]) -> None:
        """`ops` are durable now."""
        for op in ops:
            self._apply(op)

    def _apply(self, op: DiskOp) -> None:
        if op.kind == "append":
            entries = op.args[0]
            assert not self.zxids or entries[0][0] > self.zxids[-1], "log appends in order"
            for zxid, txn in entries:
                self.zxids.append(zxid)
                self.txns.append(txn)
        elif op.kind == "truncate":
            keep = bisect.bisect_right(self.zxids, op.args[0])
            del self.zxids[keep:], self.txns[keep:]
        elif op.kind == "snapshot":  # the newest `retain` by zxid are kept, as the runtime's
            self.snapshots = sorted(self.snapshots + [op.args[0]],
                                    key=lambda s: s.zxid)[-self.retain:]
            cut = bisect.bisect_right(self.zxids, self.snapshots[0].zxid)
            del self.zxids[:cut], self.txns[:cut]
        else:  # install: the leader's snapshot replaces the log and the older snapshots
            snap = op.args[0]
            self.snapshots = [s for s in self.snapshots if s.zxid > snap.zxid] + [snap]
            self.snapshots.sort(key=lambda s: s.zxid)
            self.zxids.clear()
            self.txns.clear()

    def crash(self, rng: random.Random, torn: bool) -> None:
        """Power loss: the group commit in progress may have reached the disk in part (a torn
        write keeps a prefix of its first append), everything queued is gone."""
        if torn:
            for op in self.writing:
                if op.kind == "append":
                    entries = op.args[0]
                    kept = rng.randrange(len(entries))
                    if kept:
                        self._apply(DiskOp("append", (entries[:kept], op.args[1])))
                    break
                self._apply(op)
        self.writing = []
        self.queue = []

    def has(self, zxid: int) -> bool:
        """Whether the txn at `zxid` is durable here (in the log or inside a snapshot)."""
        index = bisect.bisect_left(self.zxids, zxid)
        if index < len(self.zxids) and self.zxids[index] == zxid:
            return True
        return any(s.end_zxid >= zxid for s in self.snapshots)
