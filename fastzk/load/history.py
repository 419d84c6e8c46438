"""`fastzk load --history`: a workload made to be checked for linearizability, recorded.

Every operation is written twice to a JSON-lines file, at its invocation and at its
completion, in the ``znode`` model format of :mod:`fastzk.check` (see the README): the file
order is the real-time order because the timestamp is taken and the line written under one
lock.  At the end the history is checked and the verdict printed.

Why kazoo and threads, not the asyncio load engine: the history must survive a cluster under
faults, so a client has to move to another server of the connect string when its server dies
and keep its session when it can (the engine's client deliberately never reconnects), and it
must work against any ZooKeeper-protocol ensemble.  One thread per session, one operation at
a time, keeps each ``process`` sequential as the checker requires; the invoke is recorded
before the request is handed to kazoo and the completion after its reply is seen, so the
recorded interval always contains the real one.

Outcomes: a reply is ``ok`` (including the model's error values such as ``"badversion"``);
a request kazoo refused before sending it (closed or expired client) is ``fail``; a lost
connection, an expired session or a timeout is ``info`` (it may or may not have taken
effect).  After an ``info`` the worker continues as a new ``process`` -- the old one may
still have that operation in flight -- and so does a worker whose session changed (kazoo
opens a new session after an expiry).

The workload: a few keys (``k0``..), no sequential or ephemeral nodes (their names and owners
are not in the model): getData, setData with and without an expected version, create,
delete with and without a version, sync then getData, and multis over one key (check+set,
create+set, delete+create) so that both atomicity and the per-key checking stay cheap.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: Default shape of ``fastzk load --history`` (small on purpose: the check is NP-hard).
DEFAULT_SESSIONS = 4
DEFAULT_KEYS = 5
#: Operation mix: (name, weight).
OP_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("get", 25),
    ("set", 25),
    ("create", 14),
    ("delete", 10),
    ("sync-get", 10),
    ("multi", 8),
)


class HistoryWriter:
    """Appends events to a JSON-lines file; timestamps come from one monotonic clock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = open(path, "w", encoding="ascii")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._next_process = 0
        self.counts: Counter[str] = Counter()

    def new_process(self) -> int:
        """A process id never used before in this history."""
        with self._lock:
            self._next_process += 1
            return self._next_process - 1

    @property
    def processes(self) -> int:
        """How many process ids were handed out."""
        return self._next_process

    def record(self, event: dict[str, Any]) -> None:
        """Stamp *event* with the time and write it (time and order taken under one lock)."""
        with self._lock:
            event["time"] = round(time.monotonic() - self._start, 6)
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self.counts[event["type"]] += 1

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def summary(self, duration_s: float) -> HistoryRun:
        """What was recorded so far."""
        with self._lock:
            return HistoryRun(self.path, dict(sorted(self.counts.items())), self._next_process,
                              duration_s)


def _error_value(error: BaseException) -> str | None:
    """The model's name of a ZooKeeper error that is a legitimate reply, else None."""
    from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

    for cls, name in (
        (NodeExistsError, "nodeexists"),
        (BadVersionError, "badversion"),
        (NoNodeError, "nonode"),
        (NotEmptyError, "notempty"),
    ):
        if isinstance(error, cls):
            return name
    return None


def session_hex(client: Any) -> str:
    """The client's current session id as ``0x..`` (``0x0`` before the first session)."""
    cid = client.client_id
    return f"0x{cid[0]:x}" if cid else "0x0"


def server_of(client: Any) -> str:
    """``host:port`` of the server the client is connected to now (``?`` when none).

    kazoo has no public accessor; its connection's socket is read defensively.
    """
    try:
        host, port = client._connection._socket.getpeername()[:2]
        return f"{host}:{port}"
    except (AttributeError, OSError, TypeError):
        return "?"


