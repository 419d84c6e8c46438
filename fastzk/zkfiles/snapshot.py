"""ZooKeeper snapshot files (`version-2/snapshot.<zxid hex>[.gz|.snappy]`), read and written.

Layout (FileSnap, SerializeUtils.serializeSnapshot, DataTree.serialize; jute encoding):
  FileHeader      int magic "ZKSN", int version 2, long dbid
  sessions        int count, count x (long id, int timeout)
  ACL cache       int count, count x (long key, vector<ACL>)    key -1 means world:anyone:cdrwa
  nodes           (ustring path, DataNode) ..., ended by the path "/"; the root's path is "";
                  DataNode = buffer data, long acl key, StatPersisted (long czxid, mzxid, ctime,
                  mtime, int version, cversion, aversion, long ephemeralOwner, pzxid)
  seal            long Adler32 of every byte before it, ustring "/"
  digest (3.6+)   long zxid, int digestVersion, long digest; then a second seal over everything
                  before it
StatPersisted's cversion counts creates; clients see 2 * cversion - numChildren
(DataNode.copyStat), which is exactly fastzk's create counter, so nodes convert one to one.
The 3.6+ compressed snapshots wrap the same stream: gzip, or snappy-java's framing (8-byte
magic, two version ints, then blocks of int length + raw snappy).

ZooKeeper's digest of a tree (DigestCalculator, version 2) is the 64-bit sum over nodes of
CRC32(path, data, czxid mzxid pzxid ctime mtime version cversion aversion ephemeralOwner), the
root's path taken as "" and every node under "/zookeeper/" counting 0."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastzk.zkfiles.jute import INT, LONG, Reader, ZkFormatError, put_buffer, put_string

SNAP_MAGIC = 0x5A4B534E  # "ZKSN"
FILE_VERSION = 2
DIGEST_VERSION = 2
OPEN_ACL_KEY = -1  # ReferenceCountedACLCache: the key that stands for OPEN_ACL_UNSAFE
OPEN_ACL = [(31, "world", "anyone")]
SNAPPY_MAGIC = b"\x82SNAPPY\x00"
HEADER = struct.Struct(">iiq")
# DataNode after its data: acl key, then StatPersisted
NODE_TAIL = struct.Struct(">qqqqqiiiqq")
# fastzk's chunk record after the data (DataTree.SnapshotCursor): acl id, czxid, mzxid, ctime,
# mtime, pzxid, raw owner, version, create counter, aversion
CHUNK_TAIL = struct.Struct(">Iqqqqqqiii")
CHUNK_HEAD = struct.Struct(">BI")
# DigestCalculator's 60 bytes
DIGEST_STAT = struct.Struct(">qqqqqiiiq")
ZOOKEEPER_SUBTREE = b"/zookeeper/"
NODES_PER_CHUNK = 20000
MASK64 = (1 << 64) - 1


def signed64(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


def node_digest(path: bytes, data: bytes | None, czxid: int, mzxid: int, pzxid: int,
                ctime: int, mtime: int, version: int, cversion: int, aversion: int,
                owner: int) -> int:
    """One node's share of ZooKeeper's tree digest (`path` as ZooKeeper keys it: b"" for /)."""
    if path.startswith(ZOOKEEPER_SUBTREE):
        return 0
    crc = zlib.crc32(path)
    if data:
        crc = zlib.crc32(data, crc)
    return zlib.crc32(DIGEST_STAT.pack(czxid, mzxid, pzxid, ctime, mtime, version, cversion,
                                       aversion, owner), crc)


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(zxid, path) of every `snapshot.<hex>[.<ext>]` in `directory`, newest first (as
    ZooKeeper's Util.sortDataDir orders them for findNValidSnapshots)."""
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        parts = name.split(".")
        if parts[0] != "snapshot" or len(parts) not in (2, 3):
            continue
        if len(parts) == 3 and parts[2] not in ("gz", "snappy"):
            continue
        try:
            found.append((int(parts[1], 16), directory / name))
        except ValueError:
            continue
    found.sort(key=lambda item: item[0], reverse=True)
    return found


def _unsnappy(raw: bytes, name: str) -> bytes:
    """snappy-java's SnappyOutputStream framing, as ZooKeeper writes `.snappy` snapshots."""
    import cramjam

    if raw[:8] != SNAPPY_MAGIC or len(raw) < 16:
        raise ZkFormatError(name, 0, "not a snappy-java stream (bad magic)")
    out = []
    pos = 16
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ZkFormatError(name, pos, "truncated snappy block header")
        n = INT.unpack_from(raw, pos)[0]
        if n <= 0 or pos + 4 + n > len(raw):
            raise ZkFormatError(name, pos, f"snappy block of {n} bytes runs past the end of "
                                           f"the file ({len(raw)} bytes)")
        try:
            out.append(bytes(cramjam.snappy.decompress_raw(raw[pos + 4:pos + 4 + n])))
        except cramjam.DecompressionError as error:
            raise ZkFormatError(name, pos, f"bad snappy block: {error}") from None
        pos += 4 + n
    return b"".join(out)


