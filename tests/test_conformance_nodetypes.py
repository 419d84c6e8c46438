"""Differential conformance: containers, TTL nodes and the other 3.5+ opcodes.

Containers and TTL nodes are deleted by a background reaper (ZooKeeper's
ContainerManager), every ``znode.container.checkIntervalMs`` = 500 ms on both
servers (conftest.ALIKE_CFG).  Reaping is asynchronous, so these scenarios never
sleep to assert: a *sentinel* node that qualifies for reaping is created after
the node under test, and once the sentinel is gone (an exists watch, bounded
wait) at least one full reaper pass has seen the node under test -- so "still
there" is then a real observation.  Watch callbacks of reaped nodes go to a
client that sends nothing while it waits, so its wire log is deterministic.

TTL nodes need ``extendedTypesEnabled=true``: those tests share one module-scoped
pair started with it on; the shared pair has it off (fastzk's default is on, see
conftest.py), which is where "disabled" behaviour is compared.

Also here: getAllChildrenNumber (104), getEphemerals (103), whoAmI (107),
reconfig (16), reads of /zookeeper/config and /zookeeper/quota, and the top-level
check (13), whose 3.8.0 behaviour fastzk deliberately does not copy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import wire
from differential import (
    SUPER_CREDENTIALS,
    CreateContainer,
    CreateTTL,
    Differential,
    ScenarioContext,
    check_request,
    get_all_children_number_request,
    get_ephemerals_request,
    multi_request,
    who_am_i_request,
)
from kazoo.protocol.serialization import Create, Create2
from kazoo.security import ACL, OPEN_ACL_UNSAFE, Id

from fastzk.nemesis.servers import ServerProcess

OPEN = OPEN_ACL_UNSAFE
WRITE_ONLY = [ACL(2, Id("world", "anyone"))]
MAX_TTL = 0xFF_FFFF_FFFF
WAIT = 8.0


@pytest.fixture(scope="module")
def ttl_pair(
    launch_pair: Callable[..., tuple[ServerProcess, ServerProcess]],
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """(ZooKeeper, fastzk) with TTL nodes enabled (and the 500 ms reaper of ALIKE_CFG)."""
    pair = launch_pair(extendedTypesEnabled=True)
    try:
        yield pair
    finally:
        for proc in pair:
            proc.stop()


@pytest.fixture
def ttl_differential(
    differential_on: Callable[[tuple[ServerProcess, ServerProcess]], Differential],
    ttl_pair: tuple[ServerProcess, ServerProcess],
) -> Differential:
    return differential_on(ttl_pair)


# --- helpers ------------------------------------------------------------------------------------
def wait_deleted(ctx: ScenarioContext, path: str, *, client: str = "reaper") -> None:
    """Record whether *path* is deleted within WAIT seconds (exists watch, no polling).

    The waiting client never records its wire log (it may receive reaper
    notifications at any time).
    """
    gone = threading.Event()

    def watch(event: Any) -> None:
        if event.type == "DELETED":
            gone.set()
        else:  # re-arm (e.g. a data change)
            if c.exists(path, watch=watch) is None:
                gone.set()

    c = ctx.client(client, record_wire=False)
    if c.exists(path, watch=watch) is None:
        gone.set()
    ctx.record(f"deleted ~{path.removeprefix(ctx.root)}", gone.wait(WAIT))


def reaper_pass(ctx: ScenarioContext, name: str = "sentinel") -> None:
    """Block until the reaper has made a full pass after this call (see module docstring).

    A fresh container gets a child that is deleted again, so it qualifies
    at once; it is gone after the next pass that starts after now.
    """
    c = ctx.client("reaper", record_wire=False)
    path = ctx.path(name)
    result = c.handler.async_result()
    c._call(CreateContainer(path, b"", OPEN, 4), result)
    result.get(timeout=WAIT)
    c.create(f"{path}/kid")
    c.delete(f"{path}/kid")
    wait_deleted(ctx, path)


def watch_tree(ctx: ScenarioContext, *paths: str, client: str = "watcher") -> None:
    """exists watches on *paths* and a child watch on the scenario root."""
    for path in paths:
        ctx.op("exists", path, watch=ctx.watcher(f"exists ~{path.removeprefix(ctx.root)}",
                                                   client), client=client)
    ctx.op("get_children", ctx.path(), watch=ctx.watcher("children ~", client), client=client)


# --- containers -------------------------------------------------------------------------------
def test_container_deleted_after_its_last_child_goes(differential: Differential) -> None:
    """A container survives reaper passes while it has a child; once the last child is
    deleted the reaper deletes it, firing ordinary delete watches."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.raw(CreateContainer(p("box"), b"data", OPEN, 4))
        ctx.op("create", p("box", "a"), b"")
        ctx.op("create", p("box", "b"), b"")
        ctx.op("delete", p("box", "a"))
        reaper_pass(ctx, "sentinel-1")
        ctx.op("get", p("box"), label="box with one child left, after a reaper pass")
        watch_tree(ctx, p("box"))
        ctx.op("delete", p("box", "b"))
        wait_deleted(ctx, p("box"))
        ctx.barrier("watcher")
        ctx.record_events("watcher")
        ctx.op("exists", p("box"))
        ctx.op("get_children", p())

    differential.run(scenario)


