# The write pipeline's per-request work: prep (request -> txn, see fastzk/server/prep.py for
# the rules it follows) and the apply + reply of the common committed writes. Both run once per
# write on the event-loop thread, so they are C here: typed overlay views instead of Python
# objects with attribute dicts, error codes instead of exceptions on the failure path, a
# permission mask per interned ACL instead of walking its entries for world:anyone.

from cpython.dict cimport PyDict_GetItem, PyDict_SetItem

# Change records, the body of a txn. Each is a tuple whose first item is one of these tags, and
# carries absolute values (versions, the parent's create counter) so that applying it twice is
# the same as applying it once, which is what replaying a log over a fuzzy snapshot needs:
#   (CREATE, path, data, acl, raw_owner, parent_counter)   (DELETE, path)
#   (SET_DATA, path, data, version)    (SET_ACL, path, acl, aversion)    (CHECK, path)
#   (CREATE_SESSION, session_id, timeout, passwd)          (CLOSE_SESSION, session_id)
#   (BARRIER, prev_zxid): opens a leader's epoch; prev_zxid is the log entry before it (0: the
#   first entry of the whole history, which recovery without a snapshot must find)
# The WAL and the peer codec carry them as they are: the strings are part of the log format.
CREATE = "create"
DELETE = "delete"
SET_DATA = "set_data"
SET_ACL = "set_acl"
CHECK = "check"
CREATE_SESSION = "create_session"
CLOSE_SESSION = "close_session"
BARRIER = "barrier"

# Wire constants (as in fastzk/proto) the C code switches on.
cdef enum:
    OP_CREATE = 1
    OP_DELETE = 2
    OP_SET_DATA = 5
    OP_SET_ACL = 7
    OP_CHECK = 13
    OP_MULTI = 14
    OP_CREATE2 = 15
    OP_CREATE_CONTAINER = 19
    OP_DELETE_CONTAINER = 20
    OP_CREATE_TTL = 21
    OP_CREATE_SESSION = -10
    OP_CLOSE_SESSION = -11

cdef enum:
    ERR_RUNTIME_INCONSISTENCY = -2
    ERR_MARSHALLING_ERROR = -5
    ERR_UNIMPLEMENTED = -6
    ERR_BAD_ARGUMENTS = -8
    ERR_NO_NODE = -101
    ERR_NO_AUTH = -102
    ERR_BAD_VERSION = -103
    ERR_NO_CHILDREN_FOR_EPHEMERALS = -108
    ERR_NODE_EXISTS = -110
    ERR_NOT_EMPTY = -111
    ERR_INVALID_ACL = -114

cdef enum:
    PERM_READ = 1
    PERM_WRITE = 2
    PERM_CREATE = 4
    PERM_DELETE = 8
    PERM_ADMIN = 16

from fastzk.proto import CONTAINER_OWNER, MAX_TTL_MS, PROTECTED_PATHS, TTL_OWNER_MASK

cdef int64_t CONTAINER_OWNER_C = CONTAINER_OWNER
cdef int64_t TTL_OWNER_MASK_C = TTL_OWNER_MASK
cdef int64_t MAX_TTL_MS_C = MAX_TTL_MS


cdef inline bint is_create_op(int op) noexcept:
    return op == OP_CREATE or op == OP_CREATE2 or op == OP_CREATE_CONTAINER or op == OP_CREATE_TTL


cdef inline int32_t wrap_inc(int32_t value) noexcept:
    """value + 1 with Java's int overflow (versions and counters are Java ints)."""
    return <int32_t>(<uint32_t>value + 1U)


cdef inline bint is_normal_ephemeral(int64_t owner) noexcept:
    return owner_kind(owner) == KIND_EPHEMERAL


cdef inline bint is_tag(object tag, str name):
    # tags read back from the log are equal strings, not the same object
    return tag is name or tag == name


# --- paths (ZooKeeper's rules, spec section 12.1) ---------------------------------------------

