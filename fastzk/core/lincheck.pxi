# The inner loop of the linearizability checker (fastzk/check/search.py): Wing & Gong's search
# with Lowe's just-in-time linearization and memo cache, on one partition of a history.
# Everything here is ints: operations are 0..n-1, model states are interned ids, the set of
# linearized operations is a bitset. The model itself stays in Python, behind `step`, whose
# answers are memoised here so that each (state, operation) pair costs one Python call.

cdef enum:
    LIN_OK = 0
    LIN_VIOLATION = 1
    LIN_UNKNOWN = 2
    # iterations between two looks at the clock: a few milliseconds' worth of work
    LIN_CLOCK_EVERY = 4096
    # memo cache entries beyond which the answer is "unknown" (a table of 2**24 16-byte slots,
    # 256 MB): a hard history must not take all the memory before its time limit
    LIN_MAX_CONFIGURATIONS = 12000000


cdef inline void _lin_lift(int* nxt, int* prv, int entry, int match) noexcept nogil:
    nxt[prv[entry]] = nxt[entry]
    prv[nxt[entry]] = prv[entry]
    nxt[prv[match]] = nxt[match]
    prv[nxt[match]] = prv[match]


cdef inline void _lin_unlift(int* nxt, int* prv, int entry, int match) noexcept nogil:
    # Removed entries kept their own links, so re-inserting in the reverse order of removal
    # restores the list exactly.
    nxt[prv[match]] = match
    prv[nxt[match]] = match
    nxt[prv[entry]] = entry
    prv[nxt[entry]] = entry


cdef struct LinSet:
    # The linearized operations: ops 0..n_ok-1 (those that returned) in words 0..ok_words-1,
    # the others (which may never take effect) in the info_words after them. `low` is the first
    # op < n_ok not linearized, so every word below low >> 6 is all ones; `high_word` bounds the
    # last non-zero word below ok_words.
    uint64_t* words
    int n_ok
    int ok_words
    int info_words
    int low
    int high_word


cdef inline int _lin_bit(LinSet* s, int op) noexcept nogil:
    return op if op < s.n_ok else s.ok_words * 64 + (op - s.n_ok)


cdef inline bint _lin_has(LinSet* s, int op) noexcept nogil:
    cdef int b = _lin_bit(s, op)
    return (s.words[b >> 6] >> (b & 63)) & 1


cdef inline void _lin_add(LinSet* s, int op) noexcept nogil:
    cdef int b = _lin_bit(s, op)
    s.words[b >> 6] |= (<uint64_t>1) << (b & 63)
    if op < s.n_ok:
        if (b >> 6) > s.high_word:
            s.high_word = b >> 6
        while s.low < s.n_ok and (s.words[s.low >> 6] >> (s.low & 63)) & 1:
            s.low += 1


cdef inline void _lin_remove(LinSet* s, int op) noexcept nogil:
    cdef int b = _lin_bit(s, op)
    s.words[b >> 6] &= ~((<uint64_t>1) << (b & 63))
    if op < s.low:
        s.low = op


cdef inline Py_ssize_t _lin_key(LinSet* s, int state, unsigned char* out) noexcept nogil:
    """A canonical, short encoding of (set, state) into out; returns its length. Short because
    only the words from the first unlinearized op on are written: a search step stays cheap
    however long the history."""
    cdef int first = s.low >> 6
    cdef int last = s.high_word
    cdef int32_t head[2]
    while last >= first and s.words[last] == 0:
        last -= 1
    head[0] = state
    head[1] = first
    memcpy(out, head, 8)
    memcpy(out + 8, s.words + s.ok_words, s.info_words * 8)
    if last >= first:
        memcpy(out + 8 + s.info_words * 8, s.words + first, (last - first + 1) * 8)
        return 8 + (s.info_words + last - first + 1) * 8
    return 8 + s.info_words * 8


cdef struct LinMemo:
    # The memo cache: a set of configurations, each kept as a 128-bit fingerprint of its key
    # (as model checkers such as TLC and SPIN keep states) in an open-addressing table: 16
    # bytes per slot, slot empty when its first half is 0. Two configurations share a
    # fingerprint with probability about 2**-128 per pair (below 1e-23 for ten million): only
    # then could the search skip a configuration it has not seen.
    uint64_t* slots
    Py_ssize_t capacity                     # slots, a power of two, at most 3/4 full
    Py_ssize_t count


