# The znode tree. Nodes are typed _Node objects (no __dict__) held by an open-addressing hash
# table keyed by the UTF-8 path, so that the fast path can look a node up straight from the
# request bytes without building a key object.

cdef extern from *:
    """
    static inline uint64_t fzk_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
    """
    uint64_t fzk_rotl64(uint64_t x, int r) noexcept nogil


cdef inline uint64_t fmix64(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= 0xff51afd7ed558ccdULL
    k ^= k >> 33
    k *= 0xc4ceb9fe1a85ec53ULL
    k ^= k >> 33
    return k


cdef uint64_t hash_bytes(const unsigned char* p, Py_ssize_t n, uint64_t seed) noexcept nogil:
    """A murmur-style 64-bit hash, eight bytes per step. Fixed (unseeded by the process) so
    that digests agree between replicas."""
    cdef uint64_t h = seed ^ (<uint64_t>n * 0x9e3779b97f4a7c15ULL)
    cdef uint64_t k
    while n >= 8:
        memcpy(&k, p, 8)
        k *= 0x87c37b91114253d5ULL
        k = fzk_rotl64(k, 31)
        k *= 0x4cf5ad432745937fULL
        h ^= k
        h = fzk_rotl64(h, 27) * 5 + 0x52dce729
        p += 8
        n -= 8
    k = 0
    if n:
        memcpy(&k, p, n)
        k *= 0x87c37b91114253d5ULL
        k = fzk_rotl64(k, 31)
        k *= 0x4cf5ad432745937fULL
        h ^= k
    return fmix64(h)


cdef inline uint64_t mix(uint64_t h, uint64_t v) noexcept nogil:
    return fmix64(h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6)))


cdef inline uint64_t hash_data(object data):
    if data is None:
        return 0x6e756c6c64617461ULL          # distinct from any b"" hash
    return hash_bytes(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), 1)


cdef uint64_t hash_str(object s):
    b = s.encode("utf-8", "surrogatepass")
    return hash_bytes(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 2)


cdef enum:
    KIND_PERSISTENT = 0
    KIND_EPHEMERAL = 1
    KIND_CONTAINER = 2
    KIND_TTL = 3


cdef inline int owner_kind(int64_t owner) noexcept nogil:
    if owner == 0:
        return KIND_PERSISTENT
    if <uint64_t>owner == 0x8000000000000000ULL:
        return KIND_CONTAINER
    if (<uint64_t>owner & 0xFF00000000000000ULL) == 0xFF00000000000000ULL:
        return KIND_TTL
    return KIND_EPHEMERAL



cdef inline Py_ssize_t n_children(_Node node) noexcept:
    return 0 if node.children is None else node.children.size


cdef inline int32_t exposed_cversion(_Node node) noexcept:
    return <int32_t>(2 * <uint32_t>node.counter - <uint32_t>n_children(node))


cdef inline int64_t exposed_owner(_Node node) noexcept:
    return node.owner if owner_kind(node.owner) == KIND_EPHEMERAL else 0


cdef inline Py_ssize_t data_len(object data) noexcept:
    return 0 if data is None else PyBytes_GET_SIZE(data)


cdef int put_node_stat(WriteBuffer out, _Node n) except -1:
    cdef unsigned char* p
    if out.cap - out.length < 68:
        out._grow(68)
    p = out.buf + out.length
    st_u64(p, <uint64_t>n.czxid)
    st_u64(p + 8, <uint64_t>n.mzxid)
    st_u64(p + 16, <uint64_t>n.ctime)
    st_u64(p + 24, <uint64_t>n.mtime)
    st_u32(p + 32, <uint32_t>n.version)
    st_u32(p + 36, <uint32_t>exposed_cversion(n))
    st_u32(p + 40, <uint32_t>n.aversion)
    st_u64(p + 44, <uint64_t>exposed_owner(n))
    st_u32(p + 52, <uint32_t>data_len(n.data))
    st_u32(p + 56, <uint32_t>n_children(n))
    st_u64(p + 60, <uint64_t>n.pzxid)
    out.length += 68
    return 0


cdef int64_t signed_owner(object owner) except? -1:
    """Owners arrive signed (CONTAINER_OWNER, TTL_OWNER_MASK|ttl); also take the unsigned
    spelling rather than overflow."""
    if owner >= 0x8000000000000000:
        owner -= 0x10000000000000000
    return owner


