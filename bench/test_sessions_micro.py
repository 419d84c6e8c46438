"""Micro benchmarks of the session table with 100,000 live sessions: the cost of a tick that
expires nothing (paid every tickTime by the leader), a tick that expires 1% of them, and the
touch every request pays.

Run: pytest bench/test_sessions_micro.py --benchmark-only
"""

from __future__ import annotations

import gc
import random
from typing import Any

import pytest

from fastzk.server.sessions import SessionTable

TICK_MS = 2000
SESSIONS = 100_000
TIMEOUT_MS = 30_000


def table_of(count: int) -> SessionTable:
    """`count` sessions touched at times spread over one timeout, as live clients leave them."""
    table = SessionTable(TICK_MS, 1, 0, random.Random(0))
    for i in range(count):
        session_id, passwd = table.allocate()
        table.add(session_id, TIMEOUT_MS, passwd, i * TIMEOUT_MS // count)
    return table


@pytest.fixture(scope="module")
def table() -> SessionTable:
    return table_of(SESSIONS)


def test_tick_with_100k_sessions_none_due(benchmark: Any, table: SessionTable) -> None:
    assert benchmark(table.due, TICK_MS) == []


def test_tick_expiring_1k_of_100k_sessions(benchmark: Any) -> None:
    """A fresh table per round (expired sessions leave it, or are marked closing); only the
    tick is timed."""
    tables: list[SessionTable] = []

    def prepared() -> tuple[tuple[int], dict[str, Any]]:
        tables.clear()
        fresh = table_of(SESSIONS)
        for session in list(fresh.sessions.values())[SESSIONS // 100:]:
            fresh.touch(session, TIMEOUT_MS)  # all but the first 1% stay alive
        tables.append(fresh)
        gc.collect()  # else the garbage of building 100k sessions is collected in the tick
        return (TIMEOUT_MS + TICK_MS,), {}

    def tick(now_ms: int) -> int:
        return len(tables[-1].due(now_ms))  # kept: freeing 100k sessions is not the tick

    assert benchmark.pedantic(tick, setup=prepared, rounds=5) == SESSIONS // 100


def test_touch_within_the_same_tick(benchmark: Any, table: SessionTable) -> None:
    session = next(iter(table.sessions.values()))
    benchmark(table.touch, session, 1)
    assert session.deadline == TIMEOUT_MS + TICK_MS


def test_touch_moving_to_the_next_tick(benchmark: Any, table: SessionTable) -> None:
    """Every call lands in a later bucket than the last (a session active once per tick)."""
    session = next(iter(table.sessions.values()))
    clock = iter(range(0, 1 << 40, TICK_MS))
    benchmark(lambda: table.touch(session, next(clock)))