cdef bint c_valid_path(str path) noexcept:
    """Refuses code points ZooKeeper refuses (it checks UTF-16 units, so anything outside the
    BMP, arriving as surrogates, is refused too), empty components and "." or ".."
    components."""
    cdef Py_ssize_t n = len(path)
    cdef Py_UCS4 c
    cdef int after = 0   # 1: after "/", 2: after "/.", 3: after "/..", 0: elsewhere
    if n == 0 or path[0] != "/":
        return False
    if n == 1:
        return True
    if path[n - 1] == "/":
        return False
    for c in path:
        if c <= 0x1F or 0x7F <= c <= 0x9F or 0xD800 <= c <= 0xF8FF or c >= 0xFFF0:
            return False
        if c == 0x2F:                        # "/": ends a component, which must not be
            if after:                        # empty, "." or ".."
                return False
            after = 1
        elif c == 0x2E and 0 < after < 3:    # "."
            after += 1
        else:
            after = 0
    return after == 0


def valid_path(path):
    """ZooKeeper's path validation (create, setData, setACL, check, the reads); False for
    anything but a str (a null path)."""
    return type(path) is str and c_valid_path(path)


cdef inline str c_parent_of(str path):
    cdef Py_ssize_t cut = path.rfind("/")
    return path[:cut] if cut > 0 else "/"


def parent_of(str path):
    """Everything before the last '/', with '/' for top-level nodes."""
    return c_parent_of(path)


# --- txns ---------------------------------------------------------------------------------------

# Holds plain values only, so it stays out of the cyclic GC (like the tree's nodes): every
# GC-tracked allocation brings the next collection nearer, and prep makes one Txn per write.
@cython.final
@cython.no_gc
cdef class Txn:
    """A decided write. `changes` are (tag, ...) tuples; for a multi they are
    (result_type, change) pairs so that the reply can mirror each op's type."""

    def __init__(self, int64_t zxid, int64_t time_ms, int64_t session_id, int32_t xid,
                 int32_t op, changes=None):
        self.zxid = zxid
        self.time_ms = time_ms
        self.session_id = session_id
        self.xid = xid
        self.op = op
        self.changes = [] if changes is None else changes

    def __eq__(self, other):
        if type(other) is not Txn:
            return NotImplemented
        cdef Txn o = <Txn>other
        return (self.zxid == o.zxid and self.time_ms == o.time_ms
                and self.session_id == o.session_id and self.xid == o.xid and self.op == o.op
                and self.changes == o.changes)

    __hash__ = None

    def __repr__(self):
        return (f"Txn(zxid={self.zxid!r}, time_ms={self.time_ms!r}, "
                f"session_id={self.session_id!r}, xid={self.xid!r}, op={self.op!r}, "
                f"changes={self.changes!r})")


# --- prep ---------------------------------------------------------------------------------------

@cython.final
@cython.no_gc
cdef class _View:
    """What prep knows of a node: applied state plus prepared changes. A deleted node is a
    view with `exists` false (it hides the tree's node until the delete is applied). `zxid`
    says whose it is: 0 fresh from the tree (nobody's), -1 the request being prepared's, else
    the prepared txn's (shared: copied before a later request changes it)."""

    cdef _View copy(self):
        cdef _View v = _View.__new__(_View)
        v.path = self.path
        v.zxid = 0
        v.exists = self.exists
        v.version = self.version
        v.aversion = self.aversion
        v.counter = self.counter
        v.children = self.children
        v.owner = self.owner
        v.acl = self.acl
        v.world_perms = self.world_perms
        return v


cdef _View new_view(str path, int64_t owner, object acl):
    cdef _View v = _View.__new__(_View)
    v.path = path
    v.zxid = -1
    v.exists = True
    v.owner = owner
    v.acl = acl
    v.world_perms = -1
    return v


cdef _View gone_view(str path):
    cdef _View v = _View.__new__(_View)
    v.path = path
    v.zxid = -1
    v.exists = False
    v.acl = ()
    return v


cdef _View node_view(str path, _Node n):
    cdef _View v = _View.__new__(_View)
    v.path = path
    v.exists = True
    v.version = n.version
    v.aversion = n.aversion
    v.counter = n.counter
    v.children = n_children(n)
    v.owner = n.owner
    v.acl = n.acl.key
    v.world_perms = n.acl.world_perms
    return v


cdef int multi_result_type(int op) noexcept:
    if op == OP_CREATE_CONTAINER or op == OP_CREATE_TTL:
        return OP_CREATE2
    return op


