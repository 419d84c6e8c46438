"""Differential conformance: ACLs, authentication and the permission each op needs.

Schemes: world:anyone, auth (expanded at create/setACL time to the caller's
digest identities), digest (``user:base64(sha1(user:password))``), ip (with CIDR)
and the super digest both servers are configured with (conftest.ALIKE_CFG).

Deliberate differences, kept out of the comparison: fastzk checks READ on exists
and filters watch notifications by READ (ZooKeeper 3.8.4+/3.9.2+ behaviour); the
reference 3.8.0 does neither.  Those are asserted on fastzk alone at the end of
this file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import wire
from differential import (
    SUPER_CREDENTIALS,
    Differential,
    RawRequest,
    ScenarioContext,
    add_watch_request,
    get_all_children_number_request,
    multi_read_request,
    remove_watches_request,
    who_am_i_request,
)
from kazoo.client import KazooClient
from kazoo.exceptions import InvalidACLError, NoAuthError
from kazoo.protocol.serialization import GetChildren2, Watch
from kazoo.protocol.states import Callback
from kazoo.security import (
    ACL,
    OPEN_ACL_UNSAFE,
    Id,
    make_acl,
    make_digest_acl_credential,
)

from fastzk.nemesis.servers import ServerProcess
from fastzk.server import acl as acls

READ, WRITE, CREATE, DELETE, ADMIN, ALL = 1, 2, 4, 8, 16, 31


def world(perms: int) -> list[ACL]:
    return [ACL(perms, Id("world", "anyone"))]


def digest(user: str, password: str, perms: int) -> ACL:
    return ACL(perms, Id("digest", make_digest_acl_credential(user, password)))


def test_auth_scheme_expands_to_the_callers_digest_ids(differential: Differential) -> None:
    """auth:<anything> becomes one digest entry per authenticated digest identity (ip does
    not count); with none: InvalidACL.  getACL shows the expanded ids.

    The expanded entries are compared as a set: ZooKeeper adds them in its hash-set order
    of the connection's identities (bob before alice here), fastzk in sorted order; no
    client depends on the order of ACL entries.
    """

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path

        def get_acls(path: str, client: str, label: str | None = None) -> None:
            c = ctx.client(client)
            ctx.call(label or f"{client}.get_acls({path.removeprefix(ctx.root)})",
                     lambda: (sorted(c.get_acls(path)[0]), c.get_acls(path)[1]))

        auth_acl = [make_acl("auth", "", all=True)]
        ctx.op("create", p("anon"), b"", acl=auth_acl, label="anonymous auth ACL")
        ctx.op("add_auth", "ip", "127.0.0.1", client="ip")
        ctx.op("create", p("ip"), b"", acl=auth_acl, client="ip", label="ip-only auth ACL")
        ctx.op("add_auth", "digest", "bob:secret", client="bob")
        ctx.op("create", p("bob"), b"", acl=auth_acl, client="bob")
        get_acls(p("bob"), "bob")
        ctx.op("add_auth", "digest", "alice:pw", client="bob")
        ctx.op("create", p("both"), b"", acl=[make_acl("auth", "ignored", read=True)],
               client="bob")
        get_acls(p("both"), "bob", label="READ only: digests masked")
        ctx.op("create", p("mixed"), b"",
               acl=[make_acl("auth", "", read=True, admin=True), *world(READ)], client="bob")
        get_acls(p("mixed"), "bob")
        ctx.op("get", p("bob"), label="anonymous get of bob's node")
        ctx.op("get", p("bob"), client="bob")
        ctx.op("set_acls", p("bob"), auth_acl, client="bob", label="setACL auth, 2 digest ids")
        get_acls(p("bob"), "bob")
        ctx.op("set_acls", p("mixed"), auth_acl, label="anonymous setACL auth")
        ctx.op("add_auth", "digest", SUPER_CREDENTIALS, client="super")
        ctx.op("create", p("super"), b"", acl=auth_acl, client="super",
               label="super: its digest id (super has no provider)")
        get_acls(p("super"), "super")

    differential.run(scenario)


# user names of varied length and alphabet, so that identities land in many bins
IDENTITY_NAMES = ["alice", "bob", "Zed", "x", "worker-7", "svc_backup", "Ω-ops", "carol.smith",
                  "ci", "QA", "deploy@host", "u1", "u22", "u333", "monitor", "Eve", "db",
                  "app:frontend", "a" * 40, "batch9"]


def test_identity_order_as_zookeepers_map_grows(differential: Differential) -> None:
    """whoAmI and `auth` ACL expansion list a connection's identities in the iteration order
    of ZooKeeper's ConcurrentHashMap<Id>; its table of 16 bins doubles once 12 identities are
    in it (and again at 24), moving entries between bins and reversing some: 11, 12, 13, 20,
    24 and 40 digest identities (plus ip), added in one order, then in the reverse order on a
    second connection."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        users = [f"{name}{i // len(IDENTITY_NAMES) or ''}"
                 for i, name in enumerate(IDENTITY_NAMES * 2)]
        auth_acl = [make_acl("auth", "", all=True)]
        for client, order in (("forward", users), ("reverse", users[::-1])):
            for count, user in enumerate(order, 1):
                ctx.op("add_auth", "digest", f"{user}:pw{count}", client=client,
                       label=f"{client}: add_auth #{count}")
                if count in (11, 12, 13, 20, 24, 40):
                    ctx.raw(who_am_i_request(), client=client, label=f"{client}: whoAmI {count}")
                if count in (13, 40):
                    path = p(f"{client}-{count}")
                    ctx.op("create", path, b"", acl=auth_acl, client=client)
                    ctx.op("get_acls", path, client=client)

    differential.run(scenario)


