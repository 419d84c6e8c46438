"""Session table. Time enters only as `now_ms` arguments, so expiry is deterministic."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Session:
    session_id: int
    timeout: int
    passwd: bytes
    deadline: int
    conn: Any = None
    closing: bool = False


class SessionTable:
    """Live sessions with bucketed deadlines, as ZooKeeper computes them: a session expires at
    the first tick boundary after now + timeout, checked once per tick."""

    def __init__(self, tick_ms: int, server_id: int, start_ms: int, rng: random.Random) -> None:
        self.tick_ms = tick_ms
        self._rng = rng
        self._next_id = (server_id << 56) | ((start_ms << 16) & 0x00FF_FFFF_FFFF_0000)
        self.sessions: dict[int, Session] = {}

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

    def add(self, session_id: int, timeout: int, passwd: bytes, now_ms: int) -> Session:
        session = Session(session_id, timeout, passwd, self._deadline(timeout, now_ms))
        self.sessions[session_id] = session
        return session

    def touch(self, session: Session, now_ms: int) -> None:
        session.deadline = self._deadline(session.timeout, now_ms)

    def due(self, now_ms: int) -> list[Session]:
        """Sessions past their deadline that are not already closing; marks them closing."""
        expired = [
            s for s in self.sessions.values() if not s.closing and s.deadline <= now_ms
        ]
        for session in expired:
            session.closing = True
        return expired

    def remove(self, session_id: int) -> Session | None:
        return self.sessions.pop(session_id, None)
