"""Differential conformance: znode CRUD, stats, naming and path rules.

Each test is one scenario run against Apache ZooKeeper and against fastzk;
the transcripts (results, normalised Stats, error class names, wire order of
replies) must be identical.  See tests/differential.py for the normalisation.
"""

from __future__ import annotations

from differential import CreateContainer, CreateTTL, Differential, ScenarioContext
from kazoo.protocol.serialization import (
    Create,
    Create2,
    Delete,
    Exists,
    GetChildren,
    GetChildren2,
    GetData,
    SetData,
    Sync,
)
from kazoo.security import OPEN_ACL_UNSAFE, READ_ACL_UNSAFE

ACL = OPEN_ACL_UNSAFE


def test_create_in_every_standalone_mode(differential: Differential) -> None:
    """persistent, ephemeral, persistent_sequential, ephemeral_sequential: paths and Stats."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("persistent"), b"p")
        ctx.op("create", p("ephemeral"), b"e", ephemeral=True)
        ctx.op("create", p("pseq-"), b"ps", sequence=True)
        ctx.op("create", p("eseq-"), b"es", ephemeral=True, sequence=True)
        for name in ("persistent", "ephemeral", "pseq-0000000002", "eseq-0000000003"):
            ctx.op("get", p(name))
        ctx.op("get_children", p(), include_data=True)

    differential.run(scenario)


def test_create2_returns_the_stat_a_get_returns(differential: Differential) -> None:
    """kazoo include_data=True uses create2 (opcode 15): (path, Stat) for every mode."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("a"), b"abc", include_data=True)
        ctx.op("get", p("a"))
        ctx.op("create", p("e"), b"", ephemeral=True, include_data=True)
        ctx.op("create", p("s-"), b"1", sequence=True, include_data=True)
        ctx.op("create", p("es-"), b"2", ephemeral=True, sequence=True, include_data=True)
        ctx.op("create", p("a"), b"dup", include_data=True)
        ctx.op("create", p("missing", "x"), b"", include_data=True)
        ctx.op("create", p("a", "deep", "er"), b"mp", makepath=True, include_data=True)
        ctx.op("get", p("a"))

    differential.run(scenario)


def test_container_and_ttl_create_outcomes(differential: Differential) -> None:
    """Containers/TTL are a later issue; record what each create flavour returns today.

    Flags 4 on create/create2 is accepted as a plain node; opcode 19 makes a
    container; TTL (opcode 21, flags 5/6) is disabled by default; flags 7 and
    negative flags are invalid.  TTL requests each use their own client because
    an Unimplemented reply may close the connection.
    """

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.raw(Create(p("c-create"), b"", ACL, 4))
        ctx.raw(Create2(p("c-create2"), b"", ACL, 4))
        ctx.raw(CreateContainer(p("container"), b"x", ACL, 4))
        ctx.op("get", p("container"))
        ctx.op("create", p("container", "child"), b"")
        ctx.op("get", p("container"))
        ctx.raw(Create(p("flags7"), b"", ACL, 7))
        ctx.raw(Create(p("flags-1"), b"", ACL, -1))
        ctx.raw(Create(p("ttl-on-create"), b"", ACL, 5), client="ttl1")
        ctx.raw(CreateTTL(p("ttl"), b"", ACL, 5, 60_000), client="ttl2")
        ctx.raw(CreateTTL(p("ttl-seq-"), b"", ACL, 6, 60_000), client="ttl3")
        ctx.raw(CreateTTL(p("ttl-plain-flags"), b"", ACL, 0, 60_000), client="ttl4")
        ctx.op("get_children", p())

    differential.run(scenario)


def test_delete_honours_versions_and_children(differential: Differential) -> None:
    """delete: BadVersion, exact version, -1, NoNode, NotEmpty, and their precedence."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("a"), b"")
        ctx.op("set", p("a"), b"1")
        ctx.op("set", p("a"), b"2")
        ctx.op("delete", p("a"), version=0)
        ctx.op("delete", p("a"), version=5)
        ctx.op("delete", p("a"), version=2)
        ctx.op("exists", p("a"))
        ctx.op("delete", p("a"))
        ctx.op("create", p("b"), b"")
        ctx.op("delete", p("b"), version=-1)
        ctx.op("create", p("c"), b"")
        ctx.op("create", p("c", "kid"), b"")
        ctx.op("delete", p("c"))
        ctx.op("delete", p("c"), version=7)
        ctx.op("delete", p("c"), version=0)
        ctx.op("delete", p("nope", "kid"))
        ctx.op("get", p())

    differential.run(scenario)


def test_set_and_get_track_versions(differential: Differential) -> None:
    """setData bumps version/mzxid/mtime even for identical data; stale versions fail."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("n"), b"v0")
        ctx.op("get", p("n"))
        ctx.op("set", p("n"), b"v1", version=0)
        ctx.op("set", p("n"), b"v1", version=0)
        ctx.op("set", p("n"), b"v1", version=1)
        ctx.op("set", p("n"), b"v1", version=-1)
        ctx.op("set", p("n"), b"", version=3)
        ctx.op("get", p("n"))
        ctx.op("set", p("n"), b"longer data " * 100)
        ctx.op("get", p("n"))
        ctx.op("set", p("missing"), b"x")
        ctx.op("set", p("missing"), b"x", version=3)
        ctx.op("get", p("missing"))
        ctx.op("get", p())

    differential.run(scenario)


