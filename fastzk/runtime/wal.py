"""The write-ahead log: segment files, the writer thread (group commit) and the log scan that
recovery runs.

Files: `<dataLogDir>/fastzk/log.<zxid of its first record, 16 hex digits>`. A segment starts
with a 32-byte header (magic `FZKLOG01`, i64 base zxid, u32 CRC32C of the first 16 bytes, zero
padding), is preallocated to `preAllocSize` and is followed by records in the format of
`fastzk/core/wal.pxi` (length, CRC32C, zxid, batch, txn). A segment is rolled when the next
write would not fit in it; every server start opens a new one (segments are never appended to
after a restart, so a segment's unwritten tail is always zeros).

Group commit: the event loop encodes each loop iteration's txns (`encode_txns`) and queues
them; the writer thread takes everything queued (up to `max_batch_bytes`), stamps each record
with the write's first zxid and computes the CRCs without the GIL (`seal_records`), writes it
all with one `os.writev` and syncs once with `os.fdatasync`, then hands the txns back to the
loop with `call_soon_threadsafe`. Meanwhile the loop goes on reading, preparing and queueing:
those txns form the next write. One write is in flight at a time, so after a crash only the
last write can be torn, and the `batch` stamp tells its records apart from earlier ones.

Rolls: the job thread (`JobThread`, the one that writes snapshots) keeps the next segment
ready as `log.spare`, preallocated and synced, so a roll on the writer thread is a cut of the
old segment, a rename and a directory fsync; the cut is synced on the job thread (its records
were synced already; zeros after them read as a clean end).

Space: a new segment is preallocated whole (`posix_fallocate`, unwritten extents that read as
zeros) when the disk has room for it; when it does not, the segment is extended in steps as
writes need them (a sixteenth of a segment, or just the write), so a nearly full disk keeps
serving until the writes themselves no longer fit. Then the write waits: nothing of it has been
written, so the writer retries every second (`/ready` says why) and goes on by itself once space
is freed. The same holds when a new segment cannot be opened at the open-file limit. Either
way the unwritten tail of a segment reads as zeros, as recovery expects.

A failed write or sync (EIO, an ENOSPC that reservation did not prevent, ...) is final: after a
failed fsync the kernel may have dropped the dirty pages and a later fsync can succeed without
them, so the writer never retries; it reports the txns of that write and of every later one as
failed and writes nothing more. `WalFaults` is the fault-injection seam the tests use to make that happen.
"""

from __future__ import annotations

import errno as errno_module
import logging
import mmap
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fastzk._core import WalScanner, crc32c, encode_txns, find_record, seal_records
from fastzk.server.prep import Txn
from fastzk.server.stats import FSYNC_BUCKETS_US, LatencyHistogram

log = logging.getLogger("fastzk.wal")

SUBDIR = "fastzk"
SEGMENT_MAGIC = b"FZKLOG01"
SEGMENT_HEADER = 32
SPARE_NAME = "log.spare"  # the next segment, preallocated ahead of the roll that takes it
RECORD_HEADER = 24
IOV_MAX = 1024
CRASH_POINT_STATUS = 86
NO_SPACE_ERRNOS = (errno_module.ENOSPC, errno_module.EDQUOT)
# what a write may wait for: disk space, or file descriptors for a new segment
WAIT_ERRNOS = (*NO_SPACE_ERRNOS, errno_module.EMFILE, errno_module.ENFILE)
WAIT_RETRY_S = 1.0  # how often a waiting write tries again


class RecoveryError(Exception):
    """The data on disk cannot be turned into a trustworthy state (corruption in the middle of
    the log, a gap, no usable snapshot): the server must not start."""


class MustWait(OSError):
    """The next write cannot start for want of disk space or of a file descriptor; nothing of
    it was written, so it may wait and be tried again (unlike a failed write or fsync)."""


def log_dir_of(base: Path) -> Path:
    return Path(base) / SUBDIR