cdef object multi_creates_by_flags(list ops):
    """Inside a multi, ZooKeeper rebuilds every create from its flags, whatever its opcode:
    flags 4 make a container (a create2-style result), TTL flags need createTTL's ttl field
    (on any other create opcode the whole multi is a MarshallingError: None here), and any
    other flags make a plain create (a path-only result), createTTL's ttl being ignored."""
    result = []
    for op, body in ops:
        if is_create_op(op):
            flags = body[3]
            if flags == 5 or flags == 6:
                if op != OP_CREATE_TTL:
                    return None
            elif flags == 4:
                op, body = OP_CREATE_CONTAINER, body[:4]
            else:
                op, body = OP_CREATE, body[:4]
        result.append((op, body))
    return result


cdef class PrepCore:
    """Request -> txn (fastzk/server/prep.py's Prep gives it server/acl.py's `check` and
    `fix_acl`, so the core does not import the pipeline)."""

    def __init__(self, DataTree tree, int64_t last_zxid, bint ttl_enabled, bint skip_acl,
                 bint sasl_acls, check_acl, fix_acl):
        self.tree = tree
        self.last_zxid = last_zxid   # the zxid of the newest prepared txn
        self.ttl_enabled = ttl_enabled
        self.skip_acl = skip_acl     # skipACL=yes: no ACL is checked (ACLs are still validated)
        self.sasl_acls = sasl_acls   # the sasl scheme has a provider: sasl:ID entries are valid
        self._check_acl = check_acl
        self._fix_acl = fix_acl
        self._pending = {}
        self._order = []
        self._order_head = 0
        self._scratch = {}

    # --- overlay -------------------------------------------------------------------------------
    cdef _View _lookup(self, str path):
        """The node as prep sees it, None when it does not exist (in the tree or the overlay)."""
        cdef PyObject* found = PyDict_GetItem(self._scratch, path)
        cdef _Node n
        if found == NULL:
            found = PyDict_GetItem(self._pending, path)
        if found != NULL:
            return <_View>found if (<_View>found).exists else None
        n = self.tree.find(path)
        return None if n is None else node_view(path, n)

    cdef _View _own(self, _View view):
        """The view of view.path that this request may change (`view` as _lookup gave it): a
        copy when it is shared with already-prepared txns, else the view itself."""
        if view.zxid == -1:
            return view
        if view.zxid > 0:
            view = view.copy()
        view.zxid = -1
        PyDict_SetItem(self._scratch, view.path, view)
        return view

    cdef _View _writable(self, str path):
        cdef _View view = self._lookup(path)
        if view is None:
            raise KeyError(f"prep changes a node it has not found: {path}")
        return self._own(view)

    cdef int _commit_scratch(self, int64_t zxid) except -1:
        # no list per txn: every allocation of a GC-tracked object brings the next collection
        # nearer, and prep runs once per write
        cdef _View v
        for v in self._scratch.values():
            v.zxid = zxid
            PyDict_SetItem(self._pending, v.path, v)
            self._order.append(v)
        self._scratch.clear()
        return 0

    def applied(self, int64_t zxid):
        """Forget prepared changes that the tree now reflects."""
        cdef list order = self._order
        cdef Py_ssize_t head = self._order_head
        cdef Py_ssize_t n = len(order)
        cdef _View v
        while head < n:
            v = <_View>order[head]
            if v.zxid > zxid:
                break
            if PyDict_GetItem(self._pending, v.path) == <PyObject*>v:
                del self._pending[v.path]
            head += 1
        if head == n:
            order.clear()
            head = 0
        elif head > 1024 and head * 2 > n:
            del order[:head]
            head = 0
        self._order_head = head

    cdef Txn _next(self, int64_t session_id, int32_t xid, int32_t op, int64_t now_ms,
                   list changes):
        cdef Txn txn = Txn.__new__(Txn)
        self.last_zxid += 1
        txn.zxid = self.last_zxid
        txn.time_ms = now_ms
        txn.session_id = session_id
        txn.xid = xid
        txn.op = op
        txn.changes = changes
        return txn

    cdef bint _allowed(self, _View v, int perm, object identities) except -1:
        if self.skip_acl:
            return True
        if v.world_perms < 0:
            v.world_perms = world_perms(v.acl)
        if v.world_perms & perm:
            return True          # what server/acl.py's check grants before any identity
        return bool(self._check_acl(v.acl, perm, identities))

    cdef object _fixed_acl(self, object acl, object identities):
        """server/acl.py's fix_acl, with the common world:anyone list answered here."""
        cdef tuple entry
        if type(acl) is list and len(<list>acl) == 1 and type((<list>acl)[0]) is tuple:
            entry = <tuple>(<list>acl)[0]
            if (len(entry) == 3 and type(entry[0]) is int and type(entry[1]) is str
                    and type(entry[2]) is str and entry[1] == "world" and entry[2] == "anyone"):
                return [entry]
        return self._fix_acl(acl, identities, self.sasl_acls)

    # --- requests ------------------------------------------------------------------------------
    def write(self, int64_t session_id, int32_t xid, int32_t op, body, identities,
              int64_t now_ms):
        """A Txn, an error code, or (for a failed multi) the per-op error list."""
        return self._prepare(session_id, xid, op, body, identities, now_ms)

    cdef object _prepare(self, int64_t session_id, int32_t xid, int32_t op, object body,
                         object identities, int64_t now_ms):
        cdef int err = 0
        cdef Py_ssize_t index, count
        cdef list changes
        cdef Txn txn
        self._scratch.clear()
        if op == OP_MULTI:
            ops = multi_creates_by_flags(body)
            if ops is None:
                return ERR_MARSHALLING_ERROR
            changes = []
            count = len(ops)
            for index in range(count):
                sub_op, sub_body = ops[index]
                change = self._one(session_id, sub_op, sub_body, identities, &err)
                if change is None:
                    self._scratch.clear()
                    return [0] * index + [err] + [ERR_RUNTIME_INCONSISTENCY] * (count - index - 1)
                changes.append((multi_result_type(sub_op), change))
        else:
            change = self._one(session_id, op, body, identities, &err)
            if change is None:
                self._scratch.clear()
                return err
            changes = [change]
        txn = self._next(session_id, xid, op, now_ms, changes)
        self._commit_scratch(txn.zxid)
        return txn

    def create_session(self, int64_t session_id, timeout, passwd, int64_t now_ms):
        return self._next(session_id, 0, OP_CREATE_SESSION, now_ms,
                          [(CREATE_SESSION, session_id, timeout, passwd)])

    def close_session(self, int64_t session_id, int32_t xid, int64_t now_ms):
        """Deletes of the session's ephemerals are decided here, so the txn is replayable."""
        cdef _View v
        owned = set(self.tree.ephemerals(session_id))
        for v in self._pending.values():
            if not v.exists:
                owned.discard(v.path)
            elif v.owner == session_id:
                owned.add(v.path)
        self._scratch.clear()
        changes = []
        for path in sorted(owned):
            self._delete_in(path, None)
            changes.append((DELETE, path))
        changes.append((CLOSE_SESSION, session_id))
        txn = self._next(session_id, xid, OP_CLOSE_SESSION, now_ms, changes)
        self._commit_scratch(txn.zxid)
        return txn

    def reap(self, str path, int64_t now_ms):
        """A delete of an empty container that once had a child, or of a childless TTL node
        left unmodified for longer than its TTL; None when the node does not qualify (any
        more)."""
        self._scratch.clear()
        cdef _View view = self._lookup(path)
        if view is None or view.children or path in self._pending:
            return None
        cdef int kind = owner_kind(view.owner)
        if kind == KIND_CONTAINER:
            if view.counter == 0:
                return None  # never used: kept, as ZooKeeper keeps it
        elif kind == KIND_TTL:
            stat = self.tree.stat(path)
            if stat is None or now_ms - stat[3] <= view.owner & MAX_TTL_MS_C:
                return None
        else:
            return None
        self._delete_in(path, None)
        txn = self._next(0, 0, OP_DELETE_CONTAINER, now_ms, [(DELETE, path)])
        self._commit_scratch(txn.zxid)
        return txn

    cdef int _delete_in(self, str path, _View parent) except -1:
        """`parent`: the view of path's parent, None to look it up."""
        parent = self._writable(c_parent_of(path)) if parent is None else self._own(parent)
        parent.children -= 1
        PyDict_SetItem(self._scratch, path, gone_view(path))
        return 0

    cdef object _one(self, int64_t session_id, int op, object body, object identities,
                     int* err):
        """The change, or None with the error code in *err."""
        if op == OP_SET_DATA:  # the most frequent write first
            return self._set_data(body, identities, err)
        if is_create_op(op):
            return self._create(session_id, op, body, identities, err)
        if op == OP_DELETE:
            return self._delete(body, identities, err)
        if op == OP_SET_ACL:
            return self._set_acl(body, identities, err)
        if op == OP_CHECK:
            return self._check(body, identities, err)
        err[0] = ERR_UNIMPLEMENTED
        return None

    cdef _View _existing(self, str path, int perm, object identities, int* err):
        cdef _View view = self._lookup(path)
        if view is None:
            err[0] = ERR_NO_NODE
            return None
        if not self._allowed(view, perm, identities):
            err[0] = ERR_NO_AUTH
            return None
        return view

    cdef object _create(self, int64_t session_id, int op, object body, object identities,
                        int* err):
        cdef int64_t flags, ttl, owner
        cdef bint ttl_mode
        cdef _View parent
        if op == OP_CREATE_TTL:
            path, data, acl, flags, ttl = body
        else:
            path, data, acl, flags = body
            ttl = -1
        if not 0 <= flags <= 6:
            err[0] = ERR_BAD_ARGUMENTS
            return None
        ttl_mode = flags == 5 or flags == 6
        if ttl_mode and not self.ttl_enabled:
            err[0] = ERR_UNIMPLEMENTED
            return None
        if ttl_mode:
            if not 0 < ttl <= MAX_TTL_MS_C:
                err[0] = ERR_BAD_ARGUMENTS
                return None
        elif ttl >= 0:
            err[0] = ERR_BAD_ARGUMENTS
            return None
        if (<str?>path).rfind("/") < 0 or "\0" in path:
            err[0] = ERR_BAD_ARGUMENTS
            return None
        fixed_acl = self._fixed_acl(acl, identities)
        if fixed_acl is None:
            err[0] = ERR_INVALID_ACL
            return None
        parent_path = c_parent_of(path)
        parent = self._existing(parent_path, PERM_CREATE, identities, err)
        if parent is None:
            return None
        if flags == 2 or flags == 3 or flags == 6:
            path = f"{path}{parent.counter:010d}"
        if not c_valid_path(path):
            err[0] = ERR_BAD_ARGUMENTS
            return None
        if self._lookup(path) is not None:
            err[0] = ERR_NODE_EXISTS
            return None
        if is_normal_ephemeral(parent.owner):
            err[0] = ERR_NO_CHILDREN_FOR_EPHEMERALS
            return None
        if op == OP_CREATE_CONTAINER:
            owner = CONTAINER_OWNER_C
        elif ttl_mode:
            owner = TTL_OWNER_MASK_C | ttl
        elif flags == 1 or flags == 3:
            owner = session_id
        else:
            owner = 0
        parent = self._own(parent)
        parent.counter = wrap_inc(parent.counter)
        parent.children += 1
        PyDict_SetItem(self._scratch, path, new_view(path, owner, fixed_acl))
        return (CREATE, path, data, fixed_acl, owner, parent.counter)

    cdef object _delete(self, object body, object identities, int* err):
        cdef int64_t version
        cdef _View node, parent
        path, version = body
        if (<str?>path).rfind("/") < 0 or "\0" in path or path in PROTECTED_PATHS:
            err[0] = ERR_BAD_ARGUMENTS
            return None
        parent = self._existing(c_parent_of(path), PERM_DELETE, identities, err)
        if parent is None:
            return None
        node = self._lookup(path)
        if node is None:
            err[0] = ERR_NO_NODE
            return None
        if version != -1 and version != node.version:
            err[0] = ERR_BAD_VERSION
            return None
        if node.children > 0:
            err[0] = ERR_NOT_EMPTY
            return None
        self._delete_in(path, parent)
        return (DELETE, path)

    cdef object _set_data(self, object body, object identities, int* err):
        cdef int64_t version
        cdef _View node
        path, data, version = body
        if not c_valid_path(path):
            err[0] = ERR_BAD_ARGUMENTS
            return None
        node = self._existing(path, PERM_WRITE, identities, err)
        if node is None:
            return None
        if version != -1 and version != node.version:
            err[0] = ERR_BAD_VERSION
            return None
        node = self._own(node)
        node.version = wrap_inc(node.version)
        return (SET_DATA, path, data, node.version)

    cdef object _set_acl(self, object body, object identities, int* err):
        cdef int64_t version
        cdef _View node, writable
        path, acl, version = body
        if not c_valid_path(path):
            err[0] = ERR_BAD_ARGUMENTS
            return None
        fixed_acl = self._fixed_acl(acl, identities)
        if fixed_acl is None:
            err[0] = ERR_INVALID_ACL
            return None
        node = self._existing(path, PERM_ADMIN, identities, err)
        if node is None:
            return None
        if version != -1 and version != node.aversion:
            err[0] = ERR_BAD_VERSION
            return None
        writable = self._own(node)
        writable.aversion = wrap_inc(node.aversion)
        writable.acl = fixed_acl
        writable.world_perms = -1
        return (SET_ACL, path, fixed_acl, writable.aversion)

    cdef object _check(self, object body, object identities, int* err):
        cdef int64_t version
        cdef _View node
        path, version = body
        if not c_valid_path(path):
            err[0] = ERR_BAD_ARGUMENTS
            return None
        node = self._existing(path, PERM_READ, identities, err)
        if node is None:
            return None
        if version != -1 and version != node.version:
            err[0] = ERR_BAD_VERSION
            return None
        return (CHECK, path)


