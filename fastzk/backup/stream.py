"""`GET /backup[?since=ZXID]` on the admin endpoint: a consistent backup of a running server.

Full backup: the log segments that may be needed are opened first (an open file survives a
purge, so retention running meanwhile cannot take them away); then a fuzzy snapshot is walked
and streamed a chunk at a time from the event loop (`snapshotChunkNodes` nodes per step, a
yield to the loop after each and a wait whenever the socket's buffer is full), exactly as a
snapshot to disk is taken, so writes go on and the server holds at most a chunk or two of it
in memory. Its header records the applied zxid when the walk began (start), its end block the
applied zxid when it ended (end). Then the committed log is streamed from the segment holding
start + 1 up to `last`, the applied zxid once the snapshot is done (>= end): replaying it over
the fuzzy snapshot gives the exact state at `last` (runtime/snapshot.py). Only committed txns
are shipped: a follower's log may hold an uncommitted suffix that a new leader would cut, so
each segment is cut at the record boundary after `last`.

Incremental (`since` = a previous backup's last zxid): only the log from the segment holding
since + 1 up to the applied zxid now; refused when that segment was purged already.

The format is in backup/format.py. Errors after the response has begun end the stream with an
"X" frame; the client then keeps no manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mmap
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from fastzk._core import WalScanner, encode_value
from fastzk.backup import format as fmt
from fastzk.runtime import snapshot as snapshots
from fastzk.runtime import wal

if TYPE_CHECKING:
    from fastzk.runtime.view import ServerView

log = logging.getLogger("fastzk.backup")
DURABLE_WAIT_S = 10.0  # how long the log may take to reach the applied zxid on this disk
HIGH_WATER = 4 * fmt.CHUNK  # unsent bytes at which the stream waits for the socket


@dataclass
class _Segment:
    base: int
    handle: BinaryIO


def parse_since(query: str) -> int | None:
    """The `since` parameter of the query string (decimal or 0x hex), None when absent;
    ValueError when malformed."""
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if name == "since":
            return int(value, 0)
    return None


class BackupStream:
    """One backup response in progress on an admin connection. The protocol forwards its
    flow control (`pause`/`resume`) and `lost` to it."""

    def __init__(self, server: ServerView, transport: asyncio.WriteTransport,
                 since: int | None) -> None:
        self.server = server
        self.transport = transport
        self.since = since
        self.storage = server.storage
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = False
        self.segments: list[_Segment] = []
        self.files: list[dict[str, Any]] = []
        self._hash: Any = None
        self._size = 0
        # pinned now, in the same loop iteration as the snapshot's start zxid is read
        start = since if since is not None else server.node.applied_zxid
        self._pin(start)
        if since is not None and since < server.node.applied_zxid and (
                not self.segments or self.segments[0].base > since + 1):
            self.close_files()
            raise fmt.BackupError(
                f"the log after zxid {since:#x} is no longer on this server (purged); take a "
                "full backup")

    # --- flow control (from the protocol) --------------------------------------------------
    def pause(self) -> None:
        self.writable.clear()

    def resume(self) -> None:
        self.writable.set()

    def lost(self) -> None:
        self.closed = True
        self.writable.set()

    # --- the response ------------------------------------------------------------------------
    async def run(self) -> None:
        self.transport.set_write_buffer_limits(high=HIGH_WATER)
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Connection: close\r\n\r\n" + fmt.MAGIC)
        started = time.monotonic()
        try:
            manifest = await self._body()
            await self._send(fmt.frame(fmt.END, fmt_json(manifest)))
            log.info("backup streamed: %s through zxid %#x, %d file(s), %.3fs",
                     manifest["kind"], manifest["last_zxid"], len(self.files),
                     time.monotonic() - started)
        except ConnectionError:
            log.warning("backup stream: the client went away")
        except (fmt.BackupError, OSError) as error:
            log.error("backup stream failed: %s", error)
            if not self.closed:
                self.transport.write(fmt.frame(fmt.ERROR, str(error).encode()))
        finally:
            self.close_files()
            self.transport.close()

    async def _body(self) -> dict[str, Any]:
        node = self.server.node
        manifest: dict[str, Any] = {
            "format": fmt.FORMAT, "server_id": self.server.cfg.server_id,
            "created_ms": int(time.time() * 1000),
        }
        after = self.since
        if after is None:
            tree = node.tree
            head = snapshots.header(node)
            start = node.applied_zxid
            cursor = tree.snapshot_cursor()
            self._begin(snapshots.snapshot_name(start))
            await self._data(head)
            chunks = 0
            while True:
                chunk = cursor.next_chunk(self.server.cfg.snapshot_chunk_nodes)
                if not chunk:
                    break
                chunks += 1
                await self._data(snapshots.block(b"C" + chunk))
                await asyncio.sleep(0)  # let the server serve between chunks
            end = node.applied_zxid
            await self._data(snapshots.block(b"E" + encode_value((cursor.nodes, chunks, end))))
            self._finish_file()
            if node.tree is not tree:
                raise fmt.BackupError("this server's state was replaced by a snapshot from the "
                                      "leader during the backup; take it again")
            manifest.update(kind="full", snapshot={
                "name": snapshots.snapshot_name(start), "start_zxid": start, "end_zxid": end})
            after = start
        else:
            manifest.update(kind="incremental", since_zxid=after)
        last = node.applied_zxid
        await self._ship_log(after, last)
        manifest.update(last_zxid=last, files=self.files, complete=True)
        return manifest

    # --- the log -----------------------------------------------------------------------------
    def _pin(self, after: int) -> None:
        """Opens the segments holding zxids above `after`, and any later ones, keeping the
        ones already pinned."""
        known = {seg.base for seg in self.segments}
        found = wal.list_segments(self.storage.log_dir)
        first = 0
        for index, (base, _) in enumerate(found):
            if base <= after + 1:
                first = index
        for base, path in found[first:]:
            if base in known or (self.segments and base < self.segments[-1].base):
                continue
            try:
                self.segments.append(_Segment(base, open(path, "rb")))  # noqa: SIM115
            except FileNotFoundError:
                continue  # purged in between: a gap, which the client's check reports
        self.segments.sort(key=lambda seg: seg.base)

    async def _ship_log(self, after: int, last: int) -> None:
        """Streams every pinned segment, each cut after the last record <= `last`, once this
        server's log reaches `last` (a leader commits on a quorum that may not include its
        own disk yet)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + DURABLE_WAIT_S
        while True:
            self._pin(after)
            extents = [await loop.run_in_executor(None, _extent, seg, last)
                       for seg in self.segments]
            reach = max((top for _, top in extents), default=0)
            if last <= after or reach >= last:
                break
            if time.monotonic() > deadline:
                raise fmt.BackupError(f"this server's log does not reach the applied zxid "
                                      f"{last:#x} (it ends at {reach:#x})")
            await asyncio.sleep(0.05)
        for seg, (end, top) in zip(self.segments, extents, strict=True):
            if top <= after or end <= wal.SEGMENT_HEADER:
                continue  # nothing above `after` in it (or nothing at all)
            self._begin(wal.segment_name(seg.base))
            offset = 0
            while offset < end:
                data = await loop.run_in_executor(
                    None, os.pread, seg.handle.fileno(), min(fmt.CHUNK, end - offset), offset)
                if not data:
                    raise fmt.BackupError(f"{wal.segment_name(seg.base)} shrank while it was "
                                          "being read")
                offset += len(data)
                await self._data(data)
            self._finish_file()

    # --- framing -------------------------------------------------------------------------------
    def _begin(self, name: str) -> None:
        self._hash = hashlib.sha256()
        self._size = 0
        self.files.append({"name": name})
        self.transport.write(fmt.frame(fmt.FILE, name.encode()))

    async def _data(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)
        await self._send(fmt.frame(fmt.DATA, data))

    def _finish_file(self) -> None:
        self.files[-1].update(size=self._size, sha256=self._hash.hexdigest())

    async def _send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError("client gone")
        self.transport.write(data)
        await self.writable.wait()
        if self.closed:
            raise ConnectionError("client gone")

    def close_files(self) -> None:
        for seg in self.segments:
            seg.handle.close()
        self.segments = []


def _extent(seg: _Segment, last: int) -> tuple[int, int]:
    """(offset just past the last record <= `last`, that record's zxid; 0 if none) of a
    segment, read through its open file (worker thread)."""
    fd = seg.handle.fileno()
    size = os.fstat(fd).st_size
    if size <= wal.SEGMENT_HEADER:
        return 0, 0
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data:
        problem = wal.check_segment_header(data, seg.base)
        if problem is not None:
            raise fmt.BackupError(f"{wal.segment_name(seg.base)}: {problem}")
        scanner = WalScanner(data, wal.SEGMENT_HEADER, seg.base - 1 if seg.base > 0 else 0)
        end, top = wal.SEGMENT_HEADER, 0
        while scanner.skip_record() and scanner.last_zxid <= last:
            end, top = scanner.pos, scanner.last_zxid
        scanner.release()
    return end, top


def fmt_json(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True).encode()
