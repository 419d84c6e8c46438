"""Child order, differentially: getChildren, getChildren2 and multiRead list children in the
order Apache ZooKeeper 3.8 does (its DataNode's HashSet<String> iteration order), live and
after restarts. tests/test_children_order.py checks the model against Java itself."""

from __future__ import annotations

import random
from collections.abc import Callable

from conftest import start_pair
from differential import Differential, ScenarioContext, multi_read_request
from kazoo.client import KazooClient

from fastzk.nemesis.servers import ServerProcess

# Five blocks of "Aa"/"BB": 32 names with one String.hashCode, so one bin, which becomes a
# red-black tree bin once the set has 64 bins.
COLLIDING = [""]
for _ in range(5):
    COLLIDING = [n + b for n in COLLIDING for b in ("Aa", "BB")]
# ZooKeeper refuses names with surrogates (so every code point above U+FFFF), private-use
# characters and U+FFF0-U+FFFF (PathUtils.validatePath): those are left to the Java test.
UNICODE = ["é", "中文", "Ω≈ç", "日本語", "ü-ñ", "\u00a0x", "ⓩ", "Ʃ", "ﬀ"]


def test_two_before_one(server: ServerProcess, kazoo_factory: Callable[..., KazooClient],
                        unique_path: str) -> None:
    """zk-shell's `tree` test expects ZooKeeper's order: `two` before `one`."""
    zk = kazoo_factory(server)
    zk.create(f"{unique_path}/one", makepath=True)
    zk.create(f"{unique_path}/two")
    assert zk.get_children(unique_path) == ["two", "one"]


def test_children_order_under_creates_and_deletes(differential: Differential) -> None:
    def scenario(ctx: ScenarioContext) -> None:
        p = ctx.path
        c = ctx.client()
        rng = random.Random(5)
        ctx.op("create", p(), b"")
        for parent, names in (("plain", [f"n{i}" for i in range(40)]),
                              ("colliding", COLLIDING), ("unicode", UNICODE)):
            c.create(p(parent))
            for name in names:
                c.create(p(parent, name))
            ctx.op("get_children", p(parent))
            for name in rng.sample(names, len(names) * 2 // 3):
                c.delete(p(parent, name))
            ctx.op("get_children", p(parent))
            ctx.op("get_children", p(parent), include_data=True)
            for name in rng.sample(names, len(names) // 3):
                c.ensure_path(p(parent, name))
            ctx.op("get_children", p(parent))
            ctx.raw(multi_read_request(("getChildren", p(parent)), ("getData", p(parent))))
        # sequential nodes under churn, as a queue uses them
        c.create(p("queue"))
        taken = []
        for i in range(60):
            taken.append(c.create(p("queue", "item-"), sequence=True))
            if i % 3 == 2:
                c.delete(taken.pop(0))
        ctx.op("get_children", p("queue"))
        ctx.op("get_children", p())

    differential.run(scenario)


def _history(zk: KazooClient, root: str, rng: random.Random, round_: int) -> None:
    """Creates and deletes that leave shrunk sets, tree bins and sequential names."""
    plain = [f"r{round_}-{i}" for i in range(40)]
    for parent, names in (("plain", plain), ("colliding", COLLIDING)):
        zk.ensure_path(f"{root}/{parent}")
        for name in names:
            zk.ensure_path(f"{root}/{parent}/{name}")
        for name in rng.sample(names, len(names) - 5):
            zk.delete(f"{root}/{parent}/{name}")
    zk.ensure_path(f"{root}/queue")
    for _ in range(20):
        zk.create(f"{root}/queue/q-", sequence=True)
    for name in rng.sample(zk.get_children(f"{root}/queue"), 12):
        zk.delete(f"{root}/queue/{name}")


def _listings(zk: KazooClient, root: str) -> dict[str, list[str]]:
    out = {"/": zk.get_children("/"), root: zk.get_children(root)}
    for parent in zk.get_children(root):
        out[parent] = zk.get_children(f"{root}/{parent}")
    return out


def test_children_order_across_restarts(make_server: Callable[..., ServerProcess],
                                        kazoo_factory: Callable[..., KazooClient]) -> None:
    """The same history on a fresh pair, each server restarted twice in between. ZooKeeper
    writes a snapshot at start-up, so its second restart reloads every set in the order the
    snapshot lists it (a set that shrank comes back smaller); fastzk does the same."""
    pair = start_pair(make_server)
    root = "/restarts"
    seen: list[list[dict[str, list[str]]]] = []
    for server in pair:
        zk = kazoo_factory(server)
        zk.create(root)
        rng = random.Random(9)
        rounds = []
        for round_ in range(3):
            _history(zk, root, rng, round_)
            zk.create(f"/top-{round_}")
            rounds.append(_listings(zk, root))
            zk.stop()
            zk.close()
            server.restart()
            zk = kazoo_factory(server)
            rounds.append(_listings(zk, root))
        seen.append(rounds)
    reference, candidate = seen
    for i, (theirs, mine) in enumerate(zip(reference, candidate, strict=True)):
        assert mine == theirs, f"listing {i} ({'after a restart' if i % 2 else 'live'})"