# --- apply + reply ------------------------------------------------------------------------------

cdef object UNHANDLED = object()


cdef inline bint watched(dict table, str path) noexcept:
    return PyDict_GetItem(table, path) != NULL


cdef enum:
    PLAIN_NONE = 0      # not a change apply_unwatched takes, or one that may fire a watch
    PLAIN_CREATE = 1
    PLAIN_DELETE = 2
    PLAIN_SET_DATA = 3
    PLAIN_CHECK = 4


cdef int plain_kind(object change, dict data, dict child, dict persistent):
    """What kind of change `change` is, if it fires no watch: neither its node nor (create,
    delete) its parent has a registration in a table that WatchManager.trigger consults for
    its events. A registration the ACL filter would skip is still consumed by trigger, so it
    is not this function's to judge."""
    cdef tuple t
    cdef str path, parent
    cdef object tag
    cdef bint any_watch = bool(data) or bool(child) or bool(persistent)
    if type(change) is not tuple:
        return PLAIN_NONE
    t = <tuple>change
    tag = t[0]
    if is_tag(tag, SET_DATA) and len(t) == 4 and type(t[1]) is str:
        path = <str>t[1]
        if any_watch and (watched(data, path) or watched(persistent, path)):
            return PLAIN_NONE
        return PLAIN_SET_DATA
    if is_tag(tag, CREATE) and len(t) == 6 and type(t[1]) is str:
        path = <str>t[1]
        if any_watch:
            parent = c_parent_of(path)
            if (watched(data, path) or watched(persistent, path) or watched(child, parent)
                    or watched(persistent, parent)):
                return PLAIN_NONE
        return PLAIN_CREATE
    if is_tag(tag, DELETE) and len(t) == 2 and type(t[1]) is str:
        path = <str>t[1]
        if any_watch:
            parent = c_parent_of(path)
            if (watched(data, path) or watched(child, path) or watched(persistent, path)
                    or watched(child, parent) or watched(persistent, parent)):
                return PLAIN_NONE
        return PLAIN_DELETE
    if is_tag(tag, CHECK) and len(t) == 2:
        return PLAIN_CHECK
    return PLAIN_NONE


