# The write fast path: a leader takes a connection's common writes straight from its receive
# buffer into prep, with no Python frame per request. The host (fastzk/node.py) keeps every
# decision about *whether* this may run (role, session, limits) and does the per-batch
# accounting; what happens per request here is exactly what Node._write and Node._decide do.

cdef class Extremes:
    """How many values, their sum, the smallest and the largest: the min/avg/max figures that
    srvr and mntr (the server), cons (each connection) and the fsync statistics show. Plain
    C integers that the write fast path updates in place; safe to read from another thread
    for reporting (a torn read only skews one scrape)."""

    def add(self, int64_t value, int64_t times=1):
        extremes_add(self, value, times)

    @property
    def avg(self):
        return <double>self.total / self.count if self.count else 0.0


cdef inline void extremes_add(Extremes e, int64_t value, int64_t times) noexcept:
    if e.count == 0 or value < e.min:
        e.min = value
    if value > e.max:
        e.max = value
    e.total += value * times
    e.count += times


cdef class ClientCore:
    """The fields of a connection (fastzk/node.py's Client) that the write fast paths read
    and update per request, typed so that they cost no Python attribute lookup."""

    def __init__(self):
        self.out = WriteBuffer()
        self.state = 0
        self.fifo = deque()
        self.fifo_sizes = deque()
        self.fifo_bytes = 0
        self.received = 0
        self.sent = 0
        self.last_zxid = 0
        self.last_response_ms = 0
        self.last_latency_ms = 0
        self.latency_ms = Extremes()


@cython.final
cdef class Pending:
    """A write (or sync) of a connection whose outcome is not known yet, in the connection's
    FIFO. `reply` is set when its answer is known but an earlier request of the connection is
    still pending. A cdef class so that the write fast path makes one without a Python call."""

    def __init__(self, int32_t xid, bint write, int64_t since):
        self.xid = xid
        self.since = since      # quorum tick when it was sent on its way
        self.reply = None
        self.write = write      # counted in Node.inflight_writes until its outcome is known
        self.size = 0           # its bytes counted in Node.inflight_write_bytes


cdef inline bint is_fast_write(int32_t op) noexcept:
    """The writes prep decides alone: create (all kinds), delete, setData, setACL, multi.
    closeSession, reconfig and deleteContainer keep the host's own handling."""
    return (op == 5 or op == 1 or op == 2 or op == 15 or op == 14 or op == 7 or op == 19
            or op == 21)


def serve_writes(ReadBuffer buf, PrepCore prep, ClientCore conn, int64_t session_id,
                 object identities, dict waiting, list proposals, object refused,
                 int64_t now_ms, int64_t since, Py_ssize_t limit, Py_ssize_t max_bytes,
                 Py_ssize_t max_large_bytes, Py_ssize_t large_threshold):
    """Prepares up to `limit` write frames of session `session_id` (its connection `conn`),
    stopping before the first frame that is not one of them, that reuses an xid still in
    flight (`waiting`) or that does not decode: the host handles that one. Each served frame
    joins the connection's FIFO as a Pending and `waiting`; a txn joins `proposals`, a failure
    goes to `refused(session_id, xid, outcome)`. It stops once the frames taken hold
    `max_bytes`, or their large ones (over `large_threshold`) `max_large_bytes`, as the
    connection's and the server's outstanding limits would stop the host.

    Returns (frames, their bytes, their large bytes, last xid, last op) for the host's
    per-batch accounting."""
    return take_writes(buf, conn, session_id, waiting, since, limit, max_bytes,
                       max_large_bytes, large_threshold, prep, identities, proposals, refused,
                       now_ms, None, 0, None)


