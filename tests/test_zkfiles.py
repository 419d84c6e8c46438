"""Taking over an Apache ZooKeeper data directory, and handing it back (issue 11, first part).

Apache ZooKeeper 3.8 (the Debian package, started here on loopback) runs a mixed workload,
is stopped (SIGKILL, or a clean SIGTERM), and fastzk takes its data directory over, through
`fastzk serve` on the same dataDir and through `fastzk import`; every znode's data, Stat and
ACL must then read back through kazoo exactly as ZooKeeper served them before the stop.
`fastzk export` must hand the state back to ZooKeeper with the same result. Compressed
snapshots, ZooKeeper's digests and damaged files are covered too."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from differential import CreateContainer, CreateTTL
from kazoo.client import KazooClient
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

from fastzk.nemesis.servers import ServerProcess, start_server
from fastzk.zkfiles import recovery, takeover, txnlog
from fastzk.zkfiles import snapshot as zksnap

pytestmark = pytest.mark.timeout(90)

AUTH = [("digest", "alice:secret")]
ZK_CFG: dict[str, Any] = {"extendedTypesEnabled": "true", "snapCount": 60}
Tree = dict[str, tuple[bytes, tuple[int, ...], list[Any]]]


def client(server: ServerProcess, **kwargs: Any) -> KazooClient:
    c = KazooClient(hosts=server.connect_string, auth_data=AUTH, timeout=20, **kwargs)
    c.start(timeout=15)
    return c


def raw(c: KazooClient, request: Any) -> Any:
    result = c.handler.async_result()
    c._call(request, result)
    return result.get(timeout=10)


def read_tree(c: KazooClient) -> Tree:
    """Every znode: data, the full Stat (all 11 fields) and the ACL list."""
    tree: Tree = {}
    stack = ["/"]
    while stack:
        path = stack.pop()
        data, stat = c.get(path)
        tree[path] = (data, tuple(stat), c.get_acls(path)[0])
        stack += [path.rstrip("/") + "/" + child for child in c.get_children(path)]
    return tree


def assert_same_tree(expected: Tree, actual: Tree) -> None:
    """Field by field, naming the first few differences."""
    problems = []
    for path in sorted(set(expected) | set(actual)):
        if path not in actual:
            problems.append(f"{path}: missing")
        elif path not in expected:
            problems.append(f"{path}: unexpected")
        elif expected[path] != actual[path]:
            want, got = expected[path], actual[path]
            fields = ("czxid", "mzxid", "ctime", "mtime", "version", "cversion", "aversion",
                      "ephemeralOwner", "dataLength", "numChildren", "pzxid")
            diffs = [f"{name} {a} != {b}" for name, a, b in zip(fields, want[1], got[1],
                                                               strict=True) if a != b]
            if want[0] != got[0]:
                diffs.append("data differs")
            if want[2] != got[2]:
                diffs.append(f"ACL {want[2]} != {got[2]}")
            problems.append(f"{path}: " + ", ".join(diffs))
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:20])


def workload(c: KazooClient, other: KazooClient) -> None:
    """Nested paths, sequential and ephemeral nodes, digest ACLs, containers, TTL nodes,
    multi, a ~500 KB value, deletes, setACL; writes from threads so that ZooKeeper's fuzzy
    snapshots (every ~60 txns) catch some in flight."""
    alice = make_digest_acl("alice", "secret", all=True)
    bob_read = make_digest_acl("bob", "pw", read=True)
    c.create("/app/config/db", b"dsn", makepath=True)
    c.create("/app/locks", b"")
    c.create("/secure", b"s", acl=[alice, bob_read])
    c.create("/secure/inner", b"i", acl=[alice])
    raw(c, CreateContainer("/app/container", b"c", OPEN_ACL_UNSAFE, 4))
    c.create("/app/container/child", b"x")
    raw(c, CreateTTL("/app/ttl", b"t", OPEN_ACL_UNSAFE, 5, 3_600_000))
    c.create("/big", os.urandom(500_000))

    def writer(n: int) -> None:
        base = f"/load/w{n}"
        c.ensure_path(base)
        for i in range(60):
            c.create(f"{base}/s-", b"%d" % i, sequence=True)
            if i % 3 == 0:
                c.set(base, b"v%d" % i)
        for child in sorted(c.get_children(base))[::2]:
            c.delete(f"{base}/{child}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for i in range(10):
        c.create("/app/locks/lock-", b"", ephemeral=True, sequence=True)
        other.create(f"/app/other-{i}", b"o", ephemeral=True)
    for t in threads:
        t.join()
    tx = c.transaction()
    tx.create("/app/multi", b"m")
    tx.set_data("/app/config/db", b"dsn2")
    tx.check("/app/config", 0)
    tx.create("/app/multi-seq-", b"", sequence=True)
    assert not [r for r in tx.commit() if isinstance(r, Exception)]
    failed = c.transaction()
    failed.create("/app/never", b"")
    failed.delete("/does/not/exist")
    failed.commit()
    c.set_acls("/app/config/db", [alice], version=0)
    c.set_acls("/secure", [alice], version=0)
    c.set("/big", os.urandom(400_000))
    c.delete("/app/container/child")
    c.create("/eph", b"e", ephemeral=True)


@pytest.fixture
def zk_run(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Starts ZooKeeper, runs the workload, reads the tree it serves; the caller stops it.
    Yields (server, tree before the stop, live session (id, password), a kazoo client)."""
    zk = start_server("zookeeper", tmp_path / "zk", **ZK_CFG)
    c = client(zk)
    other = client(zk)
    try:
        workload(c, other)
        other.stop()  # a session closed before the stop: its ephemerals go
        other.close()
        yield zk, read_tree(c), c.client_id, c
    finally:
        c.stop()
        c.close()
        zk.kill()


