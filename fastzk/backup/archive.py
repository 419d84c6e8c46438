"""Continuous log archiving (`fastzk.archiveDir`): a copy of every closed log segment and of
every snapshot in a second place, so that no committed txn is ever on one disk only for longer
than its segment stays open, and retention can never delete the only copy.

A pass copies what the archive lacks (temp file, fsync, rename, directory fsync: a crash leaves
the old state or a complete copy) on a thread of its own, so that copying a segment never
holds up log writes. It runs at start-up, whenever the writer closes a segment and before each
purge. A segment is copied only once it is closed (the writer never appends to it again) and
all of it is committed (the next segment starts at or below the applied zxid + 1): a follower's
uncommitted suffix may still be cut by a new leader and must not be archived. Retention asks
`archived(path)` for each file it would delete and keeps those without a complete copy, so a
failing archive (full, unmounted) makes the data dir grow rather than lose history; each
failure is logged.

The archive has the layout of a data dir's `fastzk/` directory: `fastzk restore ARCHIVE` and
`fastzk snap diff ARCHIVE@ZXID ...` read it directly.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from fastzk.runtime import snapshot as snapshots
from fastzk.runtime import wal

log = logging.getLogger("fastzk.archive")


def archived(archive_dir: Path, path: Path) -> bool:
    """Whether `path` has a complete copy in the archive (same name and size; copies appear
    under their name only once complete and synced)."""
    try:
        return (archive_dir / path.name).stat().st_size == path.stat().st_size
    except FileNotFoundError:
        return False


def copy_durably(path: Path, archive_dir: Path) -> None:
    tmp = archive_dir / (path.name + ".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    os.rename(tmp, archive_dir / path.name)
    wal.fsync_dir(archive_dir)


class Archiver:
    """The archiving thread of one server. `kick()` (any thread) asks for a pass; `active()`
    names the segment being written (None when none is open) and `applied()` the last
    committed zxid, both read when a pass starts."""

    def __init__(self, archive_dir: Path, snap_dir: Path, log_dir: Path,
                 active: Callable[[], Path | None], applied: Callable[[], int]) -> None:
        self.archive_dir = Path(archive_dir)
        self.snap_dir = snap_dir
        self.log_dir = log_dir
        self.active = active
        self.applied = applied
        self.copied = 0
        self.error: str | None = None  # the last pass's failure, for stats
        self._cond = threading.Condition()
        self._wanted = False
        self._then: list[Callable[[], None]] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fastzk-archive", daemon=True)

    def start(self) -> None:
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self.kick()

    def kick(self, then: Callable[[], None] | None = None) -> None:
        """Asks for a pass; `then` runs on the archiving thread once a pass that began after
        this call has ended (successful or not): the purge that must wait for it."""
        with self._cond:
            self._wanted = True
            if then is not None:
                self._then.append(then)
            self._cond.notify()

    def stop(self) -> None:
        """Finishes a pass in progress (not a pending one) and stops the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    def archived(self, path: Path) -> bool:
        return archived(self.archive_dir, path)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                self._wanted = False
                then, self._then = self._then, []
            try:
                self.run_pass()
            except OSError as error:
                self.error = str(error)
                log.error("archiving to %s failed: %s; old snapshots and log segments are kept "
                          "until it works again", self.archive_dir, error)
            for callback in then:
                callback()

    def run_pass(self) -> int:
        """Copies every closed, committed segment and every snapshot the archive lacks."""
        active = self.active()
        applied = self.applied()
        segments = wal.list_segments(self.log_dir)
        todo: list[Path] = []
        for index, (base, path) in enumerate(segments):
            if active is not None and (path == active or base >= _base(active)):
                break
            following = segments[index + 1][0] if index + 1 < len(segments) else None
            if following is None and active is None:
                break  # the newest segment: the next write may still cut or follow it
            if following is not None and following > applied + 1:
                break  # holds txns not known to be committed
            todo.append(path)
        todo.extend(path for _, path in snapshots.list_snapshots(self.snap_dir)[::-1])
        copied = 0
        for path in todo:
            if not self.archived(path):
                try:
                    copy_durably(path, self.archive_dir)
                except FileNotFoundError:
                    continue  # purged already: it was archived before, or is not needed
                copied += 1
        self.copied += copied
        self.error = None
        if copied:
            log.info("archived %d file(s) to %s", copied, self.archive_dir)
        return copied


def _base(path: Path) -> int:
    return int(path.name[len("log."):], 16)
