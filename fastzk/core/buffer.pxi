# Framing buffers and big-endian integer packing.

class FrameError(Exception):
    """A length prefix that is negative or larger than the maximum frame size: close the
    connection without a reply."""


cdef inline uint32_t ld_u32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0]) << 24) | ((<uint32_t>p[1]) << 16) | ((<uint32_t>p[2]) << 8) | p[3]


cdef inline uint64_t ld_u64(const unsigned char* p) noexcept nogil:
    return ((<uint64_t>ld_u32(p)) << 32) | ld_u32(p + 4)


cdef inline void st_u32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef inline void st_u64(unsigned char* p, uint64_t v) noexcept nogil:
    st_u32(p, <uint32_t>(v >> 32))
    st_u32(p + 4, <uint32_t>v)


cdef enum:
    READ_CHUNK = 65536        # free space offered to the transport when it gives no hint
    READ_MIN_FREE = 4096
    WRITE_KEEP = 1048576      # a drained send buffer larger than this is shrunk
    WRITE_INITIAL = 256       # kept while a connection idles: most replies fit, others grow it


cdef class ReadBuffer:
    """Receive buffer of one connection, filled in place by asyncio.BufferedProtocol so that
    bytes are never copied between the socket and the decoder."""

    def __cinit__(self, Py_ssize_t max_frame):
        if max_frame < 0:
            raise ValueError("max_frame must be >= 0")
        self.max_frame = max_frame
        self.buf = NULL
        self.cap = self.head = self.tail = self.exports = 0
        self.filling = False

    def __dealloc__(self):
        free(self.buf)

    def __getbuffer__(self, Py_buffer* view, int flags):
        # The exported window is the free space after the received bytes.
        PyBuffer_FillInfo(view, self, self.buf + self.tail, self.cap - self.tail, 0, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* view):
        self.exports -= 1
        self._release_if_empty()

    cdef int _make_room(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t pending = self.tail - self.head
        cdef Py_ssize_t newcap
        cdef unsigned char* nb
        if self.cap - self.tail >= n:
            return 0
        if self.exports:
            raise BufferError("ReadBuffer resized while its free space is exported")
        if self.head and self.cap - pending >= n:
            memmove(self.buf, self.buf + self.head, pending)
            self.head, self.tail = 0, pending
            return 0
        newcap = self.cap if self.cap else READ_MIN_FREE
        while newcap - pending < n:
            newcap *= 2
        nb = <unsigned char*>malloc(newcap)
        if nb == NULL:
            raise MemoryError()
        if pending:
            memcpy(nb, self.buf + self.head, pending)
        free(self.buf)
        self.buf, self.cap, self.head, self.tail = nb, newcap, 0, pending
        return 0

    def get_buffer(self, Py_ssize_t sizehint):
        cdef Py_ssize_t want = sizehint if sizehint > 0 else READ_CHUNK
        cdef Py_ssize_t pending = self.tail - self.head
        cdef Py_ssize_t flen
        if want < READ_MIN_FREE:
            want = READ_MIN_FREE
        if pending >= 4:
            # Room for the rest of a large frame at once: one recv per frame, not per chunk.
            flen = <int32_t>ld_u32(self.buf + self.head)
            if 0 <= flen <= self.max_frame and flen + 4 - pending > want:
                want = flen + 4 - pending
        self._make_room(want)
        self.filling = True
        return memoryview(self)

    def buffer_updated(self, Py_ssize_t nbytes):
        if nbytes < 0 or nbytes > self.cap - self.tail:
            raise ValueError("buffer_updated beyond the buffer handed out")
        self.tail += nbytes
        self.filling = False

    @property
    def pending(self):
        return self.tail - self.head

    def peek(self, Py_ssize_t n):
        if n < 0 or self.tail - self.head < n:
            return None
        return PyBytes_FromStringAndSize(<char*>self.buf + self.head, n)

    cdef void _advance(self, Py_ssize_t n) noexcept:
        self.head += n
        self._release_if_empty()

    cdef void _release_if_empty(self) noexcept:
        """An emptied buffer is freed: an idle connection then holds no receive memory (the
        transport offers 64 KiB per read, and even an untouched allocation costs a page). uvloop
        releases its view only after buffer_updated returns, so this runs again then; a view
        released before buffer_updated may hold bytes not yet counted (`filling`)."""
        if self.head == self.tail and not self.exports and not self.filling \
                and self.buf != NULL:
            self.head = self.tail = 0
            free(self.buf)
            self.buf = NULL
            self.cap = 0

    def consume(self, Py_ssize_t n):
        if n < 0 or n > self.tail - self.head:
            raise ValueError("consume beyond the pending bytes")
        self._advance(n)

    cdef Py_ssize_t _next_frame(self) except -2:
        """Payload length of the complete frame at the head, -1 while it is incomplete. The
        prefix is judged alone so that an oversized frame is refused before its body."""
        cdef Py_ssize_t pending = self.tail - self.head
        cdef Py_ssize_t n
        if pending < 4:
            return -1
        n = <int32_t>ld_u32(self.buf + self.head)
        if n < 0 or n > self.max_frame:
            raise FrameError(n)
        if pending - 4 < n:
            return -1
        return n

    def pop_frame(self):
        cdef Py_ssize_t n = self._next_frame()
        if n < 0:
            return None
        frame = PyBytes_FromStringAndSize(<char*>self.buf + self.head + 4, n)
        self._advance(n + 4)
        return frame


cdef class WriteBuffer:
    """Outgoing bytes of one connection. Frames are built in place and their length prefix is
    back-patched, so a reply costs no intermediate bytes objects."""

    def __cinit__(self):
        self.buf = NULL
        self.length = self.cap = 0
        self.frame_start = -1

    def __dealloc__(self):
        free(self.buf)

    def __len__(self):
        return self.length

    cdef int _grow(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t newcap = self.cap if self.cap else WRITE_INITIAL
        cdef unsigned char* nb
        while newcap - self.length < n:
            newcap *= 2
        nb = <unsigned char*>realloc(self.buf, newcap)
        if nb == NULL:
            raise MemoryError()
        self.buf, self.cap = nb, newcap
        return 0

    cdef inline int put_i32(self, int32_t v) except -1:
        if self.cap - self.length < 4:
            self._grow(4)
        st_u32(self.buf + self.length, <uint32_t>v)
        self.length += 4
        return 0

    cdef inline int put_i64(self, int64_t v) except -1:
        if self.cap - self.length < 8:
            self._grow(8)
        st_u64(self.buf + self.length, <uint64_t>v)
        self.length += 8
        return 0

    cdef inline int put_u8(self, unsigned char v) except -1:
        if self.cap - self.length < 1:
            self._grow(1)
        self.buf[self.length] = v
        self.length += 1
        return 0

    cdef inline int put_raw(self, const char* p, Py_ssize_t n) except -1:
        if self.cap - self.length < n:
            self._grow(n)
        memcpy(self.buf + self.length, p, n)
        self.length += n
        return 0

    cdef int put_buffer(self, object v) except -1:
        if v is None:
            return self.put_i32(-1)
        if type(v) is not bytes:
            v = bytes(v)
        self.put_i32(<int32_t>PyBytes_GET_SIZE(v))
        return self.put_raw(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))

    cdef int put_ustring(self, object v) except -1:
        cdef Py_ssize_t n
        cdef const char* p
        if v is None:
            return self.put_i32(-1)
        try:
            p = PyUnicode_AsUTF8AndSize(v, &n)
        except UnicodeEncodeError:
            # Lone surrogates, as decoded from a Java client's CESU-8: give its bytes back.
            return self.put_buffer((<str>v).encode("utf-8", "surrogatepass"))
        self.put_i32(<int32_t>n)
        return self.put_raw(p, n)

    cdef int put_stat(self, object v) except -1:
        cdef tuple t = <tuple?>v
        if len(t) != 11:
            raise ValueError("a Stat has 11 fields")
        self.put_i64(t[0])
        self.put_i64(t[1])
        self.put_i64(t[2])
        self.put_i64(t[3])
        self.put_i32(t[4])
        self.put_i32(t[5])
        self.put_i32(t[6])
        self.put_i64(t[7])
        self.put_i32(t[8])
        self.put_i32(t[9])
        return self.put_i64(t[10])

    cdef int open_frame(self, int32_t xid, int64_t zxid, int32_t err) except -1:
        if self.frame_start >= 0:
            raise RuntimeError("begin() while a frame is open")
        if self.cap - self.length < 20:
            self._grow(20)
        self.frame_start = self.length
        st_u32(self.buf + self.length + 4, <uint32_t>xid)
        st_u64(self.buf + self.length + 8, <uint64_t>zxid)
        st_u32(self.buf + self.length + 16, <uint32_t>err)
        self.length += 20
        return 0

    cdef int close_frame(self) except -1:
        if self.frame_start < 0:
            raise RuntimeError("end() without begin()")
        st_u32(self.buf + self.frame_start, <uint32_t>(self.length - self.frame_start - 4))
        self.frame_start = -1
        return 0

    def take(self):
        if self.frame_start >= 0:
            raise RuntimeError("take() while a frame is open")
        out = PyBytes_FromStringAndSize(<char*>self.buf, self.length)
        self.length = 0
        if self.cap > WRITE_KEEP:
            free(self.buf)
            self.buf = NULL
            self.cap = 0
        return out

    def begin(self, int32_t xid, int64_t zxid, int32_t err):
        self.open_frame(xid, zxid, err)

    def end(self):
        self.close_frame()

    def write_int(self, int32_t v):
        self.put_i32(v)

    def write_long(self, int64_t v):
        self.put_i64(v)

    def write_bool(self, v):
        self.put_u8(1 if v else 0)

    def write_buffer(self, v):
        self.put_buffer(v)

    def write_ustring(self, v):
        self.put_ustring(v)

    def write_string_vector(self, list v):
        self.put_i32(<int32_t>len(v))
        for s in v:
            self.put_ustring(s)

    def write_acl_vector(self, list v):
        self.put_i32(<int32_t>len(v))
        for perms, scheme, ident in v:
            self.put_i32(perms)
            self.put_ustring(scheme)
            self.put_ustring(ident)

    def write_stat(self, v):
        self.put_stat(v)

    def reply_header(self, int32_t xid, int64_t zxid, int32_t err):
        self.open_frame(xid, zxid, err)
        self.close_frame()

    def write_raw(self, bytes v):
        if self.frame_start >= 0:
            raise RuntimeError("write_raw() while a frame is open")
        self.put_raw(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))

    def notification(self, int64_t zxid, int32_t event_type, int32_t state, path):
        self.open_frame(-1, zxid, 0)
        self.put_i32(event_type)
        self.put_i32(state)
        self.put_ustring(path)
        self.close_frame()

    def connect_response(self, int32_t timeout, int64_t session_id, passwd, read_only):
        cdef Py_ssize_t start = self.length
        if self.frame_start >= 0:
            raise RuntimeError("connect_response() while a frame is open")
        self.put_i32(0)                     # length, patched below
        self.put_i32(0)                     # protocolVersion
        self.put_i32(timeout)
        self.put_i64(session_id)
        self.put_buffer(passwd)
        if read_only is not None:
            self.put_u8(1 if read_only else 0)
        st_u32(self.buf + start, <uint32_t>(self.length - start - 4))
