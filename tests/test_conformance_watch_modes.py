"""Differential conformance: persistent and recursive watches, watch removal, setWatches2.

kazoo 2.11 has no addWatch, removeWatches, checkWatches or setWatches2, so these
requests are built from tests/wire.py primitives (``differential.*_request``) and
sent through a kazoo connection.  kazoo does not dispatch callbacks for persistent
watches, but every notification frame is in the client's wire log, which is what
these transcripts compare (``wire:<client>`` lines: type, path, and position
relative to the replies).

Deliberate differences, asserted on fastzk alone at the end:

* removeWatches/checkWatches with WatcherType 4 (Persistent) and 5
  (PersistentRecursive): 3.8.0 rejects them with MarshallingError, fastzk
  implements the 3.9 semantics.
* Standard and persistent registrations of one connection on the same path live
  side by side (3.9); in 3.8.0 an addWatch replaced the connection's standard
  watches on that exact path.  The differential scenarios never mix the two on
  one path and connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from differential import (
    Differential,
    ScenarioContext,
    add_watch_request,
    check_watches_request,
    multi_request,
    remove_watches_request,
    set_watches2_request,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoWatcherError
from kazoo.protocol.serialization import Watch
from kazoo.protocol.states import Callback

from fastzk.nemesis.servers import ServerProcess

PERSISTENT, RECURSIVE = 0, 1
CHILDREN, DATA, ANY, W_PERSISTENT, W_RECURSIVE = 1, 2, 3, 4, 5


def test_add_watch_reply_and_validation(differential: Differential) -> None:
    """addWatch answers a 4-byte ErrorResponse 0 with no existence or ACL check; an invalid
    mode is a MarshallingError and the connection stays usable."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.raw(add_watch_request(p("missing", "deep"), PERSISTENT))
        ctx.raw(add_watch_request(p(), RECURSIVE))
        ctx.raw(add_watch_request(p(), RECURSIVE), label="the same registration again")
        ctx.raw(add_watch_request("/", PERSISTENT))
        for mode in (2, -1, 99):
            ctx.raw(add_watch_request(p(), mode))
        ctx.op("exists", p())

    differential.run(scenario)


def test_persistent_watch_sees_every_event_on_its_path(differential: Differential) -> None:
    """A persistent watch gets NodeCreated, NodeDataChanged, NodeChildrenChanged and
    NodeDeleted for its own path, again and again, and survives delete + re-create;
    grandchildren and child data changes do not reach it."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.raw(add_watch_request(p("n"), PERSISTENT), client="watcher")
        for method, *args in (
            ("create", p("n"), b"0"),
            ("set", p("n"), b"1"),
            ("set", p("n"), b"1"),
            ("create", p("n", "kid"), b""),
            ("set", p("n", "kid"), b"kid data"),
            ("create", p("n", "kid", "grand"), b""),
            ("delete", p("n", "kid", "grand")),
            ("delete", p("n", "kid")),
            ("delete", p("n")),
            ("create", p("n"), b"again"),
            ("set", p("n"), b"2"),
        ):
            ctx.op(method, *args, client="writer")
        ctx.barrier("watcher")

    differential.run(scenario)


def test_recursive_watch_covers_the_subtree_without_child_events(
    differential: Differential,
) -> None:
    """A recursive watch gets NodeCreated/NodeDataChanged/NodeDeleted for its path and every
    descendant, never NodeChildrenChanged, and nothing for siblings of its path."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("sibling"), b"", client="writer")
        ctx.raw(add_watch_request(p("top"), RECURSIVE), client="watcher")
        for method, *args in (
            ("create", p("top"), b""),
            ("create", p("top", "a"), b""),
            ("create", p("top", "a", "b"), b""),
            ("create", p("top", "a", "b", "c"), b"deep"),
            ("set", p("top", "a", "b", "c"), b"deeper"),
            ("set", p("top"), b"top"),
            ("create", p("topper"), b""),
            ("set", p("sibling"), b"x"),
            ("create", p("top", "e"), b"", {"ephemeral": True}),
            ("create", p("top", "s-"), b"", {"sequence": True}),
            ("delete", p("top", "a", "b", "c")),
            ("delete", p("top", "a", "b")),
        ):
            kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
            ctx.op(method, *args, client="writer", **kwargs)
        ctx.stop_client("writer")  # its ephemeral /top/e goes
        ctx.op("delete", p("top", "s-0000000002"), client="writer2")
        ctx.op("delete", p("top", "a"), client="writer2")
        ctx.op("delete", p("top"), client="writer2")
        ctx.barrier("watcher")

    differential.run(scenario)


