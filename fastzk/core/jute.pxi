# Decoding of client requests (jute binary archive). Every length and count read from the wire
# is checked against the bytes left in the frame before anything is allocated from it.

class JuteError(Exception):
    """A frame whose body cannot be decoded. args = (xid, op) when the 8-byte request header was
    readable (answer MarshallingError, keep the connection), args = () when even the header was
    not (close the connection)."""


cdef struct Cursor:
    const unsigned char* p
    Py_ssize_t pos
    Py_ssize_t end
    int32_t xid
    int32_t op
    bint has_header


cdef int _fail(Cursor* c) except -1:
    if c.has_header:
        raise JuteError(c.xid, c.op)
    raise JuteError()


cdef inline int _need(Cursor* c, Py_ssize_t n) except -1:
    if c.end - c.pos < n:
        _fail(c)
    return 0


cdef inline int32_t rd_i32(Cursor* c) except? -1:
    _need(c, 4)
    c.pos += 4
    return <int32_t>ld_u32(c.p + c.pos - 4)


cdef inline int64_t rd_i64(Cursor* c) except? -1:
    _need(c, 8)
    c.pos += 8
    return <int64_t>ld_u64(c.p + c.pos - 8)


cdef inline int rd_bool(Cursor* c) except -1:
    _need(c, 1)
    c.pos += 1
    return c.p[c.pos - 1] != 0


cdef inline Py_ssize_t rd_len(Cursor* c) except -2:
    """A buffer/ustring length: -1 for null, else a length that fits in the frame."""
    cdef int32_t n = rd_i32(c)
    if n < -1 or n > c.end - c.pos:
        _fail(c)
    return n


cdef str decode_ustr(const char* p, Py_ssize_t n):
    """Strict UTF-8; Java's CESU-8 surrogate pairs pass through as surrogates; any other bad
    byte becomes U+FFFD, which path validation refuses, as the Java server does."""
    try:
        return PyUnicode_DecodeUTF8(p, n, NULL)
    except UnicodeDecodeError:
        pass
    try:
        return PyUnicode_DecodeUTF8(p, n, "surrogatepass")
    except UnicodeDecodeError:
        return PyUnicode_DecodeUTF8(p, n, "replace")


cdef object rd_ustring(Cursor* c, bint keep_null):
    """Null decodes to "" (kazoo sends "" as null) unless keep_null asks for None."""
    cdef Py_ssize_t n = rd_len(c)
    if n == -1:
        return None if keep_null else ""
    c.pos += n
    return decode_ustr(<const char*>c.p + c.pos - n, n)


cdef str rd_path(Cursor* c):
    """A request path. Unlike other strings, a null path is refused (MarshallingError), as
    Apache ZooKeeper refuses it."""
    cdef Py_ssize_t n = rd_len(c)
    if n == -1:
        _fail(c)
    c.pos += n
    return decode_ustr(<const char*>c.p + c.pos - n, n)


cdef object rd_buffer(Cursor* c):
    cdef Py_ssize_t n = rd_len(c)
    if n == -1:
        return None
    c.pos += n
    return PyBytes_FromStringAndSize(<const char*>c.p + c.pos - n, n)


cdef inline Py_ssize_t rd_count(Cursor* c, Py_ssize_t min_item) except -2:
    """A vector count, bounded by what the rest of the frame could hold: a hostile count can
    never make us allocate more than the frame itself."""
    cdef int32_t n = rd_i32(c)
    if n < -1 or <Py_ssize_t>n * min_item > c.end - c.pos:
        _fail(c)
    return n


cdef list rd_str_vector(Cursor* c):
    cdef Py_ssize_t n = rd_count(c, 4)
    cdef list out = []
    cdef Py_ssize_t i
    for i in range(n):
        out.append(rd_ustring(c, False))
    return out


cdef list rd_acl_vector(Cursor* c):
    cdef Py_ssize_t n = rd_count(c, 12)
    cdef list out = []
    cdef Py_ssize_t i
    cdef int32_t perms
    for i in range(n):
        perms = rd_i32(c)
        scheme = rd_ustring(c, False)
        out.append((perms, scheme, rd_ustring(c, False)))
    return out


