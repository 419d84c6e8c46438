"""Moving between Apache ZooKeeper and fastzk data directories.

- `import_zk`: recover a ZooKeeper dataDir/dataLogDir (`recovery.recover`, read-only) and write
  the result as a fastzk data directory: one fastzk snapshot whose start and end zxid are the
  last recovered zxid, holding every node with its full Stat and ACL, the sessions (with the
  passwords ZooKeeper derives from their ids, so connected clients resume their sessions on
  fastzk), and the epoch file. fastzk's own recovery then starts from it as from any snapshot.
- `import_on_start`: the same from `fastzk serve`, when the configured dataDir holds
  ZooKeeper's `version-2/` files and no fastzk data yet. ZooKeeper's files are never changed;
  fastzk's go to `<dataDir>/fastzk/` (and `<dataLogDir>/fastzk/`) beside them.
- `export_fastzk`: recover a stopped fastzk data directory offline (the same recovery as a
  start-up) and write `version-2/snapshot.<zxid>` with ZooKeeper's digest record, plus
  `currentEpoch` and `acceptedEpoch`, for Apache ZooKeeper to start from.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastzk._core import DataTree, encode_value
from fastzk.runtime import snapshot as fzsnap
from fastzk.runtime import storage, wal
from fastzk.zkfiles import recovery
from fastzk.zkfiles import snapshot as zksnap
from fastzk.zkfiles.jute import Reader, ZkFormatError

if TYPE_CHECKING:
    from fastzk.config import Config

log = logging.getLogger("fastzk.zkfiles")

SUPER_SECRET = 0xB3415C00  # ZooKeeperServer.superSecret: session passwords derive from it
CHUNK_NODES = 20000
ACL_HEAD = struct.Struct(">II")
PATH_LEN = struct.Struct(">I")


class TakeoverError(Exception):
    """An import or export that cannot be done; the message says why (file and offset for a
    damaged ZooKeeper file)."""


def zk_session_password(session_id: int) -> bytes:
    """ZooKeeperServer.generatePasswd: java.util.Random(id ^ superSecret).nextBytes(16)."""
    mask = (1 << 48) - 1
    seed = ((session_id ^ SUPER_SECRET) ^ 0x5DEECE66D) & mask
    out = bytearray()
    while len(out) < 16:
        seed = (seed * 0x5DEECE66D + 0xB) & mask
        value = seed >> 16  # next(32)
        for _ in range(min(4, 16 - len(out))):
            out.append(value & 0xFF)
            value >>= 8
    return bytes(out)


def fastzk_data_present(snap_dir: Path, log_dir: Path) -> bool:
    return bool(fzsnap.list_snapshots(snap_dir) or wal.list_segments(log_dir)
                or (snap_dir / storage.EPOCH_FILE).exists())


@dataclass
class ImportReport:
    recovered: recovery.ZkRecovery
    snapshot: Path
    epoch: int

    def summary(self) -> str:
        r = self.recovered
        parts = [
            f"zxid {r.zxid:#x}",
            f"{len(r.tree)} znodes",
            f"{len(r.sessions)} sessions",
            f"digest {r.digest_status}",
            f"from snapshot {r.snapshot.name if r.snapshot else 'none'} "
            f"(zxid {r.snapshot_zxid:#x}) + {r.txns} txns",
            f"epoch {self.epoch}",
            f"{r.seconds:.2f}s",
        ]
        if r.orphans_removed:
            parts.append(f"{r.orphans_removed} ephemerals of closed sessions removed")
        if r.torn:
            parts.append("torn log tail cut: " + "; ".join(r.torn))
        if r.skipped_snapshots:
            parts.append("skipped snapshots: " + "; ".join(r.skipped_snapshots))
        return ", ".join(parts)


def import_zk(zk_data_dir: Path, zk_log_dir: Path | None, snap_dir: Path,
              log_dir: Path | None = None) -> ImportReport:
    """Recovers a ZooKeeper data directory and writes it as fastzk's state in `snap_dir` (a
    fastzk data directory's `fastzk/` subdirectory). Refuses to overwrite fastzk data."""
    if fastzk_data_present(snap_dir, log_dir or snap_dir):
        raise TakeoverError(f"{snap_dir} already holds fastzk data; import only into an "
                            "empty data directory")
    if not recovery.has_zk_data(zk_data_dir, zk_log_dir):
        snap, txn = recovery.zk_dirs(zk_data_dir, zk_log_dir)
        raise TakeoverError(f"no ZooKeeper snapshot or transaction log in {snap} or {txn}")
    try:
        rec = recovery.recover(zk_data_dir, zk_log_dir)
    except (ZkFormatError, recovery.ZkRecoveryError) as error:
        raise TakeoverError(str(error)) from None
    epoch = max(rec.current_epoch or 0, rec.accepted_epoch or 0, rec.zxid >> 32)
    sessions = [(sid, timeout, zk_session_password(sid))
                for sid, timeout in sorted(rec.sessions.items())]
    storage.ensure_dir(snap_dir)
    path = write_fastzk_snapshot(snap_dir, rec.tree, rec.zxid, sessions,
                                 rec.last_time_ms or int(time.time() * 1000))
    storage.save_hard_state(snap_dir, epoch, 0)
    return ImportReport(rec, path, epoch)