@dataclass
class Worker:
    """One kazoo session driving the checked workload from its own thread."""

    index: int
    client: Any
    writer: HistoryWriter
    keys: list[str]
    rng: random.Random
    op_timeout_s: float
    process: int = -1
    session: str = ""
    versions: dict[str, int] = field(default_factory=dict)
    counter: int = 0

    def _value(self) -> str:
        self.counter += 1
        return f"w{self.index}-{self.counter}"

    def _invoke(self, f: str, key: str | None, value: Any) -> dict[str, Any]:
        session = session_hex(self.client)
        if session != self.session or self.process < 0:
            self.process = self.writer.new_process()
            self.session = session
        event: dict[str, Any] = {"process": self.process, "type": "invoke", "f": f}
        if key is not None:
            event["key"] = key
        event.update(value=value, session=session, server=server_of(self.client))
        self.writer.record(dict(event))
        return event

    def _complete(self, invoke: dict[str, Any], kind: str, value: Any) -> None:
        event = {**invoke, "type": kind, "value": value,
                 "session": session_hex(self.client), "server": server_of(self.client)}
        self.writer.record(event)
        if kind == "info":
            self.process = -1  # the operation may still be in flight: continue as a new one

    def _run(self, f: str, key: str | None, value: Any, start: Callable[[], Any],
             decode: Callable[[Any], Any]) -> Any:
        """Invoke, wait (bounded) and record one operation; return the ok value or None."""
        from kazoo.exceptions import (
            AuthFailedError,
            ConnectionClosedError,
            KazooException,
            SessionExpiredError,
        )
        from kazoo.handlers.threading import KazooTimeoutError
        from kazoo.protocol.states import KeeperState

        invoke = self._invoke(f, key, value)
        # kazoo short-circuits a request while its client is closed or its session expired:
        # failed at once, it never reached a server, so it certainly did not happen. Both the
        # state before the call and the synchronous failure are required, so that a request
        # that was sent and then failed by a very fast expiry is never taken for one.
        refused_state = self.client.client_state in (
            KeeperState.CLOSED, KeeperState.EXPIRED_SESSION, KeeperState.AUTH_FAILED
        )
        try:
            pending = start()
        except (ConnectionClosedError, SessionExpiredError, AuthFailedError):
            self._complete(invoke, "fail", None)
            return None
        if refused_state and pending.ready() and isinstance(
            pending.exception, ConnectionClosedError | SessionExpiredError | AuthFailedError
        ):
            self._complete(invoke, "fail", None)
            return None
        try:
            result = pending.get(timeout=self.op_timeout_s)
        except KazooTimeoutError:
            self._complete(invoke, "info", None)
            return None
        except KazooException as error:
            model_error = _error_value(error)
            if model_error is None:
                self._complete(invoke, "info", None)
                return None
            value_ok = None if f == "get" and model_error == "nonode" else model_error
            self._complete(invoke, "ok", value_ok)
            return value_ok
        ok = decode(result)
        self._complete(invoke, "ok", ok)
        return ok

    def step(self) -> None:
        """Run one randomly chosen operation (two for sync-get)."""
        names = [name for name, _ in OP_WEIGHTS]
        weights = [weight for _, weight in OP_WEIGHTS]
        op = self.rng.choices(names, weights)[0]
        key = self.rng.choice(self.keys)
        zk = self.client
        if op == "sync-get":
            self.sync_get(key)
        elif op == "get":
            self.get(key)
        elif op == "set":
            version = self._known_version(key)
            data = self._value()
            new = self._run("set", key, [version, data],
                            lambda: zk.set_async(key, data.encode(), version),
                            lambda stat: stat.version)
            if isinstance(new, int):
                self.versions[key] = new
        elif op == "create":
            data = self._value()
            self._run("create", key, data, lambda: zk.create_async(key, data.encode()),
                      lambda _: True)
        elif op == "delete":
            version = self._known_version(key)
            self._run("delete", key, version, lambda: zk.delete_async(key, version),
                      lambda _: True)
        else:
            self._multi(key)

    def get(self, key: str) -> None:
        zk = self.client
        got = self._run("get", key, None, lambda: zk.get_async(key),
                        lambda r: [r[0].decode("ascii"), r[1].version])
        if isinstance(got, list):
            self.versions[key] = got[1]

    def sync_get(self, key: str) -> None:
        """sync, then getData: a read that must see every write completed before the sync."""
        self._run("sync", key, None, lambda: self.client.sync_async(key), lambda _: True)
        self.get(key)

    def _known_version(self, key: str) -> int:
        """Half the time the version this worker last saw (a conditional write), else -1."""
        if key in self.versions and self.rng.random() < 0.5:
            return self.versions[key]
        return -1

    def _multi(self, key: str) -> None:
        zk = self.client
        shape = self.rng.choice(("check-set", "create-set", "delete-create"))
        if shape == "check-set":
            version = self.versions.get(key, 0)
            data = self._value()
            subs = [{"f": "check", "key": key, "value": version},
                    {"f": "set", "key": key, "value": [-1, data]}]
        elif shape == "create-set":
            first, second = self._value(), self._value()
            subs = [{"f": "create", "key": key, "value": first},
                    {"f": "set", "key": key, "value": [-1, second]}]
        else:
            data = self._value()
            subs = [{"f": "delete", "key": key, "value": -1},
                    {"f": "create", "key": key, "value": data}]

        def start() -> Any:
            txn = zk.transaction()
            for sub in subs:
                if sub["f"] == "check":
                    txn.check(key, sub["value"])
                elif sub["f"] == "set":
                    txn.set_data(key, sub["value"][1].encode(), sub["value"][0])
                elif sub["f"] == "create":
                    txn.create(key, sub["value"].encode())
                else:
                    txn.delete(key, sub["value"])
            return txn.commit_async()

        self._run("multi", None, subs, start, _multi_outcome)