def test_one_notification_per_connection(differential: Differential) -> None:
    """Several matching registrations on one connection (recursive on two ancestors, a
    persistent watch on the node, or on another path of the same subtree) still give
    exactly one frame per event; each connection gets its own."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("a", "b", "c"), b"", makepath=True, client="writer")
        ctx.raw(add_watch_request(p(), RECURSIVE), client="w1")
        ctx.raw(add_watch_request(p("a"), RECURSIVE), client="w1")
        ctx.raw(add_watch_request(p("a", "b"), RECURSIVE), client="w1")
        ctx.raw(add_watch_request(p("a", "b", "c"), PERSISTENT), client="w2")
        ctx.raw(add_watch_request(p("a"), RECURSIVE), client="w2")
        ctx.raw(add_watch_request(p("a", "b", "c"), PERSISTENT), client="w3")
        ctx.op("set", p("a", "b", "c"), b"1", client="writer")
        ctx.op("create", p("a", "b", "c", "d"), b"", client="writer")
        ctx.op("delete", p("a", "b", "c", "d"), client="writer")
        ctx.op("delete", p("a", "b", "c"), client="writer")
        for name in ("w1", "w2", "w3"):
            ctx.barrier(name)

    differential.run(scenario)


def test_recursive_watch_sees_a_multi_in_op_order(differential: Differential) -> None:
    """A successful multi reaches a recursive watch as one event per op, in op order; a
    failed one sends nothing."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("x"), b"", client="writer")
        ctx.raw(add_watch_request(p(), RECURSIVE), client="watcher")
        ops = [
            ("create", p("m"), b"", None, 0),
            ("create", p("m", "k"), b"", None, 0),
            ("setData", p("x"), b"1", -1),
            ("delete", p("x"), -1),
            ("setData", p("m", "k"), b"2", -1),
        ]
        ctx.raw(multi_request(*ops, ("check", p("m"), 5)), client="writer", label="failing")
        ctx.barrier("watcher")
        ctx.raw(multi_request(*ops), client="writer", label="succeeding")
        ctx.barrier("watcher")

    differential.run(scenario)