def test_empty_and_binary_data_round_trip(differential: Differential) -> None:
    """b"" is a zero-length buffer, None a null one; each must come back as stored."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("empty"), b"")
        ctx.op("get", p("empty"))
        ctx.op("create", p("bin"), bytes(range(256)))
        ctx.op("get", p("bin"))
        ctx.op("set", p("bin"), b"")
        ctx.op("get", p("bin"))
        # kazoo's serializer turns data=None into a null buffer (length -1).
        ctx.raw(Create(p("null"), None, ACL, 0))
        ctx.op("get", p("null"))
        ctx.raw(SetData(p("empty"), None, -1))
        ctx.op("get", p("empty"))
        ctx.raw(GetData(p("empty"), None))
        ctx.op("create", p("big"), b"z" * 200_000)
        ctx.call("main.get(~/big) length", lambda: len(ctx.client().get(p("big"))[0]))
        ctx.op("exists", p("big"))

    differential.run(scenario)


def test_exists_reports_present_and_missing(differential: Differential) -> None:
    """exists: Stat for a node, None for a missing one (NoNode is not an error)."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("exists", p("x"))
        ctx.op("create", p("x"), b"data")
        ctx.op("exists", p("x"))
        ctx.op("exists", p("x", "y"))
        ctx.op("exists", p("no", "such", "deep"))
        # Shared servers: only whether system nodes exist, not their (shared) Stats.
        ctx.call(
            "exists('/zookeeper') is not None",
            lambda: ctx.client().exists("/zookeeper") is not None,
        )

    differential.run(scenario)


def test_get_children_and_children2(differential: Differential) -> None:
    """getChildren (8) and getChildren2 (12): names only, and the parent Stat."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("get_children", p())
        ctx.op("get_children", p(), include_data=True)
        for name in ("b", "a", "c", "é", "中文", "a b", "..."):
            ctx.op("create", p(name), b"")
        ctx.op("create", p("a", "grandchild"), b"")
        ctx.op("get_children", p())
        ctx.op("get_children", p(), include_data=True)
        ctx.op("get_children", p("a"), include_data=True)
        ctx.op("get_children", p("b"), include_data=True)
        ctx.op("get_children", p("missing"))
        ctx.op("get_children", p("missing"), include_data=True)
        ctx.op("get_children", "/zookeeper")

    differential.run(scenario)


def test_sync_echoes_the_path_without_checks(differential: Differential) -> None:
    """sync is a no-op barrier on one server: no validation, no existence check."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("s"), b"")
        ctx.op("sync", p("s"))
        ctx.op("sync", p("does-not-exist"))
        ctx.op("sync", "/")
        ctx.raw(Sync(p("bad/")))
        ctx.raw(Sync(p("x\u0001")))
        ctx.raw(Sync("relative"))

    differential.run(scenario)


def test_node_exists_and_no_node_errors(differential: Differential) -> None:
    """NodeExists and NoNode from every operation that can produce them."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("a"), b"")
        ctx.op("create", p("a"), b"")
        ctx.op("create", p("a"), b"", ephemeral=True)
        ctx.op("create", "/", b"")
        ctx.op("create", "/zookeeper", b"")
        ctx.op("create", p("missing", "child"), b"")
        ctx.op("create", p("missing", "child"), b"", ephemeral=True)
        ctx.op("create", p("missing", "seq-"), b"", sequence=True)
        ctx.op("get", p("missing"))
        ctx.op("set", p("missing"), b"")
        ctx.op("delete", p("missing"))
        ctx.op("get_children", p("missing"))
        ctx.raw(Create(p("bad-acl"), b"", [], 0))
        ctx.raw(Create(p("missing", "bad-acl"), b"", [], 0))
        ctx.raw(Create(p("read-only-acl"), b"", READ_ACL_UNSAFE, 0))
        ctx.op("get_acls", p("read-only-acl"))
        ctx.op("create", p("read-only-acl", "child"), b"")

    differential.run(scenario)


def test_ephemerals_cannot_have_children(differential: Differential) -> None:
    """NoChildrenForEphemerals for every mode, and NodeExists / NoNode precedence."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("eph"), b"", ephemeral=True)
        ctx.op("create", p("eph", "c"), b"")
        ctx.op("create", p("eph", "c"), b"", ephemeral=True)
        ctx.op("create", p("eph", "s-"), b"", sequence=True)
        ctx.op("create", p("eph", "s-"), b"", ephemeral=True, sequence=True)
        ctx.op("create", p("eph", "c"), b"", include_data=True)
        ctx.op("create", p("eph"), b"", ephemeral=True)
        ctx.op("create", p("eph", "x", "y"), b"")
        ctx.op("get", p("eph"))
        ctx.op("create", p("other"), b"", ephemeral=True, client="b")
        ctx.op("create", p("other", "c"), b"", client="main")
        ctx.op("delete", p("other"), client="main")
        ctx.op("exists", p("other"), client="b")

    differential.run(scenario)


