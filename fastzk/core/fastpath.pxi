# The read fast path: answers pings and reads of world-readable nodes straight from the receive
# buffer into the send buffer, without decoding them into Python objects; a read with the watch
# flag registers its watch here too, as the slow path (server/reads.py) would.

from cpython.dict cimport PyDict_GetItem

cdef int put_children(WriteBuffer out, _Node node) except -1:
    """The vector<ustring> of node's child names in ZooKeeper's order (see children.pxi),
    copied from the set's cached encoding."""
    cdef bytes v
    if node.children is None:
        return out.put_i32(0)
    v = node.children.vector()
    return out.put_raw(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))


cdef int add_watch(dict table, str path, object conn, dict masks, long bit) except -1:
    """WatchManager.add (server/watches.py) for one kind: `conn` joins the path's watchers after
    those already there (notifications and admin listings follow that order) and `bit` joins
    the connection's mask of the path, so that closing the connection finds the watch."""
    cdef PyObject* watchers = PyDict_GetItem(table, path)
    cdef PyObject* mask
    if watchers == NULL:
        table[path] = {conn: None}
    else:
        (<dict>watchers)[conn] = None
    mask = PyDict_GetItem(masks, path)
    masks[path] = bit if mask == NULL else (<long><object>mask) | bit
    return 0


def serve_reads(ReadBuffer buf, DataTree tree, WriteBuffer out, int64_t zxid, Py_ssize_t limit,
                Py_ssize_t max_out_bytes, tuple watch_tables=None, object conn=None):
    """Answers up to `limit` frames; stops before a frame once `out` holds `max_out_bytes`, so
    that a client that does not read its replies cannot make the server buffer them without
    bound (a reply started under the budget is completed: one larger reply still goes out).
    With `watch_tables` (WatchManager.tables) and the connection, reads with the watch flag
    are answered too (watchers re-arm with them after every notification); the watch is
    registered only once the frame is sure to be served, and a path that is not strict UTF-8
    is left to the slow path, so that the table key is the string the slow path would use."""
    cdef Py_ssize_t served = 0
    cdef Py_ssize_t n, plen
    cdef const unsigned char* p
    cdef int32_t xid, op
    cdef PyObject* found
    cdef _Node node
    cdef bint watch
    cdef str path
    cdef dict masks = None
    while served < limit and out.length < max_out_bytes:
        n = buf._next_frame()
        if n < 8:
            break                           # incomplete, or too short for a header
        p = buf.buf + buf.head + 4
        xid = <int32_t>ld_u32(p)
        op = <int32_t>ld_u32(p + 4)
        if op == 11:
            if xid != -2:
                break
            out.open_frame(-2, zxid, 0)
            out.close_frame()
        elif op == 3 or op == 4 or op == 8 or op == 12:
            if n < 13:
                break
            plen = <int32_t>ld_u32(p + 8)
            if plen < 0 or plen > n - 13:
                break                       # null path (MarshallingError) or malformed
            watch = p[12 + plen] != 0
            if watch and watch_tables is None:
                break                       # no tables to register it in: the slow path's job
            if memchr(p + 12, 0, plen) != NULL:
                break
            found = tree.lookup(<const char*>p + 12, plen)
            if found != NULL and not (<_Node>found).acl.world_read:
                break
            # exists registers a data watch on a missing node too (an exist watch); getData
            # and getChildren register nothing there
            if watch and (found != NULL or op == 3):
                try:
                    path = PyUnicode_DecodeUTF8(<const char*>p + 12, plen, NULL)
                except UnicodeDecodeError:
                    break
                if masks is None:
                    masks = conn.watches
                if op == 3 or op == 4:
                    add_watch(<dict?>watch_tables[0], path, conn, masks, 1)
                else:
                    add_watch(<dict?>watch_tables[1], path, conn, masks, 2)
            if found == NULL:
                out.open_frame(xid, zxid, -101)
                out.close_frame()
            else:
                node = <_Node>found
                out.open_frame(xid, zxid, 0)
                if op == 4:
                    out.put_buffer(node.data)
                if op == 8 or op == 12:
                    put_children(out, node)
                if op != 8:
                    put_node_stat(out, node)
                out.close_frame()
        else:
            break
        buf._advance(n + 4)
        served += 1
    return served
