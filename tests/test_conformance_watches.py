"""Differential conformance: one-shot watches, which events fire, and in what order.

Events are observed twice per client (see tests/differential.py): kazoo watch
callbacks (``ctx.watcher``) and the raw frame order on the connection
(``wire:<client>`` in the transcript).  ``ctx.barrier()`` makes "no event"
observable without sleeping: a round trip after the write guarantees that
any notification the write caused has already arrived.
"""

from __future__ import annotations

import socket

from differential import Differential, ScenarioContext


def test_data_watch_fires_once_then_is_gone(differential: Differential) -> None:
    """A getData watch is one-shot: the second setData fires nothing."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path("n")
        ctx.op("create", p, b"0", client="writer")
        ctx.op("get", p, watch=ctx.watcher("get"))
        ctx.op("set", p, b"1", client="writer")
        ctx.op("set", p, b"2", client="writer")
        ctx.barrier()
        ctx.record_events()
        ctx.op("set", p, b"3", client="writer")
        ctx.barrier()
        ctx.record_events(label="after the watch was used up")

    differential.run(scenario)


def test_set_with_identical_data_still_fires_changed(differential: Differential) -> None:
    """NodeDataChanged fires even when the new data equals the old."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path("n")
        ctx.op("create", p, b"same", client="writer")
        ctx.op("exists", p, watch=ctx.watcher("exists"))
        ctx.op("set", p, b"same", client="writer")
        ctx.barrier()
        ctx.record_events()

    differential.run(scenario)


def test_exists_watch_on_missing_node_fires_on_create(differential: Differential) -> None:
    """exists() on a missing node still registers a watch (NoNode is not a failure)."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path("later")
        ctx.op("exists", p, watch=ctx.watcher("exists-missing"))
        ctx.op("create", p, b"", client="writer")
        ctx.barrier()
        ctx.record_events()
        ctx.op("exists", p, watch=ctx.watcher("exists-present"))
        ctx.op("delete", p, client="writer")
        ctx.barrier()
        ctx.record_events()

    differential.run(scenario)


def test_failed_reads_do_not_register_watches(differential: Differential) -> None:
    """getData/getChildren on a missing node fail with NoNode and leave no watch."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path("ghost")
        ctx.op("get", p, watch=ctx.watcher("get-missing"))
        ctx.op("get_children", p, watch=ctx.watcher("children-missing"))
        ctx.op("create", p, b"", client="writer")
        ctx.op("create", ctx.path("ghost", "kid"), b"", client="writer")
        ctx.op("set", p, b"x", client="writer")
        ctx.barrier()
        ctx.record_events()

    differential.run(scenario)


def test_child_watch_fires_only_for_direct_child_creates_and_deletes(
    differential: Differential,
) -> None:
    """Child data changes and grandchildren don't fire a child watch; a new child does."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("parent", "kid"), b"", makepath=True, client="writer")
        ctx.op("get_children", p("parent"), watch=ctx.watcher("children"))
        ctx.op("set", p("parent", "kid"), b"data", client="writer")
        ctx.op("create", p("parent", "kid", "grandkid"), b"", client="writer")
        ctx.op("set", p("parent"), b"parent data", client="writer")
        ctx.barrier()
        ctx.record_events(label="no event yet")
        ctx.op("create", p("parent", "kid2"), b"", client="writer")
        ctx.barrier()
        ctx.record_events()
        ctx.op("get_children", p("parent"), watch=ctx.watcher("children-again"), include_data=True)
        ctx.op("delete", p("parent", "kid2"), client="writer")
        ctx.barrier()
        ctx.record_events()

    differential.run(scenario)


def test_own_write_notification_arrives_before_its_reply(differential: Differential) -> None:
    """The writer's own watch fires before its write returns (spec 7.5 rule 2).

    ``ctx.mark`` queues a marker behind the callbacks kazoo has dispatched
    when the write returns: the event must come first.  The wire log shows the
    notification frame before the reply frame.
    """

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("n"), b"")
        ctx.op("get", p("n"), watch=ctx.watcher("data"))
        ctx.op("set", p("n"), b"mine")
        ctx.mark("set returned")
        ctx.op("exists", p("new"), watch=ctx.watcher("exists"))
        ctx.op("get_children", p(), watch=ctx.watcher("children"))
        ctx.op("create", p("new"), b"")
        ctx.mark("create returned")
        ctx.op("get", p("new"), watch=ctx.watcher("data-new"))
        ctx.op("get_children", p(), watch=ctx.watcher("children-2"))
        ctx.op("delete", p("new"))
        ctx.mark("delete returned")
        ctx.record_events()

    differential.run(scenario)


def test_delete_with_data_and_child_watch_sends_one_deleted(differential: Differential) -> None:
    """Data + exists + child watches on one node: one NodeDeleted frame, then the parent's event."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("node"), b"", client="writer")
        ctx.op("get", p("node"), watch=ctx.watcher("get"))
        ctx.op("exists", p("node"), watch=ctx.watcher("exists"))
        ctx.op("get_children", p("node"), watch=ctx.watcher("children"))
        ctx.op("get_children", p(), watch=ctx.watcher("parent-children"))
        ctx.op("delete", p("node"), client="writer")
        ctx.barrier()
        ctx.record_events()

    differential.run(scenario)