def colliding_users(count: int, bins: int, target: int, taken: set[str]) -> list[str]:
    """`count` user names whose digest identity (password "pw") falls in bin `target` of a
    table of `bins`, or, with target -1, in none of the bins already holding 4 of `taken`."""
    found: list[str] = []
    filled: dict[int, int] = {}
    for user in taken:
        b = acls._id_hash(("digest", acls.digest_id(f"{user}:pw"))) % bins
        filled[b] = filled.get(b, 0) + 1
    i = 0
    while len(found) < count:
        user = f"n{i}"
        i += 1
        if user in taken:
            continue
        b = acls._id_hash(("digest", acls.digest_id(f"{user}:pw"))) % bins
        if b == target or (target < 0 and filled.get(b, 0) < 4):
            found.append(user)
            filled[b] = filled.get(b, 0) + 1
    return found


def test_identity_order_with_colliding_identities(differential: Differential) -> None:
    """Identities that share a bin of ZooKeeper's ConcurrentHashMap<Id>: a ninth in one bin of
    the initial 16 makes the table grow (to 128 at once), and in a table of 64 or more it turns
    the bin into a tree bin, which puts later entries first and splits when the table doubles
    (as a tree while a half keeps more than 6)."""

    def scenario(ctx: ScenarioContext) -> None:
        presize = colliding_users(9, 16, 5, set())
        for count, user in enumerate(presize, 1):
            ctx.op("add_auth", "digest", f"{user}:pw", client="presize")
            if count >= 8:
                ctx.raw(who_am_i_request(), client="presize", label=f"presize: whoAmI {count}")
        # 23 spread out (with ip: 24, a table of 64), then 12 in one bin of 64, then spread
        # out again until the table doubles to 128 at 48, then two more in that bin
        spread = colliding_users(23, 64, -1, set())
        tree = colliding_users(14, 64, 9, set(spread))
        more = colliding_users(12, 64, -1, set(spread) | set(tree))
        steps = [*spread, *tree[:12], *more, *tree[12:]]
        for count, user in enumerate(steps, 2):
            ctx.op("add_auth", "digest", f"{user}:pw", client="tree")
            if count in (24, 32, 33, 36, 47, 48, 50):
                ctx.raw(who_am_i_request(), client="tree", label=f"tree: whoAmI {count}")
        ctx.op("create", ctx.path("tree"), b"", acl=[make_acl("auth", "", all=True)],
               client="tree")
        ctx.op("get_acls", ctx.path("tree"), client="tree")

    differential.run(scenario)


