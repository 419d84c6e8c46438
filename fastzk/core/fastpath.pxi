# The read fast path: answers pings and watch-less reads of world-readable nodes straight from
# the receive buffer into the send buffer, without decoding them into Python objects.

cdef int put_children(WriteBuffer out, _Node node) except -1:
    """The vector<ustring> of node's child names in ZooKeeper's order (see children.pxi),
    copied from the set's cached encoding."""
    cdef bytes v
    if node.children is None:
        return out.put_i32(0)
    v = node.children.vector()
    return out.put_raw(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))


def serve_reads(ReadBuffer buf, DataTree tree, WriteBuffer out, int64_t zxid, Py_ssize_t limit,
                Py_ssize_t max_out_bytes):
    """Answers up to `limit` frames; stops before a frame once `out` holds `max_out_bytes`, so
    that a client that does not read its replies cannot make the server buffer them without
    bound (a reply started under the budget is completed: one larger reply still goes out)."""
    cdef Py_ssize_t served = 0
    cdef Py_ssize_t n, plen
    cdef const unsigned char* p
    cdef int32_t xid, op
    cdef PyObject* found
    cdef _Node node
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
            if p[12 + plen] != 0:
                break                       # a watch to register: the slow path's job
            if memchr(p + 12, 0, plen) != NULL:
                break
            found = tree.lookup(<const char*>p + 12, plen)
            if found == NULL:
                out.open_frame(xid, zxid, -101)
                out.close_frame()
            else:
                node = <_Node>found
                if not node.acl.world_read:
                    break
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
