"""Differential conformance: one write fanned out to many watching sessions.

Two dozen kazoo sessions watch the same nodes in every way a watch can be set (getData,
exists, getChildren, persistent and recursive addWatch, several matching one change on one
session),
a third of them with the digest identity that alone may read a node created later. Each
session's callbacks and raw frame order are compared with ZooKeeper's: every change
reaches each session once however many of its watches match, one-shot watches are used
up, notifications are filtered by READ on the node, and the writer's own notification
(it watches too) arrives before its reply.
"""

from __future__ import annotations

from differential import Differential, ScenarioContext, add_watch_request
from kazoo.security import ACL, Id, make_digest_acl_credential

PERSISTENT, RECURSIVE = 0, 1
WATCHERS = 24
ALICE_ONLY = [ACL(31, Id("digest", make_digest_acl_credential("alice", "pw")))]


def _watch(ctx: ScenarioContext, name: str, mode: int, d: str, n: str) -> None:
    if mode == 0:
        ctx.op("get", n, watch=ctx.watcher("get", name), client=name)
    elif mode == 1:
        ctx.op("exists", n, watch=ctx.watcher("exists", name), client=name)
    elif mode == 2:  # three registrations, one event per change
        ctx.op("get", n, watch=ctx.watcher("get", name), client=name)
        ctx.op("exists", n, watch=ctx.watcher("exists", name), client=name)
        ctx.op("get_children", d, watch=ctx.watcher("children", name), client=name)
    elif mode == 3:  # the recursive watch on d and the data watch on n: one event each
        ctx.raw(add_watch_request(d, RECURSIVE), client=name)
        ctx.op("get", n, watch=ctx.watcher("get", name), client=name)
    elif mode == 4:
        # (not with a standard watch on n too: in 3.8.0 an addWatch replaced those, see
        # test_conformance_watch_modes.py)
        ctx.raw(add_watch_request(n, PERSISTENT), client=name)
        ctx.op("get_children", d, watch=ctx.watcher("children", name), client=name)
    else:  # the delete of m fires both watches on m: one event
        m = ctx.path("d", "m")
        ctx.op("get_children", m, watch=ctx.watcher("children", name), client=name)
        ctx.op("exists", m, watch=ctx.watcher("exists", name), client=name)


def test_one_write_fanned_out_to_many_sessions(differential: Differential) -> None:
    def scenario(ctx: ScenarioContext) -> None:
        d, n, secret = ctx.path("d"), ctx.path("d", "n"), ctx.path("d", "secret")
        ctx.op("create", d, b"", client="writer")
        ctx.op("create", n, b"0", client="writer")
        ctx.op("create", ctx.path("d", "m"), b"", client="writer")
        names = [f"w{i:02d}" for i in range(WATCHERS)]
        for i, name in enumerate(names):
            if i % 3 == 0:
                ctx.op("add_auth", "digest", "alice:pw", client=name)
            _watch(ctx, name, i % 6, d, n)
            # missing now; created readable by alice only: NodeCreated reaches only her
            ctx.op("exists", secret, watch=ctx.watcher("secret", name), client=name)
        ctx.op("get", n, watch=ctx.watcher("own", "writer"), client="writer")
        ctx.op("set", n, b"1", client="writer")
        ctx.op("create", secret, b"s", acl=ALICE_ONLY, client="writer")
        ctx.op("set", n, b"2", client="writer")
        ctx.op("delete", n, client="writer")
        ctx.op("delete", ctx.path("d", "m"), client="writer")
        for name in ["writer", *names]:
            ctx.barrier(name)
            ctx.record_events(name)

    differential.run(scenario)