def test_digest_acl_grants_by_exact_id(differential: Differential) -> None:
    """A digest entry matches only the identity with the same user and hash; a wrong
    password authenticates fine but matches nothing."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("n"), b"secret", acl=[digest("bob", "secret", ALL)])
        ctx.op("get", p("n"), label="anonymous")
        ctx.op("add_auth", "digest", "bob:wrong", client="wrong")
        ctx.op("get", p("n"), client="wrong")
        ctx.op("add_auth", "digest", "bob:secret", client="bob")
        ctx.op("get", p("n"), client="bob")
        ctx.op("set", p("n"), b"new", client="bob")
        ctx.op("add_auth", "digest", "bob:wrong", client="bob")
        ctx.op("get", p("n"), client="bob", label="a second, wrong digest changes nothing")
        ctx.op("create", p("n", "kid"), b"", client="bob")
        ctx.op("delete", p("n", "kid"), client="wrong")
        ctx.op("delete", p("n", "kid"), client="bob")

    differential.run(scenario)


def test_digest_and_ip_acl_ids_are_validated(differential: Differential) -> None:
    """Malformed ACL lists give InvalidACL: world:nobody, digest without exactly user:hash,
    unknown scheme, super scheme, bad ip/CIDR, empty list; valid odd forms are accepted."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        cases = {
            "world:nobody": [ACL(ALL, Id("world", "nobody"))],
            "world:anyone": [ACL(ALL, Id("world", "anyone"))],
            "digest:bad": [ACL(ALL, Id("digest", "bad"))],
            "digest:bob:": [ACL(ALL, Id("digest", "bob:"))],
            "digest:bob:x:y": [ACL(ALL, Id("digest", "bob:x:y"))],
            "digest:bob:x::": [ACL(ALL, Id("digest", "bob:x::"))],
            "digest::x": [ACL(ALL, Id("digest", ":x"))],
            "digest:bob:anything": [ACL(ALL, Id("digest", "bob:anything"))],
            "foo:bar": [ACL(ALL, Id("foo", "bar"))],
            "super:": [ACL(ALL, Id("super", "x"))],
            "ip:127.0.0.1": [ACL(ALL, Id("ip", "127.0.0.1"))],
            "ip:10.0.0.0/8": [ACL(ALL, Id("ip", "10.0.0.0/8"))],
            "ip:127.0.0.1/33": [ACL(ALL, Id("ip", "127.0.0.1/33"))],
            "ip:999.1.1.1": [ACL(ALL, Id("ip", "999.1.1.1"))],
            "ip:hostname": [ACL(ALL, Id("ip", "localhost"))],
            "empty list": [],
            "one bad among good": [*OPEN_ACL_UNSAFE, ACL(ALL, Id("digest", "bad"))],
            "duplicates": [*OPEN_ACL_UNSAFE, *OPEN_ACL_UNSAFE],
            "perms 0": [ACL(0, Id("world", "anyone"))],
        }
        for index, (label, acl) in enumerate(cases.items()):
            ctx.op("create", p(f"n{index}"), b"", acl=acl, label=f"create {label}")
            ctx.op("get_acls", p(f"n{index}"), label=f"getACL {label}")
        ctx.op("create", p("target"), b"")
        for label in ("world:nobody", "digest:bad", "foo:bar", "empty list", "ip:999.1.1.1"):
            ctx.op("set_acls", p("target"), cases[label], label=f"setACL {label}")
        ctx.op("get_acls", p("target"))

    differential.run(scenario)


def _ip_scenario(idents: tuple[str, ...]) -> Callable[[ScenarioContext], None]:
    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        for index, ident in enumerate(idents):
            ctx.op("create", p(f"n{index}"), b"data", acl=[ACL(READ, Id("ip", ident))],
                   client="setup")
            ctx.op("get", p(f"n{index}"), label=f"get ip:{ident}")

    return scenario


def test_ip_acl_matches_by_cidr(differential: Differential) -> None:
    """The client connects from 127.0.0.1: the exact address, /8, /32 and /0 match; other
    addresses and nets don't.  Each node grants READ to one ip id only."""
    differential.run(
        _ip_scenario(
            ("127.0.0.1", "127.0.0.0/8", "127.0.0.1/32", "127.0.0.2", "10.0.0.0/8",
             "0.0.0.0/0", "127.1.0.0/16", "127.0.0.1/0", "128.0.0.0/1")
        )
    )