cdef int world_perms(object acl) except -1:
    """The permissions world:anyone holds under `acl` (all of them for an empty list, which
    server/acl.py's check grants everything): a permission in it needs no identity check."""
    cdef int perms = 0
    if not acl:
        return 0x7FFFFFFF
    for entry_perms, scheme, ident in acl:
        if scheme == "world" and ident == "anyone":
            perms |= <int>(entry_perms & 0x7FFFFFFF)
    return perms


# Neither class can take part in a reference cycle (nodes point down to children, data and
# ACLs only), so both stay out of the cyclic GC: a large tree then costs nothing per collection.
@cython.no_gc
cdef class _Acl:
    pass


@cython.no_gc
cdef class _Node:
    pass


_OPEN_ACL = [(31, "world", "anyone")]
_READ_ACL = [(1, "world", "anyone")]


cdef _Children _path_set(int32_t capacity):
    """An empty HashSet<String> of whole paths (a session's ephemerals) with `capacity` bins,
    a power of two (HashMap's table for that initial capacity; a child set starts at 8)."""
    cdef _Children c = _Children.__new__(_Children)
    c.free_head = -1
    c.name_off = 0
    c.table = <int32_t*>malloc(capacity * sizeof(int32_t))
    if c.table == NULL:
        raise MemoryError()
    memset(c.table, 0xFF, capacity * sizeof(int32_t))
    c.cap = capacity
    c.threshold = capacity * 3 // 4
    return c


cdef extern from "Python.h":
    PyObject* PyDict_SetDefault(object d, object key, object default) except NULL  # borrowed
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

cdef extern from *:
    """
    #define fzk_prefetch(p) __builtin_prefetch(p)
    """
    void fzk_prefetch(const void* p) noexcept nogil

cdef enum:
    PREFETCH_AHEAD = 8   # restore_watches: paths whose table slot is loaded ahead of use