def test_create_fires_created_before_parent_children_changed(
    differential: Differential,
) -> None:
    """create P: NodeCreated(P) first, then NodeChildrenChanged(parent)."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("exists", p("c"), watch=ctx.watcher("exists-c"))
        ctx.op("get_children", p(), watch=ctx.watcher("children-root"))
        ctx.op("create", p("c"), b"", client="writer")
        ctx.barrier()
        ctx.record_events()

    differential.run(scenario)


def test_notifications_arrive_in_write_order(differential: Differential) -> None:
    """Events from a series of writes by another client arrive in zxid order."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        for name in ("x", "y", "z"):
            ctx.op("create", p(name), b"", client="writer")
        ctx.op("get", p("z"), watch=ctx.watcher("z"))
        ctx.op("get", p("x"), watch=ctx.watcher("x"))
        ctx.op("exists", p("w"), watch=ctx.watcher("w"))
        ctx.op("get", p("y"), watch=ctx.watcher("y"))
        ctx.op("get_children", p(), watch=ctx.watcher("children"))
        ctx.op("set", p("y"), b"1", client="writer")
        ctx.op("delete", p("z"), client="writer")
        ctx.op("create", p("w"), b"", client="writer")
        ctx.op("set", p("x"), b"1", client="writer")
        ctx.barrier()
        ctx.record_events()

    differential.run(scenario)


def test_each_client_gets_its_own_notification(differential: Differential) -> None:
    """Two sessions watching the same node both get exactly one event."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path("n")
        ctx.op("create", p, b"", client="writer")
        ctx.op("get", p, watch=ctx.watcher("a-get", client="a"), client="a")
        ctx.op("exists", p, watch=ctx.watcher("a-exists", client="a"), client="a")
        ctx.op("get", p, watch=ctx.watcher("b-get", client="b"), client="b")
        ctx.op("set", p, b"x", client="writer")
        ctx.barrier("a")
        ctx.barrier("b")
        ctx.record_events("a")
        ctx.record_events("b")
        ctx.record_events("writer")

    differential.run(scenario)


def test_watches_on_ephemeral_and_sequential_nodes(differential: Differential) -> None:
    """Watches on sequential children and ephemerals deleted by their owner."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("q"), b"")
        ctx.op("get_children", p("q"), watch=ctx.watcher("queue"))
        created = ctx.op("create", p("q", "item-"), b"", sequence=True, client="writer")
        ctx.barrier()
        ctx.op("get", created, watch=ctx.watcher("item"))
        ctx.op("create", p("e"), b"", ephemeral=True, client="writer")
        ctx.op("exists", p("e"), watch=ctx.watcher("ephemeral"))
        ctx.op("delete", created, client="writer")
        ctx.op("delete", p("e"), client="writer")
        ctx.barrier()
        ctx.record_events()

    differential.run(scenario)


def test_watch_is_lost_when_the_connection_drops(differential: Differential) -> None:
    """Watches belong to the connection; kazoo reconnects without setWatches.

    The client's TCP connection is shut down under kazoo; it reconnects to
    the same session.  The ephemeral survives, the old watch is gone on the
    server, and a new watch set after the reconnect works.
    """

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("n"), b"", client="writer")
        ctx.op("create", p("mine"), b"", ephemeral=True)
        ctx.op("get", p("n"), watch=ctx.watcher("before-drop"))
        ctx.record_states(label="states before the drop")
        client = ctx.client()
        client._connection._socket.shutdown(socket.SHUT_RDWR)
        ctx.wait_state("SUSPENDED")
        ctx.wait_state("CONNECTED")
        ctx.op("exists", p("mine"))
        ctx.op("set", p("n"), b"changed while the watch was gone", client="writer")
        ctx.barrier()
        ctx.record_events(label="events after reconnect")
        ctx.op("get", p("n"), watch=ctx.watcher("after-reconnect"))
        ctx.op("set", p("n"), b"again", client="writer")
        ctx.barrier()
        ctx.record_events()
        ctx.record_states()

    differential.run(scenario)
