"""Helpers for the durability tests (test_wal.py, test_snapshot.py, test_crash.py).

`Harness` is a Node with its Storage on a private asyncio loop, driven synchronously: writes
are prepared straight through the node's Prep (no sockets), proposed to its replica (a lone
voter), submitted to the real WAL writer thread and committed when it reports them durable. `InProcessServer` runs the real
`runtime.server.Server` on a thread of this process, so that a test can reach its storage
(the fault-injection seam) while kazoo talks to it over TCP.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastzk.config import Config
from fastzk.node import Limits, Node
from fastzk.proto import CreateMode, Op
from fastzk.runtime.storage import RecoveryReport, Storage
from fastzk.server.prep import Txn

OPEN_ACL = [(31, "world", "anyone")]
READ_ACL = [(1, "world", "anyone")]
TICK = 100


def make_cfg(data_dir: Path, **overrides: Any) -> Config:
    cfg = Config(data_dir=Path(data_dir), tick_time=TICK, min_session_timeout=2 * TICK,
                 max_session_timeout=100 * TICK, admin_enabled=False)
    return replace(cfg, **overrides)


def make_node(seed: int = 1) -> Node:
    limits = Limits(tick_ms=TICK, min_session_timeout=2 * TICK, max_session_timeout=100 * TICK,
                    ttl_enabled=True)
    node = Node(limits, random.Random(seed), start_ms=1_700_000_000_000)
    node.set_time(1_700_000_000_000, 1_000)
    return node


def settle(node: Node) -> list[Txn]:
    """Plays the runtime with a log that is durable at once: executes the node's output until
    there is none (a lone voter commits what is durable). Returns the txns logged."""
    logged: list[Txn] = []
    while True:
        out = node.take_output()
        if not out:
            return logged
        appended = [txn for op, arg in out.log_ops if op == "append" for _, txn in arg]
        if appended:
            logged.extend(appended)
            node.persisted(out.gen, appended[-1].zxid)


class Harness:
    def __init__(self, data_dir: Path, seed: int = 1, **cfg: Any) -> None:
        self.cfg = make_cfg(data_dir, **cfg)
        self.loop = asyncio.new_event_loop()
        self.node = make_node(seed)
        self.failures: list[tuple[list[Txn], OSError]] = []
        self.storage = Storage(self.cfg, self.node, self.loop, self._durable, self._failed,
                               random.Random(seed))
        self.report: RecoveryReport = self.storage.open()
        self.clock = 0
        self._writes: list[tuple[int, int]] = []
        self.node.start()
        self.step()
        self.run_until(lambda: self.node.serving or bool(self.failures))

    def step(self) -> list[Txn]:
        """Executes the node's output as the runtime does; returns the txns submitted."""
        out = self.node.take_output()
        if out.hard_state is not None:
            self.storage.save_hard_state(*out.hard_state)
        batch = [txn for op, arg in out.log_ops if op == "append" for _, txn in arg]
        assert all(op == "append" for op, _ in out.log_ops), "a lone voter never truncates"
        if batch:
            self._writes.append((out.gen, batch[-1].zxid))
            self.storage.submit(batch)
        return batch

    def _durable(self, groups: list[list[Txn]]) -> None:
        for _ in groups:
            gen, zxid = self._writes.pop(0)
            self.node.persisted(gen, zxid)
        self.step()

    def _failed(self, txns: list[Txn], error: OSError) -> None:
        self.failures.append((txns, error))

    def run_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise TimeoutError("condition not reached")
                await asyncio.sleep(0.0005)

        self.loop.run_until_complete(wait())

    def tick_clock(self) -> None:
        self.clock += 1
        self.node.set_time(1_700_000_000_000 + self.clock, 1_000 + self.clock)

    def prepare(self, session_id: int, op: int, body: Any) -> Txn | int | list[int]:
        self.tick_clock()
        outcome = self.node.prep.write(session_id, 1, op, body, set(), self.node.now_ms)
        if isinstance(outcome, Txn):
            self.node.proposals.append((outcome.zxid, outcome))
        return outcome

    def open_session(self, timeout: int = 1000) -> int:
        session_id, passwd = self.node.sessions.allocate()
        txn = self.node.prep.create_session(session_id, timeout, passwd, self.node.now_ms)
        self.node.proposals.append((txn.zxid, txn))
        return session_id

    def close_session(self, session_id: int) -> None:
        txn = self.node.prep.close_session(session_id, 0, self.node.now_ms)
        self.node.proposals.append((txn.zxid, txn))

    def flush(self, wait: bool = True) -> int:
        """Submits the prepared txns as one loop iteration's batch; waits until applied."""
        batch = self.step()
        if batch:
            if wait:
                target = batch[-1].zxid
                self.run_until(lambda: self.node.applied_zxid >= target or bool(self.failures))
        return len(batch)

    def snapshot(self) -> None:
        """Takes a snapshot and waits for it (the loop runs while it is written)."""
        task = self.storage.take_snapshot()
        assert task is not None
        self.run_until(lambda: self.storage.snapshot is None)
        assert task.finished

    def close(self) -> None:
        self.loop.run_until_complete(self.storage.close())
        self.loop.close()