def write_fastzk_snapshot(directory: Path, tree: DataTree, zxid: int,
                          sessions: list[tuple[int, int, bytes]], time_ms: int) -> Path:
    """A complete (not fuzzy: start = end = zxid) fastzk snapshot of `tree`, written durably
    the way SnapshotTask writes one (temp file, fsync, rename, directory fsync)."""
    path = directory / fzsnap.snapshot_name(zxid)
    tmp = directory / (path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, fzsnap.SNAP_MAGIC + fzsnap.block(
            b"H" + encode_value((fzsnap.FORMAT, zxid, time_ms, sessions))))
        cursor = tree.snapshot_cursor()
        chunks = 0
        while chunk := cursor.next_chunk(CHUNK_NODES):
            _write_all(fd, fzsnap.block(b"C" + chunk))
            chunks += 1
        _write_all(fd, fzsnap.block(b"E" + encode_value((cursor.nodes, chunks, zxid))))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    wal.fsync_dir(directory)
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def import_on_start(cfg: Config, snap_dir: Path, log_dir: Path) -> ImportReport | None:
    """`fastzk serve`'s hook: imports the ZooKeeper files of the configured dataDir when
    fastzk has no data there yet. Raises wal.RecoveryError when they cannot be imported."""
    if fastzk_data_present(snap_dir, log_dir):
        return None
    if not recovery.has_zk_data(cfg.data_dir, cfg.data_log_dir):
        return None
    if cfg.ensemble:
        raise wal.RecoveryError(
            f"{cfg.data_dir} holds Apache ZooKeeper's data and this is an ensemble member: "
            "members that each import their own copy could disagree on the uncommitted tail "
            "of ZooKeeper's log. Run `fastzk import` on the member with the highest zxid and "
            "start the others with empty data directories (they copy the leader's state)")
    try:
        report = import_zk(cfg.data_dir, cfg.data_log_dir, snap_dir, log_dir)
    except TakeoverError as error:
        raise wal.RecoveryError(f"cannot import Apache ZooKeeper's data: {error}") from None
    log.info("imported Apache ZooKeeper data from %s: %s (ZooKeeper's files are left as they "
             "are)", cfg.data_dir, report.summary())
    return report


# --- export ----------------------------------------------------------------------------------

@dataclass
class ExportReport:
    snapshot: Path
    zxid: int
    nodes: int
    sessions: int
    epoch: int
    digest: int


