"""Fuzzy snapshots: serialization, correctness under concurrent writes, checksums and fallback,
retention, restored sessions, the offline tools."""

from __future__ import annotations

import io
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from durable import OPEN_ACL, Harness, make_node, random_writes, settle, tree_state

from fastzk._core import DataTree
from fastzk.proto import Op
from fastzk.quorum.zxid import counter_of
from fastzk.runtime import snapshot as snapshots
from fastzk.runtime import tools, wal
from fastzk.server.prep import Txn

REPO = Path(__file__).resolve().parent.parent


def _odd_tree() -> DataTree:
    tree = DataTree()
    tree.create("/a", b"x" * 100, OPEN_ACL, 0, 5, 100, 1)
    tree.create("/a/null", None, [(1, "digest", "u:p"), (30, "ip", "10.0.0.0/8")], 0, 6, 101, 1)
    tree.create("/a/empty", b"", OPEN_ACL, 0x0123456789, 7, 102, 2)  # ephemeral
    tree.create("/c", b"", OPEN_ACL, -(1 << 63), 8, 103, 2)  # container
    tree.create("/t", b"ttl", OPEN_ACL, -(1 << 56) | 5000, 9, 104, 3)  # TTL
    tree.create("/p\u00e4th\udc80", b"s", OPEN_ACL, 0, 10, 105, 4)  # CESU-8 leftovers
    tree.set_data("/a", b"yy", 3, 11, 106)
    tree.set_acl("/a", [(31, "world", "anyone"), (1, "auth", "")], 2)
    tree.set_data("/zookeeper/config", b"conf", 1, 12, 107)
    tree.delete("/a/empty", 13)
    tree.create("/a/empty", b"again", OPEN_ACL, 0x0123456789, 14, 108, 3)
    return tree


@pytest.mark.parametrize("chunk", [1, 2, 1000])
def test_round_trip_keeps_every_field(chunk: int) -> None:
    tree = _odd_tree()
    cursor = tree.snapshot_cursor()
    chunks = []
    while not cursor.done:
        chunks.append(cursor.next_chunk(chunk))
    loaded = DataTree()
    acls: dict = {}
    assert sum(loaded.load_snapshot_chunk(c, acls) for c in chunks) == len(tree) == cursor.nodes
    assert loaded.digest() == tree.digest() and loaded.data_size == tree.data_size
    for path in ("/", "/a", "/a/null", "/a/empty", "/c", "/t", "/p\u00e4th\udc80",
                 "/zookeeper/config", "/zookeeper"):
        assert loaded.get_data(path) == tree.get_data(path), path
        assert loaded.get_acl(path) == tree.get_acl(path)
        assert loaded.node_info(path) == tree.node_info(path)
    assert loaded.ephemerals(0x0123456789) == ["/a/empty"]
    assert sorted(loaded.containers_and_ttls()) == ["/c", "/t"]


def test_a_malformed_chunk_is_refused() -> None:
    cursor = _odd_tree().snapshot_cursor()
    chunk = cursor.next_chunk(100)
    for bad in (chunk[:-3], chunk[:40], b"Z" + chunk, chunk + b"N"):
        with pytest.raises(ValueError):
            DataTree().load_snapshot_chunk(bad, {})
    # a child before its parent
    tree = DataTree()
    tree.create("/x", b"", OPEN_ACL, 0, 1, 1, 1)
    tree.create("/x/y", b"", OPEN_ACL, 0, 2, 1, 1)
    cursor = tree.snapshot_cursor()
    records = cursor.next_chunk(100)
    acl_definition = records[:records.index(b"N\x00\x00\x00\x01/")]
    start = records.index(b"/x/y") - 5  # the last record: tag, length, path...
    with pytest.raises(ValueError, match="parent"):
        DataTree().load_snapshot_chunk(acl_definition + records[start:], {})


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_fuzzy_snapshot_taken_under_writes_recovers_the_exact_tree(tmp_path: Path,
                                                                   seed: int) -> None:
    """One node per loop callback while every flush applies more writes: nodes are captured
    at different zxids; loading plus replay from the start zxid must give the exact tree."""
    harness = Harness(tmp_path, seed=seed, snapshot_chunk_nodes=1)
    rng = random.Random(seed)
    sessions: list[int] = []
    for _ in range(60):
        random_writes(harness, rng, 6, sessions)
        harness.flush()
    # the snapshot's file work runs on the job thread, which would finish a small tree within
    # one flush: its jobs are let through one per flush, so writes land between chunks
    jobs = harness.storage.jobs
    held: list[tuple[Any, Any]] = []
    release = jobs.run_job
    jobs.run_job = lambda job, done: held.append((job, done))  # type: ignore[method-assign]
    task = harness.storage.take_snapshot()
    assert task is not None
    start = task.zxid
    while harness.storage.snapshot is not None:
        random_writes(harness, rng, 3, sessions)
        harness.flush()
        if held:
            release(*held.pop(0))
        harness.run_until(lambda: bool(held) or harness.storage.snapshot is None)
    del jobs.run_job
    for job in held:  # the purge
        release(*job)
    assert task.finished
    info = snapshots.verify(task.path)
    assert info.zxid == start and info.end_zxid > start + 10  # really fuzzy
    random_writes(harness, rng, 30, sessions)
    harness.flush()
    expected = tree_state(harness.node)
    zxid, digest = harness.node.applied_zxid, harness.node.tree.digest()
    live_sessions = {s: (v.timeout, v.passwd) for s, v in harness.node.sessions.sessions.items()}
    harness.close()
    again = Harness(tmp_path, seed=seed + 100)
    assert again.report.snapshot == task.path
    assert again.report.replayed == counter_of(zxid) - counter_of(start)
    assert again.report.last_zxid == zxid and again.node.tree.digest() == digest
    assert tree_state(again.node) == expected
    assert {s: (v.timeout, v.passwd) for s, v in again.node.sessions.sessions.items()} == \
        live_sessions
    again.close()


