"""Reading history back: the state of a backup, an archive or a data dir as of a zxid or a
time (`fastzk restore`), and the difference between two such states (`fastzk snap diff`).

A source is a backup directory (a full backup, or an incremental one whose manifest names the
backups before it, down to a full one), an archive directory (`fastzk.archiveDir`), a data
dir (its `fastzk/` directory) or one snapshot file (its content as stored, no log). Its files
are gathered into one view: every snapshot, and for each log segment the longest copy (a
later backup's copy of a segment extends an earlier backup's, which was cut at that backup's
last zxid). The log is verified as recovery verifies it (runtime/wal.py: CRCs, continuity).

A state "as of zxid Z" is the tree after the last txn whose zxid is <= Z: the newest snapshot
whose walk ended at or before Z (a fuzzy snapshot is exact only from its end zxid on) plus the
log after its start zxid, replayed up to Z. A multi is one txn with one zxid (as in ZooKeeper),
so it is restored whole or not at all: no zxid falls inside one. "As of time T" is as of the
last txn whose time (the leader's clock when it was decided, the ctime/mtime it gave) is <= T.
"""

from __future__ import annotations

import datetime
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from fastzk._core import DataTree, encode_value
from fastzk.backup import format as fmt
from fastzk.node import Limits, Node
from fastzk.runtime import snapshot as snapshots
from fastzk.runtime import wal
from fastzk.server.prep import BARRIER, Txn

CHUNK_NODES = 1000
DIFF_IGNORED = "/zookeeper/config"  # each member's own view of the ensemble, not data


@dataclass
class View:
    """The files of one source: verified snapshots (newest first) and a log directory."""

    name: str
    snapshots: list[snapshots.SnapshotInfo] = field(default_factory=list)
    log_dir: Path | None = None
    log: wal.LogState | None = None
    single_snapshot: bool = False  # a bare snapshot file: its content as stored
    workdir: tempfile.TemporaryDirectory[str] | None = None

    def close(self) -> None:
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None


def open_source(source: Path) -> View:
    """Gathers and verifies a source's files; BackupError for anything unusable."""
    source = Path(source)
    if source.is_file():
        try:
            info = snapshots.verify(source)
        except (snapshots.SnapshotError, OSError) as error:
            raise fmt.BackupError(f"{source}: not a usable snapshot ({error})") from None
        return View(str(source), [info], single_snapshot=True)
    if not source.is_dir():
        raise fmt.BackupError(f"{source}: no such file or directory")
    if (source / fmt.MANIFEST).exists():
        directories = _backup_chain(source)  # a backup (read_manifest refuses an unfinished one)
    elif (source / wal.SUBDIR).is_dir():
        directories = [source / wal.SUBDIR]  # a data dir
    else:
        directories = [source]  # an archive, or a data dir's fastzk/ directory
    return _gather(str(source), directories)


def _backup_chain(directory: Path) -> list[Path]:
    """The directories of a backup and of every backup it builds on, oldest first."""
    chain: list[Path] = []
    seen: set[str] = set()
    while True:
        manifest = fmt.read_manifest(directory)
        chain.append(directory)
        seen.add(manifest["id"])
        if manifest["kind"] == "full":
            return chain[::-1]
        base = manifest.get("base") or {}
        base_dir = Path(base.get("path", ""))
        if not base_dir.is_absolute():
            base_dir = directory.parent / base_dir
        if base.get("id") in seen:
            raise fmt.BackupError(f"{directory}: its chain of backups loops")
        try:
            base_manifest = fmt.read_manifest(base_dir)
        except fmt.BackupError as error:
            raise fmt.BackupError(f"{directory} is incremental and needs the backup it was "
                                  f"taken after: {error}") from None
        if base_manifest["id"] != base.get("id"):
            raise fmt.BackupError(f"{directory} was taken after backup {base.get('id')}, but "
                                  f"{base_dir} is backup {base_manifest['id']}")
        directory = base_dir


def _gather(name: str, directories: list[Path]) -> View:
    view = View(name)
    segments: dict[int, Path] = {}
    for directory in directories:
        for _, path in snapshots.list_snapshots(directory):
            try:
                info = snapshots.verify(path)
            except (snapshots.SnapshotError, OSError) as error:
                raise fmt.BackupError(f"corrupt snapshot: {error}") from None
            view.snapshots.append(info)
        for base, path in wal.list_segments(directory):
            if base not in segments or path.stat().st_size > segments[base].stat().st_size:
                segments[base] = path
    view.snapshots.sort(key=lambda info: info.zxid, reverse=True)
    if len(directories) == 1:
        view.log_dir = directories[0]
    else:  # one directory of links, so that the log reads as one (wal.verify_log)
        view.workdir = tempfile.TemporaryDirectory(prefix="fastzk-restore-")
        view.log_dir = Path(view.workdir.name)
        for base, path in segments.items():
            os.symlink(path.resolve(), view.log_dir / wal.segment_name(base))
    try:
        view.log = wal.verify_log(view.log_dir, 0)
    except wal.RecoveryError as error:
        view.close()
        raise fmt.BackupError(str(error)) from None
    return view


