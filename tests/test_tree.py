"""DataTree against a plain-Python reference model, and the built-in nodes of a fresh server."""

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from fastzk._core import DataTree, WriteBuffer
from fastzk.proto import CONTAINER_OWNER, TTL_OWNER_MASK

OPEN = [(31, "world", "anyone")]
READ = [(1, "world", "anyone")]
DIGEST = [(31, "digest", "bob:hash"), (1, "ip", "10.0.0.1")]
BUILTIN = ("/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config")
TTL_OWNER = TTL_OWNER_MASK | 5000


def i32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


class RefNode:
    def __init__(self, data, acl, owner, zxid, time):
        self.data = data
        self.acl = list(acl)
        self.owner = owner
        self.czxid = self.mzxid = self.pzxid = zxid
        self.ctime = self.mtime = time
        self.version = self.aversion = self.counter = 0
        self.children = set()

    def kind(self):
        if self.owner == 0:
            return "persistent"
        if self.owner == CONTAINER_OWNER:
            return "container"
        if self.owner & 0xFF00000000000000 == 0xFF00000000000000:
            return "ttl"
        return "ephemeral"

    def stat(self):
        return (
            self.czxid, self.mzxid, self.ctime, self.mtime, self.version,
            i32(2 * self.counter - len(self.children)), self.aversion,
            self.owner if self.kind() == "ephemeral" else 0,
            len(self.data or b""), len(self.children), self.pzxid,
        )


def fresh_model():
    nodes = {p: RefNode(b"", OPEN, 0, 0, 0) for p in BUILTIN}
    nodes["/"].children = {"zookeeper"}
    nodes["/zookeeper"].children = {"quota", "config"}
    nodes["/zookeeper/config"].acl = list(READ)
    nodes["/zookeeper/config"].aversion = -1
    return nodes


def parent_of(path):
    cut = path.rfind("/")
    return path[:cut] or "/", path[cut + 1 :]