def segment_name(base_zxid: int) -> str:
    return f"log.{base_zxid:016x}"


def list_zxid_files(directory: Path, prefix: str) -> list[tuple[int, Path]]:
    """(zxid, path) of every `<prefix><16 hex digits>` file in `directory`, oldest first
    (log segments and snapshots are both named after a zxid)."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        name = entry.name
        if name.startswith(prefix) and len(name) == len(prefix) + 16:
            try:
                found.append((int(name[len(prefix):], 16), Path(entry.path)))
            except ValueError:
                continue
    found.sort()
    return found


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(base zxid, path) of every segment file, oldest first."""
    return list_zxid_files(directory, "log.")


def segment_header(base_zxid: int) -> bytes:
    head = SEGMENT_MAGIC + struct.pack(">q", base_zxid)
    return head + struct.pack(">I", crc32c(head)) + bytes(SEGMENT_HEADER - 20)


def check_segment_header(data: Any, base_zxid: int) -> str | None:
    """None when `data` starts with a valid header for base_zxid, else what is wrong."""
    if len(data) < SEGMENT_HEADER:
        return f"file shorter than its {SEGMENT_HEADER}-byte header"
    head = bytes(data[:20])
    if head[:8] != SEGMENT_MAGIC:
        return "bad magic"
    if struct.unpack(">I", head[16:20])[0] != crc32c(head[:16]):
        return "header CRC mismatch"
    if struct.unpack(">q", head[8:16])[0] != base_zxid:
        return "header zxid does not match the file name"
    return None


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def txn_of(record: tuple) -> Txn:
    _, zxid, _, time_ms, session_id, xid, op, changes = record
    return Txn(zxid, time_ms, session_id, xid, op, changes)