cdef inline void prefetch_slot(DataTree t, object path) noexcept:
    """Starts loading the table slot of an ASCII `path` into the cache: restore_watches looks
    up 100,000 paths in random order, and each lookup would otherwise wait on memory."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(path)
    cdef Py_ssize_t i
    if n == 0 or not PyUnicode_IS_ASCII(path):
        return
    i = <Py_ssize_t>(hash_bytes(<const unsigned char*>PyUnicode_DATA(path), n, 0)
                     & <uint64_t>t.mask)
    fzk_prefetch(&t.hashes[i])
    fzk_prefetch(&t.slots[i])


cdef class DataTree:
    """The znode tree; see _core.pyi for the contract."""

    def __cinit__(self):
        self.mask = 1023
        self.count = 0
        self.hashes = <uint64_t*>malloc((self.mask + 1) * sizeof(uint64_t))
        self.slots = <PyObject**>calloc(self.mask + 1, sizeof(PyObject*))
        if self.hashes == NULL or self.slots == NULL:
            raise MemoryError()
        self.acls = {}
        self.ephem = {}
        self.ephem_peak = {}
        self.special = set()
        self.dsum = 0
        self.dsize = 0

    def __init__(self):
        if self.count:
            return
        # The built-in nodes are attached without bumping the parents' create counters, which
        # is what gives / and /zookeeper their negative cversions on a real server.
        root = _Node()
        root.path = b"/"
        root.data = b""
        root.khash = hash_bytes(<const unsigned char*>"/", 1, 0)
        root.data_h = hash_data(b"")
        root.acl = self._intern_acl(_OPEN_ACL)
        self._table_add(root)
        self.dsize = 1
        self._redigest(root)
        self._ensure_builtins()

    cdef int _ensure_builtins(self) except -1:
        """/zookeeper, /zookeeper/quota and /zookeeper/config, each made anew when missing: in
        a fresh tree, and after loading a snapshot that lacks them (ZooKeeper 3.4's have no
        config node); they go last among their siblings, as a late insertion does."""
        cdef _Node zk = self.find("/zookeeper")
        cdef _Node config
        if zk is None:
            zk = self._attach(self.find("/"), "zookeeper", "/zookeeper", b"", _OPEN_ACL, 0, 0,
                              0)
        if self.find("/zookeeper/quota") is None:
            self._attach(zk, "quota", "/zookeeper/quota", b"", _OPEN_ACL, 0, 0, 0)
        if self.find("/zookeeper/config") is None:
            config = self._attach(zk, "config", "/zookeeper/config", b"", _READ_ACL, 0, 0, 0)
            config.aversion = -1
            self._redigest(config)
        return 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.slots != NULL:
            for i in range(self.mask + 1):
                if self.slots[i] != NULL:
                    Py_DECREF(<object>self.slots[i])
        free(self.slots)
        free(self.hashes)

    # --- hash table -------------------------------------------------------------------------

    cdef PyObject* lookup(self, const char* p, Py_ssize_t n) noexcept:
        """Borrowed reference to the node at UTF-8 path p[:n] ("" meaning "/"), or NULL."""
        cdef uint64_t h
        cdef Py_ssize_t i
        cdef PyObject* s
        cdef _Node node
        if n == 0:
            p, n = "/", 1
        h = hash_bytes(<const unsigned char*>p, n, 0)
        i = <Py_ssize_t>(h & <uint64_t>self.mask)
        while True:
            s = self.slots[i]
            if s == NULL:
                return NULL
            if self.hashes[i] == h:
                node = <_Node>s
                if PyBytes_GET_SIZE(node.path) == n and memcmp(PyBytes_AS_STRING(node.path), p, n) == 0:
                    return s
            i = (i + 1) & self.mask

    cdef _Node find(self, str path):
        cdef Py_ssize_t n
        cdef const char* p
        cdef PyObject* s
        try:
            p = PyUnicode_AsUTF8AndSize(path, &n)
        except UnicodeEncodeError:
            b = path.encode("utf-8", "surrogatepass")
            s = self.lookup(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
            return None if s == NULL else <_Node>s
        s = self.lookup(p, n)
        return None if s == NULL else <_Node>s

    cdef int _table_grow(self) except -1:
        cdef Py_ssize_t oldcap = self.mask + 1
        cdef Py_ssize_t newmask = oldcap * 2 - 1
        cdef uint64_t* oh = self.hashes
        cdef PyObject** os = self.slots
        cdef uint64_t* nh = <uint64_t*>malloc((newmask + 1) * sizeof(uint64_t))
        cdef PyObject** ns = <PyObject**>calloc(newmask + 1, sizeof(PyObject*))
        cdef Py_ssize_t i, j
        if nh == NULL or ns == NULL:
            free(nh)
            free(ns)
            raise MemoryError()
        for i in range(oldcap):
            if os[i] != NULL:
                j = <Py_ssize_t>(oh[i] & <uint64_t>newmask)
                while ns[j] != NULL:
                    j = (j + 1) & newmask
                ns[j] = os[i]
                nh[j] = oh[i]
        self.hashes, self.slots, self.mask = nh, ns, newmask
        free(oh)
        free(os)
        return 0

    cdef int _table_add(self, _Node node) except -1:
        cdef Py_ssize_t i
        if (self.count + 1) * 10 > (self.mask + 1) * 7:
            self._table_grow()
        i = <Py_ssize_t>(node.khash & <uint64_t>self.mask)
        while self.slots[i] != NULL:
            i = (i + 1) & self.mask
        Py_INCREF(node)
        self.slots[i] = <PyObject*>node
        self.hashes[i] = node.khash
        self.count += 1
        return 0

    cdef Py_ssize_t _slot_of(self, _Node node) noexcept:
        cdef Py_ssize_t i = <Py_ssize_t>(node.khash & <uint64_t>self.mask)
        while self.slots[i] != <PyObject*>node:
            i = (i + 1) & self.mask
        return i

    cdef void _table_remove(self, Py_ssize_t i) noexcept:
        """Backward-shift deletion: no tombstones, so probe chains stay short under churn."""
        cdef PyObject* gone = self.slots[i]
        cdef Py_ssize_t j = i
        cdef Py_ssize_t k
        while True:
            j = (j + 1) & self.mask
            if self.slots[j] == NULL:
                break
            k = <Py_ssize_t>(self.hashes[j] & <uint64_t>self.mask)
            if (i < k <= j) if i <= j else (i < k or k <= j):
                continue
            self.slots[i] = self.slots[j]
            self.hashes[i] = self.hashes[j]
            i = j
        self.slots[i] = NULL
        self.count -= 1
        Py_DECREF(<object>gone)

    # --- bookkeeping ------------------------------------------------------------------------

    cdef _Acl _intern_acl(self, object acl):
        cdef _Acl a = None
        try:
            a = self.acls.get(tuple(acl))       # the common case: a list of tuples seen before
        except TypeError:
            pass
        if a is None:
            key = tuple([(int(perms), scheme, ident) for perms, scheme, ident in acl])
            a = self.acls.get(key)
        if a is None:
            a = _Acl()
            a.key = key
            a.refs = 0
            a.world_read = False
            a.world_perms = world_perms(key)
            a.h = 0x61636cULL
            for perms, scheme, ident in key:
                if perms & 1 and scheme == "world" and ident == "anyone":
                    a.world_read = True
                a.h = mix(mix(mix(a.h, <uint64_t>(<int64_t>perms)), hash_str(scheme)),
                          hash_str(ident))
            self.acls[key] = a
        a.refs += 1
        return a

    cdef void _release_acl(self, _Acl a):
        a.refs -= 1
        if a.refs == 0:
            del self.acls[a.key]

    cdef void _redigest(self, _Node n) noexcept:
        cdef uint64_t h = n.khash
        h = mix(h, n.data_h)
        h = mix(h, <uint64_t>n.czxid)
        h = mix(h, <uint64_t>n.mzxid)
        h = mix(h, <uint64_t>n.ctime)
        h = mix(h, <uint64_t>n.mtime)
        h = mix(h, <uint32_t>n.version)
        h = mix(h, <uint32_t>n.counter)
        h = mix(h, <uint32_t>n.aversion)
        h = mix(h, <uint64_t>n.owner)
        h = mix(h, <uint64_t>n_children(n))
        h = mix(h, <uint64_t>n.pzxid)
        h = mix(h, n.acl.h)
        self.dsum += h - n.digest
        n.digest = h

    cdef _Node _attach(self, _Node parent, str name, str path, object data, object acl,
                       int64_t owner, int64_t zxid, int64_t time_ms):
        cdef _Node node = _Node()
        cdef int kind = owner_kind(owner)
        node.path = path.encode("utf-8", "surrogatepass")
        node.khash = hash_bytes(<const unsigned char*>PyBytes_AS_STRING(node.path),
                                PyBytes_GET_SIZE(node.path), 0)
        if data is not None and type(data) is not bytes:
            data = bytes(data)
        node.data = data
        node.data_h = hash_data(data)
        node.acl = self._intern_acl(acl)
        node.czxid = node.mzxid = node.pzxid = zxid
        node.ctime = node.mtime = time_ms
        node.owner = owner
        self._table_add(node)
        if parent.children is None:
            parent.children = new_children(parent)
        parent.children.add(node)
        self._redigest(parent)
        self._redigest(node)
        self.dsize += PyBytes_GET_SIZE(node.path) + data_len(data)
        if kind == KIND_EPHEMERAL:
            self._add_ephemeral(owner, path)
        elif kind != KIND_PERSISTENT:
            self.special.add(path)
        return node

    cdef _add_ephemeral(self, int64_t owner, str path):
        paths = self.ephem.get(owner)
        if paths is None:
            paths = self.ephem[owner] = {}
        paths[path] = None
        if len(paths) > self.ephem_peak.get(owner, 0):
            self.ephem_peak[owner] = len(paths)

    cdef tuple _stat(self, _Node n):
        return (n.czxid, n.mzxid, n.ctime, n.mtime, n.version, exposed_cversion(n), n.aversion,
                exposed_owner(n), data_len(n.data), n_children(n), n.pzxid)

    # --- queries ----------------------------------------------------------------------------

    def __len__(self):
        return self.count

    @property
    def data_size(self):
        return self.dsize

    def exists(self, str path):
        return self.find(path) is not None

    def stat(self, str path):
        cdef _Node n = self.find(path)
        return None if n is None else self._stat(n)

    def get_data(self, str path):
        cdef _Node n = self.find(path)
        return None if n is None else (n.data, self._stat(n))

    def get_children(self, str path):
        cdef _Node n = self.find(path)
        if n is None:
            return None
        return [] if n.children is None else n.children.names()

    def write_children(self, WriteBuffer out, str path):
        cdef _Node n = self.find(path)
        if n is None:
            return False
        put_children(out, n)
        return True

    def get_acl(self, str path):
        cdef _Node n = self.find(path)
        return None if n is None else (list(n.acl.key), self._stat(n))

    def node_info(self, str path):
        cdef _Node n = self.find(path)
        if n is None:
            return None
        return (n.version, n.aversion, n.counter, n_children(n), n.owner, n.acl.key)

    def restore_watches(self, list paths, int64_t rel_zxid, int field, int32_t gone,
                        int32_t changed, int32_t state, WriteBuffer out, dict table,
                        object conn):
        """setWatches' work for one list of paths, in C (a reconnecting client may send
        100,000): a path whose node changed after the client's zxid, or is gone, gets its
        notification (`changed`, `gone`) written to `out` now; any other gets the watch:
        `table[path][conn]` (the caller records `paths` for the connection's close, see
        server/watches.py). `field`: 0 compares mzxid (data watches),
        1 pzxid (child watches), -1 is an exist watch, for which the node being there is the
        change."""
        cdef str path
        cdef _Node n
        cdef dict fresh
        cdef PyObject* found
        cdef Py_ssize_t i, count = len(paths)
        for i in range(count):
            if i + PREFETCH_AHEAD < count:
                prefetch_slot(self, paths[i + PREFETCH_AHEAD])
            path = paths[i]
            n = self.find(path)
            if field < 0:
                if n is not None:
                    out.notification(-1, changed, state, path)
                    continue
            elif n is None:
                out.notification(-1, gone, state, path)
                continue
            elif (n.mzxid if field == 0 else n.pzxid) > rel_zxid:
                out.notification(-1, changed, state, path)
                continue
            # one hash probe for a path nobody watched (the usual case here)
            fresh = {conn: None}
            found = PyDict_SetDefault(table, path, fresh)
            if found != <PyObject*>fresh:
                (<dict>found)[conn] = None

    def ephemerals(self, session_id):
        """The session's ephemerals in the order ZooKeeper's getEphemerals lists them: the
        iteration order of a clone of the session's HashSet<String>, both modelled by the
        child sets' HashMap (core/children.pxi: resizes, tree bins). The set is rebuilt as
        ZooKeeper's grew: 16 bins, the session's paths added in creation order, then grown
        to what its largest size made it (it never shrinks); the clone is sized for the
        current size and filled in the set's order, as HashMap.clone does. Exact for a session
        that never deleted an ephemeral, or whose set never held 9 or more in one bin: when a
        bin of 9 grew the table or became a tree depends on the sizes the set went through,
        which the rebuild does not know."""
        cdef _Children held, clone
        cdef int32_t capacity = 16
        cdef int32_t j, e
        owner = signed_owner(session_id)
        paths = self.ephem.get(owner)
        if not paths:
            return []
        held = _path_set(capacity)
        for path in paths:
            held.add(self.find(path))
        while self.ephem_peak[owner] > held.threshold:
            held._resize()
        capacity = 1
        while capacity < int(len(paths) / 0.75 + 1.0):
            capacity *= 2
        clone = _path_set(capacity)
        for j in range(held.cap):
            e = held.table[j]
            while e >= 0:
                clone.add(<_Node>held.entries[e].node)
                e = held.entries[e].next
        return clone.names()

    def forget_session(self, session_id):
        """A closed session's emptied ephemeral set goes, as ZooKeeper drops it (one still
        holding paths stays: the index must match the tree)."""
        owner = signed_owner(session_id)
        if not self.ephem.get(owner, True):
            del self.ephem[owner]
            del self.ephem_peak[owner]

    def sessions_with_ephemerals(self):
        return {owner: list(paths) for owner, paths in self.ephem.items() if paths}

    def containers_and_ttls(self):
        return list(self.special)

    def all_children_number(self, str path):
        cdef _Node n = self.find(path)
        cdef Py_ssize_t total = 0
        cdef _Node child
        cdef _Children children
        cdef int32_t i
        if n is None:
            return None
        if n.path == b"/":
            return self.count - 1
        stack = [n]
        while stack:
            n = stack.pop()
            if n.children is not None:
                children = n.children
                total += children.size
                for i in range(children.used):
                    if children.entries[i].node != NULL:
                        child = <_Node>children.entries[i].node
                        if n_children(child):
                            stack.append(child)
        return total

    def digest(self):
        return self.dsum

    def write_stat(self, WriteBuffer out, str path):
        cdef _Node n = self.find(path)
        if n is None:
            return False
        put_node_stat(out, n)
        return True

    # --- mutators (trust the caller: prep validated the txn) --------------------------------

    def create(self, str path, data, acl, raw_owner, int64_t zxid, int64_t time_ms,
               int32_t parent_counter):
        return self._stat(self._create(path, data, acl, signed_owner(raw_owner), zxid, time_ms,
                                       parent_counter))

    cdef _Node _create(self, str path, object data, object acl, int64_t owner, int64_t zxid,
                       int64_t time_ms, int32_t parent_counter):
        """The node now at `path` (a replay over a fuzzy snapshot may find it there)."""
        cdef Py_ssize_t cut = path.rfind("/")
        cdef _Node parent
        cdef _Node existing
        if cut < 0 or len(path) < 2:
            raise KeyError(f"no parent: {path}")
        parent = self.find(path[:cut] if cut else "/")
        if parent is None:
            raise KeyError(f"no parent: {path}")
        parent.counter = parent_counter
        if zxid > parent.pzxid:
            parent.pzxid = zxid
        existing = self.find(path)
        if existing is not None:
            # replayed over a fuzzy snapshot that already holds the node
            self._redigest(parent)
            return existing
        return self._attach(parent, path[cut + 1:], path, data, acl, owner, zxid, time_ms)

    def delete(self, str path, int64_t zxid):
        self._delete(path, zxid)

    cdef int _delete(self, str path, int64_t zxid) except -1:
        cdef _Node node = self.find(path)
        cdef _Node parent
        cdef Py_ssize_t cut = path.rfind("/")
        cdef int kind
        if node is None:
            # replayed over a fuzzy snapshot that no longer holds the node
            if cut >= 0:
                parent = self.find(path[:cut] if cut else "/")
                if parent is not None and zxid > parent.pzxid:
                    parent.pzxid = zxid
                    self._redigest(parent)
            return 0
        if node.path == b"/":
            raise ValueError("the root cannot be deleted")
        if n_children(node):
            raise ValueError(f"node has children: {path}")
        parent = self.find(path[:cut] if cut else "/")
        parent.children.remove(node)
        parent.pzxid = zxid
        self._redigest(parent)
        self._table_remove(self._slot_of(node))
        self.dsum -= node.digest
        self.dsize -= PyBytes_GET_SIZE(node.path) + data_len(node.data)
        self._release_acl(node.acl)
        kind = owner_kind(node.owner)
        if kind == KIND_EPHEMERAL:
            del self.ephem[node.owner][path]
        elif kind != KIND_PERSISTENT:
            self.special.discard(path)
        return 0

    def set_config(self, bytes data):
        """/zookeeper/config's data: this member's view of the ensemble, as ZooKeeper publishes
        it. Kept out of the digest (its hash stays that of empty data): members may name each
        other by different addresses, and replicas compare digests. Called after every load,
        it also puts back built-in nodes a snapshot did not hold."""
        self._ensure_builtins()
        cdef _Node n = self.find("/zookeeper/config")
        self.dsize += data_len(data) - data_len(n.data)
        n.data = data
        n.data_h = hash_data(b"")
        self._redigest(n)

    def set_data(self, str path, data, int32_t version, int64_t zxid, int64_t time_ms):
        return self._stat(self._set_data(path, data, version, zxid, time_ms))

    cdef _Node _set_data(self, str path, object data, int32_t version, int64_t zxid,
                         int64_t time_ms):
        cdef _Node n = self.find(path)
        if n is None:  # a committed txn must apply: only a fuzzy replay may skip it
            raise KeyError(f"no node: {path}")
        if data is not None and type(data) is not bytes:
            data = bytes(data)
        self.dsize += data_len(data) - data_len(n.data)
        n.data = data
        n.data_h = hash_data(data)
        n.version = version
        n.mzxid = zxid
        n.mtime = time_ms
        self._redigest(n)
        return n

    def set_acl(self, str path, acl, int32_t aversion):
        cdef _Node n = self.find(path)
        cdef _Acl old
        if n is None:
            raise KeyError(f"no node: {path}")
        old = n.acl
        n.acl = self._intern_acl(acl)
        self._release_acl(old)
        n.aversion = aversion
        self._redigest(n)
        return self._stat(n)

    # --- snapshots ---------------------------------------------------------------------------
    # A snapshot is the byte stream of SnapshotCursor.next_chunk calls (see its docstring);
    # load_snapshot_chunk reads it back into a fresh tree.

    def snapshot_cursor(self):
        """A fuzzy, resumable depth-first walk of this tree; see SnapshotCursor."""
        return SnapshotCursor(self)

    def load_snapshot_chunk(self, chunk, dict acls):
        """Adds the nodes of one chunk from SnapshotCursor.next_chunk; `acls` carries the ACL
        definitions from chunk to chunk (start with {}). Meant for a fresh tree, whose built-in
        nodes are replaced by the snapshot's (into a tree that holds more, a node that exists
        already is overwritten in place). Each node joins its parent's child set in the order
        read, as in ZooKeeper's DataTree.deserialize. Parents must come before their
        children, as the cursor writes them. Raises ValueError on malformed input. Returns the
        number of nodes read."""
        cdef const unsigned char[::1] view = chunk
        cdef VCursor c
        cdef unsigned char tag
        cdef Py_ssize_t count = 0, n, i
        cdef int32_t dlen
        c.p = &view[0] if view.shape[0] else <const unsigned char*>""
        c.pos = 0
        c.end = view.shape[0]
        try:
            while c.pos < c.end:
                tag = c.p[c.pos]
                c.pos += 1
                if tag == 65:                                  # 'A': an ACL definition
                    aid = v_u32(&c)
                    n = v_u32(&c)
                    if n > (c.end - c.pos) // 12:
                        raise WalValueError("ACL count beyond the chunk")
                    acl = []
                    for i in range(n):
                        v_need(&c, 4)
                        perms = <int32_t>ld_u32(c.p + c.pos)
                        c.pos += 4
                        scheme = _chunk_str(&c)
                        acl.append((perms, scheme, _chunk_str(&c)))
                    acls[aid] = acl
                elif tag == 78:                                # 'N': a node
                    n = v_u32(&c)
                    v_need(&c, n)
                    path = PyBytes_FromStringAndSize(<const char*>c.p + c.pos, n)
                    c.pos += n
                    v_need(&c, 4)
                    dlen = <int32_t>ld_u32(c.p + c.pos)
                    c.pos += 4
                    if dlen == -1:
                        data = None
                    else:
                        v_need(&c, dlen)
                        data = PyBytes_FromStringAndSize(<const char*>c.p + c.pos, dlen)
                        c.pos += dlen
                    acl = acls.get(v_u32(&c))
                    if acl is None:
                        raise WalValueError("node refers to an undefined ACL")
                    v_need(&c, 60)
                    self._restore_node(
                        path, data, acl,
                        <int64_t>ld_u64(c.p + c.pos), <int64_t>ld_u64(c.p + c.pos + 8),
                        <int64_t>ld_u64(c.p + c.pos + 16), <int64_t>ld_u64(c.p + c.pos + 24),
                        <int64_t>ld_u64(c.p + c.pos + 32), <int64_t>ld_u64(c.p + c.pos + 40),
                        <int32_t>ld_u32(c.p + c.pos + 48), <int32_t>ld_u32(c.p + c.pos + 52),
                        <int32_t>ld_u32(c.p + c.pos + 56))
                    c.pos += 60
                    count += 1
                else:
                    raise WalValueError(f"unknown snapshot record tag {tag}")
        except (WalValueError, KeyError) as error:
            raise ValueError(f"malformed snapshot chunk at byte {c.pos}: {error}") from None
        return count

    cdef int _restore_node(self, bytes path, object data, object acl, int64_t czxid,
                           int64_t mzxid, int64_t ctime, int64_t mtime, int64_t pzxid,
                           int64_t owner, int32_t version, int32_t counter,
                           int32_t aversion) except -1:
        cdef PyObject* s = self.lookup(PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path))
        cdef _Node n
        cdef _Node parent
        cdef _Acl old
        cdef Py_ssize_t cut
        cdef int kind
        if s != NULL and PyBytes_GET_SIZE(path) == 1 and self.count == 4:
            # The root of a snapshot loaded into a fresh tree. ZooKeeper's load builds every
            # node anew, so each child set is refilled in the order the snapshot lists the
            # children (a set that shrank comes back smaller): the built-in nodes below the
            # root go, and come back from the snapshot's own records at their place.
            for builtin in ("/zookeeper/config", "/zookeeper/quota", "/zookeeper"):
                self.delete(builtin, 0)
            (<_Node>s).children = None
        if s != NULL:
            n = <_Node>s
            if n.owner != owner:
                raise WalValueError(f"snapshot changes the owner of existing node {path!r}")
            old = n.acl
            n.acl = self._intern_acl(acl)
            self._release_acl(old)
            self.dsize += data_len(data) - data_len(n.data)
            n.data = data
            n.data_h = hash_data(data)
        else:
            # _attach's work, minus what it would redo here (the path is bytes already)
            cut = path.rfind(b"/")
            if cut < 0 or PyBytes_GET_SIZE(path) < 2 or cut == PyBytes_GET_SIZE(path) - 1:
                raise WalValueError(f"bad path {path!r}")
            s = self.lookup(PyBytes_AS_STRING(path), cut) if cut else self.lookup("/", 1)
            if s == NULL:
                raise WalValueError(f"the parent of {path!r} comes after it")
            parent = <_Node>s
            n = _Node()
            n.path = path
            n.khash = hash_bytes(<const unsigned char*>PyBytes_AS_STRING(path),
                                 PyBytes_GET_SIZE(path), 0)
            n.data = data
            n.data_h = hash_data(data)
            n.acl = self._intern_acl(acl)
            n.owner = owner
            self._table_add(n)
            if parent.children is None:
                parent.children = new_children(parent)
            if not parent.children.add(n):
                raise WalValueError(f"{path!r} twice")
            self._redigest(parent)
            self.dsize += PyBytes_GET_SIZE(path) + data_len(data)
            kind = owner_kind(owner)
            if kind != KIND_PERSISTENT:
                path_s = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path),
                                              "surrogatepass")
                if kind == KIND_EPHEMERAL:
                    self._add_ephemeral(owner, path_s)
                else:
                    self.special.add(path_s)
        n.czxid = czxid
        n.mzxid = mzxid
        n.ctime = ctime
        n.mtime = mtime
        n.pzxid = pzxid
        n.version = version
        n.counter = counter
        n.aversion = aversion
        self._redigest(n)
        return 0


cdef str _chunk_str(VCursor* c):
    cdef int32_t n
    v_need(c, 4)
    n = <int32_t>ld_u32(c.p + c.pos)
    c.pos += 4
    if n == -1:
        return ""
    v_need(c, n)
    c.pos += n
    return PyUnicode_DecodeUTF8(<const char*>c.p + c.pos - n, n, "surrogatepass")


cdef class SnapshotCursor:
    """A fuzzy snapshot of a DataTree, taken a chunk at a time while the tree keeps changing.

    The walk is depth-first from the root. A node's child paths are copied when the node is
    written, in listing order (ZooKeeper's order, which loading re-creates: see
    load_snapshot_chunk), and each child is looked up by path when its turn comes (skipped if
    gone by then),
    so every node that exists for the whole walk is written, parents before children, each with
    its state at the moment it was written. Replaying the log from the zxid at which the walk
    started (txns are idempotent, see server/prep.py) turns the result into an exact state.

    Chunk records (big-endian):
      'A' u32 acl_id, u32 count, count x (i32 perms, i32 n + scheme, i32 n + id)
      'N' u32 n + path, i32 n (-1: null) + data, u32 acl_id, i64 czxid, mzxid, ctime, mtime,
          pzxid, raw owner, i32 version, create counter, aversion
    An ACL is defined once per snapshot, before the first node that uses it."""

    def __init__(self, DataTree tree):
        self.tree = tree
        self.stack = []
        self.acl_ids = {}
        self.started = False
        self.nodes = 0
        self.done = False

    cdef int _emit(self, WriteBuffer out, _Node n) except -1:
        cdef tuple key = n.acl.key
        aid = self.acl_ids.get(key)
        if aid is None:
            aid = len(self.acl_ids)
            self.acl_ids[key] = aid
            out.put_u8(65)
            out.put_i32(aid)
            out.put_i32(<int32_t>len(key))
            for perms, scheme, ident in key:
                out.put_i32(perms)
                out.put_ustring(scheme)
                out.put_ustring(ident)
        out.put_u8(78)
        out.put_i32(<int32_t>PyBytes_GET_SIZE(n.path))
        out.put_raw(PyBytes_AS_STRING(n.path), PyBytes_GET_SIZE(n.path))
        out.put_buffer(n.data)
        out.put_i32(aid)
        out.put_i64(n.czxid)
        out.put_i64(n.mzxid)
        out.put_i64(n.ctime)
        out.put_i64(n.mtime)
        out.put_i64(n.pzxid)
        out.put_i64(n.owner)
        out.put_i32(n.version)
        out.put_i32(n.counter)
        out.put_i32(n.aversion)
        self.nodes += 1
        if n_children(n):
            self.stack.append([n.children.paths(), 0])
        return 0

    def next_chunk(self, Py_ssize_t max_nodes):
        """The records of up to max_nodes more nodes (b"" once `done`)."""
        cdef WriteBuffer out = WriteBuffer()
        cdef Py_ssize_t count = 0
        cdef Py_ssize_t i
        cdef list frame, paths
        cdef bytes path
        cdef PyObject* s
        if self.done:
            return b""
        if not self.started:
            self.started = True
            s = self.tree.lookup("/", 1)
            self._emit(out, <_Node>s)
            count = 1
        while count < max_nodes and self.stack:
            frame = <list>self.stack[len(self.stack) - 1]
            paths = <list>frame[0]
            i = frame[1]
            if i >= len(paths):
                self.stack.pop()
                continue
            frame[1] = i + 1
            path = <bytes>paths[i]
            s = self.tree.lookup(PyBytes_AS_STRING(path), PyBytes_GET_SIZE(path))
            if s == NULL:
                continue                                  # deleted since its parent was written
            self._emit(out, <_Node>s)
            count += 1
        if not self.stack:
            self.done = True
        return PyBytes_FromStringAndSize(<char*>out.buf, out.length)
