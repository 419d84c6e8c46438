"""Typing stubs for fastzk._core, the one Cython compilation unit (framing, jute codec, data
tree and the read fast path). This file is the contract between the Cython core and the Python
pipeline: change both sides together.

Conventions
- Paths are `str` in every Python-facing call. A null ustring from the wire decodes to "" for
  paths, ACL schemes and ids (kazoo sends "" as null); data buffers keep null as `None`.
- ustrings decode strictly as UTF-8 first; CESU-8 surrogate pairs (Java's encoding) decode with
  'surrogatepass'; anything else invalid decodes with U+FFFD replacement, which path validation
  then rejects (as the Java server does).
- Stat is an 11-tuple in wire order, with the *exposed* values: cversion = 2*creates -
  numChildren, ephemeralOwner 0 for containers and TTL nodes.
- ACL is a list of (perms, scheme, id) tuples.
"""

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

Stat = tuple[int, int, int, int, int, int, int, int, int, int, int]
# (czxid, mzxid, ctime, mtime, version, cversion, aversion, ephemeralOwner, dataLength,
#  numChildren, pzxid)
ACL = tuple[int, str, str]

class FrameError(Exception):
    """A length prefix that is negative or larger than the maximum frame size: close the
    connection without a reply."""

class JuteError(Exception):
    """A frame whose body cannot be decoded. args = (xid, op) when the 8-byte request header was
    readable (answer MarshallingError, keep the connection), args = () when even the header was
    not (close the connection)."""

class ReadBuffer:
    """Receive buffer of one connection, filled by asyncio.BufferedProtocol."""

    def __init__(self, max_frame: int) -> None: ...
    def get_buffer(self, sizehint: int) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    @property
    def pending(self) -> int:
        """Bytes received and not yet consumed."""
    def peek(self, n: int) -> bytes | None:
        """The first n unconsumed bytes without consuming them, or None if fewer are buffered
        (used to spot a four-letter word on a fresh connection)."""
    def consume(self, n: int) -> None: ...
    def pop_frame(self) -> bytes | None:
        """Payload of the next complete frame (without its length prefix), or None.
        Raises FrameError for a negative or oversized length prefix."""

