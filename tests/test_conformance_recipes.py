"""Differential conformance at the application level: kazoo recipes.

The recipes combine watches, sequential ephemerals and ordering guarantees
the way real applications do; what their callbacks observe must be the same
on both servers.  A barrier after every write makes each step deterministic
(the recipe's follow-up read runs in kazoo's callback thread before the
barrier's marker).

Recipes whose interleaving is not deterministic (a lock with many contenders,
concurrent queues, a tree cache under random writes) run on each server in turn
and assert the recipe's guarantees instead of comparing transcripts.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from differential import Differential, ScenarioContext, add_watch_request
from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.protocol.serialization import Watch
from kazoo.recipe.barrier import Barrier, DoubleBarrier
from kazoo.recipe.election import Election
from kazoo.recipe.lock import Lock
from kazoo.recipe.queue import LockingQueue, Queue
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from fastzk.nemesis.servers import ServerProcess


def test_datawatch_and_childrenwatch_see_every_step(differential: Differential) -> None:
    """DataWatch/ChildrenWatch callbacks: initial call, each change, deletion."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        watcher = ctx.client("watcher", record_wire=False)

        def on_data(data: Any, stat: Any) -> None:
            ctx._append_callback("watcher", ("datawatch", data, stat))

        def on_children(children: list[str]) -> None:
            ctx._append_callback("watcher", ("childrenwatch", children))

        ctx.op("create", p("node"), b"v0", client="writer")
        DataWatch(watcher, p("node"), on_data)
        ChildrenWatch(watcher, p(), on_children)
        ctx.barrier("watcher")
        steps = [
            ("set", p("node"), b"v1"),
            ("create", p("second"), b""),
            ("set", p("node"), b"v2"),
            ("delete", p("second")),
            ("delete", p("node")),
            ("create", p("node"), b"again"),
        ]
        for method, *args in steps:
            ctx.op(method, *args, client="writer")
            ctx.barrier("watcher")
        ctx.record_events("watcher")

    differential.run(scenario)


def test_lock_recipe_hands_over_between_sessions(differential: Differential) -> None:
    """Lock: holder blocks the contender; release or session close hands it over."""

    def scenario(ctx: ScenarioContext) -> None:
        lock_path = ctx.path("lock")
        # Lock waits on a watch in the callback thread: frame order is not deterministic.
        a = Lock(ctx.client("a", record_wire=False), lock_path, "a")
        b = Lock(ctx.client("b", record_wire=False), lock_path, "b")
        c = Lock(ctx.client("c", record_wire=False), lock_path, "c")
        ctx.call("a.acquire", a.acquire, timeout=5)
        ctx.call("b.acquire(blocking=False)", b.acquire, blocking=False)
        ctx.call("contenders", a.contenders)
        ctx.call("a.release", a.release)
        ctx.call("b.acquire", b.acquire, timeout=5)
        ctx.call("c.acquire(timeout=0.2)", c.acquire, timeout=0.2)
        ctx.call("contenders", a.contenders)
        ctx.stop_client("b")
        ctx.call("c.acquire after b's session closed", c.acquire, timeout=5)
        ctx.call("contenders", a.contenders)
        # Lock node names start with a random per-Lock uuid; keep only the sequence part.
        children = ctx.client("a").get_children(lock_path)
        ctx.record("lock nodes", sorted(name.rsplit("__", 1)[-1] for name in children))

    differential.run(scenario)


# --- recipes under contention ------------------------------------------------------------------
# Interleavings are not deterministic here, so these are not transcript comparisons: each
# runs on each server (the ``server`` fixture: ZooKeeper, then fastzk) and asserts the
# recipe's guarantees, which must hold on both.

CONTENDERS = 8
ROUNDS = 4


