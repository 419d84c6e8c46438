"""Committed txn -> tree mutation, watch notifications and the reply body.

Notifications are returned in the order they must reach connections; the host writes them
before the writer's reply, which is what keeps ZooKeeper's "notification before the data that
reflects it" guarantee. A txn of one create, setData or delete, or a multi of those and
checks, that can fire no watch (the common case under write load) is applied by the core
(`ApplierCore.apply`), as are the reply frames (`write_reply`, `write_multi_failure`:
core/prep.pxi).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from fastzk._core import (
    BARRIER,
    CHECK,
    CLOSE_SESSION,
    CREATE,
    CREATE_SESSION,
    DELETE,
    SET_ACL,
    SET_DATA,
    ApplierCore,
    DataTree,
    Txn,
    WriteBuffer,
    parent_of,
    write_multi_failure,
    write_reply,
)
from fastzk.proto import SYNC_CONNECTED, Event, Op, Perm
from fastzk.server import acl as acls
from fastzk.server.sessions import SessionTable
from fastzk.server.watches import WatchManager

Notification = tuple[bytes, Collection[Any]]  # (the event's frame, the connections it goes to)


class Applier(ApplierCore):
    """`apply(txn)` -> (result, notifications): the core applies an unwatched create, setData
    or delete; `apply_changes` everything else."""

    def __init__(self, tree: DataTree, watches: WatchManager, sessions: SessionTable) -> None:
        self.tree = tree
        self.watches = watches
        self.sessions = sessions

    def _notify(self, out: list[Notification], path: str, event: int, acl_path: str) -> None:
        """Queues `event` for every watcher that may read the node it concerns: one frame,
        encoded once, for all of them."""
        data, child, persistent, recursive = self.watches.tables
        if not (data or child or persistent or recursive):
            return  # nobody watches anything: the common case under write load
        targets = self.watches.trigger(path, event)
        if not targets:
            return
        found = self.tree.get_acl(acl_path)
        acl = found[0] if found is not None else []
        if not acls.check(acl, Perm.READ, ()):  # not world-readable: it depends on who asks
            targets = [conn for conn in targets if acls.check(acl, Perm.READ, conn.identities)]
            if not targets:
                return
        out.append((notification_frame(event, path), targets))

    def _change(self, txn: Txn, change: tuple, out: list[Notification]) -> Any:
        tag = change[0]
        tree = self.tree
        if tag == CREATE:
            _, path, data, acl, owner, parent_counter = change
            stat = tree.create(path, data, acl, owner, txn.zxid, txn.time_ms, parent_counter)
            parent = parent_of(path)
            self._notify(out, path, Event.NODE_CREATED, path)
            self._notify(out, parent, Event.NODE_CHILDREN_CHANGED, parent)
            return (path, stat)
        if tag == SET_DATA:
            _, path, data, version = change
            stat = tree.set_data(path, data, version, txn.zxid, txn.time_ms)
            self._notify(out, path, Event.NODE_DATA_CHANGED, path)
            return stat
        if tag == DELETE:
            path = change[1]
            parent = parent_of(path)
            # the node's ACL is read before it goes: watchers are filtered by it
            self._notify(out, path, Event.NODE_DELETED, path)
            tree.delete(path, txn.zxid)
            self._notify(out, parent, Event.NODE_CHILDREN_CHANGED, parent)
            return None
        if tag == SET_ACL:
            _, path, acl, aversion = change
            return tree.set_acl(path, acl, aversion)
        if tag == CHECK or tag == BARRIER:
            return None
        if tag == CREATE_SESSION:
            _, session_id, timeout, passwd = change
            self.sessions.add(session_id, timeout, passwd, txn.time_ms)
            return None
        if tag == CLOSE_SESSION:
            self.sessions.remove(change[1])
            self.tree.forget_session(change[1])
            return None
        raise ValueError(f"unknown change {tag!r}")

    def apply_changes(self, txn: Txn) -> tuple[Any, Sequence[Notification]]:
        notifications: list[Notification] = []
        if txn.op == Op.MULTI:
            result = [(rtype, self._change(txn, change, notifications))
                      for rtype, change in txn.changes]
        else:
            result = None
            for change in txn.changes:
                result = self._change(txn, change, notifications)
        return result, notifications

    def replay(self, txn: Txn, fuzzy: bool) -> int:
        """Applies a txn read back from the log at start-up (nobody is watching yet), change
        by change. Over a fuzzy snapshot (`fuzzy`: the txn is not later than the zxid at which
        the snapshot's walk ended) a create whose parent is not there and a delete of a node
        that still has children are skipped: the snapshot holds those paths as of another
        moment, and a later txn of the log settles each of them, because txns carry absolute
        values. After that zxid the replayed tree equals the real one, so every change must
        apply: KeyError/ValueError then propagate. Returns the number of changes skipped."""
        changes = txn.changes if txn.op != Op.MULTI else [change for _, change in txn.changes]
        skipped = 0
        unused: list[Notification] = []
        for change in changes:
            try:
                self._change(txn, change, unused)
            except (KeyError, ValueError):
                if not fuzzy:
                    raise
                skipped += 1
        return skipped


_FRAME = WriteBuffer()  # where notification frames are encoded, then taken


def notification_frame(event: int, path: str) -> bytes:
    """A watch event's whole frame, encoded once and appended to each watcher's output."""
    _FRAME.notification(-1, event, SYNC_CONNECTED, path)
    return _FRAME.take()


__all__ = ["Applier", "notification_frame", "write_multi_failure", "write_reply"]