def files_digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((directory / "version-2").iterdir())}


def fastzk_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastzk", *args], capture_output=True,
                          text=True, timeout=60)


def test_serve_takes_over_after_kill9(zk_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    zk, before, (session_id, password), c = zk_run
    zk.kill()
    c.stop()  # the server is gone: the session stays open in ZooKeeper's files
    zk_files = files_digest(zk.data_dir)
    fz = start_server("fastzk", tmp_path / "fz", dataDir=zk.data_dir, **ZK_CFG)
    try:
        log_text = fz.log_text()
        assert "imported Apache ZooKeeper data" in log_text, log_text[-3000:]
        assert "digest verified" in log_text, log_text[-3000:]
        after = client(fz)
        assert_same_tree(before, read_tree(after))
        # the session ZooKeeper knew resumes on fastzk with the password ZooKeeper gave it
        resumed = KazooClient(hosts=fz.connect_string, client_id=(session_id, password),
                              auth_data=AUTH, timeout=20)
        resumed.start(timeout=15)
        assert resumed.client_id[0] == session_id
        assert resumed.get("/eph")[1].ephemeralOwner == session_id
        resumed.stop()  # closes it: its ephemerals go, as on ZooKeeper
        assert after.exists("/eph") is None
        assert not [p for p in after.get_children("/app/locks")]
        after.stop()
        after.close()
        resumed.close()
    finally:
        fz.stop()
    assert files_digest(zk.data_dir) == zk_files, "ZooKeeper's files were changed"
    assert (zk.data_dir / "fastzk").is_dir()
    # a second start is an ordinary fastzk restart, not a second import
    fz.restart()
    try:
        assert "imported Apache ZooKeeper data" not in fz.log_text().split("restart #1")[-1]
        c2 = client(fz)
        assert c2.exists("/eph") is None and c2.get("/app/multi")[0] == b"m"
        c2.stop()
        c2.close()
    finally:
        fz.stop()


def test_import_clean_stop_then_export_back(zk_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    zk, before, _, c = zk_run
    zk.stop()  # SIGTERM: ZooKeeper's clean shutdown, which keeps sessions
    c.stop()
    imported = tmp_path / "imported"
    done = fastzk_cli("import", str(zk.data_dir), "--to", str(imported))
    assert done.returncode == 0, done.stderr
    assert "digest verified" in done.stdout and "zxid 0x" in done.stdout, done.stdout
    fz = start_server("fastzk", tmp_path / "fz", dataDir=imported, **ZK_CFG)
    try:
        reader = client(fz)
        assert_same_tree(before, read_tree(reader))
        reader.stop()
        reader.close()
    finally:
        fz.stop()
    back = tmp_path / "back"
    done = fastzk_cli("export", str(imported), "--to", str(back))
    assert done.returncode == 0, done.stderr
    assert (back / "currentEpoch").read_text() == (back / "acceptedEpoch").read_text()
    zk2 = start_server("zookeeper", tmp_path / "zk2", dataDir=back, **ZK_CFG)
    try:
        reader = client(zk2)
        assert_same_tree(before, read_tree(reader))
        reader.stop()
        reader.close()
        assert "mismatch" not in zk2.log_text().lower()
    finally:
        zk2.stop()
    # ZooKeeper's own snapshot of what it loaded carries the digest the export computed
    snap = [p for _, p in zksnap.list_snapshots(back / "version-2")]
    assert snap
    got = recovery.recover(back)
    assert got.digest_status.startswith("verified"), got.digest_status


@pytest.mark.parametrize("method", ["snappy", "gz"])
def test_compressed_snapshots(method: str, tmp_path: Path) -> None:
    zk = start_server("zookeeper", tmp_path / "zk", snapCount=40,
                      jvm_flags=[f"-Dzookeeper.snapshot.compression.method={method}"])
    c = client(zk)
    try:
        for i in range(120):
            c.create(f"/c/n{i % 7}/x-", b"%d" % i, sequence=True, makepath=True)
        c.create("/c/eph", b"", ephemeral=True)
        before = read_tree(c)
    finally:
        zk.kill()  # first: the session stays open in ZooKeeper's files
        c.stop()
        c.close()
    names = [p.name for _, p in zksnap.list_snapshots(zk.data_dir / "version-2")]
    assert any(name.endswith("." + method) for name in names), names
    rec = recovery.recover(zk.data_dir)
    assert rec.snapshot is not None and rec.snapshot.name.endswith("." + method)
    assert rec.digest_status.startswith("verified"), rec.digest_status
    fz = start_server("fastzk", tmp_path / "fz", dataDir=zk.data_dir)
    try:
        reader = client(fz)
        assert_same_tree(before, read_tree(reader))
        reader.stop()
        reader.close()
    finally:
        fz.stop()


@pytest.fixture(scope="module")
def zk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ZooKeeper data directory with two snapshots and logs, to damage in copies."""
    root = tmp_path_factory.mktemp("zkdir")
    zk = start_server("zookeeper", root / "zk", snapCount=20)
    c = client(zk)
    try:
        for i in range(60):
            c.create(f"/d/n{i}", b"%d" % i, makepath=True)
    finally:
        c.stop()
        c.close()
        zk.stop()
    return zk.data_dir


def damaged_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target / "version-2"


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_corrupt_snapshot_falls_back_then_fails_naming_file_and_offset(
        zk_dir: Path, tmp_path: Path) -> None:
    version2 = damaged_copy(zk_dir, tmp_path / "d")
    snaps = zksnap.list_snapshots(version2)
    assert len(snaps) >= 2
    newest = snaps[0][1]
    # the first seal's Adler32 (before the 3.6+ digest record and its own seal: 33 bytes)
    flip(newest, newest.stat().st_size - 33 - 13 + 7)
    rec = recovery.recover(version2.parent)  # ZooKeeper moves on to an older snapshot
    assert rec.snapshot == snaps[1][1]
    assert rec.skipped_snapshots and str(newest) in rec.skipped_snapshots[0]
    assert "checksum mismatch" in rec.skipped_snapshots[0]
    for _, path in snaps[1:]:
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
    done = fastzk_cli("import", str(version2.parent), "--to", str(tmp_path / "out"))
    assert done.returncode == 1
    assert str(newest) in done.stderr and "offset" in done.stderr, done.stderr
    assert "truncated" in done.stderr, done.stderr


def busiest_log(version2: Path) -> tuple[Path, list[txnlog.TxnRecord]]:
    """The log file holding the most records, and its records."""
    best: tuple[Path, list[txnlog.TxnRecord]] | None = None
    for _, path in txnlog.list_logs(version2):
        records = list(txnlog.read_records([path], 0, []))
        if best is None or len(records) > len(best[1]):
            best = (path, records)
    assert best is not None and len(best[1]) >= 3
    return best


def test_corrupt_log_record_names_file_and_offset(zk_dir: Path, tmp_path: Path) -> None:
    version2 = damaged_copy(zk_dir, tmp_path / "d")
    path, records = busiest_log(version2)
    victim = records[len(records) // 2]
    for zxid, snap in zksnap.list_snapshots(version2):  # so that the import reads the victim
        if zxid >= victim.zxid:
            snap.unlink()
    flip(path, victim.offset + 20)  # inside the entry: the checksum no longer matches
    done = fastzk_cli("import", str(version2.parent), "--to", str(tmp_path / "out"))
    assert done.returncode == 1
    assert f"{path} offset {victim.offset}" in done.stderr, done.stderr
    assert "checksum" in done.stderr


def test_torn_log_tail_is_cut_as_zookeeper_does(zk_dir: Path, tmp_path: Path) -> None:
    version2 = damaged_copy(zk_dir, tmp_path / "d")
    path, records = busiest_log(version2)
    for first, later in txnlog.list_logs(version2):  # make it the last log, and the
        if first > records[0].zxid:  # snapshots older than its records
            later.unlink()
    for zxid, snap in zksnap.list_snapshots(version2):
        if zxid >= records[0].zxid:
            snap.unlink()
    last = records[-1]
    size = path.stat().st_size
    with open(path, "r+b") as handle:  # the last write torn: zeros from its middle on
        handle.seek(last.offset + 20)
        handle.write(b"\0" * (size - last.offset - 20))
    rec = recovery.recover(version2.parent)
    assert rec.zxid == records[-2].zxid
    assert rec.torn and f"{path} offset {last.offset}" in rec.torn[0], rec.torn


def test_not_zookeeper_files(tmp_path: Path) -> None:
    version2 = tmp_path / "d" / "version-2"
    version2.mkdir(parents=True)
    (version2 / "snapshot.5").write_bytes(b"garbage" * 10)
    done = fastzk_cli("import", str(tmp_path / "d"), "--to", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "snapshot.5 offset 0" in done.stderr and "bad magic" in done.stderr, done.stderr
    done = fastzk_cli("import", str(tmp_path / "empty"), "--to", str(tmp_path / "out"))
    assert done.returncode == 1 and "no ZooKeeper snapshot" in done.stderr


def test_zookeeper_session_passwords() -> None:
    """ZooKeeperServer.generatePasswd(id) = java.util.Random(id ^ 0xB3415C00).nextBytes(16);
    the values were computed with the JDK's jshell (the kill -9 test checks a live session)."""
    assert takeover.zk_session_password(0x10000ABCD0000).hex() == (
        "29c1a79902465990af66c1981b3b90cd")
    assert takeover.zk_session_password(-5).hex() == "d47144b5e45e45c49c3b7fdcd66257ba"


def test_serve_refuses_damaged_zookeeper_data(zk_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    version2 = damaged_copy(zk_dir, data)
    for _, path in zksnap.list_snapshots(version2):
        flip(path, 20)
    started = time.monotonic()
    with pytest.raises(Exception) as failure:
        start_server("fastzk", tmp_path / "fz", dataDir=data)
    assert time.monotonic() - started < 30
    message = str(failure.value)
    assert "cannot import Apache ZooKeeper's data" in message and "offset" in message, message
    assert not (data / "fastzk" / "epoch").exists()


@pytest.mark.parametrize("builtins", [(b"/zookeeper", b"/zookeeper/quota"), ()])
def test_a_snapshot_without_built_in_nodes_is_served(builtins: tuple[bytes, ...],
                                                     tmp_path: Path) -> None:
    """ZooKeeper 3.4's snapshots have no /zookeeper/config, and a hand-made one may lack
    /zookeeper itself: the taken-over server puts them back instead of failing (it once died
    of a segmentation fault on the first kind)."""
    open_acl = ((31, "world", "anyone"),)
    now = int(time.time() * 1000)

    def node(path: bytes, czxid: int, children: int) -> zksnap.SnapshotNode:
        return zksnap.SnapshotNode(path, b"d", open_acl, czxid, czxid, now, now, 0, children,
                                   0, 0, czxid)

    records = [node(b"", 0, len(builtins[:1]) + 1)]
    records += [node(path, 0, 1 if path == b"/zookeeper" else 0) for path in builtins]
    records.append(node(b"/app", 5, 0))
    data, _ = zksnap.encode_snapshot({}, iter(records), 5)
    zk_dir = tmp_path / "zk"
    (zk_dir / "version-2").mkdir(parents=True)
    (zk_dir / "version-2" / "snapshot.5").write_bytes(data)
    server = start_server("fastzk", tmp_path / "run", dataDir=zk_dir)
    try:
        c = client(server)
        try:
            assert c.get("/app")[0] == b"d"
            assert sorted(c.get_children("/zookeeper")) == ["config", "quota"]
            assert c.exists("/zookeeper/config") is not None
        finally:
            c.stop()
            c.close()
    finally:
        server.stop()
