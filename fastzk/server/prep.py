"""Request -> idempotent txn.

Prep decides every outcome of a write before it is logged: it validates in ZooKeeper's check
order, resolves sequence suffixes and versions, and assigns the zxid. Writes are prepared while
earlier ones are still on their way through the log, so prep looks at the tree through an
overlay of the changes that are prepared but not yet applied (ZooKeeper's "outstanding
changes"). A failed write becomes an error code, not a txn: it changes nothing, so it need not
be logged, and the host keeps it in its connection's reply order.

The work is done per request, so it lives in the Cython core (`core/prep.pxi`: `PrepCore`,
`Txn` and the change tags, whose tuple format is the log's); this module binds it to the ACL
rules of server/acl.py, which the core does not import.
"""

from __future__ import annotations

from fastzk._core import (
    BARRIER,
    CHECK,
    CLOSE_SESSION,
    CREATE,
    CREATE_SESSION,
    DELETE,
    SET_ACL,
    SET_DATA,
    DataTree,
    PrepCore,
    Txn,
)
from fastzk.server import acl as acls

__all__ = [
    "BARRIER", "CHECK", "CLOSE_SESSION", "CREATE", "CREATE_SESSION", "DELETE", "SET_ACL",
    "SET_DATA", "Prep", "Txn",
]


class Prep(PrepCore):
    """`write(session_id, xid, op, body, identities, now_ms)` -> Txn, error code or (a failed
    multi) per-op error list; `create_session`, `close_session`, `reap`, `applied(zxid)`."""

    __slots__ = ()

    def __init__(self, tree: DataTree, last_zxid: int, ttl_enabled: bool,
                 skip_acl: bool = False, sasl_acls: bool = False) -> None:
        super().__init__(tree, last_zxid, ttl_enabled, skip_acl, sasl_acls, acls.check,
                         acls.fix_acl)