class _Pure:
    """random_writes' driver without disk: every txn is committed at once and recorded."""

    def __init__(self, seed: int) -> None:
        self.node = make_node(seed)
        self.log: list[Txn] = []
        self.clock = 0
        self.node.start()
        self.log.extend(settle(self.node))

    def _commit(self, txn: Txn) -> None:
        self.node.proposals.append((txn.zxid, txn))
        self.log.extend(settle(self.node))

    def prepare(self, session_id: int, op: int, body: object) -> object:
        self.clock += 1
        self.node.set_time(1_700_000_000_000 + self.clock, 1_000 + self.clock)
        outcome = self.node.prep.write(session_id, 1, op, body, set(), self.node.now_ms)
        if isinstance(outcome, Txn):
            self._commit(outcome)
        return outcome

    def open_session(self, timeout: int = 1000) -> int:
        session_id, passwd = self.node.sessions.allocate()
        self._commit(self.node.prep.create_session(session_id, timeout, passwd, self.node.now_ms))
        return session_id

    def close_session(self, session_id: int) -> None:
        self._commit(self.node.prep.close_session(session_id, 0, self.node.now_ms))


@pytest.mark.parametrize("seed", range(200))
def test_fuzzy_walk_with_writes_between_every_node(seed: int) -> None:
    """The hostile interleaving, without disk: 1-6 random writes between every node the
    cursor writes (deep trees, the same few names deleted and recreated), then load + replay
    from the start zxid must give the live tree exactly, and every txn after the walk ended
    must apply cleanly (Node.recover checks that)."""
    rng = random.Random(seed)
    live = _Pure(seed)
    sessions: list[int] = []
    random_writes(live, rng, 150, sessions)
    start = live.node.applied_zxid
    table = [(s.session_id, s.timeout, s.passwd) for s in live.node.sessions.sessions.values()]
    cursor = live.node.tree.snapshot_cursor()
    chunks = []
    while not cursor.done:
        chunks.append(cursor.next_chunk(1))
        random_writes(live, rng, rng.randrange(1, 7), sessions)
    end = live.node.applied_zxid
    random_writes(live, rng, 40, sessions)
    restored = make_node(seed + 1000)
    acls: dict = {}
    for chunk in chunks:
        restored.tree.load_snapshot_chunk(chunk, acls)
    replay = [txn for txn in live.log if txn.zxid > start]
    assert restored.recover(start, table, replay, fuzzy_until=end) == len(replay)
    restored.start()  # commits what followed the walk (a lone voter leads at once)
    settle(restored)
    assert restored.tree.digest() == live.node.tree.digest()
    assert tree_state(restored) == tree_state(live.node)
    assert set(restored.sessions.sessions) == set(live.node.sessions.sessions)