class WriteBuffer:
    """Outgoing bytes of one connection; every method appends whole frames."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def take(self) -> bytes:
        """All bytes written so far; empties the buffer."""
    # --- generic frame building: begin() writes the length placeholder and the ReplyHeader,
    # end() back-patches the length. Fields in between.
    def begin(self, xid: int, zxid: int, err: int) -> None: ...
    def end(self) -> None: ...
    def write_int(self, v: int) -> None: ...
    def write_long(self, v: int) -> None: ...
    def write_bool(self, v: bool) -> None: ...
    def write_buffer(self, v: bytes | None) -> None: ...
    def write_ustring(self, v: str | None) -> None: ...
    def write_string_vector(self, v: list[str]) -> None: ...
    def write_acl_vector(self, v: list[ACL]) -> None: ...
    def write_stat(self, v: Stat) -> None: ...
    # --- whole frames
    def reply_header(self, xid: int, zxid: int, err: int) -> None:
        """A complete reply frame with no body (errors, delete, ping, auth, ...)."""
    def notification(self, zxid: int, event_type: int, state: int, path: str) -> None: ...
    def write_raw(self, v: bytes) -> None:
        """Appends frames encoded elsewhere (one watch event sent to many connections)."""
    def connect_response(
        self, timeout: int, session_id: int, passwd: bytes, read_only: bool | None
    ) -> None:
        """The handshake reply; read_only None omits the trailing byte (44-byte requests)."""

ConnectRequest = tuple[int, int, int, int, bytes, bool | None]
# (protocol_version, last_zxid_seen, timeout, session_id, passwd, read_only or None if absent)

def decode_connect(payload: bytes) -> ConnectRequest:
    """Raises JuteError() if the frame is too short for the fixed fields."""

def decode_request(payload: bytes) -> tuple[int, int, Any]:
    """(xid, op, body). body by op:
      CREATE/CREATE2/CREATE_CONTAINER: (path, data, acl, flags)
      CREATE_TTL: (path, data, acl, flags, ttl)
      DELETE: (path, version)            SET_DATA: (path, data, version)
      EXISTS/GET_DATA/GET_CHILDREN/GET_CHILDREN2: (path, watch)
      GET_ACL/SYNC/GET_ALL_CHILDREN_NUMBER/GET_EPHEMERALS/DELETE_CONTAINER: path
      SET_ACL: (path, acl, version)      CHECK: (path, version)
      MULTI/MULTI_READ: list[(op, body)] with the bodies above; MULTI allows only
        1, 2, 5, 13, 15, 19, 21 and MULTI_READ only 4, 8 (else JuteError(xid, op))
      AUTH: (type, scheme, auth_bytes)   SASL: token bytes or None
        (a null auth buffer decodes to b"", as does a null connect passwd)
      SET_WATCHES: (rel_zxid, data, exist, child)
      SET_WATCHES2: (rel_zxid, data, exist, child, persistent, recursive)
      CHECK_WATCHES/REMOVE_WATCHES: (path, watcher_type)
      ADD_WATCH: (path, mode)
      RECONFIG: (joining, leaving, new_members, cur_config_id)  (strings may be None)
      PING/CLOSE_SESSION/WHO_AM_I: None
      any other op: None (the caller answers UNIMPLEMENTED)
    Raises JuteError(xid, op) when the body does not decode (truncated, inner length beyond
    the frame, negative length other than -1, vector count beyond what the frame can hold),
    JuteError() when the payload is shorter than the 8-byte header."""

class DataTree:
    """The znode tree. A fresh tree holds /, /zookeeper, /zookeeper/quota and
    /zookeeper/config exactly as a fresh Apache ZooKeeper 3.8 does (cversion -1 on /, -2 on
    /zookeeper, /zookeeper/config world:READ with aversion -1).

    Mutators trust their caller (prep validated the txn): they raise KeyError on a missing
    node or parent (and create on an existing node) and never check versions or ACLs; delete
    raises ValueError for the root or a node with children rather than corrupt the tree."""

    def __init__(self) -> None: ...
    def __len__(self) -> int:
        """Number of znodes, root included."""
    @property
    def data_size(self) -> int:
        """Approximate bytes held: sum of path lengths and data lengths (mntr's
        zk_approximate_data_size)."""
    def exists(self, path: str) -> bool: ...
    def stat(self, path: str) -> Stat | None: ...
    def get_data(self, path: str) -> tuple[bytes | None, Stat] | None: ...
    def get_children(self, path: str) -> list[str] | None:
        """Child names (not paths) in Apache ZooKeeper's order: the iteration order of the
        java.util.HashSet<String>(8) a ZooKeeper DataNode keeps them in, reproduced exactly
        (core/children.pxi); None if the node is missing."""
    def write_children(self, out: WriteBuffer, path: str) -> bool:
        """Appends the getChildren reply's vector<ustring> (get_children's names, from a
        per-node cache dropped on every change); False (nothing written) if missing."""
    def get_acl(self, path: str) -> tuple[list[ACL], Stat] | None: ...
    def node_info(self, path: str) -> tuple[int, int, int, int, int, tuple[ACL, ...]] | None:
        """What prep needs to validate a txn: (version, aversion, create_counter,
        num_children, raw_owner, acl). create_counter is the stored child-create counter used
        for sequential suffixes; raw_owner is ZooKeeper's internal ephemeralOwner (session id,
        CONTAINER_OWNER or TTL_OWNER_MASK|ttl as signed 64-bit, 0 for persistent)."""
    def create(
        self, path: str, data: bytes | None, acl: list[ACL], raw_owner: int, zxid: int,
        time_ms: int, parent_counter: int,
    ) -> Stat:
        """Adds the node; parent: create_counter = parent_counter, numChildren +1,
        pzxid = max(pzxid, zxid). Returns the node's Stat."""
    def delete(self, path: str, zxid: int) -> None:
        """Removes a childless node (ValueError if it has children); parent: numChildren -1,
        pzxid = max(pzxid, zxid)."""
    def set_config(self, data: bytes) -> None:
        """/zookeeper/config's data, kept out of the digest."""
    def set_data(
        self, path: str, data: bytes | None, version: int, zxid: int, time_ms: int
    ) -> Stat:
        """Sets data, version, mzxid, mtime. Returns the new Stat (KeyError if missing)."""
    def set_acl(self, path: str, acl: list[ACL], aversion: int) -> Stat:
        """Sets the ACL and aversion and nothing else. Returns the new Stat (KeyError if
        missing)."""
    def restore_watches(self, paths: list[str], rel_zxid: int, field: int, gone: int,
                        changed: int, state: int, out: WriteBuffer, table: dict[str, Any],
                        conn: Any) -> None:
        """setWatches for one list of paths: notify what changed after rel_zxid (field 0:
        mzxid, 1: pzxid, -1: exists), register the rest in `table`."""
    def ephemerals(self, session_id: int) -> list[str]:
        """Paths of the normal ephemerals owned by session_id (not containers/TTL), in the
        order ZooKeeper's getEphemerals lists them."""
    def forget_session(self, session_id: int) -> None:
        """Drops a closed session's emptied ephemeral set."""
    def sessions_with_ephemerals(self) -> dict[int, list[str]]: ...
    def containers_and_ttls(self) -> list[str]:
        """Paths of all container and TTL nodes (for the reaper)."""
    def all_children_number(self, path: str) -> int | None:
        """Number of descendants (not only children); None if the node is missing."""
    def digest(self) -> int:
        """An order-independent 64-bit digest of every node's path, data and Stat, kept
        incrementally, so two trees with equal content compare equal."""
    def write_stat(self, out: WriteBuffer, path: str) -> bool:
        """Appends the node's Stat to `out`; False (nothing written) if missing."""
    # --- snapshots
    def snapshot_cursor(self) -> SnapshotCursor:
        """A fuzzy, resumable depth-first walk of this tree (see SnapshotCursor)."""
    def load_snapshot_chunk(self, chunk: bytes, acls: dict[int, Any]) -> int:
        """Adds the nodes of one SnapshotCursor chunk to a fresh tree (whose built-in nodes the
        snapshot's replace); `acls` carries ACL definitions from chunk to chunk (start with
        {}). Parents must precede children; each node joins its parent's child set in the
        order read, as in ZooKeeper's load, so a set that shrank comes back smaller and child
        order after a load is what ZooKeeper's is after its restart. ValueError on malformed
        input. Returns the number of nodes read."""

