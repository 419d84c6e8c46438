# The inner loop of the linearizability checker (fastzk/check/search.py): Wing & Gong's search
# with Lowe's just-in-time linearization and memo cache, on one partition of a history.
# Everything here is ints: operations are 0..n-1, model states are interned ids, the set of
# linearized operations is a bitset. The model itself stays in Python, behind `step`, whose
# answers are memoised here so that each (state, operation) pair costs one Python call.

cdef enum:
    LIN_OK = 0
    LIN_VIOLATION = 1
    LIN_UNKNOWN = 2
    # iterations between two looks at the clock: a few microseconds' worth of work
    LIN_CLOCK_EVERY = 4096


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


def lin_search(list entries, bytes maybe, list before, object step, int initial_state,
               object clock, double deadline):
    """Searches for a linearization of one partition; returns (status, prefix): status 0
    linearizable, 1 not linearizable, 2 unknown (`clock()` passed `deadline`); prefix = the
    operations of the longest linearizable prefix met, in order (empty unless status is 1).

    entries: the 2n call/return entries in time order, each op * 2 (call) or op * 2 + 1
    (return). maybe[op] != 0: the operation may never have taken effect (a timeout): its return
    entry is among the last, and reaching one means every other operation is linearized.
    before[op]: the operation that must be linearized before this one (its process's previous
    operation), or -1. step(state, op): the state after op, or -1 where op cannot be applied."""
    cdef Py_ssize_t n_entries = len(entries)
    cdef int n_ops = <int>(n_entries // 2)
    cdef Py_ssize_t n_words = (n_ops + 63) // 64 if n_ops else 1
    cdef Py_ssize_t key_bytes = n_words * 8 + 4
    cdef const unsigned char* maybe_p = maybe
    cdef int* nxt = <int*>malloc((n_entries + 1) * sizeof(int))
    cdef int* prv = <int*>malloc((n_entries + 1) * sizeof(int))
    cdef int* code = <int*>malloc((n_entries + 1) * sizeof(int))
    cdef int* match = <int*>malloc((n_entries + 1) * sizeof(int))
    cdef int* call_of = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef int* need = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef int* stack_entry = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef int* stack_state = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef int* best = <int*>malloc((n_ops + 1) * sizeof(int))
    cdef uint64_t* linearized = <uint64_t*>calloc(n_words, sizeof(uint64_t))
    cdef unsigned char* key = <unsigned char*>malloc(key_bytes)
    cdef dict transitions = {}
    cdef set seen = set()
    cdef int depth = 0, best_depth = 0, state = initial_state, next_state, op, entry, i, c
    cdef int status = LIN_OK
    cdef Py_ssize_t iterations = 0
    cdef uint64_t bit
    cdef object found, cache_key
    try:
        if (nxt == NULL or prv == NULL or code == NULL or match == NULL or call_of == NULL
                or need == NULL or stack_entry == NULL or stack_state == NULL or best == NULL
                or linearized == NULL or key == NULL):
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
            if iterations % LIN_CLOCK_EVERY == 0 and clock() > deadline:
                status = LIN_UNKNOWN
                break
            c = code[entry]
            op = c >> 1
            if c & 1:
                if maybe_p[op]:
                    break                   # only operations that may never have happened left
                # An operation's return is reached while it is not linearized: undo the last
                # choice and try the next candidate after it.
                if depth == 0:
                    status = LIN_VIOLATION
                    break
                depth -= 1
                entry = stack_entry[depth]
                state = stack_state[depth]
                op = code[entry] >> 1
                linearized[op >> 6] &= ~((<uint64_t>1) << (op & 63))
                _lin_unlift(nxt, prv, entry, match[entry])
                entry = nxt[entry]
                continue
            if need[op] >= 0 and not (linearized[need[op] >> 6] >> (need[op] & 63)) & 1:
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
            bit = (<uint64_t>1) << (op & 63)
            linearized[op >> 6] |= bit
            memcpy(key, linearized, n_words * 8)
            memcpy(key + n_words * 8, &next_state, 4)
            cache_key = PyBytes_FromStringAndSize(<char*>key, key_bytes)
            if cache_key in seen:
                linearized[op >> 6] &= ~bit
                entry = nxt[entry]
                continue
            seen.add(cache_key)
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
        free(linearized)
        free(key)
