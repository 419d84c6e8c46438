"""Prep (core/prep.pxi through server/prep.py) on a real DataTree: the overlay of prepared but
unapplied txns, versions and counters with Java's int overflow, the ACL check's world:anyone
mask against server/acl.py's check, multi errors, closeSession, and Txn's value semantics.
ZooKeeper's behaviour itself is held by the differential suite (tests/test_conformance_*.py)."""

from __future__ import annotations

import random

from fastzk._core import DataTree
from fastzk.proto import Err, Op, Perm
from fastzk.server import acl as acls
from fastzk.server.apply import Applier
from fastzk.server.prep import CREATE, DELETE, SET_DATA, Prep, Txn
from fastzk.server.sessions import SessionTable
from fastzk.server.watches import WatchManager

OPEN = [(31, "world", "anyone")]
NOW_MS = 1_700_000_000_000
SESSION = 0x100000000000001


def _setup(**kwargs: bool) -> tuple[DataTree, Prep, Applier]:
    tree = DataTree()
    prep = Prep(tree, 0, True, **kwargs)
    applier = Applier(tree, WatchManager(), SessionTable(2000, 1, 0, random.Random(1)))
    return tree, prep, applier


def _commit(prep: Prep, applier: Applier, outcome: Txn | int | list[int]) -> Txn:
    assert isinstance(outcome, Txn), outcome
    applier.apply(outcome)
    prep.applied(outcome.zxid)
    return outcome


def test_overlay_sees_prepared_writes_until_applied() -> None:
    tree, prep, applier = _setup()
    create = prep.write(SESSION, 1, Op.CREATE, ("/a", b"", OPEN, 0), {}, NOW_MS)
    assert isinstance(create, Txn) and create.zxid == 1
    assert not tree.exists("/a")
    # not applied yet: the overlay answers
    assert prep.write(SESSION, 2, Op.CREATE, ("/a", b"", OPEN, 0), {}, NOW_MS) == Err.NODE_EXISTS
    set1 = prep.write(SESSION, 3, Op.SET_DATA, ("/a", b"x", 0), {}, NOW_MS)
    assert isinstance(set1, Txn) and set1.changes == [(SET_DATA, "/a", b"x", 1)]
    assert prep.write(SESSION, 4, Op.SET_DATA, ("/a", b"y", 0), {}, NOW_MS) == Err.BAD_VERSION
    delete = prep.write(SESSION, 5, Op.DELETE, ("/a", 1), {}, NOW_MS)
    assert isinstance(delete, Txn) and delete.changes == [(DELETE, "/a")]
    assert prep.write(SESSION, 6, Op.SET_DATA, ("/a", b"z", -1), {}, NOW_MS) == Err.NO_NODE
    # a failed write uses no zxid
    assert prep.last_zxid == 3
    for txn in (create, set1, delete):
        _commit(prep, applier, txn)
    assert not tree.exists("/a")
    again = _commit(prep, applier, prep.write(SESSION, 7, Op.CREATE2, ("/a", b"", OPEN, 0), {},
                                              NOW_MS))
    assert again.changes[0][:2] == (CREATE, "/a")
    assert tree.stat("/a")[4] == 0


def test_applied_forgets_only_what_the_tree_reflects() -> None:
    tree, prep, applier = _setup()
    first = prep.write(SESSION, 1, Op.CREATE, ("/p", b"", OPEN, 0), {}, NOW_MS)
    second = prep.write(SESSION, 2, Op.SET_DATA, ("/p", b"1", -1), {}, NOW_MS)
    _commit(prep, applier, first)
    # /p's newest view belongs to the second txn, which is not applied: still version 1
    assert prep.write(SESSION, 3, Op.SET_DATA, ("/p", b"2", 1), {}, NOW_MS).changes == [
        (SET_DATA, "/p", b"2", 2)]
    assert tree.stat("/p")[4] == 0
    assert isinstance(second, Txn)


def test_versions_and_sequence_counters_wrap_as_java_ints() -> None:
    tree, prep, applier = _setup()
    tree.create("/w", b"", OPEN, 0, 1, NOW_MS, 0)
    tree.set_data("/w", b"", 0x7FFF_FFFF, 1, NOW_MS)
    prep.last_zxid = 1
    txn = prep.write(SESSION, 1, Op.SET_DATA, ("/w", b"", 0x7FFF_FFFF), {}, NOW_MS)
    assert txn.changes == [(SET_DATA, "/w", b"", -0x8000_0000)]
    tree.create("/s", b"", OPEN, 0, 2, NOW_MS, 0)
    tree.create("/s/x", b"", OPEN, 0, 3, NOW_MS, 0x7FFF_FFFF)  # the parent's counter
    prep.last_zxid = 3
    seq = prep.write(SESSION, 2, Op.CREATE, ("/s/n", b"", OPEN, 2), {}, NOW_MS)
    assert seq.changes[0][1] == "/s/n2147483647" and seq.changes[0][5] == -0x8000_0000
    after = prep.write(SESSION, 3, Op.CREATE, ("/s/n", b"", OPEN, 2), {}, NOW_MS)
    assert after.changes[0][1] == "/s/n-2147483648"  # Java's %010d of a negative counter


