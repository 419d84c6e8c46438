"""The session table's expiry buckets (ZooKeeper's ExpiryQueue), in-process: deadlines on tick
boundaries, touches that move sessions between buckets, ticks that pop only what is due, in a
deterministic order."""

from __future__ import annotations

import random
from typing import Any

from fastzk.server.sessions import HEAP_SLACK, Session, SessionTable

TICK = 100


def table() -> SessionTable:
    return SessionTable(TICK, 1, 0, random.Random(0))


def ids(sessions: list[Session]) -> list[int]:
    return [s.session_id for s in sessions]


def test_a_session_expires_at_the_first_tick_boundary_after_its_timeout() -> None:
    sessions = table()
    session = sessions.add(7, 250, b"p", 30)  # 30 + 250 = 280: due at 300
    assert session.deadline == 300
    assert sessions.due(299) == []
    assert ids(sessions.due(300)) == [7]
    assert session.closing
    assert sessions.due(400) == []  # already closing: not expired twice


def test_a_boundary_itself_rounds_up_to_the_next_tick() -> None:
    """As ZooKeeper's ExpiryQueue: (time / interval + 1) * interval."""
    sessions = table()
    assert sessions.add(1, 200, b"p", 100).deadline == 400


def test_a_touch_moves_the_session_to_a_later_bucket() -> None:
    sessions = table()
    session = sessions.add(1, 200, b"p", 0)
    sessions.touch(session, 250)
    assert session.deadline == 500
    assert sessions.due(300) == [] and not session.closing
    assert ids(sessions.due(500)) == [1]


def test_sessions_due_in_one_tick_come_out_in_the_order_they_joined() -> None:
    """Not in touch order nor by id: the order the table had when a tick scanned it, so the
    closeSession txns a leader proposes do not depend on when clients last spoke."""
    sessions = table()
    for session_id in (30, 10, 20):
        sessions.add(session_id, 200, b"p", 0)
    sessions.touch(sessions.sessions[30], 150)  # bucket 400, joined first
    sessions.touch(sessions.sessions[10], 120)  # bucket 400
    sessions.touch(sessions.sessions[20], 50)  # bucket 300
    assert ids(sessions.due(1000)) == [30, 10, 20]  # two buckets popped by one late tick


def test_a_revived_session_is_expired_again_by_the_next_tick() -> None:
    """A leader that cannot propose the expiry (or loses its quorum) revives the session; it
    stays past its deadline and the next tick finds it."""
    sessions = table()
    session = sessions.add(1, 200, b"p", 0)
    assert ids(sessions.due(300)) == [1]
    sessions.revive(session)
    assert not session.closing
    assert ids(sessions.due(300)) == [1]


def test_reviving_a_session_still_in_its_bucket_does_not_queue_it_twice() -> None:
    sessions = table()
    session = sessions.add(1, 200, b"p", 0)
    session.closing = True  # closed by its client: the close is in flight
    sessions.revive(session)
    assert ids(sessions.due(300)) == [1]
    assert sessions.due(300) == []


def test_a_closing_session_in_a_due_bucket_is_skipped() -> None:
    sessions = table()
    closing = sessions.add(1, 200, b"p", 0)
    sessions.add(2, 200, b"p", 0)
    closing.closing = True
    assert ids(sessions.due(300)) == [2]


def test_removed_and_cleared_sessions_never_expire() -> None:
    sessions = table()
    sessions.add(1, 200, b"p", 0)
    sessions.add(2, 200, b"p", 0)
    assert sessions.remove(1) is not None and sessions.remove(1) is None
    assert ids(sessions.due(300)) == [2]
    sessions.add(3, 200, b"p", 0)
    sessions.clear()
    assert len(sessions) == 0 and sessions.due(10_000) == []


def test_a_tick_does_not_walk_the_sessions_that_are_not_due() -> None:
    """The cost of a tick is the sessions it expires: it never iterates the table."""

    class Unwalkable(dict[int, Session]):
        def values(self) -> Any:
            raise AssertionError("due walked every session")

        def __iter__(self) -> Any:
            raise AssertionError("due walked every session")

    sessions = table()
    for session_id in range(1, 1001):
        sessions.add(session_id, 200 + session_id, b"p", 0)
    sessions.sessions = Unwalkable(sessions.sessions)
    assert ids(sessions.due(300)) == list(range(1, 100))  # 200 + id < 300


def test_the_deadline_heap_stays_bounded_when_nothing_expires() -> None:
    """A follower touches its sessions but never expires any; sessions are also added at the
    txn's wall-clock time and then moved to the monotonic clock: neither grows the table."""
    sessions = table()
    session = sessions.add(1, 200, b"p", 1_700_000_000_000)
    for now in range(0, 1_000_000, TICK):
        sessions.touch(session, now)
    assert len(sessions._buckets) == 1
    assert len(sessions._deadlines) <= 2 * len(sessions._buckets) + HEAP_SLACK + 1
    assert ids(sessions.due(1_000_000 + 300)) == [1]


def test_re_adding_a_session_keeps_its_place_and_leaves_no_stale_entry() -> None:
    sessions = table()
    sessions.add(1, 200, b"p", 0)
    sessions.add(2, 200, b"p", 0)
    sessions.add(1, 900, b"q", 0)  # due at 1000 now, still first in the table
    assert ids(sessions.due(300)) == [2]
    assert ids(sessions.due(1000)) == [1]
