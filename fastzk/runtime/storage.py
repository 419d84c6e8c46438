"""Durability for one server: recovery at start-up, the WAL writer, fuzzy snapshots and
retention. The runtime's only view of the disk.

Start-up (`Storage.open`):
0. a dataDir that holds Apache ZooKeeper's files and no fastzk data yet is imported first
   (`fastzk.zkfiles.takeover.import_on_start`);
1. delete half-written snapshots (`*.tmp`);
2. take the newest snapshot that verifies (every block's CRC, the end block) and whose needs
   the log meets (the log continues from its start zxid and reaches its end zxid); a corrupt
   newest snapshot falls back to an older one, with a warning;
3. verify the log from that snapshot on (`wal.verify_log`): a torn tail is cut off, corruption
   anywhere else stops the server (`RecoveryError` names the file and offset);
4. load the snapshot into the node's tree and replay the log after its start zxid
   (`Node.recover`), restoring sessions (with fresh deadlines) and their ephemerals;
5. start the writer thread (log writes only) and the job thread (snapshots, purges); new
   writes go to a new segment.

Afterwards `submit(txns)` queues each loop iteration's txns for the writer thread, which calls
back on the loop once they are durable (`on_durable(groups)`, one txn list per submit, in
order: the host reports them to the replica, which commits once a quorum has them) or failed
(`on_failure`). `truncate_after` and `install_snapshot` change the log files in the same order
as the writes around them. `save_hard_state` writes the epoch file (epoch and vote), which must
be durable before a vote or a new epoch is acted on. With `fastzk.unsafeAckBeforeSync` (testing only) txns are
committed at once and written `fastzk.unsafeWriteDelayMs` later: a crash loses acknowledged
writes, which is what the crash test's negative control must detect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastzk.backup.archive import Archiver
from fastzk.runtime import snapshot as snapshots
from fastzk.runtime import wal
from fastzk.server.prep import BARRIER, Txn

if TYPE_CHECKING:
    from fastzk.config import Config
    from fastzk.node import Node

log = logging.getLogger("fastzk.storage")


@dataclass
class RecoveryReport:
    snapshot: Path | None
    snapshot_zxid: int
    replayed: int
    last_zxid: int
    sessions: int
    nodes: int
    torn: str | None
    seconds: float
    skipped_snapshots: list[str]


EPOCH_FILE = "epoch"


def load_hard_state(directory: Path) -> tuple[int, int]:
    """(epoch, voted_for) from the epoch file; (0, 0) when there is none yet."""
    path = directory / EPOCH_FILE
    try:
        data = json.loads(path.read_text())
        return int(data["epoch"]), int(data["voted_for"])
    except FileNotFoundError:
        return 0, 0
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise wal.RecoveryError(f"{path}: unreadable epoch file ({error}); it holds this "
                                "server's promises to its peers, so it cannot be guessed") from None


def save_hard_state(directory: Path, epoch: int, voted_for: int) -> None:
    """temp + fsync + rename + directory fsync: a crash leaves the old or the new file."""
    path = directory / EPOCH_FILE
    tmp = directory / (EPOCH_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, json.dumps({"epoch": epoch, "voted_for": voted_for}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    wal.fsync_dir(directory)


def recover(node: Node, snap_dir: Path, log_dir: Path) -> RecoveryReport:
    """Steps 1-4 of start-up (see the module docstring) on a fresh node."""
    started = time.monotonic()
    for path in snapshots.remove_temporary(snap_dir):
        log.info("removed unfinished snapshot %s", path)
    skipped: list[str] = []
    chosen: snapshots.SnapshotInfo | None = None
    state: wal.LogState | None = None
    for zxid, path in snapshots.list_snapshots(snap_dir):
        try:
            info = snapshots.verify(path)
        except (snapshots.SnapshotError, OSError) as error:
            skipped.append(f"{path}: {error}")
            log.warning("snapshot %s is unusable (%s); trying an older one", path, error)
            continue
        if info.zxid != zxid:
            skipped.append(f"{path}: its header says zxid {info.zxid:#x}")
            continue
        candidate = wal.verify_log(log_dir, info.zxid)
        first = candidate.first_zxid
        if first and first > info.zxid + 1 and not _first_follows(candidate, info.zxid):
            raise wal.RecoveryError(
                f"snapshot {path} needs the log from zxid {info.zxid + 1:#x} but it starts at "
                f"{first:#x} (segments were removed)")
        reach = max(candidate.last_zxid, info.zxid)
        if reach < info.end_zxid:
            skipped.append(f"{path}: needs the log up to {info.end_zxid:#x}, it ends at {reach:#x}")
            log.warning("snapshot %s needs the log up to zxid %#x but it ends at %#x; trying an "
                        "older one", path, info.end_zxid, reach)
            continue
        chosen, state = info, candidate
        break
    if chosen is None:
        state = wal.verify_log(log_dir, 0)
        first = state.first_zxid
        if first > 1 and not _first_follows(state, 0):
            raise wal.RecoveryError(
                f"no usable snapshot in {snap_dir} and the log in {log_dir} starts at zxid "
                f"{first:#x}: the txns before it are gone"
                + ("".join(f"\n  skipped {s}" for s in skipped)))
        if skipped and state.segments:
            log.warning("no usable snapshot; rebuilding from the whole log")
    assert state is not None
    if state.torn is not None:
        log.warning("write-ahead log: torn tail cut off at %s", state.torn)
    wal.repair(state)
    base_zxid = 0
    sessions: list[tuple[int, int, bytes]] = []
    if chosen is not None:
        snapshots.load(chosen.path, node.tree)
        base_zxid = chosen.zxid
        sessions = chosen.sessions
    epoch, voted_for = load_hard_state(snap_dir)
    try:
        replayed = node.recover(base_zxid, sessions, wal.read_log(state, base_zxid),
                                fuzzy_until=chosen.end_zxid if chosen is not None else 0,
                                epoch=epoch, voted_for=voted_for)
    except ValueError as error:
        raise wal.RecoveryError(
            f"the log in {log_dir} does not replay over "
            f"{chosen.path if chosen is not None else 'an empty tree'}: {error}") from None
    return RecoveryReport(
        snapshot=chosen.path if chosen is not None else None,
        snapshot_zxid=base_zxid,
        replayed=replayed,
        last_zxid=node.replica.log.last,
        sessions=len(node.sessions),
        nodes=len(node.tree),
        torn=state.torn,
        seconds=time.monotonic() - started,
        skipped_snapshots=skipped,
    )


def _first_follows(state: wal.LogState, zxid: int) -> bool:
    """Whether a log's first txn comes right after `zxid` although its own zxid is not
    zxid + 1: the barrier opening an epoch records the zxid before it (0 for the first entry of
    all history), so a snapshot at the last txn of an epoch (one a follower installed, or an
    imported ZooKeeper snapshot) is followed by a log that starts at the next epoch's
    barrier."""
    for txn in wal.read_log(state, 0):
        return txn.changes[:1] == [(BARRIER, zxid)]
    return True


def ensure_dir(directory: Path) -> None:
    """Creates `directory` (and missing parents) durably: each new entry's parent directory
    is fsynced, and so are the parents of `directory` and of its parent, which may have just
    been created by someone else (the data directory at start-up)."""
    missing = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        wal.fsync_dir(path.parent)
    wal.fsync_dir(directory.parent)
    wal.fsync_dir(directory.parent.parent)


class Storage:
    def __init__(
        self,
        cfg: Config,
        node: Node,
        loop: Any,
        on_durable: Callable[[list[list[Txn]]], None],
        on_failure: Callable[[list[Txn], OSError], None],
        rng: random.Random,
        faults: wal.WalFaults | None = None,
    ) -> None:
        self.cfg = cfg
        self.node = node
        self.loop = loop
        self.on_durable = on_durable
        self.on_failure = on_failure
        self.faults = faults or wal.WalFaults(cfg.crash_points, cfg.data_dir)
        self.snap_dir = wal.log_dir_of(cfg.data_dir)
        self.log_dir = wal.log_dir_of(cfg.data_log_dir or cfg.data_dir)
        self.unsafe = cfg.unsafe_ack_before_sync
        self.writer: wal.WalWriter | None = None
        self.jobs = wal.JobThread(loop)
        self.failed: OSError | None = None
        self.snapshot: snapshots.SnapshotTask | None = None
        self._snapshot_waiter: asyncio.Future[None] | None = None
        self.snapshots_taken = 0
        self.last_snapshot: Path | None = None
        self._rng = rng  # the jitter of snapshot thresholds
        self.sizes = DirSizes(self.snap_dir, self.log_dir)
        self._since_txns = 0
        self._since_bytes = 0
        self._snap_txns = 0
        self._snap_bytes = 0
        self._roll_thresholds()
        self.archiver: Archiver | None = None  # fastzk.archiveDir (backup/archive.py)

    # --- start-up and shutdown -------------------------------------------------------------
    def open(self, adopt: Callable[[Config, Path, Path], object] | None = None) -> RecoveryReport:
        """Recovers (steps 0-5 above). `adopt(cfg, snap_dir, log_dir)` runs first, with the
        directories in place: `fastzk serve` passes the import of Apache ZooKeeper's files
        (zkfiles.takeover.import_on_start), which in turn uses this module's recovery."""
        for directory in (self.snap_dir, self.log_dir):
            ensure_dir(directory)
        if adopt is not None:
            adopt(self.cfg, self.snap_dir, self.log_dir)
        report = recover(self.node, self.snap_dir, self.log_dir)
        self._since_txns = report.replayed
        self.writer = wal.WalWriter(
            self.log_dir,
            self.loop,
            self._written,
            segment_bytes=self.cfg.prealloc_kb * 1024,
            max_batch_bytes=self.cfg.wal_max_batch_bytes,
            faults=self.faults,
            unsafe_delay_s=self.cfg.unsafe_write_delay_ms / 1000 if self.unsafe else 0.0,
            on_roll=self._segment_closed,
            jobs=self.jobs,
            keep_bodies=self.cfg.ensemble,
        )
        self.writer.start()
        self.jobs.start()
        if self.cfg.archive_dir is not None:
            writer = self.writer
            self.archiver = Archiver(
                self.cfg.archive_dir, self.snap_dir, self.log_dir,
                lambda: writer.segment if writer.fd is not None else None,
                lambda: self.node.applied_zxid)
            self.archiver.start()
        return report

    def _segment_closed(self) -> None:
        if self.archiver is not None:
            self.archiver.kick()

    async def close(self) -> None:
        """Writes what is queued, stops the writer thread, drops an unfinished snapshot."""
        task = self.snapshot
        if task is not None:
            task.abort()
        writer = self.writer
        if writer is None:
            return
        await writer.close()
        await self.jobs.close()
        if self.archiver is not None:
            self.archiver.stop()
        log.info("write-ahead log stats: %s", json.dumps({
            "writes": writer.writes, "bytes": writer.synced_bytes,
            "txns_per_write": {str(k): v for k, v in sorted(writer.batch_sizes.items())}}))
        if task is not None and not task.finished:
            task._discard()  # the job thread is gone: safe from the loop
        self.snapshot = None

    # --- the write path --------------------------------------------------------------------
    def submit(self, txns: list[Txn]) -> None:
        """Queues one loop iteration's txns; on_durable/on_failure follow on the loop."""
        if self.failed is not None:
            self.on_failure(txns, self.failed)
            return
        assert self.writer is not None
        self._since_bytes += self.writer.submit(txns)
        self._since_txns += len(txns)
        if self.unsafe:
            self.on_durable([txns])  # acknowledged before it is written: testing only
            self._maybe_snapshot()

    def _written(self, groups: list[list[Txn]], error: OSError | None) -> None:
        if error is not None:
            if self.failed is None:
                self.failed = error
                log.error("write-ahead log failed: %s. Writes are no longer acknowledged; "
                          "their connections are closed. Reads go on. Restart the server once "
                          "the disk is fixed.", error)
            if not self.unsafe:
                self.on_failure([txn for group in groups for txn in group], error)
            return
        if not self.unsafe:
            self.on_durable(groups)
            self._maybe_snapshot()

    def save_hard_state(self, epoch: int, voted_for: int) -> None:
        save_hard_state(self.snap_dir, epoch, voted_for)

    def truncate_after(self, zxid: int) -> None:
        assert self.writer is not None
        writer = self.writer
        self.writer.submit_op(lambda: writer.truncate_after(zxid), self._op_done)

    def install_snapshot(self, zxid: int, data: bytes,
                         done: Callable[[Path | None, BaseException | None], None]) -> None:
        """Makes a snapshot received from the leader this server's state on disk: written and
        synced under its final name, then every log segment and older snapshot removed (all
        of it is covered by the leader's state or was never committed). `done(path, error)`."""
        assert self.writer is not None
        writer = self.writer
        if self.snapshot is not None:
            self.snapshot.abort()
        snap_dir = self.snap_dir
        crash_point = self.faults.crash_point
        jobs = self.jobs

        def install() -> Path:
            jobs.wait_idle()  # the aborted snapshot's last file work, a purge: done first
            path = snap_dir / snapshots.snapshot_name(zxid)
            tmp = snap_dir / (path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            snapshots.verify(tmp)
            crash_point("snapshot-written")
            os.rename(tmp, path)
            wal.fsync_dir(snap_dir)
            crash_point("snapshot-renamed")
            writer.drop_all()
            crash_point("log-dropped")
            for _, old in snapshots.list_snapshots(snap_dir):
                if old != path:
                    old.unlink()
            wal.fsync_dir(snap_dir)
            return path

        self.last_snapshot = None
        writer.submit_op(install, done)

    def _op_done(self, result: Any, error: BaseException | None) -> None:
        if error is not None and self.failed is None and isinstance(error, OSError):
            self.failed = error
            log.error("write-ahead log failed: %s", error)
            self.on_failure([], error)

    # --- snapshots ---------------------------------------------------------------------------
    def _roll_thresholds(self) -> None:
        """ZooKeeper's jitter: snapshot after snapCount/2 + rand(snapCount/2) txns (or half the
        size limit plus a random share), so that servers do not snapshot in step."""
        count = self.cfg.snap_count
        self._snap_txns = count // 2 + self._rng.randrange(max(1, count // 2))
        limit = self.cfg.snap_size_limit_kb * 1024
        self._snap_bytes = (limit // 2 + self._rng.randrange(max(1, limit // 2))) if limit > 0 else 0

    def _maybe_snapshot(self) -> None:
        if self.snapshot is not None or self.failed is not None:
            return
        if self._since_txns > self._snap_txns or (
            self._snap_bytes and self._since_bytes > self._snap_bytes
        ):
            self.take_snapshot()

    def take_snapshot(self) -> snapshots.SnapshotTask | None:
        """Starts a fuzzy snapshot now (None if one is running or nothing changed)."""
        if self.snapshot is not None or self.writer is None:
            return None
        if self.node.replica.installing:
            return None  # the leader's snapshot is about to replace this state
        if self.last_snapshot is not None and self.last_snapshot.name == snapshots.snapshot_name(
            self.node.applied_zxid
        ):
            return None
        self._since_txns = 0
        self._since_bytes = 0
        self._roll_thresholds()
        task = snapshots.SnapshotTask(self.snap_dir, self.node, self.jobs,
                                      self.cfg.snapshot_chunk_nodes, self._snapshot_done)
        self.snapshot = task
        task.start()
        return task

    async def snapshot_at_start(self) -> None:
        """Writes a snapshot of the recovered state and waits for it, as ZooKeeper does at
        every start (ZooKeeperServer.loadData) before it serves. Its next start loads that
        snapshot, which refills each child set in listing order (a set that shrank comes back
        smaller), so child order after a second restart depends on it: taking one here, before
        clients can write, keeps fastzk's order after restarts equal to ZooKeeper's. A failure
        is logged (by _snapshot_done) and start-up goes on, as after any failed snapshot."""
        task = self.take_snapshot()
        if task is None:
            return
        self._snapshot_waiter = self.loop.create_future()
        await self._snapshot_waiter

    def _snapshot_done(self, task: snapshots.SnapshotTask, error: BaseException | None) -> None:
        self.snapshot = None
        waiter, self._snapshot_waiter = self._snapshot_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if error is not None:
            if not task.aborted:
                log.error("snapshot %s failed: %s", task.path, error)
            return
        self.snapshots_taken += 1
        self.last_snapshot = task.path
        log.info("snapshot %s: %d nodes, %d bytes, %.3fs, fuzzy up to zxid %#x", task.path.name,
                 task.cursor.nodes, task.bytes, time.monotonic() - task.started,
                 self.node.applied_zxid)
        retain = self.cfg.snap_retain_count
        archiver = self.archiver
        jobs = self.jobs
        if archiver is None:
            jobs.run_job(lambda: snapshots.purge(self.snap_dir, self.log_dir, retain),
                         self._purged)
            return
        # archive first (on the archiving thread), then purge only what has a copy
        archiver.kick(lambda: jobs.run_job(
            lambda: snapshots.purge(self.snap_dir, self.log_dir, retain, archiver.archived),
            self._purged))

    def _purged(self, result: Any, error: BaseException | None) -> None:
        if error is not None:
            log.warning("purging old snapshots and log segments failed: %s", error)
        elif result and (result[0] or result[1]):
            log.info("purged %d snapshot(s) and %d log segment(s)", len(result[0]), len(result[1]))

    # --- introspection -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        writer = self.writer
        return {
            "log_dir": str(self.log_dir),
            "snap_dir": str(self.snap_dir),
            "failed": None if self.failed is None else str(self.failed),
            "unsafe_ack_before_sync": self.unsafe,
            "writes": writer.writes if writer else 0,
            "synced_bytes": writer.synced_bytes if writer else 0,
            "batch_sizes": dict(writer.batch_sizes) if writer else {},
            "snapshots_taken": self.snapshots_taken,
            "snapshot_running": self.snapshot is not None,
            "segments": len(wal.list_segments(self.log_dir)),
            "archived_files": self.archiver.copied if self.archiver else 0,
            "archive_error": self.archiver.error if self.archiver else None,
        }



class DirSizes:
    """Bytes in the snapshot and log directories, as `conf`, `dirs` and `srvr` report them
    (ZooKeeper sums its snapDir and dataLogDir, one directory when there is no dataLogDir).
    Walking a directory is file-system work the event loop must not wait for: `refresh` does it
    on a worker thread (the server asks once a tick) and the commands read the last result."""

    def __init__(self, snap_dir: Path, log_dir: Path) -> None:
        self.snap_dir = snap_dir
        self.log_dir = log_dir
        self.snap_bytes = 0
        self.log_bytes = 0
        self._running = False

    def refresh(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._running:
            return
        self._running = True
        loop.run_in_executor(None, self._measure).add_done_callback(self._measured)

    def _measure(self) -> tuple[int, int]:
        snap = _dir_bytes(self.snap_dir)
        return snap, snap if self.log_dir == self.snap_dir else _dir_bytes(self.log_dir)

    def _measured(self, future: asyncio.Future[tuple[int, int]]) -> None:
        self._running = False
        if not future.cancelled() and future.exception() is None:
            self.snap_bytes, self.log_bytes = future.result()


def _dir_bytes(directory: Path) -> int:
    total = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:  # removed meanwhile (a purged segment)
            pass
    return total
