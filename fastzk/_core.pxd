# Layouts and C-level methods of the cdef classes of fastzk._core (see _core.pyi for the Python
# contract). Declared here so that other Cython modules could cimport them later.

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint64_t


cdef class ReadBuffer:
    cdef unsigned char* buf
    cdef Py_ssize_t cap
    cdef Py_ssize_t head          # first unconsumed byte
    cdef Py_ssize_t tail          # end of received bytes
    cdef Py_ssize_t max_frame
    cdef Py_ssize_t exports       # live buffer views handed to the transport
    cdef bint filling             # free space handed out, buffer_updated not yet called

    cdef int _make_room(self, Py_ssize_t n) except -1
    cdef Py_ssize_t _next_frame(self) except -2
    cdef void _advance(self, Py_ssize_t n) noexcept
    cdef void _release_if_empty(self) noexcept


cdef class WriteBuffer:
    cdef unsigned char* buf
    cdef Py_ssize_t length
    cdef Py_ssize_t cap
    cdef Py_ssize_t frame_start   # offset of the open frame's length prefix, -1 if none

    cdef int _grow(self, Py_ssize_t n) except -1
    cdef int put_i32(self, int32_t v) except -1
    cdef int put_i64(self, int64_t v) except -1
    cdef int put_u8(self, unsigned char v) except -1
    cdef int put_raw(self, const char* p, Py_ssize_t n) except -1
    cdef int put_buffer(self, object v) except -1
    cdef int put_ustring(self, object v) except -1
    cdef int put_stat(self, object v) except -1
    cdef int open_frame(self, int32_t xid, int64_t zxid, int32_t err) except -1
    cdef int close_frame(self) except -1


cdef class _Acl:
    cdef tuple key                # tuple of (perms, scheme, id)
    cdef Py_ssize_t refs          # nodes using it; dropped from the intern table at 0
    cdef bint world_read          # grants READ to world:anyone (the fast path's only check)
    cdef int world_perms          # the permissions world:anyone holds (prep's fast check)
    cdef uint64_t h               # process-independent hash, part of the node digest


cdef class _Node


cdef struct JEntry:               # a HashMap.Node of a child set
    PyObject* node                # borrowed _Node (the path table owns it); NULL when free
    int32_t hash                  # HashMap.hash of the child's name
    int32_t next                  # next entry in its bin (iteration order), -1 = null;
                                  # the free list's link while free


cdef struct JTree:                # the extra fields of a HashMap.TreeNode
    int32_t parent
    int32_t left
    int32_t right
    int32_t prev
    unsigned char red
    unsigned char bin             # 1 while the entry is a TreeNode (its bin is a tree)


@cython.final
cdef class _Children:
    cdef int32_t* table           # bin heads (entry index, -1 = empty); NULL until first add
    cdef JEntry* entries
    cdef JTree* tree              # parallel to entries; NULL until a bin first treeifies
    cdef int32_t cap              # table length: 0, then 8, doubling, never shrinking
    cdef readonly int32_t size
    cdef int32_t threshold        # resize when size exceeds it (0.75 * cap)
    cdef int32_t ecap             # entries allocated
    cdef int32_t used             # entries ever handed out
    cdef int32_t free_head        # first free entry, -1 = none
    cdef Py_ssize_t name_off      # where a child's name starts in its path
    cdef bytes listing            # cached getChildren vector<ustring>; None when stale

    cdef const unsigned char* _name(self, int32_t e, Py_ssize_t* n) noexcept
    cdef bint _is(self, int32_t e, const unsigned char* name, Py_ssize_t n) noexcept
    cdef int _cmp(self, const unsigned char* name, Py_ssize_t n, int32_t e) noexcept
    cdef bint _treebin(self, int32_t e) noexcept
    cdef int32_t _alloc(self, PyObject* node, int32_t h, int32_t nxt) except -1
    cdef void _release(self, int32_t e) noexcept
    cdef int add(self, _Node child) except -1
    cdef int remove(self, _Node child) except -1
    cdef int _resize(self) except -1
    cdef int _treeify_bin(self, int32_t h) except -1
    cdef int32_t _root(self, int32_t e) noexcept
    cdef void _move_root_to_front(self, int32_t root) noexcept
    cdef int32_t _find(self, int32_t p, int32_t h, const unsigned char* name,
                       Py_ssize_t n) noexcept
    cdef int _dir(self, int32_t h, const unsigned char* name, Py_ssize_t n, int32_t p) noexcept
    cdef void _treeify(self, int32_t head) noexcept
    cdef int32_t _untreeify(self, int32_t first) noexcept
    cdef int _put_tree_val(self, int32_t first, PyObject* node, int32_t h,
                           const unsigned char* name, Py_ssize_t n) except -1
    cdef void _remove_tree_node(self, int32_t node) noexcept
    cdef void _split(self, int32_t b, int32_t index, int32_t bit) noexcept
    cdef int32_t _rotate_left(self, int32_t root, int32_t p) noexcept
    cdef int32_t _rotate_right(self, int32_t root, int32_t p) noexcept
    cdef int32_t _balance_insertion(self, int32_t root, int32_t x) noexcept
    cdef int32_t _balance_deletion(self, int32_t root, int32_t x) noexcept
    cdef bytes vector(self)
    cdef list names(self)
    cdef list paths(self)


