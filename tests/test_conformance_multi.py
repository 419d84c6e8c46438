"""Differential conformance: multi (14) and multiRead (22) transactions.

kazoo's own transaction API only sends create (1), delete, setData and check and
cannot decode create2 results, and kazoo has no multiRead; so most requests here
are built byte by byte (``differential.multi_request``, encoded with the
tests/wire.py primitives) and sent through a kazoo connection, which keeps the
scenario's wire log and watch callbacks.  A multi result is a list of
``(op, ...)`` tuples, ``("error", <kazoo exception name>, ...)`` for an error
result (spec section 10).
"""

from __future__ import annotations

import threading
from typing import Any

from differential import (
    Differential,
    Err,
    ScenarioContext,
    multi_read_request,
    multi_request,
)
from kazoo.security import ACL, Id, make_digest_acl

OPEN = None  # multi_request: None is world:anyone:cdrwa
READ_ONLY = [ACL(1, Id("world", "anyone"))]
WRITE_ONLY = [ACL(2, Id("world", "anyone"))]
NO_CREATE = [ACL(31 & ~4, Id("world", "anyone"))]
NO_DELETE = [ACL(31 & ~8, Id("world", "anyone"))]


def _state(ctx: ScenarioContext, label: str) -> None:
    """Record the whole subtree under the scenario root (paths, data, Stats, errors)."""
    c = ctx.client()

    def walk() -> list[Any]:
        nodes: list[Any] = []
        todo = [ctx.root]
        while todo:
            path = todo.pop(0)
            try:
                data, stat = c.get(path)
                nodes.append((path, data, stat))
                todo += [f"{path}/{child}" for child in c.get_children(path)]
            except Exception as e:  # noqa: BLE001 - an unreadable node is an observation
                nodes.append((path, Err(type(e).__name__)))
        return nodes

    ctx.call(label, walk)


def test_multi_success_mixes_every_write_op(differential: Differential) -> None:
    """create/createContainer/delete/setData/check in one multi: typed results (a container
    gets a create2-style result with its Stat), one shared zxid for every node."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("old"), b"o")
        ctx.op("create", p("data"), b"d0")
        ctx.raw(
            multi_request(
                ("create", p("a"), b"A", OPEN, 0),
                ("createContainer", p("box"), b"B", OPEN, 4),
                ("create", p("e"), b"E", OPEN, 1),
                ("create", p("es"), b"", OPEN, 3),
                ("check", p("data"), 0),
                ("setData", p("data"), b"d1", 0),
                ("check", p("data"), 1),
                ("check", p("data"), -1),
                ("delete", p("old"), 0),
            )
        )
        _state(ctx, "after")
        ctx.op("get", p())

    differential.run(scenario)


def test_multi_ops_see_earlier_ops_effects(differential: Differential) -> None:
    """Parent then child, sequential suffixes counting up, check after setData, re-create."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("seq"), b"")
        ctx.op("create", p("seq", "pre-"), b"", sequence=True)
        ctx.raw(
            multi_request(
                ("create", p("parent"), b"", OPEN, 0),
                ("create", p("parent", "child"), b"c", OPEN, 0),
                ("create", p("parent", "child", "grand"), b"g", OPEN, 0),
                ("create", p("seq", "s-"), b"1", OPEN, 2),
                ("create", p("seq", "plain"), b"", OPEN, 0),
                ("create", p("seq", "s-"), b"2", OPEN, 2),
                ("create", p("seq", "e-"), b"3", OPEN, 3),
                ("setData", p("parent"), b"x", 0),
                ("setData", p("parent"), b"y", 1),
                ("check", p("parent"), 2),
                ("delete", p("seq", "plain"), -1),
                ("create", p("seq", "plain"), b"again", OPEN, 0),
                ("setData", p("seq", "plain"), b"again2", 0),
                ("delete", p("parent", "child", "grand"), 0),
                ("delete", p("parent", "child"), 0),
                ("check", p("parent"), 2),
            )
        )
        _state(ctx, "after")
        # Create-then-delete inside one multi leaves nothing but the parent's counters.
        ctx.raw(
            multi_request(
                ("create", p("tmp"), b"", OPEN, 0),
                ("create", p("tmp", "x"), b"", OPEN, 0),
                ("delete", p("tmp", "x"), -1),
                ("delete", p("tmp"), -1),
            )
        )
        ctx.op("exists", p("tmp"))
        ctx.op("get_children", p(), include_data=True)
        ctx.op("create", p("seq", "post-"), b"", sequence=True)

    differential.run(scenario)