def _threads(targets: list[Callable[[], None]], timeout: float = 20.0) -> list[BaseException]:
    """Run *targets* in threads (bounded); return the exceptions they raised."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported by the caller
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        errors.append(TimeoutError("recipe threads did not finish"))
    return errors


def test_lock_mutual_exclusion_under_contention(
    server: ServerProcess, kazoo_factory: Callable[..., KazooClient], unique_path: str
) -> None:
    """8 sessions x 4 acquisitions of one kazoo Lock: never two holders at once (an
    in-process counter, and a version-checked read-modify-write of a znode that a second
    holder would break with BadVersion); every acquisition counted; nothing left behind."""
    lock_path = f"{unique_path}/lock"
    counter_path = f"{unique_path}/counter"
    setup = kazoo_factory(server)
    setup.create(counter_path, b"0", makepath=True)
    holders = 0
    max_holders = 0
    guard = threading.Lock()
    order: list[str] = []

    def contender(name: str) -> Callable[[], None]:
        client = kazoo_factory(server)

        def run() -> None:
            nonlocal holders, max_holders
            lock = Lock(client, lock_path, name)
            for _ in range(ROUNDS):
                assert lock.acquire(timeout=15), f"{name} did not get the lock"
                try:
                    with guard:
                        holders += 1
                        max_holders = max(max_holders, holders)
                        order.append(name)
                    data, stat = client.get(counter_path)
                    time.sleep(0.001)  # widen the window a second holder would use
                    client.set(counter_path, str(int(data) + 1).encode(), version=stat.version)
                    with guard:
                        holders -= 1
                finally:
                    lock.release()

        return run

    errors = _threads([contender(f"c{i}") for i in range(CONTENDERS)])
    assert errors == []
    assert max_holders == 1
    assert len(order) == CONTENDERS * ROUNDS
    assert setup.get(counter_path)[0] == str(CONTENDERS * ROUNDS).encode()
    assert setup.get_children(lock_path) == []


def test_leader_election_survives_crashed_and_expired_leaders(differential: Differential) -> None:
    """kazoo Election with three candidates: the first leads; its connection is dropped
    without closeSession (a crash), so the next one leads once the session expires; that
    leader's session is then ended by another connection taking it over and closing it
    (an administrative expiry), and the third one leads.  Leadership follows the
    candidates' sequence order on both servers."""

    def scenario(ctx: ScenarioContext) -> None:
        path = ctx.path("election")
        released = {name: threading.Event() for name in "abc"}
        elected: list[str] = []
        cond = threading.Condition()

        def lead(name: str) -> None:
            with cond:
                elected.append(name)
                cond.notify_all()
            released[name].wait(30)

        def wait_for(n: int, timeout: float = 15.0) -> None:
            with cond:
                ok = cond.wait_for(lambda: len(elected) >= n, timeout)
            ctx.record(f"leaders after waiting for {n}", list(elected) if ok else "timeout")

        clients = {
            name: ctx.client(name, timeout=4.0, record_wire=False) for name in "abc"
        }
        elections = {name: Election(c, path, name) for name, c in clients.items()}
        threads = []

        def candidate(name: str) -> None:
            try:
                elections[name].run(lead, name)
            except Exception:  # noqa: BLE001 - a dead session cannot release its node
                pass

        for name in "abc":
            t = threading.Thread(target=candidate, args=(name,), daemon=True)
            t.start()
            threads.append(t)
            if name == "a":
                wait_for(1)
            else:  # the candidate's node exists before the next one starts
                deadline = time.monotonic() + 10
                while len(elections["a"].contenders()) < "abc".index(name) + 1:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
        ctx.call("contenders", elections["a"].contenders)
        ctx.stop_client("a", close_session=False)  # crash: the session lives until expiry
        wait_for(2)
        ctx.call("contenders", elections["c"].contenders)
        b_session = clients["b"].client_id
        killer = ctx.client("b-killer", client_id=b_session, record_wire=False)
        ctx.record("took over b's session", killer.client_id[0] == b_session[0])
        ctx.stop_client("b-killer")  # closeSession of b's session
        wait_for(3)
        ctx.call("contenders", elections["c"].contenders)
        for event in released.values():
            event.set()
        for t in threads:
            t.join(5)

    differential.run(scenario, parallel=True, timeout=40)


