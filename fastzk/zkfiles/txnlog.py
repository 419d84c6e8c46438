"""ZooKeeper transaction logs (`version-2/log.<first zxid hex>`), read as FileTxnLog reads them.

File: FileHeader (int magic "ZKLG", int version 2, long dbid), then records, then the zeros of
preallocation. Record: long Adler32 of the entry, buffer entry (int length + bytes), byte 'B'.
Entry: TxnHeader (long clientId, int cxid, long zxid, long time, int type), the txn body of
that type (zookeeper.jute), then in 3.6+ a TxnDigest (int version, long treeDigest).

Ends and damage, as FileTxnIterator treats them: a zero length (preallocated space), a record
cut by the end of the file, or a missing 'B' end byte ("last transaction was partial") ends
that file and reading goes on with the next one; a checksum mismatch or an entry that does not
parse stops recovery (ZooKeeper refuses to start: "CRC check failed"), reported here with the
file and offset."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastzk.zkfiles.jute import Reader, ZkFormatError

LOG_MAGIC = 0x5A4B4C47  # "ZKLG"
HEADER = struct.Struct(">iiq")
RECORD_HEAD = struct.Struct(">qi")
TXN_HEADER = struct.Struct(">qiqqi")
CONTAINER_OWNER = -(1 << 63)  # EphemeralType.CONTAINER_EPHEMERAL_OWNER
TTL_MASK = -(1 << 56)  # EphemeralType's EXTENDED_MASK 0xff00000000000000, TTL bit 0
MAX_TTL = 0xFFFFFFFFFF

# ZooDefs.OpCode
CREATE, DELETE, SET_DATA, SET_ACL, CHECK, MULTI, CREATE2, RECONFIG = 1, 2, 5, 7, 13, 14, 15, 16
CREATE_CONTAINER, DELETE_CONTAINER, CREATE_TTL = 19, 20, 21
CREATE_SESSION, CLOSE_SESSION, ERROR = -10, -11, -1


@dataclass(slots=True)
class Op:
    """One txn body (or one op of a multi), in the terms DataTree.processTxn uses.
    kind: create (path, data, acl, owner, parent_cversion), delete (path), set_data (path,
    data, version), set_acl (path, acl, version), create_session (timeout), close_session
    (paths, None before 3.6), check, error."""

    type: int
    kind: str
    args: tuple[Any, ...] = ()


@dataclass(slots=True)
class TxnRecord:
    zxid: int
    time: int
    session_id: int
    cxid: int
    type: int
    ops: list[Op]  # one op, or a multi's
    digest: tuple[int, int] | None  # (version, tree digest) after the txn, 3.6+
    file: Path
    offset: int


def list_logs(directory: Path) -> list[tuple[int, Path]]:
    """(first zxid, path) of every `log.<hex>` in `directory`, oldest first."""
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        parts = name.split(".")
        if parts[0] == "log" and len(parts) == 2:
            try:
                found.append((int(parts[1], 16), directory / name))
            except ValueError:
                continue
    found.sort()
    return found


def logs_for(directory: Path, zxid: int) -> list[Path]:
    """The files FileTxnIterator reads for txns from `zxid` on: the last one starting below
    it and every one starting at or above it."""
    logs = list_logs(directory)
    below = [path for first, path in logs if first < zxid]
    return below[-1:] + [path for first, path in logs if first >= zxid]


@dataclass
class LogEnd:
    """Where and why reading a log file stopped (None: cleanly, at preallocated zeros or the
    end of the file)."""

    file: Path
    offset: int
    torn: str | None


def read_records(files: list[Path], from_zxid: int, ends: list[LogEnd]) -> Iterator[TxnRecord]:
    """Every txn with zxid >= from_zxid in `files`, in file order; each file's end is appended
    to `ends`. Raises ZkFormatError on a checksum mismatch or a malformed entry."""
    for path in files:
        data = path.read_bytes()
        name = str(path)
        if len(data) < HEADER.size:
            ends.append(LogEnd(path, 0, "no complete file header"))
            continue
        magic, version, _ = HEADER.unpack_from(data, 0)
        if magic != LOG_MAGIC:
            raise ZkFormatError(name, 0, f"bad magic {magic:#010x} (expected ZKLG): not a "
                                         "ZooKeeper transaction log")
        if version != 2:
            raise ZkFormatError(name, 4, f"unsupported log format version {version}")
        pos = HEADER.size
        size = len(data)
        torn = None
        while True:
            if pos + RECORD_HEAD.size > size:
                if pos < size and any(data[pos:]):
                    torn = "a record cut short by the end of the file"
                break
            checksum, length = RECORD_HEAD.unpack_from(data, pos)
            if length == 0:
                break  # preallocated zeros: the end of what was written
            if length == -1 or length > size - pos - RECORD_HEAD.size - 1:
                torn = f"a record of {length} bytes cut short by the end of the file"
                break
            if length < 0:
                raise ZkFormatError(name, pos + 8, f"unreasonable record length {length}")
            body_at = pos + RECORD_HEAD.size
            if data[body_at + length] != 0x42:
                torn = "the last transaction was partial (no end-of-record byte)"
                break
            entry = memoryview(data)[body_at:body_at + length]
            if zlib.adler32(entry) != checksum & 0xFFFFFFFFFFFFFFFF:
                raise ZkFormatError(name, pos, f"Adler32 checksum mismatch (record says "
                                               f"{checksum:#x}): the log is corrupt")
            record = parse_entry(entry, name, body_at, path, pos)
            if record.zxid >= from_zxid:
                yield record
            pos = body_at + length + 1
        if torn is not None:
            ends.append(LogEnd(path, pos, torn))
        else:
            ends.append(LogEnd(path, pos, None))


def parse_entry(entry: memoryview, name: str, base: int, path: Path, offset: int) -> TxnRecord:
    """SerializeUtils.deserializeTxn: the header, the body of its type, the 3.6+ digest."""
    r = Reader(entry, name, base)
    r.need(TXN_HEADER.size, "txn header")
    session_id, cxid, zxid, time_ms, op_type = TXN_HEADER.unpack_from(entry, 0)
    r.pos = TXN_HEADER.size
    if op_type == MULTI:
        ops = []
        for _ in range(r.count("multi ops", 8)):
            sub_type = r.int("multi op type")
            sub = r.buffer("multi op") or b""
            ops.append(_body(Reader(sub, name, base + r.pos - len(sub)), sub_type, session_id,
                             True))
    else:
        ops = [_body(r, op_type, session_id, False)]
    digest = None
    if r.end - r.pos >= 12:
        digest = (r.int(), r.long())
    return TxnRecord(zxid, time_ms, session_id, cxid, op_type, ops, digest, path, offset)


def _body(r: Reader, op_type: int, session_id: int, in_multi: bool) -> Op:
    if op_type in (CREATE, CREATE2):
        path = r.string("path")
        data = r.buffer("data")
        acl = r.acl_list()
        if r.end - r.pos < 1:
            raise r.fail("truncated create txn")
        ephemeral = r.bool()
        # CreateTxnV0 (before 3.3) has no parentCVersion: -1 means "the current one + 1"
        parent_cversion = r.int() if r.end - r.pos >= 4 and (in_multi or _not_digest(r)) else -1
        return Op(op_type, "create", (path, data, acl, session_id if ephemeral else 0,
                                      parent_cversion))
    if op_type == CREATE_CONTAINER:
        path, data, acl = r.string("path"), r.buffer("data"), r.acl_list()
        return Op(op_type, "create", (path, data, acl, CONTAINER_OWNER, r.int("cversion")))
    if op_type == CREATE_TTL:
        path, data, acl = r.string("path"), r.buffer("data"), r.acl_list()
        parent_cversion = r.int("cversion")
        ttl = r.long("ttl")
        if ttl <= 0 or ttl > MAX_TTL:
            raise r.fail(f"bad TTL {ttl}")
        return Op(op_type, "create", (path, data, acl, TTL_MASK | ttl, parent_cversion))
    if op_type in (DELETE, DELETE_CONTAINER):
        return Op(op_type, "delete", (r.string("path"),))
    if op_type in (SET_DATA, RECONFIG):
        return Op(op_type, "set_data", (r.string("path"), r.buffer("data"), r.int("version")))
    if op_type == SET_ACL and not in_multi:
        return Op(op_type, "set_acl", (r.string("path"), r.acl_list(), r.int("version")))
    if op_type == CHECK and in_multi:
        return Op(op_type, "check", (r.string("path"), r.int("version")))
    if op_type == CREATE_SESSION and not in_multi:
        return Op(op_type, "create_session", (r.int("timeout"),))
    if op_type == CLOSE_SESSION and not in_multi:
        # CloseSessionTxn (3.6+) lists the ephemerals to delete; older logs have no body
        paths = None
        if r.end - r.pos >= 4 and r.end - r.pos != 12:
            paths = [r.string("path") for _ in range(r.count("paths2Delete", 4))]
        return Op(op_type, "close_session", (paths,))
    if op_type == ERROR:
        return Op(op_type, "error", (r.int("error code"),))
    raise r.fail(f"unsupported txn type {op_type}" + (" in a multi" if in_multi else ""))


def _not_digest(r: Reader) -> bool:
    """Whether the 4+ bytes after a create's `ephemeral` are its parentCVersion rather than
    the TxnDigest of a V0 create (12 bytes exactly)."""
    return r.end - r.pos != 12
