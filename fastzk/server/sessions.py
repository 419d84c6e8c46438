"""Session table. Time enters only as `now_ms` arguments, so expiry is deterministic."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any

# the deadline heap is rebuilt from the live buckets once it holds this many more entries
# than there are buckets (deadlines of buckets emptied before they were due, or never due:
# a follower never expires sessions, and sessions are added at the txn's wall-clock time)
HEAP_SLACK = 64


@dataclass(slots=True)
class Session:
    session_id: int
    timeout: int
    passwd: bytes
    deadline: int
    conn: Any = None
    closing: bool = False
    rank: int = 0  # when it joined the table: sessions expiring in one tick come out in this order


class SessionTable:
    """Live sessions in ZooKeeper's expiry buckets (its ExpiryQueue): a session expires at the
    first tick boundary after now + timeout, so each deadline is a bucket of the sessions due
    then. A touch moves a session between two buckets (nothing when it stays in its bucket,
    the common case for a busy session), and a tick pops only the buckets that are due: its
    cost is the sessions that expire, not the sessions that live.

    Invariant: a session that is not closing is in the bucket of its deadline. A closing one
    may have left it (popped by `due`); `revive` puts it back."""

    def __init__(self, tick_ms: int, server_id: int, start_ms: int, rng: random.Random) -> None:
        self.tick_ms = tick_ms
        self._rng = rng
        self._next_id = (server_id << 56) | ((start_ms << 16) & 0x00FF_FFFF_FFFF_0000)
        self.sessions: dict[int, Session] = {}
        self._buckets: dict[int, dict[int, Session]] = {}  # deadline -> sessions, by id
        self._deadlines: list[int] = []  # heap of the buckets' deadlines, maybe stale ones
        self._joined = 0

    def __len__(self) -> int:
        return len(self.sessions)

    def __contains__(self, session_id: int) -> bool:
        return session_id in self.sessions

    def get(self, session_id: int) -> Session | None:
        return self.sessions.get(session_id)

    def allocate(self) -> tuple[int, bytes]:
        """A fresh (session id, password) pair; the session exists only once its txn applies."""
        self._next_id += 1
        return self._next_id, self._rng.randbytes(16)

    def reserve(self, session_id: int) -> None:
        """Never hand out `session_id` again (a session restored at start-up)."""
        if session_id >> 56 == self._next_id >> 56 and session_id > self._next_id:
            self._next_id = session_id

    def _deadline(self, timeout: int, now_ms: int) -> int:
        return ((now_ms + timeout) // self.tick_ms + 1) * self.tick_ms

    def _queue(self, session: Session) -> None:
        bucket = self._buckets.get(session.deadline)
        if bucket is None:
            bucket = self._buckets[session.deadline] = {}
            deadlines = self._deadlines
            if len(deadlines) > 2 * len(self._buckets) + HEAP_SLACK:
                deadlines[:] = sorted(self._buckets)  # a sorted list is a heap
            else:
                heapq.heappush(deadlines, session.deadline)
        bucket[session.session_id] = session

    def _unqueue(self, session: Session) -> None:
        bucket = self._buckets.get(session.deadline)
        if bucket is not None and bucket.pop(session.session_id, None) is not None \
                and not bucket:
            del self._buckets[session.deadline]  # its heap entry goes when due or rebuilt

    def add(self, session_id: int, timeout: int, passwd: bytes, now_ms: int) -> Session:
        previous = self.sessions.get(session_id)
        if previous is None:
            rank = self._joined
            self._joined += 1
        else:  # the same place in the table as before, as a dict keeps a replaced key's
            rank = previous.rank
            self._unqueue(previous)
        session = Session(session_id, timeout, passwd, self._deadline(timeout, now_ms),
                          rank=rank)
        self.sessions[session_id] = session
        self._queue(session)
        return session

    def touch(self, session: Session, now_ms: int) -> None:
        deadline = ((now_ms + session.timeout) // self.tick_ms + 1) * self.tick_ms
        if deadline == session.deadline:
            return  # still in its bucket (or closing, out of every bucket until revived)
        self._unqueue(session)
        session.deadline = deadline
        self._queue(session)

    def revive(self, session: Session) -> None:
        """No longer closing (its expiry is left to a later tick or another leader): back in
        the bucket of its deadline, so a tick that finds it due expires it again."""
        session.closing = False
        if session.session_id not in self._buckets.get(session.deadline, ()):
            self._queue(session)

    def due(self, now_ms: int) -> list[Session]:
        """Sessions past their deadline that are not already closing, in the order they joined
        the table; marks them closing. Pops the due buckets only."""
        deadlines, buckets = self._deadlines, self._buckets
        expired: list[Session] = []
        while deadlines and deadlines[0] <= now_ms:
            bucket = buckets.pop(heapq.heappop(deadlines), None)
            if bucket:
                expired.extend(s for s in bucket.values() if not s.closing)
        if len(expired) > 1:
            expired.sort(key=_rank)
        for session in expired:
            session.closing = True
        return expired

    def remove(self, session_id: int) -> Session | None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self._unqueue(session)
        return session

    def clear(self) -> None:
        """Forgets every session (a snapshot from the leader replaces them)."""
        self.sessions.clear()
        self._buckets.clear()
        self._deadlines.clear()


def _rank(session: Session) -> int:
    return session.rank