def test_barrier_and_double_barrier(differential: Differential) -> None:
    """Barrier: wait blocks while the node exists and returns once it is removed.
    DoubleBarrier with 3 members: nobody gets past enter() before all have entered, nobody
    past leave() before all have left."""

    def scenario(ctx: ScenarioContext) -> None:
        barrier_path = ctx.path("barrier")
        a = Barrier(ctx.client("a", record_wire=False), barrier_path)
        b = Barrier(ctx.client("b", record_wire=False), barrier_path)
        ctx.call("b.wait(0.1) before create", b.wait, 0.1)
        ctx.call("a.create", a.create)
        ctx.call("b.wait(0.2) while the barrier stands", b.wait, 0.2)
        ctx.call("a.remove", a.remove)
        ctx.call("b.wait() after remove", b.wait, 5)

        double = ctx.path("double")
        log: list[str] = []
        guard = threading.Lock()

        def member(name: str) -> Callable[[], None]:
            barrier = DoubleBarrier(ctx.client(name, record_wire=False), double, 3, name)

            def run() -> None:
                with guard:
                    log.append(f"enter {name}")
                barrier.enter()
                with guard:
                    log.append(f"entered {name}")
                    log.append(f"leave {name}")
                barrier.leave()
                with guard:
                    log.append(f"left {name}")

            return run

        errors = _threads([member(n) for n in ("m1", "m2", "m3")], timeout=20)
        ctx.record("double barrier errors", [type(e).__name__ for e in errors])
        kinds = [entry.split()[0] for entry in log]
        first_entered = kinds.index("entered") if "entered" in kinds else len(kinds)
        first_left = kinds.index("left") if "left" in kinds else len(kinds)
        ctx.record("all entered before anyone got through enter",
                   kinds[:first_entered].count("enter") == 3)
        ctx.record("all left before anyone got through leave",
                   kinds[:first_left].count("leave") == 3)
        ctx.record("everyone got through", sorted(kinds).count("left") == 3)
        ctx.op("get_children", double, client="a")

    differential.run(scenario)


def test_queue_fifo_single_consumer(differential: Differential) -> None:
    """kazoo Queue on sequential nodes: FIFO within a priority, priorities first."""

    def scenario(ctx: ScenarioContext) -> None:
        q = Queue(ctx.client("p", record_wire=False), ctx.path("q"))
        for i in range(5):
            q.put(f"item-{i}".encode())
        q.put(b"urgent", priority=1)
        q.put(b"late", priority=999)
        consumer = Queue(ctx.client("c", record_wire=False), ctx.path("q"))
        ctx.call("len", len, consumer)
        ctx.call("drained", lambda: [consumer.get() for _ in range(8)])
        ctx.op("get_children", ctx.path("q"), client="c")

    differential.run(scenario)


def test_queues_under_concurrency(
    server: ServerProcess, kazoo_factory: Callable[..., KazooClient], unique_path: str
) -> None:
    """4 producers x 25 items into a kazoo Queue while 3 consumers take from it: no loss,
    no duplicate, and each consumer sees each producer's items in order (FIFO).  Then a
    LockingQueue with 2 consumers: every item consumed exactly once."""
    path = f"{unique_path}/q"
    producers, per_producer, consumers = 4, 25, 3
    total = producers * per_producer
    taken: dict[str, list[bytes]] = {f"c{i}": [] for i in range(consumers)}
    done = threading.Event()
    guard = threading.Lock()

    def producer(p: int) -> Callable[[], None]:
        q = Queue(kazoo_factory(server), path)
        return lambda: [q.put(f"p{p}-{i:03d}".encode()) for i in range(per_producer)] and None

    # Consumers racing for the same head item retry with kazoo's backoff (by default
    # doubling up to an hour); keep it short so contention cannot stall a consumer.
    fast_retry = {"max_tries": None, "delay": 0.005, "backoff": 1, "max_delay": 0.05}

    states: dict[str, list[str]] = {name: [] for name in taken}

    def consumer(name: str) -> Callable[[], None]:
        client = kazoo_factory(server, command_retry=fast_retry)
        client.add_listener(lambda state: states[name].append(str(state)))
        q = Queue(client, path)

        def run() -> None:
            deadline = time.monotonic() + 15
            while not done.is_set() and time.monotonic() < deadline:
                item = q.get()
                if item is None:
                    time.sleep(0.005)
                    continue
                with guard:
                    taken[name].append(item)
                    if sum(len(v) for v in taken.values()) == total:
                        done.set()

        return run

    errors = _threads(
        [producer(p) for p in range(producers)] + [consumer(n) for n in taken], timeout=20
    )
    assert errors == []
    got = [item for items in taken.values() for item in items]
    expected = [f"p{p}-{i:03d}".encode() for p in range(producers) for i in range(per_producer)]
    missing = sorted(set(expected) - set(got))
    duplicated = sorted({item for item in got if got.count(item) > 1})
    # kazoo's Queue is not exactly-once across a lost connection (a delete applied by the
    # server whose reply was lost is retried as NoNode and its item skipped): the states
    # tell such a client-side loss apart from a server fault
    assert (missing, duplicated) == ([], []), f"consumer connection states: {states}"
    for items in taken.values():
        for p in range(producers):
            mine = [x for x in items if x.startswith(f"p{p}-".encode())]
            assert mine == sorted(mine), "a consumer saw a producer's items out of order"

    lpath = f"{unique_path}/lq"
    LockingQueue(kazoo_factory(server), lpath).put_all([f"l{i:02d}".encode() for i in range(20)])
    consumed: list[bytes] = []

    def locking_consumer() -> None:
        q = LockingQueue(kazoo_factory(server, command_retry=fast_retry), lpath)
        while True:
            item = q.get(timeout=0.5)
            if item is None:
                return
            with guard:
                consumed.append(item)
            assert q.consume()

    assert _threads([locking_consumer, locking_consumer], timeout=20) == []
    assert sorted(consumed) == [f"l{i:02d}".encode() for i in range(20)]