def _txns(view: View, after: int) -> Iterator[Txn]:
    if view.log is None:
        return iter(())
    return wal.read_log(view.log, after)


def _restorable_from(view: View, info: snapshots.SnapshotInfo) -> bool:
    """Whether the log continues a snapshot: it holds start + 1 (or nothing is needed) and
    reaches its end zxid."""
    state = view.log
    if info.end_zxid == info.zxid:
        return True
    if state is None or not state.segments:
        return False
    return state.first_zxid <= info.zxid + 1 and state.last_zxid >= info.end_zxid


def _starts_history(view: View) -> bool:
    for txn in _txns(view, 0):
        return txn.changes[:1] == [(BARRIER, 0)]
    return False


def last_zxid(view: View) -> int:
    top = view.log.last_zxid if view.log is not None else 0
    return max([top] + [info.end_zxid for info in view.snapshots])


def range_of(view: View) -> tuple[int, int]:
    """(first, last) zxid that the source can be restored to."""
    if view.single_snapshot:
        info = view.snapshots[0]
        return info.end_zxid, info.end_zxid
    lows = [info.end_zxid for info in view.snapshots if _restorable_from(view, info)]
    if _starts_history(view):
        lows.append(0)
    if not lows:
        raise fmt.BackupError(f"{view.name}: no snapshot whose log is complete, and the log "
                              "does not begin at the start of history: nothing to restore")
    return min(lows), last_zxid(view)


def zxid_at_time(view: View, time_ms: int) -> int:
    """The zxid of the last txn whose time is <= time_ms."""
    found = None
    for txn in _txns(view, 0):
        if txn.time_ms > time_ms:
            break
        found = txn.zxid
    if found is None:
        for info in view.snapshots:  # before the log: a snapshot taken at or before then
            if info.time_ms <= time_ms and info.end_zxid == info.zxid:
                return info.zxid
        first = next(iter(_txns(view, 0)), None)
        when = f" (its first txn is at {format_time(first.time_ms)})" if first else ""
        raise fmt.BackupError(f"{view.name}: no txn at or before {format_time(time_ms)}{when}")
    return found


@dataclass
class State:
    node: Node
    zxid: int
    time_ms: int


def state_at(view: View, zxid: int | None) -> State:
    """The state after the last txn <= zxid (None: the source's last)."""
    low, high = range_of(view)
    target = high if zxid is None else zxid
    if not low <= target <= high:
        raise fmt.BackupError(f"zxid {target:#x} is outside what {view.name} can restore: "
                              f"{low:#x} to {high:#x}")
    node = Node(Limits(tick_ms=2000, min_session_timeout=4000, max_session_timeout=40000,
                       ttl_enabled=True), random.Random(0))
    if view.single_snapshot:
        info = view.snapshots[0]
        snapshots.load(info.path, node.tree)
        node.recover(info.zxid, info.sessions, iter(()))
        node.applied_zxid = info.end_zxid
        return State(node, info.end_zxid, info.time_ms)
    chosen = next((info for info in view.snapshots
                   if info.end_zxid <= target and _restorable_from(view, info)), None)
    base, end, sessions, time_ms = 0, 0, [], 0
    if chosen is not None:
        snapshots.load(chosen.path, node.tree)
        base, end, sessions, time_ms = chosen.zxid, chosen.end_zxid, chosen.sessions, \
            chosen.time_ms
    fuzzy: list[Txn] = []
    later: list[Txn] = []
    for txn in _txns(view, base):
        if txn.zxid > target:
            break
        (fuzzy if txn.zxid <= end else later).append(txn)
        time_ms = txn.time_ms
    try:
        node.recover(base, sessions, iter(fuzzy), fuzzy_until=end)
        for txn in later:
            node.applier.replay(txn, False)
            node.applied_zxid = txn.zxid
    except (KeyError, ValueError) as error:
        raise fmt.BackupError(f"{view.name}: the log does not replay over its snapshot: "
                              f"{error}") from None
    node.now_ms = time_ms
    return State(node, node.applied_zxid, time_ms)


# --- restore ------------------------------------------------------------------------------------
def restore(source: Path, data_dir: Path, zxid: int | None, time_ms: int | None,
            force: bool, out: TextIO) -> int:
    """Writes the state as of zxid/time as the only snapshot of data_dir's fastzk/ directory;
    the server started on it loads it and serves exactly that tree."""
    data_dir = Path(data_dir)
    keep = {"myid"}
    if data_dir.is_dir() and any(name not in keep for name in os.listdir(data_dir)):
        if not force:
            raise fmt.BackupError(f"{data_dir} is not empty; restoring would replace its data "
                                  "(use --force to do that)")
        shutil.rmtree(wal.log_dir_of(data_dir), ignore_errors=True)
    view = open_source(source)
    try:
        if time_ms is not None:
            zxid = zxid_at_time(view, time_ms)
        state = state_at(view, zxid)
    finally:
        view.close()
    target = wal.log_dir_of(data_dir)
    target.mkdir(parents=True, exist_ok=True)
    path = write_snapshot(state.node, target)
    print(f"restored {source} as of zxid {state.zxid:#x} ({format_time(state.time_ms)}): "
          f"{len(state.node.tree)} znodes, {len(state.node.sessions.sessions)} sessions -> "
          f"{path}", file=out)
    return 0


