"""What `fastzk load` sends: operation specs, the key space layout and checkable values.

Kept apart from the engine (``engine.py``) so that the harness and tests can build the same
paths and values the load uses (e.g. a test that clobbers a key owned by a session).

Key space (under ``root``)::

    root/k0000000 .. root/k{keys-1}     the keys read/written by get/set/exists/mixed/multi
    root/k0000000/c000 .. c{children-1} only for the ``children`` op
    root/c/s{session}/n0000000000 ...   create* ops: one parent per session, names numbered
    root/d/s{session}/n0000000000 ...   delete: nodes made by the set-up, deleted by the run
    root/cd/s{session}-{slot}           create-delete pairs

Checkable values (``--check``): every value a session writes carries its writer and a
counter, ``b"%06d:%012d:" % (writer, counter)`` padded with ``.`` to the value size. Key k is
written only by its owner, global session ``k % sessions``; so the owner knows the exact
value and version every one of its own reads must return (a connection's requests are
applied in order), and any other reader can check the writer, that the counter never goes
backwards, and that ``version - counter`` is the same every time (only the owner writes).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Operations of the simple (non-preset) workloads.
SIMPLE_OPS = (
    "get",
    "set",
    "exists",
    "children",
    "create",
    "create:seq",
    "create:eph",
    "create:eph-seq",
    "delete",
    "create-delete",
    "multi",
    "mixed:R",
)
PRESETS = ("kafka", "lock", "watch-fanout", "session-churn")

#: CreateMode flags by create variant.
CREATE_FLAGS = {"create": 0, "create:eph": 1, "create:seq": 2, "create:eph-seq": 3}

CHECK_HEAD = 20  # len(b"%06d:%012d:")


@dataclass(frozen=True)
class OpSpec:
    """A parsed ``--op``: kind (one of SIMPLE_OPS without ``:R``), read percent, create flags."""

    kind: str
    reads: int = 0  # percent of getData in mixed (100 for get)
    flags: int = 0  # create flags (create variants)
    label: str = ""  # the op as the user wrote it (normalised), e.g. "mixed:90", "create:seq"

    @property
    def sequential(self) -> bool:
        return bool(self.flags & 2)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 1)

    @property
    def uses_keys(self) -> bool:
        """True when the op reads or writes the shared keys (set-up creates them)."""
        return self.kind in ("get", "set", "exists", "children", "multi", "mixed")

    @property
    def writes_keys(self) -> bool:
        return self.kind in ("set", "multi") or (self.kind == "mixed" and self.reads < 100)


def parse_op_spec(op: str) -> OpSpec:
    """Parse ``--op``. get = mixed:100 and set = mixed:0 underneath for the schedule."""
    op = op.strip().lower()
    if op in ("get", "read"):
        return OpSpec("get", 100, label="get")
    if op in ("set", "write"):
        return OpSpec("set", 0, label="set")
    if op in ("exists", "children", "delete", "multi"):
        return OpSpec(op, label=op)
    if op in ("create-delete", "createdelete", "cd"):
        return OpSpec("create-delete", label="create-delete")
    if op in CREATE_FLAGS:
        return OpSpec("create", flags=CREATE_FLAGS[op], label=op)
    if op.startswith("mixed"):
        _, _, pct = op.partition(":")
        try:
            reads = int(pct or 90)
        except ValueError:
            raise ValueError(f"mixed:R needs a number R, got {op!r}") from None
        if not 0 <= reads <= 100:
            raise ValueError(f"mixed read percentage must be 0..100, got {reads}")
        return OpSpec("mixed", reads, label=f"mixed:{reads}")
    raise ValueError(
        f"unknown op {op!r}; expected one of {', '.join(SIMPLE_OPS)} "
        f"(or --preset {'|'.join(PRESETS)})"
    )


def key_path(root: str, index: int) -> str:
    """Path of key *index*."""
    return f"{root}/k{index:07d}"


def child_names(count: int) -> list[str]:
    """Names of the children made under every key for the ``children`` op (sorted)."""
    return [f"c{i:03d}" for i in range(count)]


def create_parent(root: str, session: int) -> str:
    """Parent of the nodes one session creates (create* ops)."""
    return f"{root}/c/s{session}"


def delete_parent(root: str, session: int) -> str:
    """Parent of the nodes one session deletes (delete op)."""
    return f"{root}/d/s{session}"


def numbered(parent: str, n: int) -> str:
    """The n-th node under a create/delete parent: the same name a sequential create makes
    for counter n with the prefix ``n`` (``%010d``), so both kinds clean up alike."""
    return f"{parent}/n{n:010d}"


def plain_value(size: int) -> bytes:
    """The value of the unchecked workloads (fixed, so reads return a known size)."""
    return (b"fastzk-load-" * (size // 12 + 1))[:size]


def check_value(writer: int, counter: int, size: int) -> bytes:
    """A checkable value: writer and counter, padded to *size* (at least CHECK_HEAD)."""
    head = b"%06d:%012d:" % (writer, counter)
    return head + b"." * (size - CHECK_HEAD)


def parse_check_value(data: bytes | None, size: int) -> tuple[int, int] | None:
    """(writer, counter) of a value made by :func:`check_value`, or None if it is not one."""
    if data is None or len(data) != size or size < CHECK_HEAD:
        return None
    try:
        writer = int(data[0:6])
        counter = int(data[7:19])
    except ValueError:
        return None
    if data != check_value(writer, counter, size):
        return None
    return writer, counter


def owner_of(key: int, sessions: int) -> int:
    """Global session index that owns (alone writes) key *key* under --check."""
    return key % sessions