def test_never_used_container_is_kept(differential: Differential) -> None:
    """A container that never had a child is not reaped (maxNeverUsedIntervalMs = 0)."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.raw(CreateContainer(p("empty"), b"", OPEN, 4))
        ctx.raw(Create2(p("plain-f4"), b"", OPEN, 4), label="create2 flags 4 (plain node)")
        ctx.op("create", p("plain-f4", "kid"), b"")
        ctx.op("delete", p("plain-f4", "kid"))
        reaper_pass(ctx)
        ctx.op("get", p("empty"), label="never-used container after a reaper pass")
        ctx.op("get", p("plain-f4"), label="create2 flags 4 is a plain node, kept")
        # Using it later makes it reapable.
        ctx.op("create", p("empty", "kid"), b"")
        ctx.op("delete", p("empty", "kid"))
        wait_deleted(ctx, p("empty"))

    differential.run(scenario)


def test_container_children_and_nesting(differential: Differential) -> None:
    """Containers may hold ephemerals and containers; reaping cascades bottom-up, and a
    create under a reaped container gets NoNode."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.raw(CreateContainer(p("outer"), b"", OPEN, 4))
        ctx.raw(CreateContainer(p("outer", "inner"), b"", OPEN, 4))
        ctx.op("create", p("outer", "inner", "eph"), b"", ephemeral=True, client="owner")
        ctx.op("create", p("outer", "inner", "seq-"), b"", sequence=True)
        ctx.op("delete", p("outer", "inner", "seq-0000000001"))
        ctx.op("get_children", p("outer", "inner"), include_data=True)
        ctx.stop_client("owner")  # its ephemeral goes: inner is empty, then outer
        wait_deleted(ctx, p("outer", "inner"))
        wait_deleted(ctx, p("outer"))
        ctx.op("create", p("outer", "inner", "late"), b"")

    differential.run(scenario)


# --- TTL nodes --------------------------------------------------------------------------------
def test_ttl_node_deleted_after_ttl_when_childless(ttl_differential: Differential) -> None:
    """createTTL (21) flags 5 and 6: create2-style reply (ephemeralOwner 0); reaped once
    childless and unmodified for longer than the ttl."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.unordered_notifications = True  # the reaper deletes the three in any order
        ctx.raw(CreateTTL(p("ttl"), b"t", OPEN, 5, 300))
        ctx.raw(CreateTTL(p("seq-"), b"s", OPEN, 6, 300))
        ctx.raw(CreateTTL(p("seq-"), b"s", OPEN, 6, 300))
        ctx.op("get", p("ttl"))
        ctx.op("get_children", p())
        watch_tree(ctx, p("ttl"), p("seq-0000000001"))
        wait_deleted(ctx, p("ttl"))
        wait_deleted(ctx, p("seq-0000000001"))
        wait_deleted(ctx, p("seq-0000000002"))
        ctx.barrier("watcher")
        ctx.record_events("watcher", unordered=True)
        ctx.op("get_children", p())

    ttl_differential.run(scenario)


def test_ttl_node_with_children_is_kept(ttl_differential: Differential) -> None:
    """An expired TTL node is not deleted while it has a child; it goes once it has none."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.raw(CreateTTL(p("parent"), b"", OPEN, 5, 100))
        ctx.op("create", p("parent", "kid"), b"")
        ctx.raw(CreateTTL(p("sentinel"), b"", OPEN, 5, 100))
        wait_deleted(ctx, p("sentinel"))
        ctx.op("get_children", p("parent"), label="expired TTL parent still has its child")
        ctx.op("delete", p("parent", "kid"))
        wait_deleted(ctx, p("parent"))

    ttl_differential.run(scenario)


