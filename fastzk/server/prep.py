"""Request -> idempotent txn.

Prep decides every outcome of a write before it is logged: it validates in ZooKeeper's check
order, resolves sequence suffixes and versions, and assigns the zxid. Writes are prepared while
earlier ones are still on their way through the log, so prep looks at the tree through an
overlay of the changes that are prepared but not yet applied (ZooKeeper's "outstanding
changes"). A failed write becomes an error code, not a txn: it changes nothing, so it need not
be logged, and the host keeps it in its connection's reply order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastzk._core import DataTree
from fastzk.proto import (
    CONTAINER_OWNER,
    CREATE_OPS,
    MAX_TTL_MS,
    PROTECTED_PATHS,
    TTL_OWNER_MASK,
    CreateMode,
    Err,
    Op,
    Perm,
)
from fastzk.server import acl as acls
from fastzk.server.paths import parent_of, valid_path

MULTI_RESULT_TYPE = {
    Op.CREATE: Op.CREATE,
    Op.CREATE2: Op.CREATE2,
    Op.CREATE_CONTAINER: Op.CREATE2,
    Op.CREATE_TTL: Op.CREATE2,
    Op.DELETE: Op.DELETE,
    Op.SET_DATA: Op.SET_DATA,
    Op.CHECK: Op.CHECK,
}

# Change records, the body of a txn. Each is a tuple whose first item is one of these tags, and
# carries absolute values (versions, the parent's create counter) so that applying it twice is
# the same as applying it once, which is what replaying a log over a fuzzy snapshot needs:
#   (CREATE, path, data, acl, raw_owner, parent_counter)   (DELETE, path)
#   (SET_DATA, path, data, version)    (SET_ACL, path, acl, aversion)    (CHECK, path)
#   (CREATE_SESSION, session_id, timeout, passwd)          (CLOSE_SESSION, session_id)
#   (BARRIER, prev_zxid): opens a leader's epoch; prev_zxid is the log entry before it (0: the
#   first entry of the whole history, which recovery without a snapshot must find)
CREATE, DELETE, SET_DATA, SET_ACL, CHECK, CREATE_SESSION, CLOSE_SESSION, BARRIER = (
    "create", "delete", "set_data", "set_acl", "check", "create_session", "close_session",
    "barrier",
)


@dataclass(slots=True)
class Txn:
    """A decided write. `changes` are (tag, ...) tuples; for a multi they are
    (result_type, change) pairs so that the reply can mirror each op's type."""

    zxid: int
    time_ms: int
    session_id: int
    xid: int
    op: int
    changes: list[Any] = field(default_factory=list)


def is_normal_ephemeral(owner: int) -> bool:
    return owner != 0 and owner != CONTAINER_OWNER and (owner >> 56) != -1


class _View:
    """What prep knows of a node: applied state plus prepared changes."""

    __slots__ = ("version", "aversion", "counter", "children", "owner", "acl")

    def __init__(self, version: int, aversion: int, counter: int, children: int, owner: int,
                 acl: list) -> None:
        self.version = version
        self.aversion = aversion
        self.counter = counter
        self.children = children
        self.owner = owner
        self.acl = acl

    def copy(self) -> _View:
        return _View(self.version, self.aversion, self.counter, self.children, self.owner,
                     self.acl)


class _Failed(Exception):
    def __init__(self, err: int) -> None:
        self.err = err


def _multi_creates_by_flags(ops: list[tuple[int, Any]]) -> list[tuple[int, Any]] | None:
    """Inside a multi, ZooKeeper rebuilds every create from its flags, whatever its opcode:
    flags 4 make a container (a create2-style result), TTL flags need createTTL's ttl field
    (on any other create opcode the whole multi is a MarshallingError: None here), and any
    other flags make a plain create (a path-only result), createTTL's ttl being ignored."""
    result = []
    for op, body in ops:
        if op in CREATE_OPS:
            flags = body[3]
            if flags in CreateMode.TTL_MODES:
                if op != Op.CREATE_TTL:
                    return None
            elif flags == CreateMode.CONTAINER:
                op, body = Op.CREATE_CONTAINER, body[:4]
            else:
                op, body = Op.CREATE, body[:4]
        result.append((op, body))
    return result