def _multi_outcome(results: list[Any]) -> Any:
    """``true`` when every sub-op succeeded, else the model's error of the failing one."""
    from kazoo.exceptions import RolledBackError

    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, RolledBackError):
            return _error_value(result) or type(result).__name__
    return True


@dataclass
class HistoryRun:
    """What a recorded run produced (the verdict comes from :func:`check_file`)."""

    path: Path
    counts: dict[str, int]
    processes: int
    duration_s: float


def make_client(connect: str, session_timeout_s: float) -> Any:
    """A kazoo client that reconnects quickly to any server of *connect*, never retrying a
    command itself (a retried write would be recorded as one operation).

    kazoo's warnings about dropped connections are silenced: under faults they are expected
    by the thousand, and every outcome that matters is in the history."""
    from kazoo.client import KazooClient

    logging.getLogger("kazoo").setLevel(logging.ERROR)

    retry = {"max_tries": -1, "delay": 0.05, "backoff": 1.5, "max_delay": 0.5}
    return KazooClient(hosts=connect, timeout=session_timeout_s, connection_retry=retry,
                       randomize_hosts=True)


def prepare_root(connect: str, root: str, session_timeout_s: float,
                 timeout_s: float = 30.0) -> None:
    """Create *root* and remove its children: the model starts with every key absent."""
    client = make_client(connect, session_timeout_s)
    client.start(timeout=timeout_s)
    try:
        client.ensure_path(root)
        for child in sorted(client.get_children(root)):
            client.delete(f"{root}/{child}", recursive=True)
    finally:
        client.stop()
        client.close()