cdef tuple take_writes(ReadBuffer buf, ClientCore conn, int64_t session_id, dict waiting,
                       int64_t since, Py_ssize_t limit, Py_ssize_t max_bytes,
                       Py_ssize_t max_large_bytes, Py_ssize_t large_threshold,
                       PrepCore prep, object identities, list proposals, object refused,
                       int64_t now_ms, list outbox, int leader, object make_forward):
    """The loop of `serve_writes` (with `prep`) and `serve_forwards` (with `outbox`): the
    frames, limits, FIFO entries and `waiting` are the same; only where a write goes differs."""
    cdef object fifo = conn.fifo
    cdef object sizes = conn.fifo_sizes
    cdef Py_ssize_t served = 0, taken = 0, large = 0
    cdef Py_ssize_t n
    cdef const unsigned char* p
    cdef int32_t xid, op, last_xid = 0, last_op = 0
    cdef Cursor c
    cdef Pending pending
    cdef tuple key
    while served < limit and taken < max_bytes and large < max_large_bytes:
        n = buf._next_frame()
        if n < 8:
            break                           # incomplete, or too short for a header
        p = buf.buf + buf.head + 4
        xid = <int32_t>ld_u32(p)
        op = <int32_t>ld_u32(p + 4)
        if not is_fast_write(op):
            break
        key = (session_id, xid)
        if key in waiting:
            break                           # the host closes the connection
        c.p = p
        c.pos = 8
        c.end = n
        c.xid = xid
        c.op = op
        c.has_header = True
        try:
            body = rd_body(&c, op)
        except JuteError:
            break                           # the host answers MarshallingError in order
        frame = None if prep is not None else PyBytes_FromStringAndSize(<const char*>p, n)
        buf._advance(n + 4)
        pending = Pending.__new__(Pending)
        pending.xid = xid
        pending.since = since
        pending.write = True
        if n > large_threshold:
            pending.size = n
            large += n
        fifo.append(pending)
        sizes.append(n)
        waiting[key] = conn
        if prep is None:
            outbox.append((leader, make_forward(session_id, frame, identities)))
        else:
            outcome = prep._prepare(session_id, xid, op, body, identities, now_ms)
            if type(outcome) is Txn:
                proposals.append(((<Txn>outcome).zxid, outcome))
            else:
                refused(session_id, xid, outcome)
        taken += n
        served += 1
        last_xid = xid
        last_op = op
    return served, taken, large, last_xid, last_op


cdef inline bint is_plain_write(int32_t op) noexcept:
    """The ops whose txn `apply_unwatched` may apply: create (all kinds), delete, setData,
    multi."""
    return op == 5 or op == 1 or op == 2 or op == 14 or op == 15 or op == 19 or op == 21


def apply_plain(ApplierCore applier, list txns, Py_ssize_t start, object node, dict replies):
    """Applies committed txns from `txns[start]` on while each is a create, delete, setData or
    multi that `apply_unwatched` takes (it can fire no watch) and that has no digest check due,
    and answers those of this server's connections exactly as Node._apply does: the reply
    goes out at the head of its connection's FIFO (then `node.drain` writes what was queued
    behind it), or is handed to `node._resolve_applied` when earlier replies are held back.
    Replies are counted in `replies` ((op, latency ms) -> count) for per-batch statistics.

    Returns (index of the first txn not applied, zxid of the last applied or 0, writes
    settled, their large bytes): the host subtracts the last two from its totals and handles
    that txn itself."""
    cdef dict waiting = node.waiting
    cdef dict dirty = node.dirty
    cdef dict digest_checks = node.digest_checks
    cdef int64_t now_ms = node.now_ms
    cdef tuple tables = <tuple?>applier.watches.tables
    cdef DataTree tree = applier.tree
    cdef Py_ssize_t i = start, n = len(txns)
    cdef Py_ssize_t settled = 0, settled_bytes = 0
    cdef int64_t last_zxid = 0, latency
    cdef Txn txn
    cdef Pending head
    cdef PyObject* found
    cdef ClientCore client
    cdef object fifo, result, key
    while i < n:
        txn = <Txn>txns[i]
        if not is_plain_write(txn.op) or txn.session_id == 0:
            break
        if digest_checks and txn.zxid in digest_checks:
            break
        result = apply_unwatched(tree, txn, tables)
        if result is UNHANDLED:
            break
        i += 1
        last_zxid = txn.zxid
        found = PyDict_GetItem(waiting, (txn.session_id, txn.xid))
        if found == NULL:
            continue                        # another member's client, or one gone
        client = <ClientCore?>found
        del waiting[(txn.session_id, txn.xid)]
        if client.state != 2:               # State.READY
            continue
        fifo = client.fifo
        if (fifo and type(fifo[0]) is Pending and (<Pending>fifo[0]).xid == txn.xid
                and (<Pending>fifo[0]).reply is None):
            head = <Pending>fifo.popleft()
            client.fifo_bytes -= client.fifo_sizes.popleft()
            if head.write:
                head.write = False
                settled += 1
                settled_bytes += head.size
            put_reply(client.out, txn, result)
            client.sent += 1
            dirty[client] = None
            latency = now_ms - txn.time_ms if now_ms > txn.time_ms else 0
            key = (txn.op, latency)
            found = PyDict_GetItem(replies, key)
            replies[key] = 1 if found == NULL else <object>found + 1
            client.last_zxid = txn.zxid
            client.last_response_ms = now_ms
            client.last_latency_ms = latency
            extremes_add(client.latency_ms, latency, 1)
            if fifo and (type(fifo[0]) is not Pending or (<Pending>fifo[0]).reply is not None):
                node.applied_zxid = last_zxid   # queued reads answer at this zxid
                node.drain(client)
        else:                               # earlier replies are held back: it leaves after
            node.applied_zxid = last_zxid
            node._resolve_applied(client, txn, result)
    return i, last_zxid, settled, settled_bytes