class TreeMachine(RuleBasedStateMachine):
    """Every mutation goes to both the DataTree and the model; invariants compare them."""

    paths = Bundle("paths")

    def __init__(self):
        super().__init__()
        self.tree = DataTree()
        self.model = fresh_model()
        self.zxid = 0
        self.digests = {}

    def next_zxid(self):
        self.zxid += 1
        return self.zxid

    @rule(target=paths, path=st.sampled_from(BUILTIN))
    def builtin(self, path):
        return path

    @rule(
        target=paths,
        parent=paths,
        name=st.sampled_from(["a", "b", "c", "é", "seq-"]),
        sequential=st.booleans(),
        data=st.sampled_from([None, b"", b"x", b"\x00" * 40]),
        acl=st.sampled_from([OPEN, READ, DIGEST]),
        owner=st.sampled_from([0, 0, 1, 2, -5, CONTAINER_OWNER, TTL_OWNER]),
    )
    def create(self, parent, name, sequential, data, acl, owner):
        if parent not in self.model:
            return parent
        pnode = self.model[parent]
        info = self.tree.node_info(parent)
        assert info[2] == pnode.counter
        path = (parent.rstrip("/") + "/" + name) + (f"{pnode.counter:010d}" if sequential else "")
        if path in self.model or pnode.kind() == "ephemeral":
            return parent
        zxid = self.next_zxid()
        stat = self.tree.create(path, data, acl, owner, zxid, zxid * 10, pnode.counter + 1)
        node = RefNode(data, acl, owner, zxid, zxid * 10)
        self.model[path] = node
        pnode.counter += 1
        pnode.children.add(path.rsplit("/", 1)[1])
        pnode.pzxid = zxid
        assert stat == node.stat()
        return path

    @rule(path=consumes(paths))
    def delete(self, path):
        node = self.model.get(path)
        if node is None or node.children or path in BUILTIN:
            return
        zxid = self.next_zxid()
        self.tree.delete(path, zxid)
        del self.model[path]
        parent, name = parent_of(path)
        self.model[parent].children.discard(name)
        self.model[parent].pzxid = zxid

    @rule(path=paths, data=st.sampled_from([None, b"", b"y", b"long" * 20]))
    def set_data(self, path, data):
        node = self.model.get(path)
        if node is None:  # a txn that cannot apply is an error, never a silent None
            with pytest.raises(KeyError, match="no node"):
                self.tree.set_data(path, data, 1, self.next_zxid(), 1)
            return
        zxid = self.next_zxid()
        stat = self.tree.set_data(path, data, node.version + 1, zxid, zxid * 10 + 1)
        node.data, node.version, node.mzxid, node.mtime = data, node.version + 1, zxid, zxid * 10 + 1
        assert stat == node.stat()

    @rule(path=paths, acl=st.sampled_from([OPEN, READ, DIGEST]))
    def set_acl(self, path, acl):
        node = self.model.get(path)
        if node is None:
            with pytest.raises(KeyError, match="no node"):
                self.tree.set_acl(path, acl, 1)
            return
        stat = self.tree.set_acl(path, acl, node.aversion + 1)
        node.acl = list(acl)
        node.aversion += 1
        assert stat == node.stat()

    @precondition(lambda self: len(self.model) > 4)
    @rule(path=paths)
    def all_children_number(self, path):
        if path not in self.model:
            assert self.tree.all_children_number(path) is None
            return
        prefix = path.rstrip("/") + "/"
        want = sum(1 for p in self.model if p != path and p.startswith(prefix))
        assert self.tree.all_children_number(path) == want

    @invariant()
    def nodes_match(self):
        assert len(self.tree) == len(self.model)
        for path, node in self.model.items():
            assert self.tree.stat(path) == node.stat(), path
            assert self.tree.get_data(path) == (node.data, node.stat())
            assert sorted(self.tree.get_children(path)) == sorted(node.children)
            assert self.tree.get_acl(path) == (node.acl, node.stat())
            version, aversion, counter, nchildren, owner, acl = self.tree.node_info(path)
            assert (version, aversion, counter, nchildren, owner, acl) == (
                node.version, node.aversion, node.counter, len(node.children), node.owner, tuple(node.acl))

    @invariant()
    def indexes_match(self):
        by_owner = {}
        special = set()
        for path, node in self.model.items():
            if node.kind() == "ephemeral":
                by_owner.setdefault(node.owner, set()).add(path)
            elif node.kind() != "persistent":
                special.add(path)
        assert {k: set(v) for k, v in self.tree.sessions_with_ephemerals().items()} == by_owner
        for owner in (1, 2, -5, 3):
            assert set(self.tree.ephemerals(owner)) == by_owner.get(owner, set())
        assert set(self.tree.containers_and_ttls()) == special
        assert self.tree.data_size == sum(
            len(p.encode()) + len(n.data or b"") for p, n in self.model.items())

    @invariant()
    def digest_is_a_function_of_content(self):
        content = frozenset(
            (p, n.data, n.stat(), n.counter, n.owner, tuple(n.acl)) for p, n in self.model.items())
        digest = self.tree.digest()
        assert 0 <= digest < 2**64
        assert self.digests.setdefault(content, digest) == digest
        # distinct contents seen so far have distinct digests (no collision in practice)
        assert len(set(self.digests.values())) == len(self.digests)


TestTreeMachine = TreeMachine.TestCase
TestTreeMachine.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- the fresh tree -----------------------------------------------------------------------------


def test_fresh_tree_holds_exactly_the_builtin_nodes():
    t = DataTree()
    assert len(t) == 4
    assert sorted(t.get_children("/")) == ["zookeeper"]
    assert sorted(t.get_children("/zookeeper")) == ["config", "quota"]
    assert t.get_children("/zookeeper/quota") == []
    assert t.all_children_number("/") == 3
    assert t.all_children_number("/zookeeper") == 2
    assert t.data_size == sum(len(p) for p in BUILTIN)


def test_fresh_root_has_cversion_minus_one_and_one_child():
    assert DataTree().get_data("/") == (b"", (0, 0, 0, 0, 0, -1, 0, 0, 0, 1, 0))