class SnapshotCursor:
    """A fuzzy snapshot taken a chunk at a time while the tree changes: depth-first, a node's
    child paths copied in listing order when it is written, each child looked up by path when its turn comes
    (skipped if gone), so every node that exists for the whole walk is written, parents first.
    Chunk records: 'A' ACL definitions (once per snapshot) and 'N' nodes with every stored
    field (path, data, ACL id, czxid, mzxid, ctime, mtime, pzxid, raw owner, version, create
    counter, aversion)."""

    def __init__(self, tree: DataTree) -> None: ...
    @property
    def nodes(self) -> int:
        """Nodes written so far."""
    @property
    def done(self) -> bool: ...
    def next_chunk(self, max_nodes: int) -> bytes:
        """The records of up to max_nodes more nodes; b"" once done."""

# --- write-ahead log records (core/wal.pxi) -------------------------------------------------
# Record: u32 body length | u32 CRC32C (of the length and of everything after the CRC) |
# i64 zxid | i64 batch (first zxid of the write that carried it) | body: i64 time_ms,
# i64 session_id, i32 xid, i32 op, value(changes). 24 zero bytes end a segment.

class WalValueError(ValueError):
    """Bytes that do not decode as a value."""

def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli); pass a previous result as `crc` to continue it."""

def encode_value(value: Any) -> bytes:
    """None, bool, int (any size), str (surrogates pass), bytes, tuple and list, nested."""

def decode_value(data: bytes | bytearray | memoryview) -> Any: ...

def encode_txns(txns: list[Any], keep: bool = False) -> bytearray:
    """Unsealed records of objects with zxid, time_ms, session_id, xid, op and changes; a Txn
    with its body (`record`) is copied; with `keep` each Txn keeps the body encoded here."""

def txn_body(txn: Txn) -> bytes:
    """The txn's record body (time, session, cxid, op, changes), encoded once and kept."""

