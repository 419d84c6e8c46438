"""Offline tools for the data directory, like ZooKeeper's zkTxnLogToolkit and
zkSnapShotToolkit: `fastzk log dump DIR` and `fastzk snap dump FILE`. Read-only: they never
repair or rewrite anything."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TextIO

from fastzk.proto import OP_NAMES
from fastzk.runtime import snapshot as snapshots
from fastzk.runtime import wal


def _time(ms: int) -> str:
    try:
        return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _segments(target: Path) -> tuple[Path | None, list[Path]]:
    """(the log directory, or None for a single file; its segment files)."""
    if target.is_file():
        return None, [target]
    for directory in (target, wal.log_dir_of(target)):
        found = wal.list_segments(directory)
        if found:
            return directory, [path for _, path in found]
    return target, []


def log_dump(target: Path, out: TextIO, verbose: bool = True) -> int:
    """Prints every record of a log (a data/log directory, its fastzk/ subdirectory or one
    segment file), each segment's end, then the verdict recovery would reach. Returns 0 when
    the log is usable (a torn tail included), 1 when it is corrupt or missing."""
    directory, files = _segments(Path(target))
    if not files:
        print(f"no write-ahead log segments in {target}", file=out)
        return 1
    total = 0
    for path in files:
        print(f"segment {path} ({path.stat().st_size} bytes)", file=out)
        records = 0
        for record in wal.scan_records(path):
            if record[0] == "end":
                _, offset, problem = record
                print(f"  end at offset {offset}: "
                      f"{'clean' if problem is None else problem} ({records} records)", file=out)
                break
            offset, zxid, batch, time_ms, session_id, xid, op, changes = record
            records += 1
            if verbose:
                print(f"  {offset:>10} zxid {zxid:#x} batch {batch:#x} {_time(time_ms)} "
                      f"session {session_id:#x} cxid {xid:#x} {OP_NAMES.get(op, op)} "
                      f"{_short(changes)}", file=out)
        total += records
    print(f"{total} records in {len(files)} segment(s)", file=out)
    if directory is None:
        return 0
    try:
        state = wal.verify_log(directory, 0)
    except wal.RecoveryError as error:
        print(f"CORRUPT: {error}", file=out)
        return 1
    verdict = f"torn tail at {state.torn} (cut at start-up)" if state.torn else "clean"
    print(f"log valid through zxid {state.last_zxid:#x}: {verdict}", file=out)
    return 0


def snap_dump(path: Path, out: TextIO, nodes: bool = True, data: bool = False) -> int:
    """Prints a snapshot's header, sessions, digest and (unless nodes=False) every node.
    Returns 0 for a valid snapshot, 1 for a corrupt or incomplete one."""
    path = Path(path)
    try:
        info, tree = snapshots.summary(path)
    except (snapshots.SnapshotError, OSError) as error:
        print(f"INVALID snapshot: {error}", file=out)
        return 1
    print(f"snapshot {path} ({info.size} bytes)", file=out)
    print(f"  start zxid {info.zxid:#x}, fuzzy up to zxid {info.end_zxid:#x}, "
          f"taken {_time(info.time_ms)}", file=out)
    print(f"  {info.nodes} znodes in {info.chunks} chunks, approximate data size "
          f"{tree.data_size}", file=out)
    print(f"  digest of the snapshot as stored (before log replay): {tree.digest()}", file=out)
    print(f"  {len(info.sessions)} sessions", file=out)
    for session_id, timeout, _ in info.sessions:
        owned = tree.ephemerals(session_id)
        print(f"    {session_id:#x} timeout {timeout} ms, {len(owned)} ephemerals", file=out)
    if nodes:
        stack = ["/"]
        while stack:
            node_path = stack.pop()
            found = tree.get_data(node_path)
            if found is None:
                continue
            value, stat = found
            line = (f"  {node_path} czxid {stat[0]:#x} mzxid {stat[1]:#x} pzxid {stat[10]:#x} "
                    f"version {stat[4]} cversion {stat[5]} aversion {stat[6]} "
                    f"owner {stat[7]:#x} children {stat[9]} length {stat[8]}")
            if data:
                line += f" data {_short(value)}"
            print(line, file=out)
            children = tree.get_children(node_path) or []
            prefix = "" if node_path == "/" else node_path
            # children in listing order, as ZooKeeper's SnapshotFormatter prints them
            stack.extend(f"{prefix}/{name}" for name in reversed(children))
    return 0
