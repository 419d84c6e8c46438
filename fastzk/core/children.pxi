# A znode's children, kept in exactly the order Apache ZooKeeper lists them.
#
# ZooKeeper keeps a node's child names in a java.util.HashSet<String> created with initial
# capacity 8 (DataNode.addChild) and lists them by copying the set into an ArrayList, so the
# order clients see is HashMap's iteration order: bins in index order, each bin in its `next`
# order. Tools and tests written against ZooKeeper depend on it (zk-shell prints `two` before
# `one`), so _Children is a model of that HashMap with its real bucket structure: the table
# (power-of-two capacity, load factor 0.75, doubling, never shrinking), String.hashCode over
# UTF-16 code units spread by HashMap.hash, appends at a bin's tail, the lo/hi split on
# resize, and the red-black "tree bins" (TREEIFY_THRESHOLD, MIN_TREEIFY_CAPACITY,
# UNTREEIFY_THRESHOLD) whose `next` order depends on the tree's shape. The Java code is the
# specification (OpenJDK 17 java/util/HashMap.java); the names below follow it so that the
# two can be read side by side.
#
# An entry holds a borrowed pointer to the child _Node (the tree's path table owns it; a child
# leaves its parent's set before it leaves the table) and reads the name from the child's
# path, so no str object is kept per child. The encoded getChildren reply (a jute
# vector<ustring>) is cached per set and dropped on every change: reads copy one buffer.

cdef extern from *:
    """
    /* One code point from UTF-8 (as Python encodes str with surrogatepass, so a lone
       surrogate is a 3-byte sequence and stays one UTF-16 unit). Bytes that are not UTF-8
       cannot come from a str; each stands for itself rather than read past the end. */
    static inline uint32_t fzk_u8_next(const unsigned char* p, Py_ssize_t n, Py_ssize_t* i) {
        Py_ssize_t k = *i;
        unsigned char c = p[k];
        if (c < 0x80) { *i = k + 1; return c; }
        if ((c & 0xE0) == 0xC0 && k + 1 < n) {
            *i = k + 2;
            return ((uint32_t)(c & 0x1F) << 6) | (p[k + 1] & 0x3F);
        }
        if ((c & 0xF0) == 0xE0 && k + 2 < n) {
            *i = k + 3;
            return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[k + 1] & 0x3F) << 6)
                   | (p[k + 2] & 0x3F);
        }
        if ((c & 0xF8) == 0xF0 && k + 3 < n) {
            *i = k + 4;
            return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(p[k + 1] & 0x3F) << 12)
                   | ((uint32_t)(p[k + 2] & 0x3F) << 6) | (p[k + 3] & 0x3F);
        }
        *i = k + 1;
        return c;
    }

    /* HashMap.hash(name): String.hashCode (h = 31 h + unit over UTF-16 code units, a code
       point above U+FFFF counting as its two surrogates) xor its upper half. */
    static int32_t fzk_java_hash(const unsigned char* p, Py_ssize_t n) {
        uint32_t h = 0, cp;
        Py_ssize_t i = 0;
        while (i < n) {
            if (p[i] < 0x80) {
                h = 31 * h + p[i++];
                continue;
            }
            cp = fzk_u8_next(p, n, &i);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                h = 31 * h + (0xD800 + (cp >> 10));
                h = 31 * h + (0xDC00 + (cp & 0x3FF));
            } else {
                h = 31 * h + cp;
            }
        }
        return (int32_t)(h ^ (h >> 16));
    }

    /* The sign of a.compareTo(b) for Java Strings: UTF-16 code units compared in order, then
       the lengths. */
    static int fzk_utf16_cmp(const unsigned char* a, Py_ssize_t na,
                             const unsigned char* b, Py_ssize_t nb) {
        Py_ssize_t i = 0, j = 0;
        uint32_t pa = 0, pb = 0, ua, ub, cp;
        for (;;) {
            if (pa) { ua = pa; pa = 0; }
            else if (i < na) {
                cp = fzk_u8_next(a, na, &i);
                if (cp >= 0x10000) {
                    cp -= 0x10000; ua = 0xD800 + (cp >> 10); pa = 0xDC00 + (cp & 0x3FF);
                } else ua = cp;
            } else return (pb || j < nb) ? -1 : 0;
            if (pb) { ub = pb; pb = 0; }
            else if (j < nb) {
                cp = fzk_u8_next(b, nb, &j);
                if (cp >= 0x10000) {
                    cp -= 0x10000; ub = 0xD800 + (cp >> 10); pb = 0xDC00 + (cp & 0x3FF);
                } else ub = cp;
            } else return 1;
            if (ua != ub) return ua < ub ? -1 : 1;
        }
    }
    """
    int32_t fzk_java_hash(const unsigned char* p, Py_ssize_t n) noexcept nogil
    int fzk_utf16_cmp(const unsigned char* a, Py_ssize_t na,
                      const unsigned char* b, Py_ssize_t nb) noexcept nogil