def txn_from_body(zxid: int, body: bytes) -> Txn:
    """The Txn of a body from `txn_body`, keeping the bytes (WalValueError if malformed)."""

def seal_records(buf: bytearray, batch: int) -> int:
    """Stamps `batch` into every record and computes the CRCs (without the GIL); returns the
    number of records. ValueError if buf is not a sequence of encoded records."""

class WalScanner:
    """Walks the records of one segment's bytes from `start`; `prev_zxid` is the zxid the
    first record must follow (0: any). Records must be CRC-valid and dense in zxid within an
    epoch."""

    pos: int
    end: int
    last_zxid: int
    last_batch: int
    problem: str | None
    """After a None from next_record/False from skip_record: None for a clean end (end of
    buffer or a zero header), else what is wrong with the record at `pos`."""

    def __init__(self, buf: Any, start: int, prev_zxid: int) -> None: ...
    def next_record(self) -> tuple[int, int, int, int, int, int, int, Any] | None:
        """(offset, zxid, batch, time_ms, session_id, xid, op, changes), or None."""
    def skip_record(self) -> bool:
        """Like next_record without decoding the txn."""
    def release(self) -> None:
        """Drops the buffer (so that an mmap can be closed)."""

def find_record(buf: Any, start: int, after_zxid: int) -> int:
    """Offset of the first CRC-valid record at or after `start` with a zxid above after_zxid
    (within 2**40), or -1."""

def java_string_hash(name: str) -> int:
    """HashMap.hash(name) as a ZooKeeper child set computes it: String.hashCode over UTF-16
    code units, spread by h ^ (h >>> 16); a signed 32-bit int."""

# --- the write pipeline (core/prep.pxi) ------------------------------------------------------
# Change tags: the first item of each change tuple (see core/prep.pxi for the tuples); part of
# the log format.
CREATE: str
DELETE: str
SET_DATA: str
SET_ACL: str
CHECK: str
CREATE_SESSION: str
CLOSE_SESSION: str
BARRIER: str

def valid_path(path: str | None) -> bool:
    """ZooKeeper's path rules (spec 12.1): absolute, no empty, "." or ".." component, no
    trailing slash (but "/"), no code point in U+0000-U+001F, U+007F-U+009F, U+D800-U+F8FF or
    U+FFF0 and above (outside the BMP included). False for None."""

def parent_of(path: str) -> str:
    """Everything before the last '/', with '/' for top-level nodes."""

class Txn:
    """A decided write. `changes` are (tag, ...) tuples; for a multi they are
    (result_type, change) pairs so that the reply can mirror each op's type. Compared by
    value; not hashable."""

    zxid: int
    time_ms: int
    session_id: int
    xid: int
    op: int
    changes: list[Any]
    record: bytes | None  # its encoded body once an ensemble encoded it (never changes after)
    def __init__(self, zxid: int, time_ms: int, session_id: int, xid: int, op: int,
                 changes: list[Any] | None = None) -> None: ...

class PrepCore:
    """Request -> txn: ZooKeeper's check order against the tree plus the overlay of prepared
    but unapplied txns (fastzk/server/prep.py's Prep binds `check_acl` and `fix_acl`, the
    rules of server/acl.py)."""

    tree: DataTree
    last_zxid: int
    ttl_enabled: bool
    skip_acl: bool
    sasl_acls: bool
    def __init__(self, tree: DataTree, last_zxid: int, ttl_enabled: bool, skip_acl: bool,
                 sasl_acls: bool, check_acl: Callable[..., bool],
                 fix_acl: Callable[..., list[ACL] | None]) -> None: ...
    def write(self, session_id: int, xid: int, op: int, body: Any, identities: Any,
              now_ms: int) -> Txn | int | list[int]:
        """A Txn, an error code, or (for a failed multi) the per-op error list."""
    def create_session(self, session_id: int, timeout: int, passwd: bytes,
                       now_ms: int) -> Txn: ...
    def close_session(self, session_id: int, xid: int, now_ms: int) -> Txn:
        """Deletes of the session's ephemerals (applied or prepared) in path order, then the
        close."""
    def reap(self, path: str, now_ms: int) -> Txn | None:
        """A delete of an empty used container or an expired childless TTL node, else None."""
    def applied(self, zxid: int) -> None:
        """Forget prepared changes the tree now reflects (txns up to zxid applied)."""