def test_protected_system_nodes_cannot_be_deleted(differential: Differential) -> None:
    """delete of /, /zookeeper, /zookeeper/quota, /zookeeper/config is BadArguments."""

    def scenario(ctx: ScenarioContext) -> None:
        for path in ("/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"):
            ctx.raw(Delete(path, -1))
            ctx.raw(Delete(path, 12345))
        ctx.op("delete", "/zookeeper")
        ctx.op("delete", "/zookeeper/config", version=3)
        ctx.call(
            "exists('/zookeeper/quota') is not None",
            lambda: ctx.client().exists("/zookeeper/quota") is not None,
        )
        ctx.op("get_children", "/zookeeper")

    differential.run(scenario)


def test_builtin_nodes_on_a_fresh_server(differential: Differential) -> None:
    """/, /zookeeper, /zookeeper/config, /zookeeper/quota: data, Stats, ACLs, children.

    Fresh servers so the root Stat is pristine (cversion -1 quirk); then a few
    writes show how the exposed cversion of / and /zookeeper evolves.
    """

    def scenario(ctx: ScenarioContext) -> None:
        for path in ("/", "/zookeeper", "/zookeeper/config", "/zookeeper/quota"):
            ctx.op("get", path)
            ctx.op("get_children", path, include_data=True)
            ctx.op("get_acls", path)
        ctx.op("create", "/first", b"")
        ctx.op("get", "/")
        ctx.op("delete", "/first")
        ctx.op("get", "/")
        ctx.op("create", "/zookeeper/mine", b"allowed")
        ctx.op("get", "/zookeeper")
        ctx.op("delete", "/zookeeper/mine")
        ctx.op("get", "/zookeeper")
        ctx.op("set", "/zookeeper/quota", b"q")
        ctx.op("get", "/zookeeper/quota")
        ctx.op("set", "/zookeeper/config", b"c")
        ctx.op("get", "/zookeeper/config")
        ctx.op("set", "/", b"rootdata")
        ctx.op("get", "/")

    differential.run(scenario, fresh=True, make_root=False)


def test_sequential_names_follow_the_parent_create_counter(differential: Differential) -> None:
    """Sequence suffix = parent's create counter (not cversion); deletes don't reuse numbers.

    Also records the exposed cversion (2 x creates - numChildren) after each step.
    """

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("p"), b"")
        for _ in range(3):
            ctx.op("create", p("p", "s-"), b"", sequence=True)
        ctx.op("create", p("p", "plain"), b"")
        ctx.op("exists", p("p"))
        ctx.op("delete", p("p", "s-0000000001"))
        ctx.op("exists", p("p"))
        ctx.op("create", p("p", "s-"), b"", sequence=True)
        ctx.op("create", p("p", "e-"), b"", ephemeral=True, sequence=True)
        ctx.op("create", p("p") + "/", b"", sequence=True)
        ctx.op("create", p("p", "plain"), b"")
        ctx.op("create", p("p", "s-"), b"", sequence=True)
        ctx.op("exists", p("p"))
        for child in sorted(ctx.client().get_children(p("p"))):
            ctx.op("delete", p("p", child))
        ctx.op("exists", p("p"))
        ctx.op("create", p("p", "after-"), b"", sequence=True)
        ctx.op("get_children", p("p"), include_data=True)
        ctx.op("create", p("q"), b"")
        ctx.op("create", p("q", ""), b"", sequence=True)
        ctx.op("create", p("q", "x"), b"", sequence=True, ephemeral=True)
        ctx.op("get_children", p("q"), include_data=True)

    differential.run(scenario)