def _history(tmp_path: Path, snapshots_wanted: int, **cfg: object) -> tuple[Harness, list]:
    harness = Harness(tmp_path, seed=5, **cfg)
    rng = random.Random(5)
    sessions: list[int] = []
    taken = []
    for _ in range(snapshots_wanted):
        for _ in range(10):
            random_writes(harness, rng, 5, sessions)
            harness.flush()
        harness.snapshot()
        taken.append(harness.storage.last_snapshot)
    random_writes(harness, rng, 20, sessions)
    harness.flush()
    return harness, taken


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize("damage", ["bit-flip", "truncated", "no-end-block", "garbage"])
def test_a_corrupt_newest_snapshot_falls_back_to_an_older_one(tmp_path: Path,
                                                              damage: str) -> None:
    harness, taken = _history(tmp_path, 3)
    zxid, digest = harness.node.applied_zxid, harness.node.tree.digest()
    harness.close()
    newest = taken[-1]
    size = newest.stat().st_size
    if damage == "bit-flip":
        _flip(newest, random.Random(1).randrange(8, size))
    elif damage == "truncated":
        with open(newest, "r+b") as handle:
            handle.truncate(size // 2)
    elif damage == "no-end-block":
        with open(newest, "r+b") as handle:
            handle.truncate(size - 20)
    else:
        newest.write_bytes(b"\0" * size)
    with pytest.raises(snapshots.SnapshotError):
        snapshots.verify(newest)
    out = io.StringIO()
    assert tools.snap_dump(newest, out) == 1 and "INVALID" in out.getvalue()
    again = Harness(tmp_path, seed=6)
    assert again.report.snapshot == taken[-2]
    assert again.report.skipped_snapshots and str(newest) in again.report.skipped_snapshots[0]
    assert again.report.last_zxid == zxid and again.node.tree.digest() == digest
    again.close()


def test_every_snapshot_corrupt_replays_the_whole_log_or_refuses(tmp_path: Path) -> None:
    harness, taken = _history(tmp_path / "keep", 2, snap_retain_count=5)
    zxid, digest = harness.node.applied_zxid, harness.node.tree.digest()
    harness.close()
    for path in taken:
        _flip(path, 30)
    again = Harness(tmp_path / "keep", seed=7)  # the log still starts at zxid 1
    assert again.report.snapshot is None and again.report.replayed == counter_of(zxid)
    assert again.node.tree.digest() == digest
    again.close()

    harness, taken = _history(tmp_path / "purged", 4, snap_retain_count=1, prealloc_kb=2)
    harness.close()
    assert len(snapshots.list_snapshots(harness.storage.snap_dir)) == 1
    assert wal.list_segments(harness.storage.log_dir)[0][0] > 1  # early segments purged
    _flip(taken[-1], 30)
    with pytest.raises(wal.RecoveryError, match="no usable snapshot"):
        Harness(tmp_path / "purged", seed=8)


def test_retention_keeps_k_snapshots_and_the_segments_they_need(tmp_path: Path) -> None:
    harness, taken = _history(tmp_path, 6, snap_retain_count=2, prealloc_kb=2)
    zxid, digest = harness.node.applied_zxid, harness.node.tree.digest()
    harness.close()
    kept = snapshots.list_snapshots(harness.storage.snap_dir)
    assert [p for _, p in kept] == [taken[-1], taken[-2]]
    segments = wal.list_segments(harness.storage.log_dir)
    assert segments[0][0] <= kept[-1][0] + 1 < segments[1][0]  # nothing older than needed
    _flip(taken[-1], 40)  # the older kept snapshot must still be usable with its log
    again = Harness(tmp_path, seed=9)
    assert again.report.snapshot == taken[-2]
    assert again.report.last_zxid == zxid and again.node.tree.digest() == digest
    again.close()


def test_snapshots_follow_snap_count_with_jitter(tmp_path: Path) -> None:
    harness = Harness(tmp_path, seed=10, snap_count=40)
    rng = random.Random(10)
    sessions: list[int] = []
    while counter_of(harness.node.applied_zxid) < 400:
        random_writes(harness, rng, 5, sessions)
        harness.flush()
    harness.run_until(lambda: harness.storage.snapshot is None)
    taken = harness.storage.snapshots_taken
    assert 400 // 40 <= taken <= 400 // 20 + 1
    zxids = [z for z, _ in snapshots.list_snapshots(harness.storage.snap_dir)]
    gaps = {a - b for a, b in zip(zxids, zxids[1:], strict=False)}
    assert len(gaps) > 1  # jitter: not every snapCount/2
    harness.close()


def test_an_unfinished_snapshot_is_dropped_at_start_up(tmp_path: Path) -> None:
    harness = Harness(tmp_path, seed=11, snapshot_chunk_nodes=1)
    rng = random.Random(11)
    random_writes(harness, rng, 200)
    harness.flush()
    task = harness.storage.take_snapshot()
    assert task is not None
    harness.close()  # closes in the middle of the walk
    assert not task.tmp.exists() and not task.path.exists()
    task.tmp.write_bytes(b"FZKSNAP1 half written")  # as a crash would leave it
    again = Harness(tmp_path, seed=12)
    assert not task.tmp.exists() and again.report.snapshot is None
    again.close()


def test_restored_sessions_keep_ephemerals_and_expire_if_not_resumed(tmp_path: Path) -> None:
    harness = Harness(tmp_path, seed=13)
    gone = harness.open_session(timeout=500)
    stays = harness.open_session(timeout=5000)
    harness.flush()
    harness.prepare(gone, Op.CREATE, ("/gone", b"", OPEN_ACL, 1))
    harness.prepare(stays, Op.CREATE, ("/stays", b"", OPEN_ACL, 1))
    harness.flush()
    harness.snapshot()
    harness.prepare(gone, Op.CREATE, ("/gone2", b"", OPEN_ACL, 1))  # replayed, not in snapshot
    harness.flush()
    harness.close()
    again = Harness(tmp_path, seed=14)
    node = again.node
    assert set(node.tree.ephemerals(gone)) == {"/gone", "/gone2"}
    assert node.tree.ephemerals(stays) == ["/stays"]
    # fresh deadlines: now + timeout on the restarted server's clock
    assert node.sessions.get(gone).deadline > node.mono_ms
    assert node.sessions.get(gone).deadline <= node.mono_ms + 500 + 2 * again.cfg.tick_time
    node.set_time(node.now_ms + 1000, node.mono_ms + 1000)
    node.tick()  # `gone` never came back; `stays` still has time
    again.flush()
    assert not node.tree.exists("/gone") and not node.tree.exists("/gone2")
    assert node.tree.exists("/stays") and gone not in node.sessions
    new_id, _ = node.sessions.allocate()
    assert new_id not in (gone, stays)
    again.close()


def test_offline_tools(tmp_path: Path) -> None:
    harness, taken = _history(tmp_path, 1)
    harness.close()
    out = io.StringIO()
    assert tools.snap_dump(taken[0], out, nodes=True, data=True) == 0
    text = out.getvalue()
    assert f"start zxid {snapshots.verify(taken[0]).zxid:#x}" in text and "sessions" in text
    assert "\n  / czxid" in text and "data b'" in text
    out = io.StringIO()
    assert tools.log_dump(tmp_path, out) == 0
    assert "createSession" in out.getvalue() and "log valid through zxid" in out.getvalue()
    for argv in (["log", "dump", str(tmp_path), "--summary"],
                 ["snap", "dump", str(taken[0]), "--summary"]):
        result = subprocess.run([sys.executable, "-m", "fastzk", *argv], capture_output=True,
                                text=True, timeout=60, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert "zxid" in result.stdout


def test_a_snapshot_at_the_end_of_an_epoch_recovers_from_the_next_epochs_log(
        tmp_path: Path) -> None:
    """A follower that installs a snapshot at the last txn of an epoch drops its whole log,
    and its log then starts at the next epoch's barrier, not at snapshot zxid + 1: the barrier
    records the zxid before it, which is what recovery must accept (a cluster test restarting
    such a follower found it refusing to start)."""
    harness, _ = _history(tmp_path, 0)
    harness.snapshot()
    end = harness.node.applied_zxid
    assert harness.storage.last_snapshot.name == snapshots.snapshot_name(end)
    harness.close()
    again = Harness(tmp_path, seed=10)  # a new epoch: its barrier records `end`
    assert again.node.applied_zxid >> 32 > end >> 32
    again.close()
    log_dir = again.storage.log_dir
    for base, path in wal.list_segments(log_dir):
        if base <= end:
            path.unlink()  # as a snapshot install leaves it: no entry at or before `end`
    assert wal.list_segments(log_dir)[0][0] >> 32 > end >> 32
    third = Harness(tmp_path, seed=11)
    assert third.report.snapshot is not None and third.report.snapshot.name.endswith(
        f"{end:016x}")
    assert third.node.applied_zxid >= again.node.applied_zxid
    third.close()