def test_ipv6_acl_ids_are_accepted_and_match_by_prefix(fastzk_only: ServerProcess,
                                                        kazoo_factory: Callable[..., Any],
                                                        unique_path: str) -> None:
    """A deliberate difference: ZooKeeper 3.8.0/3.9 answer InvalidACL to IPv6 ip ids (IPv6
    support came later, ZOOKEEPER-4240); fastzk accepts them, and an IPv4 client never
    matches an IPv6 id."""
    client = kazoo_factory(fastzk_only)
    client.ensure_path(unique_path)
    for index, ident in enumerate(("::1", "::/0", "fe80::/10")):
        path = f"{unique_path}/n{index}"
        acl = [ACL(READ, Id("ip", ident)), ACL(ADMIN, Id("world", "anyone"))]
        client.create(path, b"data", acl=acl)
        assert client.get_acls(path)[0] == acl  # world ADMIN lets anyone read the ACL back
        with pytest.raises(NoAuthError):
            client.get(path)  # the client connects over IPv4 (127.0.0.1)
    with pytest.raises(InvalidACLError):
        client.create(f"{unique_path}/bad", b"", acl=[ACL(READ, Id("ip", "::1/129"))])


def test_super_digest_bypasses_every_acl(differential: Differential) -> None:
    """The configured super digest (password admin) may do anything; super:wrong may not."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("locked"), b"x", acl=world(0), label="perms 0 for everyone")
        ctx.op("create", p("bobs"), b"", acl=[digest("bob", "secret", ALL)])
        ctx.op("add_auth", "digest", "super:wrong", client="notsuper")
        ctx.op("get", p("locked"), client="notsuper")
        ctx.op("add_auth", "digest", SUPER_CREDENTIALS, client="super")
        for name in ("locked", "bobs"):
            ctx.op("get", p(name), client="super")
            ctx.op("get_children", p(name), client="super")
            ctx.op("get_acls", p(name), client="super")
            ctx.op("set", p(name), b"by super", client="super")
            ctx.op("create", p(name, "kid"), b"", client="super")
            ctx.op("delete", p(name, "kid"), client="super")
            ctx.op("set_acls", p(name), world(READ), client="super")
        ctx.op("get", p("locked"), label="anonymous after super opened it")
        ctx.op("delete", p("locked"), client="super")

    differential.run(scenario)


def _perm_matrix(ctx: ScenarioContext, perms: int, label: str) -> None:
    """Every op against a node (and its parent) whose world ACL has only *perms*."""
    p = ctx.path
    node = p(label)
    ctx.op("create", node, b"data", client="setup")
    ctx.op("create", p(label, "kid"), b"", client="setup")
    ctx.op("create", p(label, "kid2"), b"", client="setup")
    ctx.op("set_acls", node, world(perms), client="setup")
    ops: list[tuple[str, Callable[[], Any]]] = []
    c = ctx.client()
    ops = [
        ("get", lambda: c.get(node)),
        ("get_children", lambda: c.get_children(node)),
        ("get_children2", lambda: c.get_children(node, include_data=True)[0] and "ok"),
        ("getAllChildrenNumber", lambda: _raw(c, get_all_children_number_request(node))),
        ("multiRead", lambda: _raw(c, multi_read_request(("getData", node),
                                                         ("getChildren", node)))),
        ("get_acls", lambda: c.get_acls(node)),
        ("set", lambda: c.set(node, b"w")),
        ("create child", lambda: c.create(f"{node}/new")),
        ("delete child", lambda: c.delete(f"{node}/kid")),
        ("delete missing child", lambda: c.delete(f"{node}/missing")),
        ("set_acls", lambda: c.set_acls(node, world(perms))),
        ("sync", lambda: c.sync(node)),
    ]
    for name, fn in ops:
        ctx.call(f"perms={perms} {name}", fn)


def _raw(client: KazooClient, request: Any) -> Any:
    result = client.handler.async_result()
    client._call(request, result)
    return result.get(timeout=10)


@pytest.mark.parametrize(
    "perms",
    [0, READ, WRITE, CREATE, DELETE, ADMIN, READ | ADMIN, ALL & ~READ, ALL],
    ids=["none", "r", "w", "c", "d", "a", "ra", "not-r", "all"],
)
def test_permission_each_op_needs(differential: Differential, perms: int) -> None:
    """CREATE/DELETE on the parent, READ for reads, WRITE for setData, ADMIN for setACL,
    READ or ADMIN for getACL; sync needs nothing."""

    def scenario(ctx: ScenarioContext) -> None:
        _perm_matrix(ctx, perms, "node")

    differential.run(scenario)


def test_get_acl_masks_digests_without_admin(differential: Differential) -> None:
    """getACL with READ but not ADMIN shows digest ids as user:x; with ADMIN in full."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        acl = [
            digest("bob", "secret", ALL),
            digest("carol", "pw", READ),
            ACL(READ, Id("world", "anyone")),
            ACL(READ, Id("ip", "10.0.0.0/8")),
        ]
        ctx.op("create", p("n"), b"", acl=acl)
        ctx.op("get_acls", p("n"), label="anonymous (READ)")
        ctx.op("add_auth", "digest", "carol:pw", client="carol")
        ctx.op("get_acls", p("n"), client="carol", label="carol (READ)")
        ctx.op("add_auth", "digest", "bob:secret", client="bob")
        ctx.op("get_acls", p("n"), client="bob", label="bob (ADMIN)")
        ctx.op("create", p("admin-only"), b"", acl=[digest("bob", "secret", ADMIN)],
               client="bob")
        ctx.op("get_acls", p("admin-only"), client="bob", label="ADMIN without READ")
        ctx.op("get_acls", p("admin-only"), label="anonymous, neither")

    differential.run(scenario)