def serve_forwards(ReadBuffer buf, ClientCore conn, int64_t session_id, tuple identities,
                   dict waiting, list outbox, int leader, object make_forward, int64_t since,
                   Py_ssize_t limit, Py_ssize_t max_bytes, Py_ssize_t max_large_bytes,
                   Py_ssize_t large_threshold):
    """A follower's or observer's `serve_writes`: the same frames, limits and FIFO entries,
    but each write goes to the leader as `make_forward(session_id, frame, identities)` in
    `outbox` (as (leader, message)) instead of to prep. The body is decoded only to be sure
    it decodes (one that does not is the host's: MarshallingError, answered here in order).
    Returns (frames, their bytes, their large bytes, last xid, last op)."""
    return take_writes(buf, conn, session_id, waiting, since, limit, max_bytes,
                       max_large_bytes, large_threshold, None, identities, None, None, 0,
                       outbox, leader, make_forward)


def decide_forwards(PrepCore prep, tuple forwards, Py_ssize_t start, dict sessions,
                    list proposals, object refused, int sender, int64_t now_ms):
    """The leader's part of forwarded writes (Node._on_forward, then Node._decide), from
    `forwards[start]` on while each is a common write (as `serve_writes` takes) of a session
    that is live here (`sessions`: id -> Session, not closing) whose body decodes: prep's
    txn joins `proposals`, a failure goes to `refused(session_id, xid, outcome, sender)`.
    Returns the index of the first forward it left to the host. Consecutive forwards of
    one connection carry equal identity tuples: their dict is built once."""
    cdef Py_ssize_t i = start, n = len(forwards)
    cdef object fwd, frame, body, outcome, ids
    cdef object last_ids = None, identities = None
    cdef PyObject* found
    cdef int64_t session_id
    cdef const unsigned char* p
    cdef Py_ssize_t size
    cdef int32_t xid, op
    cdef Cursor c
    while i < n:
        fwd = forwards[i]
        frame = fwd.frame
        if type(frame) is not bytes:
            break
        size = PyBytes_GET_SIZE(frame)
        if size < 8:
            break
        p = <const unsigned char*>PyBytes_AS_STRING(frame)
        xid = <int32_t>ld_u32(p)
        op = <int32_t>ld_u32(p + 4)
        if not is_fast_write(op):
            break
        session_id = fwd.session_id
        found = PyDict_GetItem(sessions, fwd.session_id)
        if found == NULL or (<object>found).closing:
            break                           # the host answers SessionExpired
        c.p = p
        c.pos = 8
        c.end = size
        c.xid = xid
        c.op = op
        c.has_header = True
        try:
            body = rd_body(&c, op)
        except JuteError:
            break
        ids = fwd.identities
        if ids is not last_ids and ids != last_ids:
            identities = dict.fromkeys(ids)
        last_ids = ids
        outcome = prep._prepare(session_id, xid, op, body, identities, now_ms)
        if type(outcome) is Txn:
            proposals.append(((<Txn>outcome).zxid, outcome))
        else:
            refused(session_id, xid, outcome, sender)
        i += 1
    return i