def random_writes(harness: Harness, rng: random.Random, count: int,
                  sessions: list[int] | None = None) -> int:
    """Prepares `count` random writes (creates of every kind, setData, setACL, deletes,
    multis, session opens and closes); returns how many became txns."""
    node = harness.node
    made = 0
    sessions = sessions if sessions is not None else []
    for _ in range(count):
        roll = rng.random()
        paths = _paths(node)
        if roll < 0.05 or not sessions:
            sessions.append(harness.open_session())
            made += 1
            continue
        if roll < 0.08 and len(sessions) > 1:
            harness.close_session(sessions.pop(rng.randrange(len(sessions))))
            made += 1
            continue
        session = rng.choice(sessions)
        if roll < 0.45:
            parent = rng.choice(paths)
            name = f"{parent.rstrip('/')}/{rng.choice('abcdefgh')}{rng.randrange(6)}"
            flags = rng.choice([0, 0, 0, 1, 2, 3])
            data = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(40))
            acl = OPEN_ACL if rng.random() < 0.9 else READ_ACL + [(30, "world", "anyone")]
            outcome = harness.prepare(session, Op.CREATE, (name, data, acl, flags))
        elif roll < 0.7:
            outcome = harness.prepare(
                session, Op.SET_DATA, (rng.choice(paths), rng.randbytes(rng.randrange(30)), -1))
        elif roll < 0.75:
            outcome = harness.prepare(session, Op.SET_ACL, (rng.choice(paths), OPEN_ACL, -1))
        elif roll < 0.92:
            outcome = harness.prepare(session, Op.DELETE, (rng.choice(paths), -1))
        else:
            target = rng.choice(paths)
            outcome = harness.prepare(session, Op.MULTI, [
                (Op.CREATE, (f"{target.rstrip('/')}/m{rng.randrange(9)}", b"m", OPEN_ACL,
                             CreateMode.PERSISTENT_SEQUENTIAL if rng.random() < 0.5 else 0)),
                (Op.SET_DATA, (target, b"multi", -1)),
            ])
        if isinstance(outcome, Txn):
            made += 1
    return made


def _paths(node: Node) -> list[str]:
    out = []
    stack = ["/"]
    while stack:
        path = stack.pop()
        if path.startswith("/zookeeper"):
            continue
        out.append(path)
        for name in node.tree.get_children(path) or []:
            stack.append(f"{path.rstrip('/')}/{name}")
    return out


def tree_state(node: Node) -> dict[str, tuple]:
    """Every znode's data, stat and ACL (for exact comparisons)."""
    out = {}
    stack = ["/"]
    while stack:
        path = stack.pop()
        found = node.tree.get_data(path)
        assert found is not None
        out[path] = (found[0], found[1], node.tree.get_acl(path)[0])
        for name in node.tree.get_children(path) or []:
            stack.append(f"{path.rstrip('/')}/{name}")
    return out


class InProcessServer:
    """The real Server on its own event-loop thread in this process."""

    def __init__(self, cfg: Config) -> None:
        from fastzk.runtime.server import Server

        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(cfg, self.loop)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.cfg.client_port}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs fn on the server's loop and returns its result."""
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