def test_create_ttl_validation_when_enabled(ttl_differential: Differential) -> None:
    """ttl 0, negative, above 0xFF_FFFF_FFFF; TTL flags on create/create2; non-TTL flags
    with a ttl: BadArguments.  The maximum ttl is accepted; TTL nodes may have children.

    Not compared: createTTL with non-TTL flags and ttl -1 (see
    test_create_ttl_with_plain_flags_and_no_ttl): it crashes ZooKeeper 3.8.0.
    """

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        cases = {
            "ttl 0": CreateTTL(p("t0"), b"", OPEN, 5, 0),
            "ttl -1": CreateTTL(p("tneg"), b"", OPEN, 5, -1),
            "ttl -5000": CreateTTL(p("tneg2"), b"", OPEN, 6, -5000),
            "ttl max+1": CreateTTL(p("tbig"), b"", OPEN, 5, MAX_TTL + 1),
            "ttl max": CreateTTL(p("tmax"), b"", OPEN, 5, MAX_TTL),
            "ttl 1 seq": CreateTTL(p("tone-"), b"", OPEN, 6, 1),
            "flags 0 with ttl": CreateTTL(p("f0"), b"", OPEN, 0, 1000),
            "flags 4 with ttl": CreateTTL(p("f4"), b"", OPEN, 4, 1000),
            "flags 7": CreateTTL(p("f7"), b"", OPEN, 7, 1000),
            "create flags 5": Create(p("c5"), b"", OPEN, 5),
            "create2 flags 6": Create2(p("c6"), b"", OPEN, 6),
            "container flags 5": CreateContainer(p("cc5"), b"", OPEN, 5),
            "missing parent": CreateTTL(p("nope", "t"), b"", OPEN, 5, 1000),
            "empty acl": CreateTTL(p("acl"), b"", [], 5, 1000),
        }
        for label, request in cases.items():
            ctx.raw(request, label=label, client=f"c-{label.replace(' ', '-')}")
        ctx.op("create", p("tmax", "kid"), b"")
        # tone-* (ttl 1 ms) may already have been reaped: leave it out.
        c = ctx.client()
        ctx.call("children", lambda: [n for n in c.get_children(p())
                                      if not n.startswith("tone")])
        ctx.op("get", p("tmax"))

    ttl_differential.run(scenario)


