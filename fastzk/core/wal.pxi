# Write-ahead log record codec: CRC32C, a small self-describing value encoding for txn bodies,
# the record framing and the scan helpers recovery uses. No I/O here: runtime/wal.py owns the
# files and the writer thread.
#
# Record (all integers big-endian):
#   [0:4]   u32 body length L
#   [4:8]   u32 CRC32C of bytes [0:4] followed by bytes [8:24+L]
#   [8:16]  i64 zxid
#   [16:24] i64 batch: the zxid of the first record of the write (writev) that carried it.
#           Stamped by the writer thread when it seals the records of one group commit; it
#           lets recovery tell a torn final write from corruption of an earlier, synced one.
#   [24:24+L] body: i64 time_ms, i64 session_id, i32 xid, i32 op, value(changes)
# A header of 24 zero bytes (the preallocated, never written part of a segment) ends a segment.
#
# Values: one tag byte, then
#   'N' None  'T' True  'F' False  'I' i64  'J' u32 n + n bytes (a signed big integer)
#   'S' u32 n + UTF-8 (surrogates pass)  'B' u32 n + bytes  'U' tuple / 'L' list: u32 count + items

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_GET_SIZE


cdef enum:
    WAL_HEADER = 24
    WAL_MIN_BODY = 25                 # time, session, xid, op and one value tag
    WAL_MAX_BODY = 0x7FFFFFFF
    VALUE_MAX_DEPTH = 32


# --- CRC32C (Castagnoli, reflected polynomial 0x82F63B78), slicing-by-8 --------------------------

cdef uint32_t crc_tab[8][256]


cdef void _crc_init() noexcept:
    cdef uint32_t c
    cdef int i, j, k
    for i in range(256):
        c = <uint32_t>i
        for j in range(8):
            c = (c >> 1) ^ (0x82F63B78 if (c & 1) else 0)
        crc_tab[0][i] = c
    for i in range(256):
        c = crc_tab[0][i]
        for k in range(1, 8):
            c = crc_tab[0][c & 0xFF] ^ (c >> 8)
            crc_tab[k][i] = c


_crc_init()


cdef inline uint32_t ld_le32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0]) | ((<uint32_t>p[1]) << 8) | ((<uint32_t>p[2]) << 16) | ((<uint32_t>p[3]) << 24)