def _wrap_int32(value: int) -> int:
    return ((value + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000


class Prep:
    def __init__(self, tree: DataTree, last_zxid: int, ttl_enabled: bool,
                 skip_acl: bool = False, sasl_acls: bool = False) -> None:
        self.tree = tree
        self.last_zxid = last_zxid  # the zxid of the newest prepared txn
        self.ttl_enabled = ttl_enabled
        self.skip_acl = skip_acl  # skipACL=yes: no ACL is checked (ACLs are still validated)
        self.sasl_acls = sasl_acls  # the sasl scheme has a provider: sasl:ID entries are valid
        self._pending: dict[str, tuple[int, _View | None]] = {}
        self._pending_order: deque[tuple[int, list[str]]] = deque()

    # --- overlay ---------------------------------------------------------------------------
    def _lookup(self, path: str, scratch: dict[str, _View | None]) -> _View | None:
        if path in scratch:
            return scratch[path]
        pending = self._pending.get(path)
        if pending is not None:
            return pending[1]
        info = self.tree.node_info(path)
        return None if info is None else _View(*info)

    def _writable(self, path: str, scratch: dict[str, _View | None]) -> _View:
        """The view of `path` that this request may change: a copy when it is shared with
        already-prepared txns, the fresh view itself when it came straight from the tree."""
        view = self._lookup(path, scratch)
        assert view is not None
        if scratch.get(path) is not view:
            if path in self._pending:
                view = view.copy()
            scratch[path] = view
        return view

    def _commit_scratch(self, zxid: int, scratch: dict[str, _View | None]) -> None:
        for path, view in scratch.items():
            self._pending[path] = (zxid, view)
        if scratch:
            self._pending_order.append((zxid, list(scratch)))

    def applied(self, zxid: int) -> None:
        """Forget prepared changes that the tree now reflects."""
        order = self._pending_order
        while order and order[0][0] <= zxid:
            change_zxid, paths = order.popleft()
            for path in paths:
                entry = self._pending.get(path)
                if entry is not None and entry[0] == change_zxid:
                    del self._pending[path]

    def _next(self, session_id: int, xid: int, op: int, now_ms: int,
              changes: list[Any]) -> Txn:
        self.last_zxid += 1
        return Txn(self.last_zxid, now_ms, session_id, xid, op, changes)

    # --- requests --------------------------------------------------------------------------
    def write(self, session_id: int, xid: int, op: int, body: Any, identities: acls.Identities,
              now_ms: int) -> Txn | int | list[int]:
        """A Txn, an error code, or (for a failed multi) the per-op error list."""
        scratch: dict[str, _View | None] = {}
        if op == Op.MULTI:
            body = _multi_creates_by_flags(body)
            if body is None:
                return Err.MARSHALLING_ERROR
            changes = []
            for index, (sub_op, sub_body) in enumerate(body):
                try:
                    change = self._one(session_id, sub_op, sub_body, identities, scratch)
                except _Failed as failure:
                    return [Err.OK] * index + [failure.err] + (
                        [Err.RUNTIME_INCONSISTENCY] * (len(body) - index - 1)
                    )
                changes.append((MULTI_RESULT_TYPE[sub_op], change))
        else:
            try:
                changes = [self._one(session_id, op, body, identities, scratch)]
            except _Failed as failure:
                return failure.err
        txn = self._next(session_id, xid, op, now_ms, changes)
        self._commit_scratch(txn.zxid, scratch)
        return txn

    def create_session(self, session_id: int, timeout: int, passwd: bytes, now_ms: int) -> Txn:
        return self._next(session_id, 0, Op.CREATE_SESSION, now_ms,
                          [(CREATE_SESSION, session_id, timeout, passwd)])

    def close_session(self, session_id: int, xid: int, now_ms: int) -> Txn:
        """Deletes of the session's ephemerals are decided here, so the txn is replayable."""
        owned = set(self.tree.ephemerals(session_id))
        for path, (_, view) in self._pending.items():
            if view is None:
                owned.discard(path)
            elif view.owner == session_id:
                owned.add(path)
        scratch: dict[str, _View | None] = {}
        changes: list[Any] = []
        for path in sorted(owned):
            self._delete_in(path, scratch)
            changes.append((DELETE, path))
        changes.append((CLOSE_SESSION, session_id))
        txn = self._next(session_id, xid, Op.CLOSE_SESSION, now_ms, changes)
        self._commit_scratch(txn.zxid, scratch)
        return txn

    def reap(self, path: str, now_ms: int) -> Txn | None:
        """A delete of an empty container that once had a child, or of a childless TTL node
        left unmodified for longer than its TTL; None when the node does not qualify (any
        more)."""
        view = self._lookup(path, {})
        if view is None or view.children or path in self._pending:
            return None
        owner = view.owner
        if owner == CONTAINER_OWNER:
            if view.counter == 0:
                return None  # never used: kept, as ZooKeeper keeps it
        elif owner >> 56 == -1:
            stat = self.tree.stat(path)
            if stat is None or now_ms - stat[3] <= owner & MAX_TTL_MS:
                return None
        else:
            return None
        scratch: dict[str, _View | None] = {}
        self._delete_in(path, scratch)
        txn = self._next(0, 0, Op.DELETE_CONTAINER, now_ms, [(DELETE, path)])
        self._commit_scratch(txn.zxid, scratch)
        return txn

    def _delete_in(self, path: str, scratch: dict[str, _View | None]) -> None:
        self._writable(parent_of(path), scratch).children -= 1
        scratch[path] = None

    def _one(self, session_id: int, op: int, body: Any, identities: acls.Identities,
             scratch: dict[str, _View | None]) -> tuple:
        if op == Op.SET_DATA:  # the most frequent write first
            return self._set_data(body, identities, scratch)
        if op in CREATE_OPS:
            return self._create(session_id, op, body, identities, scratch)
        if op == Op.DELETE:
            return self._delete(body, identities, scratch)
        if op == Op.SET_ACL:
            return self._set_acl(body, identities, scratch)
        if op == Op.CHECK:
            return self._check(body, identities, scratch)
        raise _Failed(Err.UNIMPLEMENTED)

    def _existing(self, path: str, perm: int, identities: acls.Identities,
                  scratch: dict[str, _View | None]) -> _View:
        view = self._lookup(path, scratch)
        if view is None:
            raise _Failed(Err.NO_NODE)
        if not (self.skip_acl or acls.check(view.acl, perm, identities)):
            raise _Failed(Err.NO_AUTH)
        return view

    def _create(self, session_id: int, op: int, body: Any, identities: acls.Identities,
                scratch: dict[str, _View | None]) -> tuple:
        if op == Op.CREATE_TTL:
            path, data, acl, flags, ttl = body
        else:
            path, data, acl, flags = body
            ttl = -1
        if not 0 <= flags <= 6:
            raise _Failed(Err.BAD_ARGUMENTS)
        ttl_mode = flags in CreateMode.TTL_MODES
        if ttl_mode and not self.ttl_enabled:
            raise _Failed(Err.UNIMPLEMENTED)
        if ttl_mode:
            if not 0 < ttl <= MAX_TTL_MS:
                raise _Failed(Err.BAD_ARGUMENTS)
        elif ttl >= 0:
            raise _Failed(Err.BAD_ARGUMENTS)
        if path.rfind("/") < 0 or "\0" in path:
            raise _Failed(Err.BAD_ARGUMENTS)
        fixed_acl = acls.fix_acl(acl, identities, self.sasl_acls)
        if fixed_acl is None:
            raise _Failed(Err.INVALID_ACL)
        parent_path = parent_of(path)
        parent = self._existing(parent_path, Perm.CREATE, identities, scratch)
        if flags in CreateMode.SEQUENTIAL_MODES:
            path = f"{path}{parent.counter:010d}"
        if not valid_path(path):
            raise _Failed(Err.BAD_ARGUMENTS)
        if self._lookup(path, scratch) is not None:
            raise _Failed(Err.NODE_EXISTS)
        if is_normal_ephemeral(parent.owner):
            raise _Failed(Err.NO_CHILDREN_FOR_EPHEMERALS)
        if op == Op.CREATE_CONTAINER:
            owner = CONTAINER_OWNER
        elif ttl_mode:
            owner = TTL_OWNER_MASK | ttl
        elif flags in CreateMode.EPHEMERAL_MODES:
            owner = session_id
        else:
            owner = 0
        parent = self._writable(parent_path, scratch)
        parent.counter = _wrap_int32(parent.counter + 1)
        parent.children += 1
        scratch[path] = _View(0, 0, 0, 0, owner, fixed_acl)
        return (CREATE, path, data, fixed_acl, owner, parent.counter)

    def _delete(self, body: Any, identities: acls.Identities, scratch: dict[str, _View | None]) -> tuple:
        path, version = body
        if path.rfind("/") < 0 or "\0" in path or path in PROTECTED_PATHS:
            raise _Failed(Err.BAD_ARGUMENTS)
        self._existing(parent_of(path), Perm.DELETE, identities, scratch)
        node = self._lookup(path, scratch)
        if node is None:
            raise _Failed(Err.NO_NODE)
        if version != -1 and version != node.version:
            raise _Failed(Err.BAD_VERSION)
        if node.children > 0:
            raise _Failed(Err.NOT_EMPTY)
        self._delete_in(path, scratch)
        return (DELETE, path)

    def _set_data(self, body: Any, identities: acls.Identities, scratch: dict[str, _View | None]) -> tuple:
        path, data, version = body
        if not valid_path(path):
            raise _Failed(Err.BAD_ARGUMENTS)
        node = self._existing(path, Perm.WRITE, identities, scratch)
        if version != -1 and version != node.version:
            raise _Failed(Err.BAD_VERSION)
        version = _wrap_int32(node.version + 1)
        self._writable(path, scratch).version = version
        return (SET_DATA, path, data, version)

    def _set_acl(self, body: Any, identities: acls.Identities, scratch: dict[str, _View | None]) -> tuple:
        path, acl, version = body
        if not valid_path(path):
            raise _Failed(Err.BAD_ARGUMENTS)
        fixed_acl = acls.fix_acl(acl, identities, self.sasl_acls)
        if fixed_acl is None:
            raise _Failed(Err.INVALID_ACL)
        node = self._existing(path, Perm.ADMIN, identities, scratch)
        if version != -1 and version != node.aversion:
            raise _Failed(Err.BAD_VERSION)
        writable = self._writable(path, scratch)
        writable.aversion = _wrap_int32(node.aversion + 1)
        writable.acl = fixed_acl
        return (SET_ACL, path, fixed_acl, writable.aversion)

    def _check(self, body: Any, identities: acls.Identities, scratch: dict[str, _View | None]) -> tuple:
        path, version = body
        if not valid_path(path):
            raise _Failed(Err.BAD_ARGUMENTS)
        node = self._existing(path, Perm.READ, identities, scratch)
        if version != -1 and version != node.version:
            raise _Failed(Err.BAD_VERSION)
        return (CHECK, path)