def record(
    connect: str,
    writer: HistoryWriter,
    *,
    root: str,
    sessions: int = DEFAULT_SESSIONS,
    keys: int = DEFAULT_KEYS,
    duration_s: float = 10.0,
    seed: int = 0,
    session_timeout_s: float = 4.0,
    start_timeout_s: float = 30.0,
    think_s: float = 0.0,
    stop: threading.Event | None = None,
    started: threading.Event | None = None,
) -> HistoryRun:
    """Run the checked workload against *connect* for *duration_s* (or until *stop*) and
    record it with *writer* (left open: :func:`final_reads` may follow); each worker waits
    *think_s* between operations (a nemesis run keeps its history small enough to check that
    way); *started* is set once every session is open."""
    prepare_root(connect, root, session_timeout_s, start_timeout_s)
    key_paths = [f"{root}/k{i}" for i in range(keys)]
    stop = stop or threading.Event()
    workers: list[Worker] = []
    try:
        for i in range(sessions):
            client = make_client(connect, session_timeout_s)
            client.start(timeout=start_timeout_s)
            workers.append(Worker(i, client, writer, key_paths, random.Random(f"{seed}/{i}"),
                                  op_timeout_s=2 * session_timeout_s))
        began = time.monotonic()
        deadline = began + duration_s

        def loop(worker: Worker) -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                worker.step()
                if think_s:
                    stop.wait(think_s)

        threads = [threading.Thread(target=loop, args=(w,), name=f"history-{w.index}",
                                    daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        if started is not None:
            started.set()
        # Each step is bounded by two op timeouts; the join bound covers that.
        for thread in threads:
            thread.join(duration_s + 4 * 2 * session_timeout_s + 10)
        if any(thread.is_alive() for thread in threads):
            raise RuntimeError("a history worker did not stop in time")
        elapsed = time.monotonic() - began
    finally:
        for worker in workers:
            worker.client.stop()
            worker.client.close()
    return writer.summary(elapsed)


def final_reads(connect: str, writer: HistoryWriter, *, root: str, keys: int = DEFAULT_KEYS,
                session_timeout_s: float = 4.0, start_timeout_s: float = 30.0) -> None:
    """sync then getData of every key through a new session, recorded: the last word on each
    key, so that an acknowledged write lost at the very end cannot go unobserved."""
    client = make_client(connect, session_timeout_s)
    client.start(timeout=start_timeout_s)
    try:
        worker = Worker(-1, client, writer, [f"{root}/k{i}" for i in range(keys)],
                        random.Random(0), op_timeout_s=2 * session_timeout_s)
        for key in worker.keys:
            worker.sync_get(key)
    finally:
        client.stop()
        client.close()


def check_file(path: Path, time_limit_s: float = 60.0) -> Any:
    """Check a recorded history with the ``znode`` model; returns a ``CheckResult``."""
    from fastzk.check import check_history, read_history

    return check_history(read_history(path), "znode", time_limit_s=time_limit_s)


def run_from_load_args(args: argparse.Namespace) -> int:
    """``fastzk load --history FILE``: 0 when linearizable, 1 when not, 2 when the run or
    the check could not decide."""
    if args.preset:
        print("fastzk load: --history runs its own workload; drop --preset", file=sys.stderr)
        return 2
    path = Path(args.history)
    root, keys = f"{args.root}-history", args.keys or DEFAULT_KEYS
    timeout_s = args.session_timeout / 1000
    writer = HistoryWriter(path)
    try:
        run = record(str(args.server), writer, root=root,
                     sessions=args.sessions or DEFAULT_SESSIONS, keys=keys,
                     duration_s=args.duration, seed=args.seed, session_timeout_s=timeout_s)
        final_reads(str(args.server), writer, root=root, keys=keys, session_timeout_s=timeout_s)
        run = writer.summary(run.duration_s)
    except Exception as error:  # noqa: BLE001 - kazoo start-up failures have many types
        print(f"fastzk load: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    finally:
        writer.close()
    counts = ", ".join(f"{k} {v}" for k, v in run.counts.items())
    print(f"history: {path} ({counts}; {run.processes} processes, {run.duration_s:.1f}s)")
    result = check_file(path)
    print(result.report())
    return {"linearizable": 0, "not linearizable": 1}.get(result.verdict, 2)