# --- fault injection -----------------------------------------------------------------------------
class WalFaults:
    """Fault-injection seam of the WAL writer: `fail_next_write(errno.EIO)` makes the next
    write raise OSError(EIO) (optionally after writing `after_bytes` of it, as a short write
    followed by ENOSPC would), `fail_next_sync(errno.EIO)` the next fdatasync. Thread-safe."""

    def __init__(self, crash_points: frozenset[str] = frozenset(),
                 marker_dir: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._writes: deque[tuple[int, int]] = deque()
        self._syncs: deque[int] = deque()
        self.crash_points = crash_points
        self.marker_dir = marker_dir

    def crash_point(self, name: str) -> None:
        """A named point in the middle of a log or snapshot change: when it is armed
        (`fastzk.crashPoints`, testing only) the process dies here, as a power cut would,
        once per data directory (a marker file remembers it, so the restart goes through)."""
        if name not in self.crash_points or self.marker_dir is None:
            return
        marker = self.marker_dir / f"crashed-at-{name}"
        if marker.exists():
            return
        marker.touch()
        log.error("crash point %s: exiting now (testing only)", name)
        os._exit(CRASH_POINT_STATUS)

    def fail_next_write(self, errno: int = errno_module.EIO, after_bytes: int = 0) -> None:
        with self._lock:
            self._writes.append((errno, after_bytes))

    def fail_next_sync(self, errno: int = errno_module.EIO) -> None:
        with self._lock:
            self._syncs.append(errno)

    def take_write(self) -> tuple[int, int] | None:
        with self._lock:
            return self._writes.popleft() if self._writes else None

    def take_sync(self) -> int | None:
        with self._lock:
            return self._syncs.popleft() if self._syncs else None


# --- the writer thread -----------------------------------------------------------------------------
Job = Callable[[], Any]
JobDone = Callable[[Any, BaseException | None], None]
WalDone = Callable[[list[list[Txn]], OSError | None], None]


class WalWriter:
    """The active segment and the writer thread.

    Loop side: `submit(txns)` queues a loop iteration's txns; `on_written(groups, error)` is
    called on the loop after each write with the txn lists it carried. `submit_op(fn, done)`
    runs a change of the log files in order with the writes. Other file work (snapshots,
    purges) runs on a `JobThread`, so that no log write waits behind it. `close()` (from the
    loop, awaitable) finishes what is queued."""

    def __init__(
        self,
        directory: Path,
        loop: Any,
        on_written: WalDone,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        max_batch_bytes: int = 8 * 1024 * 1024,
        faults: WalFaults | None = None,
        unsafe_delay_s: float = 0.0,
        on_roll: Callable[[], None] | None = None,
        jobs: JobThread | None = None,
        keep_bodies: bool = False,
    ) -> None:
        self.directory = Path(directory)
        # an ensemble member keeps each txn's encoded body for the replication messages
        # (encode_txns' `keep`)
        self.keep_bodies = keep_bodies
        self.jobs = jobs  # prepares the next segment (`log.spare`) when one is given
        self.on_roll = on_roll  # called on the loop after a segment is closed (archiving)
        self.loop = loop
        self.on_written = on_written
        self.segment_bytes = segment_bytes
        self.max_batch_bytes = max_batch_bytes
        self.faults = faults or WalFaults()
        self.unsafe_delay_s = unsafe_delay_s
        self.failed: OSError | None = None  # written by the writer thread only
        self.fd: int | None = None
        self.segment: Path | None = None
        self.pos = 0
        self.allocated = 0  # bytes of the active segment reserved on disk
        # set by the writer thread, read by the loop for `ready`: why segments are not
        # preallocated whole (low space), and why a write is waiting (MustWait)
        self.low_space: str | None = None
        self.waiting: str | None = None
        self._spare_ready = False  # set by the job thread once log.spare is reserved and synced
        # statistics (read by the loop for metrics and the benchmark)
        self.writes = 0
        self.synced_bytes = 0
        self.batch_sizes: dict[int, int] = {}
        self.fsync_us = LatencyHistogram(FSYNC_BUCKETS_US)
        self._cond = threading.Condition()
        # log writes (blob, txns) and log operations (None, (fn, done)), executed in order
        self._queue: deque[tuple[bytearray | None, Any]] = deque()
        self._stopping = False
        self._closed: Any = None
        self._thread = threading.Thread(target=self._run, name="fastzk-wal", daemon=True)

    def start(self) -> None:
        # a spare left by an earlier run may be half made: the first roll makes the segment
        # itself, and asks for a new spare
        (self.directory / SPARE_NAME).unlink(missing_ok=True)
        self._thread.start()

    # --- loop side ------------------------------------------------------------------------
    def submit(self, txns: list[Txn]) -> int:
        """Queues txns for the next write; returns their encoded size."""
        blob = encode_txns(txns, self.keep_bodies)
        with self._cond:
            self._queue.append((blob, txns))
            self._cond.notify()
        return len(blob)

    def submit_op(self, op: Job, done: JobDone) -> None:
        """Queues a change of the log files (a truncation, a snapshot install) that must happen
        exactly between the writes queued before and after it; `done(result, error)` runs on the
        loop. A failure is final, as for a write."""
        with self._cond:
            self._queue.append((None, (op, done)))
            self._cond.notify()

    async def close(self) -> None:
        """Waits until everything queued is written (or failed), then stops the thread."""
        self._closed = self.loop.create_future()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        await self._closed
        self._thread.join()

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        _post(self.loop, fn, *args)

    # --- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:  # stopping with nothing left
                    break
                op = None
                items = []
                if self._queue[0][0] is None:
                    op = self._queue.popleft()[1]
                else:
                    items.append(self._queue.popleft())
                    size = len(items[0][0])
                    while (self._queue and self._queue[0][0] is not None
                           and size + len(self._queue[0][0]) <= self.max_batch_bytes):
                        item = self._queue.popleft()
                        size += len(item[0])
                        items.append(item)
            if op is not None:
                self._run_op(*op)
            else:
                self._write_items(items)
        self._close_fd()
        if self._closed is not None:
            self._post(_resolve, self._closed)

    def _run_op(self, op: Job, done: JobDone) -> None:
        result: Any = None
        error: BaseException | None = self.failed
        if error is None:
            try:
                result = op()
            except OSError as exc:
                self.failed = error = exc
                log.error("write-ahead log failed (%s); no further writes will be acknowledged",
                          exc)
            except Exception as exc:  # not the disk (a bad snapshot from a peer): reported
                error = exc
        self._post(done, result, error)

    def truncate_after(self, zxid: int) -> None:
        """Writer thread: removes every record above `zxid` (an uncommitted suffix that the
        leader's log replaces). The active segment is closed; the next write starts a new one."""
        if self.fd is not None:
            os.ftruncate(self.fd, self.pos)
            os.fsync(self.fd)
            self._close_fd()
        for base, path in reversed(list_segments(self.directory)):
            if base > zxid:
                path.unlink()
                continue
            cut = None
            with _Mapped(path) as mapped:
                scanner = WalScanner(mapped.data, SEGMENT_HEADER, base - 1 if base > 0 else 0)
                start = scanner.pos
                while scanner.skip_record():
                    if scanner.last_zxid > zxid:
                        cut = start
                        break
                    start = scanner.pos
                scanner.release()
            if cut is not None:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, cut)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            break
        fsync_dir(self.directory)
        self.faults.crash_point("log-truncated")

    def drop_all(self) -> None:
        """Writer thread: deletes every segment (a snapshot from the leader replaces them)."""
        self._close_fd()
        for _, path in list_segments(self.directory):
            path.unlink(missing_ok=True)  # a purge on the job thread may have been first
        fsync_dir(self.directory)

    def _write_items(self, items: list[tuple[bytearray, list[Txn]]]) -> None:
        groups = [txns for _, txns in items]
        if self.failed is None:
            try:
                if self.unsafe_delay_s:
                    time.sleep(self.unsafe_delay_s)  # the negative control: acked, not written
                self._write(items)
            except OSError as error:
                self.failed = error
                log.error("write-ahead log failed (%s); no further writes will be acknowledged",
                          error)
        self._post(self.on_written, groups, self.failed)

    def _write(self, items: list[tuple[bytearray, list[Txn]]]) -> None:
        first = items[0][1][0].zxid
        buffers = [blob for blob, _ in items]
        records = 0
        for blob in buffers:
            records += seal_records(blob, first)
        total = sum(len(b) for b in buffers)
        self._make_room(first, total)
        assert self.fd is not None
        fault = self.faults.take_write()
        if fault is not None:
            code, after = fault
            if after:
                joined = b"".join(buffers)[:after]
                self.pos += os.write(self.fd, joined)
            raise OSError(code, f"{os.strerror(code)} (injected)", str(self.segment))
        self._write_all(buffers, total)
        code = self.faults.take_sync()
        if code is not None:
            raise OSError(code, f"{os.strerror(code)} (injected)", str(self.segment))
        started = time.perf_counter()
        os.fdatasync(self.fd)
        self.fsync_us.add(int((time.perf_counter() - started) * 1_000_000))
        self.writes += 1
        self.synced_bytes += total
        self.batch_sizes[records] = self.batch_sizes.get(records, 0) + 1

    def _write_all(self, buffers: list[Any], total: int) -> None:
        assert self.fd is not None
        views = [memoryview(b) for b in buffers]
        while views:
            written = os.writev(self.fd, views[:IOV_MAX])
            self.pos += written
            total -= written
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]

    def _make_room(self, first: int, total: int) -> None:
        """Rolls the segment if the write does not fit in it and reserves the disk space the
        write needs. Without space (or a file descriptor) it waits: nothing is written yet, so
        retrying is safe, until the resource is back or the writer is stopped (then MustWait
        fails the write)."""
        while True:
            try:
                if self.fd is None or (
                    self.pos > SEGMENT_HEADER and self.pos + total > self.segment_bytes
                ):
                    self._roll(first)
                self._reserve(total)
            except MustWait as error:
                if self.waiting is None:
                    log.error("cannot write the write-ahead log in %s: %s. Writes wait and are "
                              "retried every %.0fs: free space on that disk (or raise the "
                              "open-file limit)", self.directory, error.strerror, WAIT_RETRY_S)
                self.waiting = f"writes are waiting: {error.strerror} ({self.directory})"
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(WAIT_RETRY_S)
                    if self._stopping:
                        raise
                continue
            if self.waiting is not None:
                log.warning("the write-ahead log can be written again: writes go on")
                self.waiting = None
            return

    def _reserve(self, total: int) -> None:
        """Makes sure the active segment has disk space reserved up to pos + total: in steps of
        a sixteenth of a segment, or exactly what the write needs when that is all there is."""
        assert self.fd is not None
        need = self.pos + total
        if need <= self.allocated:
            return
        step = min(self.segment_bytes, self.allocated + max(self.segment_bytes // 16, total))
        for target in sorted({max(step, need), need}, reverse=True):
            try:
                os.posix_fallocate(self.fd, self.allocated, target - self.allocated)
            except OSError as error:
                if error.errno not in NO_SPACE_ERRNOS:
                    raise
                continue
            self.allocated = target
            return
        raise MustWait(errno_module.ENOSPC, os.strerror(errno_module.ENOSPC), str(self.segment))

    def _preallocate(self, fd: int, path: Path) -> int:
        """Reserves a whole segment if the disk has room for it; returns the bytes reserved
        (just the header when it has not: the segment then grows in steps, see _reserve)."""
        try:
            os.posix_fallocate(fd, 0, max(self.segment_bytes, SEGMENT_HEADER))
        except OSError as error:
            if error.errno in (errno_module.EOPNOTSUPP, errno_module.EINVAL):
                return 1 << 62  # the filesystem cannot reserve: writes just go
            if error.errno not in NO_SPACE_ERRNOS:
                raise
            if self.low_space is None:
                log.warning("low disk space: cannot preallocate a %d KB log segment in %s; "
                            "segments now grow as writes need them. Free space on that disk.",
                            self.segment_bytes // 1024, self.directory)
            self.low_space = f"low disk space in {self.directory}: log segments not preallocated"
            return SEGMENT_HEADER
        if self.low_space is not None:
            log.info("log segments are preallocated again (%s has room)", path.parent)
            self.low_space = None
        return max(self.segment_bytes, SEGMENT_HEADER)

    def _roll(self, base_zxid: int) -> None:
        """Closes the active segment (synced already), cut to its records so that a closed
        segment ends at its end of file, and opens the next one: the spare the job thread
        prepared (preallocated and synced: only a rename and a directory fsync here; its
        header is made durable by the write's own fdatasync, and a crash before that leaves a
        segment with a zeroed header and no record, which recovery drops), or a new one made
        here. Raises MustWait (leaving no new file behind) when the disk has no room even for
        a header or no file descriptor is left."""
        if self.fd is not None:
            os.ftruncate(self.fd, self.pos)
            if self.jobs is not None:
                # its records are synced; only the cut is not, and a crash that loses it
                # leaves zeros after the last record, which read as a clean end
                self.jobs.run_job(partial(_sync_close, self.fd), self._closed_synced)
                self.fd = None
            else:
                os.fsync(self.fd)
                if self.on_roll is not None:
                    self._post(self.on_roll)
        self._close_fd()
        path = self.directory / segment_name(base_zxid)
        spare = self._spare_ready and self.low_space is None
        try:
            if spare:
                self._spare_ready = False
                if path.exists():  # as O_EXCL would: a segment is never replaced
                    raise FileExistsError(errno_module.EEXIST, os.strerror(errno_module.EEXIST),
                                          str(path))
                os.rename(self.directory / SPARE_NAME, path)
                fd = os.open(path, os.O_WRONLY)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as error:
            if error.errno in WAIT_ERRNOS:
                raise MustWait(error.errno, error.strerror, str(path)) from error
            raise
        try:
            header = segment_header(base_zxid)
            fault = self.faults.take_write()
            if fault is not None:
                raise OSError(fault[0], f"{os.strerror(fault[0])} (injected)", str(path))
            os.write(fd, header)
            if spare:
                allocated = max(self.segment_bytes, SEGMENT_HEADER)
            else:
                allocated = self._preallocate(fd, path)
                os.fsync(fd)
            fsync_dir(self.directory)
        except BaseException as error:
            os.close(fd)
            if isinstance(error, OSError) and error.errno in WAIT_ERRNOS:
                path.unlink(missing_ok=True)  # holds no record: nothing depends on it
                raise MustWait(error.errno, error.strerror, str(path)) from error
            raise
        self.fd = fd
        self.segment = path
        self.pos = SEGMENT_HEADER
        self.allocated = allocated
        os.lseek(fd, SEGMENT_HEADER, os.SEEK_SET)
        if self.jobs is not None and self.low_space is None:
            self.jobs.run_job(self._prepare_spare, _ignore)

    def _closed_synced(self, result: Any, error: BaseException | None) -> None:
        """Loop: a closed segment's cut is synced (or could not be: it then ends in zeros)."""
        if error is not None:
            log.warning("syncing the end of a closed log segment failed: %s", error)
        if self.on_roll is not None:
            self.on_roll()

    def _prepare_spare(self) -> None:
        """Job thread: the next segment's file, reserved whole and synced (with its directory
        entry), so that the roll that takes it does no allocation and no file fsync on the
        writer thread. Without room for it there is no spare (the roll makes the segment)."""
        path = self.directory / SPARE_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, max(self.segment_bytes, SEGMENT_HEADER))
            os.fsync(fd)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            return
        os.close(fd)
        fsync_dir(self.directory)
        self._spare_ready = True

    def _close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class JobThread:
    """The thread of file work that must not hold up log writes: snapshot chunks with their
    fsync and rename, purges of old snapshots and segments. Jobs run one at a time in the
    order queued; `done(result, error)` runs on the loop. It is a thread of its own rather
    than the WAL writer's, so a log write never waits behind a chunk, a snapshot's fsync or
    a purge's unlinks (at a fixed write rate those made the slowest writes)."""

    def __init__(self, loop: Any, name: str = "fastzk-files") -> None:
        self.loop = loop
        self._cond = threading.Condition()
        self._jobs: deque[tuple[Job, JobDone]] = deque()
        self._busy = False
        self._stopping = False
        self._closed: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_job(self, job: Job, done: JobDone) -> None:
        with self._cond:
            self._jobs.append((job, done))
            self._cond.notify_all()

    def wait_idle(self) -> None:
        """Blocks until every job queued so far has run (from another thread than the loop:
        the WAL writer before it replaces the snapshot directory's content)."""
        with self._cond:
            while self._jobs or self._busy:
                self._cond.wait()

    async def close(self) -> None:
        """Runs what is queued, then stops the thread."""
        self._closed = self.loop.create_future()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        await self._closed
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs:
                    break
                job, done = self._jobs.popleft()
                self._busy = True
            try:
                result, error = job(), None
            except BaseException as exc:  # reported to the loop, never lost
                result, error = None, exc
            _post(self.loop, done, result, error)
        if self._closed is not None:
            _post(self.loop, _resolve, self._closed)


def _post(loop: Any, fn: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _sync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ignore(result: Any, error: BaseException | None) -> None:
    pass


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


# --- reading the log back ---------------------------------------------------------------------------
@dataclass
class SegmentInfo:
    base: int
    path: Path
    size: int
    records: int = 0
    first_zxid: int = 0
    last_zxid: int = 0
    end: int = SEGMENT_HEADER  # offset just past the last valid record


@dataclass
class LogState:
    """What the verifying pass found: the valid log is every record of `segments` up to each
    one's `end`; `torn` describes a torn tail that repair() cuts off."""

    segments: list[SegmentInfo] = field(default_factory=list)
    last_zxid: int = 0
    torn: str | None = None
    drop: list[Path] = field(default_factory=list)  # trailing segments holding no valid record

    @property
    def first_zxid(self) -> int:
        for seg in self.segments:
            if seg.records:
                return seg.first_zxid
        return 0


class _Mapped:
    """Read-only view of a file's bytes (an mmap; b"" when the file is empty)."""

    def __init__(self, path: Path) -> None:
        self.size = path.stat().st_size
        self.data: Any = b""
        if self.size:
            with open(path, "rb") as handle:
                self.data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    def __enter__(self) -> _Mapped:
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.data, mmap.mmap):
            try:
                self.data.close()
            except BufferError:  # a scanner still holds it: closed when collected
                pass


def _records_after(data: Any, start: int, after_zxid: int) -> list[tuple[int, int, int]]:
    """(offset, zxid, batch) of every CRC-valid record found at or after `start`, resyncing
    byte by byte past anything that is not one."""
    found = []
    pos = start
    while True:
        pos = find_record(data, pos, after_zxid)
        if pos < 0:
            return found
        scanner = WalScanner(data, pos, 0)
        scanner.skip_record()
        found.append((pos, scanner.last_zxid, scanner.last_batch))
        after_zxid = max(after_zxid, scanner.last_zxid)
        pos = scanner.pos
        scanner.release()


def _any_records(segments: list[tuple[int, Path]]) -> bool:
    for base, path in segments:
        with _Mapped(path) as mapped:
            if find_record(mapped.data, 0, max(base - 1, 0)) >= 0:
                return True
    return False


def verify_log(directory: Path, start_zxid: int = 0) -> LogState:
    """Verifying pass over the segments that hold zxids above `start_zxid` (CRC, zxid
    continuity, segment headers), without decoding txns. A bad record followed by nothing
    valid, or only by the rest of its own write, is a torn tail (a crash during the last
    write, which was never acknowledged); anything else is corruption and raises
    RecoveryError naming the file and offset."""
    state = LogState()
    segments = list_segments(directory)
    first = 0
    for index in range(len(segments)):  # the last segment starting at or below start + 1
        if segments[index][0] <= start_zxid + 1:
            first = index
    segments = segments[first:]
    prev: tuple[int, int] | None = None  # (zxid, batch) of the last valid record
    for index, (base, path) in enumerate(segments):
        later = segments[index + 1:]
        with _Mapped(path) as mapped:
            data, size = mapped.data, mapped.size
            problem = check_segment_header(data, base)
            if problem is not None:
                if _any_records(later):
                    raise RecoveryError(f"corrupt write-ahead log: {path} offset 0: {problem}")
                # created at the crash: it never held an acknowledged record
                state.torn = f"{path}: {problem} (segment being created at a crash)"
                state.drop.extend([path] + [p for _, p in later])
                break
            if prev is not None and base != prev[0] + 1 and (base >> 32) <= (prev[0] >> 32):
                raise RecoveryError(
                    f"corrupt write-ahead log: {path} starts at zxid {base:#x} but the log "
                    f"before it ends at {prev[0]:#x} (a segment is missing or was cut short)")
            info = SegmentInfo(base, path, size)
            state.segments.append(info)
            scanner = WalScanner(data, SEGMENT_HEADER, base - 1 if base > 0 else 0)
            while scanner.skip_record():
                info.records += 1
                if info.records == 1:
                    info.first_zxid = scanner.last_zxid
                prev = (scanner.last_zxid, scanner.last_batch)
            info.last_zxid = scanner.last_zxid if info.records else 0
            info.end = bad_at = scanner.pos
            what = scanner.problem
            scanner.release()
            if what is None and bad_at >= size:
                continue  # ends at the end of the file
            later_records = _any_records(later)
            if what is None and later_records:
                continue  # a clean end; the next segment must continue it (checked above)
            if later_records:
                raise RecoveryError(
                    f"corrupt write-ahead log: {path} offset {bad_at}: {what}; later segments "
                    "hold valid records, so this is not a torn tail. Refusing to start rather "
                    "than lose or skip acknowledged txns (restore the file, or move it and "
                    "every later segment away to accept the loss).")
            # the end of the log: a torn tail unless valid records of another write follow
            after_zxid = prev[0] if prev is not None else max(base - 1, 0)
            found = _records_after(data, bad_at + 1, after_zxid)
            if found:
                batches = {batch for _, _, batch in found}
                allowed = {prev[1], prev[0] + 1} if prev is not None else batches
                if len(batches) != 1 or not batches <= allowed:
                    offset, zxid, _ = found[0]
                    raise RecoveryError(
                        f"corrupt write-ahead log: {path} offset {bad_at}: "
                        f"{what or 'zeroed record header'}; valid records of a later write "
                        f"follow (zxid {zxid:#x} at offset {offset}), so this is not a torn "
                        "tail. Refusing to start rather than lose or skip acknowledged txns.")
            if what is not None or found:
                state.torn = (f"{path} offset {bad_at}: {what or 'zeroed record header'}"
                              f" ({size - bad_at} bytes cut)")
            state.drop.extend(p for _, p in later)
            break
    state.last_zxid = prev[0] if prev is not None else 0
    return state


def read_log(state: LogState, after_zxid: int) -> Iterator[Txn]:
    """The txns above after_zxid of a verified log, in order."""
    for info in state.segments:
        if not info.records or info.last_zxid <= after_zxid:
            continue
        with _Mapped(info.path) as mapped:
            scanner = WalScanner(mapped.data, SEGMENT_HEADER, info.base - 1 if info.base > 0 else 0)
            try:
                while scanner.pos < info.end:
                    record = scanner.next_record()
                    if record is None:
                        raise RecoveryError(
                            f"write-ahead log changed while reading it: {info.path} offset "
                            f"{scanner.pos}: {scanner.problem}")
                    if record[1] > after_zxid:
                        yield txn_of(record)
            finally:
                scanner.release()


def repair(state: LogState) -> None:
    """Makes the files match the verified log: the last segment is cut just after its last
    valid record (dropping a torn tail and the preallocated zeros), trailing segments without
    a valid record are deleted. New writes go to a new segment."""
    directory: Path | None = None
    for path in state.drop:
        log.warning("removing write-ahead log segment %s (no valid record: crash at creation)",
                    path)
        path.unlink(missing_ok=True)
        directory = path.parent
    while state.segments and state.segments[-1].records == 0:
        info = state.segments.pop()
        info.path.unlink(missing_ok=True)
        directory = info.path.parent
    if state.segments:
        last = state.segments[-1]
        if last.size != last.end:
            fd = os.open(last.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, last.end)
                os.fsync(fd)
            finally:
                os.close(fd)
            last.size = last.end
            directory = last.path.parent
    if directory is not None:
        fsync_dir(directory)


def scan_records(path: Path) -> Iterator[tuple[Any, ...]]:
    """Every record of one segment file for the offline tools, then one final
    ("end", offset, problem) tuple (problem None for a clean end)."""
    name = path.name
    base = int(name[4:], 16) if name.startswith("log.") and len(name) == 20 else 0
    with _Mapped(path) as mapped:
        problem = check_segment_header(mapped.data, base)
        if problem is not None:
            yield ("end", 0, problem)
            return
        scanner = WalScanner(mapped.data, SEGMENT_HEADER, base - 1 if base > 0 else 0)
        try:
            while True:
                record = scanner.next_record()
                if record is None:
                    break
                yield record
            yield ("end", scanner.pos, scanner.problem)
        finally:
            scanner.release()