def write_snapshot(node: Node, directory: Path) -> Path:
    """An exact snapshot (start = end = the applied zxid), streamed to disk chunk by chunk:
    temp file, fsync, rename, directory fsync, as the server writes its own."""
    path = directory / snapshots.snapshot_name(node.applied_zxid)
    tmp = directory / (path.name + ".tmp")
    cursor = node.tree.snapshot_cursor()
    chunks = 0
    with open(tmp, "wb") as handle:
        handle.write(snapshots.header(node))
        while chunk := cursor.next_chunk(CHUNK_NODES):
            handle.write(snapshots.block(b"C" + chunk))
            chunks += 1
        handle.write(snapshots.block(b"E" + encode_value((cursor.nodes, chunks,
                                                           node.applied_zxid))))
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, path)
    wal.fsync_dir(directory)
    return path


# --- diff ---------------------------------------------------------------------------------------
def state_of_point(point: str) -> tuple[State, str]:
    """A diff operand: a snapshot file, a data dir, a backup or an archive, optionally with
    `@zxid`."""
    where, _, at = point.rpartition("@") if "@" in point else (point, "", "")
    zxid = None
    if at:
        try:
            zxid = int(at, 0)
        except ValueError:
            raise fmt.BackupError(f"{point}: @ must be followed by a zxid") from None
    view = open_source(Path(where))
    try:
        state = state_at(view, zxid)
    finally:
        view.close()
    return state, f"{where} at zxid {state.zxid:#x}"


def _walk(tree: DataTree) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
    stack = ["/"]
    while stack:
        path = stack.pop()
        got = tree.get_data(path)
        acl = tree.get_acl(path)
        if got is None or acl is None:
            continue
        if path != DIFF_IGNORED:
            found[path] = (got[0], got[1], tuple(tuple(entry) for entry in acl[0]))
        prefix = "" if path == "/" else path
        stack.extend(f"{prefix}/{name}" for name in tree.get_children(path) or [])
    return found


def _path_key(path: str) -> list[str]:
    return path.split("/")


def diff(a: str, b: str, out: TextIO) -> int:
    """Prints the paths created, deleted and changed from A to B, in path order; 0 when the
    trees are equal, 1 when they differ (like diff)."""
    state_a, name_a = state_of_point(a)
    state_b, name_b = state_of_point(b)
    left, right = _walk(state_a.node.tree), _walk(state_b.node.tree)
    print(f"--- {name_a}\n+++ {name_b}", file=out)
    changes = 0
    for path in sorted(left.keys() | right.keys(), key=_path_key):
        old, new = left.get(path), right.get(path)
        if old is None and new is not None:
            print(f"+ {path}", file=out)
        elif new is None and old is not None:
            print(f"- {path}", file=out)
        elif old is not None and new is not None and old != new:
            what = _changed(old, new)
            if not what:
                continue
            print(f"~ {path}: {', '.join(what)}", file=out)
        else:
            continue
        changes += 1
    print(f"{changes} path(s) differ", file=out)
    return 1 if changes else 0


def _changed(old: tuple, new: tuple) -> list[str]:
    (data_a, stat_a, acl_a), (data_b, stat_b, acl_b) = old, new
    what = []
    if stat_a[0] != stat_b[0]:
        what.append(f"recreated (czxid {stat_a[0]:#x} -> {stat_b[0]:#x})")
    if data_a != data_b:
        what.append(f"data ({len(data_a or b'')} -> {len(data_b or b'')} bytes)")
    for index, label in ((4, "version"), (5, "cversion"), (6, "aversion")):
        if stat_a[index] != stat_b[index]:
            what.append(f"{label} {stat_a[index]} -> {stat_b[index]}")
    if acl_a != acl_b:
        what.append("acl")
    if stat_a[7] != stat_b[7]:
        what.append(f"ephemeralOwner {stat_a[7]:#x} -> {stat_b[7]:#x}")
    return what


# --- times ---------------------------------------------------------------------------------------
def parse_time(text: str) -> int:
    """Milliseconds since the epoch from an ISO 8601 time (UTC when it names no zone) or a
    number of milliseconds."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise fmt.BackupError(f"{text!r}: not a time (ISO 8601, e.g. 2024-05-01T12:00:00.250Z, "
                              "or milliseconds since the epoch)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


def format_time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
