"""Online backup, log archiving and point-in-time restore (fastzk/backup/), end to end: real
server processes, kazoo over TCP, and the `fastzk backup | restore | snap diff` command lines
as an operator runs them (README, "Backups" and "Restoring to a point in time").

The oracle for "the tree at zxid Z" is independent of the code under test: every write of the
load records the zxid the server gave it (the Stat it returned), so the expected content at
any zxid is the last recorded write of each path at or before it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl

from fastzk.nemesis.servers import ServerProcess, start_server
from fastzk.runtime import snapshot as snapshots
from fastzk.runtime import wal

pytestmark = pytest.mark.timeout(60)
CFG = {"tickTime": 200, "fastzk.snapshotChunkNodes": 2}  # a long walk: fuzzy under load
BULK = 3000


def fastzk(*args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Runs the command line; never a traceback, whatever the outcome."""
    done = subprocess.run([sys.executable, "-m", "fastzk", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def client(proc: ServerProcess) -> KazooClient:
    c = KazooClient(hosts=proc.connect_string, timeout=10.0)
    c.start(timeout=15)
    return c


def admin(proc: ServerProcess) -> str:
    return f"127.0.0.1:{proc.admin_port}"


def tree_of(snapshot_dir: Path, prefix: str) -> dict[str, tuple[bytes, int]]:
    """{path: (data, version)} under `prefix` in the only snapshot of a restored data dir."""
    found = snapshots.list_snapshots(wal.log_dir_of(snapshot_dir))
    assert len(found) == 1
    info, tree = snapshots.summary(found[0][1])
    out = {}
    for name in tree.get_children(prefix) or []:
        data, stat = tree.get_data(f"{prefix}/{name}")
        out[f"{prefix}/{name}"] = (data or b"", stat[4])
    return out


class Load:
    """Two clients writing (creates and setData, 20 in flight each) and recording (zxid,
    path, data)."""

    def __init__(self, proc: ServerProcess) -> None:
        self.proc = proc
        self.stop = threading.Event()
        self.writes: list[tuple[int, str, bytes]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(2)]
        self.errors: list[BaseException] = []

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)
        assert not any(t.is_alive() for t in self.threads) and not self.errors, self.errors

    def _run(self, index: int) -> None:
        c = client(self.proc)
        try:
            n = 0
            while not self.stop.is_set():
                batch = []  # many writes in flight: a write lands in every fsync
                for _ in range(20):
                    n += 1
                    if n % 3 == 0:
                        path, data = f"/load/w{index}-{n}", b"c%d" % n
                        batch.append((path, data, c.create_async(path, data)))
                    else:
                        path, data = f"/load/k{(n * 7 + index) % 200}", b"s%d-%d" % (index, n)
                        batch.append((path, data, c.set_async(path, data)))
                for path, data, future in batch:
                    result = future.get(timeout=10)  # the path of a create, a set's Stat
                    zxid = c.exists(path).czxid if isinstance(result, str) else result.mzxid
                    with self.lock:
                        self.writes.append((zxid, path, data))
        except BaseException as error:  # reported by __exit__
            self.errors.append(error)
        finally:
            c.stop()
            c.close()

    def expected(self, zxid: int, initial: dict[str, tuple[bytes, int]]) -> dict:
        model = dict(initial)
        for z, path, data in sorted(self.writes):
            if z <= zxid:
                version = model[path][1] + 1 if path in model else 0
                model[path] = (data, version)
        return model


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A server under load during a full and an incremental backup; then, idle, an
    incremental and a full backup at the same zxid."""
    work = tmp_path_factory.mktemp("backup")
    proc = start_server("fastzk", work / "server", **CFG)
    try:
        c = client(proc)
        c.create("/load")
        initial = {}
        for i in range(200):
            c.create(f"/load/k{i}", b"init")
            initial[f"/load/k{i}"] = (b"init", 0)
        for future in [c.create_async(f"/bulk{i}", b"b" * 50) for i in range(BULK)]:
            future.get(timeout=10)  # bulk, so that the snapshot takes many chunks
        with Load(proc) as load:
            deadline = time.monotonic() + 20
            while len(load.writes) < 50 and time.monotonic() < deadline:
                time.sleep(0.01)  # both writers going
            for _ in range(10):  # until a write lands during the walk: a fuzzy snapshot
                shutil.rmtree(work / "full", ignore_errors=True)
                full = fastzk("backup", "--server", admin(proc), work / "full")
                assert full.returncode == 0, full.stderr
                snap = manifest(work / "full")["snapshot"]
                if snap["end_zxid"] > snap["start_zxid"]:
                    break
            time.sleep(0.3)
            inc = fastzk("backup", "--server", admin(proc), "--since", work / "full",
                         work / "inc1")
            assert inc.returncode == 0, inc.stderr
            time.sleep(0.2)
        inc2 = fastzk("backup", "--server", admin(proc), "--since", work / "inc1", work / "inc2")
        whole = fastzk("backup", "--server", admin(proc), work / "full2")
        assert inc2.returncode == 0 and whole.returncode == 0, inc2.stderr + whole.stderr
        yield {"work": work, "proc": proc, "client": c, "load": load, "initial": initial}
        c.stop()
        c.close()
    finally:
        proc.stop()


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_backup_under_load_restores_exactly_the_tree_at_its_zxid(loaded: dict) -> None:
    work, load = loaded["work"], loaded["load"]
    full = manifest(work / "full")
    snap = full["snapshot"]
    assert full["complete"] and full["kind"] == "full"
    # fuzzy: writes went on while the snapshot streamed; the log makes it exact
    assert snap["end_zxid"] > snap["start_zxid"], snap
    assert full["last_zxid"] >= snap["end_zxid"]
    target = work / "restored"
    done = fastzk("restore", work / "full", "--to", target)
    assert done.returncode == 0, done.stderr
    expected = load.expected(full["last_zxid"], loaded["initial"])
    assert tree_of(target, "/load") == expected
    # the restored data dir serves that tree
    proc = start_server("fastzk", work / "serve-restored", dataDir=target, **CFG)
    try:
        c = client(proc)
        served = {f"/load/{n}": (c.get(f"/load/{n}")[0], c.get(f"/load/{n}")[1].version)
                  for n in c.get_children("/load")}
        assert served == expected
        assert len(c.get_children("/")) == BULK + 2  # bulk, /load, /zookeeper
        c.stop()
        c.close()
    finally:
        proc.stop()


def test_incremental_backups_restore_like_a_full_backup(loaded: dict) -> None:
    work, load = loaded["work"], loaded["load"]
    inc1, inc2, full2 = manifest(work / "inc1"), manifest(work / "inc2"), manifest(work / "full2")
    assert inc1["kind"] == inc2["kind"] == "incremental"
    assert inc1["since_zxid"] == manifest(work / "full")["last_zxid"]
    assert inc2["since_zxid"] == inc1["last_zxid"]
    assert inc2["last_zxid"] == full2["last_zxid"]
    assert "snapshot" not in inc1 and not any(
        f["name"].startswith("snapshot.") for f in inc1["files"])
    # a chain restores to the tree a full backup at the same zxid gives
    assert fastzk("restore", work / "inc2", "--to", work / "r-inc").returncode == 0
    assert fastzk("restore", work / "full2", "--to", work / "r-full").returncode == 0
    same = fastzk("snap", "diff", work / "r-inc", work / "r-full")
    assert same.returncode == 0, same.stdout
    assert same.stdout.splitlines()[-1] == "0 path(s) differ"
    assert tree_of(work / "r-inc", "/load") == load.expected(full2["last_zxid"],
                                                             loaded["initial"])
    # the middle of the chain restores to its own end
    mid = fastzk("restore", work / "inc1", "--to", work / "r-mid")
    assert mid.returncode == 0, mid.stderr
    assert tree_of(work / "r-mid", "/load") == load.expected(inc1["last_zxid"], loaded["initial"])


def test_point_in_time_restore_by_zxid_and_by_time_and_snap_diff(loaded: dict) -> None:
    work, proc, c = loaded["work"], loaded["proc"], loaded["client"]
    _, created = c.create("/pitr/a", b"v1", makepath=True, include_data=True)
    time.sleep(0.05)
    changed = c.set("/pitr/a", b"v2")
    assert changed.mtime > created.ctime
    transaction = c.transaction()
    transaction.create("/pitr/m1", b"1")
    transaction.create("/pitr/m2", b"2")
    assert transaction.commit() == ["/pitr/m1", "/pitr/m2"]
    multi = c.exists("/pitr/m1").czxid
    assert c.exists("/pitr/m2").czxid == multi  # a multi is one txn: one zxid
    c.delete("/pitr", recursive=True)  # the operator's mistake
    done = fastzk("backup", "--server", admin(proc), "--since", work / "inc2", work / "inc3")
    assert done.returncode == 0, done.stderr
    source = work / "inc3"

    def restored(name: str, *point: str) -> dict[str, tuple[bytes, int]]:
        result = fastzk("restore", source, "--to", work / name, *point)
        assert result.returncode == 0, result.stderr
        return tree_of(work / name, "/pitr")

    assert restored("z-create", "--to-zxid", hex(created.czxid)) == {"/pitr/a": (b"v1", 0)}
    assert restored("z-set", "--to-zxid", str(changed.mzxid)) == {"/pitr/a": (b"v2", 1)}
    # the multi is restored whole at its zxid, not at all just before it
    assert restored("z-multi", "--to-zxid", hex(multi)) == {
        "/pitr/a": (b"v2", 1), "/pitr/m1": (b"1", 0), "/pitr/m2": (b"2", 0)}
    assert restored("z-before", "--to-zxid", hex(multi - 1)) == {"/pitr/a": (b"v2", 1)}
    # a time between two txns: the last txn at or before it; at a txn's own time: that txn
    middle = (created.ctime + changed.mtime) // 2
    assert restored("t-mid", "--to-time", str(middle)) == {"/pitr/a": (b"v1", 0)}
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(changed.mtime // 1000)) + \
        f".{changed.mtime % 1000:03d}Z"
    assert restored("t-at", "--to-time", iso) == {"/pitr/a": (b"v2", 1)}
    # snap diff: what the recursive delete removed, in path order, exit 1
    diff = fastzk("snap", "diff", f"{source}@{multi:#x}", source)
    assert diff.returncode == 1
    lines = diff.stdout.splitlines()
    assert lines[0] == f"--- {source} at zxid {multi:#x}"
    assert lines[2:] == [f"~ /: cversion {lines[2].split()[3]} -> {lines[2].split()[5]}",
                         "- /pitr", "- /pitr/a", "- /pitr/m1", "- /pitr/m2",
                         "5 path(s) differ"]
    diff = fastzk("snap", "diff", f"{source}@{created.czxid:#x}", f"{source}@{multi:#x}")
    assert diff.stdout.splitlines()[2:] == [
        "~ /pitr: cversion 1 -> 3", "~ /pitr/a: data (2 -> 2 bytes), version 0 -> 1",
        "+ /pitr/m1", "+ /pitr/m2", "4 path(s) differ"]
    again = fastzk("snap", "diff", f"{source}@{created.czxid:#x}", f"{source}@{multi:#x}")
    assert again.stdout == diff.stdout  # deterministic


def test_bad_input_gets_a_clear_error(loaded: dict) -> None:
    work = loaded["work"]
    last = manifest(work / "full")["last_zxid"]
    snapshot_only = work / "full" / manifest(work / "full")["snapshot"]["name"]
    early = fastzk("restore", snapshot_only, "--to", work / "e1", "--to-zxid", "5")
    assert early.returncode == 2 and "outside what" in early.stderr
    late = fastzk("restore", work / "full", "--to", work / "e1", "--to-zxid", str(last + 1))
    assert late.returncode == 2 and "outside what" in late.stderr
    missing = fastzk("restore", work / "nothing", "--to", work / "e2")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    (work / "busy").mkdir()
    (work / "busy" / "something").write_text("x")
    busy = fastzk("restore", work / "full", "--to", work / "busy")
    assert busy.returncode == 2 and "not empty" in busy.stderr and "--force" in busy.stderr
    forced = fastzk("restore", work / "full", "--to", work / "busy", "--force")
    assert forced.returncode == 0, forced.stderr
    bad_time = fastzk("restore", work / "full", "--to", work / "e3", "--to-time", "yesterday")
    assert bad_time.returncode == 2 and "not a time" in bad_time.stderr
    bad_zxid = fastzk("restore", work / "full", "--to", work / "e3", "--to-zxid", "x1")
    assert bad_zxid.returncode == 2 and "not a zxid" in bad_zxid.stderr
    exists = fastzk("backup", "--server", admin(loaded["proc"]), work / "full")
    assert exists.returncode == 1 and "not an empty directory" in exists.stderr


def _cutting_proxy(target: int, limit: int) -> tuple[int, threading.Thread]:
    """A one-connection TCP proxy that passes the request on and only the first `limit`
    bytes of the response back, then cuts both connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)

    def run() -> None:
        with listener:
            downstream, _ = listener.accept()
            upstream = socket.create_connection(("127.0.0.1", target), timeout=20)
            with downstream, upstream:
                upstream.sendall(downstream.recv(65536))
                sent = 0
                while sent < limit:
                    data = upstream.recv(min(65536, limit - sent))
                    if not data:
                        break
                    downstream.sendall(data)
                    sent += len(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_an_interrupted_or_damaged_backup_is_detected(loaded: dict) -> None:
    work, proc = loaded["work"], loaded["proc"]
    size = sum(f["size"] for f in manifest(work / "full2")["files"])
    port, thread = _cutting_proxy(proc.admin_port or 0, size // 2)
    cut = fastzk("backup", "--server", f"127.0.0.1:{port}", work / "cut")
    thread.join(20)
    assert cut.returncode == 1 and "incomplete backup" in cut.stderr, cut.stderr
    assert manifest(work / "cut")["complete"] is False
    refused = fastzk("restore", work / "cut", "--to", work / "r-cut")
    assert refused.returncode == 2 and "incomplete backup" in refused.stderr
    assert not (work / "r-cut").exists()
    # a complete backup whose file was truncated or changed afterwards
    damaged = work / "damaged"
    damaged.mkdir()
    for entry in (work / "full2").iterdir():
        (damaged / entry.name).write_bytes(entry.read_bytes())
    snap = damaged / manifest(damaged)["snapshot"]["name"]
    os.truncate(snap, snap.stat().st_size // 2)
    short = fastzk("restore", damaged, "--to", work / "r-damaged")
    assert short.returncode == 2 and "truncated" in short.stderr and snap.name in short.stderr
    data = bytearray((work / "full2" / snap.name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    flipped = fastzk("restore", damaged, "--to", work / "r-damaged")
    assert flipped.returncode == 2 and "SHA-256 mismatch" in flipped.stderr


def test_backup_is_protected_like_the_sensitive_admin_commands(tmp_path: Path) -> None:
    proc = start_server("fastzk", tmp_path / "server", **CFG)
    try:
        c = client(proc)
        c.add_auth("digest", "admin:secret")
        c.set_acls("/", [make_digest_acl("admin", "secret", all=True)])
        refused = fastzk("backup", "--server", admin(proc), tmp_path / "b1")
        assert refused.returncode == 1 and "HTTP 403" in refused.stderr
        wrong = fastzk("backup", "--server", admin(proc), "--auth", "admin:nope",
                       tmp_path / "b2")
        assert wrong.returncode == 1 and "HTTP 403" in wrong.stderr
        allowed = fastzk("backup", "--server", admin(proc), "--auth", "admin:secret",
                         tmp_path / "b3")
        assert allowed.returncode == 0, allowed.stderr
        c.stop()
        c.close()
    finally:
        proc.stop()


def _write(c: KazooClient, start: int, count: int) -> list[int]:
    """Creates /arch/n<i> for i in [start, start + count), ten at a time (many log writes,
    so many snapshots); returns the zxids of the first and the last."""
    for low in range(start, start + count, 10):
        futures = [c.create_async(f"/arch/n{i}", b"d" * 200) for i in range(low, low + 10)]
        for future in futures:
            future.get(timeout=10)
    return [c.exists(f"/arch/n{i}").czxid for i in (start, start + count - 1)]


def test_archive_keeps_every_segment_and_purge_waits_for_it(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    proc = start_server("fastzk", tmp_path / "server", snapCount=60, preAllocSize=8,
                        **{"fastzk.archiveDir": archive, "autopurge.snapRetainCount": 3}, **CFG)
    log_dir = wal.log_dir_of(proc.data_dir)
    try:
        c = client(proc)
        c.create("/arch")
        first = wal.list_segments(log_dir)[0][0]
        # the archive breaks: nothing may be purged, however many snapshots are taken
        archive.rename(tmp_path / "archive.real")
        archive.write_text("not a directory")
        early = _write(c, 0, 400)
        deadline = time.monotonic() + 10
        while len(snapshots.list_snapshots(log_dir)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(snapshots.list_snapshots(log_dir)) >= 5  # retention would keep 3
        assert wal.list_segments(log_dir)[0][0] == first
        # it is repaired: the next purge copies everything first, then deletes
        archive.unlink()
        (tmp_path / "archive.real").rename(archive)
        _write(c, 400, 300)
        while wal.list_segments(log_dir)[0][0] == first and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        assert wal.list_segments(log_dir)[0][0] > first, "nothing was purged"
        assert wal.list_segments(archive)[0][0] == first
        # every purged segment is in the archive: it holds the whole history, without a gap
        state = wal.verify_log(archive, 0)
        assert state.first_zxid <= first and len(state.segments) > 5
        c.stop()
        c.close()
    finally:
        proc.stop()
    # the archive restores to a point the data dir no longer holds
    done = fastzk("restore", archive, "--to", tmp_path / "r", "--to-zxid", hex(early[0]))
    assert done.returncode == 0, done.stderr
    assert list(tree_of(tmp_path / "r", "/arch")) == ["/arch/n0"]
    # and to its end, which the stopped server's data dir agrees with
    last = wal.verify_log(archive, 0).last_zxid
    same = fastzk("snap", "diff", f"{archive}@{last:#x}", f"{proc.data_dir}@{last:#x}")
    assert same.returncode == 0, same.stdout


def test_an_ensemble_restored_from_one_backup_serves_it_on_every_member(
        loaded: dict) -> None:
    """README's procedure: the same backup restored into every member's data dir, then the
    members started: they elect a leader, every member serves the backup's tree, and writes go
    on from there."""
    from fastzk.nemesis.cluster import Cluster

    work, load = loaded["work"], loaded["load"]
    backup = manifest(work / "full2")
    expected = load.expected(backup["last_zxid"], loaded["initial"])
    cluster = Cluster("fastzk", 3, tick_time=200)
    for member in cluster.members:
        done = fastzk("restore", work / "full2", "--to", member.data_dir)
        assert done.returncode == 0, done.stderr
    with cluster:
        cluster.wait_for_leader(members=cluster.members)
        for member in cluster.members:
            c = KazooClient(hosts=member.connect_string(), timeout=10.0)
            c.start(timeout=15)
            try:
                c.sync("/load")
                served = {f"/load/{n}": (c.get(f"/load/{n}")[0], c.get(f"/load/{n}")[1].version)
                          for n in c.get_children("/load")}
                assert served == expected, member
                if member is cluster.members[0]:
                    c.create("/after-restore", b"new")
                assert c.get("/after-restore")[0] == b"new"
            finally:
                c.stop()
                c.close()
