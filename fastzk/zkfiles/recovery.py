"""Recovering a ZooKeeper data directory as ZooKeeper does (FileTxnSnapLog.restore), into a
fastzk DataTree:

1. the newest snapshot that reads cleanly (checksums included); a damaged one is skipped with
   the reason, as FileSnap.deserialize moves on to an older one; snapshots exist but none
   reads: an error listing why each failed;
2. every txn of the logs from the snapshot's zxid + 1 on, applied with DataTree.processTxn's
   semantics, which tolerate the fuzzy snapshot: a create of a node that exists fails (and a
   plain create then raises the parent's cversion/pzxid, setCversionPzxid), a delete of a
   missing node still raises the parent's pzxid, a create only moves the parent's cversion
   and pzxid forward, a multi holding an error txn changes nothing;
3. ZooKeeperServer.loadData's clean-up: ephemerals whose session is not in the restored
   session table are deleted at the last zxid.

ZooKeeper's tree digest is kept alongside, node by node, and checked where ZooKeeper checks
it: against the snapshot's digest record at its zxid, then against every later txn's digest.
fastzk's DataTree stores the same fields as ZooKeeper's StatPersisted (its create counter is
StatPersisted.cversion), so where a DataTree mutator's rule differs from ZooKeeper's (it
moves a parent's pzxid or counter unconditionally) the parent is rewritten with ZooKeeper's
values through `load_snapshot_chunk`, the core's way to set a node's full state."""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastzk._core import DataTree
from fastzk.zkfiles import snapshot as zksnap
from fastzk.zkfiles import txnlog
from fastzk.zkfiles.jute import INT, ZkFormatError, put_string

log = logging.getLogger("fastzk.zkfiles")

NODE_RECORD = struct.Struct(">BI")


class ZkRecoveryError(Exception):
    """A ZooKeeper data directory that cannot be recovered (the message says why)."""


@dataclass
class ZkRecovery:
    """The state ZooKeeper would start with, and how it was reached."""

    tree: DataTree
    sessions: dict[int, int]  # id -> timeout ms
    zxid: int
    snapshot: Path | None
    snapshot_zxid: int
    txns: int = 0
    skipped_snapshots: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    digest: int = 0  # ZooKeeper's digest of the recovered tree (signed)
    digest_status: str = "none"
    orphans_removed: int = 0
    current_epoch: int | None = None
    accepted_epoch: int | None = None
    last_time_ms: int = 0
    seconds: float = 0.0


def zk_dirs(data_dir: Path, log_dir: Path | None) -> tuple[Path, Path]:
    """ZooKeeper's snapshot and log directories for a dataDir and dataLogDir."""
    return data_dir / "version-2", (log_dir or data_dir) / "version-2"


def has_zk_data(data_dir: Path, log_dir: Path | None = None) -> bool:
    snap_dir, txn_dir = zk_dirs(data_dir, log_dir)
    return bool(zksnap.list_snapshots(snap_dir) or txnlog.list_logs(txn_dir))


def read_epoch(data_dir: Path, name: str) -> int | None:
    """QuorumPeer's currentEpoch / acceptedEpoch file (decimal text), None if absent."""
    path = data_dir / name
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        raise ZkFormatError(str(path), 0, f"not an epoch number: {text[:40]!r}") from None