class ApplierCore:
    """Committed txn -> tree: server/apply.py's Applier subclasses it and provides
    `apply_changes(txn)` for every txn but those `apply` applies itself: one create, setData
    or delete, or a multi of those and checks, that can fire no watch (no recursive watch, and
    no table of `watches.tables` that WatchManager.trigger consults names its nodes or, for
    create and delete, their parents)."""

    tree: DataTree
    watches: Any
    def apply(self, txn: Txn) -> tuple[Any, Sequence[Any]]:
        """(result: (path, Stat) for a create, Stat for setData/setACL, None for delete, a
        list of (type, result) for a multi; notifications in order)."""

def write_reply(out: WriteBuffer, txn: Txn, result: Any) -> None:
    """The reply frame of a successfully applied write (`result` as Applier.apply gives it)."""

def write_multi_failure(out: WriteBuffer, xid: int, zxid: int, errors: Sequence[int]) -> None:
    """A failed multi: header err 0, each op's error in the body."""

def serve_reads(
    buf: ReadBuffer,
    tree: DataTree,
    out: WriteBuffer,
    zxid: int,
    limit: int,
    max_out_bytes: int,
    watch_tables: tuple[dict[str, dict[Any, None]], ...] | None = None,
    conn: Any = None,
) -> int:
    """The read fast path. Consumes and answers, in order, up to `limit` complete frames at the
    head of `buf` for as long as each one is a ping (-2/11) or an exists/getData/getChildren/
    getChildren2 request whose node either is missing (answer NO_NODE, body-less) or grants
    READ to world:anyone, writing each reply frame (ReplyHeader with `zxid`) into `out`. A
    request with the watch flag is served only given `watch_tables` (WatchManager.tables) and
    the connection `conn` (its `watches` dict is the path -> kind mask): the watch is
    registered as WatchManager.add does (exists: DATA, also on a missing node; getData: DATA;
    getChildren(2): CHILD; nothing on a missing node for those), and its path must be strict
    UTF-8. It stops, leaving that frame in `buf`, at the first frame it does not serve (any
    other op, a watch flag it may not serve, a non-world-readable node, an undecodable body,
    an incomplete frame), or before a frame once `out` holds `max_out_bytes` or more (the
    connection's output budget: a reply started under it is completed). Raises FrameError as
    pop_frame does. Returns the number of frames served. Creates no Python object per served
    request without a watch."""

class Extremes:
    """Count, sum, smallest and largest of values added: srvr/mntr/cons min/avg/max."""

    count: int
    total: int
    min: int
    max: int
    def add(self, value: int, times: int = 1) -> None: ...
    @property
    def avg(self) -> float: ...

class ClientCore:
    """The per-request fields of a connection that the write fast paths use (see
    fastzk/node.py's Client)."""

    out: WriteBuffer
    state: int
    fifo: deque[Any]
    fifo_sizes: deque[int]
    fifo_bytes: int
    received: int
    sent: int
    last_zxid: int
    last_response_ms: int
    last_latency_ms: int
    latency_ms: Extremes
    def __init__(self) -> None: ...

class Pending:
    """A write (or sync) of a connection whose outcome is not known yet, in its FIFO; `reply`
    writes its answer once it is known and every earlier request has been answered."""

    xid: int
    reply: Callable[[], None] | None
    write: bool  # counted in the host's writes in flight until its outcome is known
    size: int  # its bytes counted in the host's large-request bytes in flight
    since: int  # quorum tick when it was sent on its way
    def __init__(self, xid: int, write: bool, since: int) -> None: ...