def test_fresh_zookeeper_node_has_cversion_minus_two():
    assert DataTree().stat("/zookeeper") == (0, 0, 0, 0, 0, -2, 0, 0, 0, 2, 0)


def test_fresh_quota_is_all_zeros_with_open_acl():
    assert DataTree().get_acl("/zookeeper/quota") == (OPEN, (0,) * 11)


def test_fresh_config_is_world_read_with_aversion_minus_one():
    acl, stat = DataTree().get_acl("/zookeeper/config")
    assert acl == [(1, "world", "anyone")]
    assert stat == (0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0)


def test_empty_path_reads_the_root():
    t = DataTree()
    assert t.get_data("") == t.get_data("/")
    assert t.exists("")
    out = WriteBuffer()
    assert t.write_stat(out, "")
    assert len(out) == 68


# --- explicit Stat rules --------------------------------------------------------------------------
# The tree takes absolute values from the txn (prep computes them); these helpers compute them the
# way prep does, so the tests read like the operations they exercise.


def create(t, path, data, acl, owner, zxid, time_ms):
    parent = path[: path.rfind("/")] or "/"
    info = t.node_info(parent)
    counter = info[2] + 1 if info is not None else 1
    return t.create(path, data, acl, owner, zxid, time_ms, counter)


def set_data(t, path, data, zxid, time_ms):
    info = t.node_info(path)
    return t.set_data(path, data, (info[0] if info else -1) + 1, zxid, time_ms)


def set_acl(t, path, acl):
    info = t.node_info(path)
    return t.set_acl(path, acl, (info[1] if info else -1) + 1)


def test_first_create_under_root_makes_root_cversion_zero():
    t = DataTree()
    stat = create(t, "/a", b"d", OPEN, 0, 7, 1234)
    assert stat == (7, 7, 1234, 1234, 0, 0, 0, 0, 1, 0, 7)
    root = t.stat("/")
    assert root[5] == 0 and root[9] == 2 and root[10] == 7 and root[1] == 0


def test_delete_counts_in_exposed_cversion_but_not_in_the_counter():
    t = DataTree()
    create(t, "/p", b"", OPEN, 0, 1, 0)
    create(t, "/p/a", b"", OPEN, 0, 2, 0)
    create(t, "/p/b", b"", OPEN, 0, 3, 0)
    t.delete("/p/a", 4)
    stat = t.stat("/p")
    assert (stat[5], stat[9], stat[10]) == (3, 1, 4)
    assert t.node_info("/p")[2] == 2


def test_null_data_is_kept_apart_from_empty_data():
    t = DataTree()
    create(t, "/n", None, OPEN, 0, 1, 0)
    create(t, "/e", b"", OPEN, 0, 2, 0)
    assert t.get_data("/n")[0] is None and t.get_data("/n")[1][8] == 0
    assert t.get_data("/e")[0] == b""
    set_data(t, "/e", None, 3, 0)
    assert t.get_data("/e")[0] is None


def test_container_and_ttl_nodes_expose_owner_zero():
    t = DataTree()
    create(t, "/c", b"", OPEN, CONTAINER_OWNER, 1, 0)
    create(t, "/t", b"", OPEN, TTL_OWNER, 2, 0)
    create(t, "/u", b"", OPEN, 0x8000000000000000, 3, 0)      # unsigned spelling
    assert t.stat("/c")[7] == t.stat("/t")[7] == t.stat("/u")[7] == 0
    assert t.node_info("/t")[4] == TTL_OWNER
    assert t.node_info("/u")[4] == CONTAINER_OWNER
    assert sorted(t.containers_and_ttls()) == ["/c", "/t", "/u"]
    assert t.sessions_with_ephemerals() == {}


def test_ephemeral_nodes_are_indexed_by_session():
    t = DataTree()
    sid = 0x0100000D992F0013
    create(t, "/e1", b"", OPEN, sid, 1, 0)
    create(t, "/e2", b"", OPEN, sid, 2, 0)
    assert t.stat("/e1")[7] == sid
    assert sorted(t.ephemerals(sid)) == ["/e1", "/e2"]
    t.delete("/e1", 3)
    assert t.sessions_with_ephemerals() == {sid: ["/e2"]}
    t.delete("/e2", 4)
    assert t.ephemerals(sid) == []


