"""Crash tests: a real server process under concurrent write load from several kazoo clients,
SIGKILLed at random moments and restarted, must keep every acknowledged write.

After every restart the checker verifies that every acknowledged create is present with its
value and version, that every key's acknowledged setData is there (or, for the one write per
key that was in flight at the kill, its successor), that no sequential number was handed out
twice, and, every few rounds, that the tree digest (the `hash` four-letter word) does not change
across a restart that loses nothing: a second SIGKILL while idle, then a clean SIGTERM.

The negative control runs the same rounds against a server configured to acknowledge before
syncing (`fastzk.unsafeAckBeforeSync`, its writes delayed by `fastzk.unsafeWriteDelayMs` so
that a SIGKILL loses them, as a power cut loses unsynced page cache) and asserts that the
checker does catch the loss: a crash test that cannot catch a lost write proves nothing.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionDropped,
    ConnectionLoss,
    KazooException,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError

from fastzk.nemesis.servers import ServerProcess, start_server

UNKNOWN_OUTCOME = (ConnectionLoss, ConnectionDropped, ConnectionClosedError, SessionExpiredError)
WORKERS = 4
KEYS_PER_WORKER = 8
WINDOW = 16  # pipelined requests per client
ROUNDS = 20

BASE_CFG: dict[str, Any] = {
    "tickTime": 500,
    "snapCount": 400,  # fuzzy snapshots (and purges) happen during the load
    "preAllocSize": 64,  # KB: segments roll during the load
    "fastzk.snapshotChunkNodes": 50,
    "autopurge.snapRetainCount": 3,
    "maxClientCnxns": 0,
    "admin.enableServer": "false",
}


def _client(hosts: str, retry_forever: bool = False) -> KazooClient:
    # a few connection attempts: on two busy shared cores a handshake can miss kazoo's
    # read timeout; after a kill the workers stop their clients before the restart anyway
    retry = {"max_tries": -1 if retry_forever else 4, "delay": 0.1, "backoff": 1,
             "max_delay": 0.3}
    return KazooClient(hosts, timeout=2.0, connection_retry=retry)


@dataclass
class Model:
    """What the clients were told (acknowledged), and what may or may not have happened."""

    created: dict[str, bytes] = field(default_factory=dict)  # acked plain creates
    sequential: list[tuple[str, bytes]] = field(default_factory=list)  # acked, all rounds
    keys: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # key -> acked (data, version)
    doubt: dict[str, bytes] = field(default_factory=dict)  # key -> setData in flight at the kill
    fresh: list[str] = field(default_factory=list)  # creates acked since the last check
    fresh_sequential: list[str] = field(default_factory=list)
    acked: int = 0
    errors: list[str] = field(default_factory=list)  # requests that failed outright
    lock: threading.Lock = field(default_factory=threading.Lock)


class Worker(threading.Thread):
    def __init__(self, index: int, hosts: str, model: Model, round_no: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.index = index
        self.hosts = hosts
        self.model = model
        self.round_no = round_no
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.connected = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        client = _client(self.hosts)
        try:
            client.start(timeout=15)
        except KazooTimeoutError as error:
            self.error = error
            self.connected.set()
            return
        self.connected.set()
        model = self.model
        pending: deque[tuple[str, str, bytes, Any]] = deque()
        busy: set[str] = set()
        counter = 0
        try:
            while not self.stop.is_set() or pending:
                if not self.stop.is_set() and len(pending) < WINDOW:
                    counter += 1
                    value = f"w{self.index}r{self.round_no}n{counter}".encode()
                    roll = self.rng.random()
                    if roll < 0.4:
                        key = f"/k/w{self.index}-{self.rng.randrange(KEYS_PER_WORKER)}"
                        if key not in busy:
                            busy.add(key)
                            pending.append(("set", key, value, client.set_async(key, value)))
                            continue
                    if roll < 0.7:
                        path = f"/c/w{self.index}r{self.round_no}n{counter}"
                        pending.append(("create", path, value, client.create_async(path, value)))
                    else:
                        pending.append(("seq", "/seq/s-", value,
                                        client.create_async("/seq/s-", value, sequence=True)))
                    continue
                kind, path, value, result = pending.popleft()
                try:
                    outcome = result.get(timeout=10)
                except UNKNOWN_OUTCOME:
                    # connection loss at the kill: the outcome is unknown
                    if kind == "set":
                        with model.lock:
                            model.doubt[path] = value
                    self.stop.set()
                    continue
                except KazooException as error:  # a definite failure: must never happen
                    with model.lock:
                        model.errors.append(f"{kind} {path}: {error!r}")
                    self.stop.set()
                    continue
                finally:
                    if kind == "set":
                        busy.discard(path)
                with model.lock:
                    model.acked += 1
                    if kind == "set":
                        model.keys[path] = (value, outcome.version)
                    elif kind == "create":
                        model.created[path] = value
                        model.fresh.append(path)
                    else:
                        model.sequential.append((outcome, value))
                        model.fresh_sequential.append(outcome)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error
        finally:
            try:
                client.stop()
                client.close()
            except Exception:  # noqa: BLE001 - the server is gone
                pass


def _values(client: KazooClient, paths: list[str]) -> dict[str, tuple[bytes, int] | None]:
    """(data, version) of each path, or None if missing: pipelined, thousands at a time."""
    out: dict[str, tuple[bytes, int] | None] = {}
    for start in range(0, len(paths), 2000):
        batch = [(path, client.get_async(path)) for path in paths[start:start + 2000]]
        for path, result in batch:
            try:
                data, stat = result.get(timeout=30)
                out[path] = (data, stat.version)
            except NoNodeError:
                out[path] = None
    return out


def check(hosts: str, model: Model, full: bool) -> list[str]:
    """Every acknowledged write against the restarted server; returns what is missing or
    wrong (empty when all is well). Existence of every acknowledged node is checked each
    time; values and versions of the previous rounds' nodes (which never change) only when
    `full`, of this round's always. Resets the model's keys to what the server now has."""
    problems: list[str] = [f"request failed: {e}" for e in model.errors]
    model.errors.clear()
    client = _client(hosts)
    client.start(timeout=15)
    try:
        present = set(client.get_children("/c"))
        for path in model.created:
            if path[3:] not in present:
                problems.append(f"acknowledged create {path} is missing")
        fresh = model.fresh if not full else list(model.created)
        for path, found in _values(client, fresh).items():
            value = model.created[path]
            if found is not None and found != (value, 0):
                problems.append(f"{path}: {found[0]!r} v{found[1]}, acknowledged {value!r} v0")
        seen: set[str] = set()
        present = set(client.get_children("/seq"))
        for path, _ in model.sequential:
            if path in seen:
                problems.append(f"sequential name {path} acknowledged twice")
            seen.add(path)
            if path[5:] not in present:
                problems.append(f"acknowledged sequential create {path} is missing")
        values = dict(model.sequential)
        fresh = model.fresh_sequential if not full else list(values)
        for path, found in _values(client, fresh).items():
            if found is not None and found[0] != values[path]:
                problems.append(f"{path}: {found[0]!r}, acknowledged {values[path]!r}")
        model.fresh, model.fresh_sequential = [], []
        current = _values(client, list(model.keys))
        for key, (value, version) in list(model.keys.items()):
            doubt = model.doubt.pop(key, None)
            found = current[key]
            if found is None:
                problems.append(f"acknowledged key {key} is missing")
                del model.keys[key]
            elif found == (value, version):
                pass
            elif doubt is not None and found == (doubt, version + 1):
                pass  # the write in flight at the kill made it to disk: allowed
            else:
                problems.append(f"{key}: {found[0]!r} v{found[1]}, acknowledged {value!r} "
                                f"v{version}" + (f" (in flight: {doubt!r})" if doubt else ""))
            if found is not None:
                model.keys[key] = found
        model.doubt.clear()
        if model.sequential:  # the counter went on: the next number is above all acked ones
            top = max(int(path.rsplit("-", 1)[1]) for path, _ in model.sequential)
            fresh_name = client.create("/seq/s-", b"probe", sequence=True)
            if int(fresh_name.rsplit("-", 1)[1]) <= top:
                problems.append(f"sequential counter went back: {fresh_name} after s-{top:010d}")
    finally:
        client.stop()
        client.close()
    return problems


def digest(proc: ServerProcess) -> tuple[int, int]:
    reply = proc.four_letter_word("hash").decode().strip().splitlines()[-1]
    zxid, value = reply.split(":")
    return int(zxid, 16), int(value)


def setup(proc: ServerProcess, model: Model) -> None:
    client = _client(proc.connect_string)
    client.start(timeout=15)
    for path in ("/c", "/seq", "/k"):
        client.create(path, b"")
    for worker in range(WORKERS):
        for key in range(KEYS_PER_WORKER):
            client.create(f"/k/w{worker}-{key}", b"init")
            model.keys[f"/k/w{worker}-{key}"] = (b"init", 0)
    client.stop()
    client.close()
    time.sleep(0.5)  # durable even under the negative control's delayed writes


@dataclass
class Outcome:
    rounds: int = 0
    acked: int = 0
    problems: list[str] = field(default_factory=list)
    digests_checked: int = 0


def crash_rounds(workdir: Path, rounds: int, seed: int, stop_at_first_loss: bool = False,
                 **cfg: Any) -> Outcome:
    rng = random.Random(seed)
    proc = start_server("fastzk", workdir, **{**BASE_CFG, **cfg})
    model = Model()
    outcome = Outcome()
    try:
        setup(proc, model)
        for round_no in range(rounds):
            workers = [Worker(i, proc.connect_string, model, round_no, rng.randrange(1 << 30))
                       for i in range(WORKERS)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.connected.wait(15)
            time.sleep(rng.uniform(0.5, 1.5))
            proc.kill()  # SIGKILL while every client has writes in flight
            for worker in workers:
                worker.stop.set()
            for worker in workers:
                worker.join(30)
                assert not worker.is_alive()
                assert worker.error is None, f"worker {worker.index}: {worker.error!r}"
            proc.restart()
            outcome.rounds += 1
            full = round_no % 5 == 4 or round_no == rounds - 1
            problems = check(proc.connect_string, model, full)
            outcome.problems.extend(f"round {round_no}: {p}" for p in problems)
            if problems and stop_at_first_loss:
                break
            if round_no % 5 == 4:
                # the digest survives restarts that lose nothing: an idle SIGKILL, a SIGTERM
                zxid, before = digest(proc)
                proc.kill()
                proc.restart()
                zxid2, after_crash = digest(proc)
                proc.restart()  # SIGTERM, start
                zxid3, after_stop = digest(proc)
                assert before == after_crash == after_stop, (before, after_crash, after_stop)
                assert zxid <= zxid2 <= zxid3
                outcome.digests_checked += 1
        outcome.acked = model.acked
    finally:
        if proc.running:
            proc.stop()
    return outcome


@pytest.mark.timeout(240)
def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    seed = int(time.time())
    outcome = crash_rounds(tmp_path, ROUNDS, seed=seed)
    print(f"\ncrash test (seed {seed}): {outcome.rounds} rounds, {outcome.acked} acknowledged "
          f"writes checked, {outcome.digests_checked} digest checks")
    assert outcome.rounds == ROUNDS
    assert outcome.acked > 20 * ROUNDS  # the load really ran
    assert outcome.problems == [], f"seed {seed}"
    assert outcome.digests_checked == ROUNDS // 5


@pytest.mark.timeout(120)
def test_negative_control_unsafe_ack_before_sync_loses_writes_and_is_caught(
    tmp_path: Path,
) -> None:
    outcome = crash_rounds(tmp_path, 5, seed=7, stop_at_first_loss=True,
                           **{"fastzk.unsafeAckBeforeSync": "true",
                              "fastzk.unsafeWriteDelayMs": 300})
    lost = [p for p in outcome.problems if "missing" in p or "acknowledged" in p]
    print(f"\nnegative control: {len(outcome.problems)} lost acknowledged writes detected "
          f"after {outcome.rounds} round(s); e.g. {outcome.problems[:2]}")
    assert lost, "the crash checker did not notice lost acknowledged writes"


@pytest.mark.timeout(120)
def test_a_resumed_session_keeps_its_ephemerals_and_an_abandoned_one_expires(
    tmp_path: Path,
) -> None:
    proc = start_server("fastzk", tmp_path, **BASE_CFG)
    stays = _client(proc.connect_string, retry_forever=True)
    leaves = _client(proc.connect_string)
    try:
        stays.start(timeout=10)
        leaves.start(timeout=10)
        stays.create("/stays", b"a", ephemeral=True)
        leaves.create("/leaves", b"b", ephemeral=True)
        session = stays.client_id[0]
        proc.kill()
        leaves.stop()  # its session cannot be closed: the server is down
        leaves.close()
        proc.restart()
        deadline = time.monotonic() + 15
        while True:  # kazoo resumes the session by itself
            try:
                assert stays.exists("/stays") is not None
                break
            except KazooException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert stays.client_id[0] == session
        assert stays.exists("/leaves") is not None  # restored, not yet expired
        deadline = time.monotonic() + 15  # its timeout (2 s) runs from the restart
        while stays.exists("/leaves") is not None:
            assert time.monotonic() < deadline, "the abandoned session never expired"
            time.sleep(0.2)
        assert stays.get("/stays")[1].ephemeralOwner == session
    finally:
        stays.stop()
        stays.close()
        proc.stop()