def test_multiple_clients_see_each_others_writes(differential: Differential) -> None:
    """Writes by one session are visible to another immediately after they return."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("shared"), b"from-a", client="a")
        ctx.op("get", p("shared"), client="b")
        ctx.op("set", p("shared"), b"from-b", version=0, client="b")
        ctx.op("get", p("shared"), client="a")
        ctx.op("set", p("shared"), b"stale", version=0, client="a")
        ctx.op("create", p("eph-b"), b"", ephemeral=True, client="b")
        ctx.op("get", p("eph-b"), client="a")
        ctx.op("delete", p("eph-b"), client="a")
        ctx.op("exists", p("eph-b"), client="b")
        ctx.op("get_children", p(), client="c")

    differential.run(scenario)


# Paths the server must refuse for writes (BADARGUMENTS) and treat as missing for reads.
# Written relative to the scenario root; "{r}" is replaced by it.
INVALID_PATHS = [
    "",  # kazoo encodes "" as a null ustring (length -1)
    "a",
    "relative/x",
    "{r}/a/",
    "{r}/a//b",
    "{r}//a",
    "{r}/a/.",
    "{r}/a/..",
    "{r}/./a",
    "{r}/a/\u0001",
    "{r}/a\u001f",
    "{r}/a\u0000b",
    "{r}/a\u007f",
    "{r}/a\u0085",
    "{r}/\U0001f600",
    "{r}/\ufff5",
    "{r}/\ufffd",
    "{r}/\ue000",
    "{r}/\uf8ff",
]
# Unusual but valid names.
VALID_ODD_PATHS = [
    "{r}/a/...",
    "{r}/a/.hidden",
    "{r}/a/..x",
    "{r}/é",
    "{r}/中文",
    "{r}/a b",
    "{r}/\uf900",
    "{r}/\ufeff",
    "{r}/\u00a0",
]


def test_invalid_paths_are_rejected_on_writes_and_missing_on_reads(
    differential: Differential,
) -> None:
    """Path validation (spec 12.1) on create/create2/setData; reads and delete don't validate.

    Requests are sent raw because kazoo normalises paths client-side ("//",
    relative paths, "" -> "/").  Fresh servers: getData("") aliases "/", whose
    Stat must not depend on what other tests did.
    """

    def scenario(ctx: ScenarioContext) -> None:
        r = ctx.root
        ctx.op("create", ctx.path("a"), b"parent")
        for template in INVALID_PATHS + VALID_ODD_PATHS:
            path = template.replace("{r}", r)
            ctx.raw(Create(path, b"d", ACL, 0))
            ctx.raw(Create(path, b"d", ACL, 2))
            ctx.raw(Create2(path, b"d", ACL, 1))
            ctx.raw(SetData(path, b"x", -1))
            ctx.raw(GetData(path, None))
            ctx.raw(Exists(path, None))
            ctx.raw(GetChildren(path, None))
            ctx.raw(GetChildren2(path, None))
            ctx.raw(Delete(path, 99))
        ctx.op("get_children", ctx.path(), include_data=True)
        ctx.op("get_children", ctx.path("a"), include_data=True)

    differential.run(scenario, fresh=True)


def test_invalid_paths_through_the_kazoo_api(differential: Differential) -> None:
    """What an application sees for odd paths via kazoo's normal methods."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("a"), b"")
        for name in ("\U0001f600", "\ue000", "\ufff5", "x\u0001", "ok-é"):
            ctx.op("create", p("a", name), b"")
            ctx.op("set", p("a", name), b"")
            ctx.op("get", p("a", name))
            ctx.op("exists", p("a", name))
            ctx.op("delete", p("a", name))
        ctx.op("create", p("a") + "/", b"", sequence=True)
        ctx.op("get_children", p("a"))

    differential.run(scenario)


def test_error_precedence_between_checks(differential: Differential) -> None:
    """When several checks fail at once, the same error must win (spec 5.2)."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("full"), b"")
        ctx.op("create", p("full", "kid"), b"")
        ctx.op("delete", p("full"), version=9)
        ctx.raw(Create(p("missing", "bad\u0001"), b"", ACL, 0))
        ctx.raw(Create(p("missing", "x"), b"", ACL, 7))
        ctx.raw(Create(p("missing", "x"), b"", [], 0))
        ctx.raw(Create(p("full", "kid"), b"", [], 0))
        ctx.raw(Create(p("full") + "/", b"", ACL, 0))
        ctx.raw(Create(p("full") + "/", b"", ACL, 2))
        ctx.raw(Create(p("full", "kid", "bad\u0001"), b"", ACL, 0))
        ctx.raw(SetData(p("missing", "bad\u0001"), b"", 5))
        ctx.raw(SetData(p("missing"), b"", 5))
        ctx.op("create", p("eph"), b"", ephemeral=True)
        ctx.raw(Create(p("eph", "bad\u0001"), b"", ACL, 0))
        ctx.raw(Create(p("eph") + "/", b"", ACL, 0))
        ctx.raw(Create(p("eph") + "/", b"", ACL, 2))
        ctx.op("get_children", p("full"), include_data=True)

    differential.run(scenario)