def read_stream(path: Path) -> tuple[bytes, str]:
    """The snapshot's jute stream (decompressed) and the name errors should use for it."""
    raw = path.read_bytes()
    name = str(path)
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw), f"{name} (decompressed)"
        except (OSError, EOFError, zlib.error) as error:
            raise ZkFormatError(name, 0, f"bad gzip stream: {error}") from None
    if path.suffix == ".snappy":
        return _unsnappy(raw, name), f"{name} (decompressed)"
    return raw, name


@dataclass
class ZkSnapshot:
    """What a snapshot holds, its nodes already converted to fastzk chunks for the sink."""

    path: Path
    zxid: int
    dbid: int = 0
    sessions: dict[int, int] = field(default_factory=dict)
    acls: dict[int, list[tuple[int, str, str]]] = field(default_factory=dict)
    nodes: int = 0
    digest_sum: int = 0  # ZooKeeper's digest of the nodes as loaded
    digest: tuple[int, int, int] | None = None  # (zxid, digest version, digest) of 3.6+
    size: int = 0


def read_snapshot(path: Path, zxid: int, sink: Callable[[bytes], None]) -> ZkSnapshot:
    """Reads and checks a whole snapshot; its nodes go to `sink` as fastzk snapshot chunks
    (DataTree.load_snapshot_chunk), parents first, the ACL definitions in the first one.
    Raises ZkFormatError naming the file and offset of the first problem."""
    data, name = read_stream(path)
    snap = ZkSnapshot(path, zxid, size=len(data))
    r = Reader(data, name)
    magic, version, snap.dbid = HEADER.unpack_from(data, 0) if len(data) >= 16 else (0, 0, 0)
    if len(data) < 16:
        raise r.fail("truncated file header")
    if magic != SNAP_MAGIC:
        raise r.fail(f"bad magic {magic:#010x} (expected ZKSN): not a ZooKeeper snapshot")
    if version != FILE_VERSION:
        raise r.fail(f"unsupported snapshot format version {version}")
    r.pos = 16
    for _ in range(r.count("session count", 12)):
        session_id = r.long("session id")
        snap.sessions[session_id] = r.int("session timeout")
    acl_ids: dict[int, int] = {}
    first = bytearray()
    for _ in range(r.count("ACL cache size", 12)):
        key = r.long("ACL key")
        acl = r.acl_list("ACL list")
        snap.acls[key] = acl
        acl_ids[key] = len(acl_ids)
        _put_acl(first, len(acl_ids) - 1, acl)
    if OPEN_ACL_KEY not in acl_ids:
        acl_ids[OPEN_ACL_KEY] = len(acl_ids)
        _put_acl(first, acl_ids[OPEN_ACL_KEY], OPEN_ACL)
    r.pos = _read_nodes(r, snap, acl_ids, bytes(first), sink)
    seal = r.pos
    checksum = r.long("checksum")
    if r.string("seal") != "/":
        raise r.fail("missing the '/' after the checksum", seal + 8)
    if checksum != zlib.adler32(memoryview(data)[:seal]):
        raise r.fail(f"Adler32 checksum mismatch (file says {checksum:#x}): the snapshot is "
                     "corrupt", seal)
    if r.end - r.pos >= 20:  # 3.6+: the digest and a second seal
        start = r.pos
        snap.digest = (r.long(), r.int(), r.long())
        seal = r.pos
        checksum = r.long("digest checksum")
        if r.string("seal") != "/" or checksum != zlib.adler32(memoryview(data)[:seal]):
            raise r.fail("the digest record's checksum does not match", start)
    return snap


def _put_acl(out: bytearray, acl_id: int, acl: list[tuple[int, str, str]]) -> None:
    out += CHUNK_HEAD.pack(65, acl_id) + INT.pack(len(acl))
    for perms, scheme, ident in acl:
        parts: list[bytes] = [INT.pack(perms)]
        put_string(parts, scheme)
        put_string(parts, ident)
        out += b"".join(parts)


