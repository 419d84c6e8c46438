"""Differential conformance at the application level: kazoo recipes.

The recipes combine watches, sequential ephemerals and ordering guarantees
the way real applications do; what their callbacks observe must be the same
on both servers.  A barrier after every write makes each step deterministic
(the recipe's follow-up read runs in kazoo's callback thread before the
barrier's marker).
"""

from __future__ import annotations

from typing import Any

from differential import Differential, ScenarioContext
from kazoo.recipe.lock import Lock
from kazoo.recipe.watchers import ChildrenWatch, DataWatch


def test_datawatch_and_childrenwatch_see_every_step(differential: Differential) -> None:
    """DataWatch/ChildrenWatch callbacks: initial call, each change, deletion."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        watcher = ctx.client("watcher", record_wire=False)

        def on_data(data: Any, stat: Any) -> None:
            ctx._append_callback("watcher", ("datawatch", data, stat))

        def on_children(children: list[str]) -> None:
            ctx._append_callback("watcher", ("childrenwatch", sorted(children)))

        ctx.op("create", p("node"), b"v0", client="writer")
        DataWatch(watcher, p("node"), on_data)
        ChildrenWatch(watcher, p(), on_children)
        ctx.barrier("watcher")
        steps = [
            ("set", p("node"), b"v1"),
            ("create", p("second"), b""),
            ("set", p("node"), b"v2"),
            ("delete", p("second")),
            ("delete", p("node")),
            ("create", p("node"), b"again"),
        ]
        for method, *args in steps:
            ctx.op(method, *args, client="writer")
            ctx.barrier("watcher")
        ctx.record_events("watcher")

    differential.run(scenario)


def test_lock_recipe_hands_over_between_sessions(differential: Differential) -> None:
    """Lock: holder blocks the contender; release or session close hands it over."""

    def scenario(ctx: ScenarioContext) -> None:
        lock_path = ctx.path("lock")
        # Lock waits on a watch in the callback thread: frame order is not deterministic.
        a = Lock(ctx.client("a", record_wire=False), lock_path, "a")
        b = Lock(ctx.client("b", record_wire=False), lock_path, "b")
        c = Lock(ctx.client("c", record_wire=False), lock_path, "c")
        ctx.call("a.acquire", a.acquire, timeout=5)
        ctx.call("b.acquire(blocking=False)", b.acquire, blocking=False)
        ctx.call("contenders", a.contenders)
        ctx.call("a.release", a.release)
        ctx.call("b.acquire", b.acquire, timeout=5)
        ctx.call("c.acquire(timeout=0.2)", c.acquire, timeout=0.2)
        ctx.call("contenders", a.contenders)
        ctx.stop_client("b")
        ctx.call("c.acquire after b's session closed", c.acquire, timeout=5)
        ctx.call("contenders", a.contenders)
        # Lock node names start with a random per-Lock uuid; keep only the sequence part.
        children = ctx.client("a").get_children(lock_path)
        ctx.record("lock nodes", sorted(name.rsplit("__", 1)[-1] for name in children))

    differential.run(scenario)