class Replayer:
    """Applies ZooKeeper txns to a DataTree with DataTree.processTxn's rules, keeping
    ZooKeeper's tree digest up to date."""

    def __init__(self, tree: DataTree, sessions: dict[int, int], digest: int) -> None:
        self.tree = tree
        self.sessions = sessions
        self.digest = digest  # unsigned 64-bit

    # --- digest --------------------------------------------------------------------------
    def node_digest(self, path: str) -> int:
        got = self.tree.get_data(path)
        if got is None:
            return 0
        data, st = got
        info = self.tree.node_info(path)
        assert info is not None
        key = b"" if path == "/" else path.encode("utf-8", "surrogatepass")
        return zksnap.node_digest(key, data, st[0], st[1], st[10], st[2], st[3], st[4],
                                  info[2], st[6], info[4])

    # --- txns ----------------------------------------------------------------------------
    def apply(self, record: txnlog.TxnRecord) -> None:
        ops = record.ops
        if record.type == txnlog.MULTI and any(op.kind == "error" for op in ops):
            return  # a failed multi: every op became an error txn
        for op in ops:
            self._op(op, record)

    def _op(self, op: txnlog.Op, record: txnlog.TxnRecord) -> None:
        kind = op.kind
        zxid = record.zxid
        if kind == "create":
            self.create(op, record)
        elif kind == "delete":
            self.delete(op.args[0], zxid)
        elif kind == "set_data":
            path, data, version = op.args
            if self.tree.exists(path):  # else a fuzzy snapshot's later delete settles it
                before = self.node_digest(path)
                self.tree.set_data(path, data, version, zxid, record.time)
                self.digest += self.node_digest(path) - before
        elif kind == "set_acl":
            path, acl, version = op.args
            if self.tree.exists(path):
                before = self.node_digest(path)
                self.tree.set_acl(path, acl, version)
                self.digest += self.node_digest(path) - before
        elif kind == "create_session":
            self.sessions[record.session_id] = op.args[0]
        elif kind == "close_session":
            self.close_session(record.session_id, op.args[0], zxid)
        # check and error change nothing

    def create(self, op: txnlog.Op, record: txnlog.TxnRecord) -> None:
        path, data, acl, owner, parent_cversion = op.args
        zxid = record.zxid
        cut = path.rfind("/")
        parent = path[:cut] or "/"
        tree = self.tree
        info = tree.node_info(parent)
        if info is None or cut < 0:
            return  # NoNode
        if tree.exists(path):
            # NodeExists; for a plain create, DataTree.processTxn then calls setCversionPzxid
            if op.type == txnlog.CREATE:
                cversion = info[2] + 1 if parent_cversion == -1 else parent_cversion
                if cversion > info[2]:
                    self._set_parent(parent, cversion, zxid)
            return
        before = self.node_digest(parent)
        counter = info[2]
        pzxid = tree.stat(parent)[10]
        cversion = counter + 1 if parent_cversion == -1 else parent_cversion
        if cversion > counter:
            counter, pzxid = cversion, zxid
        tree.create(path, data, acl or zksnap.OPEN_ACL, owner, zxid, record.time, counter)
        if tree.stat(parent)[10] != pzxid:
            self._set_parent(parent, counter, pzxid)
        self.digest += self.node_digest(parent) - before + self.node_digest(path)

    def delete(self, path: str, zxid: int) -> bool:
        tree = self.tree
        cut = path.rfind("/")
        parent = path[:cut] or "/"
        st = tree.stat(parent)
        if st is None or cut < 0:
            return False
        before = self.node_digest(parent) + self.node_digest(path)
        pzxid = max(st[10], zxid)
        existed = tree.exists(path)
        try:
            tree.delete(path, zxid)
        except ValueError as error:
            raise ZkRecoveryError(f"txn {zxid:#x} deletes {path}, which still has children "
                               f"({error}); ZooKeeper would orphan them") from None
        if tree.stat(parent)[10] != pzxid:
            self._set_parent(parent, tree.node_info(parent)[2], pzxid)
        self.digest += self.node_digest(parent) - before
        return existed

    def close_session(self, session_id: int, paths: list[str] | None, zxid: int) -> None:
        """killSession: the paths the txn lists, then the session's other ephemerals."""
        self.sessions.pop(session_id, None)
        local = set(self.tree.ephemerals(session_id))
        for path in paths or ():
            self.delete(path, zxid)
            local.discard(path)
        for path in local:
            self.delete(path, zxid)

    def _set_parent(self, path: str, counter: int, pzxid: int) -> None:
        """Gives a node ZooKeeper's cversion and pzxid, keeping everything else."""
        before = self.node_digest(path)
        data, st = self.tree.get_data(path)
        version, aversion, _, _, owner, acl = self.tree.node_info(path)
        chunk = bytearray(NODE_RECORD.pack(65, 0) + INT.pack(len(acl)))
        for perms, scheme, ident in acl:
            parts: list[bytes] = [INT.pack(perms)]
            put_string(parts, scheme)
            put_string(parts, ident)
            chunk += b"".join(parts)
        key = path.encode("utf-8", "surrogatepass")
        chunk += NODE_RECORD.pack(78, len(key)) + key
        chunk += INT.pack(-1 if data is None else len(data)) + (data or b"")
        chunk += zksnap.CHUNK_TAIL.pack(0, st[0], st[1], st[2], st[3], pzxid, owner, version,
                                        counter, aversion)
        self.tree.load_snapshot_chunk(bytes(chunk), {})
        self.digest += self.node_digest(path) - before