def test_ttl_in_multi_when_enabled(ttl_differential: Differential) -> None:
    """createTTL inside multi: a create2-style result; invalid ttl fails the multi."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.raw(
            multi_request(
                ("createTTL", p("t"), b"", None, 5, 60_000),
                ("createTTL", p("s-"), b"", None, 6, 60_000),
                ("create", p("t", "kid"), b"", None, 0),
            )
        )
        ctx.raw(
            multi_request(
                ("create", p("x"), b"", None, 0),
                ("createTTL", p("bad"), b"", None, 5, 0),
            ),
            label="ttl 0 in multi",
        )
        ctx.op("get_children", p())

    ttl_differential.run(scenario)


def test_ttl_disabled_answers_unimplemented(differential: Differential) -> None:
    """extendedTypesEnabled=false (the shared pair): every TTL create is Unimplemented, also
    inside a multi; non-TTL creates through opcode 21 still validate their ttl."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        cases = {
            "createTTL flags 5": CreateTTL(p("t5"), b"", OPEN, 5, 1000),
            "createTTL flags 6": CreateTTL(p("t6"), b"", OPEN, 6, 1000),
            "createTTL flags 5 ttl 0": CreateTTL(p("t50"), b"", OPEN, 5, 0),
            "create flags 5": Create(p("c5"), b"", OPEN, 5),
            "create2 flags 6": Create2(p("c6"), b"", OPEN, 6),
            "createTTL flags 0 ttl 1000": CreateTTL(p("f0"), b"", OPEN, 0, 1000),
        }
        for label, request in cases.items():
            ctx.raw(request, label=label, client=f"c-{label.replace(' ', '-')}")
        ctx.raw(
            multi_request(("createTTL", p("m"), b"", None, 5, 1000)), label="multi createTTL"
        )
        ctx.op("get_children", p())

    differential.run(scenario)


# --- other opcodes ------------------------------------------------------------------------------
def test_get_all_children_number(differential: Differential) -> None:
    """getAllChildrenNumber (104): all descendants; NoNode; NoAuth without READ."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        for path in ("a", "a/b", "a/b/c", "a/b/d", "a/e", "ab", "secret"):
            ctx.op("create", p(*path.split("/")), b"")
        ctx.op("create", p("secret", "x"), b"")
        ctx.op("set_acls", p("secret"), WRITE_ONLY)
        for path in (p(), p("a"), p("a", "b"), p("a", "b", "c"), p("missing"), p("secret"),
                     "/zookeeper", "/zookeeper/quota", p() + "/", "relative"):
            ctx.raw(get_all_children_number_request(path))

    differential.run(scenario)


def test_get_ephemerals(differential: Differential) -> None:
    """getEphemerals (103): only the caller's own, plain string prefix, "/"/""/null = all."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("dir"), b"")
        ctx.op("create", p("dir", "e1"), b"", ephemeral=True)
        ctx.op("create", p("dir", "e2-"), b"", ephemeral=True, sequence=True)
        ctx.op("create", p("direct"), b"", ephemeral=True)
        ctx.op("create", p("other"), b"", ephemeral=True, client="other")
        ctx.op("create", p("persistent"), b"")
        for prefix in (p("dir"), p("dir") + "/", p("di"), p("other"), p("nothing"), p()):
            ctx.raw(get_ephemerals_request(prefix))
        ctx.raw(get_ephemerals_request(p()), client="other")
        ctx.raw(get_ephemerals_request(p()), client="none")
        for prefix in ("/", "", None, " "):
            # Everything the session owns: only this scenario's ephemerals.
            ctx.raw(get_ephemerals_request(prefix), label=f"main.getEphemerals({prefix!r})")

    differential.run(scenario)


def colliding_names(blocks: int) -> list[str]:
    """Every name of `blocks` blocks of "Aa" or "BB": equal String.hashCode, so in a set they
    share one bin at every table size, whatever prefix they share."""
    names = [""]
    for _ in range(blocks):
        names = [name + block for name in names for block in ("Aa", "BB")]
    return names