cdef uint32_t crc32c_update(uint32_t crc, const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t a, b
    crc = ~crc
    while n >= 8:
        a = ld_le32(p) ^ crc
        b = ld_le32(p + 4)
        crc = (crc_tab[7][a & 0xFF] ^ crc_tab[6][(a >> 8) & 0xFF]
               ^ crc_tab[5][(a >> 16) & 0xFF] ^ crc_tab[4][a >> 24]
               ^ crc_tab[3][b & 0xFF] ^ crc_tab[2][(b >> 8) & 0xFF]
               ^ crc_tab[1][(b >> 16) & 0xFF] ^ crc_tab[0][b >> 24])
        p += 8
        n -= 8
    while n > 0:
        crc = crc_tab[0][(crc ^ p[0]) & 0xFF] ^ (crc >> 8)
        p += 1
        n -= 1
    return ~crc


def crc32c(data, uint32_t crc=0):
    """CRC32C of a bytes-like object; pass a previous result as `crc` to continue it."""
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t n = view.shape[0]
    if n == 0:
        return crc
    with nogil:
        crc = crc32c_update(crc, &view[0], n)
    return crc


# --- values -------------------------------------------------------------------------------------

class WalValueError(ValueError):
    """Bytes that do not decode as a value (only reachable with a CRC-valid but foreign record)."""


cdef int put_value(WriteBuffer out, object v, int depth) except -1:
    cdef Py_ssize_t n
    cdef int64_t i
    if depth > VALUE_MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if v is None:
        return out.put_u8(78)            # 'N'
    if v is True:
        return out.put_u8(84)            # 'T'
    if v is False:
        return out.put_u8(70)            # 'F'
    t = type(v)
    if t is str:
        b = (<str>v).encode("utf-8", "surrogatepass")
        out.put_u8(83)                   # 'S'
        out.put_i32(<int32_t>PyBytes_GET_SIZE(b))
        return out.put_raw(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
    if t is bytes:
        out.put_u8(66)                   # 'B'
        out.put_i32(<int32_t>PyBytes_GET_SIZE(v))
        return out.put_raw(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
    if t is tuple or t is list:
        out.put_u8(85 if t is tuple else 76)   # 'U' / 'L'
        n = len(v)
        out.put_i32(<int32_t>n)
        for item in v:
            put_value(out, item, depth + 1)
        return 0
    if isinstance(v, int):
        try:
            i = v
        except OverflowError:
            b = int(v).to_bytes((int(v).bit_length() + 8) // 8, "big", signed=True)
            out.put_u8(74)               # 'J'
            out.put_i32(<int32_t>PyBytes_GET_SIZE(b))
            return out.put_raw(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
        out.put_u8(73)                   # 'I'
        return out.put_i64(i)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return put_value(out, bytes(v), depth)
    raise TypeError(f"cannot log a value of type {t.__name__}")


cdef struct VCursor:
    const unsigned char* p
    Py_ssize_t pos
    Py_ssize_t end


cdef inline int v_need(VCursor* c, Py_ssize_t n) except -1:
    if n < 0 or c.end - c.pos < n:
        raise WalValueError("value truncated")
    return 0


cdef inline uint32_t v_u32(VCursor* c) except? 0xFFFFFFFF:
    v_need(c, 4)
    c.pos += 4
    return ld_u32(c.p + c.pos - 4)


cdef object get_value(VCursor* c, int depth):
    cdef unsigned char tag
    cdef Py_ssize_t n, i
    cdef list items
    if depth > VALUE_MAX_DEPTH:
        raise WalValueError("value nested too deeply")
    v_need(c, 1)
    tag = c.p[c.pos]
    c.pos += 1
    if tag == 78:
        return None
    if tag == 84:
        return True
    if tag == 70:
        return False
    if tag == 73:
        v_need(c, 8)
        c.pos += 8
        return <int64_t>ld_u64(c.p + c.pos - 8)
    if tag == 83 or tag == 66 or tag == 74:
        n = v_u32(c)
        v_need(c, n)
        c.pos += n
        if tag == 66:
            return PyBytes_FromStringAndSize(<const char*>c.p + c.pos - n, n)
        if tag == 83:
            return PyUnicode_DecodeUTF8(<const char*>c.p + c.pos - n, n, "surrogatepass")
        return int.from_bytes(PyBytes_FromStringAndSize(<const char*>c.p + c.pos - n, n),
                              "big", signed=True)
    if tag == 85 or tag == 76:
        n = v_u32(c)
        if n > c.end - c.pos:            # every item takes at least one byte
            raise WalValueError("value count beyond its record")
        items = []
        for i in range(n):
            items.append(get_value(c, depth + 1))
        return tuple(items) if tag == 85 else items
    raise WalValueError(f"unknown value tag {tag}")


def encode_value(v):
    """The value encoding on its own (snapshot headers use it)."""
    cdef WriteBuffer out = WriteBuffer()
    put_value(out, v, 0)
    return PyBytes_FromStringAndSize(<char*>out.buf, out.length)


def decode_value(data):
    cdef const unsigned char[::1] view = data
    cdef VCursor c
    c.p = &view[0] if view.shape[0] else <const unsigned char*>""
    c.pos = 0
    c.end = view.shape[0]
    v = get_value(&c, 0)
    if c.pos != c.end:
        raise WalValueError("trailing bytes after value")
    return v


# --- records ------------------------------------------------------------------------------------

cdef int put_body(WriteBuffer out, txn) except -1:
    """A txn's record body: time, session, cxid, op and its changes."""
    out.put_i64(txn.time_ms)
    out.put_i64(txn.session_id)
    out.put_i32(txn.xid)
    out.put_i32(txn.op)
    return put_value(out, txn.changes, 0)


def encode_txns(txns, bint keep=False):
    """Unsealed records (CRC and batch zero) of txns, objects with zxid, time_ms, session_id,
    xid, op and changes, as one bytearray. `seal_records` finishes them. A `Txn` that already
    has its body (`record`) is copied, not encoded; with `keep` (ensembles) each Txn keeps the
    body encoded here, which replication messages then carry as it is, so a txn is encoded
    once on its leader and never on its followers (they log the bytes they received)."""
    cdef WriteBuffer out = WriteBuffer()
    cdef Py_ssize_t start, body
    cdef Txn t
    for txn in txns:
        start = out.length
        out.put_i32(0)
        out.put_i32(0)
        out.put_i64(txn.zxid)
        out.put_i64(0)
        body = out.length
        if type(txn) is Txn and (<Txn>txn).record is not None:
            t = <Txn>txn
            out.put_raw(PyBytes_AS_STRING(t.record), PyBytes_GET_SIZE(t.record))
        else:
            put_body(out, txn)
            if keep and type(txn) is Txn:
                (<Txn>txn).record = PyBytes_FromStringAndSize(<char*>out.buf + body,
                                                               out.length - body)
        if out.length - start - WAL_HEADER > WAL_MAX_BODY:
            raise ValueError("txn too large to log")
        st_u32(out.buf + start, <uint32_t>(out.length - start - WAL_HEADER))
    return PyByteArray_FromStringAndSize(<char*>out.buf, out.length)


def txn_body(Txn txn):
    """The txn's record body (as the log holds it after the zxid), encoded once and kept."""
    cdef WriteBuffer out
    if txn.record is None:
        out = WriteBuffer()
        put_body(out, txn)
        txn.record = PyBytes_FromStringAndSize(<char*>out.buf, out.length)
    return txn.record


def txn_from_body(int64_t zxid, bytes body):
    """The Txn of a record body (`txn_body`) received from a peer, keeping the bytes for the
    log. WalValueError when they are not one well-formed body with a list of changes."""
    cdef VCursor c
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    if n < 24:
        raise WalValueError("txn body too short")
    c.p = p
    c.pos = 24
    c.end = n
    changes = get_value(&c, 0)
    if c.pos != c.end:
        raise WalValueError("trailing bytes in txn body")
    if type(changes) is not list:
        raise WalValueError("a txn's changes must be a list")
    cdef Txn txn = Txn(zxid, <int64_t>ld_u64(p), <int64_t>ld_u64(p + 8),
                       <int32_t>ld_u32(p + 16), <int32_t>ld_u32(p + 20), changes)
    txn.record = body
    return txn


def seal_records(bytearray buf, int64_t batch):
    """Stamps `batch` into every record of buf (from encode_txns) and computes their CRCs,
    without the GIL. Returns the number of records."""
    cdef unsigned char* p = <unsigned char*>PyByteArray_AS_STRING(buf)
    cdef Py_ssize_t end = PyByteArray_GET_SIZE(buf)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t count = 0
    cdef uint32_t n, crc
    cdef bint bad = False
    with nogil:
        while pos < end:
            if end - pos < WAL_HEADER:
                bad = True
                break
            n = ld_u32(p + pos)
            if <Py_ssize_t>n > end - pos - WAL_HEADER:
                bad = True
                break
            st_u64(p + pos + 16, <uint64_t>batch)
            crc = crc32c_update(0, p + pos, 4)
            crc = crc32c_update(crc, p + pos + 8, 16 + <Py_ssize_t>n)
            st_u32(p + pos + 4, crc)
            pos += WAL_HEADER + n
            count += 1
    if bad:
        raise ValueError("not a buffer of encoded records")
    return count


cdef inline bint zxid_follows(int64_t prev, int64_t zxid) noexcept nogil:
    """Zxids are dense within an epoch: the next one is prev + 1, or a later epoch starts."""
    if prev <= 0:
        return zxid > 0
    return zxid == prev + 1 or (zxid >> 32) > (prev >> 32)


cdef Py_ssize_t check_record(const unsigned char* p, Py_ssize_t avail) noexcept nogil:
    """Length of the CRC-valid record at p (header included), 0 when the bytes there are all
    zero up to a full header (a clean end), -1 when they are anything else."""
    cdef Py_ssize_t i
    cdef uint32_t n, crc
    if avail < WAL_HEADER:
        for i in range(avail):
            if p[i] != 0:
                return -1
        return 0
    n = ld_u32(p)
    if n == 0:
        for i in range(WAL_HEADER):
            if p[i] != 0:
                return -1
        return 0
    if n < WAL_MIN_BODY or <Py_ssize_t>n > avail - WAL_HEADER:
        return -1
    crc = crc32c_update(0, p, 4)
    crc = crc32c_update(crc, p + 8, 16 + <Py_ssize_t>n)
    if crc != ld_u32(p + 4):
        return -1
    return WAL_HEADER + n


cdef class WalScanner:
    """Walks the records of one segment held in a buffer (bytes, mmap).

    `next_record()` returns (offset, zxid, batch, time_ms, session_id, xid, op, changes) for
    each CRC-valid record whose zxid follows the previous one, and None at the first record
    that is not: then `problem` is None for a clean end (end of buffer, or a zero header) and
    a description otherwise, and `pos` is that record's offset."""

    def __init__(self, buf, Py_ssize_t start, int64_t prev_zxid):
        self.obj = buf
        self.view = buf
        self.end = self.view.shape[0]
        if start < 0 or start > self.end:
            raise ValueError("start outside the buffer")
        self.pos = start
        self.last_zxid = prev_zxid
        self.last_batch = 0
        self.problem = None

    cdef Py_ssize_t _advance(self) except -2:
        """Length of the next record if it is valid and its zxid follows, else -1 with
        `problem` set (None for a clean end)."""
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef int64_t zxid
        if self.pos >= self.end:
            self.problem = None
            return -1
        p = &self.view[0] + self.pos
        n = check_record(p, self.end - self.pos)
        if n == 0:
            self.problem = None
            return -1
        if n < 0:
            if self.end - self.pos < WAL_HEADER:
                self.problem = f"partial record header ({self.end - self.pos} bytes)"
            elif ld_u32(p) < WAL_MIN_BODY or <Py_ssize_t>ld_u32(p) > self.end - self.pos - WAL_HEADER:
                self.problem = (f"record length {ld_u32(p)} does not fit the "
                                f"{self.end - self.pos - WAL_HEADER} bytes left")
            else:
                self.problem = "CRC mismatch"
            return -1
        zxid = <int64_t>ld_u64(p + 8)
        if not zxid_follows(self.last_zxid, zxid):
            self.problem = f"zxid {zxid:#x} does not follow {self.last_zxid:#x}"
            return -1
        return n

    def skip_record(self):
        """Like next_record without decoding the txn: True when a valid record was passed."""
        cdef Py_ssize_t n = self._advance()
        cdef const unsigned char* p
        if n < 0:
            return False
        p = &self.view[0] + self.pos
        self.last_zxid = <int64_t>ld_u64(p + 8)
        self.last_batch = <int64_t>ld_u64(p + 16)
        self.pos += n
        return True

    def next_record(self):
        cdef Py_ssize_t n = self._advance()
        cdef const unsigned char* p
        cdef VCursor c
        if n < 0:
            return None
        p = &self.view[0] + self.pos
        c.p = p
        c.pos = WAL_HEADER + 24
        c.end = n
        time_ms = <int64_t>ld_u64(p + 24)
        session_id = <int64_t>ld_u64(p + 32)
        xid = <int32_t>ld_u32(p + 40)
        op = <int32_t>ld_u32(p + 44)
        changes = get_value(&c, 0)
        if c.pos != c.end:
            raise WalValueError("trailing bytes in record body")
        offset = self.pos
        self.pos += n
        self.last_zxid = <int64_t>ld_u64(p + 8)
        self.last_batch = <int64_t>ld_u64(p + 16)
        return (offset, self.last_zxid, self.last_batch, time_ms, session_id, xid, op, changes)

    def release(self):
        """Drops the buffer (so that an mmap can be closed)."""
        self.view = None
        self.obj = None
        self.end = 0


def find_record(buf, Py_ssize_t start, int64_t after_zxid):
    """Offset of the first CRC-valid record at or after `start` whose zxid is above
    `after_zxid` (and within 2**40 of it), or -1. Recovery uses it to look past a bad record:
    a torn tail has nothing valid behind it."""
    cdef const unsigned char[::1] view = buf
    cdef Py_ssize_t end = view.shape[0]
    cdef Py_ssize_t pos = start
    cdef const unsigned char* base
    cdef uint64_t zxid
    cdef uint64_t span = (<uint64_t>1) << 40
    cdef Py_ssize_t found = -1
    if end == 0 or start >= end or start < 0:
        return -1
    base = &view[0]
    with nogil:
        while end - pos >= WAL_HEADER + WAL_MIN_BODY:
            zxid = ld_u64(base + pos + 8)
            if (<int64_t>zxid > after_zxid and zxid - <uint64_t>after_zxid < span
                    and check_record(base + pos, end - pos) > 0):
                found = pos
                break
            pos += 1
    return found