cdef tuple rd_path_watch(Cursor* c):
    path = rd_path(c)
    return (path, rd_bool(c) != 0)


cdef tuple rd_create(Cursor* c, bint ttl):
    path = rd_path(c)
    data = rd_buffer(c)
    acl = rd_acl_vector(c)
    cdef int32_t flags = rd_i32(c)
    if ttl:
        return (path, data, acl, flags, rd_i64(c))
    return (path, data, acl, flags)


cdef tuple rd_path_int(Cursor* c):
    path = rd_path(c)
    return (path, rd_i32(c))


cdef object rd_body(Cursor* c, int32_t op):
    if op == 1 or op == 15 or op == 19:
        return rd_create(c, False)
    if op == 21:
        return rd_create(c, True)
    if op == 3 or op == 4 or op == 8 or op == 12:
        return rd_path_watch(c)
    if op == 2 or op == 13 or op == 17 or op == 18 or op == 106:
        return rd_path_int(c)
    if op == 5:
        path = rd_ustring(c, False)  # ZooKeeper answers BadArguments, not -5, to a null path here
        data = rd_buffer(c)
        return (path, data, rd_i32(c))
    if op == 6 or op == 104 or op == 20:
        return rd_path(c)
    if op == 9 or op == 103:
        return rd_ustring(c, False)
    if op == 7:
        path = rd_path(c)
        acl = rd_acl_vector(c)
        return (path, acl, rd_i32(c))
    if op == 14 or op == 22:
        return rd_multi(c, op == 14)
    if op == 100:
        kind = rd_i32(c)
        scheme = rd_ustring(c, False)
        auth = rd_buffer(c)
        return (kind, scheme, b"" if auth is None else auth)
    if op == 102:
        return rd_buffer(c)
    if op == 101 or op == 105:
        rel = rd_i64(c)
        data_w = rd_str_vector(c)
        exist_w = rd_str_vector(c)
        child_w = rd_str_vector(c)
        if op == 101:
            return (rel, data_w, exist_w, child_w)
        persistent = rd_str_vector(c)
        return (rel, data_w, exist_w, child_w, persistent, rd_str_vector(c))
    if op == 16:
        joining = rd_ustring(c, True)
        leaving = rd_ustring(c, True)
        members = rd_ustring(c, True)
        return (joining, leaving, members, rd_i64(c))
    return None


cdef list rd_multi(Cursor* c, bint write):
    cdef list ops = []
    cdef int32_t kind
    cdef bint done
    while True:
        kind = rd_i32(c)
        done = rd_bool(c)
        rd_i32(c)                                  # err: clients send -1, ignored
        if done:
            return ops
        if write:
            if not (kind == 1 or kind == 2 or kind == 5 or kind == 13 or kind == 15
                    or kind == 19 or kind == 21):
                _fail(c)
        elif not (kind == 4 or kind == 8):
            _fail(c)
        ops.append((kind, rd_body(c, kind)))


def decode_request(bytes payload):
    cdef Cursor c
    c.p = <const unsigned char*>PyBytes_AS_STRING(payload)
    c.pos = 0
    c.end = PyBytes_GET_SIZE(payload)
    c.has_header = False
    c.xid = rd_i32(&c)
    c.op = rd_i32(&c)
    c.has_header = True
    return (c.xid, c.op, rd_body(&c, c.op))


def decode_connect(bytes payload):
    cdef Cursor c
    c.p = <const unsigned char*>PyBytes_AS_STRING(payload)
    c.pos = 0
    c.end = PyBytes_GET_SIZE(payload)
    c.has_header = False
    cdef int32_t proto = rd_i32(&c)
    cdef int64_t last_zxid = rd_i64(&c)
    cdef int32_t timeout = rd_i32(&c)
    cdef int64_t session_id = rd_i64(&c)
    passwd = rd_buffer(&c)
    read_only = (c.p[c.pos] != 0) if c.pos < c.end else None
    return (proto, last_zxid, timeout, session_id, b"" if passwd is None else passwd, read_only)