cdef enum:
    JSET_INITIAL_CAPACITY = 8     # DataNode.addChild: new HashSet<String>(8)
    TREEIFY_THRESHOLD = 8         # HashMap's constants
    UNTREEIFY_THRESHOLD = 6
    MIN_TREEIFY_CAPACITY = 64


def java_string_hash(str name):
    """HashMap.hash(name) as ZooKeeper's child sets compute it (String.hashCode over UTF-16
    code units, spread by h ^ h >>> 16); for tests against real Java."""
    b = name.encode("utf-8", "surrogatepass")
    return fzk_java_hash(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


@cython.no_gc
cdef class _Children:
    """A java.util.HashSet<String>(8) of child names; see the comment at the top of
    core/children.pxi. Indices stand for Java references (-1 = null)."""

    def __dealloc__(self):
        free(self.table)
        free(self.entries)
        free(self.tree)

    # --- storage -----------------------------------------------------------------------------

    cdef const unsigned char* _name(self, int32_t e, Py_ssize_t* n) noexcept:
        cdef bytes path = (<_Node>self.entries[e].node).path
        n[0] = PyBytes_GET_SIZE(path) - self.name_off
        return <const unsigned char*>PyBytes_AS_STRING(path) + self.name_off

    cdef bint _is(self, int32_t e, const unsigned char* name, Py_ssize_t n) noexcept:
        """key.equals(k): the same UTF-8 bytes are the same Java String."""
        cdef bytes path = (<_Node>self.entries[e].node).path
        return (PyBytes_GET_SIZE(path) - self.name_off == n
                and memcmp(PyBytes_AS_STRING(path) + self.name_off, name, n) == 0)

    cdef int _cmp(self, const unsigned char* name, Py_ssize_t n, int32_t e) noexcept:
        """compareComparables(String.class, k, pk): the sign of k.compareTo(pk)."""
        cdef Py_ssize_t m
        cdef const unsigned char* other = self._name(e, &m)
        return fzk_utf16_cmp(name, n, other, m)

    cdef bint _treebin(self, int32_t e) noexcept:
        """`e instanceof TreeNode`."""
        return self.tree != NULL and self.tree[e].bin

    cdef int32_t _alloc(self, PyObject* node, int32_t h, int32_t nxt) except -1:
        cdef int32_t e
        cdef int32_t newcap
        cdef JEntry* grown
        cdef JTree* tgrown
        if self.free_head >= 0:
            e = self.free_head
            self.free_head = self.entries[e].next
        else:
            if self.used == self.ecap:
                newcap = JSET_INITIAL_CAPACITY if self.ecap == 0 else self.ecap * 2
                grown = <JEntry*>realloc(self.entries, newcap * sizeof(JEntry))
                if grown == NULL:
                    raise MemoryError()
                self.entries = grown
                if self.tree != NULL:
                    tgrown = <JTree*>realloc(self.tree, newcap * sizeof(JTree))
                    if tgrown == NULL:
                        raise MemoryError()
                    self.tree = tgrown
                self.ecap = newcap
            e = self.used
            self.used += 1
        self.entries[e].node = node
        self.entries[e].hash = h
        self.entries[e].next = nxt
        if self.tree != NULL:
            self.tree[e].bin = 0
        return e

    cdef void _release(self, int32_t e) noexcept:
        self.entries[e].node = NULL
        self.entries[e].next = self.free_head
        self.free_head = e

    # --- HashMap: put, remove, resize ----------------------------------------------------------

    cdef int add(self, _Node child) except -1:
        """HashSet.add(name of child) (putVal); 1 if added, 0 if the name was there."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(child.path) - self.name_off
        cdef const unsigned char* name = (<const unsigned char*>PyBytes_AS_STRING(child.path)
                                          + self.name_off)
        cdef int32_t h = fzk_java_hash(name, n)
        cdef int32_t i, p, e, bincount
        if self.cap == 0:
            self._resize()
        i = h & (self.cap - 1)
        p = self.table[i]
        if p < 0:
            self.table[i] = self._alloc(<PyObject*>child, h, -1)
        elif self.entries[p].hash == h and self._is(p, name, n):
            return 0
        elif self._treebin(p):
            if not self._put_tree_val(p, <PyObject*>child, h, name, n):
                return 0
        else:
            bincount = 0
            while True:
                e = self.entries[p].next
                if e < 0:
                    e = self._alloc(<PyObject*>child, h, -1)
                    self.entries[p].next = e
                    if bincount >= TREEIFY_THRESHOLD - 1:
                        self._treeify_bin(h)
                    break
                if self.entries[e].hash == h and self._is(e, name, n):
                    return 0
                p = e
                bincount += 1
        self.size += 1
        if self.size > self.threshold:
            self._resize()
        self.listing = None
        return 1

    cdef int remove(self, _Node child) except -1:
        """HashSet.remove(name of child) (removeNode, movable); 1 if removed."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(child.path) - self.name_off
        cdef const unsigned char* name = (<const unsigned char*>PyBytes_AS_STRING(child.path)
                                          + self.name_off)
        cdef int32_t h = fzk_java_hash(name, n)
        cdef int32_t index, p, e, node = -1
        if self.cap == 0:
            return 0
        index = h & (self.cap - 1)
        p = self.table[index]
        if p < 0:
            return 0
        if self.entries[p].hash == h and self._is(p, name, n):
            node = p
        elif self.entries[p].next >= 0:
            if self._treebin(p):
                node = self._find(p if self.tree[p].parent < 0 else self._root(p), h, name, n)
            else:
                e = self.entries[p].next
                while e >= 0:
                    if self.entries[e].hash == h and self._is(e, name, n):
                        node = e
                        break
                    p = e
                    e = self.entries[e].next
        if node < 0:
            return 0
        if self._treebin(node):
            self._remove_tree_node(node)
        elif node == p:
            self.table[index] = self.entries[node].next
        else:
            self.entries[p].next = self.entries[node].next
        self.size -= 1
        self._release(node)
        self.listing = None
        return 1

    cdef int _resize(self) except -1:
        """Allocates the table (capacity 8) or doubles it; bins split into lo and hi halves,
        each keeping its order. The threshold is always 0.75 of the capacity."""
        cdef int32_t oldcap = self.cap
        cdef int32_t newcap = JSET_INITIAL_CAPACITY if oldcap == 0 else oldcap * 2
        cdef int32_t* old = self.table
        cdef int32_t* tab = <int32_t*>malloc(newcap * sizeof(int32_t))
        cdef int32_t j, e, nxt, lohead, lotail, hihead, hitail
        if tab == NULL:
            raise MemoryError()
        memset(tab, 0xFF, newcap * sizeof(int32_t))
        self.table = tab
        self.cap = newcap
        self.threshold = newcap // 4 * 3
        for j in range(oldcap):
            e = old[j]
            if e < 0:
                continue
            if self.entries[e].next < 0:
                tab[self.entries[e].hash & (newcap - 1)] = e
            elif self._treebin(e):
                self._split(e, j, oldcap)
            else:
                lohead = lotail = hihead = hitail = -1
                while e >= 0:
                    nxt = self.entries[e].next
                    if self.entries[e].hash & oldcap == 0:
                        if lotail < 0:
                            lohead = e
                        else:
                            self.entries[lotail].next = e
                        lotail = e
                    else:
                        if hitail < 0:
                            hihead = e
                        else:
                            self.entries[hitail].next = e
                        hitail = e
                    e = nxt
                if lotail >= 0:
                    self.entries[lotail].next = -1
                    tab[j] = lohead
                if hitail >= 0:
                    self.entries[hitail].next = -1
                    tab[j + oldcap] = hihead
        free(old)
        return 0

    cdef int _treeify_bin(self, int32_t h) except -1:
        """A bin has grown past TREEIFY_THRESHOLD: a small table grows instead, otherwise the
        bin's entries become TreeNodes (prev links in bin order) and form a tree."""
        cdef int32_t e, prev = -1, index
        if self.cap < MIN_TREEIFY_CAPACITY:
            return self._resize()
        if self.tree == NULL:
            self.tree = <JTree*>calloc(self.ecap, sizeof(JTree))
            if self.tree == NULL:
                raise MemoryError()
        index = h & (self.cap - 1)
        e = self.table[index]
        while e >= 0:
            self.tree[e].bin = 1
            self.tree[e].prev = prev
            prev = e
            e = self.entries[e].next
        if self.table[index] >= 0:
            self._treeify(self.table[index])
        return 0

    # --- TreeNode -------------------------------------------------------------------------------

    cdef int32_t _root(self, int32_t e) noexcept:
        while self.tree[e].parent >= 0:
            e = self.tree[e].parent
        return e

    cdef void _move_root_to_front(self, int32_t root) noexcept:
        cdef int32_t index, first, rn, rp
        if root < 0:
            return
        index = self.entries[root].hash & (self.cap - 1)
        first = self.table[index]
        if root != first:
            self.table[index] = root
            rp = self.tree[root].prev
            rn = self.entries[root].next
            if rn >= 0:
                self.tree[rn].prev = rp
            if rp >= 0:
                self.entries[rp].next = rn
            if first >= 0:
                self.tree[first].prev = root
            self.entries[root].next = first
            self.tree[root].prev = -1

    cdef int32_t _find(self, int32_t p, int32_t h, const unsigned char* name,
                       Py_ssize_t n) noexcept:
        """TreeNode.find: the tree is ordered by (hash, compareTo), both strict for Strings."""
        cdef int32_t ph
        while p >= 0:
            ph = self.entries[p].hash
            if ph > h:
                p = self.tree[p].left
            elif ph < h:
                p = self.tree[p].right
            elif self._is(p, name, n):
                return p
            elif self._cmp(name, n, p) < 0:
                p = self.tree[p].left
            else:
                p = self.tree[p].right
        return -1

    cdef int _dir(self, int32_t h, const unsigned char* name, Py_ssize_t n,
                         int32_t p) noexcept:
        """The direction treeify/putTreeVal take from p for a distinct key (never 0: two
        Strings that compare equal are equal, so tieBreakOrder is never reached)."""
        cdef int32_t ph = self.entries[p].hash
        if ph > h:
            return -1
        if ph < h:
            return 1
        return self._cmp(name, n, p)

    cdef void _treeify(self, int32_t head) noexcept:
        cdef int32_t root = -1, x = head, nxt, p, xp, h
        cdef int d
        cdef Py_ssize_t n
        cdef const unsigned char* name
        while x >= 0:
            nxt = self.entries[x].next
            self.tree[x].left = self.tree[x].right = -1
            if root < 0:
                self.tree[x].parent = -1
                self.tree[x].red = 0
                root = x
            else:
                h = self.entries[x].hash
                name = self._name(x, &n)
                p = root
                while True:
                    d = self._dir(h, name, n, p)
                    xp = p
                    p = self.tree[p].left if d <= 0 else self.tree[p].right
                    if p < 0:
                        self.tree[x].parent = xp
                        if d <= 0:
                            self.tree[xp].left = x
                        else:
                            self.tree[xp].right = x
                        root = self._balance_insertion(root, x)
                        break
            x = nxt
        self._move_root_to_front(root)

    cdef int32_t _untreeify(self, int32_t first) noexcept:
        cdef int32_t e = first
        while e >= 0:
            self.tree[e].bin = 0
            e = self.entries[e].next
        return first

    cdef int _put_tree_val(self, int32_t first, PyObject* node, int32_t h,
                           const unsigned char* name, Py_ssize_t n) except -1:
        """1 if added, 0 if present. The new TreeNode goes right after its tree parent in
        `next` order, then the (rebalanced) root moves to the bin's front."""
        cdef int32_t root = first if self.tree[first].parent < 0 else self._root(first)
        cdef int32_t p = root, xp, xpn, x
        cdef int d
        while True:
            if self.entries[p].hash == h and self._is(p, name, n):
                return 0
            d = self._dir(h, name, n, p)
            xp = p
            p = self.tree[p].left if d <= 0 else self.tree[p].right
            if p < 0:
                xpn = self.entries[xp].next
                x = self._alloc(node, h, xpn)
                self.tree[x].bin = 1
                self.tree[x].left = self.tree[x].right = -1
                if d <= 0:
                    self.tree[xp].left = x
                else:
                    self.tree[xp].right = x
                self.entries[xp].next = x
                self.tree[x].parent = xp
                self.tree[x].prev = xp
                if xpn >= 0:
                    self.tree[xpn].prev = x
                self._move_root_to_front(self._balance_insertion(root, x))
                return 1

    cdef void _remove_tree_node(self, int32_t node) noexcept:
        """TreeNode.removeTreeNode(movable=true): unlink from `next` order, untreeify the bin
        if its tree looks small (judged before the node leaves the tree), else the red-black
        deletion that swaps tree links (never contents), then the root to the front."""
        cdef JTree* t = self.tree
        cdef int32_t index = self.entries[node].hash & (self.cap - 1)
        cdef int32_t first = self.table[index]
        cdef int32_t root = first
        cdef int32_t succ = self.entries[node].next
        cdef int32_t pred = t[node].prev
        cdef int32_t rl, p, pl, pr, s, sr, sp, pp, replacement, r
        cdef unsigned char c
        if pred < 0:
            self.table[index] = first = succ
        else:
            self.entries[pred].next = succ
        if succ >= 0:
            t[succ].prev = pred
        if first < 0:
            return
        if t[root].parent >= 0:
            root = self._root(root)
        if t[root].right < 0 or t[root].left < 0 or t[t[root].left].left < 0:
            self.table[index] = self._untreeify(first)
            return
        p = node
        pl = t[p].left
        pr = t[p].right
        if pl >= 0 and pr >= 0:
            s = pr
            while t[s].left >= 0:
                s = t[s].left
            c = t[s].red
            t[s].red = t[p].red
            t[p].red = c
            sr = t[s].right
            pp = t[p].parent
            if s == pr:
                t[p].parent = s
                t[s].right = p
            else:
                sp = t[s].parent
                t[p].parent = sp
                if sp >= 0:
                    if s == t[sp].left:
                        t[sp].left = p
                    else:
                        t[sp].right = p
                t[s].right = pr
                if pr >= 0:
                    t[pr].parent = s
            t[p].left = -1
            t[p].right = sr
            if sr >= 0:
                t[sr].parent = p
            t[s].left = pl
            if pl >= 0:
                t[pl].parent = s
            t[s].parent = pp
            if pp < 0:
                root = s
            elif p == t[pp].left:
                t[pp].left = s
            else:
                t[pp].right = s
            replacement = sr if sr >= 0 else p
        elif pl >= 0:
            replacement = pl
        elif pr >= 0:
            replacement = pr
        else:
            replacement = p
        if replacement != p:
            pp = t[p].parent
            t[replacement].parent = pp
            if pp < 0:
                root = replacement
                t[root].red = 0
            elif p == t[pp].left:
                t[pp].left = replacement
            else:
                t[pp].right = replacement
            t[p].left = t[p].right = t[p].parent = -1
        r = root if t[p].red else self._balance_deletion(root, replacement)
        if replacement == p:
            pp = t[p].parent
            t[p].parent = -1
            if pp >= 0:
                if p == t[pp].left:
                    t[pp].left = -1
                elif p == t[pp].right:
                    t[pp].right = -1
        self._move_root_to_front(r)

    cdef void _split(self, int32_t b, int32_t index, int32_t bit) noexcept:
        """TreeNode.split on resize: lo and hi lists in `next` order; a half of at most
        UNTREEIFY_THRESHOLD entries becomes a plain bin, a larger one is re-treeified unless
        the other half is empty (then the old tree is kept as it is)."""
        cdef JTree* t = self.tree
        cdef int32_t lohead = -1, lotail = -1, hihead = -1, hitail = -1
        cdef int32_t lc = 0, hc = 0, e = b, nxt
        while e >= 0:
            nxt = self.entries[e].next
            self.entries[e].next = -1
            if self.entries[e].hash & bit == 0:
                t[e].prev = lotail
                if lotail < 0:
                    lohead = e
                else:
                    self.entries[lotail].next = e
                lotail = e
                lc += 1
            else:
                t[e].prev = hitail
                if hitail < 0:
                    hihead = e
                else:
                    self.entries[hitail].next = e
                hitail = e
                hc += 1
            e = nxt
        if lohead >= 0:
            if lc <= UNTREEIFY_THRESHOLD:
                self.table[index] = self._untreeify(lohead)
            else:
                self.table[index] = lohead
                if hihead >= 0:
                    self._treeify(lohead)
        if hihead >= 0:
            if hc <= UNTREEIFY_THRESHOLD:
                self.table[index + bit] = self._untreeify(hihead)
            else:
                self.table[index + bit] = hihead
                if lohead >= 0:
                    self._treeify(hihead)

    # Red-black tree methods, as HashMap adapts them from CLR.

    cdef int32_t _rotate_left(self, int32_t root, int32_t p) noexcept:
        cdef JTree* t = self.tree
        cdef int32_t r, pp, rl
        if p >= 0 and t[p].right >= 0:
            r = t[p].right
            rl = t[r].left
            t[p].right = rl
            if rl >= 0:
                t[rl].parent = p
            pp = t[p].parent
            t[r].parent = pp
            if pp < 0:
                root = r
                t[r].red = 0
            elif t[pp].left == p:
                t[pp].left = r
            else:
                t[pp].right = r
            t[r].left = p
            t[p].parent = r
        return root

    cdef int32_t _rotate_right(self, int32_t root, int32_t p) noexcept:
        cdef JTree* t = self.tree
        cdef int32_t l, pp, lr
        if p >= 0 and t[p].left >= 0:
            l = t[p].left
            lr = t[l].right
            t[p].left = lr
            if lr >= 0:
                t[lr].parent = p
            pp = t[p].parent
            t[l].parent = pp
            if pp < 0:
                root = l
                t[l].red = 0
            elif t[pp].right == p:
                t[pp].right = l
            else:
                t[pp].left = l
            t[l].right = p
            t[p].parent = l
        return root

    cdef int32_t _balance_insertion(self, int32_t root, int32_t x) noexcept:
        cdef JTree* t = self.tree
        cdef int32_t xp, xpp, xppl, xppr
        t[x].red = 1
        while True:
            xp = t[x].parent
            if xp < 0:
                t[x].red = 0
                return x
            if not t[xp].red:
                return root
            xpp = t[xp].parent
            if xpp < 0:
                return root
            xppl = t[xpp].left
            if xp == xppl:
                xppr = t[xpp].right
                if xppr >= 0 and t[xppr].red:
                    t[xppr].red = 0
                    t[xp].red = 0
                    t[xpp].red = 1
                    x = xpp
                else:
                    if x == t[xp].right:
                        x = xp
                        root = self._rotate_left(root, x)
                        xp = t[x].parent
                        xpp = -1 if xp < 0 else t[xp].parent
                    if xp >= 0:
                        t[xp].red = 0
                        if xpp >= 0:
                            t[xpp].red = 1
                            root = self._rotate_right(root, xpp)
            else:
                if xppl >= 0 and t[xppl].red:
                    t[xppl].red = 0
                    t[xp].red = 0
                    t[xpp].red = 1
                    x = xpp
                else:
                    if x == t[xp].left:
                        x = xp
                        root = self._rotate_right(root, x)
                        xp = t[x].parent
                        xpp = -1 if xp < 0 else t[xp].parent
                    if xp >= 0:
                        t[xp].red = 0
                        if xpp >= 0:
                            t[xpp].red = 1
                            root = self._rotate_left(root, xpp)

    cdef int32_t _balance_deletion(self, int32_t root, int32_t x) noexcept:
        cdef JTree* t = self.tree
        cdef int32_t xp, xpl, xpr, sl, sr
        while True:
            if x < 0 or x == root:
                return root
            xp = t[x].parent
            if xp < 0:
                t[x].red = 0
                return x
            if t[x].red:
                t[x].red = 0
                return root
            xpl = t[xp].left
            if xpl == x:
                xpr = t[xp].right
                if xpr >= 0 and t[xpr].red:
                    t[xpr].red = 0
                    t[xp].red = 1
                    root = self._rotate_left(root, xp)
                    xp = t[x].parent
                    xpr = -1 if xp < 0 else t[xp].right
                if xpr < 0:
                    x = xp
                else:
                    sl = t[xpr].left
                    sr = t[xpr].right
                    if (sr < 0 or not t[sr].red) and (sl < 0 or not t[sl].red):
                        t[xpr].red = 1
                        x = xp
                    else:
                        if sr < 0 or not t[sr].red:
                            if sl >= 0:
                                t[sl].red = 0
                            t[xpr].red = 1
                            root = self._rotate_right(root, xpr)
                            xp = t[x].parent
                            xpr = -1 if xp < 0 else t[xp].right
                        if xpr >= 0:
                            t[xpr].red = 0 if xp < 0 else t[xp].red
                            sr = t[xpr].right
                            if sr >= 0:
                                t[sr].red = 0
                        if xp >= 0:
                            t[xp].red = 0
                            root = self._rotate_left(root, xp)
                        x = root
            else:
                if xpl >= 0 and t[xpl].red:
                    t[xpl].red = 0
                    t[xp].red = 1
                    root = self._rotate_right(root, xp)
                    xp = t[x].parent
                    xpl = -1 if xp < 0 else t[xp].left
                if xpl < 0:
                    x = xp
                else:
                    sl = t[xpl].left
                    sr = t[xpl].right
                    if (sl < 0 or not t[sl].red) and (sr < 0 or not t[sr].red):
                        t[xpl].red = 1
                        x = xp
                    else:
                        if sl < 0 or not t[sl].red:
                            if sr >= 0:
                                t[sr].red = 0
                            t[xpl].red = 1
                            root = self._rotate_left(root, xpl)
                            xp = t[x].parent
                            xpl = -1 if xp < 0 else t[xp].left
                        if xpl >= 0:
                            t[xpl].red = 0 if xp < 0 else t[xp].red
                            sl = t[xpl].left
                            if sl >= 0:
                                t[sl].red = 0
                        if xp >= 0:
                            t[xp].red = 0
                            root = self._rotate_right(root, xp)
                        x = root

    # --- listing (iteration order: bins in index order, each bin in `next` order) ------------

    cdef bytes vector(self):
        """The getChildren reply's vector<ustring>, built once per change of the set."""
        cdef Py_ssize_t total = 4, n
        cdef int32_t j, e
        cdef unsigned char* p
        cdef const unsigned char* name
        if self.listing is not None:
            return self.listing
        for j in range(self.cap):
            e = self.table[j]
            while e >= 0:
                total += 4 + PyBytes_GET_SIZE((<_Node>self.entries[e].node).path) - self.name_off
                e = self.entries[e].next
        out = PyBytes_FromStringAndSize(NULL, total)
        p = <unsigned char*>PyBytes_AS_STRING(out)
        st_u32(p, <uint32_t>self.size)
        p += 4
        for j in range(self.cap):
            e = self.table[j]
            while e >= 0:
                name = self._name(e, &n)
                st_u32(p, <uint32_t>n)
                memcpy(p + 4, name, n)
                p += 4 + n
                e = self.entries[e].next
        self.listing = out
        return out

    cdef list names(self):
        cdef list out = []
        cdef int32_t j, e
        cdef Py_ssize_t n
        cdef const unsigned char* name
        for j in range(self.cap):
            e = self.table[j]
            while e >= 0:
                name = self._name(e, &n)
                out.append(PyUnicode_DecodeUTF8(<const char*>name, n, "surrogatepass"))
                e = self.entries[e].next
        return out

    cdef list paths(self):
        """The children's full paths, in listing order (what a snapshot walks)."""
        cdef list out = []
        cdef int32_t j, e
        for j in range(self.cap):
            e = self.table[j]
            while e >= 0:
                out.append((<_Node>self.entries[e].node).path)
                e = self.entries[e].next
        return out


cdef _Children new_children(_Node parent):
    """An empty set for parent's children (ZooKeeper creates it on the first addChild)."""
    cdef _Children c = _Children.__new__(_Children)
    c.free_head = -1
    c.name_off = 1 if PyBytes_GET_SIZE(parent.path) == 1 else PyBytes_GET_SIZE(parent.path) + 1
    return c
