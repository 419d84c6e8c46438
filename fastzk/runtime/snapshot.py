"""Fuzzy snapshots: written a chunk at a time while writes go on, checked on load, retained to
a count.

File: `<dataDir>/fastzk/snapshot.<start zxid, 16 hex digits>`, a sequence of blocks after the
8-byte magic `FZKSNAP1`; each block is u32 length, u32 CRC32C of the payload, payload, and the
payload's first byte says what it is:
  b"H" + value((format, start_zxid, time_ms, sessions))   sessions: [(id, timeout, passwd)]
  b"C" + the records of up to `snapshotChunkNodes` nodes (DataTree.SnapshotCursor.next_chunk)
  b"E" + value((nodes, chunks, end_zxid))
A snapshot is valid only when every block checks, the "E" block's counts match and nothing
follows it. It is written to `<name>.tmp`, fsynced, renamed into place and the directory
fsynced, so a crash leaves either a complete snapshot or a .tmp file that start-up deletes.

Fuzziness: the walk starts at `start_zxid` (the applied zxid when it began, when the session
table is copied whole) and ends at `end_zxid`; nodes are captured at different moments in
between. Loading it and replaying the log from start_zxid + 1 (txns are idempotent) gives the
exact state, provided the log reaches at least end_zxid.

The event loop serializes one chunk per callback (the cursor copies a node's child names when it
visits the node, so no walk over the whole tree happens at once); a thread of its own
(`wal.JobThread`, not the WAL writer, so log writes never wait for it) writes the chunks and
does the final fsync + rename.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from fastzk._core import DataTree, crc32c, decode_value, encode_value
from fastzk.runtime.wal import fsync_dir, list_segments, list_zxid_files

if TYPE_CHECKING:
    from fastzk.node import Node
    from fastzk.runtime.wal import JobThread

log = logging.getLogger("fastzk.snapshot")

SNAP_MAGIC = b"FZKSNAP1"
FORMAT = 1
BLOCK_HEADER = struct.Struct(">II")
WRITEBACK_EVERY = 8 * 1024 * 1024  # start writeback of a snapshot's dirty pages this often


class SnapshotError(Exception):
    """A snapshot file that is incomplete or corrupt (the message names the offset)."""


def snapshot_name(zxid: int) -> str:
    return f"snapshot.{zxid:016x}"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(start zxid, path) of every complete-named snapshot, newest first."""
    return list_zxid_files(directory, "snapshot.")[::-1]