cdef class _Node:
    cdef bytes path               # UTF-8, the hash-table key
    cdef object data              # bytes or None (null data is kept distinct from b"")
    cdef _Children children       # ZooKeeper's HashSet of child names; None until the first
                                  # child (then kept, as ZooKeeper keeps it, while the node lives)
    cdef _Acl acl
    cdef int64_t czxid
    cdef int64_t mzxid
    cdef int64_t ctime
    cdef int64_t mtime
    cdef int64_t pzxid
    cdef int64_t owner            # raw ephemeralOwner (session, CONTAINER_OWNER or TTL mask)
    cdef int32_t version
    cdef int32_t counter          # stored child-create counter
    cdef int32_t aversion
    cdef uint64_t khash           # hash of path
    cdef uint64_t data_h          # hash of data
    cdef uint64_t digest          # this node's share of the tree digest


cdef class DataTree:
    cdef uint64_t* hashes         # open-addressing table: path hash per slot
    cdef PyObject** slots         # owned references to _Node, NULL = empty slot
    cdef Py_ssize_t mask
    cdef Py_ssize_t count
    cdef dict acls                # key tuple -> _Acl
    cdef dict ephem               # session id -> {path: None} in creation order (normal
                                  # ephemerals only; kept while the session lives, as
                                  # ZooKeeper keeps its HashSet)
    cdef dict ephem_peak          # session id -> the most ephemerals it held at once
    cdef set special              # paths of containers and TTL nodes
    cdef uint64_t dsum            # sum of node digests
    cdef Py_ssize_t dsize         # sum of path and data lengths

    cdef PyObject* lookup(self, const char* p, Py_ssize_t n) noexcept
    cdef _Node find(self, str path)
    cdef int _table_grow(self) except -1
    cdef int _table_add(self, _Node node) except -1
    cdef void _table_remove(self, Py_ssize_t i) noexcept
    cdef Py_ssize_t _slot_of(self, _Node node) noexcept
    cdef _Acl _intern_acl(self, object acl)
    cdef void _release_acl(self, _Acl a)
    cdef void _redigest(self, _Node node) noexcept
    cdef _Node _attach(self, _Node parent, str name, str path, object data, object acl,
                       int64_t owner, int64_t zxid, int64_t time_ms)
    cdef tuple _stat(self, _Node node)
    cdef _Node _create(self, str path, object data, object acl, int64_t owner, int64_t zxid,
                       int64_t time_ms, int32_t parent_counter)
    cdef _Node _set_data(self, str path, object data, int32_t version, int64_t zxid,
                         int64_t time_ms)
    cdef int _delete(self, str path, int64_t zxid) except -1
    cdef _add_ephemeral(self, int64_t owner, str path)
    cdef int _ensure_builtins(self) except -1
    cdef int _restore_node(self, bytes path, object data, object acl, int64_t czxid,
                           int64_t mzxid, int64_t ctime, int64_t mtime, int64_t pzxid,
                           int64_t owner, int32_t version, int32_t counter,
                           int32_t aversion) except -1