def serve_writes(
    buf: ReadBuffer,
    prep: PrepCore,
    conn: ClientCore,
    session_id: int,
    identities: Any,
    waiting: dict[tuple[int, int], Any],
    proposals: list[tuple[int, Txn]],
    refused: Callable[[int, int, Any], None],
    now_ms: int,
    since: int,
    limit: int,
    max_bytes: int,
    max_large_bytes: int,
    large_threshold: int,
) -> tuple[int, int, int, int, int]:
    """The write fast path of a leader: takes, in order, up to `limit` complete frames at the
    head of `buf` while each is a create (any kind), delete, setData, setACL or multi whose
    (session, xid) is not in `waiting` and whose body decodes. Each becomes a `Pending` at the
    end of `conn.fifo` (its size in `conn.fifo_sizes`), `waiting[(session_id, xid)] = conn`,
    and `prep`'s outcome: a txn appended to `proposals` as (zxid, txn), or
    `refused(session_id, xid, outcome)`. Stops before a frame once the frames taken hold
    `max_bytes`, or those over `large_threshold` hold `max_large_bytes`. Raises FrameError as
    pop_frame does. Returns (frames, their bytes, their large bytes, last xid, last op)."""

def apply_plain(
    applier: ApplierCore, txns: list[Txn], start: int, node: Any,
    replies: dict[tuple[int, int], int],
) -> tuple[int, int, int, int]:
    """Applies `txns[start:]` while each is a create, delete, setData or multi of a session
    that can fire no watch (no recursive watch, and no table WatchManager.trigger consults
    for its events names its nodes or their parents) and has no digest check due at its zxid
    (`node.digest_checks`), and answers those waiting
    in `node.waiting` as Node._apply does: the reply frame at the head of its connection's
    FIFO (then `node.drain(client)` when what follows is ready), or
    `node._resolve_applied(client, txn, result)` when earlier replies are held back. Replies
    are counted in `replies` by (op, latency ms). Returns (index of the first txn not applied,
    zxid of the last applied or 0, writes settled, their large-request bytes)."""

def serve_forwards(
    buf: ReadBuffer,
    conn: ClientCore,
    session_id: int,
    identities: tuple[tuple[str, str], ...],
    waiting: dict[tuple[int, int], Any],
    outbox: list[tuple[int, Any]],
    leader: int,
    make_forward: Callable[[int, bytes, tuple[tuple[str, str], ...]], Any],
    since: int,
    limit: int,
    max_bytes: int,
    max_large_bytes: int,
    large_threshold: int,
) -> tuple[int, int, int, int, int]:
    """`serve_writes` on a member that does not lead: the same frames, limits, FIFO entries
    and `waiting`, each frame (whose body must decode) appended to `outbox` as
    (leader, make_forward(session_id, frame, identities)) instead of being prepared."""

def decide_forwards(
    prep: PrepCore,
    forwards: tuple[Any, ...],
    start: int,
    sessions: dict[int, Any],
    proposals: list[tuple[int, Txn]],
    refused: Callable[[int, int, Any, int], None],
    sender: int,
    now_ms: int,
) -> int:
    """The leader decides forwarded writes (objects with session_id, frame, identities) from
    `forwards[start]` on while each is a common write of a session in `sessions` that is not
    closing and whose body decodes: a txn joins `proposals`, a failure goes to
    `refused(session_id, xid, outcome, sender)`. Returns the index of the first it left."""

def lin_search(
    entries: list[int],
    maybe: bytes,
    readonly: bytes,
    before: list[int],
    step: Callable[[int, int], int],
    initial_state: int,
    clock: Callable[[], float],
    deadline: float,
) -> tuple[int, list[int]]:
    """The linearizability checker's search over one partition (fastzk/check/search.py):
    Wing & Gong with Lowe's just-in-time linearization and memo cache of (linearized set,
    state). Operations are 0..n-1; `entries` are the 2n call (op*2) and return (op*2+1) entries
    in time order; maybe[op] != 0 marks an operation that may never have taken effect: those
    must be the highest-numbered, with their return entries after every other operation's;
    readonly[op] != 0 marks one that leaves every state it applies to unchanged (never
    retried elsewhere); before[op] is an operation that must be linearized before op, or -1;
    step(state, op) is the interned state after op or -1 (memoised per (state, op)). Returns
    (0, []) linearizable, (2, []) once clock() passed deadline (looked at every 4096 steps) or
    the memo cache (128-bit fingerprints) holds 12 million configurations, or (1, the longest
    linearizable prefix found)."""