def test_multi_errors_and_nothing_prepared_on_failure() -> None:
    tree, prep, applier = _setup()
    ops = [(Op.CREATE, ("/m", b"", OPEN, 0)), (Op.SET_DATA, ("/m", b"x", 5)),
           (Op.DELETE, ("/m", -1))]
    assert prep.write(SESSION, 1, Op.MULTI, ops, {}, NOW_MS) == [
        Err.OK, Err.BAD_VERSION, Err.RUNTIME_INCONSISTENCY]
    # the failed multi's create left no trace in the overlay
    ok = prep.write(SESSION, 2, Op.MULTI, [(Op.CREATE2, ("/m", b"", OPEN, 0)),
                                           (Op.CHECK, ("/m", 0))], {}, NOW_MS)
    assert isinstance(ok, Txn) and ok.zxid == 1
    assert [rtype for rtype, _ in ok.changes] == [Op.CREATE, Op.CHECK]  # rebuilt from flags
    ttl_flags = [(Op.CREATE, ("/t", b"", OPEN, 5))]
    assert prep.write(SESSION, 3, Op.MULTI, ttl_flags, {}, NOW_MS) == Err.MARSHALLING_ERROR
    assert prep.write(SESSION, 4, Op.GET_DATA, ("/m", False), {}, NOW_MS) == Err.UNIMPLEMENTED


def test_close_session_deletes_applied_and_prepared_ephemerals_in_path_order() -> None:
    tree, prep, applier = _setup()
    _commit(prep, applier, prep.write(SESSION, 1, Op.CREATE, ("/e2", b"", OPEN, 1), {}, NOW_MS))
    prep.write(SESSION, 2, Op.CREATE, ("/e1", b"", OPEN, 1), {}, NOW_MS)
    prep.write(SESSION, 3, Op.CREATE, ("/e3", b"", OPEN, 1), {}, NOW_MS)
    prep.write(SESSION, 4, Op.DELETE, ("/e3", -1), {}, NOW_MS)
    txn = prep.close_session(SESSION, 5, NOW_MS)
    assert txn.op == Op.CLOSE_SESSION
    assert txn.changes == [(DELETE, "/e1"), (DELETE, "/e2"), ("close_session", SESSION)]
    assert prep.write(SESSION, 6, Op.CREATE, ("/e1/c", b"", OPEN, 0), {}, NOW_MS) == Err.NO_NODE


def test_acl_decisions_equal_server_acl_check() -> None:
    """Over random ACLs and identities, every write's NO_AUTH decision is server/acl.py's
    check: the world:anyone mask only answers what that check grants before identities."""
    rng = random.Random(5)
    schemes = [("world", "anyone"), ("digest", "u:h"), ("ip", "127.0.0.0/8"), ("ip", "10.0.0.1"),
               ("x509", "CN=a"), ("sasl", "bob")]
    identity_pool = [("ip", "127.0.0.1"), ("ip", "10.0.0.2"), ("digest", "u:h"), ("x509", "CN=a"),
                     ("sasl", "bob"), ("super", "")]
    checked = 0
    for round_ in range(300):
        tree, prep, applier = _setup()
        acl = [(rng.randrange(-1, 32), *rng.choice(schemes)) for _ in range(rng.randint(1, 3))]
        tree.create("/n", b"", acl, 0, 1, NOW_MS, 0)
        prep.last_zxid = 1
        identities = {i: None for i in rng.sample(identity_pool, rng.randint(0, 3))}
        stored = tree.get_acl("/n")[0]
        cases = [
            (Op.SET_DATA, ("/n", b"", -1), Perm.WRITE),
            (Op.CREATE, ("/n/c", b"", OPEN, 0), Perm.CREATE),
            (Op.DELETE, ("/n/c", -1), Perm.DELETE),   # checks /n, then finds no child
            (Op.MULTI, [(Op.CHECK, ("/n", -1))], Perm.READ),
            (Op.SET_ACL, ("/n", OPEN, -1), Perm.ADMIN),  # last: it changes the ACL
        ]
        for op, body, perm in cases:
            outcome = prep.write(SESSION, round_, op, body, identities, NOW_MS)
            denied = outcome == Err.NO_AUTH or outcome == [Err.NO_AUTH]
            assert denied == (not acls.check(stored, perm, identities)), (acl, identities, op)
            checked += 1
    assert checked == 1500
    _, skip, _ = _setup(skip_acl=True)
    skip.write(SESSION, 1, Op.CREATE, ("/x", b"", [(0, "digest", "u:h")], 0), {}, NOW_MS)
    assert isinstance(skip.write(SESSION, 2, Op.SET_DATA, ("/x", b"", -1), {}, NOW_MS), Txn)


def test_txn_value_semantics() -> None:
    a = Txn(5, NOW_MS, SESSION, 7, Op.SET_DATA, [(SET_DATA, "/a", b"x", 1)])
    b = Txn(5, NOW_MS, SESSION, 7, Op.SET_DATA, [(SET_DATA, "/a", b"x", 1)])
    assert a == b and a != Txn(6, NOW_MS, SESSION, 7, Op.SET_DATA, b.changes)
    assert Txn(1, 0, 0, 0, 0).changes == [] and Txn(1, 0, 0, 0, 0).changes is not \
        Txn(1, 0, 0, 0, 0).changes
    assert repr(Txn(1, 2, 3, 4, 5, [])) == (
        "Txn(zxid=1, time_ms=2, session_id=3, xid=4, op=5, changes=[])")
    a.zxid = 9
    assert a.zxid == 9 and a != b