cdef class Txn:
    cdef public int64_t zxid
    cdef public int64_t time_ms
    cdef public int64_t session_id
    cdef public int32_t xid
    cdef public int32_t op
    cdef public object changes    # list of change tuples (see core/prep.pxi)
    cdef readonly object record   # its encoded body, once encoded for an ensemble, or None


cdef class _View:                 # prep's view of a node: the tree plus prepared changes
    cdef str path
    cdef int64_t zxid             # 0 fresh from the tree, -1 being prepared, else its txn's
    cdef bint exists              # False: deleted by a prepared txn
    cdef int32_t version
    cdef int32_t aversion
    cdef int32_t counter          # stored child-create counter
    cdef Py_ssize_t children
    cdef int64_t owner            # raw ephemeralOwner
    cdef object acl               # tuple or list of (perms, scheme, id)
    cdef int world_perms          # permissions world:anyone holds under acl; -1 not yet known

    cdef _View copy(self)


cdef class PrepCore:
    cdef public DataTree tree
    cdef public int64_t last_zxid
    cdef public bint ttl_enabled
    cdef public bint skip_acl
    cdef public bint sasl_acls
    cdef object _check_acl        # server/acl.py's check and fix_acl
    cdef object _fix_acl
    cdef dict _pending            # path -> _View prepared and not yet applied
    cdef list _order              # the views of _pending as committed, in zxid order
    cdef Py_ssize_t _order_head   # _order[:_order_head] are forgotten
    cdef dict _scratch            # path -> _View changed by the request being prepared

    cdef _View _lookup(self, str path)
    cdef _View _own(self, _View view)
    cdef _View _writable(self, str path)
    cdef int _commit_scratch(self, int64_t zxid) except -1
    cdef Txn _next(self, int64_t session_id, int32_t xid, int32_t op, int64_t now_ms,
                   list changes)
    cdef bint _allowed(self, _View v, int perm, object identities) except -1
    cdef object _fixed_acl(self, object acl, object identities)
    cdef int _delete_in(self, str path, _View parent) except -1
    cdef object _prepare(self, int64_t session_id, int32_t xid, int32_t op, object body,
                         object identities, int64_t now_ms)
    cdef object _one(self, int64_t session_id, int op, object body, object identities,
                     int* err)
    cdef _View _existing(self, str path, int perm, object identities, int* err)
    cdef object _create(self, int64_t session_id, int op, object body, object identities,
                        int* err)
    cdef object _delete(self, object body, object identities, int* err)
    cdef object _set_data(self, object body, object identities, int* err)
    cdef object _set_acl(self, object body, object identities, int* err)
    cdef object _check(self, object body, object identities, int* err)


cdef class ApplierCore:
    cdef public DataTree tree
    cdef public object watches    # server/watches.py's WatchManager


cdef class SnapshotCursor:
    cdef DataTree tree
    cdef list stack               # [copied child paths, next index] per level
    cdef dict acl_ids             # ACL key tuple -> id defined in this snapshot
    cdef bint started
    cdef readonly Py_ssize_t nodes
    cdef readonly bint done

    cdef int _emit(self, WriteBuffer out, _Node n) except -1


cdef class WalScanner:
    cdef object obj               # keeps the scanned buffer alive
    cdef const unsigned char[::1] view
    cdef readonly Py_ssize_t pos
    cdef readonly Py_ssize_t end
    cdef readonly int64_t last_zxid
    cdef readonly int64_t last_batch
    cdef readonly object problem

    cdef Py_ssize_t _advance(self) except -2


cdef class Pending:
    cdef public int32_t xid
    cdef public object reply       # writes the answer once the FIFO reaches it, or None
    cdef public bint write
    cdef public Py_ssize_t size
    cdef public int64_t since


cdef class Extremes:
    cdef public int64_t count
    cdef public int64_t total
    cdef public int64_t min
    cdef public int64_t max


cdef class ClientCore:
    cdef public WriteBuffer out
    cdef public int state           # fastzk/node.py's State
    cdef public object fifo         # deque of Pending entries and reply callables
    cdef public object fifo_sizes   # deque: request bytes of each FIFO entry
    cdef public Py_ssize_t fifo_bytes
    cdef public int64_t received
    cdef public int64_t sent
    cdef public int64_t last_zxid
    cdef public int64_t last_response_ms
    cdef public int64_t last_latency_ms
    cdef public Extremes latency_ms