def _read_nodes(r: Reader, snap: ZkSnapshot, acl_ids: dict[int, int], first: bytes,
                sink: Callable[[bytes], None]) -> int:
    """The node records: converted to fastzk chunk records and digested in one pass. Written
    as one flat loop with local names: it is where an import spends its time."""
    data = r.data
    end = r.end
    pos = r.pos
    unpack_int = INT.unpack_from
    unpack_tail = NODE_TAIL.unpack_from
    pack_head = CHUNK_HEAD.pack
    pack_int = INT.pack
    pack_tail = CHUNK_TAIL.pack
    pack_digest = DIGEST_STAT.pack
    crc32 = zlib.crc32
    parts: list[bytes] = [first]
    total = 0
    nodes = 0
    in_chunk = 0
    while True:
        start = pos
        if pos + 4 > end:
            raise r.fail("truncated: the node list has no end marker", start)
        n = unpack_int(data, pos)[0]
        pos += 4
        if n < 0 or pos + n > end:
            raise r.fail(f"truncated: node path length {n} runs past the end of the stream",
                         start)
        path = data[pos:pos + n]
        pos += n
        if path == b"/":
            break
        if pos + 4 > end:
            raise r.fail(f"truncated node {path!r}", start)
        dlen = unpack_int(data, pos)[0]
        pos += 4
        if dlen < -1 or pos + max(dlen, 0) + 68 > end:
            raise r.fail(f"truncated: node {path!r}: data length {dlen} runs past the end",
                         start)
        value = data[pos:pos + dlen] if dlen > 0 else b""
        pos += max(dlen, 0)
        (acl, czxid, mzxid, ctime, mtime, version, cversion, aversion, owner,
         pzxid) = unpack_tail(data, pos)
        pos += 68
        aid = acl_ids.get(acl)
        if aid is None:
            raise r.fail(f"node {path!r} refers to ACL {acl}, which the ACL cache lacks", start)
        if n == 0:
            key = b"/"
        elif path[0] != 47:
            raise r.fail(f"bad node path {path!r}", start)
        else:
            key = path
        parts.append(pack_head(78, len(key)))
        parts.append(key)
        parts.append(pack_int(dlen))
        parts.append(value)
        parts.append(pack_tail(aid, czxid, mzxid, ctime, mtime, pzxid, owner, version,
                               cversion, aversion))
        if not path.startswith(ZOOKEEPER_SUBTREE):
            total += crc32(pack_digest(czxid, mzxid, pzxid, ctime, mtime, version, cversion,
                                       aversion, owner), crc32(value, crc32(path)))
        nodes += 1
        in_chunk += 1
        if in_chunk == NODES_PER_CHUNK:
            try:
                sink(b"".join(parts))
            except ValueError as error:
                raise r.fail(f"bad node record near here: {error}", start) from None
            parts = []
            in_chunk = 0
    if parts:
        try:
            sink(b"".join(parts))
        except ValueError as error:
            raise r.fail(f"bad node record: {error}", pos) from None
    snap.nodes = nodes
    snap.digest_sum = total & MASK64
    return pos


# --- writing (export) ------------------------------------------------------------------------

@dataclass
class SnapshotNode:
    """One node as ZooKeeper persists it; `path` is ZooKeeper's key (b"" for the root)."""

    path: bytes
    data: bytes | None
    acl: tuple[tuple[int, str, str], ...]
    czxid: int
    mzxid: int
    ctime: int
    mtime: int
    version: int
    cversion: int
    aversion: int
    owner: int
    pzxid: int


def encode_snapshot(sessions: dict[int, int], nodes: Iterator[SnapshotNode],
                    zxid: int) -> tuple[bytes, int]:
    """A complete uncompressed snapshot, nodes in the order given (parents first), sealed as
    FileSnap.serialize seals it, with the 3.6+ digest record for `zxid`; and that digest."""
    acl_keys: dict[tuple[tuple[int, str, str], ...], int] = {}
    body: list[bytes] = []
    digest = 0
    for node in nodes:
        key = acl_keys.get(node.acl)
        if key is None:
            key = acl_keys[node.acl] = len(acl_keys) + 1
        put_string(body, node.path.decode("utf-8", "surrogatepass"))
        put_buffer(body, node.data)
        body.append(NODE_TAIL.pack(key, node.czxid, node.mzxid, node.ctime, node.mtime,
                                   node.version, node.cversion, node.aversion, node.owner,
                                   node.pzxid))
        digest += node_digest(node.path, node.data, node.czxid, node.mzxid, node.pzxid,
                              node.ctime, node.mtime, node.version, node.cversion,
                              node.aversion, node.owner)
    put_string(body, "/")
    head: list[bytes] = [HEADER.pack(SNAP_MAGIC, FILE_VERSION, -1), INT.pack(len(sessions))]
    for session_id, timeout in sessions.items():
        head.append(LONG.pack(session_id) + INT.pack(timeout))
    head.append(INT.pack(len(acl_keys)))
    for acl, key in acl_keys.items():
        head.append(LONG.pack(key) + INT.pack(len(acl)))
        for perms, scheme, ident in acl:
            head.append(INT.pack(perms))
            put_string(head, scheme)
            put_string(head, ident)
    out = b"".join(head + body)
    out += LONG.pack(zlib.adler32(out)) + INT.pack(1) + b"/"
    out += LONG.pack(zxid) + INT.pack(DIGEST_VERSION) + LONG.pack(signed64(digest))
    out += LONG.pack(zlib.adler32(out)) + INT.pack(1) + b"/"
    return out, signed64(digest)