def export_fastzk(data_dir: Path, to_dir: Path, log_dir: Path | None = None) -> ExportReport:
    """Writes the state of the stopped fastzk server whose data directory is `data_dir` as
    an Apache ZooKeeper data directory `to_dir` (which must hold no ZooKeeper data)."""
    from fastzk.node import Limits, Node

    if recovery.has_zk_data(to_dir, None):
        raise TakeoverError(f"{to_dir}/version-2 already holds ZooKeeper data")
    snap_dir = wal.log_dir_of(data_dir)
    wal_dir = wal.log_dir_of(log_dir or data_dir)
    if not fastzk_data_present(snap_dir, wal_dir):
        raise TakeoverError(f"no fastzk data in {snap_dir}")
    # session limits only matter to clients, and an offline node has none
    node = Node(Limits(tick_ms=2000, min_session_timeout=4000, max_session_timeout=40000),
                random.Random(0))
    try:
        storage.recover(node, snap_dir, wal_dir)
    except wal.RecoveryError as error:
        raise TakeoverError(str(error)) from None
    # a standalone server commits its durable log at start-up: so does the export
    for zxid, txn in node.replica.log.after(node.applied_zxid, 1 << 62):
        node.applier.replay(txn, False)
        node.applied_zxid = zxid
    epoch, _ = storage.load_hard_state(snap_dir)
    zxid = node.applied_zxid
    epoch = max(epoch, zxid >> 32)
    sessions = {s.session_id: s.timeout for s in node.sessions.sessions.values()}
    data, digest = zksnap.encode_snapshot(sessions, zk_nodes(node.tree), zxid)
    version_dir = to_dir / "version-2"
    storage.ensure_dir(version_dir)
    path = version_dir / f"snapshot.{zxid:x}"
    _write_durably(path, data)
    for name in ("acceptedEpoch", "currentEpoch"):
        _write_durably(to_dir / name, str(epoch).encode())
    return ExportReport(path, zxid, len(node.tree), len(sessions), epoch, digest)


def zk_nodes(tree: DataTree) -> Iterator[zksnap.SnapshotNode]:
    """The tree's nodes as ZooKeeper persists them, parents first. /zookeeper/config's data is
    left empty: it is each member's own view, which ZooKeeper rewrites at start-up."""
    cursor = tree.snapshot_cursor()
    acls: dict[int, tuple[tuple[int, str, str], ...]] = {}  # defined once per snapshot
    while chunk := cursor.next_chunk(CHUNK_NODES):
        yield from _chunk_records(chunk, acls)


def _chunk_records(chunk: bytes, acls: dict[int, tuple[tuple[int, str, str], ...]]
                   ) -> Iterator[zksnap.SnapshotNode]:
    """Reads back DataTree.SnapshotCursor's records (see its docstring for the layout)."""
    r = Reader(chunk, "snapshot chunk")
    tail = zksnap.CHUNK_TAIL
    while r.pos < r.end:
        tag = chunk[r.pos]
        r.pos += 1
        if tag == 65:  # 'A': u32 id, u32 count, then the ACL entries
            aid, count = ACL_HEAD.unpack_from(chunk, r.pos)
            r.pos += ACL_HEAD.size
            acls[aid] = tuple((r.int(), r.string(), r.string()) for _ in range(count))
            continue
        (n,) = PATH_LEN.unpack_from(chunk, r.pos)
        r.pos += 4
        path = chunk[r.pos:r.pos + n]
        r.pos += n
        data = r.buffer("data")
        aid, czxid, mzxid, ctime, mtime, pzxid, owner, version, counter, aversion = (
            tail.unpack_from(chunk, r.pos))
        r.pos += tail.size
        if path == b"/zookeeper/config":
            data = b""
        yield zksnap.SnapshotNode(b"" if path == b"/" else path, data, acls[aid], czxid,
                                  mzxid, ctime, mtime, version, counter, aversion, owner, pzxid)


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    wal.fsync_dir(path.parent)