cdef inline uint64_t _lin_hash(const uint64_t* words, Py_ssize_t n, uint64_t h,
                               uint64_t multiplier) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ words[i]) * multiplier
        h ^= h >> 29
    h ^= <uint64_t>n
    h *= multiplier
    return h ^ (h >> 32)


cdef int _lin_memo_init(LinMemo* m) except -1:
    m.capacity = 1 << 16
    m.count = 0
    m.slots = <uint64_t*>calloc(m.capacity * 2, sizeof(uint64_t))
    if m.slots == NULL:
        raise MemoryError()
    return 0


cdef int _lin_memo_grow(LinMemo* m) except -1:
    cdef Py_ssize_t capacity = m.capacity * 2, i, j
    cdef uint64_t* slots = <uint64_t*>calloc(capacity * 2, sizeof(uint64_t))
    if slots == NULL:
        raise MemoryError()
    for i in range(m.capacity):
        if m.slots[2 * i]:
            j = <Py_ssize_t>(m.slots[2 * i + 1] & <uint64_t>(capacity - 1))
            while slots[2 * j]:
                j = (j + 1) & (capacity - 1)
            slots[2 * j] = m.slots[2 * i]
            slots[2 * j + 1] = m.slots[2 * i + 1]
    free(m.slots)
    m.slots = slots
    m.capacity = capacity
    return 0


cdef int _lin_memo_add(LinMemo* m, const uint64_t* key, Py_ssize_t n) except -1:
    """1 when the key is already there, else adds it and returns 0."""
    cdef uint64_t a = _lin_hash(key, n, 0x243F6A8885A308D3ULL, 0x9E3779B97F4A7C15ULL) | 1
    cdef uint64_t b = _lin_hash(key, n, 0x13198A2E03707344ULL, 0xD6E8FEB86659FD93ULL)
    cdef Py_ssize_t i = <Py_ssize_t>(b & <uint64_t>(m.capacity - 1))
    while m.slots[2 * i]:
        if m.slots[2 * i] == a and m.slots[2 * i + 1] == b:
            return 1
        i = (i + 1) & (m.capacity - 1)
    m.slots[2 * i] = a
    m.slots[2 * i + 1] = b
    m.count += 1
    if m.count * 4 > m.capacity * 3:
        _lin_memo_grow(m)
    return 0