def remove_temporary(directory: Path) -> list[Path]:
    """Deletes snapshots a crash left half-written."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith("snapshot.") and entry.name.endswith(".tmp"):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def block(payload: bytes) -> bytes:
    return BLOCK_HEADER.pack(len(payload), crc32c(payload)) + payload


@dataclass
class SnapshotInfo:
    path: Path
    zxid: int
    end_zxid: int = 0
    time_ms: int = 0
    sessions: list[tuple[int, int, bytes]] = field(default_factory=list)
    nodes: int = 0
    chunks: int = 0
    size: int = 0


def _blocks(path: Path | str, handle: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    """(offset, payload) of each block, CRC-checked; raises SnapshotError naming `path`."""
    if handle.read(8) != SNAP_MAGIC:
        raise SnapshotError(f"{path}: not a fastzk snapshot (bad magic)")
    offset = 8
    while offset < size:
        head = handle.read(BLOCK_HEADER.size)
        if len(head) < BLOCK_HEADER.size:
            raise SnapshotError(f"{path} offset {offset}: truncated block header")
        length, crc = BLOCK_HEADER.unpack(head)
        if length == 0 or length > size - offset - BLOCK_HEADER.size:
            raise SnapshotError(
                f"{path} offset {offset}: block length {length} beyond the end of the file")
        payload = handle.read(length)
        if crc32c(payload) != crc:
            raise SnapshotError(f"{path} offset {offset}: block CRC mismatch")
        yield offset, payload
        offset += BLOCK_HEADER.size + length


def _walk(path: Path, on_chunk: Callable[[bytes], None] | None) -> SnapshotInfo:
    with open(path, "rb") as handle:
        return _walk_stream(path, handle, os.fstat(handle.fileno()).st_size, on_chunk)


def _walk_stream(path: Path, handle: BinaryIO, size: int,
                 on_chunk: Callable[[bytes], None] | None) -> SnapshotInfo:
    info = SnapshotInfo(path, 0)
    info.size = size
    header_seen = end_seen = False
    for offset, payload in _blocks(path, handle, size):
        kind = payload[:1]
        if end_seen:
            raise SnapshotError(f"{path} offset {offset}: data after the end block")
        try:
            if kind == b"H" and not header_seen:
                fmt, info.zxid, info.time_ms, sessions = decode_value(payload[1:])
                if fmt != FORMAT:
                    raise SnapshotError(f"{path}: unknown snapshot format {fmt}")
                info.sessions = [(int(s), int(t), bytes(p)) for s, t, p in sessions]
                header_seen = True
            elif kind == b"C" and header_seen:
                info.chunks += 1
                if on_chunk is not None:
                    on_chunk(payload[1:])
            elif kind == b"E" and header_seen:
                nodes, chunks, info.end_zxid = decode_value(payload[1:])
                if chunks != info.chunks:
                    raise SnapshotError(f"{path}: {info.chunks} chunks, the end block says {chunks}")
                info.nodes = nodes
                end_seen = True
            else:
                raise SnapshotError(f"{path} offset {offset}: unexpected block {kind!r}")
        except (ValueError, TypeError) as error:
            raise SnapshotError(f"{path} offset {offset}: {error}") from None
    if not end_seen:
        raise SnapshotError(f"{path}: incomplete (no end block)")
    return info


def verify(path: Path) -> SnapshotInfo:
    """Checks every block of a snapshot without loading it."""
    return _walk(path, None)


def load(path: Path, tree: DataTree) -> SnapshotInfo:
    """Loads a snapshot (verified first: `verify`) into a fresh tree."""
    with open(path, "rb") as handle:
        return _load_stream(path, handle, os.fstat(handle.fileno()).st_size, tree)


def load_bytes(data: bytes, name: str, tree: DataTree) -> SnapshotInfo:
    """Verifies and loads a snapshot held in memory (a simulated disk's) into a fresh tree;
    raises SnapshotError naming `name`."""
    return _load_stream(Path(name), io.BytesIO(data), len(data), tree)


def _load_stream(path: Path, handle: BinaryIO, size: int, tree: DataTree) -> SnapshotInfo:
    acls: dict[int, Any] = {}
    count = 0

    def chunk(data: bytes) -> None:
        nonlocal count
        count += tree.load_snapshot_chunk(data, acls)

    info = _walk_stream(path, handle, size, chunk)
    if count != info.nodes:
        raise SnapshotError(f"{path}: {count} nodes read, the end block says {info.nodes}")
    return info


def summary(path: Path) -> tuple[SnapshotInfo, DataTree]:
    """Loads a snapshot into a tree of its own (offline tools)."""
    tree = DataTree()
    return load(path, tree), tree


class SnapshotTask:
    """One fuzzy snapshot in progress. Runs on the loop, one chunk per callback; the file work
    runs as jobs on the storage's job thread."""

    def __init__(self, directory: Path, node: Node, jobs: JobThread, chunk_nodes: int,
                 on_done: Callable[[SnapshotTask, BaseException | None], None]) -> None:
        self.directory = directory
        self.node = node
        self.jobs = jobs
        self.chunk_nodes = chunk_nodes
        self.on_done = on_done
        self.zxid = node.applied_zxid
        self.started = time.monotonic()
        self.path = directory / snapshot_name(self.zxid)
        self.tmp = directory / (snapshot_name(self.zxid) + ".tmp")
        self.cursor = node.tree.snapshot_cursor()
        self.chunks = 0
        self.bytes = 0
        self.fd: int | None = None
        self.aborted = False
        self.finished = False
        self._synced_to = 0
        self._header = header(node)

    def start(self) -> None:
        self.jobs.run_job(partial(self._open, self._header), self._step)

    def abort(self) -> None:
        self.aborted = True

    # --- loop side ---------------------------------------------------------------------------
    def _step(self, result: Any, error: BaseException | None) -> None:
        if error is not None or self.aborted:
            self._fail(error)
            return
        chunk = self.cursor.next_chunk(self.chunk_nodes)
        if chunk:
            self.chunks += 1
            self.jobs.run_job(partial(self._write, b"C" + chunk), self._step)
            return
        end = b"E" + encode_value((self.cursor.nodes, self.chunks, self.node.applied_zxid))
        self.jobs.run_job(partial(self._finish, end), self._finished)

    def _finished(self, result: Any, error: BaseException | None) -> None:
        if error is not None:
            self._fail(error)
            return
        self.finished = True
        self.on_done(self, None)

    def _fail(self, error: BaseException | None) -> None:
        self.jobs.run_job(self._discard, _ignore)
        self.on_done(self, error or RuntimeError("aborted"))

    # --- job thread --------------------------------------------------------------------------
    def _open(self, header: bytes) -> None:
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._write_raw(header)

    def _write(self, payload: bytes) -> None:
        self._write_raw(block(payload))
        if self.bytes - self._synced_to >= WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
            # start writeback of what is written so far, so the final fsync is short: the
            # log's fdatasync may wait for the same journal commit
            assert self.fd is not None
            os.posix_fadvise(self.fd, self._synced_to, self.bytes - self._synced_to,
                             os.POSIX_FADV_DONTNEED)
            self._synced_to = self.bytes

    def _write_raw(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.bytes += len(data)

    def _finish(self, end: bytes) -> None:
        self._write_raw(block(end))
        assert self.fd is not None
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        os.rename(self.tmp, self.path)
        fsync_dir(self.directory)

    def _discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.tmp.unlink(missing_ok=True)


def header(node: Node) -> bytes:
    """The magic and header block: the applied zxid and the whole session table, now."""
    sessions = [(s.session_id, s.timeout, s.passwd) for s in node.sessions.sessions.values()]
    return SNAP_MAGIC + block(
        b"H" + encode_value((FORMAT, node.applied_zxid, node.now_ms, sessions)))


def serialize(node: Node, chunk_nodes: int, start: bytes | None = None) -> bytes:
    """The node's applied state as one snapshot file, all at once, for a follower too far
    behind the leader's log (not fuzzy: start and end zxid are equal). With `start`, a
    `header(node)` taken earlier, it is a fuzzy snapshot begun then and ended now (the
    simulator's way to take one)."""
    parts = [start if start is not None else header(node)]
    cursor = node.tree.snapshot_cursor()
    chunks = 0
    while True:
        chunk = cursor.next_chunk(chunk_nodes)
        if not chunk:
            break
        parts.append(block(b"C" + chunk))
        chunks += 1
    parts.append(block(b"E" + encode_value((cursor.nodes, chunks, node.applied_zxid))))
    return b"".join(parts)


def _ignore(result: Any, error: BaseException | None) -> None:
    pass


def purge(snap_dir: Path, log_dir: Path, retain: int,
          may_remove: Callable[[Path], bool] | None = None) -> tuple[list[Path], list[Path]]:
    """Keeps the newest `retain` snapshots and the log segments they need (the last segment
    starting at or below the oldest kept snapshot's zxid + 1, and every later one); deletes
    the rest, except files for which `may_remove` says no (not archived yet: backup/archive.py).
    Returns (snapshots removed, segments removed)."""
    snapshots = list_snapshots(snap_dir)
    if len(snapshots) <= retain or retain < 1:
        return [], []
    removed_snaps = [path for _, path in snapshots[retain:]]
    oldest = snapshots[retain - 1][0]
    segments = list_segments(log_dir)
    keep_from = 0
    for index, (base, _) in enumerate(segments):
        if base <= oldest + 1:
            keep_from = index
    removed_segs = [path for _, path in segments[:keep_from]]
    if may_remove is not None:
        removed_snaps = [path for path in removed_snaps if may_remove(path)]
        removed_segs = [path for path in removed_segs if may_remove(path)]
    for path in removed_snaps + removed_segs:
        path.unlink(missing_ok=True)
    if removed_snaps:
        fsync_dir(snap_dir)
    if removed_segs:
        fsync_dir(log_dir)
    return removed_snaps, removed_segs