cdef object apply_plain_change(DataTree tree, Txn txn, tuple t, int kind):
    """The change's result as Applier._change gives it (create: (path, stat), setData: stat,
    delete and check: None)."""
    cdef _Node n
    if kind == PLAIN_SET_DATA:
        n = tree._set_data(t[1], t[2], t[3], txn.zxid, txn.time_ms)
        return tree._stat(n)
    if kind == PLAIN_CREATE:
        n = tree._create(t[1], t[2], t[3], signed_owner(t[4]), txn.zxid, txn.time_ms, t[5])
        return (t[1], tree._stat(n))
    if kind == PLAIN_DELETE:
        tree._delete(t[1], txn.zxid)
    return None


cdef object apply_unwatched(DataTree tree, Txn txn, tuple watch_tables):
    """Applies a txn of one create, setData or delete change, or a multi of creates, setDatas,
    deletes and checks, when none of its changes can fire a watch (`plain_kind`) and no
    recursive watch exists, and returns its result (create: (path, stat), setData: stat,
    delete: None, multi: [(result type, result)]); UNHANDLED, with nothing applied, for
    anything else. A multi is judged whole before any of it is applied."""
    cdef dict data = <dict?>watch_tables[0]
    cdef dict child = <dict?>watch_tables[1]
    cdef dict persistent = <dict?>watch_tables[2]
    cdef list changes
    cdef list results
    cdef tuple pair
    cdef int kind
    cdef Py_ssize_t i, count
    cdef int kinds[16]
    if <dict?>watch_tables[3] or type(txn.changes) is not list:
        return UNHANDLED
    changes = <list>txn.changes
    count = len(changes)
    if txn.op != OP_MULTI:
        if count != 1:
            return UNHANDLED
        kind = plain_kind(changes[0], data, child, persistent)
        if kind == PLAIN_NONE or kind == PLAIN_CHECK:
            return UNHANDLED
        return apply_plain_change(tree, txn, <tuple>changes[0], kind)
    if count > 16:
        return UNHANDLED
    for i in range(count):
        if type(changes[i]) is not tuple or len(<tuple>changes[i]) != 2:
            return UNHANDLED
        kinds[i] = plain_kind((<tuple>changes[i])[1], data, child, persistent)
        if kinds[i] == PLAIN_NONE:
            return UNHANDLED
    results = []
    for i in range(count):
        pair = <tuple>changes[i]
        results.append((pair[0], apply_plain_change(tree, txn, <tuple>pair[1], kinds[i])))
    return results