def test_acl_error_precedence(differential: Differential) -> None:
    """delete: parent DELETE permission before node existence; create/setACL: InvalidACL
    before NoNode; setACL NoNode before NoAuth; create NoNode before NoAuth."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("nodelete"), b"", acl=world(ALL & ~DELETE))
        ctx.op("delete", p("nodelete", "missing"), label="delete missing child, no DELETE")
        ctx.op("delete", p("missing", "x"), label="delete, parent missing")
        ctx.op("create", p("missing", "x"), b"", acl=[], label="create empty ACL, no parent")
        ctx.op("create", p("missing", "x"), b"", acl=[ACL(ALL, Id("world", "nobody"))],
               label="create world:nobody, no parent")
        ctx.op("set_acls", p("missing"), [], label="setACL empty ACL, no node")
        ctx.op("set_acls", p("missing"), [ACL(ALL, Id("digest", "bad"))],
               label="setACL digest:bad, no node")
        ctx.op("create", p("noadmin"), b"", acl=world(ALL & ~ADMIN))
        ctx.op("set_acls", p("noadmin"), [], label="setACL invalid on a node without ADMIN")
        ctx.op("set_acls", p("noadmin"), world(ALL), version=5,
               label="setACL no ADMIN and bad version")
        ctx.op("create", p("nocreate"), b"", acl=world(ALL & ~CREATE))
        ctx.op("create", p("nocreate", "x"), b"", acl=[], label="create invalid ACL, no CREATE")
        ctx.op("create", p("nocreate", "x"), b"", label="create, no CREATE")
        ctx.op("create", p("nocreate"), b"", label="create existing, parent allows")
        ctx.op("create", p("noread"), b"", acl=world(ALL & ~READ))
        ctx.op("get", p("noread", "missing"), label="get missing child of unreadable node")
        ctx.op("set", p("noread"), b"x", version=9, label="setData BadVersion, has WRITE")
        ctx.op("create", p("nowrite"), b"", acl=world(ALL & ~WRITE))
        ctx.op("set", p("nowrite"), b"x", version=9, label="setData NoAuth before BadVersion")
        ctx.op("delete", p("nodelete"), version=9, label="delete BadVersion (root allows)")

    differential.run(scenario)


def test_acl_versions(differential: Differential) -> None:
    """setACL compares its version with aversion; getACL returns the Stat; setACL does
    not touch mzxid/version."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("n"), b"")
        ctx.op("get_acls", p("n"))
        ctx.op("set_acls", p("n"), world(READ | WRITE | ADMIN), version=0)
        ctx.op("set_acls", p("n"), world(ALL), version=0)
        ctx.op("set_acls", p("n"), world(ALL), version=1)
        ctx.op("set_acls", p("n"), world(ALL), version=-1)
        ctx.op("set_acls", p("n"), world(ALL), version=7)
        ctx.op("get_acls", p("n"))
        ctx.op("get", p("n"))
        ctx.op("set_acls", p("missing"), world(ALL), version=0)
        ctx.op("get_acls", p("missing"))

    differential.run(scenario)