def test_multi_failure_at_each_position_changes_nothing(differential: Differential) -> None:
    """Op k fails: ops before it report 0, op k its error, later ops RuntimeInconsistency."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("exists"), b"")
        ctx.op("create", p("v"), b"v0")
        ctx.op("create", p("seq"), b"")
        good = [
            ("create", p("new"), b"n", OPEN, 0),
            ("setData", p("v"), b"v1", 0),
            ("create", p("seq", "s-"), b"", OPEN, 2),
            ("delete", p("exists"), 0),
        ]
        bad = [
            ("create", p("exists"), b"", OPEN, 0),
            ("setData", p("v"), b"v1", 7),
            ("create", p("nope", "s-"), b"", OPEN, 2),
            ("delete", p("missing"), -1),
        ]
        _state(ctx, "before")
        for k in range(len(good)):
            ops = good[:k] + [bad[k]] + good[k + 1 :]
            ctx.raw(multi_request(*ops), label=f"fail at {k}")
        _state(ctx, "unchanged")
        # A sequential create in a failed multi does not use up a suffix.
        ctx.raw(multi_request(*good), label="all good")
        _state(ctx, "after")

    differential.run(scenario)


def test_multi_reports_each_error_kind(differential: Differential) -> None:
    """NoNode, NodeExists, BadVersion, NotEmpty, NoAuth, BadArguments, InvalidACL, ... in multi.

    Each failing op sits between a good op before it and one after it.
    """

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("n"), b"")
        ctx.op("create", p("full", "kid"), b"", makepath=True)
        ctx.op("create", p("ro"), b"", acl=READ_ONLY)
        ctx.op("create", p("wo"), b"", acl=WRITE_ONLY)
        ctx.op("create", p("nocreate"), b"", acl=NO_CREATE)
        ctx.op("create", p("nodelete", "kid"), b"", makepath=True)
        ctx.op("set_acls", p("nodelete"), NO_DELETE)
        ctx.op("create", p("eph"), b"", ephemeral=True)
        failing = {
            "NoNode create": ("create", p("missing", "x"), b"", OPEN, 0),
            "NoNode delete": ("delete", p("missing"), -1),
            "NoNode setData": ("setData", p("missing"), b"", -1),
            "NoNode check": ("check", p("missing"), -1),
            "NodeExists": ("create", p("n"), b"", OPEN, 0),
            "BadVersion setData": ("setData", p("n"), b"", 3),
            "BadVersion delete": ("delete", p("n"), 3),
            "BadVersion check": ("check", p("n"), 3),
            "NotEmpty": ("delete", p("full"), -1),
            "NoAuth setData": ("setData", p("ro"), b"x", -1),
            "NoAuth check": ("check", p("wo"), -1),
            "NoAuth create": ("create", p("nocreate", "x"), b"", OPEN, 0),
            "NoAuth delete": ("delete", p("nodelete", "kid"), -1),
            "NoAuth delete missing": ("delete", p("nodelete", "nothing"), -1),
            "BadArguments relative": ("create", "relative", b"", OPEN, 0),
            "BadArguments trailing slash": ("create", p() + "/", b"", OPEN, 0),
            "NoNode before path validation": ("create", p("t") + "/", b"", OPEN, 0),
            "BadArguments flags": ("create", p("f7"), b"", OPEN, 7),
            "BadArguments setData path": ("setData", p("a//b"), b"", -1),
            "BadArguments check path": ("check", p("n") + "/", -1),
            "BadArguments delete /zookeeper": ("delete", "/zookeeper", -1),
            "InvalidACL empty": ("create", p("acl"), b"", [], 0),
            "InvalidACL world:nobody": ("create", p("acl"), b"", [ACL(31, Id("world", "x"))], 0),
            "NoChildrenForEphemerals": ("create", p("eph", "kid"), b"", OPEN, 0),
        }
        for label, op in failing.items():
            ops = (("create", p("before"), b"", OPEN, 0), op, ("delete", p("n"), -1))
            ctx.raw(multi_request(*ops), label=label)
        _state(ctx, "unchanged")

    differential.run(scenario)


def test_empty_multi(differential: Differential) -> None:
    """An empty multi is just the terminator both ways: result []."""

    def scenario(ctx: ScenarioContext) -> None:
        ctx.raw(multi_request(), label="empty multi")
        ctx.call("kazoo empty transaction", lambda: ctx.client().transaction().commit())
        ctx.op("exists", ctx.path())

    differential.run(scenario)


def test_kazoo_transaction_api(differential: Differential) -> None:
    """kazoo's own TransactionRequest (create type 1, check, setData, delete): success and
    rollback, with RolledBackError / RuntimeInconsistency as kazoo decodes them."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        c = ctx.client()

        def commit(ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> Any:
            t = c.transaction()
            for name, args, kwargs in ops:
                getattr(t, name)(*args, **kwargs)
            return t.commit()

        ctx.call(
            "txn ok",
            commit,
            [
                ("create", (p("a"), b"1"), {}),
                ("create", (p("a", "s-"), b""), {"sequence": True}),
                ("check", (p("a"), 0), {}),
                ("set_data", (p("a"), b"2"), {"version": 0}),
                ("check", (p("a"), 1), {}),
            ],
        )
        ctx.call(
            "txn rollback",
            commit,
            [
                ("create", (p("b"), b""), {}),
                ("check", (p("a"), 0), {}),
                ("delete", (p("a"),), {}),
            ],
        )
        ctx.op("exists", p("b"))
        ctx.op("get", p("a"))

    differential.run(scenario)


def test_multi_watches_fire_in_op_order_and_not_on_failure(differential: Differential) -> None:
    """A failed multi fires nothing; a successful one fires each op's events in op order."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        for name in ("b", "c"):
            ctx.op("create", p(name), b"", client="writer")

        def watch_all(round_: str) -> None:
            ctx.op("exists", p("a"), watch=ctx.watcher(f"{round_}:exists a"))
            ctx.op("get", p("b"), watch=ctx.watcher(f"{round_}:get b"))
            ctx.op("get", p("c"), watch=ctx.watcher(f"{round_}:get c"))
            ctx.op("get_children", p(), watch=ctx.watcher(f"{round_}:children root"))
            ctx.op("exists", p("d"), watch=ctx.watcher(f"{round_}:exists d"))

        ops = [
            ("create", p("a"), b"", OPEN, 0),
            ("setData", p("b"), b"x", -1),
            ("delete", p("c"), -1),
            ("create", p("d"), b"", OPEN, 0),
            ("setData", p("a"), b"y", 0),
        ]
        watch_all("1")
        ctx.raw(multi_request(*ops, ("check", p("b"), 99)), client="writer", label="failing")
        ctx.barrier()
        ctx.record_events(label="after failed multi")
        ctx.raw(multi_request(*ops), client="writer", label="succeeding")
        ctx.barrier()
        ctx.record_events(label="after successful multi")
        # The writer's own watch fires before its multi's reply.
        ctx.op("get", p("b"), watch=ctx.watcher("own b", client="writer"), client="writer")
        ctx.raw(multi_request(("setData", p("b"), b"z", -1)), client="writer", label="own")
        ctx.mark("own multi returned", client="writer")
        ctx.record_events("writer")

    differential.run(scenario)


def test_multi_read(differential: Differential) -> None:
    """multiRead (22): each op on its own, real error codes, no RuntimeInconsistency padding."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("a"), b"A")
        ctx.op("create", p("a", "k1"), b"")
        ctx.op("create", p("a", "k2"), b"")
        ctx.op("create", p("secret"), b"s", acl=WRITE_ONLY)
        ctx.raw(
            multi_read_request(
                ("getData", p("a")),
                ("getChildren", p("a")),
                ("getData", p("missing")),
                ("getChildren", p("missing")),
                ("getData", p("secret")),
                ("getChildren", p("secret")),
                ("getData", p("a", "k1")),
                ("getChildren", p("a", "k1")),
            )
        )
        ctx.raw(multi_read_request(), label="empty multiRead")
        ctx.raw(multi_read_request(("getData", p("missing"))), label="only a failure")

    differential.run(scenario)


def test_mixed_read_write_multi_is_marshalling_error(differential: Differential) -> None:
    """Reads in a multi or writes in a multiRead: MarshallingError for the whole request,
    nothing applied, and the connection stays usable."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("n"), b"")
        ctx.raw(
            multi_request(("create", p("x"), b"", OPEN, 0), ("getData", p("n"))),
            label="multi with a read",
        )
        ctx.raw(
            multi_read_request(("getData", p("n")), ("create", p("y"), b"", OPEN, 0)),
            label="multiRead with a write",
        )
        ctx.raw(
            multi_read_request(("getData", p("n")), ("check", p("n"), -1)),
            label="multiRead with a check",
        )
        ctx.op("get_children", p())
        ctx.op("set", p("n"), b"still works")

    differential.run(scenario)


def test_multi_with_acl_ops_and_auth(differential: Differential) -> None:
    """A digest-protected node: multi without the credentials fails, with them succeeds."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        acl = [make_digest_acl("bob", "secret", all=True)]
        ctx.op("add_auth", "digest", "bob:secret", client="bob")
        ctx.op("create", p("locked"), b"", acl=acl, client="bob")
        ops = (
            ("create", p("locked", "kid"), b"", OPEN, 0),
            ("setData", p("locked"), b"x", -1),
            ("check", p("locked"), 1),
        )
        ctx.raw(multi_request(*ops), label="anonymous")
        ctx.raw(multi_request(*ops), client="bob", label="bob")
        ctx.op("get_children", p("locked"), client="bob")

    differential.run(scenario)


def test_multi_create_kind_and_result_type_follow_the_flags(differential: Differential) -> None:
    """Inside a multi, ZooKeeper decodes create (1), create2 (15) and createContainer (19)
    alike, as ``Op.create(path, data, acl, flags)``: the node kind comes from the *flags*
    (4 = container) and so does the result type (15 with a Stat for a container, 1 with
    the path only otherwise) -- create2 flags 0 answers a type-1 result, createContainer
    flags 0 makes a plain node, create flags 4 a real container.  createTTL (21) with
    non-TTL flags is a plain create (its ttl is ignored); a TTL flag on any other create
    opcode is a MarshallingError for the whole multi.  (TTL is disabled on the shared
    pair: createTTL flags 5 is an Unimplemented result.)  Which nodes are containers is
    observed through the reaper: each node gets a child that is deleted again; after a
    sentinel container created once the first reap has happened is also gone, every
    container has had a full reaper pass.
    """

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        creates = {
            "create2-f0": ("create2", p("create2-f0"), b"", OPEN, 0),
            "create2-f1": ("create2", p("create2-f1"), b"", OPEN, 1),
            "create2-f2-": ("create2", p("create2-f2-"), b"", OPEN, 2),
            "create2-f4": ("create2", p("create2-f4"), b"", OPEN, 4),
            "create-f4": ("create", p("create-f4"), b"", OPEN, 4),
            "container-f0": ("createContainer", p("container-f0"), b"", OPEN, 0),
            "container-f1": ("createContainer", p("container-f1"), b"", OPEN, 1),
            "container-f4": ("createContainer", p("container-f4"), b"", OPEN, 4),
            "ttl-f0": ("createTTL", p("ttl-f0"), b"", OPEN, 0, 1000),
            "ttl-f5": ("createTTL", p("ttl-f5"), b"", OPEN, 5, 1000),
        }
        for label, op in creates.items():
            ctx.raw(multi_request(op), label=label)
        ctx.raw(multi_request(("create", p("create-f5"), b"", OPEN, 5)), label="create-f5")
        ctx.raw(multi_request(("create2", p("create2-f6"), b"", OPEN, 6)), label="create2-f6")
        ctx.raw(
            multi_request(
                ("create", p("first"), b"", OPEN, 0),
                ("createContainer", p("container-f6"), b"", OPEN, 6),
            ),
            label="createContainer-f6 after a good op",
        )
        c = ctx.client()
        names = c.get_children(p())
        ctx.record("created", names)
        for name in names:
            ctx.call(f"kid under {name}", lambda n=name: c.create(p(n, "kid")) and None)
            ctx.call(f"delete kid of {name}", c.delete, p(name, "kid"))
        _wait_gone(ctx, p("container-f4"))
        ctx.raw(multi_request(("createContainer", p("sentinel-box"), b"", OPEN, 4)))
        ctx.op("create", p("sentinel-box", "kid"), b"")
        ctx.op("delete", p("sentinel-box", "kid"))
        _wait_gone(ctx, p("sentinel-box"))
        ctx.op("get_children", p())

    differential.run(scenario)


def _wait_gone(ctx: ScenarioContext, path: str, timeout: float = 8.0) -> None:
    """Wait (bounded, exists watch) until *path* is deleted by the server; record the outcome."""
    gone = threading.Event()

    def watch(event: Any) -> None:
        if event.type == "DELETED":
            gone.set()

    c = ctx.client("reaper-watch", record_wire=False)
    if c.exists(path, watch=watch) is None:
        gone.set()
    ctx.record(f"reaped ~{path.removeprefix(ctx.root)}", gone.wait(timeout))