def recover(data_dir: Path, log_dir: Path | None = None) -> ZkRecovery:
    """Recovers the ZooKeeper data directory `data_dir` (and `log_dir`, its dataLogDir) into a
    fresh DataTree. Reads only. Raises ZkFormatError (file and offset) or ZkRecoveryError."""
    started = time.monotonic()
    snap_dir, txn_dir = zk_dirs(data_dir, log_dir)
    skipped: list[str] = []
    chosen: zksnap.ZkSnapshot | None = None
    tree = DataTree()
    candidates = zksnap.list_snapshots(snap_dir)
    for zxid, path in candidates[:100]:  # findNValidSnapshots(100)
        tree = DataTree()
        acls: dict[int, object] = {}

        def sink(chunk: bytes, tree: DataTree = tree, acls: dict = acls) -> None:
            tree.load_snapshot_chunk(chunk, acls)

        try:
            chosen = zksnap.read_snapshot(path, zxid, sink)
            break
        except (ZkFormatError, OSError) as error:
            skipped.append(str(error))
            log.warning("ZooKeeper snapshot %s is unusable (%s); trying an older one", path,
                        error)
    if chosen is None and candidates:
        raise ZkRecoveryError("no usable ZooKeeper snapshot in " + str(snap_dir) + ":\n  "
                           + "\n  ".join(skipped))
    if chosen is None:
        tree = DataTree()
        first = txnlog.list_logs(txn_dir)[:1]
        if first and first[0][0] > 1:
            raise ZkRecoveryError(f"no snapshot in {snap_dir} and the log in {txn_dir} starts at "
                               f"zxid {first[0][0]:#x}: the txns before it are gone")
    sessions = dict(chosen.sessions) if chosen else {}
    base = chosen.zxid if chosen else 0
    rec = ZkRecovery(tree, sessions, base, chosen.path if chosen else None, base,
                     skipped_snapshots=skipped)
    replayer = Replayer(tree, sessions, chosen.digest_sum if chosen else 0)
    pending = chosen.digest if chosen and chosen.digest and chosen.digest[0] > 0 else None
    checks = 0
    mismatch: str | None = None
    # ZooKeeper checks txn digests only once the tree is exact: after the snapshot digest's
    # zxid; with no snapshot digest, from the first txn digest that matches (replayed from an
    # empty tree: from the start)
    exact = chosen is None
    if pending is not None and pending[0] == base:
        mismatch = _compare(replayer.digest, pending, base)
        checks, exact, pending = checks + (mismatch is None), mismatch is None, None
    ends: list[txnlog.LogEnd] = []
    for record in txnlog.read_records(txnlog.logs_for(txn_dir, base + 1), base + 1, ends):
        replayer.apply(record)
        rec.txns += 1
        rec.zxid = max(rec.zxid, record.zxid)
        rec.last_time_ms = record.time
        if pending is not None:
            if record.zxid >= pending[0]:
                mismatch = mismatch or _compare(replayer.digest, pending, record.zxid)
                checks, exact, pending = checks + (mismatch is None), mismatch is None, None
            continue
        if record.digest is None or record.digest[0] != zksnap.DIGEST_VERSION or mismatch:
            continue
        problem = _compare(replayer.digest, (record.zxid, *record.digest), record.zxid)
        if problem is None:
            checks += 1
            exact = True
        elif exact:
            mismatch = problem
    if mismatch:
        status = mismatch
    elif pending is not None:
        status = (f"not checked: the log ends at {rec.zxid:#x}, before the snapshot digest's "
                  f"zxid {pending[0]:#x}")
    else:
        status = f"verified ({checks} checks)" if checks else "none"
    rec.torn = [f"{end.file} offset {end.offset}: {end.torn}" for end in ends if end.torn]
    # ZooKeeperServer.loadData: ephemerals of sessions that are gone
    for owner, paths in tree.sessions_with_ephemerals().items():
        if owner not in sessions:
            for path in sorted(paths, key=len, reverse=True):
                replayer.delete(path, rec.zxid)
                rec.orphans_removed += 1
    rec.digest = zksnap.signed64(replayer.digest)
    rec.digest_status = status
    rec.current_epoch = read_epoch(data_dir, "currentEpoch")
    rec.accepted_epoch = read_epoch(data_dir, "acceptedEpoch")
    rec.seconds = time.monotonic() - started
    return rec


def _compare(actual: int, expected: tuple[int, int, int], zxid: int) -> str | None:
    """None when ZooKeeper's digest matches the tree's, else the mismatch."""
    _, version, value = expected
    if version != zksnap.DIGEST_VERSION or zksnap.signed64(actual) == value:
        return None
    return (f"MISMATCH at zxid {zxid:#x}: ZooKeeper recorded {value}, the imported tree has "
            f"{zksnap.signed64(actual)}")