def test_own_writes_reach_own_recursive_watch_before_the_reply(
    differential: Differential,
) -> None:
    """The writer's own persistent/recursive watches fire before its write's reply."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.raw(add_watch_request(p(), RECURSIVE))
        ctx.op("create", p("a"), b"")
        ctx.op("set", p("a"), b"x")
        ctx.op("create", p("e"), b"", ephemeral=True)
        ctx.raw(add_watch_request(p("e"), PERSISTENT), client="other")
        ctx.stop_client("main")  # closeSession: NodeDeleted(e) before the close reply
        ctx.barrier("other")

    differential.run(scenario)


def test_check_and_remove_standard_watches(differential: Differential) -> None:
    """checkWatches/removeWatches with Children (1), Data (2) and Any (3) on a connection's
    own standard watches; NoWatcher when nothing matches (removeWatches of another
    connection's watch too); a removed watch no longer fires; unknown types are
    MarshallingError.  (checkWatches of another connection's watch: next test.)"""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        for name in ("d", "c", "both", "x"):
            ctx.op("create", p(name), b"", client="writer")
        ctx.op("get", p("d"), watch=ctx.watcher("get d"))
        ctx.op("exists", p("missing"), watch=ctx.watcher("exists missing"))
        ctx.op("get_children", p("c"), watch=ctx.watcher("children c"))
        ctx.op("get", p("both"), watch=ctx.watcher("get both"))
        ctx.op("get_children", p("both"), watch=ctx.watcher("children both"))
        ctx.op("get", p("x"), watch=ctx.watcher("other's x"), client="other")
        for path in ("d", "missing", "c", "both", "none"):
            for wtype in (CHILDREN, DATA, ANY):
                ctx.raw(check_watches_request(p(path), wtype))
        for wtype in (0, 6, -1):
            ctx.raw(check_watches_request(p("d"), wtype))
            ctx.raw(remove_watches_request(p("d"), wtype))
        ctx.raw(remove_watches_request(p("d"), CHILDREN), label="remove children on data-only")
        ctx.raw(remove_watches_request(p("d"), DATA))
        ctx.raw(remove_watches_request(p("d"), DATA), label="again")
        ctx.raw(remove_watches_request(p("missing"), DATA))
        ctx.raw(remove_watches_request(p("both"), CHILDREN))
        ctx.raw(check_watches_request(p("both"), CHILDREN), label="children both after remove")
        ctx.raw(check_watches_request(p("both"), DATA), label="data both after remove")
        ctx.raw(remove_watches_request(p("c"), ANY))
        ctx.raw(remove_watches_request(p("x"), ANY), label="remove another connection's")
        ctx.raw(check_watches_request(p("x"), DATA), client="other", label="other still has x")
        for name in ("d", "c", "both", "x"):
            ctx.op("set", p(name), b"1", client="writer")
            ctx.op("create", p(name, "kid"), b"", client="writer")
        ctx.op("create", p("missing"), b"", client="writer")
        ctx.barrier()
        ctx.barrier("other")
        ctx.raw(check_watches_request(p("both"), DATA), label="fired watch is gone")

    differential.run(scenario)


def test_remove_any_drops_persistent_and_recursive(differential: Differential) -> None:
    """removeWatches Any (3) also removes persistent and recursive registrations (3.8 and
    3.9 agree on this); checkWatches Any sees them."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.op("create", p("n"), b"", client="writer")
        ctx.raw(add_watch_request(p("n"), PERSISTENT))
        ctx.raw(add_watch_request(p(), RECURSIVE))
        ctx.raw(check_watches_request(p("n"), ANY))
        ctx.raw(check_watches_request(p(), ANY))
        ctx.op("set", p("n"), b"1", client="writer")
        ctx.barrier()
        ctx.raw(remove_watches_request(p("n"), ANY))
        ctx.raw(check_watches_request(p("n"), ANY), label="n after remove")
        ctx.op("set", p("n"), b"2", client="writer")
        ctx.barrier()
        ctx.raw(remove_watches_request(p(), ANY))
        ctx.op("set", p("n"), b"3", client="writer")
        ctx.op("create", p("m"), b"", client="writer")
        ctx.barrier()
        ctx.raw(remove_watches_request(p(), ANY), label="nothing left")

    differential.run(scenario)


def test_set_watches2_catch_up_and_persistent(differential: Differential) -> None:
    """setWatches2 as a reconnecting Java client sends it: data/exist/child watches get
    catch-up events (relative to the zxid the client had seen) or are registered again;
    persistent and recursive watches are registered without catch-up events."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        for name in ("same", "changed", "deleted", "kids", "kids-same", "exists-now"):
            ctx.op("create", p(name), b"", client="setup")
        ctx.op("create", p("kids", "k1"), b"", client="setup")
        c = ctx.client()
        ctx.op("exists", p())  # the watcher has now seen everything so far
        seen = c.last_zxid
        ctx.op("set", p("changed"), b"1", client="setup")
        ctx.op("delete", p("deleted"), client="setup")
        ctx.op("create", p("kids", "k2"), b"", client="setup")
        ctx.op("set", p("kids-same"), b"data, not children", client="setup")
        ctx.raw(
            set_watches2_request(
                seen,
                data=(p("same"), p("changed"), p("deleted"), p("never")),
                exist=(p("exists-now"), p("not-yet")),
                child=(p("kids"), p("kids-same"), p("deleted")),
                persistent=(p("same"), p("p-missing")),
                recursive=(p("kids"),),
            )
        )
        # What is registered now fires on the next writes.
        for method, *args in (
            ("set", p("same"), b"x"),
            ("create", p("not-yet"), b""),
            ("create", p("kids-same", "k"), b""),
            ("create", p("p-missing"), b""),
            ("set", p("kids", "k1"), b"y"),
            ("create", p("never"), b""),
            ("set", p("same"), b"z"),
        ):
            ctx.op(method, *args, client="setup")
        ctx.barrier()

    differential.run(scenario)


def test_persistent_watch_on_ephemeral_and_expiry(differential: Differential) -> None:
    """Persistent/recursive watches see ephemerals deleted by a session close."""

    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        ctx.unordered_notifications = True  # the session's ephemerals go in any order
        ctx.raw(add_watch_request(p(), RECURSIVE), client="watcher")
        ctx.raw(add_watch_request(p("e1"), PERSISTENT), client="watcher2")
        for name in ("e1", "e2", "e3"):
            ctx.op("create", p(name), b"", ephemeral=True, client="owner")
        ctx.stop_client("owner")
        ctx.barrier("watcher")
        ctx.barrier("watcher2")

    differential.run(scenario)


# --- fastzk-only: the 3.9 semantics that 3.8.0 does not have ------------------------------------
class _Probe:
    """A kazoo client whose notification frames are logged (path, type) in wire order."""

    def __init__(self, client: KazooClient) -> None:
        self.client = client
        self.frames: list[tuple[int, str]] = []
        original = client._connection._read_watch_event

        def hook(buffer: bytes, offset: int) -> Any:
            event, _ = Watch.deserialize(buffer, offset)
            self.frames.append((event.type, event.path))
            return original(buffer, offset)

        client._connection._read_watch_event = hook

    def call(self, request: Any) -> Any:
        result = self.client.handler.async_result()
        self.client._call(request, result)
        return result.get(timeout=10)

    def settle(self) -> list[tuple[int, str]]:
        """Frames so far, after a round trip and a callback-queue flush."""
        self.client.exists("/")
        done = threading.Event()
        self.client.handler.dispatch_callback(Callback("marker", done.set, ()))
        assert done.wait(5)
        frames, self.frames = self.frames, []
        return frames


@pytest.fixture
def probe(
    fastzk_only: ServerProcess, kazoo_factory: Callable[..., KazooClient]
) -> Callable[[], _Probe]:
    return lambda: _Probe(kazoo_factory(fastzk_only, timeout=10.0))


def test_check_watches_sees_only_the_connections_own_watches_on_fastzk(
    probe: Callable[[], _Probe], unique_path: str
) -> None:
    """checkWatches for a path that only *another* connection watches is NoWatcher: a
    connection asks about its own registrations (3.9 semantics, spec 7.7).

    Deliberate difference: ZooKeeper 3.8.0 answers OK when any connection holds a watch of
    that type on the path."""
    other = probe()
    asker = probe()
    other.client.create(f"{unique_path}/x", b"", makepath=True)
    other.client.get(f"{unique_path}/x", watch=lambda event: None)
    other.client.get_children(unique_path, watch=lambda event: None)
    for path, wtype in ((f"{unique_path}/x", DATA), (unique_path, CHILDREN)):
        for kind in (wtype, ANY):
            with pytest.raises(NoWatcherError):
                asker.call(check_watches_request(path, kind))
        assert other.call(check_watches_request(path, wtype)) is True


def test_check_and_remove_persistent_types_on_fastzk(
    probe: Callable[[], _Probe], unique_path: str
) -> None:
    """WatcherType 4 (Persistent) and 5 (PersistentRecursive) as in ZooKeeper 3.9: each
    matches only its own kind; Data/Children (2/1) do not match persistent watches.

    Deliberate difference: ZooKeeper 3.8.0 answers MarshallingError to types 4 and 5.
    """
    w = probe()
    writer = probe().client
    writer.create(unique_path, b"")
    path = unique_path
    assert w.call(add_watch_request(path, PERSISTENT)) == ("ErrorResponse", 0, 0)
    assert w.call(check_watches_request(path, W_PERSISTENT)) is True
    for wtype in (W_RECURSIVE, DATA, CHILDREN):
        with pytest.raises(NoWatcherError):
            w.call(check_watches_request(path, wtype))
    assert w.call(add_watch_request(path, RECURSIVE)) == ("ErrorResponse", 0, 0)
    assert w.call(check_watches_request(path, W_RECURSIVE)) is True
    # Remove the persistent one: the recursive one still reports changes to path...
    assert w.call(remove_watches_request(path, W_PERSISTENT)) is True
    with pytest.raises(NoWatcherError):
        w.call(remove_watches_request(path, W_PERSISTENT))
    writer.set(path, b"1")
    writer.create(f"{path}/kid")
    assert w.settle() == [(3, path), (1, f"{path}/kid")]  # no NodeChildrenChanged any more
    # ...until it is removed too.
    assert w.call(remove_watches_request(path, W_RECURSIVE)) is True
    writer.set(path, b"2")
    assert w.settle() == []
    with pytest.raises(NoWatcherError):
        w.call(check_watches_request(path, ANY))


def test_standard_and_persistent_watches_coexist_on_fastzk(
    probe: Callable[[], _Probe], unique_path: str
) -> None:
    """One connection may hold a one-shot child watch and a persistent/recursive watch on
    the same path (3.9): the one-shot fires once, the persistent one keeps firing, and a
    single frame is sent per event.

    Deliberate difference: in ZooKeeper 3.8.0 the addWatch replaced the standard watch.
    """
    w = probe()
    writer = probe().client
    writer.create(unique_path, b"")
    children: list[Any] = []
    w.client.get_children(unique_path, watch=children.append)
    assert w.call(add_watch_request(unique_path, PERSISTENT)) == ("ErrorResponse", 0, 0)
    assert w.call(check_watches_request(unique_path, CHILDREN)) is True
    writer.create(f"{unique_path}/a")
    writer.create(f"{unique_path}/b")
    assert w.settle() == [(4, unique_path), (4, unique_path)]
    assert [e.type for e in children] == ["CHILD"]
    with pytest.raises(NoWatcherError):
        w.call(check_watches_request(unique_path, CHILDREN))
    assert w.call(check_watches_request(unique_path, W_PERSISTENT)) is True


def test_set_watches2_readds_persistent_watches_on_fastzk(
    fastzk_only: ServerProcess, unique_path: str
) -> None:
    """setWatches2 on a brand-new raw connection (what a Java client sends after a
    reconnect) with persistent and recursive lists: registered, no catch-up events, the
    reply carries no body; later writes are delivered.  (Also compared with ZooKeeper
    through kazoo in test_set_watches2_catch_up_and_persistent.)"""
    import wire

    writer, _ = wire.handshake(fastzk_only.host, fastzk_only.port)
    sock, _ = wire.handshake(fastzk_only.host, fastzk_only.port)
    try:
        writer.sendall(wire.create_request(1, unique_path, b""))
        assert wire.read_reply(writer)[0].err == 0
        body = set_watches2_request(0, persistent=(unique_path,), recursive=(unique_path,)).body
        sock.sendall(wire.request(5, 105, body))
        hdr, rest = wire.read_reply(sock)
        assert (hdr.xid, hdr.err, rest) == (5, 0, b"")
        writer.sendall(wire.create_request(2, f"{unique_path}/k", b""))
        assert wire.read_reply(writer)[0].err == 0
        writer.sendall(wire.set_data_request(3, unique_path, b"x"))
        assert wire.read_reply(writer)[0].err == 0
        events = []
        for _ in range(3):
            hdr, rest = wire.read_reply(sock)
            assert hdr.xid == -1
            etype, state, plen = (int.from_bytes(rest[i:i + 4], "big", signed=True)
                                  for i in (0, 4, 8))
            events.append((etype, state, rest[12:12 + plen].decode()))
        # create /k: NodeChildrenChanged (persistent on the parent) and NodeCreated
        # (recursive) -- two different events; then NodeDataChanged once (both match).
        assert sorted(events[:2]) == [(1, 3, f"{unique_path}/k"), (4, 3, unique_path)]
        assert events[2] == (3, 3, unique_path)
        assert wire.ping(sock).err == 0
    finally:
        sock.close()
        writer.close()