cdef class ApplierCore:
    """Committed txn -> tree and result: the txns `apply_unwatched` takes are applied here;
    fastzk/server/apply.py's Applier, a subclass, applies the others (`apply_changes`) with
    their watch notifications."""

    def apply(self, Txn txn):
        """(result, notifications in the order they must reach connections)."""
        result = apply_unwatched(self.tree, txn, <tuple?>self.watches.tables)
        if result is not UNHANDLED:
            return (result, ())   # no notification (and no list to allocate)
        return self.apply_changes(txn)


cdef int put_result(WriteBuffer out, int rtype, object value) except -1:
    if rtype == OP_CREATE:
        out.put_ustring(value[0])
    elif rtype == OP_CREATE2 or rtype == OP_CREATE_CONTAINER or rtype == OP_CREATE_TTL:
        out.put_ustring(value[0])
        out.put_stat(value[1])
    elif rtype == OP_SET_DATA or rtype == OP_SET_ACL:
        out.put_stat(value)
    return 0


cdef int put_multi_end(WriteBuffer out) except -1:
    out.put_i32(-1)
    out.put_u8(1)
    return out.put_i32(-1)


def write_reply(WriteBuffer out, Txn txn, result):
    """The reply frame of a successfully applied write."""
    put_reply(out, txn, result)


cdef int put_reply(WriteBuffer out, Txn txn, object result) except -1:
    cdef int op = txn.op
    out.open_frame(txn.xid, txn.zxid, 0)
    if op == OP_MULTI:
        for rtype, value in result:
            out.put_i32(rtype)
            out.put_u8(0)
            out.put_i32(0)
            put_result(out, rtype, value)
        put_multi_end(out)
    elif op != OP_DELETE and op != OP_CLOSE_SESSION:
        put_result(out, op, result)
    out.close_frame()
    return 0


def write_multi_failure(WriteBuffer out, int32_t xid, int64_t zxid, errors):
    """A failed multi keeps header err 0 and reports each op's error in the body."""
    cdef int32_t err
    out.open_frame(xid, zxid, 0)
    for err in errors:
        out.put_i32(-1)
        out.put_u8(0)
        out.put_i32(err)
        out.put_i32(err)
    put_multi_end(out)
    out.close_frame()