class _TreeCache:
    """A minimal tree cache on one persistent recursive watch (addWatch mode 1).

    kazoo hands notification frames to us in wire order (a hook on its reader); a worker
    thread applies them: NodeCreated/NodeDataChanged -> getData (NoNode: forget it),
    NodeDeleted -> forget the node and its subtree.  The watch is added before the
    initial load, so nothing between the two is missed.
    """

    def __init__(self, client: KazooClient, root: str) -> None:
        self.client = client
        self.root = root
        self.nodes: dict[str, bytes] = {}
        self.events: queue.Queue[tuple[int, str] | None] = queue.Queue()
        original = client._connection._read_watch_event

        def hook(buffer: bytes, offset: int) -> Any:
            event, _ = Watch.deserialize(buffer, offset)
            self.events.put((event.type, event.path))
            return original(buffer, offset)

        client._connection._read_watch_event = hook
        result = client.handler.async_result()
        client._call(add_watch_request(root, 1), result)
        assert result.get(timeout=10) == ("ErrorResponse", 0, 0)
        self._load(root)
        self.worker = threading.Thread(target=self._run, daemon=True)
        self.worker.start()

    def _load(self, path: str) -> None:
        try:
            self.nodes[path] = self.client.get(path)[0]
            for child in self.client.get_children(path):
                self._load(f"{path}/{child}")
        except NoNodeError:
            pass

    def _run(self) -> None:
        while (item := self.events.get()) is not None:
            etype, path = item
            if etype in (1, 3):
                try:
                    self.nodes[path] = self.client.get(path)[0]
                except NoNodeError:
                    self._forget(path)
            elif etype == 2:
                self._forget(path)
            self.events.task_done()
        self.events.task_done()

    def _forget(self, path: str) -> None:
        for known in [p for p in self.nodes if p == path or p.startswith(path + "/")]:
            del self.nodes[known]

    def sync(self) -> None:
        """Every notification of writes done so far has been received and applied."""
        self.client.exists("/")  # notifications precede this reply
        self.events.join()

    def close(self) -> None:
        self.events.put(None)
        self.worker.join(5)


def _real_tree(client: KazooClient, path: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        out[path] = client.get(path)[0]
        for child in client.get_children(path):
            out.update(_real_tree(client, f"{path}/{child}"))
    except NoNodeError:
        pass
    return out


def test_tree_cache_on_a_recursive_watch_converges(
    server: ServerProcess, kazoo_factory: Callable[..., KazooClient], unique_path: str
) -> None:
    """Random creates, setDatas and (recursive) deletes in a small tree by two writers; a
    cache fed only by one recursive watch matches the real tree at checkpoints and at
    the end.  Recursive watches never send NodeChildrenChanged, so the cache relies on
    NodeCreated/NodeDeleted of every node."""
    rng = random.Random(20240611)
    writers = [kazoo_factory(server), kazoo_factory(server)]
    writers[0].create(unique_path, b"root")
    cache = _TreeCache(kazoo_factory(server), unique_path)
    names = ["a", "b", "c"]
    try:
        for step in range(240):
            w = rng.choice(writers)
            depth = rng.randint(1, 3)
            path = "/".join([unique_path, *(rng.choice(names) for _ in range(depth))])
            action = rng.random()
            try:
                if action < 0.45:
                    w.create(path, f"{step}".encode(), makepath=True)
                elif action < 0.8:
                    w.set(path, f"set{step}".encode())
                else:
                    w.delete(path, recursive=True)
            except (NoNodeError, NodeExistsError):
                pass
            if step % 60 == 59:
                cache.sync()
                assert cache.nodes == _real_tree(writers[0], unique_path), f"step {step}"
        cache.sync()
        real = _real_tree(writers[0], unique_path)
        assert cache.nodes == real
        assert len(real) > 3  # the walk really built a tree
    finally:
        cache.close()
