"""Differential conformance: reads that set a watch, sent back to back.

fastzk answers exists/getData/getChildren(2) with the watch flag on world-readable nodes in C
(`_core.serve_reads`) and leaves the rest (nodes readable only by some identities, frames
queued behind a write) to the Python pipeline; a pipelined batch mixes both. Which session
gets which notification, and the frame order on each connection, must be ZooKeeper's.
"""

from __future__ import annotations

from typing import Any

from differential import Differential, ScenarioContext
from kazoo.security import ACL, Id, make_digest_acl_credential

ALL = 31
OPEN = [ACL(ALL, Id("world", "anyone"))]


def digest(user: str) -> ACL:
    return ACL(ALL, Id("digest", make_digest_acl_credential(user, "pw")))


def test_pipelined_watch_reads_register_what_zookeeper_registers(
    differential: Differential,
) -> None:
    """Two sessions (bob may read "locked") each send a dozen watch reads without waiting: on
    world-readable nodes, missing ones (only exists leaves a watch), a node only bob may
    read and one neither may; anon's batch has a write in its middle. Then every node
    changes: each session's events and wire frames must match ZooKeeper's. (exists on a
    node without READ is left out: fastzk refuses it, as 3.8.4+ does; see README.)"""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("add_auth", "digest", "bob:pw", client="writer")
        ctx.op("add_auth", "digest", "eve:pw", client="writer")
        ctx.op("create", p("open"), b"0", client="writer")
        ctx.op("create", p("open", "kid"), b"", client="writer")
        ctx.op("create", p("locked"), b"s", acl=[digest("bob"), OPEN[0]._replace(perms=2)],
               client="writer")
        ctx.op("create", p("hidden"), b"h", acl=[digest("eve")], client="writer")
        ctx.op("add_auth", "digest", "bob:pw", client="bob")
        for name in ("bob", "anon"):
            c = ctx.client(name)
            w = {tag: ctx.watcher(tag, client=name) for tag in (
                "get-open", "exists-open", "children-open", "children2-kid", "exists-missing",
                "get-missing", "children-missing", "get-locked", "exists-locked",
                "children-locked", "get-hidden", "children-hidden", "exists-later")}
            pending: list[tuple[str, Any]] = [
                ("get open", c.get_async(p("open"), watch=w["get-open"])),
                ("exists open", c.exists_async(p("open"), watch=w["exists-open"])),
                ("children open", c.get_children_async(p("open"), watch=w["children-open"])),
                ("children2 kid", c.get_children_async(p("open", "kid"),
                                                       watch=w["children2-kid"],
                                                       include_data=True)),
                ("exists missing", c.exists_async(p("missing"), watch=w["exists-missing"])),
                ("get missing", c.get_async(p("missing"), watch=w["get-missing"])),
                ("children missing", c.get_children_async(p("missing"),
                                                          watch=w["children-missing"])),
                ("get locked", c.get_async(p("locked"), watch=w["get-locked"])),
                ("children locked", c.get_children_async(p("locked"),
                                                         watch=w["children-locked"])),
            ]
            if name == "bob":  # exists without READ is NoAuth here, fine in 3.8.0 (README)
                pending.append(("exists locked", c.exists_async(p("locked"),
                                                                watch=w["exists-locked"])))
            if name == "anon":  # a write in the batch: what follows waits for its reply
                pending.append(("set open", c.set_async(p("open"), b"anon")))
            pending += [
                ("get hidden", c.get_async(p("hidden"), watch=w["get-hidden"])),
                ("children hidden", c.get_children_async(p("hidden"),
                                                         watch=w["children-hidden"])),
                ("exists later", c.exists_async(p("later"), watch=w["exists-later"])),
            ]
            for label, result in pending:
                ctx.call(f"{name}: {label}", result.get, timeout=10)
        ctx.barrier("bob")
        ctx.barrier("anon")
        ctx.record_events("bob", label="bob: events of the anon set")
        ctx.record_events("anon", label="anon: events of its own set")
        ctx.op("set", p("open"), b"1", client="writer")
        ctx.op("create", p("open", "kid", "grandkid"), b"", client="writer")
        ctx.op("create", p("missing"), b"", client="writer")
        ctx.op("create", p("missing", "kid"), b"", client="writer")
        ctx.op("set", p("locked"), b"t", client="writer")
        ctx.op("create", p("locked", "kid"), b"", client="writer")
        ctx.op("set", p("hidden"), b"i", client="writer")
        ctx.op("create", p("later"), b"", client="writer")
        ctx.op("delete", p("open", "kid", "grandkid"), client="writer")
        ctx.op("delete", p("open", "kid"), client="writer")
        for name in ("bob", "anon"):
            ctx.barrier(name)
            ctx.record_events(name)

    differential.run(scenario)