def test_acl_version_counts_up_from_config_quirk():
    t = DataTree()
    create(t, "/v", b"", OPEN, 0, 1, 0)
    for _ in range(3):
        set_acl(t, "/v", OPEN)
    assert t.stat("/v")[6] == 3
    assert t.stat("/zookeeper/config")[6] == -1
    assert set_acl(t, "/zookeeper/config", READ)[6] == 0


def test_digest_depends_only_on_content_not_on_history():
    a, b = DataTree(), DataTree()
    create(a, "/x", b"1", OPEN, 0, 1, 10)
    create(a, "/y", b"2", READ, 0, 2, 20)
    create(b, "/y", b"2", READ, 0, 2, 20)
    create(b, "/x", b"1", OPEN, 0, 1, 10)
    assert a.digest() == b.digest()                  # same content, other creation order
    for t in (a, b):
        create(t, "/z", None, OPEN, 0, 3, 30)
        t.delete("/z", 4)
    assert a.digest() == b.digest()
    set_data(a, "/x", b"1", 5, 50)
    assert a.digest() != b.digest()
    set_data(b, "/x", b"1", 5, 50)
    assert a.digest() == b.digest()


def test_many_nodes_survive_table_growth_and_deletion():
    t = DataTree()
    create(t, "/m", b"", OPEN, 0, 1, 0)
    for i in range(5000):
        create(t, f"/m/{i}", str(i).encode(), OPEN, 0, i + 2, 0)
    for i in range(0, 5000, 2):
        t.delete(f"/m/{i}", 10_000 + i)
    assert len(t) == 4 + 1 + 2500
    assert all(t.get_data(f"/m/{i}")[0] == str(i).encode() for i in range(1, 5000, 2))
    assert not any(t.exists(f"/m/{i}") for i in range(0, 5000, 2))
    assert t.all_children_number("/m") == 2500


def test_mutators_refuse_what_would_corrupt_the_tree():
    t = DataTree()
    create(t, "/a", b"", OPEN, 0, 1, 0)
    create(t, "/a/b", b"", OPEN, 0, 2, 0)
    with pytest.raises(KeyError):
        create(t, "/missing/b", b"", OPEN, 0, 3, 0)
    with pytest.raises(ValueError):
        t.delete("/a", 3)
    with pytest.raises(ValueError):
        t.delete("/", 3)


def test_replaying_txns_over_a_state_that_has_them_changes_nothing():
    """A fuzzy snapshot may already hold some of the txns replayed after it."""
    t = DataTree()
    create(t, "/a", b"v", OPEN, 0, 1, 10)
    t.set_data("/a", b"w", 1, 2, 20)
    t.delete("/gone", 3)
    before = (t.digest(), t.stat("/"), t.stat("/a"))
    t.create("/a", b"v", OPEN, 0, 1, 10, 1)
    t.set_data("/a", b"w", 1, 2, 20)
    t.set_acl("/a", OPEN, 0)
    assert (t.digest(), t.stat("/"), t.stat("/a")) == before
    # a node a later txn deletes may be gone already: the tree says so, and only a fuzzy
    # replay (Applier.replay) skips such a change
    with pytest.raises(KeyError, match="no node: /missing"):
        t.set_data("/missing", b"", 1, 4, 0)
    with pytest.raises(KeyError, match="no node: /missing"):
        t.set_acl("/missing", OPEN, 1)
    assert (t.digest(), t.stat("/"), t.stat("/a")) == before


def test_reads_of_missing_nodes_return_none():
    t = DataTree()
    for path in ("/nope", "/\ud83d\ude00", "/a\x00"):
        assert not t.exists(path)
        assert t.stat(path) is None
        assert t.get_data(path) is None
        assert t.get_children(path) is None
        assert t.get_acl(path) is None
        assert t.node_info(path) is None
        assert t.all_children_number(path) is None
        assert t.write_stat(WriteBuffer(), path) is False