def test_get_ephemerals_order_with_colliding_names(differential: Differential) -> None:
    """Paths with equal hashes in the session's HashSet: a ninth in one bin makes the table
    grow instead (16 -> 32 -> 64 bins), then the bin becomes a tree bin (new entries after
    their tree parent, the root moved first); the clone that getEphemerals lists is filled
    in that order and treeifies too. Ordinary names around them, and a second group whose
    session then deletes ordinary names created after it (deletes before or amid a group of 9
    are not modelled: see DataTree.ephemerals)."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("c"), b"")
        names = colliding_names(5)
        order = names[2::3] + names[::3] + names[1::3]  # not in hash-tie (compareTo) order
        for i in range(4):
            ctx.op("create", p("c", f"plain{i}"), b"", ephemeral=True)
        for count, name in enumerate(order[:24], 1):
            ctx.op("create", p("c", name), b"", ephemeral=True)
            if count in (8, 9, 10, 11, 16, 24):
                ctx.raw(get_ephemerals_request(p("c")), label=f"getEphemerals after {count}")
        for name in colliding_names(4)[::-1]:
            ctx.op("create", p("c", "x" + name), b"", ephemeral=True, client="other")
        for i in range(4, 40):
            ctx.op("create", p("c", f"plain{i}"), b"", ephemeral=True, client="other")
        ctx.raw(get_ephemerals_request(p("c")), client="other")
        for i in range(4, 40, 2):  # the set keeps its 64 bins, the clone gets 32
            ctx.op("delete", p("c", f"plain{i}"), client="other")
        ctx.raw(get_ephemerals_request(p("c")), client="other")

    differential.run(scenario)


def test_who_am_i(differential: Differential) -> None:
    """whoAmI (107): ip, then each digest user, super for the super digest."""

    def scenario(ctx: ScenarioContext) -> None:
        ctx.raw(who_am_i_request())
        ctx.op("add_auth", "digest", "bob:secret")
        ctx.raw(who_am_i_request())
        ctx.op("add_auth", "digest", "alice:pw")
        ctx.op("add_auth", "digest", "bob:secret")
        ctx.raw(who_am_i_request())
        ctx.op("add_auth", "ip", "127.0.0.1", client="ip")
        ctx.raw(who_am_i_request(), client="ip")
        ctx.op("add_auth", "digest", SUPER_CREDENTIALS, client="super")
        ctx.raw(who_am_i_request(), client="super")
        ctx.op("add_auth", "digest", "super:wrong", client="not-super")
        ctx.raw(who_am_i_request(), client="not-super")

    differential.run(scenario)


def test_reconfig_is_disabled_on_standalone(differential: Differential) -> None:
    """reconfig (16): ReconfigDisabled, whatever the arguments; the connection stays up."""

    def scenario(ctx: ScenarioContext) -> None:
        ctx.op("reconfig", "server.2=127.0.0.1:2888:3888:participant;2182", None, None, -1)
        ctx.op("reconfig", None, "1", None, -1)
        ctx.op("reconfig", None, None, "server.1=127.0.0.1:2888:3888;2181", 7)
        ctx.op("exists", ctx.path())

    differential.run(scenario)


def test_system_nodes_on_a_fresh_server(differential: Differential) -> None:
    """/zookeeper, /zookeeper/config and /zookeeper/quota: data, Stat, ACL, children,
    protection against delete, getAllChildrenNumber("/") = 3 on a fresh server."""

    def scenario(ctx: ScenarioContext) -> None:
        for path in ("/", "/zookeeper", "/zookeeper/config", "/zookeeper/quota"):
            ctx.op("get", path)
            ctx.op("get_acls", path)
            ctx.op("get_children", path, include_data=True)
            ctx.op("exists", path)
        ctx.raw(get_all_children_number_request("/"))
        ctx.raw(get_all_children_number_request("/zookeeper"))
        ctx.op("set", "/zookeeper/config", b"x", label="setData on config (READ only)")
        ctx.op("create", "/zookeeper/config/kid", b"", label="create under config")
        for path in ("/zookeeper/config", "/zookeeper/quota", "/zookeeper"):
            ctx.op("delete", path)
        ctx.op("get", "/zookeeper/config", watch=ctx.watcher("config"))
        ctx.op("add_auth", "digest", SUPER_CREDENTIALS, client="super")
        ctx.op("set", "/zookeeper/config", b"", client="super", label="super may set config")
        ctx.barrier()
        ctx.record_events()
        ctx.op("get", "/zookeeper/config", client="super")

    differential.run(scenario, fresh=True, make_root=False)


# --- top-level check: a deliberate difference -------------------------------------------------
def _session(server: ServerProcess) -> Any:
    sock, resp = wire.handshake(server.host, server.port)
    assert resp.timeout_ms > 0 and resp.session_id != 0
    return sock


def test_top_level_check_is_unimplemented_and_closes(fastzk_only: ServerProcess) -> None:
    """A check (13) outside a multi: fastzk answers Unimplemented (-6) and closes the
    connection, as ZooKeeper 3.8.5+/3.9.3+ do, whether the check would pass or not.

    Deliberate difference from the reference: ZooKeeper 3.8.0 processes it, and on
    success sends **no reply at all** (breaking the client's xid order), so this is
    asserted on fastzk alone.
    """
    setup = _session(fastzk_only)
    try:
        setup.sendall(wire.create_request(1, "/t-check-top", b""))
        hdr, _ = wire.read_reply(setup)
        assert hdr.err in (0, wire.NODE_EXISTS)
    finally:
        setup.close()
    for path, version in (("/t-check-top", 0), ("/t-check-top", 5), ("/t-check-missing", -1)):
        sock = _session(fastzk_only)
        try:
            sock.sendall(wire.request(7, wire.OP_CHECK, check_request(path, version).body))
            hdr, body = wire.read_reply(sock)
            assert (hdr.xid, hdr.err, body) == (7, wire.UNIMPLEMENTED, b""), (path, version)
            closed, rest = wire.recv_until_closed(sock, 3.0)
            assert closed and rest == b"", f"connection not closed after -6 ({path}, {version})"
        finally:
            sock.close()
    assert wire.fresh_session_ping(fastzk_only.host, fastzk_only.port).err == 0


def test_create_ttl_with_plain_flags_and_no_ttl(fastzk_only: ServerProcess) -> None:
    """createTTL (21) with non-TTL flags and ttl -1 passes ZooKeeper's validation (a
    non-TTL mode only rejects ttl >= 0), so fastzk creates an ordinary node of that mode.

    Not differential: ZooKeeper 3.8.0 logs the request as a createTTL txn and then dies
    applying it ("ttl must be positive", SyncThread exits; the replayed log keeps it from
    restarting), so there is no reference answer.  fastzk must answer and keep serving.
    """
    sock = _session(fastzk_only)
    try:
        base = "/t-ttl-plain-flags"
        sock.sendall(wire.create_request(1, base, b""))
        hdr, _ = wire.read_reply(sock)
        assert hdr.err in (0, wire.NODE_EXISTS)
        for xid, (name, flags) in enumerate((("p", 0), ("e", 1), ("s-", 2), ("c", 4)), 2):
            body = (
                wire.p_ustring(f"{base}/{name}") + wire.p_buffer(b"d") + wire.OPEN_ACL
                + wire.p_int(flags) + wire.p_long(-1)
            )
            sock.sendall(wire.request(xid, 21, body))
            hdr, reply = wire.read_reply(sock)
            assert (hdr.xid, hdr.err) == (xid, 0), (name, flags, hdr)
            created, offset = wire.parse_buffer(reply)
            stat = reply[offset:]
            assert created is not None and created.startswith(f"{base}/{name}".encode())
            assert len(stat) == wire.STAT_SIZE
            owner = int.from_bytes(stat[44:52], "big", signed=True)
            assert (owner != 0) == (flags == 1), (name, owner)
    finally:
        sock.close()
    assert wire.fresh_session_ping(fastzk_only.host, fastzk_only.port).err == 0


def test_get_ephemerals_order_after_growth_and_deletes(differential: Differential) -> None:
    """getEphemerals lists paths in the order of a clone of the session's HashSet: the set's
    table grew past 16 and 32 bins and never shrank, the clone is sized for what is left."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("e"), b"")
        for i in range(40):
            ctx.op("create", p("e", f"n{i}"), b"", ephemeral=True)
        for i in range(0, 40, 3):
            ctx.op("delete", p("e", f"n{i}"))
        ctx.raw(get_ephemerals_request(p("e")))
        for i in range(30):
            if i % 3:
                ctx.op("delete", p("e", f"n{i}"))
        for name in ("late-b", "late-a", "\u00e9t\u00e9"):
            ctx.op("create", p("e", name), b"", ephemeral=True)
        ctx.raw(get_ephemerals_request(p("e")))

    differential.run(scenario)
