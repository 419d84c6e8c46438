"""Answers to read requests, straight from the applied tree.

This is the general path: watch registration, ACLs other than world-readable and every read
opcode. The common case (no watch, world-readable node) is answered in bulk by
`_core.serve_reads` before a frame ever reaches Python.
"""

from __future__ import annotations

from typing import Any

from fastzk._core import DataTree, WriteBuffer
from fastzk.proto import Err, Op, Perm
from fastzk.server import acl as acls
from fastzk.server.watches import CHILD, DATA, WatchManager


class Reads:
    def __init__(self, tree: DataTree, watches: WatchManager, skip_acl: bool = False) -> None:
        self.tree = tree
        self.watches = watches
        self.skip_acl = skip_acl  # skipACL=yes: every read is allowed, no ACL masked

    def _readable(self, path: str, perm: int, identities: Any) -> int:
        found = self.tree.get_acl(path)
        if found is None:
            return Err.NO_NODE
        if self.skip_acl or acls.check(found[0], perm, identities):
            return Err.OK
        return Err.NO_AUTH

    def answer(self, conn: Any, xid: int, op: int, body: Any, zxid: int) -> None:
        """Writes the reply of one read request to conn.out."""
        out: WriteBuffer = conn.out
        if op == Op.MULTI_READ:
            out.begin(xid, zxid, Err.OK)
            for sub_op, sub_body in body:
                self._multi_read_op(conn, out, sub_op, sub_body)
            out.write_int(-1)
            out.write_bool(True)
            out.write_int(-1)
            out.end()
            return
        err = self._answer(conn, out, xid, op, body, zxid)
        if err:
            out.reply_header(xid, zxid, err)

    def _multi_read_op(self, conn: Any, out: WriteBuffer, op: int, body: Any) -> None:
        path, _watch = body
        err = self._readable(path, Perm.READ, conn.identities)
        if err:
            out.write_int(-1)
            out.write_bool(False)
            out.write_int(err)
            out.write_int(err)
            return
        out.write_int(op)
        out.write_bool(False)
        out.write_int(Err.OK)
        if op == Op.GET_DATA:
            data, stat = self.tree.get_data(path)
            out.write_buffer(data)
            out.write_stat(stat)
        else:
            self.tree.write_children(out, path)

    def _answer(self, conn: Any, out: WriteBuffer, xid: int, op: int, body: Any,
                zxid: int) -> int:
        """Writes a success reply and returns 0, or returns the error code to send."""
        tree = self.tree
        if op == Op.EXISTS:
            path, watch = body
            if "\0" in path:
                return Err.BAD_ARGUMENTS
            err = self._readable(path, Perm.READ, conn.identities)
            if err == Err.NO_NODE:
                if watch:
                    self.watches.add(DATA, path, conn)
                return err
            if err:
                return err
            if watch:
                self.watches.add(DATA, path, conn)
            out.begin(xid, zxid, Err.OK)
            tree.write_stat(out, path)
            out.end()
            return Err.OK
        if op == Op.GET_DATA:
            path, watch = body
            err = self._readable(path, Perm.READ, conn.identities)
            if err:
                return err
            if watch:
                self.watches.add(DATA, path, conn)
            data, stat = tree.get_data(path)
            out.begin(xid, zxid, Err.OK)
            out.write_buffer(data)
            out.write_stat(stat)
            out.end()
            return Err.OK
        if op in (Op.GET_CHILDREN, Op.GET_CHILDREN2):
            path, watch = body
            err = self._readable(path, Perm.READ, conn.identities)
            if err:
                return err
            if watch:
                self.watches.add(CHILD, path, conn)
            out.begin(xid, zxid, Err.OK)
            tree.write_children(out, path)  # in ZooKeeper's order, see core/children.pxi
            if op == Op.GET_CHILDREN2:
                tree.write_stat(out, path)
            out.end()
            return Err.OK
        if op == Op.GET_ACL:
            found = tree.get_acl(body)
            if found is None:
                return Err.NO_NODE
            acl, stat = found
            if not self.skip_acl and not acls.check(acl, Perm.READ | Perm.ADMIN,
                                                    conn.identities):
                return Err.NO_AUTH
            if not self.skip_acl and not acls.check(acl, Perm.ADMIN, conn.identities):
                acl = acls.mask_digests(acl)
            out.begin(xid, zxid, Err.OK)
            out.write_acl_vector(acl)
            out.write_stat(stat)
            out.end()
            return Err.OK
        if op == Op.GET_ALL_CHILDREN_NUMBER:
            err = self._readable(body, Perm.READ, conn.identities)
            if err:
                return err
            out.begin(xid, zxid, Err.OK)
            out.write_int(tree.all_children_number(body))
            out.end()
            return Err.OK
        if op == Op.GET_EPHEMERALS:
            prefix = body.strip()
            owned = tree.ephemerals(conn.session_id)
            if prefix not in ("", "/"):
                owned = [path for path in owned if path.startswith(body)]
            out.begin(xid, zxid, Err.OK)
            out.write_string_vector(owned)
            out.end()
            return Err.OK
        if op == Op.WHO_AM_I:
            out.begin(xid, zxid, Err.OK)
            out.write_int(len(conn.identities))
            for scheme, ident in acls.zookeeper_order(conn.identities):
                out.write_ustring(scheme)
                out.write_ustring(ident.split(":", 1)[0] if scheme == "digest" else ident)
            out.end()
            return Err.OK
        if op == Op.SYNC:
            out.begin(xid, zxid, Err.OK)
            out.write_ustring(body)
            out.end()
            return Err.OK
        raise ValueError(f"not a read: {op}")