def lin_search(list entries, bytes maybe, bytes readonly, list before, object step,
               int initial_state, object clock, double deadline):
    """Searches for a linearization of one partition; returns (status, prefix): status 0
    linearizable, 1 not linearizable, 2 unknown (`clock()` passed `deadline`, or the memo
    cache holds 12 million configurations); prefix = the operations of the longest
    linearizable prefix met, in order (empty unless status is 1).

    entries: the 2n call/return entries in time order, each op * 2 (call) or op * 2 + 1
    (return). maybe[op] != 0: the operation may never have taken effect (a timeout); those are
    the last operations (the highest numbers) and their return entries the last entries, so
    reaching one means every other operation is linearized.
    readonly[op] != 0: the operation leaves every state it can be applied in unchanged.
    before[op]: the operation that must be linearized before this one (its process's previous
    operation), or -1. step(state, op): the state after op, or -1 where op cannot be applied."""
    cdef Py_ssize_t n_entries = len(entries)
    cdef int n_ops = <int>(n_entries // 2)
    cdef const unsigned char* maybe_p = maybe
    cdef const unsigned char* readonly_p = readonly
    cdef LinSet lin
    cdef int* nxt = <int*>malloc((n_entries + 1) * sizeof(int))
    cdef int* prv = <int*>malloc((n_entries + 1) * sizeof(int))
    cdef int* code = <int*>malloc((n_entries + 1) * sizeof(int))
    cdef int* match = <int*>malloc((n_entries + 1) * sizeof(int))
    cdef int* call_of = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef int* need = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef int* stack_entry = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef int* stack_state = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef int* best = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef uint64_t* key = NULL
    cdef LinMemo memo
    cdef dict transitions = {}
    cdef int depth = 0, best_depth = 0, state = initial_state, next_state, op, entry, i, c
    cdef int status = LIN_OK
    cdef Py_ssize_t iterations = 0, key_length
    cdef object found
    lin.n_ok = 0
    while lin.n_ok < n_ops and not maybe_p[lin.n_ok]:
        lin.n_ok += 1
    for i in range(lin.n_ok, n_ops):
        if not maybe_p[i]:
            raise ValueError("operations that may never take effect must be numbered last")
    lin.ok_words = (lin.n_ok + 63) // 64
    lin.info_words = (n_ops - lin.n_ok + 63) // 64
    lin.low = 0
    lin.high_word = 0
    lin.words = <uint64_t*>calloc(lin.ok_words + lin.info_words + 1, sizeof(uint64_t))
    key = <uint64_t*>malloc((lin.ok_words + lin.info_words + 2) * 8)
    memo.slots = NULL
    try:
        _lin_memo_init(&memo)
        if (nxt == NULL or prv == NULL or code == NULL or match == NULL or call_of == NULL
                or need == NULL or stack_entry == NULL or stack_state == NULL or best == NULL
                or lin.words == NULL or key == NULL):
            raise MemoryError()
        # Entry 0 is the list's head; entries 1..n_entries in time order.
        for i in range(n_entries):
            c = entries[i]
            code[i + 1] = c
            if c & 1 == 0:
                call_of[c >> 1] = i + 1
        for i in range(n_entries):
            c = code[i + 1]
            if c & 1:
                match[call_of[c >> 1]] = i + 1
        for i in range(n_ops):
            need[i] = before[i]
        for i in range(n_entries + 1):
            nxt[i] = i + 1
            prv[i] = i - 1
        nxt[n_entries] = 0
        prv[0] = <int>n_entries
        entry = nxt[0]
        while entry != 0:
            iterations += 1
            if iterations % LIN_CLOCK_EVERY == 0 and (
                    clock() > deadline or memo.count > LIN_MAX_CONFIGURATIONS):
                status = LIN_UNKNOWN
                break
            c = code[entry]
            op = c >> 1
            if c & 1:
                if maybe_p[op]:
                    break                   # only operations that may never have happened left
                # An operation's return is reached while it is not linearized: undo the last
                # choice and try the next candidate after it. A read-only choice is undone
                # together with the one before it: had any order worked from there, one taking
                # the read first would have too (it was ready, and it changes no state it can
                # be applied in), so the other candidates need no try.
                while depth > 0:
                    depth -= 1
                    entry = stack_entry[depth]
                    op = code[entry] >> 1
                    _lin_remove(&lin, op)
                    _lin_unlift(nxt, prv, entry, match[entry])
                    if not readonly_p[op]:
                        state = stack_state[depth]
                        break
                else:
                    status = LIN_VIOLATION
                    break
                entry = nxt[entry]
                continue
            if need[op] >= 0 and not _lin_has(&lin, need[op]):
                entry = nxt[entry]
                continue
            found = transitions.get(<int64_t>state * n_ops + op)
            if found is None:
                next_state = step(state, op)
                transitions[<int64_t>state * n_ops + op] = next_state
            else:
                next_state = found
            if next_state < 0:
                entry = nxt[entry]
                continue
            _lin_add(&lin, op)
            key_length = _lin_key(&lin, next_state, <unsigned char*>key)
            if _lin_memo_add(&memo, key, key_length // 8):
                _lin_remove(&lin, op)
                entry = nxt[entry]
                continue
            stack_entry[depth] = entry
            stack_state[depth] = state
            depth += 1
            if depth > best_depth:
                # The stack below may have changed since the last record: copy all of it (at
                # most n copies of at most n ints over a whole search).
                for i in range(depth):
                    best[i] = code[stack_entry[i]] >> 1
                best_depth = depth
            state = next_state
            _lin_lift(nxt, prv, entry, match[entry])
            entry = nxt[0]
        if status != LIN_VIOLATION:
            return status, []
        return status, [best[i] for i in range(best_depth)]
    finally:
        free(nxt)
        free(prv)
        free(code)
        free(match)
        free(call_of)
        free(need)
        free(stack_entry)
        free(stack_state)
        free(best)
        free(lin.words)
        free(key)
        free(memo.slots)