def test_setacl_fires_no_watch(differential: Differential) -> None:
    """setACL fires no watch and leaves mzxid/version alone; without READ, getData fails
    and exists on a missing child still answers None.  (Notifications across a change
    that removes READ are not compared: see the fastzk-only tests below.)"""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("n"), b"", client="writer")
        ctx.op("get", p("n"), watch=ctx.watcher("data"))
        ctx.op("get_children", p("n"), watch=ctx.watcher("children"))
        ctx.op("set_acls", p("n"), world(READ | WRITE | ADMIN), client="writer")
        ctx.barrier()
        ctx.record_events(label="after setACL")
        ctx.op("set", p("n"), b"x", client="writer")
        ctx.barrier()
        ctx.record_events(label="after setData, READ kept")
        ctx.op("set_acls", p("n"), world(WRITE | ADMIN), client="writer")
        ctx.op("get", p("n"))
        ctx.op("exists", p("n", "missing"))

    differential.run(scenario)


# --- auth packets -------------------------------------------------------------------------------
def _auth_packet(scheme: str, credential: bytes) -> bytes:
    return wire.request(-4, 100, wire.p_int(0) + wire.p_ustring(scheme) + wire.p_buffer(credential))


@pytest.mark.parametrize("scheme", ["foo", "sasl", "super", "world", ""])
def test_unknown_auth_scheme_fails_and_closes(server: ServerProcess, scheme: str) -> None:
    """An auth packet whose scheme has no provider: AuthFailed (-115), zxid 0, then the
    connection is closed.  Checked on each server (connection-level, not a transcript)."""
    sock, _ = wire.handshake(server.host, server.port)
    try:
        sock.sendall(_auth_packet(scheme, b"whatever"))
        hdr, body = wire.read_reply(sock)
        assert (hdr.xid, hdr.zxid, hdr.err, body) == (-4, 0, -115, b"")
        closed, rest = wire.recv_until_closed(sock, 3.0)
        assert closed and rest == b""
    finally:
        sock.close()
    assert wire.fresh_session_ping(server.host, server.port).err == 0


@pytest.mark.parametrize("scheme", ["digest", "ip"])
def test_known_auth_schemes_succeed(server: ServerProcess, scheme: str) -> None:
    """digest always succeeds (any payload); ip re-adds the address: err 0, zxid 0, xid
    echoed, connection kept."""
    sock, _ = wire.handshake(server.host, server.port)
    try:
        for payload in (b"bob:secret", b"no-colon", b""):
            sock.sendall(_auth_packet(scheme, payload))
            hdr, body = wire.read_reply(sock)
            assert (hdr.xid, hdr.zxid, hdr.err, body) == (-4, 0, 0, b""), payload
        assert wire.ping(sock).err == 0
    finally:
        sock.close()


def test_kazoo_sees_auth_failed(differential: Differential) -> None:
    """kazoo's add_auth with an unknown scheme raises AuthFailedError on both."""

    def scenario(ctx: ScenarioContext) -> None:
        ctx.op("add_auth", "nosuchscheme", "x", client="bad")
        ctx.op("exists", ctx.path())

    differential.run(scenario)


# --- fastzk-only: READ on exists and READ-filtered notifications (3.8.4+/3.9.2+) ----------------
def _client(kazoo_factory: Callable[..., KazooClient], server: ServerProcess) -> KazooClient:
    return kazoo_factory(server, timeout=10.0)


def _round_trip(client: KazooClient) -> None:
    """After this, every notification caused by an earlier write has been delivered and
    its callbacks have run (a round trip, then a marker through kazoo's callback queue)."""
    client.exists("/")
    done = threading.Event()
    client.handler.dispatch_callback(Callback("marker", done.set, ()))
    assert done.wait(5)


def test_exists_needs_read_on_fastzk(
    fastzk_only: ServerProcess, kazoo_factory: Callable[..., KazooClient], unique_path: str
) -> None:
    """exists on a node without READ: NoAuth and no watch registered (ZooKeeper
    3.8.4+/3.9.2+); a missing node still answers None and registers the watch.

    Deliberate difference: the reference 3.8.0 returns the Stat without checking READ.
    """
    setup = _client(kazoo_factory, fastzk_only)
    reader = _client(kazoo_factory, fastzk_only)
    setup.create(unique_path, b"", acl=world(ALL & ~READ))
    events: list[Any] = []
    with pytest.raises(NoAuthError):
        reader.exists(unique_path, watch=events.append)
    setup.set(unique_path, b"changed")
    _round_trip(reader)
    assert events == []
    missing = f"{unique_path}/missing"
    assert reader.exists(missing, watch=events.append) is None
    setup.create(missing, b"")
    _round_trip(reader)
    assert [e.type for e in events] == ["CREATED"]


def test_notifications_filtered_by_read_on_fastzk(
    fastzk_only: ServerProcess, kazoo_factory: Callable[..., KazooClient], unique_path: str
) -> None:
    """A connection gets a notification only with READ on the node (NodeCreated/Changed/
    Deleted) or on the parent (NodeChildrenChanged); the watch is used up anyway.

    Deliberate difference: ZooKeeper 3.8.0 delivers them without checking READ; this is
    the 3.8.4+/3.9.2+ behaviour.  Persistent watches (addWatch has no ACL check) show the
    filter without consuming anything.
    """
    owner = _client(kazoo_factory, fastzk_only)
    owner.add_auth("digest", "bob:secret")
    anon = _client(kazoo_factory, fastzk_only)
    bob = _client(kazoo_factory, fastzk_only)
    bob.add_auth("digest", "bob:secret")
    owner.create(unique_path, b"")
    hidden = f"{unique_path}/hidden"
    frames: dict[str, list[tuple[int, str]]] = {"anon": [], "bob": []}
    callbacks: dict[str, list[tuple[str, str]]] = {"anon": [], "bob": []}
    for name, client in (("anon", anon), ("bob", bob)):
        # exists on a missing node registers a data watch without any ACL check.
        assert client.exists(hidden, watch=lambda e, n=name: callbacks[n].append(
            (e.type, e.path))) is None
        original = client._connection._read_watch_event

        def hook(buffer: bytes, offset: int, name: str = name, original: Any = original) -> Any:
            event, _ = Watch.deserialize(buffer, offset)
            frames[name].append((event.type, event.path))
            return original(buffer, offset)

        client._connection._read_watch_event = hook
        assert _raw(client, add_watch_request(unique_path, 1)) == ("ErrorResponse", 0, 0)
    owner.create(hidden, b"", acl=[digest("bob", "secret", ALL)])
    owner.set(hidden, b"x")
    owner.delete(hidden)
    for client in (anon, bob):
        _round_trip(client)
    # bob: NodeCreated once (one-shot + recursive registration on one connection: one
    # frame), then the recursive watch's NodeDataChanged and NodeDeleted.  anon: nothing.
    assert frames == {"anon": [], "bob": [(1, hidden), (3, hidden), (2, hidden)]}
    assert callbacks == {"anon": [], "bob": [("CREATED", hidden)]}
    # anon's one-shot watch was used up by the filtered NodeCreated: once its recursive
    # watch is removed, a readable re-create sends it nothing.
    assert _raw(anon, remove_watches_request(unique_path, 5)) is True
    owner.create(hidden, b"")
    _round_trip(anon)
    assert frames["anon"] == []


def test_get_children2_raw_is_same_as_kazoo(differential: Differential) -> None:
    """Sanity check of RawRequest plumbing next to kazoo's own request objects."""

    def scenario(ctx: ScenarioContext) -> None:
        ctx.op("create", ctx.path("a"), b"")
        ctx.raw(GetChildren2(ctx.path(), None))
        ctx.raw(RawRequest(12, "getChildren2-raw", (ctx.path(),),
                           wire.p_ustring(ctx.path()) + wire.p_bool(False),
                           lambda r: (r.strings(), r.stat())))

    differential.run(scenario)
